"""The views of DESIGN §6 on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock, local_date
from ledger.errors import Rejected
from ledger.projections.base import normalise
from ledger.projections.directory import SORTS, StampingAccountRow
from tests.support import (
    DISTRIBUTOR,
    buy,
    client_profile,
    command,
    consume,
    distributor_profile,
    grant,
    network_ledger,
    ok,
    on_cti,
    open_cti,
    package,
    register_client,
    register_distributor,
    transfer_points,
    transfer_stamps,
)

HOUR = timedelta(hours=1)


def _client(client_id: str, name: str, nic: str, **profile: Any) -> dict[str, Any]:
    email = f"{client_id.lower()}@example.com"
    return {**register_client(client_id, name=name, email=email, **profile), "nic": nic}


def _stamps(transfer_id: str, to_id: str, quantity: int) -> dict[str, Any]:
    return transfer_stamps(quantity, transfer_id, to_id=to_id, amount=f"{quantity}.00")


def _tag(client_id: str, **tags: Any) -> dict[str, Any]:
    return command("TagClient", DISTRIBUTOR, client_id=client_id, **tags)


@pytest.fixture
def lg(store_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A network: D1 with clients C1..C4, stamps, points, emissions, tags and a blocked CTI."""
    zeta = {
        "trade_name": "Papelería Zeta",
        "phone": "(55) 1234-5678",
        "financial_contact": {"name": "Óscar Ruiz", "email": "pagos@zeta.mx"},
    }
    with network_ledger(clock, url=store_url, points=3000) as ledger:
        for one_an_hour in (
            _client("C2", "ana Benítez", "N-200"),
            _client("C3", "Zoe Álvarez", "N-100", **zeta),
            _client("C4", "óscar Castro", "N-300"),
            _stamps("T2", "C2-cti", 300),
            _stamps("T3", "C3-cti", 50),
            _stamps("T1", "C1-cti", 120),
        ):
            clock.advance(HOUR)
            ok(ledger, one_an_hour)
        clock.advance(HOUR)
        ok(
            ledger,
            transfer_points(500, "P4", to_id="C4"),
            transfer_points(10, "P3", to_id="C3"),
            consume("C3-cti", stamped_at="2026-01-05T20:00:00+00:00"),
            consume("C2-cti", stamped_at="2026-01-05T19:00:00+00:00"),
            on_cti("BlockStampingAccount", "C4-cti"),
            _tag("C2", favourite=True),
            _tag("C4", dropped=True),
            _tag("C3", colour="verde"),
        )
        yield ledger


# Balances ------------------------------------------------------------------------------------


def test_view_balances_equal_the_write_side(lg: Ledger) -> None:
    """Every aggregate's view balance is the balance the write side reports."""
    for holder, unit in (
        ("M", "stamps"),
        ("D1", "stamps"),
        ("D1", "points"),
        ("C1-cti", "stamps"),
        ("C2-cti", "stamps"),
        ("C3", "points"),
    ):
        (row,) = [r for r in lg.views.balances(holder) if r.unit == unit]
        assert row.balance == lg.balance(holder, unit)


def test_view_balances_sum_to_zero_per_unit(lg: Ledger) -> None:
    """With the issuance source and the sinks, every unit's balances sum to zero."""
    rows = lg.views.dump()["view_balances"]
    for unit in ("stamps", "points"):
        assert sum(row[4] for row in rows if row[1] == unit) == 0
    assert [r.balance for r in lg.views.balances("sink:consumed")] == [2]


def test_a_cti_row_counts_credits_uses_and_times(lg: Ledger) -> None:
    """C3's CTI: 50 credited, 1 used, 49 left, purchase and emission times kept."""
    (row,) = lg.views.stamping_accounts("D1", search="N-100")
    assert (row.credited, row.used, row.balance, row.points) == (50, 1, 49, 10)
    assert row.last_purchase_at == datetime(2026, 1, 5, 23, 0, tzinfo=UTC)
    assert row.last_emission_at == datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
    assert row.created_at == datetime(2026, 1, 5, 20, 0, tzinfo=UTC)


