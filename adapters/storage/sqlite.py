"""The SQLite recorder and factory: eventsourcing's tables plus the idempotency keys and the
hash chain, written in the events' transaction; connections with a larger cache.
"""

from __future__ import annotations

import contextlib
import operator
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import (
    InterfaceError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteCursor,
    SQLiteFactory,
)
from eventsourcing.utils import Environment, EnvType

from adapters.storage.recording import (
    OvertakenRows,
    RecordRows,
    driver_errors,
    persistence_error,
)
from ledger.chain import GENESIS, StoredRow, events_digest, link
from ledger.errors import ConcurrencyError
from ledger.write.ports import KeyRecord, WriteConflict

_COLUMNS = operator.attrgetter("originator_id", "originator_version", "topic", "state")
"""A row's stored columns, as the insert's parameters."""

SQLiteGuardedWriter = RecordRows
"""A SQLite recorder's guarded write (``LedgerSQLiteRecorder.guarded``)."""


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite application recorder that also writes idempotency keys in the same transaction."""

    def __init__(self, datastore: Any, events_table_name: str = "stored_events") -> None:
        self.keys_table_name = "ledger_keys"
        self.chain_table_name = "ledger_chain"
        super().__init__(datastore, events_table_name)
        self._writer: SQLiteConnection | None = None
        """The connection ``insert_events`` writes on (made on first use, outside the pool)."""
        self._writer_lock = threading.Lock()

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

    def insert_events(
        self, stored_events: Sequence[StoredRow], **kwargs: Any
    ) -> Sequence[int] | None:
        """eventsourcing's, for any rows with the stored columns (``codec.Row``), in one
        transaction on a connection kept for it, its errors as eventsourcing's.

        eventsourcing's pool and transaction cost ~100,000 instructions around a write of one
        command (a semaphore, a writer lock and a condition in Python, three context managers,
        a cursor wrapper and a COMMIT parsed anew): as much as its statements. The writes of
        one engine are made one at a time under its lock anyway; this lock orders any other
        caller, and SQLite's own lock (waited for up to the busy timeout) every other
        connection, as for the pool's. An in-memory database is the pool's connections'
        alone, so it keeps eventsourcing's path.
        """
        pool = self.datastore.pool
        if pool.is_sqlite_memory_mode:
            with self.datastore.transaction(commit=True) as c:
                return self._insert_events(c, stored_events, **kwargs)
        with self._writer_lock:
            writer = self._writer
            if writer is None:
                writer = self._writer = pool._create_connection()
            connection = writer._sqlite_conn
            try:
                cursor = connection.cursor()
                cursor.execute("BEGIN")
                ids = self._insert_events(cursor, stored_events, **kwargs)
                cursor.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    connection.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise _eventsourcing_error(exc) from exc
                raise
            return ids

    def close_writer(self) -> None:
        """Closes the connection ``insert_events`` writes on (before the pool closes)."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def _insert_events(
        self,
        c: SQLiteCursor | sqlite3.Cursor,
        stored_events: Sequence[StoredRow],
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
        if len(stored_events) == 1:
            # One row (a command alone): ``execute`` sets the cursor's last row id, which
            # spares the statement that reads it.
            c.execute(self.insert_events_statement, _COLUMNS(stored_events[0]))
            rowid = c.lastrowid
            assert rowid is not None, "an INSERT sets the last row id"
            last = int(rowid)
        else:
            c.executemany(self.insert_events_statement, list(map(_COLUMNS, stored_events)))
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

            def record(stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]) -> list[int]:
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

    @contextmanager
    def guarded(self) -> Iterator[SQLiteGuardedWriter]:
        """Writes checked before anything is written (``Store.guarded``), on one connection.

        Each write begins by taking SQLite's write lock (``BEGIN IMMEDIATE``) and checks the
        versions and keys under it. An overtaken write raises ``OvertakenRows`` and keeps its
        transaction, and so the lock, for the next write; leaving rolls it back.
        """
        with self.datastore.get_connection(commit=True) as conn:
            cursor = conn.cursor()
            begun = False

            def record(stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]) -> list[int]:
                nonlocal begun
                with _sqlite_errors():
                    if not begun:
                        cursor.execute("BEGIN IMMEDIATE")
                        begun = True
                    later = self._later_rows(cursor, stored_events)
                    used = self._select_keys(cursor, [k.key for k in keys])
                    if later or used:
                        raise OvertakenRows(later, used)
                    ids = self._insert_events(cursor, stored_events, keys=keys)
                    conn.commit()
                    begun = False
                return list(ids or [])

            try:
                yield record
            finally:
                if begun:
                    conn.rollback()

    def _later_rows(self, c: SQLiteCursor, stored_events: Sequence[StoredRow]) -> list[StoredRow]:
        """The rows recorded at or after the first version of each stream ``stored_events``
        write, stream by stream in version order."""
        first: dict[str, int] = {}
        for stored in stored_events:
            first.setdefault(str(stored.originator_id), stored.originator_version)
        later: list[StoredRow] = []
        for stream_id, version in first.items():
            c.execute(
                "SELECT originator_id, originator_version, topic, state "  # noqa: S608
                f"FROM {self.events_table_name} WHERE originator_id = ? "
                "AND originator_version >= ? ORDER BY originator_version",
                (stream_id, version),
            )
            later += [StoredEvent(r[0], r[1], r[2], bytes(r[3])) for r in c.fetchall()]
        return later

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The stored rows of those of ``keys`` that were used."""
        if not keys:
            return {}
        with self.datastore.transaction(commit=False) as c:
            return self._select_keys(c, keys)

    def _select_keys(self, c: SQLiteCursor, keys: Sequence[str]) -> dict[str, KeyRecord]:
        found: dict[str, KeyRecord] = {}
        chunk_max = 500  # SQLite's bound on host parameters in one statement.
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


_SQLITE_ERRORS = driver_errors(sqlite3)


def _eventsourcing_error(exc: sqlite3.Error) -> PersistenceError:
    """The error eventsourcing's SQLite transaction raises for ``exc``."""
    return persistence_error(exc, _SQLITE_ERRORS)


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


