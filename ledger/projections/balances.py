"""The balances view: per holder and unit, credited, used, balance and the times that matter.

Every event's ``postings()`` (the double-entry legs) feed it, so any holder is covered, the
issuance source and the sinks included: per unit the balances sum to zero, as in the books.

- ``credited``: units received (purchases, transfers in, reclaims in);
- ``used``: units that left (consumed, transferred, sold, spent, reclaimed, expired); an unlimited
  CTI holds no balance, so its ``used`` counts the stamps it consumed;
- ``balance``: the recorded balance. A CTI's stamps in a lot past its expiry date stop counting on
  that date even before the expiry is recorded (as on the write side): ``view_expiring_lots``
  keeps what is left of every lot that has an expiry date, and queries subtract the expired ones.
- ``created_at``, ``last_purchase_at`` (stamps or points received by purchase or transfer, not by
  reclaim), ``last_emission_at`` (the latest ``stamped_at`` of a CTI's consumptions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ledger.aggregates.client import Client
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.stamping_account import StampingAccount
from ledger.domain import POINTS, SINK_CONSUMED, STAMPS, Event
from ledger.projections.base import Cursor, Dialect, Handler, Table, View, chunks

BALANCES = Table(
    "view_balances",
    (
        ("holder_id", "text"),
        ("unit", "text"),
        ("credited", "int"),
        ("used", "int"),
        ("balance", "int"),
        ("created_at", "ts"),
        ("last_purchase_at", "ts"),
        ("last_emission_at", "ts"),
    ),
    key=("holder_id", "unit"),
)
EXPIRING_LOTS = Table(
    "view_expiring_lots",
    (("cti_id", "text"), ("lot_id", "text"), ("expires_on", "date"), ("remaining", "int")),
    key=("cti_id", "lot_id"),
)

# Slots of an in-memory balance row.
_CREDITED, _USED, _BALANCE, _CREATED, _PURCHASE, _EMISSION = range(6)


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """One holder's book in one unit."""

    holder_id: str
    unit: str
    credited: int
    used: int
    balance: int
    created_at: datetime | None
    last_purchase_at: datetime | None
    last_emission_at: datetime | None