def test_stamps_of_an_expired_lot_stop_counting_on_its_date(lg: Ledger, clock: ManualClock) -> None:
    """A package's stamps leave the balance after its vigencia, as on the write side."""
    ok(
        lg,
        package("PK10", 10, "50.00", seller_id=DISTRIBUTOR, audience="client", validity_days=3),
        grant("G1", "PK10", cti_id="C1-cti"),
        consume("C1-cti"),
    )
    (before,) = lg.views.balances("C1-cti")
    assert before.balance == 129 == lg.balance("C1-cti")
    clock.advance(timedelta(days=4))
    (after,) = lg.views.balances("C1-cti")
    assert after.balance == 120 == lg.balance("C1-cti")


def test_an_unlimited_cti_counts_its_stamps_as_used(lg: Ledger) -> None:
    """Unlimited accounts hold no balance; their consumptions still count as used."""
    ok(
        lg,
        transfer_points(1500, "P1"),
        open_cti("C1-unl", "unlimited", password="secreto-largo"),
        consume("C1-unl"),
        consume("C1-unl"),
    )
    (row,) = lg.views.stamping_accounts("D1", search="c1-unl")
    assert (row.kind, row.credited, row.used, row.balance) == ("unlimited", 0, 2, 0)


# Consumption ---------------------------------------------------------------------------------


def test_a_consumption_counts_on_the_local_day_of_its_stamping(lg: Ledger) -> None:
    """05:30 UTC on 6 January is 23:30 on 5 January in Mexico City."""
    ok(lg, consume("C1-cti", stamped_at="2026-01-06T05:30:00+00:00"))
    usage = lg.views.consumption("C1-cti")
    assert [(d.local_date, d.count) for d in usage.daily] == [(date(2026, 1, 5), 1)]


def test_cpd_and_days_remaining_follow_the_ledger_clock(lg: Ledger, clock: ManualClock) -> None:
    """Two stamps a day for 10 days: CPD 20 / 10 = 2; DR = floor(99 / 2) = 49."""
    for _ in range(10):
        clock.advance(timedelta(days=1))
        ok(lg, consume("C1-cti"), consume("C1-cti"))
    clock.advance(timedelta(days=1))
    ok(lg, consume("C1-cti"))  # today's stamp is not in the average
    usage = lg.views.consumption("C1-cti")
    assert usage.cpd == 2.0
    assert usage.days_remaining == 49
    assert sum(d.count for d in usage.daily) == 21
    (c1,) = lg.views.stamping_accounts("D1", search="juan")
    assert (c1.cpd, c1.days_remaining) == (2.0, 49)


def test_consumption_of_an_unknown_cti_is_unknown_account(lg: Ledger) -> None:
    """A CTI the views do not hold is reported, not invented."""
    with pytest.raises(Rejected) as e:
        lg.views.consumption("nope")
    assert e.value.code == "unknown_account"


# Billing -------------------------------------------------------------------------------------


def test_unbilled_sales_filter_by_local_month_and_unit(lg: Ledger, clock: ManualClock) -> None:
    """January holds two sales of M (stamps and points), February the new one."""
    clock.set(datetime(2026, 2, 1, 5, 30, tzinfo=UTC))  # 23:30 on 31 January in Mexico City
    ok(lg, buy())
    clock.set(datetime(2026, 2, 1, 6, 30, tzinfo=UTC))  # 00:30 on 1 February
    ok(lg, buy())
    january = lg.views.unbilled_sales("M", year=2026, month=1)
    assert sorted((s.unit, s.quantity, s.amount) for s in january) == [
        ("points", 3_000, "2850.00"),
        ("stamps", 1_000, "500.00"),
        ("stamps", 10_000, "5000.00"),
    ]
    assert len(lg.views.unbilled_sales("M", year=2026, month=2)) == 1
    assert [s.unit for s in lg.views.unbilled_sales("M", unit="points")] == ["points"]
    stamps = lg.views.unbilled_sales("D1", unit="stamps")
    assert {(s.buyer_id, s.to_id) for s in stamps} == {
        ("C1", "C1-cti"),
        ("C2", "C2-cti"),
        ("C3", "C3-cti"),
    }


