"""Credit codes, points purchases and panel purchases on a real SQLite file and PostgreSQL.

Each test runs on both backends; reopening the ledger (a cold cache) shows that what was decided
is what is stored, and ``verify`` replays it all.
"""

from __future__ import annotations

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import CLIENT, CTI, DISTRIBUTOR, build_network


@pytest.fixture
def url(store_url: str, clock: ManualClock) -> str:
    """A database holding the standard network (D1 with 10,000 stamps, C1 and its CTI)."""
    with Ledger.open(store_url, clock=clock, password_cost="fast") as lg:
        build_network(lg)
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
