"""``ledger demo``'s output: its chart, its billing and the commands it suggests (issue 11)."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from adapters.cli import demo
from ledger.api import Ledger
from ledger.clock import local_date

CHART_ROW = re.compile(r"^(\d{4}-\d{2}-\d{2}) +(Mon|Tue|Wed|Thu|Fri|Sat|Sun) +([\d,]+)\b")


@dataclass(frozen=True)
class Demo:
    """A small demo built once for this module: its database and what it printed."""

    url: str
    out: str
    folder: Path


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """20 clients, 10 days, printed to a pipe-like stream (no terminal)."""
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder / 'demo.db'}"
    out = io.StringIO()
    assert demo.run(url, clients=20, days=10, seed=7, out=out) == 0
    return Demo(url=url, out=out.getvalue(), folder=Path.cwd())


def _section(out: str, title: str) -> list[str]:
    """The lines after the one starting with ``title``, up to the next blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1 : end]


def test_the_chart_shows_the_last_14_complete_days(small_demo: Demo) -> None:
    """Fourteen rows, one per day up to yesterday, each with the view's count (0 if none)."""
    rows = [m for line in small_demo.out.splitlines() if (m := CHART_ROW.match(line))]
    days = [date.fromisoformat(m[1]) for m in rows]
    with Ledger.open(small_demo.url, projections="off") as lg:
        today = local_date(lg.engine.clock())
        cti_id = lg.views.stamping_accounts("D-NORTE", sort="balance_desc", limit=1)[0].cti_id
        counts = {d.local_date: d.count for d in lg.views.consumption(cti_id, days=15).daily}
    assert days == [today - timedelta(days=n) for n in range(14, 0, -1)]
    assert [m[2] for m in rows] == [f"{day:%a}" for day in days]
    assert [int(m[3].replace(",", "")) for m in rows] == [counts.get(day, 0) for day in days]
    assert sum(counts.get(day, 0) for day in days) > 0


def test_some_sales_are_invoiced_and_the_rest_listed_as_unbilled(small_demo: Demo) -> None:
    """The platform has an invoice and unbilled sales; the table lists the oldest of these."""
    with Ledger.open(small_demo.url, projections="off") as lg:
        invoices = lg.views.invoices(demo.MASTER)
        unbilled = lg.views.unbilled_sales(demo.MASTER, limit=500)
    assert len(invoices) == 1
    assert len(invoices[0].sales) > 0
    assert len(unbilled) > 0
    title = f"Sales of {demo.MASTER} not invoiced yet: {len(unbilled)}, "
    rows = _section(small_demo.out, title)[2:]  # below the header and its rule
    assert [row.split()[0] for row in rows] == [s.sale_id[:14] for s in unbilled[:10]]
    invoice_rows = _section(small_demo.out, "Invoices registered")
    assert any(row.startswith(f"FAC-{demo.MASTER}-0001") for row in invoice_rows)


def test_the_abbreviations_are_explained_where_they_first_appear(small_demo: Demo) -> None:
    """CTI, NIC, CPD and days left are explained before the first table that uses them."""
    out = small_demo.out
    first_table = out.index("Distributors of")
    assert out.index("CTI (cuenta de timbrado)") < first_table
    accounts = out.index("Stamping accounts of D-NORTE")
    for words in ("NIC: ", "CPD (consumo promedio diario)", "days left (días restantes)"):
        assert accounts < out.index(words) < out.index("CTI ", accounts)
    assert out.index("NIC") == out.index("NIC: ")
    assert out.index("CPD") == out.index("CPD (consumo promedio diario)")


