"""The demo's pictures: ``rich`` tables and a chart of what ``scenario`` and ``snapshot`` give.

A table per view, a bar per day for the last 14 days of one CTI, each abbreviation explained
where it first appears, and the ``ledger`` commands to try next. Off a terminal (a pipe, CI)
the same text comes without colours, with a table row per line (``output_console``). Nothing
here reads the ledger: every row comes in a ``Snapshot``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from adapters.cli.demo.network import (
    CLOSING,
    CONVERTED_BY,
    CONVERTED_DISTRIBUTOR,
    LICENSED_BY,
    MASTER,
    PURGE_AFTER_DAYS,
)
from adapters.cli.demo.snapshot import CHART_DAYS
from ledger.clock import MEXICO_CITY
from ledger.first_steps import SEED_SUBSCRIPTIONS

if TYPE_CHECKING:  # types only: the pictures get their rows, and never the ledger
    from pathlib import Path

    from adapters.cli.demo.scenario import ScenarioReport
    from adapters.cli.demo.snapshot import Chart, Snapshot
    from ledger.projections.billing import SaleRow
    from ledger.projections.directory import DistributorRow

CHART_BAR_WIDTH = 50
"""Characters of the chart's longest bar."""
NOTE_WIDTH = 100
"""Explanations wrap at this width (or the terminal's, if narrower)."""
UNBILLED_SHOWN = 10
"""Unbilled sales listed (all of them are counted and summed in the title)."""


def _text(value: Any) -> str:
    """A cell: ``-`` for nothing, thousands separators, local times to the minute."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.astimezone(MEXICO_CITY).strftime("%Y-%m-%d %H:%M")
    return str(value)


def _money(amount: str | Decimal) -> str:
    """``16240.00`` as ``16,240.00``."""
    return f"{Decimal(amount):,.2f}"


def _table(headers: Sequence[str], numeric: Sequence[str] = ()) -> Table:
    """A table with a rule under its header; the ``numeric`` columns right-aligned."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, justify="right" if header in numeric else "left", no_wrap=True)
    return table


def _section(console: Console, title: str, note: str | None = None) -> None:
    """A blank line, the title in bold and, below it, what the reader needs to read the table."""
    console.print()
    console.print(Text(title, style="bold"))
    if note is not None:
        console.print(Text(note, style="dim"), width=min(console.width, NOTE_WIDTH))


def _show(console: Console, table: Table) -> None:
    console.print(table if table.row_count else Text("(none)", style="dim"))


def print_built(
    console: Console,
    report: ScenarioReport,
    *,
    events: int,
    clients: int,
    days: int,
    seconds: float,
    url: str,
) -> None:
    """One line of what the demo recorded, and the rejections if there were any."""
    console.print(
        f"demo: {report.commands:,} commands, {events:,} events, "
        f"{report.stamping_accounts:,} stamping accounts, {clients:,} clients, "
        f"{days} days, in {seconds:.1f} s on {url}",
        soft_wrap=True,
    )
    if report.rejected:
        console.print(f"demo: {report.rejected} commands were rejected, e.g.:")
        for rejection in report.first_rejections:
            console.print(f"  {rejection}", soft_wrap=True)


def print_already_there(console: Console) -> None:
    """Why the views are shown and nothing is recorded."""
    console.print(
        f"demo: this database already holds the demo ({MASTER}); showing its views "
        "(use another --url for a new one)",
        soft_wrap=True,
    )


def print_introduction(console: Console) -> None:
    """What the network is and what a CTI is: the words every table below uses."""
    console.print(
        Text(
            f"{MASTER}, the master account, sells stamps (one is consumed per CFDI, the Mexican "
            "e-invoice) and points to its distributors, which resell them to sub-distributors "
            "and to their clients. A client invoices from a CTI (cuenta de timbrado): the "
            "client's stamping account, where its stamps are credited and consumed. Some clients "
            "have a second CTI; a few have an unlimited one, with no stamp balance to run out."
        ),
        width=min(console.width, NOTE_WIDTH),
    )


def _distributors(
    console: Console, rows: list[DistributorRow], title: str, note: str | None = None
) -> None:
    table = _table(
        ("distributor", "name", "status", "expires", "stamps", "points", "was client"),
        ("stamps", "points"),
    )
    for d in rows:
        table.add_row(*map(_text, (d.distributor_id, d.name, d.status, d.expires_on, d.stamps,
                                   d.points, d.converted_from)))  # fmt: skip
    _section(console, title, note)
    _show(console, table)


