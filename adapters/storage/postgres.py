"""The event store: eventsourcing's recorders on SQLite or PostgreSQL, plus the idempotency index.

Events live in eventsourcing's own table layout (``originator_id, originator_version, topic,
state`` and the notification id). Beside them, ``<prefix>_keys`` holds every idempotency key ever
used (a CFDI UUID, a transfer id, ...) with the fingerprint of the command that used it and its
first outcome. The keys are inserted in the same transaction as the events, so a key exists if and
only if its command's events exist; its primary key makes a racing duplicate fail atomically; and
aggregate state never grows with history.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import math
import os
import select
import sqlite3
import struct
import threading
import weakref
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlparse

import psycopg
import psycopg.errors
from eventsourcing.application import Application
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    Mapper,
    MapperDeserialisationError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteCursor,
    SQLiteFactory,
)
from eventsourcing.utils import Environment, EnvType
from psycopg import Connection, Cursor
from psycopg import Error as PsycopgError
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import PoolTimeout

from adapters.storage.codec import MsgspecMapper
from ledger.chain import GENESIS, events_digest, link
from ledger.domain import Aggregate, Event, Snapshot
from ledger.engine import KeyRecord, Record, Sent, WriteConflict, wait_readable
from ledger.errors import (
    CommitOutcomeUnknown,
    ConcurrencyError,
    InfrastructureError,
    IntegrityBreach,
    LedgerError,
)

if TYPE_CHECKING:
    from ledger.audit.source import AuditSource

CONNECT_TIMEOUT_S_DEFAULT = 5
"""Seconds to open one PostgreSQL connection (URL ``?connect_timeout=``, whole seconds; libpq
waits at least 2)."""
POOL_TIMEOUT_S_DEFAULT = 5.0
"""Seconds a command waits for a pooled PostgreSQL connection, (re)connecting included (URL
``?pool_timeout=``). Past it the command fails with ``InfrastructureError``."""
BUSY_TIMEOUT_S_DEFAULT = 5
"""Seconds a SQLite command waits while another process holds the file's write lock (URL
``?busy_timeout=``, whole seconds)."""
TIMEOUT_S_MAX = 600
"""Bound on any timeout given in a URL."""
POSTGRES_POOL_TIMEOUT_S = "POSTGRES_POOL_TIMEOUT_S"
"""The environment key (ours, not eventsourcing's) that carries ``pool_timeout``."""

_F = TypeVar("_F", bound=Callable[..., Any])


class _OutcomeUnknown(PersistenceError):
    """Raised by a recorder when its connection broke after a write was sent to the server."""


def _without_retry(method: Callable[..., Any]) -> Callable[..., Any]:
    """eventsourcing's recorder method without its retry decorator (10 attempts, 0.2 s apart).

    Those retries multiplied every wait for a connection by ten: with the server down a
    command blocked about 52 s (10 x the pool wait) before failing.
    """
    inner = getattr(method, "__wrapped__", None)
    assert callable(inner), f"{method!r} is no longer wrapped by eventsourcing's retry"
    return cast("Callable[..., Any]", inner)


def _read_retried_once(method: _F) -> _F:
    """A read that is tried once more on a fresh connection if its connection broke.

    A read is safe to repeat. A wait for a connection that timed out is not retried: it
    already took the whole ``pool_timeout``.
    """

    @functools.wraps(method)
    def read(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (InterfaceError, OperationalError) as exc:
            if isinstance(exc.__cause__, PoolTimeout):
                raise
            return method(*args, **kwargs)

    return cast("_F", read)


def _closed_by_server(conn: Connection[Any]) -> bool:
    """Whether the server closed, or spoke on, an idle pooled connection.

    An idle connection has nothing to read unless the server ended it (a restart, an
    administrator's ``pg_terminate_backend``, an idle timeout): then a termination notice or
    the end of the stream is waiting. One non-blocking ``select``, no round trip.
    """
    if conn.closed or conn.broken:
        return True
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    return bool(readable)


class LedgerPostgresDatastore(PostgresDatastore):
    """eventsourcing's datastore that never hands out a connection the server has closed.

    A write sent on such a connection would fail only after it was sent, its commit outcome
    unknown; after a server restart every pooled connection is one. They are dropped (the pool
    replaces them) and another is taken, without the pool's own ``check`` (a round trip per
    use, or a sleep of a second or more after each failed check).
    """

    @contextmanager
    def get_connection(self) -> Iterator[Connection[DictRow]]:
        """A pooled connection that the server has not closed."""
        for _ in range((self.pool.max_size or 1) + 1):
            with super().get_connection() as conn:
                if not _closed_by_server(conn):
                    yield conn
                    return
                conn.close()  # the pool opens a new one when this one comes back
        raise OperationalError("every pooled connection had been closed by the server")


RecordRows = Callable[[Sequence[StoredEvent], Sequence[KeyRecord]], Sequence[int]]
"""Records stored rows and keys in a locked transaction and commits it."""
LOCKED_IDLE_TIMEOUT_S = 60
"""How long a locked retry's transaction may wait on its decision (a long batch on a loaded
machine takes seconds) before the server ends it; eventsourcing's default for its own
transactions, 5 s, is kept elsewhere."""
LOCK_BUCKETS = 256
"""Advisory locks per PostgreSQL transaction at most: aggregates are locked by bucket of id."""


_INT4 = struct.Struct(">i")
_ARRAY_HEADER = struct.Struct(">iiiii")  # dimensions, has-nulls flag, element type, length, base
_EMPTY_ARRAY_HEADER = struct.Struct(">iii")
_INT8_ELEMENT = struct.Struct(">iq")  # an int8 element: its length (8) and its value
_DIGEST_LENGTH = struct.Struct(">Q")  # the length prefix of each part in ``events_digest``
_TOPIC_BYTES: dict[str, tuple[bytes, bytes]] = {}
"""Encoded topics (a few dozen, used by every event), alone and as the digest has them (after
their length)."""


class _BinaryArray(bytes):
    """A one-dimensional PostgreSQL array, already in the binary wire format."""

    element_oid: ClassVar[int]
    array_oid: ClassVar[int]

    @classmethod
    def of(cls, elements: Sequence[bytes]) -> Self:
        """The array of ``elements`` (each in its type's binary format; none is NULL)."""
        if not elements:
            return cls(_EMPTY_ARRAY_HEADER.pack(0, 0, cls.element_oid))
        # Each element after its length (interleaved by slice assignment), after the header.
        pack = _INT4.pack
        parts: list[bytes] = [b""] * (2 * len(elements))
        parts[0::2] = [pack(len(element)) for element in elements]
        parts[1::2] = elements
        header = _ARRAY_HEADER.pack(1, 0, cls.element_oid, len(elements), 1)
        return cls(header + b"".join(parts))


class _TextArray(_BinaryArray):
    """``text[]`` of UTF-8 texts."""

    element_oid = 25
    array_oid = 1009


class _ByteaArray(_BinaryArray):
    """``bytea[]``."""

    element_oid = 17
    array_oid = 1001


class _Int8Array(bytes):
    """``bigint[]``, already in the binary wire format."""

    array_oid: ClassVar[int] = 1016

    @classmethod
    def of(cls, values: Sequence[int]) -> Self:
        """The array of ``values``."""
        if not values:
            return cls(_EMPTY_ARRAY_HEADER.pack(0, 0, 20))
        pack = _INT8_ELEMENT.pack
        return cls(
            b"".join([_ARRAY_HEADER.pack(1, 0, 20, len(values), 1), *[pack(8, v) for v in values]])
        )


class _ReadyArrayDumper(Dumper):
    """Sends a ready binary array as it is (its type from its class)."""

    format = Format.BINARY

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        self.oid = cls.array_oid  # type: ignore[attr-defined]
        connection = self.connection
        if connection is not None and connection.info.encoding != "utf-8":
            raise StoreConfigError(
                f"the PostgreSQL client encoding is {connection.info.encoding}, not UTF-8"
            )

    def dump(self, obj: Any) -> Buffer:
        """The array's bytes."""
        return cast("bytes", obj)


for _array_class in (_TextArray, _ByteaArray, _Int8Array):
    psycopg.adapters.register_dumper(_array_class, _ReadyArrayDumper)


def record_parameters(
    stored_events: Sequence[StoredEvent], keys: Sequence[KeyRecord]
) -> tuple[Any, ...]:
    """The parameters of ``ledger_record``: column arrays, keys in order, the digest.

    The arrays go in PostgreSQL's binary array format, built here in one pass that also
    feeds the digest (``ledger.chain.events_digest`` of the rows, byte for byte): psycopg's
    own list dumpers inspect every element in Python, ~3 µs an event in a batch and ~50 µs
    a single call.
    """
    keys = _in_key_order(keys)
    ids: list[bytes] = []
    versions: list[int] = []
    topics: list[bytes] = []
    states: list[bytes] = []
    digest_parts: list[bytes] = []
    add = digest_parts.extend
    length = _DIGEST_LENGTH.pack
    topic_bytes = _TOPIC_BYTES
    for stored in stored_events:
        originator_id = str(stored.originator_id).encode()
        version = stored.originator_version
        version_text = b"%d" % version
        found = topic_bytes.get(stored.topic)
        if found is None:
            encoded = stored.topic.encode()
            found = topic_bytes.setdefault(stored.topic, (encoded, length(len(encoded)) + encoded))
        topic, digest_topic = found
        state = stored.state
        if type(state) is not bytes:
            state = bytes(state)
        ids.append(originator_id)
        versions.append(version)
        topics.append(topic)
        states.append(state)
        # Each field after its length (the topic's is cached with it).
        add(
            (
                length(len(originator_id)),
                originator_id,
                length(len(version_text)),
                version_text,
                digest_topic,
                length(len(state)),
                state,
            )
        )
    return (
        _TextArray.of(ids),
        _Int8Array.of(versions),
        _TextArray.of(topics),
        _ByteaArray.of(states),
        _TextArray.of([k.key.encode() for k in keys]),
        _TextArray.of([k.fingerprint.encode() for k in keys]),
        _ByteaArray.of([k.outcome for k in keys]),
        hashlib.sha256(b"".join(digest_parts)).digest(),
    )


def _select_many(
    recorder: PostgresAggregateRecorder, statement: str, params: tuple[Any, ...]
) -> list[StoredEvent]:
    """Stored rows of a batched read (``statement`` yields id, version, topic, state)."""
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, params, prepare=True)
        return [
            StoredEvent(
                row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"])
            )
            for row in curs.fetchall()
        ]


def _select_after_statement(recorder: PostgresAggregateRecorder) -> str:
    """Rows of many streams after a version each, in one query (stream by stream, in order)."""
    return (
        SQL(
            # LATERAL: one index range scan per stream (a plain join was planned as a merge
            # join over the whole primary key index: 21 ms for 1,000 CTIs of a 43,000-event
            # log, growing with the log; this reads 2,000 index pages in 3 ms).
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%b::{id_type}[], %b::bigint[]) WITH ORDINALITY AS t(id, version, n) "
            "CROSS JOIN LATERAL (SELECT * FROM {schema}.{table} "
            "WHERE originator_id = t.id AND originator_version > t.version "
            "ORDER BY originator_version) AS e "
            "ORDER BY t.n, e.originator_version"
        )
        .format(
            id_type=Identifier(recorder.datastore.originator_id_type),
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )
        .as_string()
    )


class LedgerPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL application recorder that also writes idempotency keys in the same transaction."""

    def __init__(self, datastore: Any, *, events_table_name: str = "ledger_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        prefix = events_table_name.removesuffix("_events")
        self.keys_table_name = f"{prefix}_keys"
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.keys_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "key text PRIMARY KEY, fingerprint text NOT NULL, outcome bytea NOT NULL)"
            ).format(schema=schema, table=table)
        )
        self.select_keys_statement = SQL(
            "SELECT key, fingerprint, outcome FROM {schema}.{table} WHERE key = ANY(%s)"
        ).format(schema=schema, table=table)
        self.chain_table_name = f"{prefix}_chain"
        chain = Identifier(self.chain_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{chain} ("
                "last_id bigint PRIMARY KEY, first_id bigint NOT NULL, hash bytea NOT NULL)"
            ).format(schema=schema, chain=chain)
        )
        # Every writer of an aggregate holds a transaction-scoped advisory lock on it (on its
        # bucket: the lock table is shared by the whole server, so a transaction takes at most
        # LOCK_BUCKETS locks) from before its first write until its commit. The locks are
        # taken in ascending order, so writers never wait on each other in a cycle. A writer
        # that lost a race takes the locks of what it touched BEFORE reading and deciding
        # again (``locked``), so nobody can write those aggregates between its read and its
        # commit: its retry cannot lose the same race twice.
        self.lock_function_name = f"{prefix}_lock"
        lock_class = zlib.crc32(events_table_name.encode()) & 0x7FFF_FFFF
        lock_function = Identifier(self.datastore.schema, self.lock_function_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {function}(ids {id_type}[]) "
                "RETURNS void LANGUAGE plpgsql AS $$ "
                "DECLARE bucket int; "
                "BEGIN "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "SET LOCAL idle_in_transaction_session_timeout = '{idle_s}s'; "
                "FOR bucket IN SELECT DISTINCT hashtext(i::text) & {mask} "
                "FROM unnest(ids) AS i ORDER BY 1 LOOP "
                "PERFORM pg_advisory_xact_lock({lock_class}, bucket); "
                "END LOOP; "
                "END $$"
            ).format(
                function=lock_function,
                id_type=Identifier(self.datastore.originator_id_type),
                lock_timeout=self.datastore.lock_timeout,
                mask=LOCK_BUCKETS - 1,
                idle_s=LOCKED_IDLE_TIMEOUT_S,
                lock_class=lock_class,
            )
        )
        self.lock_statement = (
            SQL("SELECT {function}(%b)").format(function=lock_function).as_string()
        )
        # The whole write is one server-side function, called as one statement in autocommit
        # (its own transaction) or as the last statement of a locked transaction: the
        # aggregates' locks, keys (no table lock needed: their primary key makes a racing
        # duplicate fail, and a writer holds the table lock only after its keys are in, so
        # keys and lock never wait on each other in a cycle), then eventsourcing's table lock
        # and NOTIFY (so notification ids commit in order), the events, and the chain link
        # computed from the previous link and the ids just issued. One round trip per write,
        # as a one-row insert; eventsourcing's own path takes seven statements and two syncs,
        # and sends events as a composite-type array that psycopg renders as text, escaping
        # every byte of every state in Python (~30 µs an event).
        self.record_function_name = f"{prefix}_record"
        record_function = Identifier(self.datastore.schema, self.record_function_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {function}("
                "ids {id_type}[], versions bigint[], topics text[], states bytea[], "
                "key_names text[], fingerprints text[], outcomes bytea[], digest bytea) "
                "RETURNS SETOF bigint LANGUAGE plpgsql "
                # Plans made once per session: with custom plans (the default for the first
                # calls, and kept when their estimate beats the generic one) every call
                # planned its statements again.
                "SET plan_cache_mode = force_generic_plan AS $$ "
                "DECLARE new_ids bigint[]; "
                "BEGIN "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                # The aggregates' locks as {lock_function} takes them (same buckets, same
                # ascending order), without its call and its second setting.
                "PERFORM pg_advisory_xact_lock({lock_class}, bucket) FROM ("
                "SELECT DISTINCT hashtext(i::text) & {mask} AS bucket "
                "FROM unnest(ids) AS i ORDER BY 1) AS buckets; "
                "IF cardinality(key_names) > 0 THEN "
                "INSERT INTO {schema}.{keys} (key, fingerprint, outcome) "
                "SELECT * FROM unnest(key_names, fingerprints, outcomes); "
                "END IF; "
                "IF cardinality(ids) > 0 THEN "
                "LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "WITH new AS ("
                "INSERT INTO {schema}.{events} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING notification_id) "
                "SELECT array_agg(notification_id ORDER BY notification_id) INTO new_ids "
                "FROM new; "
                "INSERT INTO {schema}.{chain} (last_id, first_id, hash) VALUES ("
                "new_ids[cardinality(new_ids)], new_ids[1], sha256(coalesce("
                "(SELECT hash FROM {schema}.{chain} ORDER BY last_id DESC LIMIT 1), "
                "''::bytea) || digest)); "
                "RETURN QUERY SELECT unnest(new_ids); "
                "END IF; "
                "END $$"
            ).format(
                function=record_function,
                lock_function=lock_function,
                id_type=Identifier(self.datastore.originator_id_type),
                schema=schema,
                keys=table,
                events=Identifier(self.events_table_name),
                chain=chain,
                channel=Identifier(self.channel_name),
                lock_timeout=self.datastore.lock_timeout,
                lock_class=lock_class,
                mask=LOCK_BUCKETS - 1,
            )
        )
        # The connection and cursor kept for writes (``_write_cursor``).
        self._writer_lock = threading.Lock()
        self._writer: Cursor[Any] | None = None
        # ``insert_events_later`` sends ``record_statement`` prepared under its own name, on
        # the connections where it was prepared.
        self._prepared_later: weakref.WeakSet[Connection[Any]] = weakref.WeakSet()
        self.record_later_prepare = (
            SQL(
                "PREPARE {name} (text[], bigint[], text[], bytea[], text[], text[], bytea[], "
                "bytea) AS SELECT * FROM {function}($1, $2, $3, $4, $5, $6, $7, $8)"
            )
            .format(name=Identifier(_RECORD_LATER.decode()), function=record_function)
            .as_string()
        )
        # Rendered once: a composed query is rendered again on every execute otherwise.
        self.record_statement = (
            SQL("SELECT * FROM {function}(%b, %b, %b, %b, %b, %b, %b, %b)")
            .format(function=record_function)
            .as_string()
        )

    select_events = _read_retried_once(_without_retry(PostgresAggregateRecorder.select_events))
    select_notifications = _read_retried_once(
        _without_retry(PostgresApplicationRecorder.select_notifications)
    )
    max_notification_id = _read_retried_once(
        _without_retry(PostgresApplicationRecorder.max_notification_id)
    )

    @_read_retried_once
    def select_events_after(self, streams: Sequence[tuple[str, int]]) -> list[StoredEvent]:
        """The events of each stream after its version, in one query (one round trip)."""
        ids = [i for i, _ in streams]
        versions = [v for _, v in streams]
        return _select_many(self, self._select_after, (ids, versions))

    @functools.cached_property
    def _select_after(self) -> str:
        return _select_after_statement(self)

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        keys: Sequence[KeyRecord] = (),
        **_kwargs: Any,
    ) -> Sequence[int] | None:
        """Keys, events and the chain link in one transaction; the notification ids in order.

        A key or version already taken raises psycopg's IntegrityError (translated by
        ``get_connection``) and the server rolls the whole call back. Never retried here: if
        the connection breaks once the call is sent, the server may have committed it, so
        ``_OutcomeUnknown`` is raised; if the server answered with an error (a lock timeout),
        it rolled the call back and the error is raised as it is.
        """
        if not stored_events and not keys:
            return []
        with self._write_cursor() as curs:
            conn = curs.connection
            assert conn.autocommit  # the function call is the transaction
            try:
                curs.execute(
                    self.record_statement,
                    self.record_parameters(stored_events, keys),
                    prepare=True,
                )
                ids = [row[0] for row in curs.fetchall()]
            except PsycopgError as exc:
                if conn.broken or conn.closed:
                    raise _OutcomeUnknown(str(exc)) from exc
                raise
        assert len(ids) == len(stored_events), (len(ids), len(stored_events))
        return ids

    def insert_events_later(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyRecord]
    ) -> Sent:
        """``insert_events``, sent on the kept writer connection without waiting for the answer.

        Its ``answer`` waits for it and returns the ids, or raises what ``insert_events``
        raises; it must be taken (the writer is held until then). The call is sent with
        libpq's asynchronous API, so that the caller's thread decides the next commands while
        the server works: the statement is the same ``record_statement``, prepared once per
        connection, with the same binary parameters. If the writer is busy the write is made
        at once on a pooled connection.
        """
        if not stored_events and not keys:
            return Sent(list)
        if not self._writer_lock.acquire(blocking=False):
            try:
                ids = self.insert_events(stored_events, keys=keys) or []
            except PersistenceError as exc:
                return _raising(exc)
            return Sent(lambda: ids)
        try:
            params = self.record_parameters(stored_events, keys)
            with _as_persistence_errors():
                conn = self._kept_writer().connection
                if conn not in self._prepared_later:
                    conn.execute(self.record_later_prepare)
                    self._prepared_later.add(conn)
        except BaseException as exc:
            self._writer_lock.release()
            return _raising(exc)
        pgconn = conn.pgconn
        try:
            pgconn.send_query_prepared(_RECORD_LATER, params, _BINARY_PARAMS, Format.BINARY)
            _flush(pgconn)
        except BaseException as exc:
            # Part of the call may have reached the server: its outcome is unknown.
            return self._later_failed(exc)

        def finish() -> Sequence[int]:
            try:
                results = _results(pgconn)
            except BaseException as exc:
                self._later_failed(exc).answer()
                raise AssertionError("unreachable") from exc  # pragma: no cover
            try:
                for result in results:
                    if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                        with _as_persistence_errors():
                            raise psycopg.errors.error_from_result(result, "utf-8")
                (rows,) = results
                ids = [_INT8.unpack(rows.get_value(i, 0) or b"")[0] for i in range(rows.ntuples)]
            finally:
                self._writer_lock.release()
            assert len(ids) == len(stored_events), (len(ids), len(stored_events))
            return ids

        return Sent(finish, pgconn.socket)

    def _later_failed(self, exc: BaseException) -> Sent:
        """A write sent by ``insert_events_later`` whose connection failed: the connection is
        closed and given back, and the outcome is unknown (the server may have committed)."""
        try:
            curs = self._writer
            if curs is not None:
                with contextlib.suppress(psycopg.Error):
                    curs.connection.close()
                self._drop_writer()
        finally:
            self._writer_lock.release()
        if not isinstance(exc, Exception):
            raise exc
        return _raising(_OutcomeUnknown(str(exc)))

    @contextmanager
    def _write_cursor(self) -> Iterator[Cursor[Any]]:
        """A cursor for one write: on the connection this recorder keeps between writes when
        it is free (no pool checkout, and psycopg reuses the cursor's adapters and converted
        query: ~40 us of a single write's ~150 us of client work), else on a pooled one.

        Errors are eventsourcing's, as from ``get_connection``. The kept connection goes back
        to the pool (which replaces it) when the server closed it or it broke, and on
        ``release_writer``.
        """
        if not self._writer_lock.acquire(blocking=False):
            with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
                yield c
            return
        try:
            with _as_persistence_errors():
                curs = self._kept_writer()
                try:
                    yield curs
                finally:
                    if curs.connection.broken or curs.connection.closed:
                        self._drop_writer()
        finally:
            self._writer_lock.release()

    def _kept_writer(self) -> Cursor[Any]:
        """The kept writer's cursor (the writer lock is held): a new one if there was none or
        the server closed its connection."""
        curs = self._writer
        if curs is not None and _closed_by_server(curs.connection):
            self._drop_writer()
            curs = None
        if curs is None:
            curs = self._writer = self._take_connection().cursor(row_factory=tuple_row)
        return curs

    def _take_connection(self) -> Connection[Any]:
        """A pooled connection the server has not closed, as ``get_connection`` hands out."""
        datastore = self.datastore
        pool = datastore.pool
        pool.open(datastore.pool_open_timeout is not None, datastore.pool_open_timeout or 30.0)
        for _ in range((pool.max_size or 1) + 1):
            conn = pool.getconn()
            if not _closed_by_server(conn):
                return conn
            conn.close()  # the pool opens a new one when this one comes back
            pool.putconn(conn)
        raise OperationalError("every pooled connection had been closed by the server")

    def _drop_writer(self) -> None:
        """Gives the kept connection back to the pool (the lock is held); one the server
        closed or that broke is closed first, so that the pool replaces it."""
        curs, self._writer = self._writer, None
        if curs is not None:
            conn = curs.connection
            with contextlib.suppress(psycopg.Error):
                curs.close()
            if conn.broken or _closed_by_server(conn):
                conn.close()
            self.datastore.pool.putconn(conn)

    def release_writer(self) -> None:
        """Gives the connection kept for writes back to the pool (before the pool closes)."""
        with self._writer_lock:
            self._drop_writer()

    @contextmanager
    def locked(self, aggregate_ids: Sequence[str]) -> Iterator[RecordRows]:
        """A transaction that holds the aggregates' locks; yields what records in it and commits.

        Reads made meanwhile (on other connections) see every aggregate of ``aggregate_ids`` as
        it will be when this transaction writes, since any writer of them waits for the locks.
        Leaving without recording rolls back. Errors: a taken key (or a deadlock, possible only
        when the write touches aggregates it had not locked) is ``WriteConflict``; a lock
        waited for past the lock timeout is ``ConcurrencyError``.
        """
        with self.datastore.get_connection() as conn:
            assert conn.autocommit
            done = False

            def record(
                stored_events: Sequence[StoredEvent], keys: Sequence[KeyRecord]
            ) -> list[int]:
                nonlocal done
                with _postgres_errors(), conn.cursor(row_factory=tuple_row) as curs:
                    curs.execute(
                        self.record_statement,
                        self.record_parameters(stored_events, keys),
                        prepare=True,
                    )
                    ids = [row[0] for row in curs.fetchall()]
                done = True  # committed, or rolled back by the server: never roll back here
                try:
                    conn.execute("COMMIT")
                except PsycopgError as exc:
                    if conn.broken or conn.closed:
                        raise _OutcomeUnknown(str(exc)) from exc
                    with _postgres_errors():
                        raise
                assert len(ids) == len(stored_events), (len(ids), len(stored_events))
                return ids

            try:
                with _postgres_errors():
                    conn.execute("BEGIN")
                    conn.execute(self.lock_statement, (list(aggregate_ids),), prepare=True)
                yield record
            finally:
                if not done:
                    # A broken connection cannot roll back, and need not: the server ends its
                    # transaction, and the pool discards the connection.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")

    def record_parameters(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyRecord]
    ) -> tuple[Any, ...]:
        """The parameters of ``record_statement`` (``record_parameters``)."""
        return record_parameters(stored_events, keys)

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The stored rows of those of ``keys`` that were used."""
        if not keys:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_keys_statement, (list(keys),), prepare=True)
            return {
                row["key"]: KeyRecord(row["key"], row["fingerprint"], bytes(row["outcome"]))
                for row in curs.fetchall()
            }


