"""Movements: purchases, transfers, mass transfers and reclaims (DESIGN §4, §5)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.errors import Rejected
from tests import support
from tests.support import CLIENT, CTI, DISTRIBUTOR, MASTER, buy, command, package, rejection

OTHER = "D2"
OTHER_CLIENT = "C2"
OTHER_CTI = "C2-cti"

# A ledger on the in-memory store: D1 with 10,000 stamps and 3,000 points, and a rival D2.
lg = support.network_fixture(*support.rival_distributor(OTHER, OTHER_CLIENT), points=3000)

stamps = partial(support.transfer_stamps, amount="5.00")
"""A stamp transfer from D1 (to C1's CTI unless ``to_id`` says)."""

points = support.transfer_points
"""A point transfer from D1 (to C1's wallet unless ``to_id`` says)."""

UNLIMITED = support.open_cti("U1", "unlimited", password="correct horse")
"""C1's unlimited CTI ``U1``."""


def add_sub_distributor(lg: Ledger) -> str:
    """Registers and activates D1's sub-distributor ``D1a`` (D1 contracts Multinivel)."""
    support.ok(lg, *support.sub_distributor("D1a"))
    return "D1a"


# Purchases -------------------------------------------------------------------------------------


def test_buying_issues_new_credits_from_the_master(lg: Ledger) -> None:
    """A purchase from the master grows the buyer's inventory and the issuance source's debt."""
    outcome = lg.execute(buy(count=3))
    assert outcome.balance_after == 13_000
    assert len(outcome.sale_ids) == 1
    assert (lg.balance(DISTRIBUTOR), lg.balance(MASTER)) == (13_000, -13_000)


def test_buying_points_fills_the_points_book_only(lg: Ledger) -> None:
    """Points and stamps are separate books."""
    lg.execute(buy("PTS3000"))
    assert (lg.balance(DISTRIBUTOR, "points"), lg.balance(DISTRIBUTOR, "stamps")) == (6_000, 10_000)
    assert lg.balance(MASTER, "points") == -6_000


def test_buying_from_a_seller_that_is_not_the_parent_is_not_authorised(lg: Ledger) -> None:
    """A distributor buys only from its parent."""
    rejected = rejection(lg, buy(seller_id=OTHER))
    assert rejected.code == "not_authorised"


def test_buying_for_another_distributor_is_not_authorised(lg: Ledger) -> None:
    """The actor must be the buyer."""
    assert rejection(lg, buy(actor=OTHER)).code == "not_authorised"


def test_buying_an_unknown_package_is_refused(lg: Ledger) -> None:
    """A package not in the seller's catalogue is unknown_package."""
    assert rejection(lg, buy("NOPE")).code == "unknown_package"


def test_a_sub_distributor_buys_from_its_parents_inventory(lg: Ledger) -> None:
    """A parent distributor sells from its own stock: nothing new is issued."""
    sub = add_sub_distributor(lg)
    lg.execute(package("SUB500", 500, "300.00", seller_id=DISTRIBUTOR))
    lg.execute(buy("SUB500", buyer_id=sub, seller_id=DISTRIBUTOR, count=2))
    assert (lg.balance(sub), lg.balance(DISTRIBUTOR), lg.balance(MASTER)) == (1_000, 9_000, -10_000)


def test_a_parent_short_of_stock_cannot_sell(lg: Ledger) -> None:
    """A distributor's sale to a sub-distributor is limited by its inventory."""
    sub = add_sub_distributor(lg)
    lg.execute(package("BIG", 6_000, "300.00", seller_id=DISTRIBUTOR))
    rejected = rejection(lg, buy("BIG", buyer_id=sub, seller_id=DISTRIBUTOR, count=2))
    assert rejected.code == "insufficient_inventory"


# Transfers -------------------------------------------------------------------------------------


def test_transfer_to_a_cti_moves_stamps_and_records_a_sale(lg: Ledger) -> None:
    """The distributor's inventory goes down and the CTI's balance up by the same quantity."""
    outcome = lg.execute(stamps(quantity=25))
    assert (outcome.balance_after, outcome.sale_ids) == (9_975, ("T1",))
    assert (lg.balance(DISTRIBUTOR), lg.balance(CTI)) == (9_975, 25)


def test_transfer_to_a_sub_distributor_moves_inventory(lg: Ledger) -> None:
    """Stamps go to a sub-distributor's inventory."""
    sub = add_sub_distributor(lg)
    lg.execute(stamps(to_id=sub, quantity=400))
    assert (lg.balance(DISTRIBUTOR), lg.balance(sub)) == (9_600, 400)


def test_transfer_of_points_to_a_client_fills_its_wallet(lg: Ledger) -> None:
    """Points go to the client's wallet."""
    lg.execute(points(quantity=1_500))
    assert (lg.balance(DISTRIBUTOR, "points"), lg.balance(CLIENT, "points")) == (1_500, 1_500)


def test_transfer_beyond_inventory_is_insufficient_inventory(lg: Ledger) -> None:
    """A distributor cannot send more stamps than it holds."""
    rejected = rejection(lg, stamps(quantity=10_001))
    assert rejected.code == "insufficient_inventory"
    assert (rejected.details["available"], rejected.details["requested"]) == (10_000, 10_001)


def test_points_beyond_the_pool_are_insufficient_points(lg: Ledger) -> None:
    """A distributor cannot send more points than it holds."""
    assert rejection(lg, points(quantity=3_001)).code == "insufficient_points"


def test_transfer_by_another_actor_is_not_authorised(lg: Ledger) -> None:
    """Only the owner of the inventory moves it."""
    assert rejection(lg, stamps(actor=OTHER)).code == "not_authorised"


def test_transfer_to_another_distributors_cti_is_not_authorised(lg: Ledger) -> None:
    """A distributor sends stamps only to CTIs of its own clients."""
    assert rejection(lg, stamps(to_id=OTHER_CTI)).code == "not_authorised"


def test_points_to_another_distributors_client_are_not_authorised(lg: Ledger) -> None:
    """A distributor sends points only to its own clients."""
    assert rejection(lg, points(to_id=OTHER_CLIENT)).code == "not_authorised"


def test_transfer_to_a_distributor_that_is_not_a_child_is_not_authorised(lg: Ledger) -> None:
    """A sibling distributor is not a sub-distributor."""
    assert rejection(lg, stamps(to_id=OTHER)).code == "not_authorised"


def test_transfer_to_an_unknown_account_is_unknown_account(lg: Ledger) -> None:
    """The receiver must exist."""
    assert rejection(lg, stamps(to_id="NOBODY")).code == "unknown_account"


def test_transfer_from_an_unknown_account_is_unknown_account(lg: Ledger) -> None:
    """The sender must exist."""
    assert rejection(lg, {**stamps(), "from_id": "NOBODY"}).code == "unknown_account"


def test_stamps_to_a_client_rather_than_its_cti_are_wrong_account_kind(lg: Ledger) -> None:
    """Stamps live in stamping accounts, not in the client."""
    assert rejection(lg, stamps(to_id=CLIENT)).code == "wrong_account_kind"


def test_points_to_a_cti_are_wrong_account_kind(lg: Ledger) -> None:
    """Points live in the client's wallet, not in a CTI."""
    assert rejection(lg, points(to_id=CTI)).code == "wrong_account_kind"


def test_stamps_to_an_unlimited_cti_are_wrong_account_kind(lg: Ledger) -> None:
    """An unlimited account holds no stamp balance."""
    lg.execute(points(quantity=1_500))
    lg.execute(UNLIMITED)
    assert rejection(lg, stamps(to_id="U1")).code == "wrong_account_kind"


def test_transfer_to_a_cancelled_sub_distributor_is_refused(lg: Ledger) -> None:
    """A cancelled distributor receives nothing."""
    sub = add_sub_distributor(lg)
    lg.execute(command("SuspendDistributor", DISTRIBUTOR, distributor_id=sub))
    lg.execute(command("CancelDistributor", DISTRIBUTOR, distributor_id=sub))
    assert rejection(lg, stamps(to_id=sub)).code == "distributor_not_active"


# Mass transfers --------------------------------------------------------------------------------


def mass(*lines: tuple[str, int]) -> dict[str, Any]:
    """A mass stamp transfer from D1, each line at 1.00."""
    return support.mass_transfer(*lines, amount="1.00")


def test_mass_transfer_moves_every_line(lg: Ledger) -> None:
    """All lines are applied, each a sale of its own."""
    sub = add_sub_distributor(lg)
    outcome = lg.execute(mass((CTI, 10), (sub, 200), (CTI, 5)))
    assert (outcome.sale_ids, outcome.balance_after) == (("B1:1", "B1:2", "B1:3"), 9_785)
    assert (lg.balance(CTI), lg.balance(sub), lg.balance(DISTRIBUTOR)) == (15, 200, 9_785)


def test_mass_transfer_beyond_inventory_moves_nothing(lg: Ledger) -> None:
    """When the total exceeds the inventory, no line is applied."""
    rejected = rejection(lg, mass((CTI, 6_000), (CTI, 4_001)))
    assert rejected.code == "insufficient_inventory"
    assert (lg.balance(CTI), lg.balance(DISTRIBUTOR)) == (0, 10_000)


def test_mass_transfer_with_one_foreign_line_moves_nothing(lg: Ledger) -> None:
    """One line to another distributor's CTI refuses the whole batch."""
    rejected = rejection(lg, mass((CTI, 10), (OTHER_CTI, 10)))
    assert rejected.code == "not_authorised"
    assert lg.balance(CTI) == 0


def test_mass_transfer_with_one_unknown_line_moves_nothing(lg: Ledger) -> None:
    """One line to an unknown account refuses the whole batch."""
    assert rejection(lg, mass((CTI, 10), ("NOBODY", 10))).code == "unknown_account"
    assert lg.balance(CTI) == 0


def test_mass_transfer_of_points_fills_wallets(lg: Ledger) -> None:
    """A mass transfer may move points to clients."""
    lg.execute({**mass((CLIENT, 100), (CLIENT, 50)), "unit": "points"})
    assert (lg.balance(CLIENT, "points"), lg.balance(DISTRIBUTOR, "points")) == (150, 2_850)


# Reclaims --------------------------------------------------------------------------------------


def reclaim(quantity: int, **extra: Any) -> dict[str, Any]:
    """D1 takes stamps back from its client's CTI."""
    fields = {"transfer_id": "R1", "from_cti_id": CTI, "quantity": quantity}
    priced = {"amount": "6.00"} | extra
    return command("ReclaimStamps", DISTRIBUTOR, **fields, reason="falta de pago", **priced)


def test_reclaim_returns_unused_stamps_to_the_distributor(lg: Ledger) -> None:
    """Reclaimed stamps leave the CTI and return to the inventory."""
    lg.execute(stamps(quantity=30))
    outcome = lg.execute(reclaim(12))
    assert outcome.balance_after == 18
    assert (lg.balance(CTI), lg.balance(DISTRIBUTOR)) == (18, 9_982)


def test_reclaim_beyond_the_balance_is_insufficient_stamps(lg: Ledger) -> None:
    """A reclaim never takes a CTI below zero."""
    lg.execute(stamps(quantity=5))
    assert rejection(lg, reclaim(6)).code == "insufficient_stamps"
    assert lg.balance(CTI) == 5


def test_reclaim_by_another_distributor_is_not_authorised(lg: Ledger) -> None:
    """Only the CTI's distributor reclaims."""
    lg.execute(stamps(quantity=5))
    assert rejection(lg, reclaim(1, actor=OTHER)).code == "not_authorised"


def test_reclaim_from_an_unlimited_cti_is_wrong_account_kind(lg: Ledger) -> None:
    """An unlimited account has no stamps to give back."""
    lg.execute(points(quantity=1_500))
    lg.execute(UNLIMITED)
    assert rejection(lg, {**reclaim(1), "from_cti_id": "U1"}).code == "wrong_account_kind"


def test_a_consumption_with_a_malformed_issuer_rfc_is_invalid_rfc() -> None:
    """An issuer RFC that is not shaped like an RFC is refused before anything is read."""
    lg = Ledger.open("memory://", password_cost="fast")
    with pytest.raises(Rejected) as e:
        lg.execute(support.consume("C1-cti", issuer_rfc="NOT-AN-RFC-1"))
    assert e.value.code == "invalid_rfc"


# Points spent ----------------------------------------------------------------------------------


def spend(points: int, **holder: str) -> dict[str, Any]:
    """SpendPoints of a client or distributor (its id in ``holder``), by that holder."""
    (actor,) = holder.values()
    return command("SpendPoints", actor, product="licencia", points=points, **holder)


def test_a_distributor_spends_its_own_points(lg: Ledger) -> None:
    """D1 pays 500 of its 3,000 points; they leave circulation (sink:spent)."""
    outcome = lg.execute(spend(500, distributor_id=DISTRIBUTOR))
    assert outcome.balance_after == lg.balance(DISTRIBUTOR, "points") == 2_500
    assert lg.verify().ok


def test_a_distributor_cannot_spend_more_points_than_it_holds(lg: Ledger) -> None:
    """insufficient_points, nothing recorded."""
    assert rejection(lg, spend(3_001, distributor_id=DISTRIBUTOR)).code == "insufficient_points"


def test_another_distributor_cannot_spend_d1s_points(lg: Ledger) -> None:
    """Only D1 itself (or its master) spends its points."""
    command_ = {**spend(10, distributor_id=DISTRIBUTOR), "actor": OTHER}
    assert rejection(lg, command_).code == "not_authorised"


def test_a_spend_names_exactly_one_holder(lg: Ledger) -> None:
    """Both a client and a distributor, or neither: invalid_command naming distributor_id."""
    both = {**spend(10, client_id=CLIENT), "distributor_id": DISTRIBUTOR}
    rejected = rejection(lg, both)
    assert (rejected.code, support.fields(rejected)) == (
        "invalid_command",
        ["SpendPoints.distributor_id"],
    )
    neither = command("SpendPoints", CLIENT, product="licencia", points=10)
    assert support.fields(rejection(lg, neither)) == ["SpendPoints.distributor_id"]
