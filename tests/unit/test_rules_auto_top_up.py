"""Automatic top-up: fires once per crossing, re-arms, names its sale; failures are kept."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.api import Ledger
from ledger.errors import Rejected
from ledger.logging import capture_logs
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    client_profile,
    command,
    consume,
    network_fixture,
    on_cti,
    open_cti,
)


def rule(cti_id: str = CTI, **extra: Any) -> dict[str, Any]:
    """ConfigureAutoTopUp."""
    terms = {"minimum": 10, "credit": 50, "amount": "25.00", **extra}
    return on_cti("ConfigureAutoTopUp", cti_id, **terms)


# C1-cti holds 12 stamps; its rule: below 10, D1 sends 50 at 25.00.
lg = network_fixture(rule(), cti_stamps=12)

MASS = command(
    "MassAutoTopUp", DISTRIBUTOR, batch_id="A1", distributor_id=DISTRIBUTOR, cti_ids=[CTI, "C1-b"]
)
"""D1 sells C1-cti and C1-b their automatic top-ups in one command."""


def keep_only(lg: Ledger, stamps: int, code_id: str = "K") -> None:
    """D1 issues a credit code of all its stamps but ``stamps``."""
    quantity = lg.balance(DISTRIBUTOR) - stamps
    fields = {"code_id": code_id, "distributor_id": DISTRIBUTOR, "unit": "stamps"}
    lg.execute(command("IssueCreditCode", DISTRIBUTOR, **fields, quantity=quantity, amount="0.00"))


def stamp(lg: Ledger, n: int = 1) -> list[Any]:
    """``n`` consumptions on C1-cti, one at a time; their outcomes."""
    return [lg.execute(consume(actor="M")) for _ in range(n)]


def topics(lg: Ledger) -> list[str]:
    """Stored event topics in order."""
    return [row.topic for row in lg.store.stored_events()]


def test_the_consumption_that_crosses_names_the_automatic_sale(lg: Ledger) -> None:
    """12 → 11 → 10 → 9: the third consumption crosses; D1 sends 50 at 25.00."""
    first, second, third = stamp(lg, 3)
    assert first.sale_ids == second.sale_ids == ()
    (sale_id,) = third.sale_ids
    assert third.balance_after == 59
    assert lg.balance(DISTRIBUTOR) == 10_000 - 12 - 50
    (sale,) = [s for s in lg.views.unbilled_sales(DISTRIBUTOR) if s.sale_id == sale_id]
    assert (sale.buyer_id, sale.to_id, sale.quantity, sale.amount) == (CLIENT, CTI, 50, "25.00")
    assert lg.verify().ok


def test_it_fires_once_per_crossing_and_rearms_above_the_minimum(lg: Ledger) -> None:
    """After the top-up (59) it fires again only after the balance crosses 10 again."""
    stamp(lg, 3)
    outcomes = stamp(lg, 50)  # 59 → 9: the 50th crosses again
    assert [bool(o.sale_ids) for o in outcomes] == [False] * 49 + [True]
    assert outcomes[-1].balance_after == 59


def test_a_short_inventory_records_the_failure_once(lg: Ledger) -> None:
    """D1 holds 20 of 50: AutoTopUpFailed is recorded, warned and shown; no second failure."""
    keep_only(lg, 20, "K-drain")
    with capture_logs() as logs:
        outcomes = stamp(lg, 3)  # 12 → 11 → 10 → 9: the third crosses
    assert [o.warnings for o in outcomes] == [(), (), ("auto_top_up_failed",)]
    assert outcomes[-1].sale_ids == ()
    assert outcomes[-1].balance_after == 9
    assert topics(lg)[-1] == "StampingAccount.AutoTopUpFailed"
    warning = {"event": "command_warning", "type": "ConsumeStamp", "actor": "M",
               "warnings": ("auto_top_up_failed",), "log_level": "warning"}  # fmt: skip
    assert warning in logs
    (failure,) = lg.views.auto_top_up_failures(DISTRIBUTOR)
    assert (failure.cti_id, failure.available, failure.requested) == (CTI, 20, 50)
    assert failure.reason == "insufficient_inventory"
    before = len(topics(lg))
    (fourth,) = stamp(lg)
    assert fourth.warnings == ()
    assert len(topics(lg)) == before + 1  # the consumption only
    assert lg.verify().ok


def test_a_rule_without_amount_is_priced_by_the_list(lg: Ledger) -> None:
    """No amount: 50 stamps at D1's bulk price of 0.80 are 40.00."""
    lg.execute(
        command("ChangeSettings", DISTRIBUTOR, seller_id=DISTRIBUTOR, bulk_stamp_price="0.80")
    )
    lg.execute({k: v for k, v in rule().items() if k != "amount"})
    (sale_id,) = stamp(lg, 3)[-1].sale_ids
    (sale,) = [s for s in lg.views.unbilled_sales(DISTRIBUTOR) if s.sale_id == sale_id]
    assert sale.amount == "40.00"