@contextmanager
def _as_persistence_errors() -> Iterator[None]:
    """psycopg's errors as eventsourcing's, as ``PostgresDatastore.get_connection`` gives them
    (what ``EventStore`` tells apart: a lost race, a connection failure, anything else)."""
    try:
        yield
    except psycopg.InterfaceError as exc:
        raise InterfaceError(str(exc)) from exc
    except psycopg.OperationalError as exc:
        raise OperationalError(str(exc)) from exc
    except psycopg.DataError as exc:
        raise DataError(str(exc)) from exc
    except psycopg.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    except psycopg.InternalError as exc:
        raise InternalError(str(exc)) from exc
    except psycopg.ProgrammingError as exc:
        raise ProgrammingError(str(exc)) from exc
    except psycopg.NotSupportedError as exc:
        raise NotSupportedError(str(exc)) from exc
    except psycopg.DatabaseError as exc:
        raise DatabaseError(str(exc)) from exc
    except psycopg.Error as exc:
        raise PersistenceError(str(exc)) from exc


@contextmanager
def _postgres_errors() -> Iterator[None]:
    """PostgreSQL errors of a locked write as the engine's: retry, give up, or infrastructure."""
    try:
        yield
    except (psycopg.errors.IntegrityError, psycopg.errors.DeadlockDetected) as exc:
        raise WriteConflict(str(exc)) from None
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        raise ConcurrencyError(f"timed out waiting for a lock: {exc}") from None
    except psycopg.Error as exc:
        # Described by ``EventStore`` like every other failed call.
        raise PersistenceError(str(exc)) from exc


