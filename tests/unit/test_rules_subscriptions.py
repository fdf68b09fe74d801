"""The subscription catalogue, contracts and renewals (DESIGN §4 "Catalogue and network")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ledger.aggregates.distributor import Distributor
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    DISTRIBUTOR,
    MASTER,
    command,
    contract,
    network_fixture,
    register_distributor,
    rejection,
)

# The standard network (D1 active until 2027-01-31) with the seed's catalogue.
lg = network_fixture(catalogue=True)


def define(
    product: str, kind: str, price: str, actor: str = MASTER, **extra: Any
) -> dict[str, Any]:
    """A DefineSubscriptionProduct of the master account."""
    fields = {"seller_id": extra.pop("seller_id", MASTER), "product": product, "kind": kind}
    return command("DefineSubscriptionProduct", actor, **fields, annual_price=price, **extra)


def distributor(lg: Ledger, distributor_id: str = DISTRIBUTOR) -> Distributor:
    """The distributor as recorded now."""
    found = lg.engine.current(distributor_id)
    assert isinstance(found, Distributor)
    return found


def renew(expires_on: str, distributor_id: str = DISTRIBUTOR) -> dict[str, Any]:
    """The master renews ``distributor_id``."""
    return command("RenewDistributor", MASTER, distributor_id=distributor_id, expires_on=expires_on)


# The catalogue --------------------------------------------------------------------------------


def test_the_seed_catalogue_prices_mkl_dominus_at_1850(lg: Ledger) -> None:
    """The catalogue keeps the pre-IVA yearly price, by product name."""
    master = lg.engine.current(MASTER)
    product = master.subscription_products["mkl dominus"]  # type: ignore[union-attr]
    assert (product.product, product.kind, product.annual_price_centavos) == (
        "MKL Dóminus",
        "mkl",
        185_000,
    )


def test_a_distributor_cannot_define_subscription_products(lg: Ledger) -> None:
    """Only a master account has a subscription catalogue: not_authorised."""
    rejected = rejection(
        lg, define("MKL Propio", "mkl", "100.00", actor=DISTRIBUTOR, seller_id=DISTRIBUTOR)
    )
    assert rejected.code == "not_authorised"


def test_another_actor_cannot_define_the_masters_products(lg: Ledger) -> None:
    """A distributor acting on the master's catalogue is not_authorised."""
    assert rejection(lg, define("MKL Otro", "mkl", "1.00", actor=DISTRIBUTOR)).code == (
        "not_authorised"
    )


@pytest.mark.parametrize(
    ("product", "kind"),
    [("Multinivel Plus", "multinivel"), ("Multinivel", "mkl"), ("Dóminus", "mkl"), ("MKL", "mkl")],
)
def test_a_product_name_must_say_its_kind(lg: Ledger, product: str, kind: str) -> None:
    """Multinivel is "Multinivel"; an MKL is "MKL <software>": invalid_command otherwise."""
    rejected = rejection(lg, define(product, kind, "100.00"))
    assert (rejected.code, rejected.details["field"]) == ("invalid_command", "product")


def test_redefining_a_product_reprices_it(lg: Ledger) -> None:
    """A product defined again takes the new price for the next contracts."""
    lg.execute(define("MKL Dóminus", "mkl", "2000.00"))
    outcome = lg.execute(contract("MKL Dóminus"))
    assert outcome.details["amount"] == "2320.00"  # 2,000.00 x 12/12 + 16 %


# Contracting ----------------------------------------------------------------------------------


def test_only_catalogue_products_can_be_contracted(lg: Ledger) -> None:
    """A product the master does not list is unknown_product."""
    rejected = rejection(lg, contract("MKL Inventado"))
    assert (rejected.code, rejected.details["product"]) == ("unknown_product", "MKL Inventado")


def test_a_price_in_the_command_is_refused(lg: Ledger) -> None:
    """The price comes from the catalogue: an ``annual_price`` field is invalid_command."""
    assert rejection(lg, {**contract("Multinivel"), "annual_price": "1.00"}).code == (
        "invalid_command"
    )


def test_a_full_year_of_mkl_dominus_is_charged_2146(lg: Ledger, clock: ManualClock) -> None:
    """Twelve whole months to the expiry: 1,850.00 + 296.00 IVA, a sale of the master account."""
    clock.set(datetime(2026, 1, 31, 18, 0, tzinfo=UTC))  # exactly a year before 2027-01-31
    outcome = lg.execute(contract("MKL Dóminus"))
    assert outcome.details == {"months": 12, "amount": "2146.00", "expires_on": "2027-01-31"}
    (sale,) = [s for s in lg.views.unbilled_sales(MASTER) if s.sale_id in outcome.sale_ids]
    assert (sale.buyer_id, sale.unit, sale.amount, sale.reference) == (
        DISTRIBUTOR,
        "subscription",
        "2146.00",
        "MKL Dóminus",
    )