def test_an_invoiced_sale_leaves_unbilled_and_lists_under_its_invoice(lg: Ledger) -> None:
    """RegisterInvoice moves a sale from unbilled to the invoice."""
    first = lg.views.unbilled_sales("M")[0]
    ok(
        lg,
        command("RegisterInvoice", "M", seller_id="M", invoice_ref="F-1", sale_ids=[first.sale_id]),
    )
    assert first.sale_id not in {s.sale_id for s in lg.views.unbilled_sales("M")}
    (invoice,) = lg.views.invoices("M")
    assert invoice.invoice_ref == "F-1"
    assert [(s.sale_id, s.invoice_ref) for s in invoice.sales] == [(first.sale_id, "F-1")]


def test_credit_codes_are_empty_until_the_core_issues_them(lg: Ledger) -> None:
    """The write side has no credit codes yet."""
    assert lg.views.credit_codes("D1") == []


# Directory -----------------------------------------------------------------------------------


def _ids(rows: list[Any]) -> list[str]:
    return [getattr(r, "cti_id", None) or r.client_id for r in rows]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("n-100", ["C3-cti"]),
        ("ALVAREZ", ["C3-cti"]),
        ("papeleria zeta", ["C3-cti"]),
        ("5512345678", ["C3-cti"]),
        ("55 1234", ["C3-cti"]),
        ("oscar", ["C3-cti", "C4-cti"]),
        ("pagos@zeta", ["C3-cti"]),
        ("GODE561231", ["C1-cti", "C2-cti", "C3-cti", "C4-cti"]),
        ("c2@example", ["C2-cti"]),
        ("oscar castro", ["C4-cti"]),
        ("nadie", []),
    ],
)
def test_stamping_accounts_search(lg: Ledger, search: str, expected: list[str]) -> None:
    """Search is case- and accent-insensitive over NIC, names, RFC, e-mails, phones, contacts."""
    assert sorted(_ids(lg.views.stamping_accounts("D1", search=search))) == expected


def test_stamping_accounts_filter_by_tag_colour_and_status(lg: Ledger) -> None:
    """favourite, dropped, colour and blocked select their rows."""
    views = lg.views
    assert _ids(views.stamping_accounts("D1", tag="favourite")) == ["C2-cti"]
    assert _ids(views.stamping_accounts("D1", tag="dropped")) == ["C4-cti"]
    assert _ids(views.stamping_accounts("D1", colour="verde")) == ["C3-cti"]
    assert _ids(views.stamping_accounts("D1", status="blocked")) == ["C4-cti"]
    assert len(views.stamping_accounts("D1", status="active")) == 3


def _expected_order(rows: list[StampingAccountRow], sort: str) -> list[str]:
    """The order DESIGN §6 asks for, computed in Python from the rows' own fields."""
    if sort == "name":
        return [r.cti_id for r in sorted(rows, key=lambda r: (normalise(r.name), r.cti_id))]
    if sort == "nic":
        return [r.cti_id for r in sorted(rows, key=lambda r: (r.nic.lower(), r.cti_id))]
    field, _, direction = sort.rpartition("_")
    attribute = {
        "balance": "balance",
        "points": "points",
        "last_purchase": "last_purchase_at",
        "created": "created_at",
        "last_emission": "last_emission_at",
    }[field]
    present = [r for r in rows if getattr(r, attribute) is not None]
    missing = [r for r in rows if getattr(r, attribute) is None]
    ordered = sorted(present, key=lambda r: r.cti_id)
    ordered = sorted(ordered, key=lambda r: getattr(r, attribute), reverse=direction == "desc")
    return [r.cti_id for r in ordered] + sorted(r.cti_id for r in missing)


