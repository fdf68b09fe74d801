"""The audit port (``ledger.audit.source.AuditSource``) on the stores: bounded reads for ``verify``
and ``history``.

``StoreSource`` reads a SQLite or PostgreSQL store through eventsourcing's own recorder
(``select_notifications``) plus the chain table; ``MemorySource`` reads the in-process store of
``memory://`` (which keeps no hash chain). A store hands out its own with ``audit_source()``,
handing itself in: the readers know the stores only by the protocols below (``RecordedStore``,
``RowStore``), so this module imports no store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    Notification,
    PersistenceError,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from adapters.storage.codec import MsgspecMapper
from ledger.audit.source import Link, undecodable
from ledger.chain import StoredRow
from ledger.domain import Event
from ledger.errors import InfrastructureError
from ledger.projections.runner import NotificationSource


class ChainedRecorder(NotificationSource, Protocol):
    """An eventsourcing application recorder (its notification log, as the projections read it)
    that also keeps the hash chain's table."""

    chain_table_name: str

    @property
    def datastore(self) -> Any:
        """eventsourcing's datastore (its ``transaction``; on PostgreSQL its ``schema``)."""


class RecordedStore(Protocol):
    """What ``StoreSource`` reads: a store on an eventsourcing application (``EventStore``)."""

    @property
    def app(self) -> Application[Any]:
        """The application (its ``events`` repository reads a stream)."""

    @property
    def recorder(self) -> ChainedRecorder:
        """The application's recorder."""

    @property
    def mapper(self) -> Mapper[Any]:
        """Decodes stored rows."""


class RowStore(Protocol):
    """What ``MemorySource`` reads: stored rows kept in process memory (``MemoryStore``)."""

    @property
    def mapper(self) -> MsgspecMapper:
        """Decodes stored rows."""

    def stored_events(self) -> list[StoredRow]:
        """Every stored row in notification order (id = position + 1)."""


class StoreSource:
    """An ``AuditSource`` on the ledger's SQLite or PostgreSQL event store."""

    chained = True

    def __init__(self, store: RecordedStore) -> None:
        self.store = store
        self.recorder = store.recorder
        self.decode = cast(Callable[[Notification], Event], store.mapper.to_domain_event)
        recorder = self.recorder
        if isinstance(recorder, PostgresApplicationRecorder):
            chain = SQL("{schema}.{table}").format(
                schema=Identifier(recorder.datastore.schema),
                table=Identifier(recorder.chain_table_name),
            )
            self._links_sql: Any = SQL(
                "SELECT first_id, last_id, hash FROM {chain} WHERE last_id > %s "
                "ORDER BY last_id LIMIT %s"
            ).format(chain=chain)
            self._head_sql: Any = SQL("SELECT max(last_id) AS head FROM {chain}").format(
                chain=chain
            )
        else:
            table = recorder.chain_table_name
            self._links_sql = (
                f"SELECT first_id, last_id, hash FROM {table} WHERE last_id > ? "  # noqa: S608
                "ORDER BY last_id LIMIT ?"
            )
            self._head_sql = f"SELECT max(last_id) AS head FROM {table}"  # noqa: S608

    def notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Stored rows after ``after`` through the recorder's own ``select_notifications``."""
        try:
            return self.recorder.select_notifications(after, limit, inclusive_of_start=False)
        except PersistenceError as exc:
            raise InfrastructureError(f"cannot read the events: {exc}") from None

    def links(self, after: int, limit: int) -> Sequence[Link]:
        """Chain links after ``after``."""
        rows = self._query(self._links_sql, (after, limit))
        return [Link(int(r["first_id"]), int(r["last_id"]), bytes(r["hash"])) for r in rows]

    def max_position(self) -> int:
        """The highest notification id."""
        try:
            return int(self.recorder.max_notification_id() or 0)
        except PersistenceError as exc:
            raise InfrastructureError(f"cannot read the events: {exc}") from None

    def chain_head(self) -> int:
        """The newest link's ``last_id``."""
        rows = self._query(self._head_sql, ())
        return int(rows[0]["head"] or 0) if rows else 0

    def stream(self, originator_id: str, after: int, limit: int) -> Sequence[Event]:
        """One page of a stream, decoded."""
        try:
            events = self.store.app.events.get(originator_id, gt=after, limit=limit)
            return [cast(Event, event) for event in events]
        except MapperDeserialisationError as exc:
            raise undecodable(originator_id, exc) from None
        except PersistenceError as exc:
            raise InfrastructureError(f"cannot read {originator_id!r}: {exc}") from None

    def _query(self, statement: Any, params: tuple[Any, ...]) -> list[Any]:
        try:
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(statement, params)
                return list(cursor.fetchall())
        except (PersistenceError, psycopg.Error, sqlite3.Error) as exc:
            # This query is ours, not eventsourcing's: its driver errors may arrive untranslated.
            raise InfrastructureError(f"cannot read the hash chain: {exc}") from None


class MemorySource:
    """An ``AuditSource`` on the in-process store of ``memory://`` (no hash chain)."""

    chained = False

    def __init__(self, store: RowStore) -> None:
        self.store = store
        self.decode = cast(Callable[[Notification], Event], store.mapper.to_domain_event)

    def _rows(self) -> list[Notification]:
        return [
            Notification(
                id=index,
                originator_id=row.originator_id,
                originator_version=row.originator_version,
                topic=row.topic,
                state=row.state,
            )
            for index, row in enumerate(self.store.stored_events(), start=1)
        ]

    def notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Rows after ``after`` (ids are positions in the log, from 1)."""
        return self._rows()[after : after + limit]

    def links(self, after: int, limit: int) -> Sequence[Link]:  # noqa: ARG002  (the protocol's)
        """None: the memory store keeps no chain."""
        return []

    def max_position(self) -> int:
        """How many rows are stored."""
        return len(self.store.stored_events())

    def chain_head(self) -> int:
        """0: no chain."""
        return 0

    def stream(self, originator_id: str, after: int, limit: int) -> Sequence[Event]:
        """One page of a stream, decoded."""
        rows = [r for r in self.store.stored_events() if r.originator_id == originator_id]
        try:
            page = rows[after : after + limit]
            return [cast(Event, self.store.mapper.to_domain_event(row)) for row in page]
        except MapperDeserialisationError as exc:
            raise undecodable(originator_id, exc) from None