_RECORD_LATER = b"ledger_record_later"
"""The name ``insert_events_later`` prepares ``record_statement`` under."""
_BINARY_PARAMS = (Format.BINARY,) * 8
_INT8 = struct.Struct(">q")


def _flush(pgconn: psycopg.pq.abc.PGconn) -> None:
    """Sends what libpq holds for the server, waiting while the socket is full."""
    while pgconn.flush():
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLOUT)
        poller.poll()
        pgconn.consume_input()  # the server may be answering while it reads


def _results(pgconn: psycopg.pq.abc.PGconn) -> list[psycopg.pq.abc.PGresult]:
    """Every result of the call sent on ``pgconn``, waiting for them (without the GIL)."""
    results: list[psycopg.pq.abc.PGresult] = []
    while True:
        pgconn.consume_input()
        if pgconn.is_busy():
            wait_readable([pgconn.socket])
            continue
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


def _raising(exc: BaseException) -> Sent:
    """A write that failed before it was sent: its answer raises ``exc``."""

    def answer() -> Sequence[int]:
        raise exc

    return Sent(answer)


def _in_key_order(keys: Sequence[KeyRecord]) -> list[KeyRecord]:
    # Every writer inserts its keys in one global order, so two transactions that share keys
    # wait for each other in that order and never in a cycle (no deadlock between batches).
    return sorted(keys, key=attrgetter("key"))


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite application recorder that also writes idempotency keys in the same transaction."""

    def __init__(self, datastore: Any, events_table_name: str = "stored_events") -> None:
        self.keys_table_name = "ledger_keys"
        self.chain_table_name = "ledger_chain"
        super().__init__(datastore, events_table_name)

    def construct_create_table_statements(self) -> list[str]:
        """eventsourcing's tables plus the idempotency index."""
        return [
            *super().construct_create_table_statements(),
            # A rowid table with a separate unique index: rows are appended in order and each
            # random key (a CFDI UUID) dirties a page of the dense index only, not a page of a
            # table clustered by key that also holds fingerprints and outcomes. Measured 1.8x the
            # key insert rate at 200,000 keys. Files made with the older WITHOUT ROWID layout
            # keep it; both refuse a second use of a key the same way.
            f"CREATE TABLE IF NOT EXISTS {self.keys_table_name} ("
            "key TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL, outcome BLOB NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} ("
            "last_id INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, hash BLOB NOT NULL)",
        ]

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        keys: Sequence[KeyRecord] = (),
        **_: Any,
    ) -> Sequence[int] | None:
        # SQLite gives each insert rowid = max(rowid) + 1 and this transaction holds the write
        # lock, so one executemany and a range of ids replace a round trip per event. The first
        # statement must be a write: a read first would turn a racing writer into SQLITE_BUSY.
        if keys:
            c.executemany(
                f"INSERT INTO {self.keys_table_name} (key, fingerprint, outcome) "  # noqa: S608
                "VALUES (?,?,?)",
                [(k.key, k.fingerprint, k.outcome) for k in keys],
            )
        if not stored_events:
            return []
        c.executemany(
            self.insert_events_statement,
            [(s.originator_id, s.originator_version, s.topic, s.state) for s in stored_events],
        )
        c.execute("SELECT last_insert_rowid()")
        last = int(c.fetchone()[0])
        first = last - len(stored_events) + 1
        c.execute(
            f"SELECT hash FROM {self.chain_table_name} ORDER BY last_id DESC LIMIT 1"  # noqa: S608
        )
        row = c.fetchone()
        previous = bytes(row[0]) if row else GENESIS
        c.execute(
            f"INSERT INTO {self.chain_table_name} VALUES (?,?,?)",  # noqa: S608
            (last, first, link(previous, events_digest(stored_events))),
        )
        return list(range(first, last + 1))

    @contextmanager
    def locked(self, aggregate_ids: Sequence[str]) -> Iterator[RecordRows]:  # noqa: ARG002
        """A transaction that holds SQLite's write lock (``BEGIN IMMEDIATE``) from the start.

        SQLite has one writer at a time, so holding its lock before reading and deciding means
        nobody can write anything before this transaction commits, whatever it touches.
        Yields what records in the transaction and commits; leaving without recording rolls
        back. Waiting for the lock past the busy timeout is ``ConcurrencyError``.
        """
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor()
            done = False

            def record(
                stored_events: Sequence[StoredEvent], keys: Sequence[KeyRecord]
            ) -> list[int]:
                nonlocal done
                with _sqlite_errors():
                    ids = self._insert_events(cursor, stored_events, keys=keys)
                    conn.commit()
                done = True
                return list(ids or [])

            try:
                with _sqlite_errors():
                    cursor.execute("BEGIN IMMEDIATE")
                yield record
            finally:
                if not done:
                    conn.rollback()

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The stored rows of those of ``keys`` that were used."""
        found: dict[str, KeyRecord] = {}
        if not keys:
            return found
        chunk_max = 500  # SQLite's bound on host parameters in one statement.
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(keys), chunk_max):
                chunk = list(keys[start : start + chunk_max])
                marks = ",".join("?" * len(chunk))
                c.execute(
                    f"SELECT key, fingerprint, outcome FROM {self.keys_table_name} "  # noqa: S608
                    f"WHERE key IN ({marks})",
                    chunk,
                )
                for row in c.fetchall():
                    found[row[0]] = KeyRecord(row[0], row[1], bytes(row[2]))
        return found


@contextmanager
def _sqlite_errors() -> Iterator[None]:
    """SQLite errors of a locked write as the engine's: retry, give up, or infrastructure."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise WriteConflict(str(exc)) from None
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise ConcurrencyError(
                f"timed out waiting for the write lock: {exc} (another process held it past"
                " busy_timeout)"
            ) from None
        raise PersistenceError(str(exc)) from exc
    except sqlite3.Error as exc:
        # Described by ``EventStore`` like every other failed call.
        raise PersistenceError(str(exc)) from exc


