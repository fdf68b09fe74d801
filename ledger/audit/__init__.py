"""Auditors' tools (DESIGN §3, §6 audit): ``verify``, balances at any instant, movement history."""

from ledger.audit.history import Movement, balance_at, iter_history
from ledger.audit.verify import CHECKS, Breach, Progress, VerifyReport, verify
from ledger.audit.views import ProjectionHealth, view_checks

__all__ = [
    "CHECKS",
    "Breach",
    "Movement",
    "Progress",
    "ProjectionHealth",
    "VerifyReport",
    "balance_at",
    "iter_history",
    "verify",
    "view_checks",
]
