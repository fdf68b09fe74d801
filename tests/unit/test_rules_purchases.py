"""Purchases paid with points, prices from the seller's list, retired packages, settings.

DESIGN §4 (purchases and transfers; ChangeSettings) and issue 9 items 2, 3 and 5.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    MASTER,
    client_profile,
    distributor_profile,
    network_ledger,
    rejection,
    subscription_catalogue,
)

SUB = "D1a"


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """The standard network; D1 also holds 3,000 points."""
    with network_ledger(clock) as ledger:
        ledger.execute(buy("PTS3000"))
        yield ledger


def buy(package_id: str = "P1000", **extra: Any) -> dict[str, Any]:
    """BuyPackage by D1 from the master."""
    return {
        "type": "BuyPackage",
        "buyer_id": DISTRIBUTOR,
        "seller_id": MASTER,
        "package_id": package_id,
        "actor": DISTRIBUTOR,
        **extra,
    }


def ok(lg: Ledger, *commands: dict[str, Any]) -> None:
    """Every command succeeds."""
    for result in lg.execute_many(list(commands)):
        assert not isinstance(result, Rejected), result.to_dict()


def package(
    seller: str, package_id: str, unit: str, quantity: int, price: str, **extra: Any
) -> dict:
    """DefinePackage."""
    return {
        "type": "DefinePackage",
        "seller_id": seller,
        "package_id": package_id,
        "unit": unit,
        "quantity": quantity,
        "price": price,
        "audience": "distributor",
        "actor": seller,
        **extra,
    }


def sub_distributor(lg: Ledger) -> None:
    """D1 (with Multinivel) registers and activates D1a."""
    ok(
        lg,
        *subscription_catalogue(MASTER),
        {
            "type": "ContractSubscription",
            "distributor_id": DISTRIBUTOR,
            "product": "Multinivel",
            "actor": DISTRIBUTOR,
        },
        {
            "type": "RegisterDistributor",
            "distributor_id": SUB,
            "parent_id": DISTRIBUTOR,
            "profile": distributor_profile("Sub", "sub@example.com"),
            "actor": DISTRIBUTOR,
        },
        {"type": "ValidateDistributor", "distributor_id": SUB, "actor": DISTRIBUTOR},
        {
            "type": "ActivateDistributor",
            "distributor_id": SUB,
            "actor": DISTRIBUTOR,
            "expires_on": "2026-12-31",
        },
    )


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
    sub_distributor(lg)
    ok(
        lg,
        package(DISTRIBUTOR, "SUB500", "stamps", 500, "300.00"),
        {
            "type": "TransferPoints",
            "transfer_id": "TP1",
            "from_id": DISTRIBUTOR,
            "to_id": SUB,
            "quantity": 1_000,
            "amount": "0.00",
            "actor": DISTRIBUTOR,
        },
    )
    outcome = lg.execute(
        {
            "type": "BuyPackage",
            "buyer_id": SUB,
            "seller_id": DISTRIBUTOR,
            "package_id": "SUB500",
            "pay_with": "points",
            "actor": SUB,
        }
    )
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
    lg.execute(package(MASTER, "ODD", "stamps", 100, "99.50"))
    rejected = rejection(lg, buy("ODD", pay_with="points"))
    assert (rejected.code, rejected.details["field"]) == ("invalid_command", "pay_with")


# Price lists -----------------------------------------------------------------------------------


def transfer(quantity: int = 100, to_id: str = CTI, **extra: Any) -> dict[str, Any]:
    """TransferStamps from D1 without an amount unless given."""
    return {
        "type": "TransferStamps",
        "transfer_id": f"T-{to_id}-{quantity}",
        "from_id": DISTRIBUTOR,
        "to_id": to_id,
        "quantity": quantity,
        "actor": DISTRIBUTOR,
        **extra,
    }


def settings(seller: str = DISTRIBUTOR, **changes: Any) -> dict[str, Any]:
    """ChangeSettings."""
    return {"type": "ChangeSettings", "seller_id": seller, "actor": seller, **changes}


def client_pricing(lg: Ledger, **pricing: Any) -> None:
    """Sets C1's own bulk price and discount in its profile."""
    lg.execute(
        {
            "type": "UpdateClientProfile",
            "client_id": CLIENT,
            "profile": {**client_profile(), **pricing},
            "actor": DISTRIBUTOR,
        }
    )


