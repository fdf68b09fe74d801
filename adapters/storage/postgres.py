"""The PostgreSQL recorders and factory: eventsourcing's tables plus the idempotency keys and the
hash chain, all written by one server-side function call (``ledger_record``) per transaction.

Every writer of an aggregate holds its advisory lock (by bucket) until its commit; a locked
retry takes the locks before it reads (``locked``). The connection kept for writes and the
pipelined write are ``postgres_writer.py``'s; the pool is ``postgres_pool.py``'s; the call's
parameters are ``postgres_arrays.py``'s.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from eventsourcing.utils import Environment, EnvType
from psycopg import Cursor
from psycopg import Error as PsycopgError
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from adapters.storage.config import (
    CONNECT_TIMEOUT_S_DEFAULT,
    POOL_TIMEOUT_S_DEFAULT,
    POSTGRES_POOL_TIMEOUT_S,
    POSTGRES_TARGET_SESSION_ATTRS,
)
from adapters.storage.postgres_arrays import guarded_parameters, record_parameters
from adapters.storage.postgres_pool import (
    LedgerConnectionPool,
    LedgerPostgresDatastore,
    read_retried_once,
    without_retry,
)
from adapters.storage.postgres_writer import WriterConnection
from adapters.storage.recording import OutcomeUnknown, OvertakenRows, RecordRows, RowsTurn
from ledger.chain import StoredRow
from ledger.errors import ConcurrencyError
from ledger.write.ports import KeyRecord, Sent, WriteConflict

LOCKED_IDLE_TIMEOUT_S = 60
"""How long a locked retry's transaction may wait on its decision (a long batch on a loaded
machine takes seconds) before the server ends it; eventsourcing's default for its own
transactions, 5 s, is kept elsewhere."""
LOCK_BUCKETS = 256
"""Advisory locks per PostgreSQL transaction at most: aggregates are locked by bucket of id."""
HOT_TURN_WAIT_MS = 2
"""Bound on how long a writer whose turn came at a hot aggregate waits for as many batches as
its last turn carried (in steps of a millisecond)."""
HOT_WAIT_ROUNDS_MAX = 2
"""Bound on the rounds a writer waits at a hot aggregate as a reader before it queues for the
lock (each round ends when a holder is done). Two: a writer the holder did not answer tries the
lock once, and if another took it, waits for that one's answers, then queues. With 20 rounds,
two unanswered writers kept failing each other's try (each holds the lock shared while it
looks for its answer): 12 rounds a turn on average with 4 processes x 1 caller, each round a
commit, all of it between one turn's commit and the next turn."""
HOT_STALE_S = 600
"""Posts and answers older than this are dropped (their writers are gone: a wait ends within
HOT_WAIT_ROUNDS_MAX x the lock timeout, 20 s)."""
HOT_SWEEP_EVERY = 64
"""One post in this many looks for the posts and answers of writers that are gone."""
HOT_POSTS_MAX = 64
"""Bound on the batches of other processes that one writer of a hot aggregate takes in a turn."""

