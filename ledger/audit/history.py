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
- ``history`` lists the movements in stream order, each with the running balance. For a
  stamping account (and its held book) the running balance is the available one, as
  ``balance_at`` answers it: a lot that expires and a hold that runs out appear as movements at
  their instant (the lot: the Mexico City midnight after its ``expires_on``; the hold: its
  ``expires_at``; reason ``expired`` and ``hold_expired``), even when the events that record
  them (``StampsExpired``, ``ReservationVoided`` with ``expired``) came later or not yet; those
  events then add nothing (or only what the instant could not know: a stamp a hold's void
  returned to its lot after the lot had expired). With the ledger's ``now``, the expiries due
  up to then are listed too, so the last running balance is ``balance()``.
- Before the holder's first event the balance is 0; a holder with no stream is
  ``unknown_account``; an aggregate that holds no credits is ``wrong_account_kind``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import msgspec

from ledger.aggregates.common import add_days
from ledger.aggregates.stamping_account import StampingAccount
from ledger.audit.source import AuditSource
from ledger.clock import MEXICO_CITY, local_date, parse_time
from ledger.commands.fields import DATE_MAX, TIME_MIN
from ledger.domain import HELD_PREFIX, STAMPS, UNITS, Aggregate, Event, Posting
from ledger.errors import Rejected
from ledger.json_fields import json_fields

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
    reason: str | None = None
    """``expired`` (a lot past its date) or ``hold_expired`` (a hold past its time): a movement
    of the clock, at its instant; None for the movements commands made."""

    def to_dict(self) -> dict[str, Any]:
        """The movement as JSON-ready data."""
        return json_fields(self)


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


EXPIRED = "expired"
HOLD_EXPIRED = "hold_expired"
EXPIRIES_PER_INSTANT_MAX = 1_000_000
"""Bound on the expiry instants settled between two events (each settles at least one lot or
hold, so a stream never needs more than it has lots and holds)."""


def iter_history(
    source: AuditSource, holder_id: str, unit: str = STAMPS, now: datetime | None = None
) -> Iterator[Movement]:
    """The holder's movements of ``unit`` in stream order, with the running balance; for a
    stamping account, its expiries at their instants, up to ``now`` when given."""
    check_unit(unit)
    # A CTI's held book has no stream of its own: its legs are in the CTI's events.
    events = stream(source, holder_id.removeprefix(HELD_PREFIX))
    first = next(events, None)
    if first is None:
        raise Rejected("unknown_account", account_id=holder_id)
    chained = itertools.chain((first,), events)
    if isinstance(first, StampingAccount.Opened) and unit == STAMPS:
        yield from _Expiries(holder_id, now).movements(chained)
        return
    balance = 0
    for event in chained:
        for posting in event.postings():
            if posting.holder != holder_id or posting.unit != unit:
                continue
            balance += posting.delta
            yield _movement(event, posting, holder_id, balance)


def _movement(
    event: Event,
    posting: Posting,
    holder_id: str,
    balance: int,
    *,
    at: datetime | None = None,
    version: int | None = None,
    reason: str | None = None,
) -> Movement:
    return Movement(
        at=event.timestamp if at is None else at,
        holder_id=holder_id,
        unit=posting.unit,
        amount=posting.delta,
        balance=balance,
        counterpart=posting.counterpart,
        ref=posting.ref,
        topic=event.topic.partition("#")[0],
        version=event.originator_version if version is None else version,
        actor=event.actor,
        reason=reason,
    )


def expiry_instant(expires_on: date) -> datetime:
    """When a lot valid through ``expires_on`` (a Mexico City date) stops counting."""
    day = add_days(expires_on, 1)
    return datetime(day.year, day.month, day.day, tzinfo=MEXICO_CITY)


