"""``verify``'s view check: the read side must equal the replay at the position it has tracked.

The views live in the events' database (``ledger/projections``). The check reads them with plain
SQL through the event store's own connections, inside one read transaction (a snapshot: repeatable
read on PostgreSQL, a read transaction on SQLite), so a view that moves during ``verify`` is seen
moving and skipped with a note instead of compared half-way. Views that do not exist are skipped
with a note too.

Compared today: ``view_balances.balance`` per holder and unit against the replay's booked balance
(the sum of the holder's postings). The other views derive from the same postings or from
non-monetary facts and are covered by the projections' own rebuild-equals-incremental tests.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError

from adapters.memory import MemoryStore
from adapters.store import EventStore, LedgerPostgresRecorder
from ledger.audit.verify import VIEWS, Breach, ReplayState, ViewCheck
from ledger.errors import InfrastructureError

TRACKING_TABLE = "view_tracking"
BALANCES_TABLE = "view_balances"
FETCH_ROWS_MAX = 5_000
"""View rows fetched per round trip while comparing."""


class BalancesViewCheck:
    """``view_balances`` against the replayed balances."""

    name = "balances"

    def __init__(self, store: EventStore) -> None:
        self.datastore: Any = store.recorder.datastore
        self.postgres = isinstance(store.recorder, LedgerPostgresRecorder)
        self.mark = "%s" if self.postgres else "?"

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        try:
            with self.datastore.transaction(commit=False) as cursor:
                if self.postgres:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield cursor
        except (PersistenceError, psycopg.Error, sqlite3.Error) as exc:
            raise InfrastructureError(f"cannot read the views: {exc}") from None

    def _exists(self, cursor: Any) -> bool:
        if self.postgres:
            cursor.execute(
                "SELECT count(*) AS n FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_name IN (%s, %s)",
                (TRACKING_TABLE, BALANCES_TABLE),
            )
        else:
            cursor.execute(
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
                (TRACKING_TABLE, BALANCES_TABLE),
            )
        return int(cursor.fetchone()["n"]) == 2

    def _position(self, cursor: Any) -> int | None:
        if not self._exists(cursor):
            return None
        cursor.execute(
            f"SELECT position FROM {TRACKING_TABLE} WHERE name = {self.mark}",  # noqa: S608
            (self.name,),
        )
        row = cursor.fetchone()
        return None if row is None else int(row["position"])

    def position(self) -> int | None:
        """The tracked position of the balances view, or None when it does not exist."""
        with self._snapshot() as cursor:
            return self._position(cursor)

    def compare(self, replay: ReplayState) -> list[Breach] | None:
        """Every holder whose view balance differs from the replay's; None if the view moved."""
        breaches: list[Breach] = []
        expected = replay.balances
        seen: set[tuple[str, str]] = set()
        with self._snapshot() as cursor:
            if self._position(cursor) != replay.last_position:
                return None
            cursor.execute(
                f"SELECT holder_id, unit, balance FROM {BALANCES_TABLE}"  # noqa: S608
                " ORDER BY holder_id, unit"
            )
            # eventsourcing wraps SQLite's cursor without ``fetchmany``; use the driver's own.
            raw = getattr(cursor, "sqlite_cursor", cursor)
            while rows := raw.fetchmany(FETCH_ROWS_MAX):
                for row in rows:
                    key = (str(row["holder_id"]), str(row["unit"]))
                    seen.add(key)
                    want = expected.get(key, 0)
                    if int(row["balance"]) != want:
                        breaches.append(_differs(key, int(row["balance"]), want, replay))
        for key, want in expected.items():
            if want != 0 and key not in seen:
                breaches.append(_differs(key, None, want, replay))
        return breaches


def _differs(key: tuple[str, str], shown: int | None, want: int, replay: ReplayState) -> Breach:
    holder, unit = key
    shown_text = "no row" if shown is None else str(shown)
    return Breach(
        VIEWS,
        f"view balances shows {shown_text} {unit} for {holder}; the events give {want}"
        f" at position {replay.last_position}",
        position=replay.last_position,
        aggregate_id=holder,
    )


def view_checks(store: EventStore | MemoryStore) -> list[ViewCheck]:
    """The view checks that apply to ``store`` (none for the memory store)."""
    if isinstance(store, MemoryStore):
        return []
    return [BalancesViewCheck(store)]