_LOCK_BUCKETS_SQL = (
    "PERFORM pg_advisory_xact_lock({lock_class}, bucket) FROM ("
    "SELECT DISTINCT hashtext(i::text) & {mask} AS bucket "
    "FROM unnest({lock_ids}) AS i ORDER BY 1) AS buckets;"
)
"""The aggregates' transaction locks, in the record functions (as ``ledger_lock`` takes them:
same buckets, same ascending order)."""
_TAKE_ANSWER_SQL = (
    "DELETE FROM {schema}.{answers} AS a WHERE a.id = p_post "
    "RETURNING a.answers INTO answer; "
    "IF FOUND THEN r_kinds := 'a'; r_states := ARRAY[answer]; "
    "IF pg_try_advisory_lock({gate_class}, pg_backend_pid()) THEN "
    "r_kinds := 'ag'; END IF; "
    "RETURN; END IF; "
)
"""How the hot wait takes the answer another writer left for its post: found, it returns it
(and takes its gate when free); used before each wait for the lock and after the last."""
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
            "posts": Identifier(f"{prefix}_hot_posts"),
            "answers": Identifier(f"{prefix}_hot_answers"),
            "turns": Identifier(f"{prefix}_hot_turns"),
            "gate_class": zlib.crc32(f"{prefix}_hot_gate".encode()) & 0x7FFF_FFFF,
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
        # A guarded write (``guarded``: hot aggregates) checks before it writes, in the same
        # statement and under the same locks: an aggregate it writes that moved past the
        # version it was decided on, or a key used already, makes it write nothing (no key
        # row inserted and rolled back, no WAL) and answer what overtook it: the events after
        # those versions ('e' rows: stream, version, topic, state) and the used keys' rows
        # ('k': key, fingerprint, outcome). Its locks are then kept at session level, so that
        # the next write of the same connection, decided again on that answer, cannot lose;
        # that write (``held``) releases them once it holds its own transaction's. Otherwise
        # it writes as ``ledger_record`` and answers the notification ids ('i' rows): the
        # locks are held across no client round trip unless it was overtaken.
        self.guarded_function_name = f"{prefix}_record_guarded"
        guarded_function = Identifier(self.datastore.schema, self.guarded_function_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {function}("
                "ids {id_type}[], versions bigint[], topics text[], states bytea[], "
                "key_names text[], fingerprints text[], outcomes bytea[], digest bytea, "
                "held boolean, also_lock {id_type}[], answer_ids bigint[], answer_states bytea[]) "
                'RETURNS TABLE (r_kind "char", r_id bigint, r_name text, r_version bigint, '
                "r_topic text, r_state bytea) LANGUAGE plpgsql "
                "SET plan_cache_mode = force_generic_plan AS $$ "
                "DECLARE new_ids bigint[]; stream text; since bigint; counted bigint; "
                "overtaken bigint := 0; "
                "BEGIN "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "{lock_buckets} "
                "IF held THEN PERFORM pg_advisory_unlock_all(); END IF; "
                # Stream by stream: as one join, the generic plan read the whole events
                # table (a hash join), several milliseconds per write of a hot aggregate.
                "FOR stream, since IN SELECT t.i, min(t.v) FROM unnest(ids, versions) "
                "AS t(i, v) GROUP BY t.i LOOP "
                "RETURN QUERY SELECT 'e'::\"char\", NULL::bigint, x.originator_id::text, "
                "x.originator_version, x.topic, x.state FROM {schema}.{events} AS x "
                "WHERE x.originator_id = stream AND x.originator_version >= since "
                "ORDER BY x.originator_version; "
                "GET DIAGNOSTICS counted = ROW_COUNT; "
                "overtaken := overtaken + counted; "
                "END LOOP; "
                "RETURN QUERY SELECT 'k'::\"char\", NULL::bigint, k.key, NULL::bigint, "
                "k.fingerprint, k.outcome FROM {schema}.{keys} AS k "
                "WHERE k.key = ANY(key_names); "
                "GET DIAGNOSTICS counted = ROW_COUNT; "
                "IF overtaken + counted > 0 THEN "
                "PERFORM pg_advisory_lock({lock_class}, bucket) FROM ("
                "SELECT DISTINCT hashtext(i::text) & {mask} AS bucket "
                "FROM unnest(array_cat(ids, also_lock)) AS i ORDER BY 1) AS buckets; "
                "RETURN; "
                "END IF; "
                # The answers to the batches other writers posted (``hot``), visible with the
                # events at commit.
                "IF cardinality(answer_ids) > 0 THEN "
                "INSERT INTO {schema}.{answers} (id, answers) "
                "SELECT * FROM unnest(answer_ids, answer_states); "
                "END IF; "
                "{write} "
                "RETURN QUERY SELECT 'i'::\"char\", unnest(new_ids), NULL::text, "
                "NULL::bigint, NULL::text, NULL::bytea; "
                "END IF; "
                # The end of a turn: its writer holds its gate until it posts again.
                "IF cardinality(also_lock) > 0 "
                "AND pg_try_advisory_lock({gate_class}, pg_backend_pid()) THEN "
                "RETURN QUERY SELECT 'g'::\"char\", NULL::bigint, NULL::text, NULL::bigint, "
                "NULL::text, NULL::bytea; "
                "END IF; "
                "END $$"
            ).format(
                function=guarded_function,
                **{
                    **names,
                    "lock_buckets": SQL(_LOCK_BUCKETS_SQL).format(
                        lock_ids=SQL("array_cat(ids, also_lock)"), **names
                    ),
                },
            )
        )
        # Writers of a hot aggregate in several processes commit for each other (``hot``):
        # a writer posts its batch (a row of ``posts``, unlogged: nothing to recover after a
        # crash, when every waiting connection has failed anyway), then waits for the
        # aggregate's lock (``hot_wait``). Whoever gets it first finds either the answers the
        # last holder wrote for its batch (``answers``: done, the lock is released at once) or
        # nothing: its turn. It then takes every batch posted for the aggregate meanwhile and
        # gets what was recorded after the version it knows, keeps the lock at session level
        # (as an overtaken guarded write does), decides its own batch and the posted ones, and
        # writes them all in one transaction with their answers. One commit and one flush of
        # the WAL then serve several processes, as group commit serves one process's threads.
        hot_tables = (
            "CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.{posts} ("
            "id bigint PRIMARY KEY, stream text NOT NULL, commands bytea NOT NULL, "
            "posted_at timestamptz NOT NULL DEFAULT now())",
            "ALTER TABLE {schema}.{posts} ADD COLUMN IF NOT EXISTS poster int NOT NULL "
            "DEFAULT pg_backend_pid()",
            "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{posts} (stream, id)",
            "CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.{answers} ("
            "id bigint PRIMARY KEY, answers bytea NOT NULL, "
            "answered_at timestamptz NOT NULL DEFAULT now())",
            "CREATE UNLOGGED TABLE IF NOT EXISTS {schema}.{turns} ("
            "stream text PRIMARY KEY, batches int NOT NULL)",
            "ALTER TABLE {schema}.{turns} ADD COLUMN IF NOT EXISTS posters int[] NOT NULL "
            "DEFAULT '{{}}'",
        )
        index = Identifier(f"{prefix}_hot_posts_stream_idx")
        self.sql_create_statements.extend(
            SQL(text).format(index=index, **names) for text in hot_tables
        )
        # One call: the post committed first (so that the lock's holder sees it; unlogged, so
        # its commit flushes nothing), then the wait, in a second transaction of the same
        # procedure. The answer is one row of arrays: kinds ('a' answers, else 'd' posted
        # batches, 'e' events, 'k' used keys), ids, names, versions, topics and bytes.
        hot_wait = Identifier(self.datastore.schema, f"{prefix}_hot_wait")
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE PROCEDURE {procedure}("
                "p_post bigint, p_stream text, p_commands bytea, p_version bigint, "
                "p_keys text[], p_gated boolean, INOUT r_kinds text DEFAULT NULL, "
                "INOUT r_ids bigint[] DEFAULT NULL, INOUT r_names text[] DEFAULT NULL, "
                "INOUT r_versions bigint[] DEFAULT NULL, INOUT r_topics text[] DEFAULT NULL, "
                "INOUT r_states bytea[] DEFAULT NULL) LANGUAGE plpgsql AS $$ "
                "DECLARE answer bytea; expected int[]; taken int[]; poster int; left_ms int; "
                "deadline timestamptz; "
                "BEGIN "
                "INSERT INTO {schema}.{posts} (id, stream, commands) "
                "VALUES (p_post, p_stream, p_commands); "
                # What writers that are gone left (a crash while waiting): their callers had
                # an error long ago (a wait ends within rounds x lock timeout). Looked for by
                # one post in {sweep_every} (the ids are random), before it waits: never in
                # a turn, where every writer waits for the holder (each look reads both tables
                # whole, dead rows too, till autovacuum comes).
                "IF p_post % {sweep_every} = 0 THEN "
                "DELETE FROM {schema}.{posts} AS p "
                "WHERE p.posted_at < now() - interval '{stale_s} seconds'; "
                "DELETE FROM {schema}.{answers} AS a "
                "WHERE a.answered_at < now() - interval '{stale_s} seconds'; "
                "END IF; "
                "COMMIT; "
                # Posted: whoever waits for this writer's next batch may go on.
                "IF p_gated THEN PERFORM pg_advisory_unlock({gate_class}, pg_backend_pid()); "
                "END IF; "
                # It waits as one of many readers: the writers a holder answered read their
                # answers at once when it is done, instead of taking the lock in turn. One
                # not answered takes the lock if it is free (its turn), or waits again (the
                # holder may answer it); after {spins} rounds it queues for the lock.
                "FOR round IN 1..{spins} LOOP "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "PERFORM pg_advisory_xact_lock_shared({lock_class}, hashtext(p_stream) & {mask}); "
                "{take_answer}"
                "COMMIT; "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "IF round = {spins} THEN "
                "PERFORM pg_advisory_xact_lock({lock_class}, hashtext(p_stream) & {mask}); "
                "EXIT; "
                "END IF; "
                "EXIT WHEN pg_try_advisory_xact_lock({lock_class}, hashtext(p_stream) & {mask}); "
                "END LOOP; "
                "{take_answer}"
                "DELETE FROM {schema}.{posts} AS p WHERE p.id = p_post; "
                # Its turn. As the server delays a commit for more to share its flush
                # (commit_delay), it waits a little (TURN_WAIT_MS at most) for the writers of
                # the last turn to post again: they were answered at the same moment, and each
                # holds its gate (a lock on its backend's pid) from its answer to its next post.
                "SELECT t.posters INTO expected FROM {schema}.{turns} AS t "
                "WHERE t.stream = p_stream; "
                "deadline := clock_timestamp() + interval '{turn_wait_ms} milliseconds'; "
                "FOREACH poster IN ARRAY coalesce(expected, '{{}}') LOOP "
                "CONTINUE WHEN poster = pg_backend_pid(); "
                "left_ms := ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000); "
                "EXIT WHEN left_ms <= 0; "
                "BEGIN "
                "PERFORM set_config('lock_timeout', left_ms || 'ms', true); "
                "PERFORM pg_advisory_xact_lock_shared({gate_class}, poster); "
                "EXCEPTION WHEN lock_not_available THEN EXIT; "
                "END; "
                "END LOOP; "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "WITH taken AS (DELETE FROM {schema}.{posts} AS p WHERE p.id IN ("
                "SELECT q.id FROM {schema}.{posts} AS q WHERE q.stream = p_stream "
                "ORDER BY q.posted_at, q.id LIMIT {posts_max}) "
                "RETURNING p.id, p.commands, p.poster), "
                "answer_rows AS ("
                "SELECT 'd' AS kind, t.id, NULL::text AS name, NULL::bigint AS version, "
                "NULL::text AS topic, t.commands AS state FROM taken AS t "
                "UNION ALL "
                "SELECT 'e', NULL, x.originator_id::text, x.originator_version, x.topic, "
                "x.state FROM {schema}.{events} AS x "
                "WHERE x.originator_id = p_stream AND x.originator_version > p_version "
                "UNION ALL "
                "SELECT 'k', NULL, k.key, NULL, k.fingerprint, k.outcome "
                "FROM {schema}.{keys} AS k WHERE k.key = ANY(p_keys)) "
                "SELECT coalesce(string_agg(f.kind, '' ORDER BY f.kind, f.id, f.version), ''), "
                "array_agg(f.id ORDER BY f.kind, f.id, f.version), "
                "array_agg(f.name ORDER BY f.kind, f.id, f.version), "
                "array_agg(f.version ORDER BY f.kind, f.id, f.version), "
                "array_agg(f.topic ORDER BY f.kind, f.id, f.version), "
                "array_agg(f.state ORDER BY f.kind, f.id, f.version), "
                "(SELECT array_agg(t.poster) FROM taken AS t) "
                "INTO r_kinds, r_ids, r_names, r_versions, r_topics, r_states, taken "
                "FROM answer_rows AS f; "
                "INSERT INTO {schema}.{turns} AS t (stream, batches, posters) "
                "VALUES (p_stream, 1 + coalesce(cardinality(taken), 0), "
                "pg_backend_pid() || coalesce(taken, '{{}}')) "
                "ON CONFLICT (stream) DO UPDATE "
                "SET batches = excluded.batches, posters = excluded.posters; "
                "PERFORM pg_advisory_lock({lock_class}, hashtext(p_stream) & {mask}); "
                "END $$"
            ).format(
                procedure=hot_wait,
                posts_max=HOT_POSTS_MAX,
                spins=HOT_WAIT_ROUNDS_MAX,
                stale_s=HOT_STALE_S,
                sweep_every=HOT_SWEEP_EVERY,
                turn_wait_ms=HOT_TURN_WAIT_MS,
                take_answer=SQL(_TAKE_ANSWER_SQL).format(**names),
                **names,
            )
        )
        self.hot_wait_statement = (
            SQL("CALL {procedure}(%s, %s, %b, %s, %s, %s)").format(procedure=hot_wait).as_string()
        )
        self.hot_withdraw_statement = (
            SQL("DELETE FROM {schema}.{posts} WHERE id = %s RETURNING id")
            .format(**names)
            .as_string()
        )
        self.gated: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        """Connections that hold their gate at a hot aggregate (``hot_wait``): till they post."""
        # The connection and cursor kept for writes, and the pipelined write on it.
        self.writer = WriterConnection(self.datastore, record_function)
        # Rendered once: a composed query is rendered again on every execute otherwise.
        self.record_statement = (
            SQL("SELECT * FROM {function}(%b, %b, %b, %b, %b, %b, %b, %b)")
            .format(function=record_function)
            .as_string()
        )
        self.guarded_statement = (
            SQL("SELECT * FROM {function}(%b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b)")
            .format(function=guarded_function)
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
                        raise OutcomeUnknown(str(exc)) from exc
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
            writer = GuardedWriter(self, curs)
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


class GuardedWriter:
    """A connection's guarded writes and turns at hot aggregates (``guarded``)."""

    def __init__(self, recorder: LedgerPostgresRecorder, curs: Cursor[Any]) -> None:
        self.recorder = recorder
        self.curs = curs
        self.held = False
        """Whether the connection holds locks at session level (till its next write)."""
        assert curs.connection.autocommit

    def __call__(self, stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]) -> list[int]:
        """``record`` without answers (``RecordRows``)."""
        return self.record(stored_events, keys)

    def record(
        self,
        stored_events: Sequence[StoredRow],
        keys: Sequence[KeyRecord],
        also_lock: Sequence[str] = (),
        answers: Sequence[tuple[int, bytes]] = (),
    ) -> list[int]:
        """Writes events, keys and the answers to posted batches, unless overtaken
        (``OvertakenRows``: nothing written, the locks kept for the next write)."""
        if self.held:
            # The call releases every lock the connection holds at session level.
            self.recorder.gated.discard(self.curs.connection)
        params = guarded_parameters(stored_events, keys, self.held, also_lock, answers)
        rows = self._call(self.recorder.guarded_statement, params)
        self.held = False
        kinds = {row[0] for row in rows}
        if "e" in kinds or "k" in kinds:
            self.held = True
            raise OvertakenRows(
                [StoredEvent(r[2], r[3], r[4], bytes(r[5])) for r in rows if r[0] == "e"],
                {r[2]: KeyRecord(r[2], r[4], bytes(r[5])) for r in rows if r[0] == "k"},
            )
        if "g" in kinds:
            self.recorder.gated.add(self.curs.connection)
        ids = [row[1] for row in rows if row[0] == "i"]
        assert len(ids) == len(stored_events), (len(ids), len(stored_events))
        return ids

    def wait(self, stream: str, commands: bytes, version: int, keys: Sequence[str]) -> RowsTurn:
        """Posts a batch for a hot aggregate and waits for its lock: the answers another
        writer gave the batch, or this writer's turn (the lock then kept for its write)."""
        post = secrets.randbits(63)
        conn = self.curs.connection
        gated = conn in self.recorder.gated
        self.recorder.gated.discard(conn)  # released once the batch is posted
        try:
            rows = self._call(
                self.recorder.hot_wait_statement,
                (post, stream, commands, version, list(keys), gated),
            )
        except BaseException:
            self._withdraw(post)
            raise
        ((kinds, ids, names, versions, topics, states),) = rows
        if kinds.startswith("a"):
            if kinds == "ag":
                self.recorder.gated.add(conn)
            return RowsTurn(answers=bytes(states[0]))
        self.held = True
        turn = RowsTurn()
        for kind, post_id, name, version_, topic, state in zip(
            kinds, ids or (), names or (), versions or (), topics or (), states or (), strict=True
        ):
            if kind == "e":
                turn.rows.append(StoredEvent(name, version_, topic, bytes(state)))
            elif kind == "k":
                turn.keys[name] = KeyRecord(name, topic, bytes(state))
            else:
                turn.posted.append((post_id, bytes(state)))
        return turn

    def _withdraw(self, post: int) -> None:
        """Takes back a batch whose wait failed; if another writer took it first, it may be
        recorded (``OutcomeUnknown``, as a write whose connection broke)."""
        try:
            withdrawn = self.curs.connection.execute(
                self.recorder.hot_withdraw_statement, (post,)
            ).fetchall()
        except PsycopgError as exc:
            raise OutcomeUnknown(f"a batch posted for a hot aggregate: {exc}") from exc
        if not withdrawn:
            raise OutcomeUnknown("a batch posted for a hot aggregate was taken by another writer")

    def _call(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        curs = self.curs
        conn = curs.connection
        try:
            curs.execute(statement, params, prepare=True)
            return curs.fetchall()
        except PsycopgError as exc:
            if conn.broken or conn.closed:
                raise OutcomeUnknown(str(exc)) from exc
            if self.held:
                self.release()  # a failed call may have kept them
            with _postgres_errors():
                raise

    def release(self) -> None:
        """Releases the locks kept at session level (its gate too)."""
        self.held = False
        self.recorder.gated.discard(self.curs.connection)
        try:
            self.curs.connection.execute("SELECT pg_advisory_unlock_all()")
        except PsycopgError:
            self.curs.connection.close()  # the server releases a closed session's locks


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