class _Expiries:
    """A CTI's history with its lots and holds expiring at their instants.

    It folds the stream into a copy of the account and, before each event, settles on that copy
    what is due by the event's time, as if a command had been there at each instant
    (``StampingAccount.settle_expiry``); the settled movements are listed at their instants.
    When the events that record those expiries come, what the copy settled already is not
    listed again.
    """

    def __init__(self, holder_id: str, now: datetime | None) -> None:
        self.holder_id = holder_id
        self.now = now
        self.balance = 0
        self.account: StampingAccount | None = None
        self.voided: set[str] = set()  # holds the copy voided before their event came
        self.expired: dict[str, int] = {}  # stamps of a lot the copy expired before its event
        # The time of the last stored event: a stamp returned to a lot that had expired before
        # expires with it then, not back at the lot's own instant.
        self.last_at: datetime | None = None

    def movements(self, events: Iterator[Event]) -> Iterator[Movement]:
        """Every movement of the holder, the clock's ones included."""
        for event in events:
            yield from self.due(event.timestamp)
            yield from self.recorded(event)
            self.last_at = event.timestamp
        if self.now is not None:
            yield from self.due(self.now)

    def recorded(self, event: Event) -> Iterator[Movement]:
        """A stored event's movements, less what the copy settled at an earlier instant."""
        account = self.account
        if (
            account is not None
            and isinstance(event, StampingAccount.ReservationVoided)
            and event.hold_id in self.voided
        ):
            self.voided.discard(event.hold_id)
            account.version = event.originator_version
            return
        if account is not None and isinstance(event, StampingAccount.StampsExpired):
            account.version = event.originator_version
            left = event.quantity - self.expired.pop(event.lot_id, 0)
            if left > 0:
                # Stamps a void returned to the lot after it had expired leave with it now.
                account.take_from_lot(event.lot_id, left)
                legs = [
                    msgspec.structs.replace(p, delta=left if p.delta > 0 else -left)
                    for p in event.postings()
                ]
                yield from self.listed(event, legs, reason=EXPIRED)
            return
        mutated = event.mutate(account)
        assert isinstance(mutated, StampingAccount)
        self.account = mutated
        yield from self.listed(event, event.postings())

    def listed(
        self,
        event: Event,
        postings: Sequence[Posting],
        *,
        at: datetime | None = None,
        version: int | None = None,
        reason: str | None = None,
    ) -> Iterator[Movement]:
        """The postings of ``event`` that are the holder's stamps."""
        for posting in postings:
            if posting.holder != self.holder_id or posting.unit != STAMPS:
                continue
            self.balance += posting.delta
            yield _movement(
                event, posting, self.holder_id, self.balance, at=at, version=version, reason=reason
            )

    def next_instant(self) -> datetime | None:
        """The earliest instant a hold or lot of the copy expires."""
        account = self.account
        if account is None:
            return None
        instants = [hold.expires_at for hold in account.holds.values()]
        # Lots are in expiry order, dated ones first: the first lot expires first.
        if account.lots and account.lots[0].expires_on is not None:
            instants.append(expiry_instant(account.lots[0].expires_on))
        return min(instants, default=None)

    def due(self, until: datetime) -> Iterator[Movement]:
        """The expiries of the copy at every instant up to ``until`` (included)."""
        for _ in range(EXPIRIES_PER_INSTANT_MAX):
            instant = self.next_instant()
            if instant is None or instant > until:
                return
            if self.last_at is not None and instant < self.last_at:
                instant = self.last_at
            account = self.account
            assert account is not None
            version = account.version
            account.settle_expiry(local_date(instant), instant)
            settled = account.collect_events()
            # The copy's version stays the stream's: the next stored event follows it.
            account.version = version
            assert settled, f"nothing expired at {instant} on {account.id}"
            for event in settled:
                if isinstance(event, StampingAccount.ReservationVoided):
                    self.voided.add(event.hold_id)
                    reason = HOLD_EXPIRED
                else:
                    assert isinstance(event, StampingAccount.StampsExpired)
                    self.expired[event.lot_id] = self.expired.get(event.lot_id, 0) + event.quantity
                    reason = EXPIRED
                yield from self.listed(
                    event, event.postings(), at=instant, version=version, reason=reason
                )
        raise AssertionError("expiries did not settle")


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
