"""The event store: eventsourcing's recorders on SQLite or PostgreSQL, plus the idempotency index.

Events live in eventsourcing's own table layout (``originator_id, originator_version, topic,
state`` and the notification id). Beside them, ``<prefix>_keys`` holds every idempotency key ever
used (a CFDI UUID, a transfer id, ...) with the fingerprint of the command that used it and its
first outcome. The keys are inserted in the same transaction as the events, so a key exists if and
only if its command's events exist; its primary key makes a racing duplicate fail atomically; and
aggregate state never grows with history.

``EventStore`` is the engine's ``Store`` on either backend; the recorders are ``sqlite.py``'s and
``postgres.py``'s, the URL and its environment ``config.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import (
    IntegrityError,
    Mapper,
    MapperDeserialisationError,
    PersistenceError,
)
from eventsourcing.utils import Environment, EnvType

from adapters.storage.audit import StoreSource
from adapters.storage.codec import MsgspecMapper
from adapters.storage.config import describe_store, infrastructure_message, postgres_conninfo
from adapters.storage.postgres import LedgerPostgresRecorder, LedgerPostgresSnapshotRecorder
from adapters.storage.postgres_guarded import GuardedWriter
from adapters.storage.postgres_pool import unreachable
from adapters.storage.recording import OutcomeUnknown, OvertakenRows, raising
from adapters.storage.sqlite import LedgerSQLiteRecorder, SQLiteGuardedWriter
from ledger.chain import StoredRow
from ledger.domain import Aggregate, Event, Snapshot
from ledger.errors import (
    CommitOutcomeUnknown,
    DatabaseUnreachable,
    InfrastructureError,
    IntegrityBreach,
    LedgerError,
)
from ledger.write.ports import (
    HotWriter,
    KeyRecord,
    Overtaken,
    Record,
    Sent,
    Turn,
    WriteConflict,
)

if TYPE_CHECKING:
    from ledger.audit.source import AuditSource


class LedgerApplication(Application[str]):
    """The eventsourcing application that holds the ledger's event store and snapshots.

    Configured only by the explicit ``env`` built from a URL: a stray environment variable must
    never change where the books are kept.
    """

    name = "Ledger"

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """The environment is exactly ``env`` (no ``os.environ`` merge)."""
        return Environment(name, dict(env or {}))

    def construct_mapper(self) -> Mapper[str]:
        """The msgspec mapper, with eventsourcing's cipher/compressor when configured."""
        return MsgspecMapper(
            compressor=self.factory.compressor(),
            cipher=self.factory.cipher(),
        )


SCHEMA_LOCK_ID = 7_310_420_001
"""PostgreSQL advisory lock that serialises schema creation between processes opening at once."""


def open_application(env: dict[str, str]) -> LedgerApplication:
    """Constructs the eventsourcing application, creating tables once even under a race."""
    if env["PERSISTENCE_MODULE"].endswith("LedgerPostgresFactory") and env["CREATE_TABLE"] == "y":
        conninfo = postgres_conninfo(env)
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and row[0]:
                    # A hot standby is read-only: its tables come from the primary.
                    return open_application({**env, "CREATE_TABLE": "n"})
                conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
                try:
                    return LedgerApplication(env)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_ID,))
        except psycopg.OperationalError as exc:
            raise InfrastructureError(infrastructure_message("open", env, exc)) from None
    try:
        return LedgerApplication(env)
    except PersistenceError as exc:
        raise InfrastructureError(infrastructure_message("open", env, exc)) from None


def _undecodable(aggregate_id: str, exc: Exception) -> IntegrityBreach:
    """A stored event that cannot be read: a wrong ``LEDGER_CIPHER_KEY`` or an edited row."""
    return IntegrityBreach(
        f"cannot decode the events of {aggregate_id!r} (wrong or missing LEDGER_CIPHER_KEY,"
        f" or an edited event; run `ledger verify`): {exc}"
    )


BATCHED_READ_MIN = 2
"""Aggregates from which a load or catch-up is one query on PostgreSQL instead of one each."""