class LedgerPostgresSnapshotRecorder(PostgresAggregateRecorder):
    """eventsourcing's recorder of snapshots, failing fast like the events' recorder."""

    select_events = _read_retried_once(_without_retry(PostgresAggregateRecorder.select_events))
    # A snapshot only speeds up loading: a failed one is logged by the engine, never retried.
    insert_events = _without_retry(PostgresAggregateRecorder.insert_events)

    @_read_retried_once
    def select_latest(self, originator_ids: Sequence[str]) -> list[StoredEvent]:
        """The latest snapshot of each of ``originator_ids`` that has one, in one query."""
        return _select_many(self, self._select_latest, (list(originator_ids),))

    @functools.cached_property
    def _select_latest(self) -> str:
        return (
            SQL(
                "SELECT DISTINCT ON (originator_id) originator_id, originator_version, "
                "topic, state FROM {schema}.{table} WHERE originator_id = ANY(%b) "
                "ORDER BY originator_id, originator_version DESC"
            )
            .format(
                schema=Identifier(self.datastore.schema),
                table=Identifier(self.events_table_name),
            )
            .as_string()
        )


class LedgerPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory with the ledger's recorders and bounded waits."""

    application_recorder_class = LedgerPostgresRecorder
    aggregate_recorder_class = LedgerPostgresSnapshotRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        # eventsourcing builds its own datastore inline; ours only overrides a method.
        self.datastore.__class__ = LedgerPostgresDatastore
        pool = self.datastore.pool
        # eventsourcing passes its POSTGRES_CONNECT_TIMEOUT as the pool's wait and gives libpq
        # no connect timeout at all (an unreachable host then waits for the system's TCP
        # timeout, minutes). The pool is not open yet, so both can still be set.
        pool.timeout = float(self.env.get(POSTGRES_POOL_TIMEOUT_S) or POOL_TIMEOUT_S_DEFAULT)
        assert isinstance(pool.kwargs, dict)
        pool.kwargs["connect_timeout"] = int(
            self.env.get(self.POSTGRES_CONNECT_TIMEOUT) or CONNECT_TIMEOUT_S_DEFAULT
        )
        # No JIT: the ledger's statements are short, and a catch-up of 1,000 CTIs (an unnest
        # join estimated at ~200 rows a stream) passed jit_above_cost and spent ~87 ms
        # compiling to read nothing in 3 ms, on each of a connection's first five runs.
        options = str(pool.kwargs.get("options") or "")
        pool.kwargs["options"] = f"{options} -c jit=off".strip()


