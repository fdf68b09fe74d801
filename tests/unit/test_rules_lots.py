"""Lots of a stamping account: client packages with a validity, consumption order and expiry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.domain import Event
from tests.support import CTI, DISTRIBUTOR, consume, network_ledger, rejection


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """A ledger on the in-memory store; D1 sells client packages of 10 stamps for 10 and 60 days."""
    with network_ledger(clock) as ledger:
        for package_id, days in (("G10", 10), ("G60", 60)):
            ledger.execute(
                {
                    "type": "DefinePackage",
                    "actor": DISTRIBUTOR,
                    "seller_id": DISTRIBUTOR,
                    "package_id": package_id,
                    "unit": "stamps",
                    "quantity": 10,
                    "price": "100.00",
                    "audience": "client",
                    "validity_days": days,
                }
            )
        yield ledger


def grant(grant_id: str, package_id: str = "G10", **extra: Any) -> dict[str, Any]:
    """D1 assigns a client package to C1's CTI."""
    return {
        "type": "AssignPackage",
        "actor": DISTRIBUTOR,
        "grant_id": grant_id,
        "seller_id": DISTRIBUTOR,
        "cti_id": CTI,
        "package_id": package_id,
        **extra,
    }


def transfer(transfer_id: str, quantity: int = 5) -> dict[str, Any]:
    """D1 transfers bought stamps (they never expire) to C1's CTI."""
    return {
        "type": "TransferStamps",
        "actor": DISTRIBUTOR,
        "transfer_id": transfer_id,
        "from_id": DISTRIBUTOR,
        "to_id": CTI,
        "quantity": quantity,
        "amount": "2.50",
    }


def events_of(lg: Ledger, kind: str) -> list[Event]:
    """Recorded events of one kind on C1's CTI."""
    return [e for e in lg.store.events() if e.originator_id == CTI and type(e).__name__ == kind]


def lots_consumed(lg: Ledger) -> list[str]:
    """The lot each consumption took from, in order."""
    return [e.lot_id for e in events_of(lg, "StampConsumed")]  # type: ignore[attr-defined]


def postings_sum(lg: Ledger) -> Counter[str]:
    """Sum of every posting per unit."""
    total: Counter[str] = Counter()
    for event in lg.store.events():
        for posting in event.postings():
            total[posting.unit] += posting.delta
    return total


# AssignPackage ---------------------------------------------------------------------------------


def test_a_package_lands_as_a_lot_with_its_validity(lg: Ledger) -> None:
    """The grant's stamps expire ``validity_days`` after today, and count until then."""
    outcome = lg.execute(grant("G1"))
    assert (outcome.balance_after, outcome.sale_ids) == (10, ("G1",))
    assert outcome.details == {"expires_on": "2026-01-15"}
    assert (lg.balance(CTI), lg.balance(DISTRIBUTOR)) == (10, 9_990)


def test_a_package_for_another_distributors_cti_is_not_authorised(lg: Ledger) -> None:
    """The actor must be the CTI's distributor (or its master)."""
    assert rejection(lg, grant("G1", actor="D2")).code == "not_authorised"


def test_an_unknown_package_is_refused(lg: Ledger) -> None:
    """Only client packages of the seller's price list can be assigned."""
    assert rejection(lg, grant("G1", "NOPE")).code == "unknown_package"


def test_a_package_beyond_inventory_is_insufficient_inventory(lg: Ledger) -> None:
    """The package's stamps come from the seller's inventory."""
    lg.execute(transfer("T-all", 9_995))
    assert rejection(lg, grant("G1")).code == "insufficient_inventory"


# Consumption order -----------------------------------------------------------------------------


def test_consumption_takes_from_the_lot_that_expires_first(lg: Ledger) -> None:
    """Expiring stamps go before stamps that never expire, even when they arrived later."""
    lg.execute(transfer("T1"))
    lg.execute(grant("G1"))
    lg.execute(consume())
    assert lots_consumed(lg) == ["G1"]


def test_a_sooner_expiry_wins_over_an_older_lot(lg: Ledger) -> None:
    """A newer lot that expires sooner is consumed before an older one."""
    lg.execute(grant("G-long", "G60"))
    lg.execute(grant("G-short", "G10"))
    lg.execute(consume())
    assert lots_consumed(lg) == ["G-short"]


def test_among_lots_that_never_expire_the_oldest_goes_first(lg: Ledger) -> None:
    """With equal expiry, the lot that arrived first is consumed first, until it is empty."""
    lg.execute(transfer("T1", 2))
    lg.execute(transfer("T2", 2))
    for _ in range(3):
        lg.execute(consume())
    assert lots_consumed(lg) == ["T1", "T1", "T2"]