class EventStore:
    """The engine's ``Store`` on an eventsourcing application."""

    def __init__(self, app: LedgerApplication) -> None:
        self.app = app
        self.env: dict[str, str] = {k: str(v) for k, v in app.env.items()}
        recorder = app.recorder
        assert isinstance(recorder, LedgerPostgresRecorder | LedgerSQLiteRecorder)
        self.recorder: LedgerPostgresRecorder | LedgerSQLiteRecorder = recorder
        assert isinstance(app.mapper, MsgspecMapper)  # ``construct_mapper``'s
        self.mapper: MsgspecMapper = app.mapper

    def load(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate from its latest snapshot and later events, or None.

        What eventsourcing's ``Repository.get`` does, without its checks of every event
        against runtime protocols (``isinstance`` of a ``Protocol``, ~28 us an event: two
        thirds of loading a CTI of 40 events).
        """
        mapper = self.mapper
        agg: Aggregate | None = None
        try:
            snapshots = self.app.snapshots
            if snapshots is not None:
                latest = snapshots.recorder.select_events(aggregate_id, desc=True, limit=1)
                if latest:
                    restored = mapper.to_domain_event(latest[0])
                    assert isinstance(restored, Snapshot)
                    agg = restored.mutate(None)
            after = agg.version if agg is not None else None
            for stored in self.recorder.select_events(aggregate_id, gt=after):
                event = mapper.to_domain_event(stored)
                assert isinstance(event, Event)
                agg = event.mutate(agg)
        except MapperDeserialisationError as exc:
            raise _undecodable(aggregate_id, exc) from None
        except PersistenceError as exc:
            raise self._failed(f"load {aggregate_id!r}", exc) from None
        if agg is not None:
            agg.pending_events = []
        return agg

    def catch_up(self, aggregate: Aggregate) -> Aggregate:
        """Applies events recorded after the aggregate's version."""
        try:
            for event in self.app.events.get(aggregate.id, gt=aggregate.version):
                assert isinstance(event, Event)
                event.mutate(aggregate)
        except MapperDeserialisationError as exc:
            raise _undecodable(aggregate.id, exc) from None
        except PersistenceError as exc:
            raise self._failed(f"load {aggregate.id!r}", exc) from None
        return aggregate

    def load_many(self, aggregate_ids: Collection[str]) -> dict[str, Aggregate]:
        """The aggregates that exist among ``aggregate_ids`` (``load`` of each; on PostgreSQL
        two queries in all: the latest snapshots, then the events after them)."""
        snapshots = self.app.snapshots
        if (
            len(aggregate_ids) < BATCHED_READ_MIN
            or not isinstance(self.recorder, LedgerPostgresRecorder)
            or snapshots is None
            or not isinstance(snapshots.recorder, LedgerPostgresSnapshotRecorder)
        ):
            loaded = ((i, self.load(i)) for i in aggregate_ids)
            return {i: agg for i, agg in loaded if agg is not None}
        found: dict[str, Aggregate] = {}
        try:
            for stored in snapshots.recorder.select_latest(list(aggregate_ids)):
                restored = self.mapper.to_domain_event(stored)
                assert isinstance(restored, Snapshot)
                found[restored.originator_id] = restored.mutate(None)
            after = [(i, found[i].version if i in found else 0) for i in aggregate_ids]
            for stored in self.recorder.select_events_after(after):
                aggregate_id = str(stored.originator_id)
                event = self.mapper.to_domain_event(stored)
                assert isinstance(event, Event)
                found[aggregate_id] = event.mutate(found.get(aggregate_id))
        except MapperDeserialisationError as exc:
            raise _undecodable(", ".join(sorted(aggregate_ids)[:3]), exc) from None
        except PersistenceError as exc:
            raise self._failed(f"load {len(aggregate_ids)} aggregates", exc) from None
        for agg in found.values():
            agg.pending_events = []
        return found

    def catch_up_many(self, aggregates: Sequence[Aggregate]) -> None:
        """``catch_up`` of each aggregate (in place); on PostgreSQL in one query."""
        if len(aggregates) < BATCHED_READ_MIN or not isinstance(
            self.recorder, LedgerPostgresRecorder
        ):
            for agg in aggregates:
                self.catch_up(agg)
            return
        by_id = {a.id: a for a in aggregates}
        streams = [(a.id, a.version) for a in aggregates]
        try:
            for stored in self.recorder.select_events_after(streams):
                event = self.mapper.to_domain_event(stored)
                assert isinstance(event, Event)
                event.mutate(by_id[str(stored.originator_id)])
        except MapperDeserialisationError as exc:
            raise _undecodable(", ".join(sorted(by_id)[:3]), exc) from None
        except PersistenceError as exc:
            raise self._failed(f"load {len(aggregates)} aggregates", exc) from None

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """Stored rows of the keys that were used."""
        try:
            return self.recorder.select_keys(keys)
        except PersistenceError as exc:
            raise self._failed("read idempotency keys", exc) from None

    def has_events_of(self, topic: str) -> bool:
        """Whether any event of ``topic`` was recorded (the first one in notification order)."""
        try:
            return bool(self.recorder.select_notifications(None, 1, topics=[topic]))
        except PersistenceError as exc:
            raise InfrastructureError(f"cannot read events of {topic!r}: {exc}") from None

    def audit_source(self) -> AuditSource:
        """What ``verify`` and ``history`` read (``adapters/storage/audit.py``)."""
        return StoreSource(self)

    @property
    def pipelined(self) -> bool:
        """Whether ``record_later`` returns before the database answers (PostgreSQL)."""
        return isinstance(self.recorder, LedgerPostgresRecorder)

    def record(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
        """Events and keys in one transaction; ``WriteConflict`` if a version or key was taken."""
        to_row = self.mapper.to_row
        stored = [to_row(e) for e in events]
        return self._recorded(len(stored), lambda: self.recorder.insert_events(stored, keys=keys))

    def record_later(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sent:
        """``record`` sent now; its ``answer`` waits for the ids or raises the error (on SQLite
        the write is made at once: there is no server to overlap with)."""
        recorder = self.recorder
        if not isinstance(recorder, LedgerPostgresRecorder):
            try:
                ids = self.record(events, keys)
            except LedgerError as exc:
                return raising(exc)
            return Sent(lambda: ids)
        to_row = self.mapper.to_row
        stored = [to_row(e) for e in events]
        sent = recorder.insert_events_later(stored, keys)
        return Sent(lambda: self._recorded(len(stored), sent.answer), sent.fileno)

    def _recorded(self, events: int, write: Callable[[], Sequence[int] | None]) -> Sequence[int]:
        """The ids of a write, its errors as the engine's."""
        try:
            ids = write()
        except IntegrityError as exc:
            raise WriteConflict(str(exc)) from None
        except OutcomeUnknown as exc:
            raise self._outcome_unknown(events, exc) from None
        except PersistenceError as exc:
            raise self._failed("record events", exc) from None
        return ids or []

    def _outcome_unknown(self, events: int, exc: BaseException) -> CommitOutcomeUnknown:
        """The error of a commit whose connection broke: recorded or not, nobody knows."""
        return CommitOutcomeUnknown(
            f"the connection to {describe_store(self.env)} broke while {events} events"
            f" were being committed ({' '.join(str(exc).split())}): they may or may not be"
            " recorded. Retry the same commands with the same keys (ids, CFDI UUIDs,"
            " idempotency_key): one already recorded answers its first outcome again."
            " A command without a key may be recorded twice: check its history first."
        )

    @contextmanager
    def locked(self, aggregate_ids: Collection[str]) -> Iterator[Record]:
        """A transaction that no other writer of these aggregates can pass (see the recorders).

        Yields ``record`` for that transaction; it commits. Leaving without it rolls back.
        """
        to_row = self.mapper.to_row
        try:
            with self.recorder.locked(sorted(aggregate_ids)) as insert:

                def record(events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
                    try:
                        return insert([to_row(e) for e in events], keys)
                    except OutcomeUnknown as exc:
                        raise self._outcome_unknown(len(events), exc) from None

                yield record
        except PersistenceError as exc:
            raise self._failed("record events", exc) from None

    @contextmanager
    def guarded(self) -> Iterator[Record]:
        """Writes checked before anything is written (see the recorders); yields ``record``,
        which raises ``Overtaken`` with the events and keys that overtook a write."""
        with self.combined() as writer:

            def record(events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
                return writer.record(events, keys)

            yield record

    @property
    def combining(self) -> bool:
        """Whether writers of a hot aggregate commit for each other (PostgreSQL)."""
        return isinstance(self.recorder, LedgerPostgresRecorder)

    @contextmanager
    def combined(self) -> Iterator[HotWriter]:
        """Turns at hot aggregates and guarded writes on one connection (see the recorders)."""
        try:
            with self.recorder.guarded() as rows_writer:
                yield _StoreHotWriter(self, rows_writer)
        except PersistenceError as exc:
            raise self._failed("record events", exc) from None

    def _decoded(self, rows: Sequence[StoredRow]) -> list[Event]:
        """Stored rows as events."""
        events: list[Event] = []
        for stored in rows:
            try:
                event = self.mapper.to_domain_event(stored)
            except MapperDeserialisationError as exc:
                raise _undecodable(str(stored.originator_id), exc) from None
            assert isinstance(event, Event)
            events.append(event)
        return events

    def snapshot(self, aggregates: Iterable[Aggregate], at: datetime) -> None:
        """Stores snapshots of the aggregates as they are now."""
        assert self.app.snapshots is not None
        try:
            self.app.snapshots.put([Snapshot.take(a, at) for a in aggregates])
        except PersistenceError as exc:
            raise self._failed("store snapshots", exc) from None

    def _failed(self, action: str, exc: BaseException) -> InfrastructureError:
        """The ``InfrastructureError`` of a failed database call, saying what to check
        (``DatabaseUnreachable`` when no connection could be had in time)."""
        kind = DatabaseUnreachable if unreachable(exc) else InfrastructureError
        return kind(infrastructure_message(action, self.env, exc))

    def close(self) -> None:
        """Closes the database connections."""
        if isinstance(self.recorder, LedgerPostgresRecorder):
            self.recorder.release_writer()
        else:
            self.recorder.close_writer()
        self.app.close()


class _StoreHotWriter:
    """A recorder's guarded writer, in events (``HotWriter``)."""

    def __init__(self, store: EventStore, writer: GuardedWriter | SQLiteGuardedWriter) -> None:
        self.store = store
        self.writer = writer

    def wait(self, aggregate_id: str, commands: bytes, version: int, keys: Sequence[str]) -> Turn:
        """Posts a batch for a hot aggregate and waits for its lock (PostgreSQL only)."""
        writer = self.writer
        assert isinstance(writer, GuardedWriter), "turns at hot aggregates need PostgreSQL"
        try:
            turn = writer.wait(aggregate_id, commands, version, keys)
        except OutcomeUnknown as exc:
            raise self.store._outcome_unknown(len(commands), exc) from None
        except PersistenceError as exc:
            raise self.store._failed(f"wait for {aggregate_id!r}", exc) from None
        if turn.answers is not None:
            return Turn(answers=turn.answers)
        return Turn(events=self.store._decoded(turn.rows), keys=turn.keys, posted=turn.posted)

    def record(
        self,
        events: Sequence[Event],
        keys: Sequence[KeyRecord],
        also_lock: Sequence[str] = (),
        answers: Sequence[tuple[int, bytes]] = (),
    ) -> Sequence[int]:
        """A guarded write (``Overtaken`` when others wrote first)."""
        to_row = self.store.mapper.to_row
        stored = [to_row(e) for e in events]
        writer = self.writer

        def write() -> Sequence[int]:
            if isinstance(writer, GuardedWriter):
                return writer.record(stored, keys, also_lock, answers)
            assert not answers, "answers to posted batches need PostgreSQL"
            return writer(stored, keys)

        try:
            return self.store._recorded(len(stored), write)
        except OvertakenRows as lost:
            raise Overtaken(self.store._decoded(lost.rows), lost.keys) from None