def print_subscriptions(console: Console, distributors: list[DistributorRow]) -> None:
    """The subscriptions the distributors contracted from the master account's catalogue."""
    prices = {product: price for product, _, price, _ in SEED_SUBSCRIPTIONS}
    table = _table(
        ("distributor", "product", "kind", "yearly price", "expires", "running"),
        ("yearly price",),
    )
    for d in distributors:
        for sub in d.subscriptions:
            price = prices.get(sub.product)
            table.add_row(d.distributor_id, sub.product, sub.kind,
                          "-" if price is None else _money(price), _text(sub.expires_on),
                          _text(sub.active))  # fmt: skip
    _section(
        console,
        f"Subscriptions from {MASTER}'s catalogue",
        f"The catalogue lists {len(SEED_SUBSCRIPTIONS)} yearly subscriptions, priced before "
        "IVA (the 16 % value-added tax). A distributor pays pro rata up to its own expiry, plus "
        "IVA. Multinivel lets it have sub-distributors; an MKL (a reseller's licence of one "
        "software product) lets it generate licences of that product for its clients.",
    )
    _show(console, table)


def print_stamping_accounts(console: Console, shown: Snapshot) -> None:
    """D-NORTE's CTIs with the most stamps (CPD and days left explained); D-SUR's latest."""
    table = _table(
        ("CTI", "NIC", "client", "kind", "active", "balance", "used", "CPD", "days left"),
        ("balance", "used", "CPD", "days left"),
    )
    for c in shown.north_accounts:
        table.add_row(*map(_text, (c.cti_id, c.nic, c.name[:34], c.kind, c.active, c.balance,
                                   c.used, c.cpd, c.days_remaining)))  # fmt: skip
    _section(
        console,
        "Stamping accounts of D-NORTE, most stamps first",
        "NIC: the client's number in its distributor's own records (número de identificación "
        "del cliente). CPD (consumo promedio diario): the daily consumption average, the stamps "
        "consumed in the last 30 complete days / 30 (fewer days, at least 7, for a newer "
        "account). days left (días restantes): how long the balance lasts at that pace, "
        "balance / CPD rounded down; '-' for an unlimited account or one without a CPD yet.",
    )
    _show(console, table)

    table = _table(
        ("CTI", "client", "balance", "last purchase", "last emission", "CPD", "days left"),
        ("balance", "CPD", "days left"),
    )
    for c in shown.south_accounts:
        table.add_row(*map(_text, (c.cti_id, c.name[:34], c.balance, c.last_purchase_at,
                                   c.last_emission_at, c.cpd, c.days_remaining)))  # fmt: skip
    _section(console, "Stamping accounts of D-SUR, latest emission first")
    _show(console, table)


def print_consumption_chart(console: Console, chart: Chart) -> None:
    """A bar per day for the last ``CHART_DAYS`` complete days of one CTI."""
    peak = max((count for _, count in chart.days), default=0)
    block = "#" if console.options.ascii_only else "\u2588"
    table = _table(("day", "", "stamps", ""), ("stamps",))
    for day, count in chart.days:
        width = round(count / peak * CHART_BAR_WIDTH) if peak else 0
        table.add_row(
            day.isoformat(), f"{day:%a}", _text(count), Text(block * width, style="green")
        )
    cpd = "-" if chart.cpd is None else f"{chart.cpd:.2f}"
    left = "-" if chart.days_remaining is None else str(chart.days_remaining)
    _section(
        console,
        f"Consumption of {chart.cti_id}, the last {CHART_DAYS} days up to yesterday "
        f"(CPD {cpd}, days left {left})",
        "Busy weekdays, quiet weekends, and more at the end of a month, when everyone invoices.",
    )
    _show(console, table)


def _sales_table(sales: Sequence[SaleRow], *, references: bool) -> Table:
    """Sales (their id cut to 14 characters), with their reference if ``references``."""
    headers = ("sale", "date", "buyer", "unit", "quantity", "amount")
    table = _table((*headers, "reference") if references else headers, ("quantity", "amount"))
    for sale in sales:
        cells = [sale.sale_id[:14], _text(sale.at), sale.buyer_id, sale.unit,
                 _text(sale.quantity), _money(sale.amount)]  # fmt: skip
        if references:
            cells.append(sale.reference)
        table.add_row(*cells)
    return table


def print_billing(console: Console, shown: Snapshot) -> None:
    """Invoices registered, and the sales of the platform still waiting for one."""
    table = _table(("invoice", "seller", "date", "sales", "amount"), ("sales", "amount"))
    for invoice in shown.invoices:
        total = sum((Decimal(s.amount) for s in invoice.sales), Decimal(0))
        table.add_row(invoice.invoice_ref, invoice.seller_id, _text(invoice.at),
                      _text(len(invoice.sales)), _money(total))  # fmt: skip
    _section(
        console,
        "Invoices registered",
        "A sale is billable until its seller registers an invoice for it (RegisterInvoice). "
        f"{MASTER} and D-CENTRO invoiced what they had sold to one buyer in the first weeks "
        "(an invoice has one buyer); the rest waits.",
    )
    _show(console, table)
    unbilled = shown.unbilled
    total = sum((Decimal(s.amount) for s in unbilled), Decimal(0))
    shown_count = min(len(unbilled), UNBILLED_SHOWN)
    _section(
        console,
        f"Sales of {MASTER} not invoiced yet: {len(unbilled):,}, {_money(total)} "
        f"(the oldest {shown_count} shown)",
    )
    _show(console, _sales_table(unbilled[:UNBILLED_SHOWN], references=True))


