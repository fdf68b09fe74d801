"""A holder's past from its own event stream: its movements and its balance at any instant.

Both read only the holder's stream, page by page, and never the views.

Semantics (DESIGN §6 audit):

- An event counts at an instant ``at`` when its ``timestamp`` (the ledger clock's, with
  microseconds) is at or before ``at``. The stream is read in version order and stops at the first
  event after ``at``: the ledger clock never runs backwards, so that is the state at ``at``.
- ``balance_at`` answers what ``Ledger.balance`` would have answered at ``at``. For a stamping
  account that is the *available* balance: stamps of a lot whose expiry date (``expires_on``, a
  Mexico City calendar date) is before the local date of ``at`` do not count, whether or not the
  ``StampsExpired`` event had been recorded yet (it is recorded lazily, by the next command that
  touches the account). ``booked=True`` answers the balance in the books instead: the sum of the
  holder's postings, where expired stamps leave only when ``StampsExpired`` is recorded.
- ``history`` lists the movements as booked, in stream order, each with the running booked
  balance; an expiry appears at the time its ``StampsExpired`` event was recorded.
- Before the holder's first event the balance is 0; a holder with no stream is
  ``unknown_account``; an aggregate that holds no credits is ``wrong_account_kind``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.aggregates.stamping_account import StampingAccount
from ledger.audit.source import AuditSource
from ledger.clock import local_date, parse_time
from ledger.commands.fields import DATE_MAX, TIME_MIN
from ledger.domain import HELD_PREFIX, STAMPS, UNITS, Aggregate, Event
from ledger.errors import Rejected

STREAM_PAGE_SIZE = 2_000
"""Events of one stream read per query."""


@dataclass(frozen=True, slots=True)
class Movement:
    """One movement of a holder: when, with whom, how much (signed) and the balance after it.

    ``topic`` is the event's stable name (``"StampingAccount.StampConsumed"``) whatever version
    stored it; ``version`` is the event's position in the holder's stream; ``actor`` is who
    acted (None for events recorded before actors were recorded).
    """

    at: datetime
    holder_id: str
    unit: str
    amount: int
    balance: int
    counterpart: str
    ref: str
    topic: str
    version: int
    actor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The movement as JSON-ready data."""
        return {
            "at": self.at.isoformat(),
            "holder_id": self.holder_id,
            "unit": self.unit,
            "amount": self.amount,
            "balance": self.balance,
            "counterpart": self.counterpart,
            "ref": self.ref,
            "topic": self.topic,
            "version": self.version,
            "actor": self.actor,
        }


def check_unit(unit: str) -> None:
    """Rejects a unit that is not a book of the ledger."""
    if unit not in UNITS:
        raise Rejected("invalid_command", field="unit", reason="stamps or points")


def parse_instant(at: str | datetime) -> datetime:
    """An aware datetime from an ISO 8601 string with an offset, or ``invalid_command``."""
    try:
        instant = parse_time(at)
    except (ValueError, TypeError):
        raise Rejected(
            "invalid_command", field="at", reason="an ISO 8601 time with an offset"
        ) from None
    # Out of these bounds, converting the time to Mexico City's date would overflow.
    if instant < TIME_MIN or instant.date() > DATE_MAX:
        raise Rejected(
            "invalid_command", field="at", reason=f"between {TIME_MIN.date()} and {DATE_MAX}"
        )
    return instant


def stream(source: AuditSource, holder_id: str) -> Iterator[Event]:
    """The events of ``holder_id`` in version order, read in bounded pages."""
    after = 0
    while True:
        page = source.stream(holder_id, after, STREAM_PAGE_SIZE)
        yield from page
        if len(page) < STREAM_PAGE_SIZE:
            return
        after = page[-1].originator_version


def iter_history(source: AuditSource, holder_id: str, unit: str = STAMPS) -> Iterator[Movement]:
    """The holder's movements of ``unit`` in stream order, with the running booked balance."""
    check_unit(unit)
    balance = 0
    seen = False
    # A CTI's held book has no stream of its own: its legs are in the CTI's events.
    for event in stream(source, holder_id.removeprefix(HELD_PREFIX)):
        seen = True
        for posting in event.postings():
            if posting.holder != holder_id or posting.unit != unit:
                continue
            balance += posting.delta
            yield Movement(
                at=event.timestamp,
                holder_id=holder_id,
                unit=unit,
                amount=posting.delta,
                balance=balance,
                counterpart=posting.counterpart,
                ref=posting.ref,
                topic=event.topic.partition("#")[0],
                version=event.originator_version,
                actor=event.actor,
            )
    if not seen:
        raise Rejected("unknown_account", account_id=holder_id)


def state_at(source: AuditSource, holder_id: str, at: datetime) -> tuple[Aggregate | None, bool]:
    """The aggregate folded from its events at or before ``at``, and whether the stream exists."""
    aggregate: Aggregate | None = None
    exists = False
    for event in stream(source, holder_id):
        exists = True
        if event.timestamp > at:
            break
        aggregate = event.mutate(aggregate)
    return aggregate, exists


def balance_at(
    source: AuditSource, holder_id: str, unit: str, at: str | datetime, *, booked: bool = False
) -> int:
    """The holder's balance of ``unit`` at ``at`` (see the module docstring for the semantics)."""
    check_unit(unit)
    instant = parse_instant(at)
    held = holder_id.startswith(HELD_PREFIX)
    aggregate, exists = state_at(source, holder_id.removeprefix(HELD_PREFIX), instant)
    if not exists or (held and not isinstance(aggregate, StampingAccount | None)):
        raise Rejected("unknown_account", account_id=holder_id)
    if aggregate is None:
        return 0  # the holder did not exist yet
    if held:
        assert isinstance(aggregate, StampingAccount)
        if unit != STAMPS:
            return 0
        return aggregate.held() if booked else aggregate.held(instant)
    balance = getattr(aggregate, "balance", None)
    if balance is None:
        raise Rejected("wrong_account_kind", account_id=holder_id)
    if isinstance(aggregate, StampingAccount) and unit == STAMPS and not booked:
        return aggregate.balance(STAMPS, local_date(instant), instant)
    return int(balance(unit))
