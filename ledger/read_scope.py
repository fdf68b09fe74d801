"""Who may read what (DESIGN §4a, for callers the ledger authenticates itself: the HTTP service).

The library's queries answer for whatever id they are given; a portal scopes them. The service
scopes them here, by the same network the write rules use: an account may read itself and
everything below it. A master account reads its whole network; a distributor its own clients,
their stamping accounts and its sub-distributors' networks; a client itself, its stamping
accounts (and their held books) and its portal users. Nobody reads across networks.

"Below" is found by walking up from the account read, through the ids every account holds:
``client_id`` (a CTI, a portal user), ``distributor_id`` (a client, a credit code) and
``parent_id`` (a distributor), until the reader is met or the network's top is passed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledger.aggregates.master_account import MasterAccount
from ledger.domain import HELD_PREFIX, Aggregate
from ledger.errors import Rejected

NETWORK_DEPTH_MAX = 1_000
"""Bound on the accounts walked up from the one read."""

Find = Callable[[str], Aggregate | None]


def _above(account: Aggregate) -> str | None:
    for name in ("client_id", "distributor_id", "parent_id"):
        value = getattr(account, name, None)
        if value and value != account.id:
            return str(value)
    return None


def may_read(actor_id: str, account: Aggregate, find: Find) -> bool:
    """Whether ``actor_id`` is ``account`` or an account above it in its network."""
    current: Aggregate | None = account
    for _ in range(NETWORK_DEPTH_MAX):
        if current is None:
            return False
        if current.id == actor_id:
            return True
        above = _above(current)
        current = find(above) if above is not None else None
    return False


def check_read(actor_id: str, subject_id: str, find: Find) -> None:
    """Raises ``unknown_account`` for an id that names no account, ``not_authorised`` for one
    that ``actor_id`` may not read; returns quietly otherwise."""
    account = find(subject_id.removeprefix(HELD_PREFIX))
    if account is None:
        raise Rejected("unknown_account", account_id=subject_id)
    if not may_read(actor_id, account, find):
        raise Rejected("not_authorised", actor=actor_id, account_id=subject_id)


_STATUS_ERROR_FIELDS = ("error", "error_notification_id", "error_aggregate_id", "error_topic")


def status_for(actor_id: str, status: dict[str, Any], find: Find) -> dict[str, Any]:
    """The read side's status as ``actor_id`` may see it: whole for a master account; for
    anyone else without the text and the aggregate of a projection failure, which may name
    accounts of other networks (``failed`` says that there is one)."""
    if isinstance(find(actor_id), MasterAccount):
        return status
    views = []
    for view in status.get("views", []):
        shown = {k: v for k, v in view.items() if k not in _STATUS_ERROR_FIELDS}
        shown["failed"] = view.get("error") is not None
        views.append(shown)
    return {
        **status,
        "last_error": None if status.get("last_error") is None else "hidden",
        "views": views,
    }
