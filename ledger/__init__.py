"""Event-sourced credits ledger for CFDI resellers: stamps and points, exactly once."""

from ledger.errors import (
    CommitOutcomeUnknown,
    ConcurrencyError,
    DatabaseUnreachable,
    InfrastructureError,
    LedgerError,
    Rejected,
)
from ledger.outcome import Outcome

__all__ = [
    "CommitOutcomeUnknown",
    "ConcurrencyError",
    "DatabaseUnreachable",
    "InfrastructureError",
    "Ledger",
    "LedgerError",
    "Outcome",
    "Rejected",
    "quickstart",
]


def __getattr__(name: str) -> object:
    # The facade imports the adapters; loading it lazily keeps ``ledger.aggregates`` importable
    # on its own (auditing tools, tests of the domain) without a database driver.
    if name == "Ledger":
        from ledger.api import Ledger  # noqa: PLC0415

        return Ledger
    if name == "quickstart":
        from ledger.first_steps import quickstart  # noqa: PLC0415

        return quickstart
    raise AttributeError(name)
