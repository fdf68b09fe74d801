"""A realistic network on a real SQLite file and the real PostgreSQL: exact balances, reopened.

Each test runs on both backends (the ``store_url`` fixture). Reopening the ledger starts a new
engine with a cold cache, so every balance checked afterwards is rebuilt from stored snapshots and
events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from adapters.storage.store import EventStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from ledger.outcome import Outcome
from tests.support import MASTER, client_profile, consume, distributor_profile, transfer_stamps

D1, D2 = "D1", "D2"
C1, C2, C3 = "C1", "C2", "C3"
CTI1, CTI2, CTI3, UNLIMITED = "C1-cti", "C2-cti", "C3-cti", "U1"
REPEATED_CFDI = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def open_ledger(url: str, clock: ManualClock) -> Ledger:
    """The ledger at ``url`` with cheap password hashing and no projections."""
    return Ledger.open(url, clock=clock, projections="off", password_cost="fast")


def all_ok(results: list[Outcome | Rejected]) -> None:
    """Every command of a batch succeeded."""
    failed = [r for r in results if isinstance(r, Rejected)]
    assert failed == [], [r.to_dict() for r in failed]


def network(lg: Ledger) -> None:
    """Master, D1 (Multinivel) with sub-distributor D2, three clients and their CTIs."""
    all_ok(
        lg.execute_many(
            [
                {"type": "OpenMasterAccount", "master_id": MASTER, "name": "Plataforma",
                 "rfc": "SAT970701NN3"},
                {"type": "DefinePackage", "actor": MASTER,
                 "seller_id": MASTER, "package_id": "P1000",
                 "unit": "stamps", "quantity": 1000, "price": "500.00", "audience": "distributor"},
                {"type": "DefinePackage", "actor": MASTER,
                 "seller_id": MASTER, "package_id": "PTS3000",
                 "unit": "points", "quantity": 3000, "price": "2850.00",
                 "audience": "distributor"},
                {"type": "RegisterDistributor", "actor": MASTER,
                 "distributor_id": D1, "parent_id": MASTER,
                 "profile": distributor_profile("Uno", "uno@example.com")},
                {"type": "ValidateDistributor", "distributor_id": D1, "actor": MASTER},
                {"type": "ActivateDistributor", "distributor_id": D1, "actor": MASTER,
                 "expires_on": "2027-01-31"},
                {"type": "BuyPackage", "actor": D1, "buyer_id": D1, "seller_id": MASTER,
                 "package_id": "P1000", "count": 5},
                {"type": "BuyPackage", "actor": D1, "buyer_id": D1, "seller_id": MASTER,
                 "package_id": "PTS3000", "count": 2},
                {"type": "DefineSubscriptionProduct", "seller_id": MASTER, "actor": MASTER,
                 "product": "Multinivel", "kind": "multinivel", "annual_price": "12000.00"},
                {"type": "ContractSubscription", "distributor_id": D1, "product": "Multinivel",
                 "actor": D1},
                {"type": "RegisterDistributor", "actor": D1, "distributor_id": D2, "parent_id": D1,
                 "profile": distributor_profile("Dos", "dos@example.com")},
                {"type": "ValidateDistributor", "distributor_id": D2, "actor": D1},
                {"type": "ActivateDistributor", "distributor_id": D2, "actor": D1,
                 "expires_on": "2026-12-31"},
                {"type": "DefinePackage", "actor": D1, "seller_id": D1, "package_id": "D500",
                 "unit": "stamps", "quantity": 500, "price": "300.00", "audience": "distributor"},
                {"type": "DefinePackage", "actor": D1,
                 "seller_id": D1, "package_id": "G30", "unit": "stamps",
                 "quantity": 30, "price": "60.00", "audience": "client", "validity_days": 10},
                {"type": "BuyPackage", "actor": D2,
                 "buyer_id": D2, "seller_id": D1, "package_id": "D500",
                 "count": 2},
                {"type": "RegisterClient", "actor": D1, "client_id": C1, "distributor_id": D1,
                 "profile": client_profile("Juan", "juan@example.com")},
                {"type": "RegisterClient", "actor": D1, "client_id": C2, "distributor_id": D1,
                 "profile": client_profile("Ana", "ana@example.com")},
                {"type": "RegisterClient", "actor": D2, "client_id": C3, "distributor_id": D2,
                 "profile": client_profile("Luis", "luis@example.com")},
            ]
        )
    )  # fmt: skip


def movements(lg: Ledger, clock: ManualClock) -> None:
    """Transfers, a mass transfer, points, an unlimited CTI, a client package, consumption."""
    all_ok(
        lg.execute_many(
            [
                {"type": "TransferStamps", "actor": D1,
                 "transfer_id": "T1", "from_id": D1, "to_id": CTI1,
                 "quantity": 1000, "amount": "600.00"},
                {"type": "MassTransfer", "actor": D1, "batch_id": "B1", "from_id": D1,
                 "lines": [{"to_id": CTI1, "quantity": 100, "amount": "60.00"},
                           {"to_id": CTI2, "quantity": 50, "amount": "30.00"},
                           {"to_id": D2, "quantity": 200, "amount": "100.00"}]},
                {"type": "TransferPoints", "actor": D1,
                 "transfer_id": "P1", "from_id": D1, "to_id": C1,
                 "quantity": 2000},
                {"type": "OpenStampingAccount", "actor": "D1", "cti_id": UNLIMITED, "client_id": C1,
                 "kind": "unlimited", "password": "clave-larga-1"},
                {"type": "AssignPackage", "actor": "D1",
                 "grant_id": "G-1", "seller_id": D1, "cti_id": CTI2,
                 "package_id": "G30"},
                {"type": "TransferStamps", "actor": D2,
                 "transfer_id": "T2", "from_id": D2, "to_id": CTI3,
                 "quantity": 120, "amount": "60.00"},
            ]
        )
    )  # fmt: skip
    clock.advance(timedelta(hours=1))
    # The hot path, batched: 620 consumptions cross a snapshot boundary of C1's CTI.
    all_ok(lg.execute_many([consume(CTI1) for _ in range(619)]))
    lg.execute(consume(CTI1, cfdi_uuid=REPEATED_CFDI))
    for _ in range(5):
        lg.execute(consume(CTI2))
    all_ok(lg.execute_many([consume(CTI3) for _ in range(20)]))
    all_ok(lg.execute_many([consume(UNLIMITED) for _ in range(3)]))
    lg.execute(
        {"type": "ReclaimStamps", "actor": "D1",
         "transfer_id": "R1", "from_cti_id": CTI1, "quantity": 60,
         "reason": "falta de pago", "amount": "30.00"}
    )  # fmt: skip


EXPECTED = {
    (MASTER, "stamps"): -5_000,
    (MASTER, "points"): -6_000,
    # 5,000 bought; 1,000 sold to D2; 1,000 + 350 transferred; 30 granted; 60 reclaimed.
    (D1, "stamps"): 2_680,
    (D1, "points"): 4_000,
    (D2, "stamps"): 1_080,
    (C1, "points"): 500,
    (CTI1, "stamps"): 420,  # 1,100 in, 620 consumed, 60 reclaimed
    (CTI2, "stamps"): 75,  # 50 + 30 in, 5 consumed from the package lot first
    (CTI3, "stamps"): 100,
    (UNLIMITED, "stamps"): 0,
}


@contextmanager
def flowed(url: str, clock: ManualClock) -> Iterator[Ledger]:
    """The ledger at ``url`` after ``network`` and ``movements``."""
    with open_ledger(url, clock) as lg:
        network(lg)
        movements(lg, clock)
        yield lg


def record_flow(url: str, clock: ManualClock) -> None:
    """Records ``network`` and ``movements`` at ``url`` and closes the ledger."""
    with flowed(url, clock):
        pass


def balances(lg: Ledger) -> dict[tuple[str, str], int]:
    """Every balance of ``EXPECTED`` as the ledger reports it now."""
    return {(holder, unit): lg.balance(holder, unit) for holder, unit in EXPECTED}


def test_balances_are_exact_after_the_flow(store_url: str, clock: ManualClock) -> None:
    """The flow leaves every holder with its exact balance."""
    with flowed(store_url, clock) as lg:
        assert balances(lg) == EXPECTED


def postings_sums(lg: Ledger) -> Counter[str]:
    """Per unit, the sum of every posting of every stored event (read back from the database)."""
    store = lg.store
    assert isinstance(store, EventStore)
    total: Counter[str] = Counter()
    start = 1
    while True:
        page = store.recorder.select_notifications(start, 1_000)
        for notification in page:
            for posting in store.mapper.to_domain_event(notification).postings():
                total[posting.unit] += posting.delta
        if len(page) < 1_000:
            return total
        start = page[-1].id + 1


def test_every_unit_sums_to_zero(store_url: str, clock: ManualClock) -> None:
    """Double entry: the stored postings of each unit, sinks and source included, sum to zero."""
    with flowed(store_url, clock) as lg:
        assert dict(postings_sums(lg)) == {"stamps": 0, "points": 0}


def test_balances_are_exact_after_reopening(store_url: str, clock: ManualClock) -> None:
    """A reopened ledger (cold cache, snapshots and events from the database) agrees exactly."""
    record_flow(store_url, clock)
    with open_ledger(store_url, clock) as reopened:
        assert balances(reopened) == EXPECTED


def test_repeats_replay_after_reopening(store_url: str, clock: ManualClock) -> None:
    """Idempotency keys outlive the process: a repeated CFDI and transfer record nothing."""
    record_flow(store_url, clock)
    with open_ledger(store_url, clock) as reopened:
        again = reopened.execute(consume(CTI1, cfdi_uuid=REPEATED_CFDI))
        transfer = reopened.execute(
            transfer_stamps(1000, "T1", from_id=D1, to_id=CTI1, amount="600.00")
        )
        assert (again.replayed, transfer.replayed) == (True, True)
        assert balances(reopened) == EXPECTED


def test_work_continues_after_reopening(store_url: str, clock: ManualClock) -> None:
    """A reopened ledger goes on from the stored versions without conflicts."""
    record_flow(store_url, clock)
    with open_ledger(store_url, clock) as reopened:
        all_ok(reopened.execute_many([consume(CTI1) for _ in range(20)]))
        reopened.execute(transfer_stamps(80, "T3", from_id=D1, to_id=CTI1, amount="40.00"))
    with open_ledger(store_url, clock) as third:
        assert (third.balance(CTI1), third.balance(D1)) == (480, 2_600)


def test_expired_package_stamps_leave_the_balance_after_reopening(
    store_url: str, clock: ManualClock
) -> None:
    """Eleven days on, the client package's unused stamps no longer count."""
    record_flow(store_url, clock)
    clock.advance(timedelta(days=11))
    with open_ledger(store_url, clock) as reopened:
        assert reopened.balance(CTI2) == 50
        assert reopened.execute(consume(CTI2)).balance_after == 49
    with open_ledger(store_url, clock) as third:
        assert third.balance(CTI2) == 49


