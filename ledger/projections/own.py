"""Your own views: tables, event handlers and queries, kept exactly once like the built-in ones.

A view is a class with a ``name``, a ``version``, its ``tables`` and methods marked ``@on``
(handlers) and ``@query`` (reads)::

    class StampsPerRfc(OwnView):
        name = "stamps_per_rfc"
        version = 1
        tables = (Table("view_stamps_per_rfc", (("rfc", "text"), ("stamps", "int")), key=("rfc",)),)

        @on(StampingAccount.StampConsumed)
        def consumed(self, rows: Rows, event: StampingAccount.StampConsumed) -> None:
            rows.add("view_stamps_per_rfc", {"rfc": event.issuer_rfc}, stamps=1)

        @query
        def stamps(self, cursor: Cursor, rfc: str) -> int:
            cursor.execute("SELECT stamps FROM view_stamps_per_rfc WHERE rfc = ?", (rfc,))
            found = cursor.fetchall()
            return int(found[0][0]) if found else 0

Register it with ``Ledger.open(url, views=[StampsPerRfc()])`` or a ``ledger.views`` entry point
(``ledger project``, ``rebuild``, ``status`` and ``export`` load those), and read it with
``lg.views.own("stamps_per_rfc").stamps("GODE561231GR8")``.

The runner treats it as it treats its own views: a page of events is handed to every view's
``Rows`` (in memory), then one transaction writes the rows of every view and moves each view's
position in ``view_tracking``. A handler therefore never writes SQL and never sees a
transaction: it says what the event changes (``set``, ``add``, ``delete``, merged in memory in
event order) and the page is written in bulk, exactly once, whatever crashes. A new view, or one
whose ``version`` changed, is built from the first event on its own. Handlers must be pure
functions of the events (no clock, no I/O), so that a rebuild gives the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar

from ledger.domain import Event
from ledger.errors import LedgerError
from ledger.projections.base import Cursor, Dialect, Handler, Kind, Table, View

__all__ = ["Cursor", "OwnView", "Rows", "Table", "entry_point_views", "on", "query"]

ENTRY_POINT_GROUP = "ledger.views"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_HANDLES = "__ledger_handles__"
_QUERY = "__ledger_query__"

F = TypeVar("F", bound=Callable[..., Any])


class ViewDefinitionError(LedgerError):
    """Raised when a view is defined wrongly (a bad name, a key column it lacks, ...)."""


def on(*event_classes: type[Event]) -> Callable[[F], F]:
    """Marks a method ``(self, rows, event)`` as the handler of ``event_classes`` (a base class
    covers its subclasses)."""
    if not event_classes:
        raise ViewDefinitionError("@on needs at least one event class")

    def mark(method: F) -> F:
        setattr(method, _HANDLES, (*getattr(method, _HANDLES, ()), *event_classes))
        return method

    return mark


def query(method: F) -> F:
    """Marks a method ``(self, cursor, ...)`` as a query (``lg.views.own(NAME).method(...)``)."""
    setattr(method, _QUERY, True)
    return method


@dataclass(slots=True)
class _Change:
    """What one page does to one row: deleted first, then fields set and amounts added."""

    deleted: bool = False
    sets: dict[str, Any] = field(default_factory=dict)
    adds: dict[str, int] = field(default_factory=dict)


class Rows:
    """A view's changes for one page of events, written in bulk when the page commits."""

    def __init__(self, tables: Sequence[Table], dialect: Dialect) -> None:
        self.dialect = dialect
        self._tables = {table.name: table for table in tables}
        self._changes: dict[str, dict[tuple[Any, ...], _Change]] = {t.name: {} for t in tables}

    def _change(self, table: str, key: Mapping[str, Any]) -> tuple[Table, _Change]:
        spec = self._tables.get(table)
        if spec is None:
            raise ViewDefinitionError(f"no table {table!r} in this view")
        if set(key) != set(spec.key):
            raise ViewDefinitionError(f"{table}: the key is {', '.join(spec.key)}")
        row = tuple(key[name] for name in spec.key)
        changes = self._changes[table]
        change = changes.get(row)
        if change is None:
            change = changes[row] = _Change()
        return spec, change

    def set(self, table: str, key: Mapping[str, Any], **fields: Any) -> None:
        """The row of ``key`` exists (created if missing) with ``fields`` set."""
        spec, change = self._change(table, key)
        _check_columns(spec, fields)
        for name, value in fields.items():
            change.sets[name] = value
            change.adds.pop(name, None)

    def add(self, table: str, key: Mapping[str, Any], **amounts: int) -> None:
        """Adds ``amounts`` to integer columns of the row of ``key`` (0 when new)."""
        spec, change = self._change(table, key)
        _check_columns(spec, amounts)
        for name, amount in amounts.items():
            if name in change.sets:
                change.sets[name] = (change.sets[name] or 0) + amount
            else:
                change.adds[name] = change.adds.get(name, 0) + amount

    def delete(self, table: str, key: Mapping[str, Any]) -> None:
        """Removes the row of ``key`` (a later ``set`` or ``add`` in the page creates it anew)."""
        _, change = self._change(table, key)
        change.deleted = True
        change.sets.clear()
        change.adds.clear()

    def flush(self, cursor: Cursor) -> None:
        """Deletes, then upserts, grouped by the columns each row changes."""
        for name, changes in self._changes.items():
            spec = self._tables[name]
            kinds = dict(spec.columns)
            where = " AND ".join(f"{column} = ?" for column in spec.key)
            deleted = [key for key, change in changes.items() if change.deleted]
            if deleted:
                cursor.executemany(
                    f"DELETE FROM {name} WHERE {where}",  # noqa: S608  (checked names)
                    [self._stored(spec.key, kinds, key) for key in deleted],
                )
            groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[Any, ...]]] = {}
            for key, change in changes.items():
                if not change.sets and not change.adds and change.deleted:
                    continue
                sets, adds = tuple(sorted(change.sets)), tuple(sorted(change.adds))
                values = (
                    *key,
                    *(change.sets[column] for column in sets),
                    *(change.adds[column] for column in adds),
                )
                groups.setdefault((sets, adds), []).append(
                    self._stored((*spec.key, *sets, *adds), kinds, values)
                )
            for (sets, adds), rows in groups.items():
                columns = (*spec.key, *sets, *adds)
                updates = [f"{c} = excluded.{c}" for c in sets] + [
                    f"{c} = COALESCE({name}.{c}, 0) + excluded.{c}" for c in adds
                ]
                conflict = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
                cursor.executemany(
                    f"INSERT INTO {name} ({', '.join(columns)})"  # noqa: S608  (checked names)
                    f" VALUES ({', '.join('?' * len(columns))})"
                    f" ON CONFLICT ({', '.join(spec.key)}) {conflict}",
                    rows,
                )

    def _stored(
        self, columns: Sequence[str], kinds: Mapping[str, Kind], values: Sequence[Any]
    ) -> tuple[Any, ...]:
        """Values as the database stores them (timestamps, dates and booleans adapted)."""
        stored = []
        for column, value in zip(columns, values, strict=True):
            kind = kinds[column]
            if value is None or kind in ("text", "int"):
                stored.append(value)
            elif kind == "ts":
                stored.append(self.dialect.ts(value))
            elif kind == "date":
                stored.append(self.dialect.day(value))
            else:
                stored.append(self.dialect.flag(bool(value)))
        return tuple(stored)