@pytest.mark.parametrize("sort", SORTS)
def test_stamping_accounts_sort_orders(lg: Ledger, sort: str) -> None:
    """Each of the twelve sort keys orders by its field, NULLs last, ties by id."""
    rows = lg.views.stamping_accounts("D1", sort=sort)
    assert len(rows) == 4
    assert _ids(rows) == _expected_order(rows, sort)


def test_stamping_account_sort_by_name_ignores_case_and_accents(lg: Ledger) -> None:
    """'ana', 'Juan', 'óscar', 'Zoe' in that order."""
    assert _ids(lg.views.stamping_accounts("D1", sort="name")) == [
        "C2-cti",
        "C1-cti",
        "C4-cti",
        "C3-cti",
    ]


def test_pages_split_the_sorted_rows(lg: Ledger) -> None:
    """limit and offset walk the same order."""
    everything = _ids(lg.views.stamping_accounts("D1", sort="balance_desc"))
    pages = [
        _ids(lg.views.stamping_accounts("D1", sort="balance_desc", limit=3, offset=offset))
        for offset in (0, 3)
    ]
    assert pages[0] + pages[1] == everything == ["C2-cti", "C1-cti", "C3-cti", "C4-cti"]


@pytest.mark.parametrize(
    "call",
    [
        lambda v: v.stamping_accounts("D1", limit=501),
        lambda v: v.stamping_accounts("D1", sort="balance"),
        lambda v: v.stamping_accounts("D1", tag="vip"),
        lambda v: v.stamping_accounts("D1", status="lost"),
        lambda v: v.clients("D1", sort="size"),
        lambda v: v.distributors("M", status="sleepy"),
        lambda v: v.unbilled_sales("M", month=2),
        lambda v: v.unbilled_sales("M", year=2026, month=13),
    ],
)
def test_bad_query_arguments_are_invalid_command(lg: Ledger, call: Callable[[Any], Any]) -> None:
    """Unknown sorts, tags, statuses, months or pages beyond the bound are rejected."""
    with pytest.raises(Rejected) as e:
        call(lg.views)
    assert e.value.code == "invalid_command"


def test_clients_rows_sum_their_ctis_and_wallet(lg: Ledger) -> None:
    """A client's stamps are its CTIs' balances; points its wallet."""
    rows = {r.client_id: r for r in lg.views.clients("D1")}
    assert {c: (r.stamps, r.points) for c, r in rows.items()} == {
        "C1": (120, 0),
        "C2": (299, 0),
        "C3": (49, 10),
        "C4": (0, 500),
    }
    assert (rows["C3"].trade_name, rows["C3"].colour, rows["C2"].favourite) == (
        "Papelería Zeta",
        "verde",
        True,
    )


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["C2", "C1", "C4", "C3"]),
        ("nic", ["C1", "C3", "C2", "C4"]),
        ("balance_desc", ["C2", "C1", "C3", "C4"]),
        ("points_desc", ["C4", "C3", "C1", "C2"]),
        ("created_asc", ["C1", "C2", "C3", "C4"]),
        ("last_purchase_desc", ["C1", "C3", "C2", "C4"]),
        ("last_emission_asc", ["C2", "C3", "C1", "C4"]),
    ],
)
def test_clients_sort_orders(lg: Ledger, sort: str, expected: list[str]) -> None:
    """Clients sort by their name, NIC, sums and their CTIs' latest times."""
    assert _ids(lg.views.clients("D1", sort=sort)) == expected


def test_clients_search_and_filters(lg: Ledger) -> None:
    """Search, tag and colour on clients."""
    views = lg.views
    assert _ids(views.clients("D1", search="benitez")) == ["C2"]
    assert _ids(views.clients("D1", tag="dropped")) == ["C4"]
    assert _ids(views.clients("D1", colour="verde")) == ["C3"]