def open_second_cti(lg: Ledger) -> None:
    """C1-b, a second standard CTI of C1, with its own rule (credit 50)."""
    lg.execute(open_cti("C1-b", password="secreto-123"))
    lg.execute(rule("C1-b", credit=30, amount="15.00"))


def test_a_mass_auto_sale_sells_each_selected_cti_its_top_up(lg: Ledger) -> None:
    """Two CTIs: 50 and 30 stamps, two sales, one command."""
    open_second_cti(lg)
    outcome = lg.execute(MASS)
    assert outcome.sale_ids == ("A1:1", "A1:2")
    assert (lg.balance(CTI), lg.balance("C1-b")) == (62, 30)
    assert outcome.balance_after == 10_000 - 12 - 80


def test_a_mass_auto_sale_is_all_or_nothing(lg: Ledger) -> None:
    """A selected CTI without a rule: nothing is sold."""
    lg.execute(open_cti("C1-b", password="secreto-123"))
    before = len(topics(lg))
    with pytest.raises(Rejected) as caught:
        lg.execute(MASS)
    assert caught.value.code == "invalid_transition"
    assert len(topics(lg)) == before
    assert lg.balance(CTI) == 12


def test_a_mass_auto_sale_beyond_the_inventory_sells_nothing(lg: Ledger) -> None:
    """80 stamps wanted, fewer held: insufficient_inventory."""
    open_second_cti(lg)
    keep_only(lg, 79)
    with pytest.raises(Rejected) as caught:
        lg.execute(MASS)
    assert caught.value.code == "insufficient_inventory"
    assert lg.balance(DISTRIBUTOR) == 79


def test_a_rule_without_amount_needs_a_price_list(lg: Ledger) -> None:
    """No amount and no list price: price_unknown, nothing recorded (never a silent 0.00)."""
    with pytest.raises(Rejected) as caught:
        lg.execute(rule(amount=None) | {"minimum": 3})
    assert caught.value.code == "price_unknown"
    assert caught.value.details["field"] == "amount"


def test_a_rule_whose_list_price_went_away_fails_instead_of_selling_at_zero(
    lg: Ledger,
) -> None:
    """C1's own bulk price priced the rule; once its profile drops it, the crossing records
    AutoTopUpFailed (reason price_unknown) and sells nothing."""
    profile = {**client_profile(), "bulk_stamp_price": "0.90"}
    update = {"type": "UpdateClientProfile", "client_id": CLIENT, "actor": DISTRIBUTOR}
    lg.execute({**update, "profile": profile})
    command = rule()
    del command["amount"]
    lg.execute(command)
    lg.execute({**update, "profile": {**profile, "bulk_stamp_price": None}})
    outcomes = stamp(lg, 3)
    assert outcomes[-1].warnings == ("auto_top_up_failed",)
    assert outcomes[-1].sale_ids == ()
    (failure,) = lg.views.auto_top_up_failures(DISTRIBUTOR)
    assert failure.reason == "price_unknown"
    assert lg.verify().ok
