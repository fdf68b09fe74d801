"""The Merkle tree's storage (``ledger.proofs.log.TreeStore``) in the ledger's own database.

Tables, beside the events (PostgreSQL: in the events' schema, named after the events table;
SQLite: fixed names), created with the others when the ledger opens:

- ``ledger_tree``: one row, the sealed size and the notification id of the last leaf. It moves
  in the same transaction as the tiles it covers, so the tree is extended exactly once;
- ``ledger_tiles``: ``(level, idx)`` → up to 256 hashes (c2sp.org/tlog-tiles, height 8);
  ``first_id`` on level-0 tiles is the notification id of the tile's first leaf, which finds
  an event's leaf index by one index probe and a count of at most 255 rows;
- ``ledger_checkpoints``: signed checkpoints, one per tree size.

The tree follows the log (``ledger seal [--follow]``), never the write path: a leaf hash is
SHA-256 over the stored columns, computed by PostgreSQL itself (``sha256``: only 40 bytes a
row cross the wire) or in Python for SQLite.
"""

from __future__ import annotations

import collections
import concurrent.futures
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import Notification, PersistenceError
from psycopg.sql import SQL, Identifier

from adapters.storage import leaf_hashing
from adapters.storage.leaf_hashing import SQLiteLeafHasher
from adapters.storage.postgres import LedgerPostgresRecorder
from adapters.storage.store import SCHEMA_LOCK_ID, EventStore
from ledger.errors import InfrastructureError
from ledger.proofs.log import StoredCheckpoint, TreeState
from ledger.proofs.tiles import TileKey
from ledger.proofs.tree import leaf_input

POSTGRES_LEAF_HASH = (
    "sha256('\\x00'::bytea || int8send(notification_id)"
    " || int8send(octet_length(e.o)::bigint) || e.o"
    " || int8send(octet_length(e.v)::bigint) || e.v"
    " || int8send(octet_length(e.t)::bigint) || e.t"
    " || int8send(octet_length(e.state)::bigint) || e.state)"
)
"""The leaf hash in SQL (DESIGN §9), over ``convert_to(originator_id, 'UTF8') AS o``,
``convert_to(originator_version::text, 'UTF8') AS v``, ``convert_to(topic, 'UTF8') AS t``."""


