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
- holds: a CTI's held stamps sit in its held book (holder ``held:<cti_id>``, a row like any
  other). On the CTI's own row a reserve or a void moves only ``balance`` (it is neither a
  credit nor a use) and a posted hold counts in ``used``. ``view_holds`` keeps the open holds
  that set a stamp aside, with their ``expires_at``: queries count a hold past its time back into
  the CTI's balance at once (unless its lot has expired) and out of ``held``, as for lots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ledger.aggregates.client import Client
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.stamping_account import StampingAccount
from ledger.clock import local_date
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
HOLDS = Table(
    "view_holds",
    (
        ("cti_id", "text"),
        ("hold_id", "text"),
        ("expires_at", "ts"),
        ("lot_id", "text"),
        ("lot_expires_on", "date"),
    ),
    key=("cti_id", "hold_id"),
)

# Slots of an in-memory balance row.
_CREDITED, _USED, _BALANCE, _CREATED, _PURCHASE, _EMISSION = range(6)


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """One holder's book in one unit (``held``: a CTI's stamps set aside by open holds)."""

    holder_id: str
    unit: str
    credited: int
    used: int
    balance: int
    created_at: datetime | None
    last_purchase_at: datetime | None
    last_emission_at: datetime | None
    held: int = 0


class _Buffer:
    """Balance deltas of one page, summed per (holder, unit)."""

    __slots__ = (
        "consumed",
        "dialect",
        "emissions",
        "first_consumed_at",
        "holds_closed",
        "holds_new",
        "lots_new",
        "lots_returned",
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
        self.lots_returned: dict[tuple[str, str], date] = {}
        self.holds_new: dict[tuple[str, str], tuple[datetime, str, date | None]] = {}
        self.holds_closed: set[tuple[str, str]] = set()

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

    def _held_legs(self, event: Event) -> None:
        """A hold's legs: the held book's like any holder's; on the CTI's row only the balance."""
        cti_id = event.originator_id
        for posting in event.postings():
            if posting.holder == cti_id:
                row = self._row(cti_id, posting.unit, event.timestamp)
                row[_BALANCE] += posting.delta
            else:
                row = self._row(posting.holder, posting.unit, event.timestamp)
                if posting.delta > 0:
                    row[_CREDITED] += posting.delta
                else:
                    row[_USED] -= posting.delta
                row[_BALANCE] += posting.delta

    def stamp_reserved(self, event: StampingAccount.StampReserved) -> None:
        """A stamp set aside: out of its lot, into the held book; the hold is open."""
        self._held_legs(event)
        if event.lot_id:
            self._take(event.originator_id, event.lot_id, 1)
            self.holds_new[(event.originator_id, event.hold_id)] = (
                event.expires_at,
                event.lot_id,
                event.lot_expires_on,
            )

    def _close_hold(self, cti_id: str, hold_id: str) -> None:
        if self.holds_new.pop((cti_id, hold_id), None) is None:
            self.holds_closed.add((cti_id, hold_id))

    def reservation_posted(self, event: StampingAccount.ReservationPosted) -> None:
        """A posted hold is a consumption of the CTI (its stamp left the balance when held)."""
        self._held_legs(event)
        cti_id = event.originator_id
        row = self._row(cti_id, STAMPS, event.timestamp)
        row[_USED] += 1
        if row[_EMISSION] is None or event.stamped_at > row[_EMISSION]:
            row[_EMISSION] = event.stamped_at
        if event.lot_id:
            self._close_hold(cti_id, event.hold_id)

    def reservation_voided(self, event: StampingAccount.ReservationVoided) -> None:
        """The stamp goes back to its lot (recreated in ``view_expiring_lots`` if emptied)."""
        self._held_legs(event)
        if event.lot_id:
            cti_id = event.originator_id
            self._close_hold(cti_id, event.hold_id)
            if event.lot_expires_on is not None:
                self.lots_returned[(cti_id, event.lot_id)] = event.lot_expires_on
                self._take(cti_id, event.lot_id, -1)

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
        if self.lots_returned:
            self._flush_returned(cursor)
        if self.lots_taken:
            self._flush_taken(cursor)
        if self.holds_new or self.holds_closed:
            self._flush_holds(cursor)
        day = self.dialect.day
        cursor.insert(
            EXPIRING_LOTS,
            [
                (cti, lot, day(expires_on), remaining)
                for (cti, lot), (expires_on, remaining) in self.lots_new.items()
                if remaining > 0
            ],
        )

    def _flush_returned(self, cursor: Cursor) -> None:
        # A stamp returned to a lot whose row was deleted when it emptied: the row comes back
        # (at zero, then the page's net change is applied like any other).
        day = self.dialect.day
        cursor.insert(
            EXPIRING_LOTS,
            [
                (cti, lot, day(expires_on), 0)
                for (cti, lot), expires_on in self.lots_returned.items()
                if self.lots_taken.get((cti, lot), 0) < 0
            ],
            "DO NOTHING",
        )

    def _flush_holds(self, cursor: Cursor) -> None:
        ts, day = self.dialect.ts, self.dialect.day
        if self.holds_closed:
            cursor.executemany(
                "DELETE FROM view_holds WHERE cti_id = ? AND hold_id = ?",
                sorted(self.holds_closed),
            )
        cursor.insert(
            HOLDS,
            [
                (cti, hold, ts(expires_at), lot, day(lot_expires_on))
                for (cti, hold), (expires_at, lot, lot_expires_on) in self.holds_new.items()
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
    tables = (BALANCES, EXPIRING_LOTS, HOLDS)
    buffer = _Buffer

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
            StampingAccount.StampReserved: _Buffer.stamp_reserved,
            StampingAccount.ReservationPosted: _Buffer.reservation_posted,
            StampingAccount.ReservationVoided: _Buffer.reservation_voided,
        }


EXPIRED_STAMPS_SQL = (
    "COALESCE((SELECT SUM(l.remaining) FROM view_expiring_lots l "
    "WHERE l.cti_id = {cti} AND l.expires_on < ?), 0)"
)
"""SQL for the stamps of a CTI in lots past their date (one ``?``: today)."""
AVAILABLE_STAMPS_SQL = (
    "COALESCE({balance}, 0) - "  # noqa: S608  (constant SQL fragments; values are bound parameters)
    + EXPIRED_STAMPS_SQL
    + " + COALESCE((SELECT COUNT(*) FROM view_holds h WHERE h.cti_id = {cti} "
    "AND h.expires_at <= ? AND (h.lot_expires_on IS NULL OR h.lot_expires_on >= ?)), 0)"
)
"""SQL for a CTI's available stamps from its booked ``balance``: lots past their date leave,
stamps of holds past their time come back (three ``?``: ``available_params``)."""
HELD_STAMPS_SQL = (
    "COALESCE((SELECT COUNT(*) FROM view_holds h WHERE h.cti_id = {cti} AND h.expires_at > ?), 0)"
)
"""SQL for a CTI's stamps held by holds not past their time (one ``?``: now)."""


def available_params(dialect: Dialect, now: datetime) -> list[Any]:
    """The parameters of ``AVAILABLE_STAMPS_SQL``: today, now, today."""
    today = dialect.day(local_date(now))
    return [today, dialect.ts(now), today]


def balances(cursor: Cursor, holder_id: str, now: datetime) -> list[BalanceRow]:
    """The holder's rows (one per unit), expired lots no longer counted, held stamps apart."""
    dialect = cursor.dialect
    cursor.execute(
        "SELECT b.holder_id, b.unit, b.credited, b.used, "  # noqa: S608  (constant SQL fragments; every value is a bound parameter)
        + AVAILABLE_STAMPS_SQL.format(balance="b.balance", cti="b.holder_id")
        + ", b.created_at, b.last_purchase_at, b.last_emission_at, "
        + HELD_STAMPS_SQL.format(cti="b.holder_id")
        + " FROM view_balances b WHERE b.holder_id = ? ORDER BY b.unit",
        (*available_params(dialect, now), dialect.ts(now), holder_id),
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
            held=int(held),
        )
        for h, u, c, used, b, created, purchase, emission, held in cursor.fetchall()
    ]
