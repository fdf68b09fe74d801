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
``verify`` started that a running projector (its heartbeat in ``view_tracking``) did not move in
a bounded grace. A view behind with no projector running is only not projected: a note with
its lag (``ProjectionHealth`` says how it decides).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.audit.verify import VIEWS, Breach, ReplayState, ViewCheck
from ledger.errors import one_line
from ledger.projections.base import Cursor, ViewDatabase

TRACKING_TABLE = "view_tracking"
BALANCES_TABLE = "view_balances"
FETCH_ROWS_MAX = 5_000
"""View rows fetched per round trip while comparing."""
STUCK_GRACE_S = 5.0
"""How long ``verify`` waits for a running projector to bring a view behind the log up to the
log's head before calling it stuck."""
RUNNING_WITHIN_S = 3.0
"""A projector whose heartbeat is this recent runs: the background thread and a follower run
at least every second or so (``HEARTBEAT_EVERY_S``), inline ledgers with each commit and query."""
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


@dataclass(frozen=True, slots=True)
class _Tracked:
    """One view's tracking row as ``verify`` reads it."""

    name: str
    position: int
    error: str | None
    error_notification_id: int | None
    error_aggregate_id: str | None
    heartbeat_at: datetime | None

    def running(self, now: datetime) -> bool:
        """Whether a projector ran over the view within ``RUNNING_WITHIN_S`` of ``now``."""
        if self.heartbeat_at is None:
            return False
        return (now - self.heartbeat_at).total_seconds() <= RUNNING_WITHIN_S


class ProjectionHealth:
    """Views whose last page failed or that a running projector cannot advance (breaches), and
    views merely behind with no projector running (notes): ``verify``'s last check.

    How it decides, for each view, against the log's newest notification id when ``verify``
    started (``head``):

    - its last page failed (an error in ``view_tracking``): a breach naming the event;
    - it is at ``head`` or past it: fine;
    - it is behind and a projector ran over it within ``RUNNING_WITHIN_S`` (its heartbeat,
      ``view_tracking.heartbeat_at``): ``verify`` waits up to ``grace_s`` for it to reach
      ``head``; if it did not move at all meanwhile, the projector cannot advance it: a
      breach (stuck); if it moved, a note (catching up);
    - it is behind and no projector runs: a note with its lag and when a projector last ran
      (the views are only not projected: ``ledger project`` brings them up to date).
    """

    def __init__(
        self,
        database: ViewDatabase,
        *,
        grace_s: float = STUCK_GRACE_S,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.database = database
        self.grace_s = grace_s
        self._sleep = sleep
        self._now = now

    def _rows(self) -> list[_Tracked] | None:
        with self.database.snapshot() as cursor:
            if not _exists(cursor, TRACKING_TABLE):
                return None
            dialect = cursor.dialect
            if not _has_column(cursor, TRACKING_TABLE, "error_notification_id"):
                # Made by a release that recorded no failures (``setup`` adds the columns).
                cursor.execute(f"SELECT name, position FROM {TRACKING_TABLE}")  # noqa: S608
                return [
                    _Tracked(str(n), int(p), None, None, None, None) for n, p in cursor.fetchall()
                ]
            heartbeat = (
                "heartbeat_at" if _has_column(cursor, TRACKING_TABLE, "heartbeat_at") else "NULL"
            )
            columns = (
                f"name, position, error, error_notification_id, error_aggregate_id, {heartbeat}"
            )
            cursor.execute(f"SELECT {columns} FROM view_tracking ORDER BY name")  # noqa: S608  (constant SQL)
            return [
                _Tracked(str(n), int(p), e, None if i is None else int(i), a, dialect.to_ts(h))
                for n, p, e, i, a, h in cursor.fetchall()
            ]

    def breaches(self, head: int) -> tuple[list[Breach], list[str]]:
        """Breaches and notes for the views, ``head`` being the log's newest id at the start."""
        rows = self._rows()
        if rows is None:
            return [], []
        started = {row.name: row.position for row in rows}
        deadline = time.monotonic() + self.grace_s

        def waiting(rows: list[_Tracked]) -> bool:
            now = self._now()
            return any(r.error is None and r.position < head and r.running(now) for r in rows)

        while waiting(rows) and time.monotonic() < deadline:
            self._sleep(STUCK_POLL_S)
            rows = self._rows() or []
        now = self._now()
        breaches: list[Breach] = []
        notes: list[str] = []
        for row in rows:
            name, position = row.name, row.position
            behind = head - position
            if row.error is not None:
                breaches.append(
                    Breach(
                        VIEWS,
                        f"view {name} is stopped at position {position}: its last page failed:"
                        f" {one_line(row.error)}",
                        position=row.error_notification_id,
                        aggregate_id=row.error_aggregate_id,
                    )
                )
            elif behind <= 0:
                notes.append(f"views: {name} is at position {position}, not behind the log")
            elif not row.running(now):
                ran = (
                    "no projector has run over it"
                    if row.heartbeat_at is None
                    else f"no projector has run over it since {row.heartbeat_at.isoformat()}"
                )
                what = "has projected nothing here yet" if position == 0 else "is not projected"
                notes.append(
                    f"views: {name} {what}: {_events(behind)} behind the log at position"
                    f" {position} (newest {head} when verify started); {ran}"
                    " (`ledger project` brings it up to date)"
                )
            elif position > started.get(name, position):
                notes.append(
                    f"views: {name} is catching up: position {started[name]} -> {position},"
                    f" {_events(behind)} behind the log (newest {head} when verify started)"
                )
            else:
                breaches.append(
                    Breach(
                        VIEWS,
                        f"view {name} is stuck at position {position}, {_events(behind)} behind"
                        f" the log (newest {head} when verify started): a projector runs over it"
                        f" (heartbeat {row.heartbeat_at.isoformat() if row.heartbeat_at else '-'})"
                        f" but did not advance it in {self.grace_s:g} s",
                        position=position,
                    )
                )
        return breaches, notes


def _events(count: int) -> str:
    return f"{count:,} event" if count == 1 else f"{count:,} events"


def view_checks(database: ViewDatabase | None) -> list[ViewCheck]:
    """The view checks that apply (none without a view database)."""
    if database is None:
        return []
    return [BalancesViewCheck(database)]