class _Buffer:
    """Balance deltas of one page, summed per (holder, unit)."""

    __slots__ = (
        "consumed",
        "dialect",
        "emissions",
        "first_consumed_at",
        "lots_new",
        "lots_taken",
        "rows",
    )

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.rows: dict[tuple[str, str], list[Any]] = {}
        self.consumed: dict[tuple[str, str], int] = {}
        self.emissions: dict[str, datetime] = {}
        self.first_consumed_at: datetime | None = None
        self.lots_new: dict[tuple[str, str], list[Any]] = {}
        self.lots_taken: dict[tuple[str, str], int] = {}

    def _row(self, holder: str, unit: str, at: datetime) -> list[Any]:
        row = self.rows.get((holder, unit))
        if row is None:
            row = self.rows[(holder, unit)] = [0, 0, 0, at, None, None]
        return row

    def posted(self, event: Event) -> None:
        """Any event: its postings."""
        at = event.timestamp
        rows = self.rows
        for posting in event.postings():
            row = rows.get((posting.holder, posting.unit))
            if row is None:
                row = rows[(posting.holder, posting.unit)] = [0, 0, 0, at, None, None]
            delta = posting.delta
            if delta > 0:
                row[_CREDITED] += delta
            else:
                row[_USED] -= delta
            row[_BALANCE] += delta

    def opened_master(self, event: MasterAccount.Opened) -> None:
        """The issuance source's books start at zero."""
        self._row(event.originator_id, STAMPS, event.timestamp)
        self._row(event.originator_id, POINTS, event.timestamp)

    def registered_distributor(self, event: Distributor.Registered) -> None:
        """A distributor holds stamps and points."""
        self._row(event.originator_id, STAMPS, event.timestamp)
        self._row(event.originator_id, POINTS, event.timestamp)

    def registered_client(self, event: Client.Registered) -> None:
        """A client's wallet holds points (its stamps live in its CTIs)."""
        self._row(event.originator_id, POINTS, event.timestamp)

    def opened_cti(self, event: StampingAccount.Opened) -> None:
        """A CTI holds stamps."""
        self._row(event.originator_id, STAMPS, event.timestamp)

    def _purchased(self, holder: str, unit: str, at: datetime) -> None:
        row = self._row(holder, unit, at)
        if row[_PURCHASE] is None or at > row[_PURCHASE]:
            row[_PURCHASE] = at

    def package_bought(self, event: Distributor.PackageBought) -> None:
        """A distributor's purchase."""
        self.posted(event)
        self._purchased(event.originator_id, event.unit, event.timestamp)

    def credits_received(self, event: Distributor.CreditsReceived) -> None:
        """A transfer from the parent is a purchase; a reclaim is not."""
        self.posted(event)
        if event.reason != "reclaim":
            self._purchased(event.originator_id, event.unit, event.timestamp)

    def points_credited(self, event: Client.PointsCredited) -> None:
        """Points bought by a client."""
        self.posted(event)
        self._purchased(event.originator_id, POINTS, event.timestamp)

    def stamps_credited(self, event: StampingAccount.StampsCredited) -> None:
        """Stamps for a CTI; a lot with an expiry date is tracked until it is used up."""
        self.posted(event)
        self._purchased(event.originator_id, STAMPS, event.timestamp)
        if event.expires_on is not None:
            self.lots_new[(event.originator_id, event.transfer_id)] = [
                event.expires_on,
                event.quantity,
            ]

    def stamp_consumed(self, event: StampingAccount.StampConsumed) -> None:
        """One stamp used: counted per (CTI, lot) and settled at flush (the hot path).

        Equivalent to the event's postings (the CTI -1, the consumed sink +1; none for an
        unlimited account) without building them: consumptions are most of the log.
        """
        key = (event.originator_id, event.lot_id)
        consumed = self.consumed
        consumed[key] = consumed.get(key, 0) + 1
        latest = self.emissions.get(event.originator_id)
        if latest is None or event.stamped_at > latest:
            self.emissions[event.originator_id] = event.stamped_at
        if self.first_consumed_at is None:
            self.first_consumed_at = event.timestamp

    def _settle_consumed(self) -> None:
        for (cti_id, lot_id), count in self.consumed.items():
            row = self.rows.get((cti_id, STAMPS))
            if row is None:
                row = self.rows[(cti_id, STAMPS)] = [0, 0, 0, None, None, None]
            row[_USED] += count
            if lot_id:
                row[_BALANCE] -= count
                self._take(cti_id, lot_id, count)
                assert self.first_consumed_at is not None
                sink = self._row(SINK_CONSUMED, STAMPS, self.first_consumed_at)
                sink[_CREDITED] += count
                sink[_BALANCE] += count
        for cti_id, stamped_at in self.emissions.items():
            row = self.rows[(cti_id, STAMPS)]
            if row[_EMISSION] is None or stamped_at > row[_EMISSION]:
                row[_EMISSION] = stamped_at

    def stamps_expired(self, event: StampingAccount.StampsExpired) -> None:
        """An expired lot leaves."""
        self.posted(event)
        self._take(event.originator_id, event.lot_id, event.quantity)

    def stamps_reclaimed(self, event: StampingAccount.StampsReclaimed) -> None:
        """Reclaimed stamps leave their lots."""
        self.posted(event)
        for lot_id, quantity in event.taken:
            self._take(event.originator_id, lot_id, quantity)

    def _take(self, cti_id: str, lot_id: str, quantity: int) -> None:
        key = (cti_id, lot_id)
        new = self.lots_new.get(key)
        if new is not None:
            new[1] -= quantity
        else:
            self.lots_taken[key] = self.lots_taken.get(key, 0) + quantity

    def flush(self, cursor: Cursor) -> None:
        """One upsert of every touched balance; the expiring lots touched."""
        self._settle_consumed()
        ts = self.dialect.ts
        cursor.insert(
            BALANCES,
            [
                (holder, unit, r[0], r[1], r[2], ts(r[3]), ts(r[4]), ts(r[5]))
                for (holder, unit), r in self.rows.items()
            ],
            _upsert(self.dialect),
        )
        if self.lots_taken:
            self._flush_taken(cursor)
        day = self.dialect.day
        cursor.insert(
            EXPIRING_LOTS,
            [
                (cti, lot, day(expires_on), remaining)
                for (cti, lot), (expires_on, remaining) in self.lots_new.items()
                if remaining > 0
            ],
        )

    def _flush_taken(self, cursor: Cursor) -> None:
        # Most consumptions take from lots without expiry, which this table does not keep:
        # find the few tracked ones first instead of updating a row per touched lot.
        cursor.execute("SELECT 1 FROM view_expiring_lots LIMIT 1")
        if not cursor.fetchall():
            return
        ctis = sorted({cti for cti, _ in self.lots_taken})
        tracked: set[tuple[str, str]] = set()
        for chunk in chunks(ctis, cursor.in_list_max):
            match, params = cursor.any_of(chunk)
            cursor.execute(
                f"SELECT cti_id, lot_id FROM view_expiring_lots WHERE cti_id {match}",  # noqa: S608  (placeholders only)
                params,
            )
            tracked.update((str(c), str(lot)) for c, lot in cursor.fetchall())
        changes = [
            (n, cti, lot) for (cti, lot), n in self.lots_taken.items() if (cti, lot) in tracked
        ]
        cursor.executemany(
            "UPDATE view_expiring_lots SET remaining = remaining - ? "
            "WHERE cti_id = ? AND lot_id = ?",
            changes,
        )
        cursor.executemany(
            "DELETE FROM view_expiring_lots WHERE cti_id = ? AND lot_id = ? AND remaining <= 0",
            [(cti, lot) for _, cti, lot in changes],
        )