SQLITE_CACHE_KIB = 32_768
"""Page cache per SQLite connection (SQLite's default is 2 MiB)."""
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 8_000
"""WAL pages before a checkpoint (SQLite's default is 1,000)."""


class LedgerSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite factory with the ledger's recorder and connection settings."""

    application_recorder_class = LedgerSQLiteRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        # Every CFDI key lands at a random place in the key index, so a batch dirties pages
        # all over it: with SQLite's 2 MiB cache each insert re-reads its page, and the WAL is
        # checkpointed every few batches. A larger cache and rarer checkpoints kept batched
        # writes ~25 % faster once the index outgrew the default cache. Durability settings
        # (synchronous, journal mode) are left as they are.
        pool = self.datastore.pool
        create_connection = pool._create_connection

        def create_tuned_connection() -> SQLiteConnection:
            connection = create_connection()
            sqlite = connection._sqlite_conn
            sqlite.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            sqlite.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
            return connection

        pool._create_connection = create_tuned_connection  # type: ignore[method-assign]


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


class StoreConfigError(LedgerError):
    """Raised when a ledger URL or store setting cannot be used."""


def _checked_cipher_key(key: str) -> str:
    """``key`` if it is a base64 AES key of 16, 24 or 32 bytes; a clear error otherwise."""
    try:
        size = len(base64.b64decode(key.encode("ascii"), validate=True))
    except (ValueError, UnicodeError):
        size = -1
    if size not in (16, 24, 32):
        raise StoreConfigError("LEDGER_CIPHER_KEY is not a base64 AES key of 16, 24 or 32 bytes")
    return key