def test_among_lots_with_the_same_expiry_the_oldest_goes_first(lg: Ledger) -> None:
    """Two grants on the same day expire together: the first one is consumed first."""
    lg.execute(grant("G-a"))
    lg.execute(grant("G-b"))
    lg.execute(consume())
    assert lots_consumed(lg) == ["G-a"]


# Expiry ----------------------------------------------------------------------------------------


def test_the_last_day_of_validity_still_counts(lg: Ledger, clock: ManualClock) -> None:
    """On its expiry date (Mexico City) a lot is still usable."""
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=10))
    assert lg.balance(CTI) == 10
    assert lg.execute(consume()).balance_after == 9


def test_expired_lots_no_longer_count(lg: Ledger, clock: ManualClock) -> None:
    """The day after its expiry a lot leaves the balance."""
    lg.execute(transfer("T1"))
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=11))
    assert lg.balance(CTI) == 5


def test_consumption_skips_expired_lots(lg: Ledger, clock: ManualClock) -> None:
    """After expiry the next consumption takes from a lot that is still valid."""
    lg.execute(transfer("T1"))
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=11))
    assert lg.execute(consume()).balance_after == 4
    assert lots_consumed(lg) == ["T1"]


def test_a_cti_with_only_expired_stamps_is_insufficient_stamps(
    lg: Ledger, clock: ManualClock
) -> None:
    """Expired stamps cannot be used, and the refusal records nothing (not even the expiry)."""
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=11))
    assert rejection(lg, consume()).code == "insufficient_stamps"
    assert events_of(lg, "StampsExpired") == []


def test_expiry_is_recorded_by_the_next_consumption(lg: Ledger, clock: ManualClock) -> None:
    """The next successful consumption records the expired lot's remaining stamps."""
    lg.execute(transfer("T1"))
    lg.execute(grant("G1"))
    lg.execute(consume())
    clock.advance(timedelta(days=11))
    lg.execute(consume())
    (expired,) = events_of(lg, "StampsExpired")
    assert (expired.lot_id, expired.quantity) == ("G1", 9)  # type: ignore[attr-defined]


def test_expiry_is_recorded_by_the_next_credit(lg: Ledger, clock: ManualClock) -> None:
    """A transfer into a CTI with an expired lot records that expiry too."""
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=11))
    lg.execute(transfer("T1"))
    (expired,) = events_of(lg, "StampsExpired")
    assert (expired.lot_id, expired.quantity) == ("G1", 10)  # type: ignore[attr-defined]
    assert lg.balance(CTI) == 5


def test_expiry_is_recorded_by_the_next_grant(lg: Ledger, clock: ManualClock) -> None:
    """A new package on a CTI with an expired lot records that expiry."""
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=11))
    lg.execute(grant("G2"))
    assert [e.lot_id for e in events_of(lg, "StampsExpired")] == ["G1"]  # type: ignore[attr-defined]
    assert lg.balance(CTI) == 10


def test_recorded_expiry_keeps_the_books_balanced(lg: Ledger, clock: ManualClock) -> None:
    """Expired stamps move to the expired sink: every unit still sums to zero."""
    lg.execute(transfer("T1"))
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=11))
    lg.execute(consume())
    assert dict(postings_sum(lg)) == {"stamps": 0}


def test_a_reclaim_takes_only_valid_stamps(lg: Ledger, clock: ManualClock) -> None:
    """Expired stamps cannot be reclaimed; the reclaim records their expiry first."""
    lg.execute(transfer("T1"))
    lg.execute(grant("G1"))
    clock.advance(timedelta(days=11))
    reclaim = {
        "type": "ReclaimStamps",
        "actor": DISTRIBUTOR,
        "transfer_id": "R1",
        "from_cti_id": CTI,
        "quantity": 6,
        "reason": "falta de pago",
        "amount": "3.00",
    }
    assert rejection(lg, reclaim).code == "insufficient_stamps"
    assert lg.execute({**reclaim, "quantity": 5}).balance_after == 0
    assert (lg.balance(DISTRIBUTOR), len(events_of(lg, "StampsExpired"))) == (9_990, 1)


def test_a_reclaim_takes_the_lot_that_expires_first(lg: Ledger) -> None:
    """A reclaim takes from lots in consumption order."""
    lg.execute(transfer("T1"))
    lg.execute(grant("G1"))
    lg.execute(
        {
            "type": "ReclaimStamps",
            "actor": DISTRIBUTOR,
            "transfer_id": "R1",
            "from_cti_id": CTI,
            "quantity": 12,
            "reason": "falta de pago",
            "amount": "6.00",
        }
    )
    (reclaimed,) = events_of(lg, "StampsReclaimed")
    assert reclaimed.taken == (("G1", 10), ("T1", 2))  # type: ignore[attr-defined]
