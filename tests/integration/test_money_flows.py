"""Credit codes, points purchases and panel purchases on a real SQLite file and PostgreSQL.

Each test runs on both backends; reopening the ledger (a cold cache) shows that what was decided
is what is stored, and ``verify`` replays it all.
"""

from __future__ import annotations

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import CLIENT, CTI, DISTRIBUTOR, consume, seed_network


@pytest.fixture
def url(store_url: str, clock: ManualClock) -> str:
    """A database holding the standard network (D1 with 10,000 stamps, C1 and its CTI)."""
    seed_network(store_url, clock)
    return store_url


def test_a_code_is_locked_in_every_process_and_its_credits_return(
    url: str, clock: ManualClock
) -> None:
    """Wrong NIPs from two ledgers count together; the lock returns the stamps to D1."""
    with (
        Ledger.open(url, clock=clock, password_cost="fast") as first,
        Ledger.open(url, clock=clock, password_cost="fast") as second,
    ):
        code = first.execute(
            {
                "type": "IssueCreditCode",
                "code_id": "K1",
                "distributor_id": DISTRIBUTOR,
                "unit": "stamps",
                "quantity": 40,
                "amount": "20.00",
                "actor": DISTRIBUTOR,
            }
        )
        assert code.code is not None
        assert code.nip is not None
        bad = {
            "type": "RedeemCreditCode",
            "code": code.code,
            "nip": f"{(int(code.nip) + 1) % 1_000_000:06d}",
            "to_id": CTI,
            "actor": CLIENT,
        }
        codes = []
        for attempt in range(5):
            with pytest.raises(Rejected) as caught:
                (first if attempt % 2 else second).execute(bad)
            codes.append(caught.value.code)
        assert codes == ["wrong_nip"] * 4 + ["code_locked"]
        assert first.balance(DISTRIBUTOR, "stamps") == 10_000
        assert [row.state for row in second.views.credit_codes(DISTRIBUTOR)] == ["locked"]
    with Ledger.open(url, clock=clock, password_cost="fast") as cold:
        assert cold.balance("K1", "stamps") == 0
        with pytest.raises(Rejected) as caught:
            cold.execute({**bad, "nip": code.nip})
        assert caught.value.code == "code_locked"
        assert cold.verify().ok


def test_a_redeemed_code_replays_after_a_reopen(url: str, clock: ManualClock) -> None:
    """The redemption's first outcome comes back from the key index of a cold ledger."""
    with Ledger.open(url, clock=clock, password_cost="fast") as lg:
        code = lg.execute(
            {
                "type": "IssueCreditCode",
                "code_id": "K2",
                "distributor_id": DISTRIBUTOR,
                "unit": "stamps",
                "quantity": 25,
                "amount": "12.50",
                "actor": DISTRIBUTOR,
            }
        )
        assert code.code is not None
        redeem = {
            "type": "RedeemCreditCode",
            "code": code.code,
            "nip": code.nip,
            "to_id": CTI,
            "actor": CLIENT,
        }
        assert lg.execute(redeem).balance_after == 25
    with Ledger.open(url, clock=clock, password_cost="fast") as cold:
        again = cold.execute(redeem)
        assert again.replayed
        assert again.balance_after == 25
        assert cold.balance(CTI, "stamps") == 25
        (row,) = cold.views.credit_codes(DISTRIBUTOR)
        assert (row.state, row.redeemed_by) == ("redeemed", CTI)
        assert cold.verify().ok


def test_auto_top_up_sells_then_fails_and_the_failure_is_shown(
    url: str, clock: ManualClock
) -> None:
    """The crossing consumption names its sale; later a short inventory records the failure."""
    with Ledger.open(url, clock=clock, password_cost="fast") as lg:
        lg.execute(
            {"type": "TransferStamps", "transfer_id": "T1", "from_id": DISTRIBUTOR, "to_id": CTI,
             "quantity": 11, "amount": "0.00", "actor": DISTRIBUTOR}
        )  # fmt: skip
        lg.execute(
            {"type": "ConfigureAutoTopUp", "cti_id": CTI, "minimum": 10, "credit": 40,
             "amount": "20.00", "actor": DISTRIBUTOR}
        )  # fmt: skip
        first = lg.execute(consume(actor="M"))  # 11 → 10
        crossing = lg.execute(consume(actor="M"))  # 10 → 9: +40
        assert first.sale_ids == ()
        assert crossing.balance_after == 49
        (sale_id,) = crossing.sale_ids
        assert [s.amount for s in lg.views.unbilled_sales(DISTRIBUTOR) if s.sale_id == sale_id] == [
            "20.00"
        ]
        held = lg.balance(DISTRIBUTOR)
        lg.execute(
            {"type": "IssueCreditCode", "code_id": "K", "distributor_id": DISTRIBUTOR,
             "unit": "stamps", "quantity": held - 5, "amount": "0.00", "actor": DISTRIBUTOR}
        )  # fmt: skip
        for _ in range(39):
            lg.execute(consume(actor="M"))  # 49 → 10
        failed = lg.execute(consume(actor="M"))  # 10 → 9: D1 holds 5 of 40
        assert failed.warnings == ("auto_top_up_failed",)
    with Ledger.open(url, clock=clock, password_cost="fast") as cold:
        (failure,) = cold.views.auto_top_up_failures(DISTRIBUTOR)
        assert (failure.cti_id, failure.available, failure.requested) == (CTI, 5, 40)
        assert cold.balance(CTI) == 9
        assert cold.verify().ok


def test_points_purchase_and_panel_purchase(url: str, clock: ManualClock) -> None:
    """D1 pays the master in points; C1 buys points through its panel beyond D1's stock."""
    with Ledger.open(url, clock=clock, password_cost="fast") as lg:
        results = lg.execute_many(
            [
                {"type": "BuyPackage", "buyer_id": DISTRIBUTOR, "seller_id": "M",
                 "package_id": "PTS3000", "actor": DISTRIBUTOR},
                {"type": "BuyPackage", "buyer_id": DISTRIBUTOR, "seller_id": "M",
                 "package_id": "P1000", "pay_with": "points", "actor": DISTRIBUTOR},
                {"type": "DefinePackage", "seller_id": DISTRIBUTOR, "package_id": "CP",
                 "unit": "points", "quantity": 2_600, "price": "2600.00", "audience": "client",
                 "actor": DISTRIBUTOR},
                {"type": "ChangeSettings", "seller_id": DISTRIBUTOR,
                 "allow_pcc_point_purchase": True, "actor": DISTRIBUTOR},
                {"type": "ClientBuyPackage", "client_id": CLIENT, "package_id": "CP",
                 "actor": CLIENT},
            ]
        )  # fmt: skip
        assert all(not isinstance(r, Rejected) for r in results), results
        panel = results[-1]
        assert len(panel.sale_ids) == 2  # the client's sale and D1's supply purchase
    with Ledger.open(url, clock=clock, password_cost="fast") as cold:
        # 3,000 - 500 (paid) + 3,000 (supply) - 2,600 (sold to C1)
        assert cold.balance(DISTRIBUTOR, "points") == 2_900
        assert cold.balance(CLIENT, "points") == 2_600
        assert cold.balance(DISTRIBUTOR, "stamps") == 11_000
        paid = [s.paid_with for s in cold.views.unbilled_sales("M") if s.unit == "stamps"]
        assert sorted(paid) == ["money", "points"]
        assert cold.verify().ok
