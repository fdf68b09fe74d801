"""Purchases paid with points, prices from the seller's list, retired packages, settings.

DESIGN §4 (purchases and transfers; ChangeSettings) and issue 9 items 2, 3 and 5.
"""

from __future__ import annotations

from typing import Any

from ledger.api import Ledger
from tests import support
from tests.support import CLIENT, CTI, DISTRIBUTOR, MASTER, buy, command, ok, package, rejection

SUB = "D1a"

# The standard network; D1 also holds 3,000 points.
lg = support.network_fixture(points=3000)


# Paying with points ----------------------------------------------------------------------------


def test_the_master_sells_stamps_for_points(lg: Ledger) -> None:
    """500.00 is 500 points: they leave D1's points (spent) as 1,000 stamps arrive."""
    outcome = lg.execute(buy(pay_with="points"))
    assert outcome.balance_after == 11_000
    assert lg.balance(DISTRIBUTOR, "points") == 2_500
    assert lg.balance(MASTER, "points") == -3_000
    (sale,) = [s for s in lg.views.unbilled_sales(MASTER) if s.sale_id == outcome.sale_ids[0]]
    assert (sale.unit, sale.quantity, sale.amount, sale.paid_with) == (
        "stamps",
        1_000,
        "500.00",
        "points",
    )
    assert lg.verify().ok


def test_a_purchase_beyond_the_points_is_insufficient_points(lg: Ledger) -> None:
    """Seven packages cost 3,500 points; D1 has 3,000."""
    rejected = rejection(lg, buy(pay_with="points", count=7))
    assert rejected.code == "insufficient_points"
    assert rejected.details == {"available": 3_000, "requested": 3_500, "holder_id": DISTRIBUTOR}


def test_a_distributor_seller_receives_the_points(lg: Ledger) -> None:
    """D1a pays D1 300 points for 500 of D1's stamps."""
    ok(
        lg,
        *support.sub_distributor(SUB),
        package("SUB500", 500, "300.00", seller_id=DISTRIBUTOR),
        support.transfer_points(1_000, "TP1", to_id=SUB, amount="0.00"),
    )
    outcome = lg.execute(buy("SUB500", buyer_id=SUB, seller_id=DISTRIBUTOR, pay_with="points"))
    assert outcome.balance_after == 500
    assert (lg.balance(SUB, "points"), lg.balance(DISTRIBUTOR, "points")) == (700, 2_300)
    assert lg.balance(DISTRIBUTOR, "stamps") == 9_500
    (sale,) = [s for s in lg.views.unbilled_sales(DISTRIBUTOR) if s.sale_id == outcome.sale_ids[0]]
    assert sale.paid_with == "points"
    assert lg.verify().ok


def test_a_points_package_is_not_paid_with_points(lg: Ledger) -> None:
    """Points for points is refused."""
    rejected = rejection(lg, buy("PTS3000", pay_with="points"))
    assert (rejected.code, rejected.details["field"]) == ("invalid_command", "pay_with")


def test_a_price_with_centavos_cannot_be_paid_in_points(lg: Ledger) -> None:
    """1 point is 1 peso: 99.50 has no price in whole points."""
    lg.execute(package("ODD", 100, "99.50"))
    rejected = rejection(lg, buy("ODD", pay_with="points"))
    assert (rejected.code, rejected.details["field"]) == ("invalid_command", "pay_with")


# Price lists -----------------------------------------------------------------------------------


def transfer(quantity: int = 100, **extra: Any) -> dict[str, Any]:
    """TransferStamps from D1 to C1's CTI without an amount unless given."""
    return support.transfer_stamps(quantity, f"T-{CTI}-{quantity}", **extra)


def settings(seller: str = DISTRIBUTOR, **changes: Any) -> dict[str, Any]:
    """ChangeSettings."""
    return command("ChangeSettings", seller, seller_id=seller, **changes)


