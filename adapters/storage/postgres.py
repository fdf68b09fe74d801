"""The PostgreSQL recorders and factory: eventsourcing's tables plus the idempotency keys and the
hash chain, all written by one server-side function call (``ledger_record``) per transaction.

Every writer of an aggregate holds its advisory lock (by bucket) until its commit; a locked
retry takes the locks before it reads (``locked``). The connection kept for writes and the
pipelined write are ``postgres_writer.py``'s; the pool is ``postgres_pool.py``'s; the call's
parameters are ``postgres_arrays.py``'s; guarded writes and turns at hot aggregates
(``guarded``) are ``postgres_guarded.py``'s.
"""

from __future__ import annotations

import contextlib
import functools
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from eventsourcing.utils import Environment, EnvType
from psycopg import Error as PsycopgError
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from adapters.storage.config import (
    CONNECT_TIMEOUT_S_DEFAULT,
    POOL_TIMEOUT_S_DEFAULT,
    POSTGRES_POOL_TIMEOUT_S,
    POSTGRES_TARGET_SESSION_ATTRS,
)
from adapters.storage.postgres_arrays import record_parameters
from adapters.storage.postgres_guarded import GuardedSql, GuardedWriter, postgres_errors
from adapters.storage.postgres_pool import (
    LedgerConnectionPool,
    LedgerPostgresDatastore,
    read_retried_once,
    without_retry,
)
from adapters.storage.postgres_writer import WriterConnection
from adapters.storage.recording import OutcomeUnknown, RecordRows
from ledger.chain import StoredRow
from ledger.write.ports import KeyRecord, Sent

LOCKED_IDLE_TIMEOUT_S = 60
"""How long a locked retry's transaction may wait on its decision (a long batch on a loaded
machine takes seconds) before the server ends it; eventsourcing's default for its own
transactions, 5 s, is kept elsewhere."""
LOCK_BUCKETS = 256
"""Advisory locks per PostgreSQL transaction at most: aggregates are locked by bucket of id."""

