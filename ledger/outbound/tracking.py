"""Where each publisher stands: ``outbound_tracking`` in the views' database.

One row per publisher (``nats:LEDGER``, ``amqp:ledger``): the last notification id its target
confirmed, and the last error that stopped it (the broker down, ...), cleared by the next batch
that goes through. It sits beside ``view_tracking`` in the same database, not in it: a publisher
waiting for a broker may lag for hours, which must not read as a stuck view to ``verify``, and
the projector's page transactions must not wait on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger.errors import LedgerError
from ledger.projections.base import Table, ViewDatabase

OUTBOUND_TRACKING = Table(
    "outbound_tracking",
    (
        ("name", "text"),
        ("position", "int"),
        ("error", "text"),
        ("error_at", "ts"),
        ("failures", "int"),
        ("updated_at", "ts"),
    ),
    key=("name",),
)


ERROR_CHARS_MAX = 2_000
"""Bound on a recorded error (one line)."""


class PositionMoved(LedgerError):
    """Raised when another publisher of the same name moved the position: two must not run."""


@dataclass(frozen=True, slots=True)
class OutboundStatus:
    """Where one publisher stands (``ledger status``)."""

    name: str
    position: int
    lag_events: int
    error: str | None
    error_at: datetime | None
    failures: int
    updated_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "name": self.name,
            "position": self.position,
            "lag_events": self.lag_events,
            "error": self.error,
            "error_at": None if self.error_at is None else self.error_at.isoformat(),
            "failures": self.failures,
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
        }


class Tracking:
    """The tracked position of one publisher."""

    def __init__(self, database: ViewDatabase, name: str) -> None:
        self.database = database
        self.name = name

    def setup(self) -> int:
        """Creates the table and this publisher's row if missing; returns its position."""
        self.database.create([OUTBOUND_TRACKING])
        with self.database.write() as cursor:
            cursor.execute(
                "INSERT INTO outbound_tracking (name, position, failures) SELECT ?, 0, 0"
                " WHERE NOT EXISTS (SELECT 1 FROM outbound_tracking WHERE name = ?)",
                (self.name, self.name),
            )
        return self.position()

    def position(self) -> int:
        """The last notification id the target confirmed."""
        with self.database.read() as cursor:
            cursor.execute("SELECT position FROM outbound_tracking WHERE name = ?", (self.name,))
            rows = cursor.fetchall()
        return int(rows[0][0]) if rows else 0

    def advance(self, expected: int, position: int) -> None:
        """Moves the position from ``expected`` to ``position`` and clears the last error.

        Raises ``PositionMoved`` if the stored position is not ``expected``: another publisher
        of the same name is running.
        """
        dialect = self.database.dialect
        suffix = " FOR UPDATE" if dialect.name == "postgres" else ""
        with self.database.write() as cursor:
            cursor.execute(
                f"SELECT position FROM outbound_tracking WHERE name = ?{suffix}",  # noqa: S608  (constant SQL)
                (self.name,),
            )
            rows = cursor.fetchall()
            stored = int(rows[0][0]) if rows else 0
            if stored != expected:
                raise PositionMoved(
                    f"publisher {self.name}: its position moved from {expected} to {stored}"
                    " meanwhile: another publisher of the same name is running"
                )
            cursor.execute(
                "UPDATE outbound_tracking SET position = ?, error = NULL, error_at = NULL,"
                " failures = 0, updated_at = ? WHERE name = ?",
                (position, dialect.ts(datetime.now(UTC)), self.name),
            )

    def record_error(self, error: str) -> None:
        """Records why the last attempt failed (``ledger status`` shows it)."""
        now = self.database.dialect.ts(datetime.now(UTC))
        with self.database.write() as cursor:
            cursor.execute(
                "UPDATE outbound_tracking SET error = ?, error_at = ?,"
                " failures = COALESCE(failures, 0) + 1, updated_at = ? WHERE name = ?",
                (" ".join(error.split())[:ERROR_CHARS_MAX], now, now, self.name),
            )


def outbound_status(database: ViewDatabase, newest: int) -> list[OutboundStatus]:
    """Every publisher's position, lag behind ``newest`` and last error (none: no table)."""
    with database.read() as cursor:
        if cursor.dialect.name == "postgres":
            cursor.execute(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_name = 'outbound_tracking'"
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                " AND name = 'outbound_tracking'"
            )
        if not int(cursor.fetchall()[0][0]):
            return []
        cursor.execute(
            "SELECT name, position, error, error_at, failures, updated_at"
            " FROM outbound_tracking ORDER BY name"
        )
        rows = cursor.fetchall()
        dialect = cursor.dialect
    return [
        OutboundStatus(
            name=str(name),
            position=int(position),
            lag_events=max(newest - int(position), 0),
            error=error,
            error_at=dialect.to_ts(error_at),
            failures=int(failures or 0),
            updated_at=dialect.to_ts(updated_at),
        )
        for name, position, error, error_at, failures, updated_at in rows
    ]