def sale_amount(lg: Ledger, seller: str, sale_id: str) -> str:
    """The amount of one of the seller's sales, as the billing view shows it."""
    (sale,) = [s for s in lg.views.unbilled_sales(seller) if s.sale_id == sale_id]
    return sale.amount


def test_without_a_price_anywhere_a_transfer_is_free(lg: Ledger) -> None:
    """No amount, no bulk price: 0.00."""
    (sale_id,) = lg.execute(transfer()).sale_ids
    assert sale_amount(lg, DISTRIBUTOR, sale_id) == "0.00"


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
    outcome = lg.execute(
        {
            "type": "TransferPoints",
            "transfer_id": "TP1",
            "from_id": DISTRIBUTOR,
            "to_id": CLIENT,
            "quantity": 200,
            "actor": DISTRIBUTOR,
        }
    )
    assert sale_amount(lg, DISTRIBUTOR, outcome.sale_ids[0]) == "180.00"


def test_a_client_package_gets_the_clients_discount(lg: Ledger) -> None:
    """AssignPackage of a 60.00 package to C1 with 5 % off: 57.00."""
    client_pricing(lg, discount_pct="5")
    lg.execute({**package(DISTRIBUTOR, "CP100", "stamps", 100, "60.00"), "audience": "client"})
    outcome = lg.execute(
        {
            "type": "AssignPackage",
            "grant_id": "G1",
            "seller_id": DISTRIBUTOR,
            "cti_id": CTI,
            "package_id": "CP100",
            "actor": DISTRIBUTOR,
        }
    )
    assert sale_amount(lg, DISTRIBUTOR, outcome.sale_ids[0]) == "57.00"


def test_mass_transfer_lines_without_amount_use_the_price_list(lg: Ledger) -> None:
    """Each line is priced on its own."""
    lg.execute(settings(bulk_stamp_price="1.00"))
    outcome = lg.execute(
        {
            "type": "MassTransfer",
            "batch_id": "B1",
            "from_id": DISTRIBUTOR,
            "lines": [
                {"to_id": CTI, "quantity": 10},
                {"to_id": CTI, "quantity": 5, "amount": "1.00"},
            ],
            "actor": DISTRIBUTOR,
        }
    )
    assert [sale_amount(lg, DISTRIBUTOR, s) for s in outcome.sale_ids] == ["10.00", "1.00"]


# Catalogue -------------------------------------------------------------------------------------


def test_a_retired_package_is_not_sold(lg: Ledger) -> None:
    """DefinePackage with retire: PackageRetired is recorded, then buying it is unknown_package."""
    lg.execute(
        {
            "type": "DefinePackage",
            "seller_id": MASTER,
            "package_id": "P1000",
            "retire": True,
            "actor": MASTER,
        }
    )
    topics = [row.topic for row in lg.store.stored_events()]
    assert topics[-1] == "MasterAccount.PackageRetired"
    assert rejection(lg, buy()).code == "unknown_package"


def test_redefining_a_package_is_already_exists(lg: Ledger) -> None:
    """The same id again without replaces is already_exists."""
    rejected = rejection(lg, package(MASTER, "P1000", "stamps", 2000, "900.00"))
    assert rejected.code == "already_exists"


def test_a_package_replaced_on_purpose_sells_at_its_new_terms(lg: Ledger) -> None:
    """replaces=true swaps the package."""
    lg.execute(package(MASTER, "P1000", "stamps", 2000, "900.00", replaces=True))
    assert lg.execute(buy()).balance_after == 12_000


def test_retiring_an_unknown_package_is_unknown_package(lg: Ledger) -> None:
    """Nothing to retire."""
    command = {
        "type": "DefinePackage",
        "seller_id": MASTER,
        "package_id": "NOPE",
        "retire": True,
        "actor": MASTER,
    }
    assert rejection(lg, command).code == "unknown_package"


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
    lg.execute(
        {
            "type": "TransferPoints",
            "transfer_id": "TP1",
            "from_id": DISTRIBUTOR,
            "to_id": CLIENT,
            "quantity": 1_000,
            "actor": DISTRIBUTOR,
        }
    )
    lg.execute(
        {
            "type": "OpenStampingAccount",
            "cti_id": "U1",
            "client_id": CLIENT,
            "kind": "unlimited",
            "password": "secreto-123",
            "actor": DISTRIBUTOR,
        }
    )
    assert lg.balance(CLIENT, "points") == 0