_LOCK_BUCKETS_SQL = (
    "PERFORM pg_advisory_xact_lock({lock_class}, bucket) FROM ("
    "SELECT DISTINCT hashtext(i::text) & {mask} AS bucket "
    "FROM unnest({lock_ids}) AS i ORDER BY 1) AS buckets;"
)
"""The aggregates' transaction locks, in the record functions (as ``ledger_lock`` takes them:
same buckets, same ascending order)."""
_WRITE_SQL = (
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
    "''::bytea) || digest));"
)
"""The record functions' writes, after their locks: keys, the events table's lock and NOTIFY,
events, the chain link; it leaves the block ``IF cardinality(ids) > 0`` open for the answer."""


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
        self.chain_table_name = f"{prefix}_chain"
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.keys_table_name)
        chain = Identifier(self.chain_table_name)
        self.sql_create_statements.extend(
            SQL(text).format(schema=schema, table=table, chain=chain)
            for text in (
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "key text PRIMARY KEY, fingerprint text NOT NULL, outcome bytea NOT NULL)",
                "CREATE TABLE IF NOT EXISTS {schema}.{chain} ("
                "last_id bigint PRIMARY KEY, first_id bigint NOT NULL, hash bytea NOT NULL)",
            )
        )
        self.select_keys_statement = SQL(
            "SELECT key, fingerprint, outcome FROM {schema}.{table} WHERE key = ANY(%s)"
        ).format(schema=schema, table=table)
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
        names = {
            "id_type": Identifier(self.datastore.originator_id_type),
            "schema": schema,
            "keys": table,
            "events": Identifier(self.events_table_name),
            "chain": chain,
            "channel": Identifier(self.channel_name),
            "lock_timeout": self.datastore.lock_timeout,
            "lock_class": lock_class,
            "mask": LOCK_BUCKETS - 1,
        }
        names["lock_buckets"] = SQL(_LOCK_BUCKETS_SQL).format(lock_ids=SQL("ids"), **names)
        names["write"] = SQL(_WRITE_SQL).format(**names)
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
                "{lock_buckets} "
                "{write} "
                "RETURN QUERY SELECT unnest(new_ids); "
                "END IF; "
                "END $$"
            ).format(function=record_function, **names)
        )
        # Guarded writes and the hot wait, with their tables (``postgres_guarded.py``).
        self.guarded_sql = GuardedSql(self.datastore.schema, prefix, names, _LOCK_BUCKETS_SQL)
        self.sql_create_statements.extend(self.guarded_sql.create_statements)
        # The connection and cursor kept for writes, and the pipelined write on it.
        self.writer = WriterConnection(self.datastore, record_function)
        # Rendered once: a composed query is rendered again on every execute otherwise.
        self.record_statement = (
            SQL("SELECT * FROM {function}(%b, %b, %b, %b, %b, %b, %b, %b)")
            .format(function=record_function)
            .as_string()
        )

    select_events = read_retried_once(without_retry(PostgresAggregateRecorder.select_events))
    select_notifications = read_retried_once(
        without_retry(PostgresApplicationRecorder.select_notifications)
    )
    max_notification_id = read_retried_once(
        without_retry(PostgresApplicationRecorder.max_notification_id)
    )

    @read_retried_once
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
        stored_events: Sequence[StoredRow],
        *,
        keys: Sequence[KeyRecord] = (),
        **_kwargs: Any,
    ) -> Sequence[int] | None:
        """Keys, events and the chain link in one transaction; the notification ids in order.

        A key or version already taken raises psycopg's IntegrityError (translated by
        ``get_connection``) and the server rolls the whole call back. Never retried here: if
        the connection breaks once the call is sent, the server may have committed it, so
        ``OutcomeUnknown`` is raised; if the server answered with an error (a lock timeout),
        it rolled the call back and the error is raised as it is.
        """
        if not stored_events and not keys:
            return []
        with self.writer.cursor() as curs:
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
                    raise OutcomeUnknown(str(exc)) from exc
                raise
        assert len(ids) == len(stored_events), (len(ids), len(stored_events))
        return ids

    def insert_events_later(
        self, stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]
    ) -> Sent:
        """``insert_events``, sent on the kept writer connection without waiting for the answer
        (``WriterConnection.send``; at once on a pooled connection if the writer is busy)."""
        if not stored_events and not keys:
            return Sent(list)
        return self.writer.send(stored_events, keys, self.insert_events)

    def release_writer(self) -> None:
        """Gives the connection kept for writes back to the pool (before the pool closes)."""
        self.writer.release()

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

            def record(stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]) -> list[int]:
                nonlocal done
                with postgres_errors(), conn.cursor(row_factory=tuple_row) as curs:
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
                        raise OutcomeUnknown(str(exc)) from exc
                    with postgres_errors():
                        raise
                assert len(ids) == len(stored_events), (len(ids), len(stored_events))
                return ids

            try:
                with postgres_errors():
                    conn.execute("BEGIN")
                    conn.execute(self.lock_statement, (list(aggregate_ids),), prepare=True)
                yield record
            finally:
                if not done:
                    # A broken connection cannot roll back, and need not: the server ends its
                    # transaction, and the pool discards the connection.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")

    @contextmanager
    def guarded(self) -> Iterator[GuardedWriter]:
        """Guarded writes and turns at hot aggregates (``Store.guarded``, ``Store.hot``) on
        one connection: the kept writer's when it is free.

        Each write is one statement (``ledger_record_guarded``) in its own transaction. An
        overtaken write, or a turn at a hot aggregate, leaves its locks held at session level
        for the next write on this connection, which releases them; if none follows, leaving
        releases them (or closes the connection, which releases them too).
        """
        with self.writer.cursor() as curs:
            writer = GuardedWriter(self.guarded_sql, curs)
            try:
                yield writer
            finally:
                if writer.held:
                    writer.release()

    def record_parameters(
        self, stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]
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


class LedgerPostgresSnapshotRecorder(PostgresAggregateRecorder):
    """eventsourcing's recorder of snapshots, failing fast like the events' recorder."""

    select_events = read_retried_once(without_retry(PostgresAggregateRecorder.select_events))
    # A snapshot only speeds up loading: a failed one is logged by the engine, never retried.
    insert_events = without_retry(PostgresAggregateRecorder.insert_events)

    @read_retried_once
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
        # Quick reconnection attempts for as long as a caller may wait, then none until the
        # next caller (``LedgerConnectionPool``).
        pool.__class__ = LedgerConnectionPool
        pool.reconnect_timeout = pool.timeout + pool.kwargs["connect_timeout"]
        # Several hosts (libpq's lists): which of them a connection may use.
        pool.kwargs["target_session_attrs"] = self.env.get(POSTGRES_TARGET_SESSION_ATTRS) or "any"
        # No JIT: the ledger's statements are short, and a catch-up of 1,000 CTIs (an unnest
        # join estimated at ~200 rows a stream) passed jit_above_cost and spent ~87 ms
        # compiling to read nothing in 3 ms, on each of a connection's first five runs.
        options = str(pool.kwargs.get("options") or "")
        pool.kwargs["options"] = f"{options} -c jit=off".strip()