def client_pricing(lg: Ledger, **pricing: Any) -> None:
    """Sets C1's own bulk price and discount in its profile."""
    profile = {**support.client_profile(), **pricing}
    lg.execute(command("UpdateClientProfile", DISTRIBUTOR, client_id=CLIENT, profile=profile))


def sale_amount(lg: Ledger, seller: str, sale_id: str) -> str:
    """The amount of one of the seller's sales, as the billing view shows it."""
    (sale,) = [s for s in lg.views.unbilled_sales(seller) if s.sale_id == sale_id]
    return sale.amount


def test_without_a_price_anywhere_a_transfer_is_price_unknown(lg: Ledger) -> None:
    """No amount, no bulk price: refused (a sale is never a silent 0.00), nothing recorded."""
    rejected = rejection(lg, transfer())
    assert rejected.code == "price_unknown"
    assert (rejected.details["field"], rejected.details["seller_id"]) == ("amount", DISTRIBUTOR)


def test_an_explicit_zero_amount_is_a_gift_and_is_kept(lg: Ledger) -> None:
    """An explicit "0.00": a sale of 0.00, even with a bulk price set."""
    lg.execute(settings(bulk_stamp_price="0.85"))
    (sale_id,) = lg.execute(transfer(amount="0.00")).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "0.00"


def test_a_mass_transfer_line_without_a_price_is_price_unknown(lg: Ledger) -> None:
    """One unpriced line refuses the whole mass transfer."""
    command = {
        "type": "MassTransfer",
        "batch_id": "B1",
        "from_id": DISTRIBUTOR,
        "actor": DISTRIBUTOR,
        "lines": [{"to_id": CTI, "quantity": 1, "amount": "1.00"}, {"to_id": CTI, "quantity": 2}],
    }
    assert rejection(lg, command).code == "price_unknown"


def test_a_stamps_code_without_a_price_is_price_unknown(lg: Ledger) -> None:
    """IssueCreditCode follows the same rule; a points code is priced at 1.00 a point."""
    code = {
        "type": "IssueCreditCode",
        "code_id": "K1",
        "distributor_id": DISTRIBUTOR,
        "unit": "stamps",
        "quantity": 5,
        "actor": DISTRIBUTOR,
    }
    assert rejection(lg, code).code == "price_unknown"
    lg.execute(buy("PTS3000"))
    assert lg.execute({**code, "unit": "points"}).ok


def test_the_distributors_bulk_price_prices_a_transfer(lg: Ledger) -> None:
    """100 stamps at D1's bulk price of 0.85."""
    lg.execute(settings(bulk_stamp_price="0.85"))
    (sale_id,) = lg.execute(transfer()).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "85.00"


def test_the_clients_own_bulk_price_comes_first(lg: Ledger) -> None:
    """C1's bulk price of 0.70 beats D1's 0.85."""
    lg.execute(settings(bulk_stamp_price="0.85"))
    client_pricing(lg, bulk_stamp_price="0.70")
    (sale_id,) = lg.execute(transfer()).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "70.00"


def test_the_clients_discount_applies_rounded_half_up(lg: Ledger) -> None:
    """333 stamps at 0.85 is 283.05; 7.5 % off is 261.82 (261.82125 rounded)."""
    lg.execute(settings(bulk_stamp_price="0.85"))
    client_pricing(lg, discount_pct="7.5")
    (sale_id,) = lg.execute(transfer(333)).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "261.82"


def test_an_amount_given_is_kept(lg: Ledger) -> None:
    """The command's amount wins over the price list, discount included."""
    lg.execute(settings(bulk_stamp_price="0.85"))
    client_pricing(lg, discount_pct="10")
    (sale_id,) = lg.execute(transfer(amount="12.34")).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "12.34"


def test_points_to_a_client_are_priced_at_face_value_less_discount(lg: Ledger) -> None:
    """200 points are 200.00; C1's 10 % makes it 180.00."""
    client_pricing(lg, discount_pct="10")
    outcome = lg.execute(support.transfer_points(200, "TP1"))
    assert sale_amount(lg, DISTRIBUTOR, outcome.sale_ids[0]) == "180.00"


