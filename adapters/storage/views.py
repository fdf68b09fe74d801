"""View storage on SQLite and PostgreSQL: the ``ViewDatabase`` the projections write through.

Views are ordinary tables in the events' own database, so a portal reads them with plain SQL and
a view page commits atomically with its tracking position. This module owns the connections
(separate from eventsourcing's, so a view transaction never holds the event writers' pool), the
SQL dialects and the bulk statements: ``executemany`` on SQLite, ``unnest`` arrays on
PostgreSQL (one statement per table per page instead of one per row).

Types as stored, for portals: PostgreSQL uses ``bigint``, ``boolean``, ``timestamptz`` and
``date``; SQLite stores timestamps as ISO 8601 text in UTC with microseconds (so text order is
time order), dates as ``YYYY-MM-DD`` and booleans as 0/1.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

import msgspec
import psycopg
from eventsourcing.persistence import MapperDeserialisationError, Notification, PersistenceError
from psycopg import sql
from psycopg.rows import tuple_row

from adapters.storage.config import POSTGRES_POOL_TIMEOUT_S, env_for_url, postgres_conninfo
from adapters.storage.memory import MemoryStore
from adapters.storage.postgres import LedgerPostgresRecorder
from adapters.storage.postgres_pool import closed_by_server, read_retried_once
from adapters.storage.store import EventStore
from ledger.domain import Event
from ledger.errors import DatabaseUnreachable, InfrastructureError, IntegrityBreach
from ledger.logging import get_logger
from ledger.projections.base import Cursor, Kind, Table, ViewWriteError
from ledger.projections.runner import TRACKING

log = get_logger("ledger.views")

CONNECTIONS_MAX = 4
"""Bound on connections one view database opens."""
WAIT_S_DEFAULT = 5.0
"""Bound on the wait for a free connection and for SQLite's write lock, unless the ledger URL's
``pool_timeout`` (PostgreSQL) or ``busy_timeout`` (SQLite) says otherwise, as for the events."""
WAIT_SLICE_S = 0.5
"""Bound on one blocking wait of a follower, so it notices a stop request quickly."""
DDL_LOCK_ID = 7_310_420_002
"""PostgreSQL advisory lock that serialises view DDL between processes opening at once."""

_PG_TYPES: dict[Kind, str] = {
    "text": "text",
    "int": "bigint",
    "bool": "boolean",
    "ts": "timestamptz",
    "date": "date",
}
_SQLITE_TYPES: dict[Kind, str] = {
    "text": "TEXT",
    "int": "INTEGER",
    "bool": "INTEGER",
    "ts": "TEXT",
    "date": "TEXT",
}


def _create_statements(table: Table, types: Mapping[Kind, str], suffix: str) -> list[str]:
    columns = ", ".join(f"{name} {types[kind]}" for name, kind in table.columns)
    key = ", ".join(table.key)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table.name} ({columns}, PRIMARY KEY ({key})){suffix}"
    ]
    for index in table.indexes:
        name = f"{table.name}_{'_'.join(index)}_idx"
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(index)})")
    return statements


_DAY_TEXT: dict[date, str] = {}
_DAY_TEXT_MAX = 10_000


class SQLiteDialect:
    """SQLite: timestamps as sortable UTC ISO text, dates as ISO text, booleans as 0/1."""

    name: Literal["sqlite", "postgres"] = "sqlite"

    def ts(self, at: datetime | None) -> Any:
        """UTC ISO 8601 text with microseconds (text order is time order)."""
        return None if at is None else at.astimezone(UTC).isoformat(timespec="microseconds")

    def day(self, day: date | None) -> Any:
        """``YYYY-MM-DD`` (memoised: a page holds few distinct days and many rows)."""
        if day is None:
            return None
        text = _DAY_TEXT.get(day)
        if text is None:
            if len(_DAY_TEXT) >= _DAY_TEXT_MAX:
                _DAY_TEXT.clear()
            text = _DAY_TEXT[day] = day.isoformat()
        return text

    def flag(self, value: bool) -> Any:
        """0 or 1."""
        return 1 if value else 0

    def to_ts(self, value: Any) -> datetime | None:
        """Parses the stored text."""
        return None if value is None else datetime.fromisoformat(value)

    def to_day(self, value: Any) -> date | None:
        """Parses the stored text."""
        return None if value is None else date.fromisoformat(value)

    def greatest(self, a: str, b: str) -> str:
        """SQLite's two-argument ``max`` is NULL if either is; fall back to the other."""
        return f"COALESCE(max({a}, {b}), {a}, {b})"

    def least(self, a: str, b: str) -> str:
        """SQLite's two-argument ``min`` is NULL if either is; fall back to the other."""
        return f"COALESCE(min({a}, {b}), {a}, {b})"

    def create_statements(self, table: Table) -> list[str]:
        """DDL with SQLite's types; tables without rowid (the key is the row's address)."""
        return _create_statements(table, _SQLITE_TYPES, " WITHOUT ROWID")


