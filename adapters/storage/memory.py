"""An in-memory event store for tests and simulations: the engine's ``Store`` without I/O.

Events are kept as stored rows (topic and bytes) made by the real ``MsgspecMapper``, so every
test on this store also exercises the codec, and a load decodes them again exactly as the SQL
stores do. ``record`` is all-or-nothing like a database transaction: it checks every version
and key first and raises ``WriteConflict`` before changing anything. Notification ids increase
from 1.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from adapters.storage.audit import MemorySource
from adapters.storage.codec import MsgspecMapper
from ledger.chain import StoredRow
from ledger.domain import Aggregate, Event, Snapshot
from ledger.write.ports import HotWriter, KeyRecord, Overtaken, Record, Sent, WriteConflict

if TYPE_CHECKING:
    from ledger.audit.source import AuditSource


class MemoryStore:
    """The engine's ``Store`` in process memory (one per ``Ledger.open("memory://")``)."""

    def __init__(self, mapper: MsgspecMapper | None = None) -> None:
        self.mapper = mapper or MsgspecMapper()
        self._lock = threading.Lock()
        self._log: list[StoredRow] = []
        self._streams: dict[str, list[StoredRow]] = {}
        self._keys: dict[str, KeyRecord] = {}
        self._snapshots: dict[str, StoredRow] = {}

    # The engine's Store protocol -------------------------------------------------------------

    def load(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate from its latest snapshot and later events, or None."""
        with self._lock:
            snapshot = self._snapshots.get(aggregate_id)
            stream = list(self._streams.get(aggregate_id, ()))
        aggregate: Aggregate | None = None
        if snapshot is not None:
            restored = self.mapper.to_domain_event(snapshot)
            assert isinstance(restored, Snapshot)
            aggregate = restored.mutate(None)
        start = aggregate.version if aggregate is not None else 0
        for stored in stream[start:]:
            aggregate = self.mapper.to_domain_event(stored).mutate(aggregate)
        if aggregate is not None:
            aggregate.pending_events = []
        return aggregate

    def catch_up(self, aggregate: Aggregate) -> Aggregate:
        """The aggregate advanced by the events recorded after its version."""
        with self._lock:
            later = list(self._streams.get(aggregate.id, ())[aggregate.version :])
        for stored in later:
            self.mapper.to_domain_event(stored).mutate(aggregate)
        return aggregate

    def load_many(self, aggregate_ids: Collection[str]) -> dict[str, Aggregate]:
        """``load`` of each aggregate that exists."""
        loaded = ((i, self.load(i)) for i in aggregate_ids)
        return {i: agg for i, agg in loaded if agg is not None}

    def catch_up_many(self, aggregates: Sequence[Aggregate]) -> None:
        """``catch_up`` of each aggregate, in place."""
        for agg in aggregates:
            self.catch_up(agg)

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The stored rows of those of ``keys`` that were used."""
        with self._lock:
            return {k: self._keys[k] for k in keys if k in self._keys}

    pipelined = True
    """Writes sent by ``record_later`` are made when they are finished: the engine's pipeline
    runs here as on PostgreSQL, with the database's answer deferred."""

    def record(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
        """Events and keys at once; ``WriteConflict`` (recording nothing) if one is taken."""
        return self.record_rows([self.mapper.to_row(e) for e in events], keys)

    def record_later(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sent:
        """``record``, made when its answer is taken (as a database answers later)."""
        rows = [self.mapper.to_row(e) for e in events]
        return Sent(lambda: self.record_rows(rows, keys))

    def record_rows(
        self, rows: Sequence[StoredRow], keys: Sequence[KeyRecord] = ()
    ) -> Sequence[int]:
        """Already-encoded rows (older versions' bytes, golden histories) and keys, at once."""
        with self._lock:
            return self._append(rows, keys)

    def _append(self, rows: Sequence[StoredRow], keys: Sequence[KeyRecord]) -> list[int]:
        """``record_rows`` with the store's lock held."""
        # Check everything before the first change, as a transaction's rollback would.
        # The rows of one stream come in order, so each is checked against the one before.
        # Plain loops: a write of one command (one row, one key) is the common case, and
        # each comprehension or ``zip`` costs about as much as the row's own check.
        streams = self._streams
        next_version: dict[str, int] = {}
        for row in rows:
            stream_id = str(row.originator_id)
            expected = next_version.get(stream_id)
            if expected is None:
                stream = streams.get(stream_id)
                expected = 1 if stream is None else len(stream) + 1
            if row.originator_version != expected:
                msg = f"version {row.originator_version} of {stream_id!r} is taken or skipped"
                raise WriteConflict(msg)
            next_version[stream_id] = expected + 1
        stored_keys = self._keys
        named: dict[str, KeyRecord] = {}
        for key in keys:
            name = key.key
            if name in stored_keys or name in named:
                raise WriteConflict(f"idempotency key {name!r} is taken")
            named[name] = key
        log = self._log
        first_id = len(log) + 1
        log += rows
        for row in rows:
            stream_id = str(row.originator_id)
            stream = streams.get(stream_id)
            if stream is None:
                streams[stream_id] = [row]
            else:
                stream.append(row)
        stored_keys.update(named)
        if len(rows) == 1:  # one command's write: no range made to list it
            return [first_id]
        return list(range(first_id, len(log) + 1))

    def has_events_of(self, topic: str) -> bool:
        """Whether any event of ``topic`` was recorded."""
        with self._lock:
            return any(row.topic == topic for row in self._log)

    @contextmanager
    def guarded(self) -> Iterator[Record]:
        """Writes checked first (``record_guarded``): one process holds this store, and its
        engine writes one batch at a time, so nothing needs to stay locked between writes."""
        yield self.record_guarded

    def record_guarded(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
        """``record``, or ``Overtaken`` (recording nothing) with the events recorded after the
        versions the write was decided on and the rows of its keys that were used."""
        rows = [self.mapper.to_row(e) for e in events]
        with self._lock:
            first: dict[str, int] = {}
            for row in rows:
                first.setdefault(str(row.originator_id), row.originator_version)
            later = [
                row
                for stream_id, version in first.items()
                for row in self._streams.get(stream_id, ())[version - 1 :]
            ]
            used = {k.key: self._keys[k.key] for k in keys if k.key in self._keys}
            if not later and not used:
                return self._append(rows, keys)
        overtaking: list[Event] = []
        for stored in later:
            event = self.mapper.to_domain_event(stored)
            assert isinstance(event, Event)
            overtaking.append(event)
        raise Overtaken(overtaking, used)

    combining = False
    """Writers in several processes never share this store."""

    def combined(self) -> AbstractContextManager[HotWriter]:
        """Not available: nobody else writes this store (``combining`` is False)."""
        raise NotImplementedError("writers of an in-memory store never commit for each other")

    @contextmanager
    def locked(self, aggregate_ids: Collection[str]) -> Iterator[Record]:  # noqa: ARG002
        """``record`` itself: one process holds this store, and its engine writes one batch at a
        time, so nobody can write between a retry's read and its commit."""
        yield self.record

    def snapshot(self, aggregates: Iterable[Aggregate], at: datetime) -> None:
        """Keeps the latest snapshot of each aggregate, encoded like the SQL stores do."""
        rows = [self.mapper.to_row(Snapshot.take(a, at)) for a in aggregates]
        with self._lock:
            for row in rows:
                self._snapshots[str(row.originator_id)] = row

    def close(self) -> None:
        """Nothing to release; present so the ledger closes every store alike."""

    # Inspection for tests --------------------------------------------------------------------

    def copy(self) -> MemoryStore:
        """An independent store holding the same events, keys and snapshots (test fixtures)."""
        twin = MemoryStore(self.mapper)
        with self._lock:
            twin._log = list(self._log)
            twin._streams = {i: list(rows) for i, rows in self._streams.items()}
            twin._keys = dict(self._keys)
            twin._snapshots = dict(self._snapshots)
        return twin

    def stored_events(self) -> list[StoredRow]:
        """Every stored row in notification order (id = position + 1)."""
        with self._lock:
            return list(self._log)

    def audit_source(self) -> AuditSource:
        """What ``verify`` and ``history`` read (``adapters/storage/audit.py``; no hash chain)."""
        return MemorySource(self)

    def events(self) -> list[Event]:
        """Every recorded event decoded again, in notification order."""
        decoded: list[Event] = []
        for row in self.stored_events():
            event = self.mapper.to_domain_event(row)
            assert isinstance(event, Event)
            decoded.append(event)
        return decoded

    def snapshot_versions(self) -> dict[str, int]:
        """The version of the latest snapshot of each snapshotted aggregate."""
        with self._lock:
            return {i: row.originator_version for i, row in self._snapshots.items()}

    def key_count(self) -> int:
        """How many idempotency keys and unique facts are recorded."""
        with self._lock:
            return len(self._keys)
