"""What every view shares: table specs, the database protocol views write through, page buffers.

A *view* turns events into rows of ordinary SQL tables that live in the same database as the
events. The runner (``runner.py``) reads a page of notifications, decodes each event once, hands
it to every view's page buffer (plain dicts and lists in memory), then opens ONE transaction in
which each view flushes its buffer with a few bulk statements and the tracking position moves.
Views therefore never commit per event, and a crash anywhere leaves rows and position together.

The projection modules hold SQL in a portable subset of SQLite and PostgreSQL, with ``?``
placeholders; ``Dialect`` covers the differences (types, NULL-ignoring max/min, value adapters).
The database itself is implemented in ``adapters/storage/views.py``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Literal, Protocol

from ledger.domain import Event
from ledger.errors import InfrastructureError, Rejected

Kind = Literal["text", "int", "bool", "ts", "date"]
"""Column kinds: text, 64-bit integer, boolean, aware timestamp, calendar date."""

PAGE_LIMIT_MAX = 500
"""Bound on the rows one query of a view returns."""
PAGE_LIMIT_DEFAULT = 100


@dataclass(frozen=True, slots=True)
class Table:
    """A view table: its columns (name, kind), primary key and secondary indexes."""

    name: str
    columns: tuple[tuple[str, Kind], ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        """The columns in declaration order (the order of inserted row tuples)."""
        return tuple(name for name, _ in self.columns)


class ViewWriteError(InfrastructureError):
    """Raised when the view database refuses a page's rows themselves (a value it cannot
    store, a broken constraint): unlike a lost connection, the same rows fail again."""


class Dialect(Protocol):
    """The differences between SQLite and PostgreSQL that views must know about."""

    @property
    def name(self) -> Literal["sqlite", "postgres"]:
        """Which database."""

    def ts(self, at: datetime | None) -> Any:
        """A timestamp as this database stores it."""

    def day(self, day: date | None) -> Any:
        """A date as this database stores it."""

    def flag(self, value: bool) -> Any:
        """A boolean as this database stores it."""

    def to_ts(self, value: Any) -> datetime | None:
        """A stored timestamp as an aware UTC ``datetime``."""

    def to_day(self, value: Any) -> date | None:
        """A stored date as a ``date``."""

    def greatest(self, a: str, b: str) -> str:
        """SQL for the larger of two expressions, ignoring NULLs."""

    def least(self, a: str, b: str) -> str:
        """SQL for the smaller of two expressions, ignoring NULLs."""

    def create_statements(self, table: Table) -> list[str]:
        """``CREATE TABLE/INDEX IF NOT EXISTS`` statements of ``table``."""


class Cursor(Protocol):
    """A cursor inside one view transaction (``?`` placeholders on every backend)."""

    @property
    def dialect(self) -> Dialect:
        """The database's dialect."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Runs one statement."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Runs one statement for each parameter row."""

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The rows of the last query."""

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        """Up to ``size`` more rows of the last query."""

    def insert(self, table: Table, rows: Sequence[Sequence[Any]], on_conflict: str = "") -> None:
        """Bulk-inserts full rows (in column order); ``on_conflict`` is the SQL after the key."""

    @property
    def in_list_max(self) -> int:
        """Bound on the values one ``any_of`` takes."""

    def any_of(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL after a column that matches any of ``values``, and its parameters."""


class ViewDatabase(Protocol):
    """Where views live: the events' own database (``adapters/storage/views.py``)."""

    @property
    def dialect(self) -> Dialect:
        """The database's dialect."""

    def write(self) -> AbstractContextManager[Cursor]:
        """A write transaction, holding the database's write lock on SQLite."""

    def read(self) -> AbstractContextManager[Cursor]:
        """A read-only transaction (a consistent snapshot)."""

    def snapshot(self) -> AbstractContextManager[Cursor]:
        """A read-only transaction whose every statement sees the same committed state."""

    def create(self, tables: Sequence[Table]) -> None:
        """Creates the tables and indexes that do not exist yet (safe between processes)."""

    def aside(self) -> AbstractContextManager[ViewDatabase]:
        """An empty place beside this database to build views in, removed on exit."""

    def swap_in(self, aside: ViewDatabase, tables: Sequence[Table]) -> None:
        """Replaces ``tables`` and the tracking rows of the views with those built in
        ``aside``, in one transaction."""

    def close(self) -> None:
        """Releases every connection; calling it again does nothing."""


