"""The consumption view: stamps consumed per CTI per local day, and CPD / days remaining.

A consumption counts on the Mexico City calendar day of its ``stamped_at`` (the PAC's stamping
time), whenever it was recorded: the event's ``local_date``, decided once when it was consumed.
CPD and DR depend on "today", so they are computed when asked, from the ledger's clock, never
stored (DESIGN §6):

- CPD (consumo promedio diario) = stamps of the last 30 complete local days / 30; when the first
  consumption is more recent, the stamps from that day to yesterday / d, the number of those days,
  if 7 ≤ d < 30; otherwise none.
- DR (días restantes) = floor(balance / CPD); none when CPD is none or 0, or for an unlimited CTI.
  Computed with integers (floor(balance * d / stamps)), so no rounding error can shift a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ledger.aggregates.stamping_account import UNLIMITED, StampingAccount
from ledger.clock import local_date
from ledger.domain import Event
from ledger.errors import Rejected
from ledger.projections.balances import AVAILABLE_STAMPS_SQL, available_params
from ledger.projections.base import Cursor, Dialect, Handler, Table, View

CONSUMPTION = Table(
    "view_consumption",
    (("cti_id", "text"), ("local_date", "date"), ("stamps", "int")),
    key=("cti_id", "local_date"),
)

CPD_WINDOW_DAYS = 30
"""CPD averages over this many complete local days."""
CPD_HISTORY_DAYS_MIN = 7
"""Fewer complete days of history than this give no CPD."""
DAILY_DAYS_DEFAULT = 90
DAILY_DAYS_MAX = 3_660
"""Bound on the days of history ``consumption`` lists."""


@dataclass(frozen=True, slots=True)
class DailyConsumption:
    """Stamps consumed by one CTI on one local day (``count``)."""

    local_date: date
    count: int


@dataclass(frozen=True, slots=True)
class ConsumptionRow:
    """A CTI's consumption: CPD, days remaining, and its days with consumption."""

    cpd: float | None
    days_remaining: int | None
    daily: tuple[DailyConsumption, ...]


def cpd_and_days_remaining(
    *,
    first_day: date | None,
    window_stamps: int,
    today: date,
    balance: int,
    unlimited: bool,
) -> tuple[float | None, int | None]:
    """CPD and DR of DESIGN §6.

    ``window_stamps`` counts the stamps of the 30 local days before ``today`` (today excluded:
    it is not complete). ``first_day`` is the local day of the CTI's first consumption.
    """
    if first_day is None:
        return None, None
    days = (today - first_day).days  # complete days from the first one to yesterday
    if days >= CPD_WINDOW_DAYS:
        days = CPD_WINDOW_DAYS
    elif days < CPD_HISTORY_DAYS_MIN:
        return None, None
    cpd = window_stamps / days
    if window_stamps == 0 or unlimited:
        return cpd, None
    return cpd, max(balance, 0) * days // window_stamps


def window(today: date) -> tuple[date, date]:
    """The first and last day of the CPD window (the 30 complete days before today)."""
    return today - timedelta(days=CPD_WINDOW_DAYS), today - timedelta(days=1)


class _Buffer:
    """Stamps per (CTI, local day) of one page."""

    __slots__ = ("counts", "dialect")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.counts: dict[tuple[str, date], int] = {}

    def stamp_consumed(
        self, event: StampingAccount.StampConsumed | StampingAccount.ReservationPosted
    ) -> None:
        """One more stamp on the consumption's local day (a posted hold is a consumption)."""
        key = (event.originator_id, event.local_date)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def flush(self, cursor: Cursor) -> None:
        """Adds the page's counts to the stored days."""
        day = self.dialect.day
        cursor.insert(
            CONSUMPTION,
            [(cti, day(d), n) for (cti, d), n in self.counts.items()],
            "DO UPDATE SET stamps = view_consumption.stamps + excluded.stamps",
        )


class ConsumptionView(View):
    """Stamps per CTI per local day."""

    name = "consumption"
    version = 1
    tables = (CONSUMPTION,)
    buffer = _Buffer

    def handlers(self) -> dict[type[Event], Handler]:
        """Only consumptions, posted holds included."""
        return {
            StampingAccount.StampConsumed: _Buffer.stamp_consumed,
            StampingAccount.ReservationPosted: _Buffer.stamp_consumed,
        }


CPD_INPUTS_SQL = (
    "(SELECT MIN(k.local_date) FROM view_consumption k WHERE k.cti_id = {cti}), "
    "COALESCE((SELECT SUM(k.stamps) FROM view_consumption k WHERE k.cti_id = {cti} "
    "AND k.local_date >= ? AND k.local_date <= ?), 0)"
)
"""SQL for a CTI's first consumption day and its stamps in the CPD window (two ``?``)."""


def consumption(
    cursor: Cursor, cti_id: str, now: datetime, days: int = DAILY_DAYS_DEFAULT
) -> ConsumptionRow:
    """CPD, DR and the last ``days`` local days with consumption (today included)."""
    today = local_date(now)
    if not 1 <= days <= DAILY_DAYS_MAX:
        raise Rejected("invalid_command", field="days", reason=f"1 to {DAILY_DAYS_MAX}")
    dialect = cursor.dialect
    first, last = window(today)
    cursor.execute(
        "SELECT s.kind, "  # noqa: S608  (constant SQL fragments; every value is a bound parameter)
        + AVAILABLE_STAMPS_SQL.format(balance="b.balance", cti="s.cti_id")
        + ", "
        + CPD_INPUTS_SQL.format(cti="s.cti_id")
        + " FROM view_stamping_accounts s LEFT JOIN view_balances b "
        "ON b.holder_id = s.cti_id AND b.unit = 'stamps' WHERE s.cti_id = ?",
        (*available_params(dialect, now), dialect.day(first), dialect.day(last), cti_id),
    )
    found = cursor.fetchall()
    if not found:
        raise Rejected("unknown_account", account_id=cti_id)
    kind, balance, first_day, window_stamps = found[0]
    cpd, days_remaining = cpd_and_days_remaining(
        first_day=dialect.to_day(first_day),
        window_stamps=int(window_stamps),
        today=today,
        balance=int(balance),
        unlimited=kind == UNLIMITED,
    )
    cursor.execute(
        "SELECT local_date, stamps FROM view_consumption WHERE cti_id = ? AND local_date >= ? "
        "ORDER BY local_date",
        (cti_id, dialect.day(today - timedelta(days=days - 1))),
    )
    daily = []
    for d, n in cursor.fetchall():
        day = dialect.to_day(d)
        assert day is not None
        daily.append(DailyConsumption(day, int(n)))
    return ConsumptionRow(cpd=cpd, days_remaining=days_remaining, daily=tuple(daily))