def test_a_profile_change_and_a_cleared_colour_reach_the_views(lg: Ledger) -> None:
    """UpdateClientProfile re-indexes search; colour "" clears the tag."""
    profile = client_profile(name="Ana Beltrán", email="ana@nuevo.mx")
    ok(
        lg,
        command("UpdateClientProfile", "D1", client_id="C2", profile=profile),
        _tag("C3", colour=""),
    )
    assert _ids(lg.views.clients("D1", search="beltran")) == ["C2"]
    assert lg.views.clients("D1", search="benitez") == []
    assert lg.views.clients("D1", colour="verde") == []


def test_distributors_are_listed_by_status_with_the_clock_applied(
    lg: Ledger, clock: ManualClock
) -> None:
    """Unvalidated, unactivated, active and expired (the clock passed expires_on) children."""
    ok(
        lg,
        *[
            register_distributor(
                f"D{n}", profile=distributor_profile(f"Distribuidora {n}", f"d{n}@x.mx")
            )
            for n in (2, 3, 4)
        ],
        command("ValidateDistributor", "M", distributor_id="D3"),
        command("ValidateDistributor", "M", distributor_id="D4"),
        command("ActivateDistributor", "M", distributor_id="D4", expires_on="2026-01-10"),
    )
    clock.set(datetime(2026, 1, 12, 18, 0, tzinfo=UTC))
    rows = lg.views.distributors("M")
    assert [(r.distributor_id, r.status) for r in rows] == [
        ("D2", "unvalidated"),
        ("D3", "unactivated"),
        ("D1", "active"),
        ("D4", "expired"),
    ]
    assert [r.distributor_id for r in lg.views.distributors("M", status="expired")] == ["D4"]
    d1 = rows[2]
    assert (d1.stamps, d1.points, d1.expires_on) == (
        lg.balance("D1"),
        lg.balance("D1", "points"),
        date(2027, 1, 31),
    )


def test_the_portal_lists_on_both_databases(lg: Ledger, clock: ManualClock) -> None:
    """Catalogue (a replacement upserts its row, services round-trip), auto top-up rules of the
    distributor's CTIs and expiring lots."""
    ok(
        lg,
        *[
            {"type": "DefinePackage", "actor": "D1", "seller_id": "D1", "package_id": "G9",
             "unit": "stamps", "quantity": 9, "price": "9.00", "audience": "client",
             "validity_days": 5, "services": ["soporte", "nómina"]},
            {"type": "DefinePackage", "actor": "D1", "seller_id": "D1", "package_id": "G9",
             "unit": "stamps", "quantity": 10, "price": "9.50", "audience": "client",
             "validity_days": 5, "services": ["soporte", "nómina"], "replaces": True},
            {"type": "AssignPackage", "actor": "D1", "grant_id": "GR9", "seller_id": "D1",
             "cti_id": "C1-cti", "package_id": "G9"},
            {"type": "ConfigureAutoTopUp", "actor": "D1", "cti_id": "C1-cti", "minimum": 3,
             "credit": 30, "amount": "15.00"},
        ],
    )  # fmt: skip
    (package,) = [p for p in lg.views.catalogue("D1") if p.package_id == "G9"]
    assert (package.quantity, package.price, package.services) == (
        10,
        "9.50",
        ("soporte", "nómina"),
    )
    (rule,) = lg.views.auto_top_up_rules("D1")
    assert (rule.cti_id, rule.minimum, rule.credit, rule.amount) == ("C1-cti", 3, 30, "15.00")
    (lot,) = lg.views.expiring_lots("C1-cti")
    assert (lot.lot_id, lot.quantity) == ("GR9", 10)
    assert lot.expires_on == local_date(clock()) + timedelta(days=5)
