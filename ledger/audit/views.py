"""``verify``'s view checks: the read side equals the replay, and no view is stuck or failing.

The views live in their view database (``ledger/projections``), read here through the same
``ViewDatabase`` the projections write through, inside one snapshot transaction (repeatable read
on PostgreSQL, a read transaction on SQLite), so a view that moves during ``verify`` is seen
moving and skipped with a note instead of compared half-way. Views that do not exist are skipped
with a note too.

Compared: ``view_balances.balance`` per holder and unit against the replay's booked balance (the
sum of the holder's postings). The other views derive from the same postings or from
non-monetary facts and are covered by the projections' own rebuild-equals-incremental tests.

Health (DESIGN §3.6): a view whose last page failed (the error recorded in ``view_tracking``) is a
breach naming the event that broke it; so is a view still behind the log's head as it was when
``verify`` started, after a bounded grace for a running projector to reach it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ledger.audit.verify import VIEWS, Breach, ReplayState, ViewCheck
from ledger.errors import one_line
from ledger.projections.base import Cursor, ViewDatabase

TRACKING_TABLE = "view_tracking"
BALANCES_TABLE = "view_balances"
FETCH_ROWS_MAX = 5_000
"""View rows fetched per round trip while comparing."""
STUCK_GRACE_S = 5.0
"""How long ``verify`` waits for a view behind the log before calling it stuck."""
STUCK_POLL_S = 0.25


def _exists(cursor: Cursor, *tables: str) -> bool:
    if cursor.dialect.name == "postgres":
        cursor.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = ANY(?)",
            (list(tables),),
        )
    else:
        marks = ", ".join("?" * len(tables))
        cursor.execute(
            f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({marks})",  # noqa: S608  (placeholders only)
            tables,
        )
    return int(cursor.fetchall()[0][0]) == len(tables)


def _has_column(cursor: Cursor, table: str, column: str) -> bool:
    if cursor.dialect.name == "postgres":
        cursor.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?",
            (table, column),
        )
    else:
        cursor.execute("SELECT count(*) FROM pragma_table_info(?) WHERE name = ?", (table, column))
    return int(cursor.fetchall()[0][0]) == 1


class BalancesViewCheck:
    """``view_balances`` against the replayed balances."""

    name = "balances"

    def __init__(self, database: ViewDatabase) -> None:
        self.database = database

    def _position(self, cursor: Cursor) -> int | None:
        if not _exists(cursor, TRACKING_TABLE, BALANCES_TABLE):
            return None
        cursor.execute(
            f"SELECT position FROM {TRACKING_TABLE} WHERE name = ?",  # noqa: S608
            (self.name,),
        )
        rows = cursor.fetchall()
        return None if not rows else int(rows[0][0])

    def position(self) -> int | None:
        """The tracked position of the balances view, or None when it does not exist."""
        with self.database.snapshot() as cursor:
            return self._position(cursor)

    def compare(self, replay: ReplayState) -> list[Breach] | None:
        """Every holder whose view balance differs from the replay's; None if the view moved."""
        breaches: list[Breach] = []
        expected = replay.balances
        seen: set[tuple[str, str]] = set()
        with self.database.snapshot() as cursor:
            if self._position(cursor) != replay.last_position:
                return None
            cursor.execute(
                f"SELECT holder_id, unit, balance FROM {BALANCES_TABLE}"  # noqa: S608
                " ORDER BY holder_id, unit"
            )
            while rows := cursor.fetchmany(FETCH_ROWS_MAX):
                for holder_id, unit, balance in rows:
                    key = (str(holder_id), str(unit))
                    seen.add(key)
                    want = expected.get(key, 0)
                    if int(balance) != want:
                        breaches.append(_differs(key, int(balance), want, replay))
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


class ProjectionHealth:
    """Views whose last page failed, or stuck behind the log (``verify``'s last check)."""

    def __init__(
        self,
        database: ViewDatabase,
        *,
        grace_s: float = STUCK_GRACE_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
        self.grace_s = grace_s
        self._sleep = sleep

    def _rows(self) -> list[tuple[str, int, str | None, int | None, str | None]] | None:
        with self.database.snapshot() as cursor:
            if not _exists(cursor, TRACKING_TABLE):
                return None
            if not _has_column(cursor, TRACKING_TABLE, "error_notification_id"):
                # Made by a release that recorded no failures (``setup`` adds the columns).
                cursor.execute(f"SELECT name, position FROM {TRACKING_TABLE}")  # noqa: S608
                return [(str(n), int(p), None, None, None) for n, p in cursor.fetchall()]
            cursor.execute(
                "SELECT name, position, error, error_notification_id, error_aggregate_id"
                " FROM view_tracking ORDER BY name"
            )
            return [
                (str(n), int(p), e, None if i is None else int(i), a)
                for n, p, e, i, a in cursor.fetchall()
            ]

    def breaches(self, head: int) -> tuple[list[Breach], list[str]]:
        """Breaches and notes for the views, ``head`` being the log's newest id at the start."""
        rows = self._rows()
        if rows is None:
            return [], []
        deadline = time.monotonic() + self.grace_s
        while any(error is None and 0 < position < head for _, position, error, _, _ in rows):
            if time.monotonic() >= deadline:
                break
            self._sleep(STUCK_POLL_S)
            rows = self._rows() or []
        breaches: list[Breach] = []
        notes: list[str] = []
        for name, position, error, notification_id, aggregate_id in rows:
            if error is not None:
                breaches.append(
                    Breach(
                        VIEWS,
                        f"view {name} is stopped at position {position}: its last page failed:"
                        f" {one_line(error)}",
                        position=notification_id,
                        aggregate_id=aggregate_id,
                    )
                )
            elif position == 0 and head > 0:
                # Never projected here (the views are kept elsewhere, or by nobody yet): there
                # is nothing stale to mislead a reader, only nothing at all.
                notes.append(f"views: {name} has projected nothing here yet")
            elif position < head:
                breaches.append(
                    Breach(
                        VIEWS,
                        f"view {name} is stuck at position {position}, {head - position} events"
                        f" behind the log (newest {head} when verify started), with no"
                        f" projector reaching it in {self.grace_s:g} s",
                        position=position,
                    )
                )
            else:
                notes.append(f"views: {name} is at position {position}, not behind the log")
        return breaches, notes


def view_checks(database: ViewDatabase | None) -> list[ViewCheck]:
    """The view checks that apply (none without a view database)."""
    if database is None:
        return []
    return [BalancesViewCheck(database)]