def test_the_first_charge_is_pro_rata_by_whole_months(lg: Ledger, clock: ManualClock) -> None:
    """On 20 June 2026, 7 whole months remain to 31 January 2027: 1,352.65 with IVA."""
    clock.set(datetime(2026, 6, 20, 18, 0, tzinfo=UTC))
    outcome = lg.execute(contract("Multinivel"))
    assert (outcome.details["months"], outcome.details["amount"]) == (7, "1352.65")


def test_the_last_month_still_pays_one_month(lg: Ledger, clock: ManualClock) -> None:
    """With ten days left a subscription pays one month: 166.58 + IVA = 193.23."""
    clock.set(datetime(2027, 1, 21, 18, 0, tzinfo=UTC))
    outcome = lg.execute(contract("Multinivel"))
    assert (outcome.details["months"], outcome.details["amount"]) == (1, "193.23")


def test_a_running_subscription_cannot_be_contracted_twice(lg: Ledger) -> None:
    """A second contract while the first runs would charge twice: already_exists."""
    lg.execute(contract("Multinivel"))
    rejected = rejection(lg, contract("multinivel"))
    assert (rejected.code, rejected.details["expires_on"]) == ("already_exists", "2027-01-31")


def test_only_the_distributor_contracts_its_subscriptions(lg: Ledger) -> None:
    """Another distributor acting for D1 is not_authorised."""
    assert rejection(lg, {**contract("Multinivel"), "actor": "OTRO"}).code == "not_authorised"


def test_an_expired_distributor_cannot_contract(lg: Ledger, clock: ManualClock) -> None:
    """Past its expiry the distributor is not active: distributor_not_active."""
    clock.set(datetime(2027, 2, 1, 18, 0, tzinfo=UTC))
    assert rejection(lg, contract("Multinivel")).code == "distributor_not_active"


def test_product_names_match_without_accents_or_case(lg: Ledger) -> None:
    """ "mkl dominus" contracts "MKL Dóminus"; the subscription keeps the catalogue's name."""
    outcome = lg.execute(contract("mkl  DOMINUS"))
    assert outcome.ok
    (event,) = [e for e in lg.store.events() if type(e).__name__ == "SubscriptionContracted"]
    assert event.product == "MKL Dóminus"  # type: ignore[attr-defined]


# Renewal --------------------------------------------------------------------------------------


def test_renewal_charges_each_subscriptions_full_year(lg: Ledger) -> None:
    """A one-year renewal charges 2,318.84 (Multinivel) and 2,146.00 (MKL Dóminus)."""
    lg.execute(contract("Multinivel"))
    lg.execute(contract("MKL Dóminus"))
    outcome = lg.execute(renew("2028-01-31"))
    assert len(outcome.sale_ids) == 2
    sales = {s.reference: s.amount for s in lg.views.unbilled_sales(MASTER)
             if s.sale_id in outcome.sale_ids}  # fmt: skip
    assert sales == {"Multinivel": "2318.84", "MKL Dóminus": "2146.00"}


def test_renewal_extends_every_subscription_with_the_distributor(lg: Ledger) -> None:
    """After the renewal each subscription runs until the distributor's new expiry."""
    lg.execute(contract("Multinivel"))
    lg.execute(contract("MKL Dóminus"))
    lg.execute(renew("2028-01-31"))
    assert set(distributor(lg).subscriptions.values()) == {date(2028, 1, 31)}


def test_multinivel_does_not_lapse_after_a_renewal(lg: Ledger, clock: ManualClock) -> None:
    """Past the old expiry, a renewed D1 still registers sub-distributors."""
    lg.execute(contract("Multinivel"))
    lg.execute(renew("2028-01-31"))
    clock.set(datetime(2027, 6, 1, 18, 0, tzinfo=UTC))
    outcome = lg.execute(register_distributor("D2", DISTRIBUTOR))
    assert outcome.ok


def test_renewing_without_subscriptions_records_no_sale(lg: Ledger) -> None:
    """A distributor with no subscription renews for nothing."""
    assert lg.execute(renew("2028-01-31")).sale_ids == ()