class PostgresDialect:
    """PostgreSQL: native ``timestamptz``, ``date`` and ``boolean``."""

    name: Literal["sqlite", "postgres"] = "postgres"

    def ts(self, at: datetime | None) -> Any:
        """The aware ``datetime`` itself."""
        return at

    def day(self, day: date | None) -> Any:
        """The ``date`` itself."""
        return day

    def flag(self, value: bool) -> Any:
        """The ``bool`` itself."""
        return value

    def to_ts(self, value: Any) -> datetime | None:
        """In UTC, whatever the session's time zone."""
        return None if value is None else value.astimezone(UTC)

    def to_day(self, value: Any) -> date | None:
        """Already a ``date``."""
        assert value is None or isinstance(value, date)
        return value

    def greatest(self, a: str, b: str) -> str:
        """``GREATEST`` ignores NULLs."""
        return f"GREATEST({a}, {b})"

    def least(self, a: str, b: str) -> str:
        """``LEAST`` ignores NULLs."""
        return f"LEAST({a}, {b})"

    def create_statements(self, table: Table) -> list[str]:
        """DDL with PostgreSQL's types."""
        return _create_statements(table, _PG_TYPES, "")


SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()


class SQLiteCursor:
    """A view cursor on one SQLite connection."""

    dialect = SQLITE
    in_list_max = 500  # SQLite's default bound on host parameters is 999 (older builds)

    def any_of(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``IN (?, ...)``."""
        assert 0 < len(values) <= self.in_list_max
        return f"IN ({', '.join('?' * len(values))})", list(values)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Runs one statement."""
        self._cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Runs one statement per row (SQLite's executemany is a tight C loop)."""
        if rows:
            self._cursor.executemany(sql, rows)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The rows of the last query."""
        return self._cursor.fetchall()

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        """Up to ``size`` more rows of the last query."""
        return self._cursor.fetchmany(size)

    def insert(self, table: Table, rows: Sequence[Sequence[Any]], on_conflict: str = "") -> None:
        """One prepared INSERT run over every row."""
        if not rows:
            return
        names = table.column_names
        sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608
        )
        if on_conflict:
            sql += f" ON CONFLICT ({', '.join(table.key)}) {on_conflict}"
        self._cursor.executemany(sql, rows)


_PLACEHOLDER = re.compile(r"\?")


class PostgresCursor:
    """A view cursor on one psycopg connection; ``?`` placeholders become ``%s``."""

    dialect = POSTGRES
    in_list_max = 100_000

    def any_of(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``= ANY(array)``: one parameter, whatever the count."""
        assert 0 < len(values) <= self.in_list_max
        return "= ANY(?)", [list(values)]

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor
        self._sql: dict[str, str] = {}

    @property
    def raw(self) -> psycopg.Cursor[Any]:
        """The psycopg cursor (for composed SQL with identifiers)."""
        return self._cursor

    def _convert(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = _PLACEHOLDER.sub("%s", sql)
        return converted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Runs one statement."""
        self._cursor.execute(self._convert(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Runs one statement per row (psycopg pipelines them)."""
        if rows:
            self._cursor.executemany(self._convert(sql), rows)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The rows of the last query."""
        return self._cursor.fetchall()

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        """Up to ``size`` more rows of the last query."""
        return self._cursor.fetchmany(size)

    def insert(self, table: Table, rows: Sequence[Sequence[Any]], on_conflict: str = "") -> None:
        """One INSERT ... SELECT over a JSON array of the rows: a single statement and parameter.

        Encoding the rows as one JSON document (msgspec, in C) and casting on the server is
        several times cheaper than having the driver dump one typed array per column.
        """
        if not rows:
            return
        names = table.column_names
        values = ", ".join(
            f"(e->>{index}){_PG_CASTS[kind]}" for index, (_, kind) in enumerate(table.columns)
        )
        sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608  (names from the table spec)
            f"SELECT {values} FROM json_array_elements(%s::json) AS e"
        )
        if on_conflict:
            sql += f" ON CONFLICT ({', '.join(table.key)}) {on_conflict}"
        self._cursor.execute(sql, (_JSON.encode(rows).decode(),))


_JSON = msgspec.json.Encoder()
_PG_CASTS: dict[Kind, str] = {
    "text": "",
    "int": "::bigint",
    "bool": "::boolean",
    "ts": "::timestamptz",
    "date": "::date",
}


class _Pool:
    """A bounded LIFO pool of connections, made on demand.

    ``stale`` tells an idle connection the server closed (a restart, a failover): it is
    dropped instead of handed out. Connections are opened outside the pool's lock, so that
    callers waiting for an unreachable server each wait their own bound, not one another's.
    """

    def __init__(
        self,
        connect: Any,
        size_max: int,
        wait_s: float,
        stale: Callable[[Any], bool] | None = None,
    ) -> None:
        self._connect = connect
        self._wait_s = wait_s
        self._stale = stale
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._all: list[Any] = []
        self._opening = 0
        self._lock = threading.Lock()
        self._size_max = size_max
        self._closed = False

    def get(self) -> Any:
        deadline = time.monotonic() + self._wait_s
        while True:
            opening = False
            with self._lock:
                if self._closed:
                    raise InfrastructureError("the view database is closed")
                try:
                    connection = self._idle.get_nowait()
                except queue.Empty:
                    connection = None
                    if len(self._all) + self._opening < self._size_max:
                        self._opening += 1
                        opening = True
            if opening:
                return self._open()
            if connection is None:
                try:
                    connection = self._idle.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    raise InfrastructureError(
                        f"no free view database connection after {self._wait_s:g} s"
                        f" ({self._size_max} in use; the URL's pool_timeout or busy_timeout sets"
                        " the wait)"
                    ) from None
            if self._stale is not None and self._stale(connection):
                self.discard(connection)  # closed by the server while idle: open another
                continue
            return connection

    def _open(self) -> Any:
        """A new connection for a slot already counted in ``_opening``."""
        try:
            connection = self._connect()
        except BaseException:
            with self._lock:
                self._opening -= 1
            raise
        with self._lock:
            self._opening -= 1
            if not self._closed:
                self._all.append(connection)
                return connection
        connection.close()  # the pool was closed while this connection opened
        raise InfrastructureError("the view database is closed")

    def put(self, connection: Any) -> None:
        self._idle.put(connection)

    def discard(self, connection: Any) -> None:
        """Forgets a broken connection; the next ``get`` makes a new one."""
        with self._lock:
            if connection in self._all:
                self._all.remove(connection)
        connection.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for connection in self._all:
                connection.close()
            self._all.clear()


class SQLiteViewDatabase:
    """Views in a SQLite file (or a private in-memory database for tests)."""

    dialect = SQLITE

    def __init__(self, path: str, *, durable: bool = True, wait_s: float = WAIT_S_DEFAULT) -> None:
        self.path = path
        self.memory = path == ":memory:"
        self._durable = durable
        self.wait_s = wait_s
        # A private in-memory database exists per connection: then one connection serves all.
        self._pool = _Pool(self._connect, 1 if self.memory else CONNECTIONS_MAX, wait_s)

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.wait_s,
            )
            if not self.memory:
                # Durable against a process crash; a power loss may drop the last view page,
                # which is then projected again (rows and position go together either way).
                # Views built aside are thrown away after a crash, so they skip even that.
                connection.execute(f"PRAGMA synchronous={'NORMAL' if self._durable else 'OFF'}")
        except sqlite3.Error as exc:
            raise InfrastructureError(f"cannot open the view database: {exc}") from None
        return connection

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Cursor]:
        connection = self._pool.get()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(begin)
                yield SQLiteCursor(cursor)
                connection.execute("COMMIT" if begin != "BEGIN" else "ROLLBACK")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            finally:
                cursor.close()
        except (sqlite3.DataError, sqlite3.IntegrityError) as exc:
            raise ViewWriteError(f"view database: {exc}") from None
        except sqlite3.Error as exc:
            raise InfrastructureError(f"view database: {exc}") from None
        finally:
            self._pool.put(connection)

    def write(self) -> Any:
        """A write transaction that holds SQLite's write lock from its first statement."""
        return self._transaction("BEGIN IMMEDIATE")

    def read(self) -> Any:
        """A read transaction (a consistent WAL snapshot)."""
        return self._transaction("BEGIN")

    def snapshot(self) -> Any:
        """A read transaction: SQLite's are snapshots already."""
        return self._transaction("BEGIN")

    def create(self, tables: Sequence[Table]) -> None:
        """Creates missing tables in one transaction."""
        with self.write() as cursor:
            for table in tables:
                for statement in SQLITE.create_statements(table):
                    cursor.execute(statement)

    @contextmanager
    def aside(self) -> Iterator[SQLiteViewDatabase]:
        """A scratch file beside this one (``<file>.views-aside``), locked against a second
        rebuild and removed on exit; a private in-memory database for ``:memory:``."""
        if self.memory:
            scratch = SQLiteViewDatabase(":memory:")
            try:
                yield scratch
            finally:
                scratch.close()
            return
        path = f"{self.path}.views-aside"
        with open(f"{path}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InfrastructureError(
                    f"another rebuild of these views is running ({path}.lock is locked)"
                ) from None
            _remove_sqlite_files(path)  # left by a rebuild that crashed
            scratch = SQLiteViewDatabase(path, durable=False, wait_s=self.wait_s)
            try:
                yield scratch
            finally:
                scratch.close()
                _remove_sqlite_files(path)

    def swap_in(self, aside: Any, tables: Sequence[Table]) -> None:
        """Copies the views built in ``aside`` over these ones in one write transaction."""
        assert isinstance(aside, SQLiteViewDatabase)
        names = ", ".join(TRACKING.column_names)
        if aside.memory:
            # Private in-memory databases cannot be attached: copy the rows through Python.
            copied: dict[str, list[tuple[Any, ...]]] = {}
            with aside.read() as cursor:
                for table in (*tables, TRACKING):
                    cursor.execute(f"SELECT * FROM {table.name}")  # noqa: S608  (names from the table specs)
                    copied[table.name] = cursor.fetchall()
            with self.write() as cursor:
                for table in tables:
                    _replace_table(cursor, table)
                    cursor.insert(table, copied[table.name])
                cursor.executemany(
                    "DELETE FROM view_tracking WHERE name = ?",
                    [(row[0],) for row in copied["view_tracking"]],
                )
                cursor.insert(TRACKING, copied["view_tracking"])
            return
        connection = self._pool.get()
        try:
            connection.execute("ATTACH DATABASE ? AS aside", (aside.path,))
            try:
                with _sqlite_errors(), contextlib.closing(connection.cursor()) as raw:
                    raw.execute("BEGIN IMMEDIATE")
                    try:
                        cursor = SQLiteCursor(raw)
                        for table in tables:
                            _replace_table(cursor, table)
                            cursor.execute(
                                f"INSERT INTO main.{table.name} SELECT * FROM aside.{table.name}"  # noqa: S608  (names from the table specs)
                            )
                        cursor.execute(
                            "DELETE FROM main.view_tracking"
                            " WHERE name IN (SELECT name FROM aside.view_tracking)"
                        )
                        cursor.execute(
                            f"INSERT INTO main.view_tracking ({names})"  # noqa: S608  (constant SQL)
                            f" SELECT {names} FROM aside.view_tracking"
                        )
                        raw.execute("COMMIT")
                    except BaseException:
                        if connection.in_transaction:
                            raw.execute("ROLLBACK")
                        raise
            finally:
                connection.execute("DETACH DATABASE aside")
        except sqlite3.Error as exc:
            raise InfrastructureError(f"view database: {exc}") from None
        finally:
            self._pool.put(connection)

    def close(self) -> None:
        """Closes every connection."""
        self._pool.close()


def _replace_table(cursor: Cursor, table: Table) -> None:
    """Drops a SQLite view table of ``main`` and creates it empty (its spec may have changed)."""
    cursor.execute(f"DROP TABLE IF EXISTS main.{table.name}")
    for statement in cursor.dialect.create_statements(table):
        cursor.execute(statement)


@contextmanager
def _sqlite_errors() -> Iterator[None]:
    try:
        yield
    except (sqlite3.DataError, sqlite3.IntegrityError) as exc:
        raise ViewWriteError(f"view database: {exc}") from None


def _remove_sqlite_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


class PostgresViewDatabase:
    """Views in a PostgreSQL database (in ``schema``, else the connection's current schema)."""

    dialect = POSTGRES

    def __init__(
        self, conninfo: str, *, schema: str | None = None, wait_s: float = WAIT_S_DEFAULT
    ) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.wait_s = wait_s
        self._pool = _Pool(self._connect, CONNECTIONS_MAX, wait_s, stale=closed_by_server)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            connection = psycopg.connect(self.conninfo, autocommit=True)
            connection.execute("SET TIME ZONE 'UTC'")
            if self.schema is not None:
                connection.execute(
                    sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema))
                )
        except psycopg.OperationalError as exc:
            raise DatabaseUnreachable(f"cannot reach PostgreSQL: {exc}") from None
        except psycopg.Error as exc:
            raise InfrastructureError(f"cannot reach PostgreSQL: {exc}") from None
        return connection

    @contextmanager
    def _transaction(self, *, read_only: bool, snapshot: bool = False) -> Iterator[Cursor]:
        connection = self._pool.get()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                if snapshot:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                elif read_only:
                    cursor.execute("SET TRANSACTION READ ONLY")
                yield PostgresCursor(cursor)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            raise ViewWriteError(f"view database: {exc}") from None
        except psycopg.Error as exc:
            if connection.broken or connection.closed:
                self._pool.discard(connection)
                connection = None
            raise InfrastructureError(f"view database: {exc}") from None
        finally:
            if connection is not None:
                self._pool.put(connection)

    def write(self) -> Any:
        """A read-write transaction."""
        return self._transaction(read_only=False)

    def read(self) -> Any:
        """A read-only transaction."""
        return self._transaction(read_only=True)

    def snapshot(self) -> Any:
        """A read-only repeatable-read transaction."""
        return self._transaction(read_only=True, snapshot=True)

    def create(self, tables: Sequence[Table]) -> None:
        """Creates missing tables, serialised between processes by an advisory lock."""
        with self.write() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(?)", (DDL_LOCK_ID,))
            for table in tables:
                for statement in POSTGRES.create_statements(table):
                    cursor.execute(statement)

    @contextmanager
    def aside(self) -> Iterator[PostgresViewDatabase]:
        """The schema ``ledger_views_aside`` of the same database, made empty; one rebuild at
        a time (a session advisory lock), dropped on exit."""
        try:
            guard = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise InfrastructureError(f"cannot reach PostgreSQL: {exc}") from None
        schema = sql.Identifier(ASIDE_SCHEMA)
        try:
            row = guard.execute("SELECT pg_try_advisory_lock(%s)", (REBUILD_LOCK_ID,)).fetchone()
            if row is None or not row[0]:
                raise InfrastructureError("another rebuild of these views is running")
            guard.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
            guard.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            scratch = PostgresViewDatabase(self.conninfo, schema=ASIDE_SCHEMA, wait_s=self.wait_s)
            try:
                yield scratch
            finally:
                scratch.close()
                guard.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        except psycopg.Error as exc:
            raise InfrastructureError(f"view database: {exc}") from None
        finally:
            guard.close()

    def swap_in(self, aside: Any, tables: Sequence[Table]) -> None:
        """Moves the tables built in ``aside``'s schema over these ones in one transaction."""
        assert isinstance(aside, PostgresViewDatabase)
        assert aside.schema is not None
        source = sql.Identifier(aside.schema)
        names = sql.SQL(", ").join(sql.Identifier(name) for name in TRACKING.column_names)
        with self.write() as cursor:
            raw = cast(PostgresCursor, cursor).raw
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_ID,))
            row = raw.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise InfrastructureError("the view database has no current schema")
            target = sql.Identifier(str(row[0]))
            raw.execute("SELECT name FROM view_tracking FOR UPDATE")
            for table in tables:
                name = sql.Identifier(table.name)
                raw.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(target, name))
                raw.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(source, name, target))
            raw.execute(
                sql.SQL(
                    "DELETE FROM {target}.view_tracking"
                    " WHERE name IN (SELECT name FROM {source}.view_tracking)"
                ).format(target=target, source=source)
            )
            raw.execute(
                sql.SQL(
                    "INSERT INTO {target}.view_tracking ({names})"
                    " SELECT {names} FROM {source}.view_tracking"
                ).format(target=target, source=source, names=names)
            )

    def close(self) -> None:
        """Closes every connection."""
        self._pool.close()


