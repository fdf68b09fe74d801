"""What the demo shows, read once from the views: plain rows for ``render`` to print.

Only queries: nothing here sends a command. Each view is asked once, also where ``render``
prints it twice (the platform's distributors, with their subscriptions) or where the commands
to try next need it again (the busiest CTI of D-NORTE, whose consumption is charted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from adapters.cli.demo.network import CLOSING, CONVERTED_BY, LICENSED_BY, MASTER
from ledger.clock import local_date

if TYPE_CHECKING:
    from ledger.api import Ledger
    from ledger.projections.billing import CreditCodeRow, InvoiceRow, SaleRow
    from ledger.projections.consumption import ConsumptionRow
    from ledger.projections.directory import ClientRow, DistributorRow, StampingAccountRow
    from ledger.projections.entitlements import LicenceRow

CHART_DAYS = 14
"""Days in the consumption chart: the last complete ones, up to yesterday."""
PAGE_SIZE = 500
"""Rows a query returns at most (the views' own bound)."""


@dataclass(frozen=True)
class Chart:
    """One CTI's consumption, a count per day (0 for a day without any), CPD and days left."""

    cti_id: str
    days: list[tuple[date, int]]
    cpd: float | None
    days_remaining: int | None


@dataclass(frozen=True)
class Snapshot:
    """Every row the demo prints, and the client the commands to try next name."""

    distributors: list[DistributorRow]
    """The platform's distributors (with their subscriptions)."""
    sub_distributors: list[DistributorRow]
    north_accounts: list[StampingAccountRow]
    """D-NORTE's 12 CTIs with the most stamps, most first."""
    south_accounts: list[StampingAccountRow]
    """D-SUR's 8 active CTIs that stamped last, latest first."""
    favourites: list[ClientRow]
    chart: Chart | None
    """The consumption of D-NORTE's CTI with the most stamps (None: D-NORTE has no CTI)."""
    invoices: list[InvoiceRow]
    unbilled: list[SaleRow]
    """Every sale of the platform not invoiced yet, oldest first."""
    credit_codes: list[CreditCodeRow]
    panel_sales: list[SaleRow]
    """D-NORTE's unbilled sales made through the clients' panel (PCC)."""
    licensed: ClientRow | None
    """D-NORTE's first client, which holds licences under its MKLs."""
    licences: list[LicenceRow]
    closed_clients: list[ClientRow]
    """The clients of the distributor closed and purged."""
    points_buyer: str | None
    """A client that bought points through its panel (its history is worth a look)."""


def chart_days(usage: ConsumptionRow, today: date) -> list[tuple[date, int]]:
    """The ``CHART_DAYS`` complete days up to yesterday, a day without consumption as 0."""
    counts = {d.local_date: d.count for d in usage.daily}
    first = today - timedelta(days=CHART_DAYS)
    days = [first + timedelta(days=n) for n in range(CHART_DAYS)]
    return [(day, counts.get(day, 0)) for day in days]


def read_views(lg: Ledger) -> Snapshot:
    """The demo's rows, as the views hold them now (they should have caught up)."""
    views = lg.views
    north_accounts = views.stamping_accounts("D-NORTE", sort="balance_desc", limit=12)
    chart = None
    if north_accounts:
        busiest = north_accounts[0].cti_id
        usage = views.consumption(busiest, days=CHART_DAYS + 1)
        days = chart_days(usage, local_date(lg.engine.clock()))
        chart = Chart(busiest, days, usage.cpd, usage.days_remaining)
    unbilled: list[SaleRow] = []
    while page := views.unbilled_sales(MASTER, limit=PAGE_SIZE, offset=len(unbilled)):
        unbilled += page
        if len(page) < PAGE_SIZE:
            break
    panel = views.unbilled_sales("D-NORTE", limit=PAGE_SIZE)
    points = views.unbilled_sales("D-NORTE", limit=PAGE_SIZE, unit="points")
    licensed = next(iter(views.clients(LICENSED_BY, sort="nic", limit=1)), None)
    return Snapshot(
        distributors=views.distributors(MASTER),
        sub_distributors=views.distributors(CONVERTED_BY),
        north_accounts=north_accounts,
        south_accounts=views.stamping_accounts(
            "D-SUR", sort="last_emission_desc", status="active", limit=8
        ),
        favourites=views.clients("D-CENTRO", tag="favourite", sort="balance_desc", limit=10),
        chart=chart,
        invoices=views.invoices(MASTER) + views.invoices("D-CENTRO"),
        unbilled=unbilled,
        credit_codes=views.credit_codes("D-NORTE"),
        panel_sales=[sale for sale in panel if sale.sale_id.startswith("PCC:")],
        licensed=licensed,
        licences=[] if licensed is None else views.licences(licensed.client_id),
        closed_clients=views.clients(CLOSING),
        points_buyer=next((s.buyer_id for s in points if s.sale_id.startswith("PCC:")), None),
    )