class Buffer(Protocol):
    """A view's rows for one page of events, kept in memory until the page's transaction."""

    def flush(self, cursor: Cursor) -> None:
        """Writes the page's rows in bulk statements."""


class BufferClass(Protocol):
    """What makes a view's empty page buffer (the buffer's class)."""

    def __call__(self, dialect: Dialect) -> Buffer:
        """An empty buffer writing through ``dialect``."""


Handler = Callable[[Any, Any], None]
"""An unbound buffer method taking one event."""


class View:
    """A projection: its tables, its page buffer and which events it reads.

    ``handlers`` maps event classes (a base class covers its subclasses) to buffer methods.
    ``version`` changes when the tables or their meaning change; the runner then rebuilds the
    view from history on its own.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]]
    buffer: ClassVar[BufferClass]
    """The page buffer's class, made empty for each page by ``new_buffer``."""

    def new_buffer(self, dialect: Dialect) -> Buffer:
        """An empty buffer for the next page."""
        return self.buffer(dialect)

    def handlers(self) -> dict[type[Event], Handler]:
        """The buffer method that takes each event class."""
        raise NotImplementedError


def resolve(handlers: dict[type[Event], Handler], event_class: type[Event]) -> Handler | None:
    """The handler of the nearest class in ``event_class``'s MRO, or None."""
    for klass in event_class.__mro__:
        handler = handlers.get(klass)
        if handler is not None:
            return handler
    return None


# Search and paging ----------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Text folded for search and sorting: no accents, case-folded, single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def digits(text: str) -> str:
    """Only the digits of ``text`` (phones compare by their digits)."""
    return "".join(c for c in text if c.isdigit())


def like_pattern(term: str) -> str:
    """A LIKE pattern matching ``term`` anywhere, with ``\\`` escaping LIKE's wildcards."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_terms(search: str | None) -> list[str]:
    """The normalised words of a search; each must match (an empty search matches all)."""
    if search is None:
        return []
    if len(search) > 200:
        raise Rejected("invalid_command", field="search", reason="at most 200 characters")
    return normalise(search).split()


def check_page(limit: int, offset: int) -> None:
    """Rejects a page outside the bounds (``limit`` 1..500, ``offset`` ≥ 0)."""
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise Rejected("invalid_command", field="limit", reason=f"1 to {PAGE_LIMIT_MAX}")
    if offset < 0:
        raise Rejected("invalid_command", field="offset", reason="not negative")


def check_choice(field: str, value: str | None, allowed: Sequence[str]) -> None:
    """Rejects a filter or sort value that is not one of ``allowed``."""
    if value is not None and value not in allowed:
        raise Rejected("invalid_command", field=field, reason=f"one of {', '.join(allowed)}")


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (SQLite bounds host parameters per statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RowChanges:
    """Field changes per row of one single-key table in one page, merged in event order.

    ``create`` gives a new row's fields, ``change`` merges fields into a row (new or stored);
    ``flush`` inserts the new rows and updates the others, grouped by the columns they set.
    """

    __slots__ = ("created", "rows", "table")

    def __init__(self, table: Table) -> None:
        self.table = table
        self.rows: dict[str, dict[str, Any]] = {}
        self.created: set[str] = set()

    def create(self, row_id: str, fields: dict[str, Any]) -> None:
        """A new row."""
        self.rows[row_id] = fields
        self.created.add(row_id)

    def change(self, row_id: str, fields: dict[str, Any]) -> None:
        """Fields of a row set (merged with earlier changes in the page)."""
        self.rows.setdefault(row_id, {}).update(fields)

    def flush(self, cursor: Cursor) -> None:
        """Inserts new rows, then updates changed ones."""
        key = self.table.key[0]
        names = self.table.column_names
        new = [
            tuple(fields.get(name) for name in names)
            for row_id, fields in self.rows.items()
            if row_id in self.created
        ]
        cursor.insert(self.table, new)
        by_columns: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row_id, fields in self.rows.items():
            if row_id not in self.created:
                columns = tuple(sorted(fields))
                by_columns.setdefault(columns, []).append((*(fields[c] for c in columns), row_id))
        for columns, rows in by_columns.items():
            assignments = ", ".join(f"{c} = ?" for c in columns)
            cursor.executemany(
                f"UPDATE {self.table.name} SET {assignments} WHERE {key} = ?",  # noqa: S608
                rows,
            )
