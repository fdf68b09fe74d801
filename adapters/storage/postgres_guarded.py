"""Guarded writes and turns at hot aggregates on PostgreSQL (``Store.guarded``, ``Store.hot``).

A guarded write (``ledger_record_guarded``) checks the versions and keys it was decided on before
it writes, under the aggregates' locks, and keeps the locks for the next write when overtaken.
Writers of a hot aggregate in several processes post their batches and wait for its lock
(``ledger_hot_wait``); whoever gets it decides and writes them all (``ledger/write/combining.py``).
``GuardedSql`` makes the server functions and their tables (``postgres.py``'s recorder creates
them with its own); ``GuardedWriter`` writes through them on one connection.
"""

from __future__ import annotations

import secrets
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from eventsourcing.persistence import PersistenceError, StoredEvent
from psycopg import Cursor
from psycopg import Error as PsycopgError
from psycopg.sql import SQL, Composed, Identifier

from adapters.storage.postgres_arrays import guarded_parameters
from adapters.storage.recording import OutcomeUnknown, OvertakenRows, RowsTurn
from ledger.chain import StoredRow
from ledger.errors import ConcurrencyError
from ledger.write.ports import KeyRecord, WriteConflict

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


class GuardedSql:
    """The guarded write's and the hot wait's server functions and tables, their calls, and the
    connections that hold their gate."""

    def __init__(
        self, schema: str, prefix: str, names: dict[str, Any], lock_buckets_sql: str
    ) -> None:
        """``names`` as the recorder formats its own functions (``postgres.py``: schema, tables,
        lock class, the rendered write); ``lock_buckets_sql`` its aggregates' locks."""
        names = {
            **names,
            "posts": Identifier(f"{prefix}_hot_posts"),
            "answers": Identifier(f"{prefix}_hot_answers"),
            "turns": Identifier(f"{prefix}_hot_turns"),
            "gate_class": zlib.crc32(f"{prefix}_hot_gate".encode()) & 0x7FFF_FFFF,
        }
        self.create_statements: list[Composed] = []
        """Created after the recorder's own functions, in this order."""
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
        guarded_function = Identifier(schema, self.guarded_function_name)
        self.create_statements.append(
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
                    "lock_buckets": SQL(lock_buckets_sql).format(
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
        self.create_statements.extend(SQL(text).format(index=index, **names) for text in hot_tables)
        # One call: the post committed first (so that the lock's holder sees it; unlogged, so
        # its commit flushes nothing), then the wait, in a second transaction of the same
        # procedure. The answer is one row of arrays: kinds ('a' answers, else 'd' posted
        # batches, 'e' events, 'k' used keys), ids, names, versions, topics and bytes.
        hot_wait = Identifier(schema, f"{prefix}_hot_wait")
        self.create_statements.append(
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
        self.guarded_statement = (
            SQL("SELECT * FROM {function}(%b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b, %b)")
            .format(function=guarded_function)
            .as_string()
        )


class GuardedWriter:
    """A connection's guarded writes and turns at hot aggregates (``guarded``)."""

    def __init__(self, sql: GuardedSql, curs: Cursor[Any]) -> None:
        self.sql = sql
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
            self.sql.gated.discard(self.curs.connection)
        params = guarded_parameters(stored_events, keys, self.held, also_lock, answers)
        rows = self._call(self.sql.guarded_statement, params)
        self.held = False
        kinds = {row[0] for row in rows}
        if "e" in kinds or "k" in kinds:
            self.held = True
            raise OvertakenRows(
                [StoredEvent(r[2], r[3], r[4], bytes(r[5])) for r in rows if r[0] == "e"],
                {r[2]: KeyRecord(r[2], r[4], bytes(r[5])) for r in rows if r[0] == "k"},
            )
        if "g" in kinds:
            self.sql.gated.add(self.curs.connection)
        ids = [row[1] for row in rows if row[0] == "i"]
        assert len(ids) == len(stored_events), (len(ids), len(stored_events))
        return ids

    def wait(self, stream: str, commands: bytes, version: int, keys: Sequence[str]) -> RowsTurn:
        """Posts a batch for a hot aggregate and waits for its lock: the answers another
        writer gave the batch, or this writer's turn (the lock then kept for its write)."""
        post = secrets.randbits(63)
        conn = self.curs.connection
        gated = conn in self.sql.gated
        self.sql.gated.discard(conn)  # released once the batch is posted
        try:
            rows = self._call(
                self.sql.hot_wait_statement,
                (post, stream, commands, version, list(keys), gated),
            )
        except BaseException:
            self._withdraw(post)
            raise
        ((kinds, ids, names, versions, topics, states),) = rows
        if kinds.startswith("a"):
            if kinds == "ag":
                self.sql.gated.add(conn)
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
                self.sql.hot_withdraw_statement, (post,)
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
            with postgres_errors():
                raise

    def release(self) -> None:
        """Releases the locks kept at session level (its gate too)."""
        self.held = False
        self.sql.gated.discard(self.curs.connection)
        try:
            self.curs.connection.execute("SELECT pg_advisory_unlock_all()")
        except PsycopgError:
            self.curs.connection.close()  # the server releases a closed session's locks


@contextmanager
def postgres_errors() -> Iterator[None]:
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