SQLITE_CACHE_KIB = 32_768
"""Page cache per SQLite connection (SQLite's default is 2 MiB)."""
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 8_000
"""WAL pages before a checkpoint (SQLite's default is 1,000)."""
SQLITE_STATEMENTS_CACHED = 128
"""Prepared statements kept per connection (the sqlite3 module's default). eventsourcing
connects with ``cached_statements=True``, a cache of ONE statement: each of a write's six
statements was parsed and planned again every time (~100,000 instructions of a one-command
write on SQLite, a fifth of it)."""


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

        def create_tuned_connection() -> SQLiteConnection:
            # eventsourcing's ``_create_connection``, with a statement cache.
            try:
                sqlite = sqlite3.connect(
                    database=pool.db_name,
                    uri=True,
                    check_same_thread=False,
                    isolation_level=None,  # autocommit: transactions begin explicitly
                    cached_statements=SQLITE_STATEMENTS_CACHED,
                    timeout=pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
                )
            except (sqlite3.Error, TypeError) as exc:
                raise InterfaceError(exc) from exc
            if not pool.is_sqlite_memory_mode and not pool.is_journal_mode_wal:
                mode = sqlite.execute("PRAGMA journal_mode").fetchone()[0]
                if mode.lower() != "wal":
                    sqlite.execute("PRAGMA journal_mode=WAL")
                    pool.journal_mode_was_changed_to_wal = True
                pool.is_journal_mode_wal = True
            sqlite.row_factory = sqlite3.Row
            sqlite.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            sqlite.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
            return SQLiteConnection(sqlite_conn=sqlite, max_age=pool.max_age)

        pool._create_connection = create_tuned_connection  # type: ignore[method-assign]