def test_a_client_package_gets_the_clients_discount(lg: Ledger) -> None:
    """AssignPackage of a 60.00 package to C1 with 5 % off: 57.00."""
    client_pricing(lg, discount_pct="5")
    lg.execute(package("CP100", 100, "60.00", seller_id=DISTRIBUTOR, audience="client"))
    outcome = lg.execute(support.grant("G1", "CP100"))
    assert sale_amount(lg, DISTRIBUTOR, outcome.sale_ids[0]) == "57.00"


def test_mass_transfer_lines_without_amount_use_the_price_list(lg: Ledger) -> None:
    """Each line is priced on its own."""
    lg.execute(settings(bulk_stamp_price="1.00"))
    outcome = lg.execute(
        {
            **support.mass_transfer(),
            "lines": [
                {"to_id": CTI, "quantity": 10},
                {"to_id": CTI, "quantity": 5, "amount": "1.00"},
            ],
        }
    )
    assert [sale_amount(lg, DISTRIBUTOR, s) for s in outcome.sale_ids] == ["10.00", "1.00"]


# Catalogue -------------------------------------------------------------------------------------


def test_a_retired_package_is_not_sold(lg: Ledger) -> None:
    """DefinePackage with retire: PackageRetired is recorded, then buying it is unknown_package."""
    lg.execute(command("DefinePackage", MASTER, seller_id=MASTER, package_id="P1000", retire=True))
    topics = [row.topic for row in lg.store.stored_events()]
    assert topics[-1] == "MasterAccount.PackageRetired"
    assert rejection(lg, buy()).code == "unknown_package"


def test_redefining_a_package_is_already_exists(lg: Ledger) -> None:
    """The same id again without replaces is already_exists."""
    rejected = rejection(lg, package("P1000", 2000, "900.00"))
    assert rejected.code == "already_exists"


def test_a_package_replaced_on_purpose_sells_at_its_new_terms(lg: Ledger) -> None:
    """replaces=true swaps the package."""
    lg.execute(package("P1000", 2000, "900.00", replaces=True))
    assert lg.execute(buy()).balance_after == 12_000


def test_retiring_an_unknown_package_is_unknown_package(lg: Ledger) -> None:
    """Nothing to retire."""
    retire = command("DefinePackage", MASTER, seller_id=MASTER, package_id="NOPE", retire=True)
    assert rejection(lg, retire).code == "unknown_package"


# Settings --------------------------------------------------------------------------------------


def test_the_master_changes_its_settings(lg: Ledger) -> None:
    """ChangeSettings works for the master account (network defaults)."""
    outcome = lg.execute(settings(MASTER, bulk_stamp_price="0.90", unlimited_cti_fee_points=1_200))
    assert outcome.ok


def test_the_masters_bulk_price_is_the_network_default(lg: Ledger) -> None:
    """D1 sets no price: the master's 0.90 prices D1's transfer."""
    lg.execute(settings(MASTER, bulk_stamp_price="0.90"))
    (sale_id,) = lg.execute(transfer()).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "90.00"


def test_the_unlimited_fee_follows_the_settings(lg: Ledger) -> None:
    """D1's fee of 1,000 points opens an unlimited CTI; the master's default is overridden."""
    lg.execute(settings(MASTER, unlimited_cti_fee_points=2_000))
    lg.execute(settings(unlimited_cti_fee_points=1_000))
    lg.execute(support.transfer_points(1_000, "TP1"))
    lg.execute(support.open_cti("U1", "unlimited", password="secreto-123"))
    assert lg.balance(CLIENT, "points") == 0