def test_two_ledgers_on_one_database_never_overdraw(store_url: str, clock: ManualClock) -> None:
    """Two engines with their own caches share a CTI: stale state is caught, never double spent."""
    with open_ledger(store_url, clock) as first:
        network(first)
        first.execute(transfer_stamps(3, "T1", from_id=D1, to_id=CTI1, amount="1.50"))
        with open_ledger(store_url, clock) as second:
            assert second.balance(CTI1) == 3  # now cached by the second engine
            first.execute(consume(CTI1))
            first.execute(consume(CTI1))
            assert second.execute(consume(CTI1)).balance_after == 0
            results = [
                first.execute_many([consume(CTI1)])[0],
                second.execute_many([consume(CTI1)])[0],
            ]
            assert [r.code for r in results if isinstance(r, Rejected)] == [
                "insufficient_stamps",
                "insufficient_stamps",
            ]


def test_a_stale_refusal_is_decided_again(store_url: str, clock: ManualClock) -> None:
    """An engine that cached an empty CTI stamps once another engine has topped it up."""
    with open_ledger(store_url, clock) as first:
        network(first)
        with open_ledger(store_url, clock) as second:
            assert second.balance(CTI1) == 0
            first.execute(transfer_stamps(2, "T1", from_id=D1, to_id=CTI1, amount="1.00"))
            assert second.execute(consume(CTI1)).balance_after == 1