class MerkleStore:
    """``TreeStore`` on a ``EventStore`` (SQLite or PostgreSQL)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.recorder = store.recorder
        self.datastore = self.recorder.datastore
        self.postgres = isinstance(self.recorder, LedgerPostgresRecorder)
        if self.postgres:
            prefix = self.recorder.events_table_name.removesuffix("_events")
            schema = self.recorder.datastore.schema  # type: ignore[union-attr]
            self.tree_table: Any = Identifier(schema, f"{prefix}_tree")
            self.tiles_table: Any = Identifier(schema, f"{prefix}_tiles")
            self.checkpoints_table: Any = Identifier(schema, f"{prefix}_checkpoints")
            self.events_table: Any = Identifier(schema, self.recorder.events_table_name)
            self.marker = "%s"
        else:
            self.tree_table = "ledger_tree"
            self.tiles_table = "ledger_tiles"
            self.checkpoints_table = "ledger_checkpoints"
            self.events_table = self.recorder.events_table_name
            self.marker = "?"

    # SQL helpers -------------------------------------------------------------------------

    def _sql(self, text: str, **names: Any) -> Any:
        """``text`` with ``{tree}``, ``{tiles}``, ``{checkpoints}``, ``{events}`` filled in."""
        tables = {
            "tree": self.tree_table,
            "tiles": self.tiles_table,
            "checkpoints": self.checkpoints_table,
            "events": self.events_table,
            **names,
        }
        text = text.replace("?", self.marker)
        if self.postgres:
            return SQL(text).format(**tables)  # type: ignore[arg-type,unused-ignore]
        return text.format(**tables)

    @contextmanager
    def _transaction(self, action: str, *, commit: bool) -> Iterator[Any]:
        try:
            with self.datastore.transaction(commit=commit) as cursor:
                yield cursor
        except (PersistenceError, psycopg.Error, sqlite3.Error) as exc:
            # These queries are ours, not eventsourcing's: driver errors arrive untranslated.
            raise InfrastructureError(f"cannot {action} the Merkle tree: {exc}") from None

    def _id(self) -> str:
        return "notification_id" if self.postgres else "rowid"

    def _all(self, cursor: Any) -> list[tuple[Any, ...]]:
        """The result rows as tuples, in column order, on either driver."""
        rows = cursor.fetchall()
        return [tuple(r.values()) for r in rows] if self.postgres else [tuple(r) for r in rows]

    def _one(self, cursor: Any) -> tuple[Any, ...] | None:
        row = cursor.fetchone()
        if row is None:
            return None
        return tuple(row.values()) if self.postgres else tuple(row)

    # Schema ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Creates the tables if absent (nothing on a read-only hot standby)."""
        if self.postgres:
            blob, integer = "bytea", "bigint"
        else:
            blob, integer = "BLOB", "INTEGER"
        statements = [
            f"CREATE TABLE IF NOT EXISTS {{tree}} (id {integer} PRIMARY KEY CHECK (id = 1),"
            f" size {integer} NOT NULL, last_id {integer} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {{tiles}} (level {integer} NOT NULL, idx {integer} NOT"
            f" NULL, first_id {integer}, hashes {blob} NOT NULL, PRIMARY KEY (level, idx))",
            f"CREATE TABLE IF NOT EXISTS {{checkpoints}} (tree_size {integer} PRIMARY KEY,"
            f" root {blob} NOT NULL, note text NOT NULL, signed_at text NOT NULL)",
            "INSERT INTO {tree} (id, size, last_id) VALUES (1, 0, 0) ON CONFLICT DO NOTHING",
        ]
        if self._has_tables():
            # Nothing to write: no write transaction (on SQLite one that began with a read
            # could not take the lock from a sealer writing meanwhile).
            return
        with self._transaction("create", commit=True) as cursor:
            if self.postgres:
                cursor.execute("SELECT pg_is_in_recovery() AS standby")
                if cursor.fetchone()["standby"]:
                    return
                # Several processes may open a new database at once (as in open_application).
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            index_name = self._index_name()
            statements.append(
                "CREATE INDEX IF NOT EXISTS {index} ON {tiles} (first_id) WHERE level = 0"
            )
            for statement in statements:
                cursor.execute(
                    self._sql(
                        statement, index=Identifier(index_name) if self.postgres else index_name
                    )
                )

    # TreeStore ---------------------------------------------------------------------------

    def tree_state(self) -> TreeState:
        """The sealed size and last leaf's notification id ((0, 0) before any seal)."""
        try:
            with self._transaction("read", commit=False) as cursor:
                cursor.execute(self._sql("SELECT size, last_id FROM {tree} WHERE id = 1"))
                row = self._one(cursor)
        except InfrastructureError:
            if not self._has_tables():
                return TreeState(0, 0)
            raise
        return TreeState(int(row[0]), int(row[1])) if row else TreeState(0, 0)

    def _index_name(self) -> str:
        if self.postgres:
            return f"{self.recorder.events_table_name.removesuffix('_events')}_tiles_first"
        return "ledger_tiles_first_id"

    def _has_tables(self) -> bool:
        with self._transaction("read", commit=False) as cursor:
            if self.postgres:
                # The index is made last, in the transaction that makes the tables.
                index = Identifier(self.recorder.datastore.schema, self._index_name())  # type: ignore[union-attr]
                cursor.execute("SELECT to_regclass(%s) AS found", (index.as_string(None),))
                return cursor.fetchone()["found"] is not None
            cursor.execute(
                "SELECT count(*) FROM sqlite_master WHERE name IN"
                " ('ledger_tree', 'ledger_tiles', 'ledger_checkpoints', 'ledger_tiles_first_id')"
            )
            return int(cursor.fetchone()[0]) == 4

    def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        """The stored tiles among ``keys``."""
        keys = list(keys)
        if not keys:
            return {}
        found: dict[TileKey, bytes] = {}
        with self._transaction("read", commit=False) as cursor:
            for start in range(0, len(keys), 100):
                part = keys[start : start + 100]
                condition = " OR ".join(["(level = ? AND idx = ?)"] * len(part))
                cursor.execute(
                    self._sql("SELECT level, idx, hashes FROM {tiles} WHERE " + condition),  # noqa: S608
                    [value for key in part for value in key],
                )
                for level, index, hashes in self._all(cursor):
                    found[(int(level), int(index))] = bytes(hashes)
        return found

    def leaf_hash_pages(
        self, after_id: int, upto_id: int, page_ids: int, jobs: int = 1
    ) -> Iterator[tuple[list[int], list[bytes]]]:
        """Ids and leaf hashes of the events in (``after_id``, ``upto_id``], in id order, one
        page per ``page_ids`` ids (fewer rows where ids have gaps).

        With ``jobs`` > 1 on PostgreSQL the pages are read and hashed ahead by that many
        threads, each with its own connection (memory holds at most ``2 * jobs`` pages).
        """
        ranges = ((a, min(a + page_ids, upto_id)) for a in range(after_id, upto_id, page_ids))
        if jobs <= 1 or not self.postgres or upto_id - after_id <= page_ids:
            for first, last in ranges:
                yield self._range_hashes(first, last)
            return
        # Threads, on PostgreSQL: the server hashes while the client waits, so reading and
        # hashing the next pages overlaps the tiles and writes of this one. On SQLite Python
        # hashes, under the GIL: threads measured slower than one reader (bench_proofs.py).
        executor = concurrent.futures.ThreadPoolExecutor(jobs, thread_name_prefix="ledger-seal")

        def submit(first: int, last: int) -> concurrent.futures.Future[Any]:
            return executor.submit(self._range_hashes, first, last)

        try:
            window: collections.deque[concurrent.futures.Future[Any]] = collections.deque()
            for first, last in ranges:
                window.append(submit(first, last))
                if len(window) >= 2 * jobs:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _range_hashes(self, after_id: int, upto_id: int) -> tuple[list[int], list[bytes]]:
        """Ids and leaf hashes of the events with ids in (``after_id``, ``upto_id``]."""
        with self._transaction("read events for", commit=False) as cursor:
            if self.postgres:
                cursor.execute(
                    self._sql(
                        "SELECT notification_id AS id, "  # noqa: S608  (fixed text)
                        + POSTGRES_LEAF_HASH
                        + " AS hash FROM (SELECT notification_id, state,"
                        " convert_to(originator_id::text, 'UTF8') AS o,"
                        " convert_to(originator_version::text, 'UTF8') AS v,"
                        " convert_to(topic, 'UTF8') AS t FROM {events}"
                        " WHERE notification_id > ? AND notification_id <= ?) e"
                        " ORDER BY notification_id"
                    ),
                    (after_id, upto_id),
                )
                rows = cursor.fetchall()
                return [int(r["id"]) for r in rows], [bytes(r["hash"]) for r in rows]
            # Plain tuples, not the pool's sqlite3.Row: a third of the read's time per row.
            raw_cursor = getattr(cursor, "sqlite_cursor", cursor)
            raw_cursor.row_factory = None
            raw_cursor.execute(
                leaf_hashing.SELECT_RANGE.format(events=self.events_table), (after_id, upto_id)
            )
            return SQLiteLeafHasher().hashes(raw_cursor.fetchall())

    def extend(
        self, old: TreeState, new: TreeState, tiles: dict[TileKey, bytes], first_ids: dict[int, int]
    ) -> bool:
        """Writes the tiles and moves the tree from ``old`` to ``new``, or nothing if it moved."""
        with self._transaction("extend", commit=True) as cursor:
            if self.postgres:
                cursor.execute(
                    self._sql("SELECT size, last_id FROM {tree} WHERE id = 1 FOR UPDATE")
                )
            else:
                # A write first: it takes SQLite's write lock before the read, so a racing
                # writer waits instead of failing at commit.
                cursor.execute(self._sql("UPDATE {tree} SET size = size WHERE id = 1"))
                cursor.execute(self._sql("SELECT size, last_id FROM {tree} WHERE id = 1"))
            row = self._one(cursor)
            assert row is not None  # setup() inserted the row
            current = TreeState(int(row[0]), int(row[1]))
            if current != old:
                return False
            cursor.executemany(
                self._sql(
                    "INSERT INTO {tiles} (level, idx, first_id, hashes) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes"
                ),
                [
                    (level, index, first_ids.get(index) if level == 0 else None, hashes)
                    for (level, index), hashes in sorted(tiles.items())
                ],
            )
            cursor.execute(
                self._sql("UPDATE {tree} SET size = ?, last_id = ? WHERE id = 1"),
                (new.size, new.last_id),
            )
        return True

    def leaf_index(self, notification_id: int) -> int | None:
        """The leaf index of an event in the sealed tree, or None."""
        column = self._id()
        with self._transaction("read", commit=False) as cursor:
            cursor.execute(self._sql("SELECT size, last_id FROM {tree} WHERE id = 1"))
            tree = self._one(cursor)
            if tree is None or notification_id > int(tree[1]):
                return None
            cursor.execute(
                self._sql(
                    "SELECT idx, first_id FROM {tiles} {indexed} WHERE level = 0 AND first_id <= ?"
                    " ORDER BY first_id DESC LIMIT 1",
                    # SQLite's planner, without statistics, took the primary key and sorted
                    # every level-0 tile (26 ms at 10 M events): name the index.
                    indexed=SQL("") if self.postgres else f"INDEXED BY {self._index_name()}",
                ),
                (notification_id,),
            )
            tile = cursor.fetchone()
            if tile is None:
                return None
            index, first = (
                (tile[0], tile[1]) if not self.postgres else (tile["idx"], tile["first_id"])
            )
            cursor.execute(
                self._sql(
                    "SELECT count(*) AS n, max({id}) AS top FROM {events}"
                    " WHERE {id} >= ? AND {id} <= ?",
                    id=column if not self.postgres else Identifier(column),
                ),
                (first, notification_id),
            )
            row = cursor.fetchone()
            count, top = (row[0], row[1]) if not self.postgres else (row["n"], row["top"])
            if top != notification_id:
                return None  # a gap in the ids: no such event
            return int(index) * 256 + int(count) - 1

    def leaf_input(self, notification_id: int) -> bytes | None:
        """The leaf input of one stored event (DESIGN §9)."""
        column = self._id()
        with self._transaction("read", commit=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT originator_id, originator_version, topic, state FROM {events}"
                    " WHERE {id} = ?",
                    id=column if not self.postgres else Identifier(column),
                ),
                (notification_id,),
            )
            row = self._one(cursor)
        if row is None:
            return None
        return leaf_input(notification_id, str(row[0]), int(row[1]), str(row[2]), bytes(row[3]))

    def stream_rows(self, originator_id: str, after_version: int, limit: int) -> list[Notification]:
        """Up to ``limit`` stored rows of one stream after ``after_version``, with their ids."""
        column = self._id()
        with self._transaction("read a stream for", commit=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT {id}, originator_id, originator_version, topic, state FROM {events}"
                    " WHERE originator_id = ? AND originator_version > ?"
                    " ORDER BY originator_version LIMIT ?",
                    id=column if not self.postgres else Identifier(column),
                ),
                (originator_id, after_version, limit),
            )
            rows = self._all(cursor)
        return [
            Notification(
                id=int(r[0]),
                originator_id=str(r[1]),
                originator_version=int(r[2]),
                topic=str(r[3]),
                state=bytes(r[4]),
            )
            for r in rows
        ]

    def max_notification_id(self) -> int:
        """The newest notification id of the log (0 when empty)."""
        try:
            return int(self.recorder.max_notification_id() or 0)
        except PersistenceError as exc:
            raise InfrastructureError(f"cannot read the events: {exc}") from None

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        """Stores a checkpoint; False if one of its size is stored already."""
        with self._transaction("store a checkpoint of", commit=True) as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO {checkpoints} (tree_size, root, note, signed_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING tree_size"
                ),
                (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.signed_at),
            )
            return self._one(cursor) is not None

    def _checkpoint_rows(self, where: str, params: tuple[Any, ...]) -> list[StoredCheckpoint]:
        with self._transaction("read checkpoints of", commit=False) as cursor:
            cursor.execute(
                self._sql("SELECT tree_size, root, note, signed_at FROM {checkpoints} " + where),  # noqa: S608
                params,
            )
            rows = self._all(cursor)
        return [StoredCheckpoint(int(r[0]), bytes(r[1]), str(r[2]), str(r[3])) for r in rows]

    def checkpoints(self, after_size: int, limit: int) -> list[StoredCheckpoint]:
        """Stored checkpoints above ``after_size``, smallest first."""
        if not self._has_tables():
            return []
        return self._checkpoint_rows(
            "WHERE tree_size > ? ORDER BY tree_size LIMIT ?", (after_size, limit)
        )

    def checkpoint(self, *, at_least: int = 0, latest: bool = False) -> StoredCheckpoint | None:
        """The latest checkpoint, or the smallest of at least ``at_least`` leaves."""
        if not self._has_tables():
            return None
        if latest:
            rows = self._checkpoint_rows("ORDER BY tree_size DESC LIMIT 1", ())
        else:
            rows = self._checkpoint_rows(
                "WHERE tree_size >= ? ORDER BY tree_size LIMIT 1", (at_least,)
            )
        return rows[0] if rows else None