def _upsert(dialect: Dialect) -> str:
    """The ON CONFLICT clause that adds a page's deltas to a stored row."""
    found = _UPSERT.get(dialect.name)
    if found is None:
        newest, oldest = dialect.greatest, dialect.least
        found = _UPSERT[dialect.name] = (
            "DO UPDATE SET credited = view_balances.credited + excluded.credited, "
            "used = view_balances.used + excluded.used, "
            "balance = view_balances.balance + excluded.balance, "
            f"created_at = {oldest('view_balances.created_at', 'excluded.created_at')}, "
            "last_purchase_at = "
            f"{newest('view_balances.last_purchase_at', 'excluded.last_purchase_at')}, "
            "last_emission_at = "
            f"{newest('view_balances.last_emission_at', 'excluded.last_emission_at')}"
        )
    return found


_UPSERT: dict[str, str] = {}


class BalancesView(View):
    """Balances per holder and unit, and the CTI lots that expire."""

    name = "balances"
    version = 1
    tables = (BALANCES, EXPIRING_LOTS)

    def new_buffer(self, dialect: Dialect) -> _Buffer:
        """An empty page."""
        return _Buffer(dialect)

    def handlers(self) -> dict[type[Event], Handler]:
        """Every event (its postings); purchases, consumption and lots in particular."""
        return {
            Event: _Buffer.posted,
            MasterAccount.Opened: _Buffer.opened_master,
            Distributor.Registered: _Buffer.registered_distributor,
            Client.Registered: _Buffer.registered_client,
            StampingAccount.Opened: _Buffer.opened_cti,
            Distributor.PackageBought: _Buffer.package_bought,
            Distributor.CreditsReceived: _Buffer.credits_received,
            Client.PointsCredited: _Buffer.points_credited,
            StampingAccount.StampsCredited: _Buffer.stamps_credited,
            StampingAccount.StampConsumed: _Buffer.stamp_consumed,
            StampingAccount.StampsExpired: _Buffer.stamps_expired,
            StampingAccount.StampsReclaimed: _Buffer.stamps_reclaimed,
        }


EXPIRED_STAMPS_SQL = (
    "COALESCE((SELECT SUM(l.remaining) FROM view_expiring_lots l "
    "WHERE l.cti_id = {cti} AND l.expires_on < ?), 0)"
)
"""SQL for the stamps of a CTI in lots past their date (one ``?``: today)."""


def balances(cursor: Cursor, holder_id: str, today: date) -> list[BalanceRow]:
    """The holder's rows (one per unit), expired lots no longer counted."""
    dialect = cursor.dialect
    cursor.execute(
        "SELECT b.holder_id, b.unit, b.credited, b.used, b.balance - "
        + EXPIRED_STAMPS_SQL.format(cti="b.holder_id")
        + ", b.created_at, b.last_purchase_at, b.last_emission_at "
        "FROM view_balances b WHERE b.holder_id = ? ORDER BY b.unit",
        (dialect.day(today), holder_id),
    )
    return [
        BalanceRow(
            holder_id=str(h),
            unit=str(u),
            credited=int(c),
            used=int(used),
            balance=int(b),
            created_at=dialect.to_ts(created),
            last_purchase_at=dialect.to_ts(purchase),
            last_emission_at=dialect.to_ts(emission),
        )
        for h, u, c, used, b, created, purchase, emission in cursor.fetchall()
    ]