def env_for_url(url: str | None, *, create_tables: bool = True) -> dict[str, str]:
    """The eventsourcing environment for ``sqlite:///path`` or ``postgresql://user@host/db``."""
    if url is None:
        url = os.environ.get("LEDGER_URL") or "sqlite:///ledger.db"
    parsed = urlparse(url)
    common = {
        "ORIGINATOR_ID_TYPE": "text",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "CREATE_TABLE": "y" if create_tables else "n",
    }
    cipher_key = os.environ.get("LEDGER_CIPHER_KEY")
    if cipher_key:
        common["CIPHER_KEY"] = _checked_cipher_key(cipher_key)
        # eventsourcing's default cipher needs pycryptodome; ours is the `cryptography` package.
        common["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
    if parsed.scheme == "sqlite":
        sqlite_options = _url_options(url, parsed.query, {"busy_timeout": BUSY_TIMEOUT_S_DEFAULT})
        path = unquote(parsed.path)
        if parsed.netloc:
            path = parsed.netloc + path
        if (
            path.startswith("/")
            and url.startswith("sqlite:///")
            and not url.startswith("sqlite:////")
        ):
            path = path[1:]  # sqlite:///ledger.db is relative; sqlite:////abs/path is absolute.
        if not path:
            raise StoreConfigError(f"no SQLite file in {url!r}")
        return {
            **common,
            "PERSISTENCE_MODULE": "adapters.storage.postgres:LedgerSQLiteFactory",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": str(sqlite_options["busy_timeout"]),
        }
    if parsed.scheme in ("postgresql", "postgres"):
        options = _url_options(
            url,
            parsed.query,
            {"connect_timeout": CONNECT_TIMEOUT_S_DEFAULT, "pool_timeout": POOL_TIMEOUT_S_DEFAULT},
        )
        return {
            **common,
            "PERSISTENCE_MODULE": "adapters.storage.postgres:LedgerPostgresFactory",
            "POSTGRES_DBNAME": (parsed.path or "/").lstrip("/") or "postgres",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_LOCK_TIMEOUT": "10",
            # libpq's connect timeout (eventsourcing reads the same key as the pool's wait;
            # LedgerPostgresFactory sets both right).
            "POSTGRES_CONNECT_TIMEOUT": str(options["connect_timeout"]),
            POSTGRES_POOL_TIMEOUT_S: repr(float(options["pool_timeout"])),
        }
    raise StoreConfigError(f"unsupported ledger URL {url!r} (sqlite:/// or postgresql://)")


def _url_options(url: str, query: str, defaults: dict[str, int | float]) -> dict[str, int | float]:
    """The timeouts of a URL's query string over ``defaults``; anything else is refused.

    Whole seconds for every option but ``pool_timeout``; each above 0 and at most
    ``TIMEOUT_S_MAX``. An unknown or repeated option is an error, never silently ignored.
    """
    options = dict(defaults)
    seen: set[str] = set()
    shown = url.split("?", 1)[0].rsplit("@", maxsplit=1)[-1]  # never echo a password
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name not in defaults or name in seen:
            known = ", ".join(sorted(defaults))
            raise StoreConfigError(
                f"unknown or repeated option {name!r} in the ledger URL for {shown}"
                f" (known: {known})"
            )
        seen.add(name)
        whole = isinstance(defaults[name], int)
        try:
            value: int | float = int(text) if whole else float(text)
        except ValueError:
            value = math.nan
        if not (0 < value <= TIMEOUT_S_MAX):  # also refuses nan
            unit = "whole seconds" if whole else "seconds"
            raise StoreConfigError(
                f"option {name}={text!r} in the ledger URL: expected {unit} above 0 and at most"
                f" {TIMEOUT_S_MAX}"
            )
        options[name] = value
    return options


SCHEMA_LOCK_ID = 7_310_420_001
"""PostgreSQL advisory lock that serialises schema creation between processes opening at once."""


def open_application(env: dict[str, str]) -> LedgerApplication:
    """Constructs the eventsourcing application, creating tables once even under a race."""
    if env["PERSISTENCE_MODULE"].endswith("LedgerPostgresFactory") and env["CREATE_TABLE"] == "y":
        conninfo = psycopg.conninfo.make_conninfo(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=env["POSTGRES_CONNECT_TIMEOUT"],
        )
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


def describe_store(env: Mapping[str, str]) -> str:
    """Where the events are kept, for error messages (never the password)."""
    if "SQLITE_DBNAME" in env:
        return f"the SQLite file {env['SQLITE_DBNAME']}"
    return (
        f"PostgreSQL at {env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT')}"
        f" (database {env.get('POSTGRES_DBNAME')}, user {env.get('POSTGRES_USER')})"
    )


def infrastructure_message(action: str, env: Mapping[str, str], exc: BaseException) -> str:
    """One line: what failed, where, the driver's reason, and what to check."""
    reason = " ".join(str(exc).split()).rstrip(".?! ")  # libpq's messages span lines
    if "SQLITE_DBNAME" in env:
        check = (
            "Check that no other process (another ledger, a backup, a sqlite3 shell) holds"
            " a long write transaction on the file, and that the file and its directory are"
            f" writable; waited busy_timeout={env.get('SQLITE_LOCK_TIMEOUT')} s (URL option)"
        )
    else:
        check = (
            f"Check that the server runs and accepts TCP connections at"
            f" {env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT')}, that the URL's host,"
            f" port, database and user are right, and the network between; waited at most"
            f" connect_timeout={env.get('POSTGRES_CONNECT_TIMEOUT')} s to connect and"
            f" pool_timeout={env.get(POSTGRES_POOL_TIMEOUT_S)} s for a connection (URL options)"
        )
    return f"cannot {action}: {describe_store(env)}: {reason}. {check}"


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
        self.mapper = app.mapper

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
        from adapters.storage.audit import StoreSource  # noqa: PLC0415  (it imports this module)

        return StoreSource(self)

    @property
    def pipelined(self) -> bool:
        """Whether ``record_later`` returns before the database answers (PostgreSQL)."""
        return isinstance(self.recorder, LedgerPostgresRecorder)

    def record(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
        """Events and keys in one transaction; ``WriteConflict`` if a version or key was taken."""
        to_stored = self.mapper.to_stored_event
        stored = [to_stored(e) for e in events]
        return self._recorded(len(stored), lambda: self.recorder.insert_events(stored, keys=keys))

    def record_later(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sent:
        """``record`` sent now; its ``answer`` waits for the ids or raises the error (on SQLite
        the write is made at once: there is no server to overlap with)."""
        recorder = self.recorder
        if not isinstance(recorder, LedgerPostgresRecorder):
            try:
                ids = self.record(events, keys)
            except LedgerError as exc:
                return _raising(exc)
            return Sent(lambda: ids)
        to_stored = self.mapper.to_stored_event
        stored = [to_stored(e) for e in events]
        sent = recorder.insert_events_later(stored, keys)
        return Sent(lambda: self._recorded(len(stored), sent.answer), sent.fileno)

    def _recorded(self, events: int, write: Callable[[], Sequence[int] | None]) -> Sequence[int]:
        """The ids of a write, its errors as the engine's."""
        try:
            ids = write()
        except IntegrityError as exc:
            raise WriteConflict(str(exc)) from None
        except _OutcomeUnknown as exc:
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
        to_stored = self.mapper.to_stored_event
        try:
            with self.recorder.locked(sorted(aggregate_ids)) as insert:

                def record(events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
                    try:
                        return insert([to_stored(e) for e in events], keys)
                    except _OutcomeUnknown as exc:
                        raise self._outcome_unknown(len(events), exc) from None

                yield record
        except PersistenceError as exc:
            raise self._failed("record events", exc) from None

    def snapshot(self, aggregates: Iterable[Aggregate], at: datetime) -> None:
        """Stores snapshots of the aggregates as they are now."""
        assert self.app.snapshots is not None
        try:
            self.app.snapshots.put([Snapshot.take(a, at) for a in aggregates])
        except PersistenceError as exc:
            raise self._failed("store snapshots", exc) from None

    def _failed(self, action: str, exc: BaseException) -> InfrastructureError:
        """The ``InfrastructureError`` of a failed database call, saying what to check."""
        return InfrastructureError(infrastructure_message(action, self.env, exc))

    def close(self) -> None:
        """Closes the database connections."""
        if isinstance(self.recorder, LedgerPostgresRecorder):
            self.recorder.release_writer()
        self.app.close()
