"""Monthly stamps consumed per issuer RFC: the report a PAC reconciles with SAT.

Every stamp consumed (``ConsumeStamp``, or a hold posted by ``PostReservation``) counts for the
issuer RFC of its CFDI in the month of its stamping day in Mexico City (the event's
``local_date``, the day the consumption counts for). Written from scratch against the view API
of ``ledger.projections.own``, with no change to the ledger itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.aggregates.stamping_account import StampingAccount
from ledger.projections.own import Cursor, OwnView, Rows, Table, on, query

MONTHLY = Table(
    "view_monthly_stamps_by_rfc",
    (("issuer_rfc", "text"), ("month", "text"), ("stamps", "int")),
    key=("issuer_rfc", "month"),
)


@dataclass(frozen=True, slots=True)
class RfcMonth:
    """Stamps consumed for one issuer RFC in one month (``YYYY-MM``, Mexico City)."""

    issuer_rfc: str
    month: str
    stamps: int


class MonthlyStampsByRfc(OwnView):
    """Stamps consumed per issuer RFC per month."""

    name = "monthly_stamps_by_rfc"
    version = 1
    tables = (MONTHLY,)

    @on(StampingAccount.StampConsumed, StampingAccount.ReservationPosted)
    def consumed(
        self,
        rows: Rows,
        event: StampingAccount.StampConsumed | StampingAccount.ReservationPosted,
    ) -> None:
        """One more stamp for the CFDI's issuer in the month of its stamping day."""
        month = event.local_date.strftime("%Y-%m")
        rows.add(MONTHLY.name, {"issuer_rfc": event.issuer_rfc, "month": month}, stamps=1)

    @query
    def months(self, cursor: Cursor, issuer_rfc: str | None = None) -> list[RfcMonth]:
        """Every RFC's months (or one RFC's), by RFC then month."""
        sql = "SELECT issuer_rfc, month, stamps FROM view_monthly_stamps_by_rfc"
        params: tuple[str, ...] = ()
        if issuer_rfc is not None:
            sql += " WHERE issuer_rfc = ?"
            params = (issuer_rfc,)
        cursor.execute(sql + " ORDER BY issuer_rfc, month", params)
        return [RfcMonth(str(r), str(m), int(n)) for r, m, n in cursor.fetchall()]

    @query
    def month(self, cursor: Cursor, month: str) -> list[RfcMonth]:
        """One month (``YYYY-MM``): each issuer RFC's stamps, most first, for the SAT report."""
        cursor.execute(
            "SELECT issuer_rfc, month, stamps FROM view_monthly_stamps_by_rfc WHERE month = ?"
            " ORDER BY stamps DESC, issuer_rfc",
            (month,),
        )
        return [RfcMonth(str(r), str(m), int(n)) for r, m, n in cursor.fetchall()]