def test_the_three_suggested_commands_work_as_printed(small_demo: Demo) -> None:
    """Each command under "Try next" runs from the folder it names, on the demo's database."""
    lines = _section(small_demo.out, "Try next (in ")
    assert f"Try next (in {small_demo.folder}):" in small_demo.out
    commands = [line.strip() for line in lines if not line.strip().startswith("#")]
    assert len(commands) == 3
    outputs = []
    for command in commands:
        assert small_demo.url in command
        done = subprocess.run(
            shlex.split(command),
            cwd=small_demo.folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    balance, history, verify = outputs
    assert re.fullmatch(r"[\d,]+ stamps\n", balance)
    assert "Client.PointsCredited" in history
    assert verify.startswith("verify: OK")


def test_the_tables_keep_one_line_per_row_off_a_terminal(small_demo: Demo) -> None:
    """Piped, the output has no colour codes and no table row wrapped onto a second line."""
    out = small_demo.out
    assert "\x1b[" not in out
    rows = _section(out, "Stamping accounts of D-SUR")[2:]
    assert rows
    assert all(re.match(r"CL-\d{5}-(cti2?|ilim) ", row) for row in rows)


def test_distributors_subscribe_from_the_seed_catalogue(small_demo: Demo) -> None:
    """Multinivel and MKLs at the seed's prices, running until the distributors' expiry."""
    with Ledger.open(small_demo.url, projections="off") as lg:
        subscriptions = {
            (d.distributor_id, s.product, s.active)
            for d in lg.views.distributors(demo.MASTER)
            for s in d.subscriptions
        }
    assert subscriptions == {(d, p, True) for d, p in demo.SUBSCRIPTIONS}
    rows = _section(small_demo.out, f"Subscriptions from {demo.MASTER}'s catalogue")
    assert any(row.split()[:2] == ["D-CENTRO", "Multinivel"] and "1,999.00" in row for row in rows)
    assert any("MKL Dóminus" in row and "1,850.00" in row for row in rows)


def test_a_licence_is_paid_in_points_under_the_mkl(small_demo: Demo) -> None:
    """The Dóminus licence costs 250 points, paid by D-NORTE; NomiCloud's is free."""
    with Ledger.open(small_demo.url, projections="off") as lg:
        client = lg.views.clients(demo.LICENSED_BY, sort="nic", limit=1)[0]
        licences = {
            (lic.product, lic.points, lic.paid_by or None)
            for lic in lg.views.licences(client.client_id)
        }
    assert licences == {("Dóminus", 250, demo.LICENSED_BY), ("NomiCloud", 0, None)}
    assert f"Licences of {client.client_id} " in small_demo.out


def test_a_client_becomes_a_sub_distributor(small_demo: Demo) -> None:
    """D-CENTRO's new sub-distributor names the client it was; the table shows it."""
    with Ledger.open(small_demo.url, projections="off") as lg:
        rows = {d.distributor_id: d for d in lg.views.distributors(demo.CONVERTED_BY)}
        converted = rows[demo.CONVERTED_DISTRIBUTOR]
        assert converted.status == "unvalidated"
        assert converted.converted_from is not None
        client = lg.views.clients(demo.CONVERTED_BY, search=converted.converted_from)
        assert [c.client_id for c in client] == [converted.converted_from]
    table = _section(small_demo.out, f"Sub-distributors of {demo.CONVERTED_BY}")
    assert any(
        row.startswith(demo.CONVERTED_DISTRIBUTOR) and row.split()[-1] == converted.converted_from
        for row in table
    )


def test_the_cancelled_distributor_is_purged(small_demo: Demo) -> None:
    """D-BAJA is purged: its client keeps its id and NIC, and loses its name and RFC."""
    with Ledger.open(small_demo.url, projections="off") as lg:
        statuses = {d.distributor_id: d.status for d in lg.views.distributors(demo.MASTER)}
        (client,) = lg.views.clients(demo.CLOSING)
        assert lg.verify().ok
    assert statuses[demo.CLOSING] == "purged"
    assert (client.client_id, client.nic, client.name, client.rfc) == (
        demo.CLOSING_CLIENT,
        "BAJ00001",
        "",
        "",
    )
    rows = _section(small_demo.out, f"Clients of {demo.CLOSING}, after its purge")
    assert rows[-1].split() == [demo.CLOSING_CLIENT, "BAJ00001", "-", "-", "-"]