ASIDE_SCHEMA = "ledger_views_aside"
"""The PostgreSQL schema where ``rebuild`` builds views before swapping them in."""
REBUILD_LOCK_ID = 7_310_420_003
"""PostgreSQL advisory lock held by the one rebuild that may run at a time."""


class _NotificationLog:
    """eventsourcing's ``select_notifications`` over a page reader that takes the id to read after.

    The recorder's signature (``start`` with ``inclusive_of_start``) is spelled once here; each
    log reads the page after ``after`` its own way.
    """

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Any]:
        """Notifications after (or from) ``start``, at most ``limit``, in id order."""
        after = 0 if start is None else (start - 1 if inclusive_of_start else start)
        return self._page(after, limit, stop, topics)

    def _page(
        self, after: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> Sequence[Any]:
        raise NotImplementedError


class MemoryNotifications(_NotificationLog):
    """The notification log of an in-memory store, read like a recorder's."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def _page(
        self, after: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> list[Notification]:
        rows = self._store.stored_events()
        last = len(rows) if stop is None else min(stop, len(rows))
        selected = []
        for index in range(max(after, 0), last):
            row = rows[index]
            if topics and row.topic not in topics:
                continue
            selected.append(
                Notification(
                    id=index + 1,
                    originator_id=row.originator_id,
                    originator_version=row.originator_version,
                    topic=row.topic,
                    state=row.state,
                )
            )
            if len(selected) == limit:
                break
        return selected

    def max_notification_id(self) -> int | None:
        """The id of the newest notification, or None."""
        return len(self._store.stored_events()) or None


ViewStorage = SQLiteViewDatabase | PostgresViewDatabase


def open_view_database(url: str | None) -> ViewStorage:
    """The view database for a ledger URL (``memory:`` gets a private in-memory SQLite)."""
    if url is not None and url.startswith("memory:"):
        return SQLiteViewDatabase(":memory:")
    env = env_for_url(url)
    if "SQLITE_DBNAME" in env:
        return SQLiteViewDatabase(env["SQLITE_DBNAME"], wait_s=float(env["SQLITE_LOCK_TIMEOUT"]))
    return PostgresViewDatabase(postgres_conninfo(env), wait_s=float(env[POSTGRES_POOL_TIMEOUT_S]))


class RecorderNotifications(_NotificationLog):
    """A recorder's notification log, its library errors translated at the boundary."""

    def __init__(self, recorder: Any) -> None:
        self._recorder = recorder

    def _page(
        self, after: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> Sequence[Any]:
        """The recorder's ``select_notifications`` after ``after``."""
        try:
            return self._recorder.select_notifications(  # type: ignore[no-any-return]
                after, limit, stop, topics, inclusive_of_start=False
            )
        except PersistenceError as exc:
            raise InfrastructureError(f"cannot read the notification log: {exc}") from None

    def max_notification_id(self) -> int | None:
        """The recorder's newest notification id."""
        try:
            found = self._recorder.max_notification_id()
        except PersistenceError as exc:
            raise InfrastructureError(f"cannot read the notification log: {exc}") from None
        return None if found is None else int(found)


class NotificationRow(msgspec.Struct, frozen=True, gc=False):
    """A stored event as the log lists it (the fields of eventsourcing's ``Notification``)."""

    id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


class FastNotifications(RecorderNotifications):
    """The notification log for bulk readers (``ledger publish``, ``ledger export``).

    On PostgreSQL it selects the five columns as tuples into gc-free structs: half the time of
    eventsourcing's ``select_notifications`` (dict rows, then a frozen dataclass per row),
    measured on 50,000-row pages. The page is otherwise the same rows in the same order, read
    once more on a fresh connection if its connection broke; anything else (SQLite, a topic
    filter) goes through the recorder as before.
    """

    def __init__(self, recorder: Any) -> None:
        super().__init__(recorder)
        self._statement: sql.Composed | None = None
        if isinstance(recorder, LedgerPostgresRecorder):
            self._statement = sql.SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                " FROM {schema}.{table} WHERE notification_id > %s AND notification_id <= %s"
                " ORDER BY notification_id LIMIT %s"
            ).format(
                schema=sql.Identifier(recorder.datastore.schema),
                table=sql.Identifier(recorder.events_table_name),
            )

    def _page(
        self, after: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> Sequence[Any]:
        if self._statement is None or topics:
            return super()._page(after, limit, stop, topics)
        try:
            return self._rows(after, (1 << 63) - 1 if stop is None else stop, limit)
        except (PersistenceError, psycopg.Error) as exc:
            raise InfrastructureError(f"cannot read the notification log: {exc}") from None

    @read_retried_once
    def _rows(self, after: int, stop: int, limit: int) -> list[NotificationRow]:
        with (
            self._recorder.datastore.get_connection() as connection,
            connection.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(self._statement, (after, stop, limit), prepare=True)
            return [
                NotificationRow(int(i), str(o), int(v), str(t), bytes(s))
                for i, o, v, t, s in cursor.fetchall()
            ]


def fast_notification_source(store: EventStore | MemoryStore) -> RecorderNotifications:
    """The log for bulk readers: ``FastNotifications`` over the store's recorder."""
    if isinstance(store, MemoryStore):
        return RecorderNotifications(MemoryNotifications(store))
    return FastNotifications(store.recorder)


def notification_source(store: EventStore | MemoryStore) -> RecorderNotifications:
    """What the runner reads notifications from: the recorder, or the memory log."""
    if isinstance(store, MemoryStore):
        return RecorderNotifications(MemoryNotifications(store))
    return RecorderNotifications(store.recorder)


def event_decoder(store: EventStore | MemoryStore) -> Callable[[Notification], Event]:
    """Decodes a notification with the store's mapper; an undecodable row is a breach."""
    to_domain_event = store.mapper.to_domain_event

    def decode(notification: Notification) -> Event:
        try:
            event = cast(Event, to_domain_event(notification))
        except MapperDeserialisationError as exc:
            raise IntegrityBreach(
                f"notification {notification.id} cannot be decoded: {exc}"
            ) from None
        return event

    return decode


class LogWatcher:
    """Waits for new events: LISTEN on a PostgreSQL primary's events channel, else polling.

    eventsourcing's PostgreSQL recorder NOTIFYs ``ledger_events`` in every write transaction, so
    a follower wakes as soon as events commit; the wait is still bounded, so a lost notification
    (a dropped connection) only delays the next catch-up by one interval. SQLite has no
    notifications: the follower polls at the interval.
    """

    def __init__(self, url: str | None, *, interval_s: float, channel: str = "ledger_events"):
        if not 0 < interval_s <= 60:
            raise ValueError("interval_s must be in (0, 60]")
        self.interval_s = interval_s
        self._channel = channel
        self._conninfo: str | None = None
        self._standby: bool | None = None
        self._connection: psycopg.Connection[Any] | None = None
        if url is None or not url.startswith("memory:"):
            env = env_for_url(url)
            if "POSTGRES_DBNAME" in env:
                self._conninfo = postgres_conninfo(env)

    @property
    def listening(self) -> bool:
        """Whether waits end on a NOTIFY (a PostgreSQL primary) rather than on the interval.

        A hot standby cannot ``LISTEN`` (nor would it hear the primary's NOTIFYs): there the
        follower polls at the interval.
        """
        if self._conninfo is None:
            return False
        if self._standby is None:
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as connection:
                    row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
            except psycopg.Error as exc:
                log.warning("listen_failed", channel=self._channel, error=str(exc))
                return True  # not known yet: try LISTEN, which falls back to the interval
            self._standby = bool(row and row[0])
        return not self._standby

    def _listen(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            assert self._conninfo is not None
            connection = psycopg.connect(self._conninfo, autocommit=True)
            connection.execute(f'LISTEN "{self._channel}"')
            self._connection = connection
        return self._connection

    def wait(self, stop: threading.Event) -> None:
        """Returns when events may have arrived, after the interval at the latest, or on stop."""
        if not self.listening:
            stop.wait(self.interval_s)
            return
        try:
            connection = self._listen()
            deadline = time.monotonic() + self.interval_s
            # Short slices, so a stop request (a signal) is seen within one slice.
            while not stop.is_set():
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    return
                timeout_s = min(left_s, WAIT_SLICE_S)
                if any(True for _ in connection.notifies(timeout=timeout_s, stop_after=1)):
                    return
        except psycopg.Error as exc:
            # The database went away: drop the connection, wait one interval (a bounded poll),
            # and LISTEN again next time; the catch-up itself reports a lasting failure.
            log.warning("listen_failed", channel=self._channel, error=str(exc))
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            stop.wait(self.interval_s)

    def close(self) -> None:
        """Stops listening."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def log_replication(store: EventStore | MemoryStore) -> dict[str, Any]:
    """Whether the log is read from a hot standby, and how far its replay is behind (seconds).

    The replay lag is 0 when the standby has replayed all it received, else the time since the
    last transaction it replayed was committed on the primary (PostgreSQL's own measure).
    """
    if isinstance(store, MemoryStore) or not isinstance(store.recorder, LedgerPostgresRecorder):
        return {"log_standby": False, "log_replay_lag_s": None}
    try:
        with store.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT pg_is_in_recovery() AS standby,"
                " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
                " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END AS lag_s"
            )
            row = cursor.fetchone()
    except (PersistenceError, psycopg.Error) as exc:
        raise InfrastructureError(f"cannot read the log's replication state: {exc}") from None
    assert row is not None  # a SELECT without FROM returns one row
    standby = bool(row["standby"])
    lag_s = row["lag_s"]
    return {
        "log_standby": standby,
        "log_replay_lag_s": float(lag_s) if standby and lag_s is not None else None,
    }
