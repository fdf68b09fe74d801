"""What both recorders share with the store above them.

``RecordRows`` is what a locked transaction yields to record in it; ``OutcomeUnknown`` is a write
whose connection broke after it was sent; ``OvertakenRows`` a guarded write that found its
aggregates moved on or its keys used; ``raising`` is a write that failed before it was sent;
``persistence_error`` is eventsourcing's error for a driver's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from eventsourcing import persistence
from eventsourcing.persistence import PersistenceError

from ledger.chain import StoredRow
from ledger.write.ports import KeyRecord, Sent

DriverErrors = tuple[tuple[type[Exception], type[PersistenceError]], ...]
"""A DB-API driver's error classes and eventsourcing's of the same name, the most specific
first."""

_DBAPI_ERRORS = (
    "InterfaceError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "DatabaseError",
)
"""PEP 249's error classes below ``Error``, each before its base (``DatabaseError``)."""


def driver_errors(driver: ModuleType) -> DriverErrors:
    """``driver``'s (``sqlite3``, ``psycopg``) error classes paired with eventsourcing's."""
    return tuple((getattr(driver, name), getattr(persistence, name)) for name in _DBAPI_ERRORS)


def persistence_error(exc: Exception, errors: DriverErrors) -> PersistenceError:
    """eventsourcing's error for a driver's, as eventsourcing's recorders raise it (what
    ``EventStore`` tells apart: a lost race, a connection failure, anything else); the first
    class that matches, as a chain of except clauses in this order would take."""
    for theirs, ours in errors:
        if isinstance(exc, theirs):
            return ours(str(exc))
    return PersistenceError(str(exc))


RecordRows = Callable[[Sequence[StoredRow], Sequence[KeyRecord]], Sequence[int]]
"""Records stored rows and keys in a locked transaction and commits it."""


class OutcomeUnknown(PersistenceError):
    """Raised by a recorder when its connection broke after a write was sent to the server."""


class OvertakenRows(Exception):
    """Raised by a recorder's guarded write that recorded nothing because others wrote first:
    the rows recorded after the versions it was decided on, and its keys' stored rows."""

    def __init__(self, rows: Sequence[StoredRow], keys: dict[str, KeyRecord]) -> None:
        super().__init__(f"overtaken by {len(rows)} events and {len(keys)} used keys")
        self.rows = rows
        self.keys = keys


def raising(exc: BaseException) -> Sent:
    """A write that failed before it was sent: its answer raises ``exc``."""

    def answer() -> Sequence[int]:
        raise exc

    return Sent(answer)


@dataclass
class RowsTurn:
    """What a recorder's wait at a hot aggregate gave (``Store.hot``), as stored rows."""

    answers: bytes | None = None
    """Another writer's answers to the batch: it is done."""
    rows: list[StoredRow] = field(default_factory=list)
    """Otherwise it is this writer's turn: the rows recorded after the version it knew,"""
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    """the rows of its keys that were used,"""
    posted: list[tuple[int, bytes]] = field(default_factory=list)
    """and the batches other writers posted for the aggregate meanwhile."""