def test_the_masters_unlimited_fee_applies_when_the_distributor_sets_none(lg: Ledger) -> None:
    """The master's 2,000 points: 1,500 are not enough."""
    lg.execute(settings(MASTER, unlimited_cti_fee_points=2_000))
    lg.execute(support.transfer_points(1_500, "TP1"))
    rejected = rejection(lg, support.open_cti("U1", "unlimited", password="secreto-123"))
    assert (rejected.code, rejected.details["requested"]) == ("insufficient_points", 2_000)


def test_settings_of_another_seller_are_not_authorised(lg: Ledger) -> None:
    """D1 cannot change the master's settings."""
    changes = {**settings(MASTER, bulk_stamp_price="0.10"), "actor": DISTRIBUTOR}
    assert rejection(lg, changes).code == "not_authorised"


def test_settings_without_a_change_are_invalid(lg: Ledger) -> None:
    """Nothing given: invalid_command."""
    assert rejection(lg, settings()).code == "invalid_command"


# Client panel purchases (PCC) ------------------------------------------------------------------


def client_packages(lg: Ledger) -> None:
    """D1's client packages: 100 stamps for 60.00 valid 30 days, and 500 points for 500.00."""
    ok(
        lg,
        package("CP100", 100, "60.00", seller_id=DISTRIBUTOR, audience="client", validity_days=30),
        package("CPTS500", 500, "500.00", seller_id=DISTRIBUTOR, unit="points", audience="client"),
    )


def panel(package_id: str = "CP100", **extra: Any) -> dict[str, Any]:
    """ClientBuyPackage by C1 itself."""
    return command("ClientBuyPackage", CLIENT, client_id=CLIENT, package_id=package_id, **extra)


def test_a_client_buys_stamps_through_its_panel(lg: Ledger) -> None:
    """Allowed: 100 stamps to the default CTI (expiring in 30 days), a billable sale of 60.00."""
    client_packages(lg)
    lg.execute(settings(allow_pcc_stamp_purchase=True))
    outcome = lg.execute(panel())
    assert outcome.balance_after == 100
    assert outcome.details == {"cti_id": CTI, "expires_on": "2026-02-04", "supply_sale_ids": []}
    assert lg.balance(DISTRIBUTOR, "stamps") == 9_900
    (sale_id,) = outcome.sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "60.00"
    assert lg.verify().ok


def test_panel_purchases_need_the_distributors_permission(lg: Ledger) -> None:
    """Not allowed (the default): pcc_purchase_not_allowed."""
    client_packages(lg)
    rejected = rejection(lg, panel())
    assert rejected.code == "pcc_purchase_not_allowed"
    assert rejected.details == {"distributor_id": DISTRIBUTOR, "unit": "stamps"}
    lg.execute(settings(allow_pcc_stamp_purchase=True))
    assert rejection(lg, panel("CPTS500")).code == "pcc_purchase_not_allowed"


def test_the_masters_permission_is_the_network_default(lg: Ledger) -> None:
    """The master allows stamp purchases; D1 set nothing, so its clients may buy."""
    client_packages(lg)
    lg.execute(settings(MASTER, allow_pcc_stamp_purchase=True))
    assert lg.execute(panel()).balance_after == 100
    lg.execute(settings(allow_pcc_stamp_purchase=False))
    assert rejection(lg, panel()).code == "pcc_purchase_not_allowed"


def test_a_panel_purchase_goes_to_the_named_cti(lg: Ledger) -> None:
    """cti_id names another CTI of the client."""
    client_packages(lg)
    ok(
        lg,
        settings(allow_pcc_stamp_purchase=True),
        support.open_cti("C1-b", password="secreto-123"),
    )
    assert lg.execute(panel(cti_id="C1-b")).details["cti_id"] == "C1-b"
    assert (lg.balance("C1-b"), lg.balance(CTI)) == (100, 0)


def test_only_the_client_buys_through_its_panel(lg: Ledger) -> None:
    """Its distributor acting is not_authorised."""
    client_packages(lg)
    lg.execute(settings(allow_pcc_stamp_purchase=True))
    assert rejection(lg, panel(actor=DISTRIBUTOR)).code == "not_authorised"