def _check_columns(table: Table, fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - set(table.column_names)
    if unknown:
        raise ViewDefinitionError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    keys = set(fields) & set(table.key)
    if keys:
        raise ViewDefinitionError(f"{table.name}: key columns are given in the key, not set")


class OwnView(View):
    """The base class of a view written outside the project (see the module's docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls):
            check_definition(cls)

    def new_buffer(self, dialect: Dialect) -> Rows:
        """An empty page of changes."""
        return Rows(self.tables, dialect)

    def handlers(self) -> dict[type[Event], Handler]:
        """The ``@on`` methods by the event classes they take."""
        found: dict[type[Event], Handler] = {}
        for method in _marked(type(self), _HANDLES):
            bound = getattr(self, method.__name__)
            for event_class in getattr(method, _HANDLES):
                found[event_class] = _call(bound)
        return found

    def queries(self) -> dict[str, Callable[..., Any]]:
        """The ``@query`` methods, bound to this view, by name."""
        return {m.__name__: getattr(self, m.__name__) for m in _marked(type(self), _QUERY)}


def _call(bound: Callable[[Rows, Any], None]) -> Handler:
    """A runner handler ``(buffer, event)`` calling a bound ``@on`` method."""

    def handler(rows: Any, event: Any) -> None:
        bound(rows, event)

    return handler


def _marked(cls: type, mark: str) -> list[Any]:
    """The methods of ``cls`` (its bases' included, overrides winning) that carry ``mark``."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        found.update({name: value for name, value in vars(klass).items() if callable(value)})
    return [value for value in found.values() if hasattr(value, mark)]


def check_definition(view: type[View]) -> None:
    """Refuses a view whose names could not be SQL identifiers, or whose keys are not columns."""
    if not _NAME.match(getattr(view, "name", "") or ""):
        raise ViewDefinitionError(f"{view.__name__}: name must match {_NAME.pattern}")
    tables = getattr(view, "tables", ())
    if not tables:
        raise ViewDefinitionError(f"view {view.name}: no tables")
    for table in tables:
        if not _NAME.match(table.name) or not table.name.startswith("view_"):
            raise ViewDefinitionError(
                f"view {view.name}: table {table.name!r} must be view_<lower_case_name>"
            )
        for column, _ in table.columns:
            if not _NAME.match(column):
                raise ViewDefinitionError(f"{table.name}: column {column!r} is not a plain name")
        if not table.key or not set(table.key) <= set(table.column_names):
            raise ViewDefinitionError(f"{table.name}: its key must be some of its columns")


def check_views(views: Iterable[View]) -> list[View]:
    """The views, refusing two of one name or two tables of one name."""
    found = list(views)
    names: set[str] = set()
    tables: set[str] = set()
    for view in found:
        check_definition(type(view))
        if view.name in names:
            raise ViewDefinitionError(f"two views are named {view.name}")
        names.add(view.name)
        for table in view.tables:
            if table.name in tables:
                raise ViewDefinitionError(f"two views have a table {table.name}")
            tables.add(table.name)
    return found


def entry_point_views() -> list[View]:
    """The views installed packages declare in the ``ledger.views`` entry point group.

    Each entry point names a view class (made with no arguments) or a view instance.
    """
    found: list[View] = []
    for entry in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            loaded = entry.load()
        except Exception as exc:
            raise ViewDefinitionError(
                f"entry point {entry.name} = {entry.value}: {type(exc).__name__}: {exc}"
            ) from None
        view = loaded() if isinstance(loaded, type) else loaded
        if not isinstance(view, View):
            raise ViewDefinitionError(f"entry point {entry.name} = {entry.value}: not a view")
        found.append(view)
    return found