def print_codes_and_panel(console: Console, shown: Snapshot) -> None:
    """D-NORTE's credit codes, and what its clients bought through their panel."""
    table = _table(
        ("code id", "unit", "quantity", "amount", "state", "redeemed by", "expires"),
        ("quantity", "amount"),
    )
    for code in shown.credit_codes:
        table.add_row(code.code_id, code.unit, _text(code.quantity), _money(code.amount),
                      code.state, _text(code.redeemed_by), _text(code.expires_on))  # fmt: skip
    _section(
        console,
        "Credit codes of D-NORTE",
        "A code and its NIP (a 6-digit PIN) are shown once, when issued; five wrong NIPs lock "
        "a code for good and its credits go back to the distributor.",
    )
    _show(console, table)
    _section(console, "Panel purchases from D-NORTE (clients buying through their own panel)")
    _show(console, _sales_table(shown.panel_sales, references=False))


def print_licences_and_purge(console: Console, shown: Snapshot) -> None:
    """A client's licences under its distributor's MKLs; the purged distributor's clients."""
    client = shown.licensed
    if client is not None:
        table = _table(("licence", "product", "expires", "points", "paid by"), ("points",))
        for lic in shown.licences:
            table.add_row(lic.licence_id, lic.product, _text(lic.expires_on), _text(lic.points),
                          _text(lic.paid_by or None))  # fmt: skip
        _section(
            console,
            f"Licences of {client.client_id} ({client.name}), under {LICENSED_BY}'s MKLs",
            "A licence lasts a year. Its price in points comes from the client's wallet when it "
            f"covers it, else from {LICENSED_BY}'s points; NomiCloud's costs nothing.",
        )
        _show(console, table)

    table = _table(("client", "NIC", "name", "RFC", "e-mail"))
    for c in shown.closed_clients:
        table.add_row(*map(_text, (c.client_id, c.nic, c.name or None, c.rfc or None,
                                   c.email or None)))  # fmt: skip
    _section(
        console,
        f"Clients of {CLOSING}, after its purge",
        f"{CLOSING} was cancelled more than {PURGE_AFTER_DAYS} days ago, then purged "
        "(Ledger.purge_due, `ledger purge-due`): its and its clients' personal data left the "
        "views; ids and NIC stay, and so do the events, so every balance still adds up.",
    )
    _show(console, table)


def print_views(console: Console, shown: Snapshot) -> None:
    """The main views of the demo network, in the order a newcomer reads them."""
    print_introduction(console)
    _distributors(console, shown.distributors, f"Distributors of {MASTER}")
    _distributors(
        console,
        shown.sub_distributors,
        f"Sub-distributors of {CONVERTED_BY}",
        f"{CONVERTED_DISTRIBUTOR} was a client of {CONVERTED_BY}: ConvertClientToDistributor "
        "opened it, unvalidated, with the client's profile; the client keeps its CTIs and "
        "history.",
    )
    print_subscriptions(console, shown.distributors)
    print_stamping_accounts(console, shown)

    table = _table(
        ("client", "NIC", "name", "RFC", "colour", "stamps", "points"), ("stamps", "points")
    )
    for f in shown.favourites:
        table.add_row(*map(_text, (f.client_id, f.nic, f.name[:34], f.rfc, f.colour, f.stamps,
                                   f.points)))  # fmt: skip
    _section(console, "Favourite clients of D-CENTRO")
    _show(console, table)

    if shown.chart is not None:
        print_consumption_chart(console, shown.chart)
    print_billing(console, shown)
    print_codes_and_panel(console, shown)
    print_licences_and_purge(console, shown)


def print_next_commands(console: Console, commands: list[str], folder: Path) -> None:
    """The commands to try next, with what each shows."""
    what = {
        "balance": "a CTI's stamps at noon on the chart's first day, replayed from its events",
        "history": "where a client's points came from, with the running balance",
        "verify": "replays every event and checks the books: hash chain, zero sums, views",
    }
    _section(console, f"Try next (in {folder}):")
    for command in commands:
        subcommand = next(word for word in command.split() if word in what)
        console.print(Text(f"  # {what[subcommand]}", style="dim"), soft_wrap=True)
        console.print(Text(f"  {command}", style="cyan"), soft_wrap=True)