def test_the_clients_discount_applies_to_panel_purchases(lg: Ledger) -> None:
    """60.00 less 10 % is 54.00."""
    client_packages(lg)
    lg.execute(settings(allow_pcc_stamp_purchase=True))
    client_pricing(lg, discount_pct="10")
    (sale_id,) = lg.execute(panel()).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "54.00"


def test_a_points_order_the_distributor_covers_goes_to_the_wallet(lg: Ledger) -> None:
    """500 points leave D1's 3,000 for C1's wallet."""
    client_packages(lg)
    lg.execute(settings(allow_pcc_point_purchase=True))
    outcome = lg.execute(panel("CPTS500"))
    assert outcome.balance_after == 500
    assert len(outcome.sale_ids) == 1
    assert lg.balance(DISTRIBUTOR, "points") == 2_500


def test_a_points_order_beyond_the_inventory_buys_the_smallest_covering_package(
    lg: Ledger,
) -> None:
    """D1 holds 100 points: it first buys the master's 1,000-point package (not the 3,000)."""
    client_packages(lg)
    ok(
        lg,
        package("PTS1000", 1_000, "960.00", unit="points"),
        settings(allow_pcc_point_purchase=True),
        support.transfer_points(2_900, "TP1"),
    )
    outcome = lg.execute(panel("CPTS500"))
    client_sale, supply_sale = outcome.sale_ids
    assert outcome.details == {"supply_sale_ids": [supply_sale]}
    assert lg.balance(CLIENT, "points") == 3_400
    assert lg.balance(DISTRIBUTOR, "points") == 100 + 1_000 - 500
    assert sale_amount(lg, MASTER, supply_sale) == "960.00"
    assert sale_amount(lg, DISTRIBUTOR, client_sale) == "500.00"
    assert lg.verify().ok


def test_a_stamps_order_beyond_the_inventory_buys_the_smallest_covering_package(
    lg: Ledger,
) -> None:
    """D1 holds 40 stamps: it first buys the master's smallest covering stamps package (the
    200 one, not the 1,000), then sells its client the 100, in one transaction."""
    client_packages(lg)
    ok(
        lg,
        package("P200", 200, "110.00"),
        settings(allow_pcc_stamp_purchase=True),
        support.transfer_stamps(9_960, "T-drain", amount="0.00"),
    )
    outcome = lg.execute(panel())
    client_sale, supply_sale = outcome.sale_ids
    assert outcome.details["supply_sale_ids"] == [supply_sale]
    assert lg.balance(DISTRIBUTOR, "stamps") == 40 + 200 - 100
    assert sale_amount(lg, MASTER, supply_sale) == "110.00"
    assert sale_amount(lg, DISTRIBUTOR, client_sale) == "60.00"
    assert lg.verify().ok


def test_a_stamps_order_nobody_can_supply_is_insufficient_inventory(lg: Ledger) -> None:
    """The master sells no stamps package any more: the order is refused, nothing recorded."""
    client_packages(lg)
    ok(
        lg,
        settings(allow_pcc_stamp_purchase=True),
        support.transfer_stamps(9_960, "T-drain", amount="0.00"),
        command("DefinePackage", MASTER, seller_id=MASTER, package_id="P1000", retire=True),
    )
    assert rejection(lg, panel()).code == "insufficient_inventory"


def test_panel_stamp_purchases_need_a_client_package(lg: Ledger) -> None:
    """Turning the setting on without a client stamps package is invalid_command naming it;
    with one it is accepted, and turning it off needs nothing."""
    rejected = rejection(lg, settings(allow_pcc_stamp_purchase=True))
    assert (rejected.code, rejected.details["field"]) == (
        "invalid_command",
        "allow_pcc_stamp_purchase",
    )
    assert lg.execute(settings(allow_pcc_stamp_purchase=False)).ok
    client_packages(lg)
    assert lg.execute(settings(allow_pcc_stamp_purchase=True)).ok
