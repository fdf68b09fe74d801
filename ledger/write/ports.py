"""What the write path needs from an event store (implemented in ``adapters/storage``)."""

from __future__ import annotations

import select
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import msgspec

from ledger.domain import Aggregate, Event
from ledger.errors import LedgerError


class KeyRecord(msgspec.Struct, frozen=True, gc=False):
    """An idempotency key as stored: the fingerprint of its command and its first outcome.

    A struct, not a dataclass: one is made per command, and a frozen dataclass takes about
    0.4 us to make (a struct 0.06). Plain values only, so never in a reference cycle.
    """

    key: str
    fingerprint: str
    outcome: bytes


class WriteConflict(LedgerError):
    """Raised by a store when a write lost a race (version or key already taken)."""


class Overtaken(WriteConflict):
    """Raised by a guarded write (``Store.guarded``) that found an aggregate it writes past the
    version it was decided on, or one of its keys used: nothing was written. It carries what
    overtook it, so the next attempt decides again without reading anything."""

    def __init__(self, events: Sequence[Event], keys: dict[str, KeyRecord]) -> None:
        super().__init__(f"overtaken by {len(events)} events and {len(keys)} used keys")
        self.events = events
        """The events recorded after the versions the write was decided on, stream by stream
        in version order."""
        self.keys = keys
        """The stored rows of the write's keys that were used already."""


Record = Callable[[Sequence[Event], Sequence[KeyRecord]], Sequence[int]]
"""Writes events and keys in one transaction (the store's ``record``)."""


@dataclass(frozen=True)
class Turn:
    """What waiting at a hot aggregate gave a batch posted for it (``HotWriter.wait``)."""

    answers: bytes | None = None
    """The answers another writer recorded for the batch with its events: it is done."""
    events: Sequence[Event] = ()
    """Otherwise it is this writer's turn, the aggregate locked for it: the events recorded
    after the version it knew,"""
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    """the rows of its batch's keys that were used,"""
    posted: Sequence[tuple[int, bytes]] = ()
    """and the batches other writers posted for the aggregate meanwhile (id, commands), for
    it to decide and answer in its write."""


class HotWriter(Protocol):
    """Writes of a hot aggregate whose writers in several processes commit for each other
    (``Store.combined``)."""

    def wait(self, aggregate_id: str, commands: bytes, version: int, keys: Sequence[str]) -> Turn:
        """Posts a batch's commands for the aggregate and waits for its lock."""

    def record(
        self,
        events: Sequence[Event],
        keys: Sequence[KeyRecord],
        also_lock: Sequence[str] = (),
        answers: Sequence[tuple[int, bytes]] = (),
    ) -> Sequence[int]:
        """A guarded write (``Store.guarded``) that also records the answers to posted batches
        and ends the turn at ``also_lock``'s aggregates."""


class Sent(msgspec.Struct, frozen=True):
    """A write sent by ``Store.record_later``.

    A struct, not a dataclass: one is made per write, and a frozen dataclass costs about six
    times as much to make.
    """

    answer: Callable[[], Sequence[int]]
    """Waits for the database's answer: the notification ids, or the write's error."""
    fileno: int | None = None
    """A socket that is readable once the answer has come (None: it is here already)."""


class Store(Protocol):
    """What the engine needs from the event store (implemented in ``adapters/storage``)."""

    def load(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate rebuilt from its snapshot and events, or None."""

    def catch_up(self, aggregate: Aggregate) -> Aggregate:
        """The aggregate advanced by events recorded after its version."""

    def load_many(self, aggregate_ids: Collection[str]) -> dict[str, Aggregate]:
        """``load`` of each aggregate that exists, by id (a database may answer in one go)."""

    def catch_up_many(self, aggregates: Sequence[Aggregate]) -> None:
        """``catch_up`` of each aggregate, in place (a database may answer in one go)."""

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The stored rows of the keys that were used."""

    @property
    def pipelined(self) -> bool:
        """Whether ``record_later`` returns before the database has answered (PostgreSQL): the
        engine then decides the next group of commands while the last one is being written."""

    def record(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
        """Writes events and keys in one transaction; raises ``WriteConflict`` on a lost race."""

    def record_later(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sent:
        """``record``, sent now; ``Sent.answer`` waits for the database and returns the ids,
        or raises what ``record`` raises. It never raises itself, and its answer must be
        taken once, even when nobody waits for it: until then the store's writer is busy."""

    def locked(self, aggregate_ids: Collection[str]) -> AbstractContextManager[Record]:
        """A transaction no other writer of these aggregates can pass; yields its ``record``.

        Entered before the aggregates are read and the commands decided again, so the retry of
        a lost race cannot lose it again. Leaving without recording rolls back.
        """

    def guarded(self) -> AbstractContextManager[Record]:
        """Writes of hot aggregates, each checked before anything is written; yields ``record``.

        A write whose aggregates moved past the versions it was decided on (the version before
        its first event of each), or whose keys were used, records nothing and raises
        ``Overtaken`` with what overtook it. From then until the next write through it (or the
        end of the context) nobody else can write those aggregates, so that write, decided
        again on what overtook the last, cannot lose to another writer of them. A write is one
        statement on PostgreSQL, and no lock outlives it unless it was overtaken.
        """

    @property
    def combining(self) -> bool:
        """Whether writers of a hot aggregate in several processes can commit for each other
        (``combined``; PostgreSQL)."""

    def combined(self) -> AbstractContextManager[HotWriter]:
        """Turns at hot aggregates and their writes (``HotWriter``), on one connection: a
        turn holds the aggregate's lock until the next write through it, or the end."""

    def snapshot(self, aggregates: Iterable[Aggregate], at: datetime) -> None:
        """Stores snapshots of the aggregates' current state."""

    def has_events_of(self, topic: str) -> bool:
        """Whether any event of ``topic`` was recorded (a rare question: may scan)."""


def wait_readable(fds: Sequence[int]) -> set[int]:
    """Waits until one of ``fds`` is readable (any descriptor number, unlike ``select``);
    returns those that are."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if ready:
            return ready
