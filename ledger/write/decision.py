"""Deciding: a batch's commands run one by one against the aggregates of one attempt (``Tx``).

``handles`` registers each command's handler (``ledger/commands/``); ``Decider`` runs them,
after who may act (``authorise``, handed in) and after the replay of a used key. Rules for
handlers: check every rule of a command before the first event, so a rejection leaves the
aggregates untouched. The decider verifies that: a command that mutated an aggregate and then
raised ``Rejected`` aborts the batch (``PartialRejection``), which then runs again one command
per transaction, where such a command is simply discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import msgspec
from msgspec.structs import force_setattr

from ledger.commands.models import Command
from ledger.domain import Aggregate, Event
from ledger.errors import RecordedRejection, Rejected
from ledger.outcome import Outcome
from ledger.passwords import PasswordCost
from ledger.write.aggregates import Aggregates
from ledger.write.ports import KeyRecord
from ledger.write.preparation import Prepared, Result

A = TypeVar("A", bound=Aggregate)

Handler = Callable[[Any, "Tx"], Outcome]
HANDLERS: dict[type[Command], Handler] = {}

_NOTHING: frozenset[str] = frozenset()

Authorise = Callable[[Any, "Tx"], str]
"""Who may act (``ledger/commands/auth.authorise``): the actor, or ``Rejected``."""


def handles(command_class: type[Command]) -> Callable[[Handler], Handler]:
    """Registers the handler of a command class."""

    def register(handler: Handler) -> Handler:
        HANDLERS[command_class] = handler
        return handler

    return register


class PartialRejection(Exception):
    """A handler mutated an aggregate and then rejected; the batch must run command by command."""


class HotAggregate(Exception):
    """A pipelined decision reached a hot aggregate: the group runs as usual instead."""


class Tx:
    """The aggregates one attempt works on, and what it will record."""

    # One is made per attempt (a command, for a caller alone): no instance dict to make.
    __slots__ = (
        "_created_now",
        "_from_cache",
        "_keys_before",
        "_read",
        "aggregates",
        "current",
        "fresh",
        "keys",
        "now",
        "pipelined",
        "pristine",
        "today",
        "touched",
    )

    def __init__(
        self,
        aggregates: Aggregates,
        *,
        fresh: bool = False,
        pipelined: bool = False,
        now: datetime | None = None,
    ) -> None:
        self.aggregates = aggregates
        # A pipelined decision stops at the first hot aggregate (``HotAggregate``).
        self.pipelined = pipelined
        # Under the lock of what it touches, an attempt catches cached aggregates up first.
        self.fresh = fresh
        self.touched: dict[str, Aggregate] = {}
        # Hot aggregates are decided on a clone: the cached original stays as recorded, so a
        # lost race costs a catch-up of it, not a reload.
        self.pristine: dict[str, Aggregate] = {}
        self.keys: dict[str, KeyRecord] = {}
        # Aggregates of a fresh attempt already caught up under its lock (in one query).
        self.current: AbstractSet[str] = _NOTHING
        # The clock, unless the caller read it for the attempt already (a leader alone).
        self.now: datetime = aggregates.clock() if now is None else now
        self.today: date = aggregates.local_day(self.now)
        self._from_cache: set[str] = set()
        # What the current command has read, with each aggregate's pending-event count at its
        # first read, so "did this command change anything?" costs O(aggregates it read), not
        # O(aggregates in the batch).
        self._read: dict[str, tuple[Aggregate, int]] = {}
        self._created_now: list[str] = []
        self._keys_before = 0

    @property
    def password_cost(self) -> PasswordCost:
        """How slowly secrets are hashed (``ledger.passwords``)."""
        return self.aggregates.password_cost

    @property
    def network_masters(self) -> dict[str, str]:
        """Masters of accounts recorded before ``master_id`` existed, found once (auth)."""
        return self.aggregates.network_masters

    def has_events_of(self, topic: str) -> bool:
        """Whether any event of ``topic`` was recorded (a rare question: may scan)."""
        return self.aggregates.store.has_events_of(topic)

    def begin_command(self) -> None:
        """Starts tracking what the next command changes.

        The clock is read once per attempt (``__init__``): the commands of one transaction
        carry its time, and reading it per command cost about a twentieth of a batched one.
        """
        self._read = {}
        if self._created_now:
            self._created_now = []
        self._keys_before = len(self.keys)

    def find(self, aggregate_id: str) -> Aggregate | None:
        """Any aggregate with this id, or None."""
        agg = self.touched.get(aggregate_id)
        if agg is None:
            agg = self.aggregates.get(aggregate_id)
            if agg is None:
                agg = self.aggregates.in_flight(aggregate_id)
            if agg is not None:
                if self.fresh:
                    if aggregate_id not in self.current:
                        agg = self.aggregates.store.catch_up(agg)
                else:
                    self._from_cache.add(aggregate_id)
                if self.aggregates.is_hot(aggregate_id):
                    if self.pipelined:
                        raise HotAggregate(aggregate_id)
                    self.pristine[aggregate_id] = agg
                    agg = agg.clone()
            else:
                agg = self.aggregates.store.load(aggregate_id)
                if agg is None:
                    return None
            self.touched[aggregate_id] = agg
        if aggregate_id not in self._read:
            self._read[aggregate_id] = (agg, len(agg.pending_events))
        return agg

    def find_current(self, aggregate_id: str) -> Aggregate | None:
        """Like ``find``, but an aggregate from the cache is first caught up with the store.

        For a decision that records nothing when it succeeds (a credentials check), so a
        stale cache cannot hide what another process recorded (a lock); a decision that
        records something is protected by the version check at commit instead.
        """
        agg = self.find(aggregate_id)
        if agg is not None and aggregate_id in self._from_cache and not agg.pending_events:
            self._from_cache.discard(aggregate_id)
            original = self.pristine.get(aggregate_id)
            if original is not None:
                # A hot aggregate: the cached original moves on, the attempt gets a new clone.
                version = original.version
                self.aggregates.store.catch_up(original)
                if original.version != version:
                    agg = original.clone()
            else:
                agg = self.aggregates.store.catch_up(agg)  # in place: the cached object moves on
                self.aggregates.put(agg)
            self.touched[aggregate_id] = agg
            self._read[aggregate_id] = (agg, 0)
        return agg

    def get(self, aggregate_id: str, kind: type[A]) -> A:
        """The aggregate of that kind, or ``unknown_account``."""
        agg = self.find(aggregate_id)
        if not isinstance(agg, kind):
            raise Rejected("unknown_account", account_id=aggregate_id, kind=kind.__name__)
        return agg

    def add(self, aggregate: Aggregate) -> None:
        """A new aggregate; ``already_exists`` if the id is taken."""
        if self.find(aggregate.id) is not None:
            raise Rejected("already_exists", account_id=aggregate.id)
        self.touched[aggregate.id] = aggregate
        self._read[aggregate.id] = (aggregate, 0)
        self._created_now.append(aggregate.id)

    def record_actor(self, actor: str) -> None:
        """Puts ``actor`` on every event the current command made (DESIGN §4a).

        In place: the events are this attempt's own until recorded (a copy of each cost
        more than the rest of the loop).
        """
        for agg, count in self._read.values():
            pending = agg.pending_events
            if len(pending) > count:
                for event in pending[count:]:
                    force_setattr(event, "actor", actor)

    def changed(self) -> bool:
        """Whether the current command made events or claims (a rejection must not have)."""
        if len(self.keys) != self._keys_before:
            return True
        return any(len(agg.pending_events) != count for agg, count in self._read.values())

    def discard_created(self) -> None:
        """Forgets aggregates the current (rejected, unchanged) command added."""
        for new_id in self._created_now:
            self.touched.pop(new_id, None)
            self._read.pop(new_id, None)
        self._created_now = []

    def lookup(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """Stored or claimed-in-this-attempt rows of ``keys`` (sale ids, invoiced sales, ...)."""
        found = {k: self.keys[k] for k in keys if k in self.keys}
        missing = [k for k in keys if k not in found]
        if missing:
            found.update(self.aggregates.store.select_keys(missing))
        return found

    def claim(self, key: str, payload: bytes) -> None:
        """Records a unique fact beside the events (``sale:<id>``, ``invoiced:<id>``).

        The key's primary key makes a racing duplicate lose at commit; the batch then runs again
        and the handler sees the fact through ``lookup``.
        """
        assert key not in self.keys, f"claimed twice: {key}"
        self.keys[key] = KeyRecord(key, "", payload)

    def refresh_cached(self) -> bool:
        """Catches up aggregates the current command read from the cache and nobody changed.

        Returns True if any had moved on (another process wrote them), so a rejection decided on
        the stale state must be decided again. Only the current command's reads matter: they
        are what the rejection was decided on.
        """
        moved = False
        for aggregate_id in [i for i in self._read if i in self._from_cache]:
            agg = self.touched[aggregate_id]
            if agg.pending_events:
                continue  # a stale write is caught by the version check at commit
            self._from_cache.discard(aggregate_id)
            original = self.pristine.get(aggregate_id)
            if original is not None:
                version = original.version
                self.aggregates.store.catch_up(original)
                if original.version == version:
                    continue
                fresh = original.clone()
            else:
                version = agg.version
                fresh = self.aggregates.store.catch_up(agg)
                if fresh.version == version:
                    continue
                self.aggregates.put(fresh)
            self.touched[aggregate_id] = fresh
            self._read[aggregate_id] = (fresh, 0)
            moved = True
        return moved

    def discard(self) -> None:
        """Forgets every aggregate the attempt touched, with its unrecorded events.

        The originals of hot aggregates stay cached: the attempt changed only their clones.
        """
        self.aggregates.evict(i for i in self.touched if i not in self.pristine)
        for agg in self.touched.values():
            agg.pending_events.clear()

    def take_events(self, snapshot_interval: int) -> tuple[list[Event], list[Aggregate]]:
        """The events the attempt made, taken off its aggregates (so that an attempt decided
        on top of them takes only its own), and the aggregates due for a snapshot (one every
        ``snapshot_interval`` events) once they are recorded."""
        events: list[Event] = []
        due: list[Aggregate] = []
        for agg in self.touched.values():
            pending = agg.pending_events
            if pending:
                first = pending[0].originator_version
                if agg.version // snapshot_interval > (first - 1) // snapshot_interval:
                    due.append(agg)
                events.extend(pending)
                pending.clear()
        return events, due

    def caught_up(self) -> bool:
        """Whether a hot aggregate the attempt decided on was written since (the original is
        now current)."""
        originals = list(self.pristine.values())
        versions = [original.version for original in originals]
        self.aggregates.store.catch_up_many(originals)
        return any(o.version != v for o, v in zip(originals, versions, strict=True))


def fresh_tx(aggregates: Aggregates, aggregate_ids: Collection[str]) -> Tx:
    """An attempt under the lock of ``aggregate_ids``, their cached state caught up at once
    (one query on PostgreSQL, instead of one per aggregate as the attempt reaches it)."""
    tx = Tx(aggregates, fresh=True)
    tx.current = {a.id for a in aggregates.catch_up_cached(aggregate_ids)}
    return tx


@dataclass(frozen=True)
class Decider:
    """Runs commands against a ``Tx``: who may act, the replay of a used key, the handler."""

    aggregates: Aggregates
    authorise: Authorise

    def decide(
        self, batch: list[Prepared], tx: Tx, stored_keys: dict[str, KeyRecord], *, isolated: bool
    ) -> list[Result]:
        """Each command's result, in order; the events stay on ``tx``'s aggregates.

        ``stored_keys``: the keys of the batch found in the store (none on an optimistic
        attempt: a used key then fails the write). ``isolated``: the batch holds one command
        (or an atomic batch), so a command that mutated and then rejected is just rejected;
        otherwise it raises ``PartialRejection``.
        """
        if len(batch) == 1:  # a caller alone: no comprehension
            return [self.run_one(batch[0], tx, stored_keys, isolated=isolated)]
        run_one = self.run_one
        return [run_one(p, tx, stored_keys, isolated=isolated) for p in batch]

    def stored_keys(self, batch: list[Prepared]) -> dict[str, KeyRecord]:
        """The stored rows of every key of the batch."""
        return self.aggregates.store.select_keys([k for p in batch for k in p.keys])

    def run_one(
        self, p: Prepared, tx: Tx, stored_keys: dict[str, KeyRecord], *, isolated: bool
    ) -> Result:
        """One command's result; its events stay on ``tx``'s aggregates."""
        if p.rejection is not None:
            return p.rejection
        command = p.command
        assert command is not None
        handler = HANDLERS.get(type(command))
        if handler is None:  # pragma: no cover - every command model has a handler
            return Rejected("invalid_command", reason=f"no handler for {p.raw_type}")
        tx.begin_command()
        try:
            # Before any replay: a repeat's first outcome is shown only to who may act.
            actor = self.authorise(command, tx)
        except Rejected as rejection:
            assert not tx.changed(), "authorise records nothing"
            tx.discard_created()
            return rejection
        keys = p.keys
        # A used key is in ``stored_keys`` (a locked attempt looked them up) or claimed earlier
        # in this attempt; most commands have neither, and skip the replay's lookups.
        if keys and (stored_keys or not tx.keys.keys().isdisjoint(keys)):
            replay = self.replay(p, tx, stored_keys)
            if replay is not None:
                return replay
        try:
            try:
                outcome = handler(command, tx)
            except Rejected:
                if not tx.changed() and tx.refresh_cached():
                    outcome = handler(command, tx)  # decided again on fresh state
                else:
                    raise
        except RecordedRejection as rejection:
            # A failed secret check: its events stay in the attempt and are recorded with it;
            # its keys are not claimed, so a retry is judged afresh (DESIGN §3.3).
            return rejection
        except Rejected as rejection:
            if tx.changed():
                if not isolated:
                    raise PartialRejection from rejection
                self.aggregates.evict(tx.touched)
                tx.touched.clear()
                # An isolated attempt holds this command alone: a fact it claimed before
                # rejecting must not be recorded either.
                tx.keys.clear()
            else:
                tx.discard_created()
            if p.keys and not any(k in stored_keys for k in p.keys):
                # The first attempt skips the key lookup (a used key fails the insert anyway),
                # but a repeat must never be judged afresh: a stamped CFDI retried after the
                # balance ran out still gets its first outcome.
                replay = self.replay(p, tx, self.aggregates.store.select_keys(p.keys))
                if replay is not None:
                    return replay
            return rejection
        tx.record_actor(actor)
        if keys:
            encoded = outcome.encode()
            for key in keys:
                tx.keys[key] = KeyRecord(key, p.fingerprint, encoded)
        return outcome

    @staticmethod
    def replay(p: Prepared, tx: Tx, stored_keys: dict[str, KeyRecord]) -> Result | None:
        """The first outcome of a command whose key was used, or the conflict; None if unused."""
        command = p.command
        assert command is not None
        for key in p.keys:
            found = tx.keys.get(key) or stored_keys.get(key)
            if found is None:
                continue
            if found.fingerprint == p.fingerprint:
                first = Outcome.decode(found.outcome)
                return msgspec.structs.replace(first, replayed=True)
            code = (
                "already_exists"
                if command.creates and key.startswith("id:")
                else "idempotency_conflict"
                if key.startswith("key:")
                else command.conflict_code
            )
            return Rejected(code, key=key)
        return None