def test_the_masters_unlimited_fee_applies_when_the_distributor_sets_none(lg: Ledger) -> None:
    """The master's 2,000 points: 1,500 are not enough."""
    lg.execute(settings(MASTER, unlimited_cti_fee_points=2_000))
    lg.execute(
        {
            "type": "TransferPoints",
            "transfer_id": "TP1",
            "from_id": DISTRIBUTOR,
            "to_id": CLIENT,
            "quantity": 1_500,
            "actor": DISTRIBUTOR,
        }
    )
    rejected = rejection(
        lg,
        {
            "type": "OpenStampingAccount",
            "cti_id": "U1",
            "client_id": CLIENT,
            "kind": "unlimited",
            "password": "secreto-123",
            "actor": DISTRIBUTOR,
        },
    )
    assert (rejected.code, rejected.details["requested"]) == ("insufficient_points", 2_000)


def test_settings_of_another_seller_are_not_authorised(lg: Ledger) -> None:
    """D1 cannot change the master's settings."""
    command = {**settings(MASTER, bulk_stamp_price="0.10"), "actor": DISTRIBUTOR}
    assert rejection(lg, command).code == "not_authorised"


def test_settings_without_a_change_are_invalid(lg: Ledger) -> None:
    """Nothing given: invalid_command."""
    assert rejection(lg, settings()).code == "invalid_command"


# Client panel purchases (PCC) ------------------------------------------------------------------


def client_packages(lg: Ledger) -> None:
    """D1's client packages: 100 stamps for 60.00 valid 30 days, and 500 points for 500.00."""
    ok(
        lg,
        {**package(DISTRIBUTOR, "CP100", "stamps", 100, "60.00"), "audience": "client",
         "validity_days": 30},
        {**package(DISTRIBUTOR, "CPTS500", "points", 500, "500.00"), "audience": "client"},
    )  # fmt: skip


def panel(package_id: str = "CP100", **extra: Any) -> dict[str, Any]:
    """ClientBuyPackage by C1 itself."""
    return {
        "type": "ClientBuyPackage",
        "client_id": CLIENT,
        "package_id": package_id,
        "actor": CLIENT,
        **extra,
    }


def test_a_client_buys_stamps_through_its_panel(lg: Ledger) -> None:
    """Allowed: 100 stamps to the default CTI (expiring in 30 days), a billable sale of 60.00."""
    client_packages(lg)
    lg.execute(settings(allow_pcc_stamp_purchase=True))
    outcome = lg.execute(panel())
    assert outcome.balance_after == 100
    assert outcome.details == {"cti_id": CTI, "expires_on": "2026-02-04"}
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
        {"type": "OpenStampingAccount", "cti_id": "C1-b", "client_id": CLIENT,
         "password": "secreto-123", "actor": DISTRIBUTOR},
    )  # fmt: skip
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
        package(MASTER, "PTS1000", "points", 1_000, "960.00"),
        settings(allow_pcc_point_purchase=True),
        {"type": "TransferPoints", "transfer_id": "TP1", "from_id": DISTRIBUTOR, "to_id": CLIENT,
         "quantity": 2_900, "actor": DISTRIBUTOR},
    )  # fmt: skip
    outcome = lg.execute(panel("CPTS500"))
    client_sale, supply_sale = outcome.sale_ids
    assert outcome.details == {"supply_sale_ids": [supply_sale]}
    assert lg.balance(CLIENT, "points") == 3_400
    assert lg.balance(DISTRIBUTOR, "points") == 100 + 1_000 - 500
    assert sale_amount(lg, MASTER, supply_sale) == "960.00"
    assert sale_amount(lg, DISTRIBUTOR, client_sale) == "500.00"
    assert lg.verify().ok