def test_a_late_renewal_charges_from_today(lg: Ledger, clock: ManualClock) -> None:
    """Expired on 31 Jan 2027 and renewed on 15 March until 31 Jan 2028: 10 whole months."""
    lg.execute(contract("Multinivel"))
    clock.set(datetime(2027, 3, 15, 18, 0, tzinfo=UTC))
    outcome = lg.execute(renew("2028-01-31"))
    (sale,) = [s for s in lg.views.unbilled_sales(MASTER) if s.sale_id in outcome.sale_ids]
    assert sale.amount == "1932.36"  # 1,999.00 x 10/12 = 1,665.83 + 266.53 IVA


def test_a_rejected_renewal_charges_nothing(lg: Ledger) -> None:
    """A renewal to an earlier date is refused and records no sale."""
    lg.execute(contract("Multinivel"))
    assert rejection(lg, renew("2026-12-31")).code == "invalid_command"


def test_renewal_sales_can_be_invoiced_by_the_master(lg: Ledger) -> None:
    """The renewal's sales are billable sales of the master account."""
    lg.execute(contract("Multinivel"))
    sale_ids = lg.execute(renew("2028-01-31")).sale_ids
    invoice = {"seller_id": MASTER, "invoice_ref": "F-1", "sale_ids": list(sale_ids)}
    outcome = lg.execute(command("RegisterInvoice", MASTER, **invoice))
    assert outcome.sale_ids == sale_ids


def test_the_distributors_view_shows_each_subscriptions_expiry(
    lg: Ledger, clock: ManualClock
) -> None:
    """Row ``subscriptions``: product, kind, expiry and whether it runs today."""
    lg.execute(contract("Multinivel"))
    lg.execute(contract("MKL Dóminus"))
    lg.execute(renew("2028-01-31"))
    clock.advance(timedelta(days=400))  # 2027-02-09: past the old expiry, before the new one
    (row,) = [r for r in lg.views.distributors(MASTER) if r.distributor_id == DISTRIBUTOR]
    assert [(s.product, s.kind, s.expires_on.isoformat(), s.active) for s in row.subscriptions] == [
        ("MKL Dóminus", "mkl", "2028-01-31", True),
        ("Multinivel", "multinivel", "2028-01-31", True),
    ]


# Month ends and leap years at the command level --------------------------------------------------


@pytest.fixture
def leap(lg: Ledger) -> Ledger:
    """D1 renewed (with no subscription yet, so for nothing) until the leap day 2028-02-29."""
    assert lg.execute(renew("2028-02-29")).sale_ids == ()
    return lg


@pytest.mark.parametrize(
    ("today", "months", "amount"),
    [
        # 31 March + 11 months is 29 February 2028: eleven whole months, 1,695.83 + 271.33.
        (datetime(2027, 3, 31, 18, 0, tzinfo=UTC), 11, "1967.16"),
        # 1 April + 11 months is 1 March 2028, past the expiry: ten months, 1,541.67 + 246.67.
        (datetime(2027, 4, 1, 18, 0, tzinfo=UTC), 10, "1788.34"),
        # 28 February 2027 + 12 months is 28 February 2028: a whole year, 1,850.00 + 296.00.
        (datetime(2027, 2, 28, 18, 0, tzinfo=UTC), 12, "2146.00"),
    ],
)
def test_a_charge_to_a_leap_day_counts_whole_calendar_months(
    leap: Ledger, clock: ManualClock, today: datetime, months: int, amount: str
) -> None:
    """MKL Dóminus contracted to an expiry of 29 February 2028, from a month's last or first day."""
    clock.set(today)
    outcome = leap.execute(contract("MKL Dóminus"))
    assert (outcome.details["months"], outcome.details["amount"]) == (months, amount)
    (sale,) = [s for s in leap.views.unbilled_sales(MASTER) if s.sale_id in outcome.sale_ids]
    assert sale.amount == amount


def test_a_renewal_from_a_leap_day_to_28_february_is_a_full_year(
    leap: Ledger, clock: ManualClock
) -> None:
    """From 29 February 2028 to 28 February 2029 is twelve months: 2,146.00 for MKL Dóminus."""
    clock.set(datetime(2027, 3, 1, 18, 0, tzinfo=UTC))
    leap.execute(contract("MKL Dóminus"))
    outcome = leap.execute(renew("2029-02-28"))
    (sale,) = [s for s in leap.views.unbilled_sales(MASTER) if s.sale_id in outcome.sale_ids]
    assert (sale.reference, sale.amount) == ("MKL Dóminus", "2146.00")
    assert distributor(leap).subscriptions == {"mkl dominus": date(2029, 2, 28)}
