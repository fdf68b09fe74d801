"""A holder's movements and its balance at any instant, from its own events (memory store)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ledger.api import Ledger
from ledger.audit import Movement
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import CLIENT, CTI, DISTRIBUTOR, MASTER, consume, network_ledger

START = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
UUID_A = "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F0A"
UUID_B = "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F0B"


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """The network at noon (Mexico City) on 5 January with 10 stamps on C1's CTI."""
    with network_ledger(clock, cti_stamps=10) as ledger:
        yield ledger


def two_in_one_second(lg: Ledger, clock: ManualClock) -> tuple[datetime, datetime]:
    """Two consumptions 500 µs apart in the same second; their times."""
    first = clock.advance(timedelta(minutes=1, microseconds=250))
    lg.execute(consume(cfdi_uuid=UUID_A))
    second = clock.advance(timedelta(microseconds=500))
    lg.execute(consume(cfdi_uuid=UUID_B))
    return first, second


def test_history_lists_each_movement_with_running_balance(lg: Ledger, clock: ManualClock) -> None:
    """The CTI's credit and two consumptions, oldest first, each with the balance after it."""
    first, second = two_in_one_second(lg, clock)
    assert lg.history(CTI) == [
        Movement(START, CTI, "stamps", 10, 10, DISTRIBUTOR, "T-setup",
                 "StampingAccount.StampsCredited", 2, DISTRIBUTOR),
        Movement(first, CTI, "stamps", -1, 9, "sink:consumed", UUID_A,
                 "StampingAccount.StampConsumed", 3, MASTER),
        Movement(second, CTI, "stamps", -1, 8, "sink:consumed", UUID_B,
                 "StampingAccount.StampConsumed", 4, MASTER),
    ]  # fmt: skip


def test_history_of_the_issuance_source_runs_negative(lg: Ledger) -> None:
    """The master account's history: the 10,000 stamps it issued to D1."""
    ((amount, balance, counterpart),) = [
        (m.amount, m.balance, m.counterpart) for m in lg.history(MASTER, "stamps")
    ]
    assert (amount, balance, counterpart) == (-10_000, -10_000, DISTRIBUTOR)


def test_history_of_points_lists_only_points(lg: Ledger) -> None:
    """D1's points history: the package it bought and the points it sent to C1."""
    lg.execute(
        {"type": "BuyPackage", "actor": DISTRIBUTOR, "buyer_id": DISTRIBUTOR, "seller_id": MASTER,
         "package_id": "PTS3000", "count": 1}
    )  # fmt: skip
    lg.execute(
        {"type": "TransferPoints", "actor": DISTRIBUTOR,
         "transfer_id": "TP-1", "from_id": DISTRIBUTOR,
         "to_id": CLIENT, "quantity": 500, "amount": "475.00"}
    )  # fmt: skip
    assert [(m.amount, m.balance, m.counterpart) for m in lg.history(DISTRIBUTOR, "points")] == [
        (3000, 3000, MASTER),
        (-500, 2500, CLIENT),
    ]


def test_history_of_an_unknown_holder_is_rejected(lg: Ledger) -> None:
    """No stream, no history: ``unknown_account``."""
    with pytest.raises(Rejected) as caught:
        lg.history("nobody")
    assert caught.value.code == "unknown_account"


def test_history_of_a_unit_that_is_no_book_is_rejected(lg: Ledger) -> None:
    """Only stamps and points are books."""
    with pytest.raises(Rejected) as caught:
        lg.history(CTI, "pesos")
    assert caught.value.code == "invalid_command"


def test_balance_between_two_events_of_the_same_second(lg: Ledger, clock: ManualClock) -> None:
    """Microseconds apart in one second: an instant between them sees only the first."""
    first, second = two_in_one_second(lg, clock)
    between = first + (second - first) / 2
    assert first.replace(microsecond=0) == second.replace(microsecond=0)
    assert lg.balance_at(CTI, "stamps", between) == 9


def test_an_event_at_exactly_the_instant_counts(lg: Ledger, clock: ManualClock) -> None:
    """At the second consumption's own timestamp, it has happened."""
    _, second = two_in_one_second(lg, clock)
    assert lg.balance_at(CTI, "stamps", second) == 8
    assert lg.balance_at(CTI, "stamps", second - timedelta(microseconds=1)) == 9


def test_balance_at_takes_an_iso_string_with_offset(lg: Ledger, clock: ManualClock) -> None:
    """``at`` may be ISO 8601 text in any offset (12:01 in Mexico City is 18:01 UTC)."""
    two_in_one_second(lg, clock)
    assert lg.balance_at(CTI, "stamps", "2026-01-05T12:01:00.000500-06:00") == 9


def test_balance_at_a_naive_time_is_rejected(lg: Ledger) -> None:
    """A time without an offset is ambiguous: ``invalid_command``."""
    with pytest.raises(Rejected) as caught:
        lg.balance_at(CTI, "stamps", "2026-01-05T12:00:00")
    assert caught.value.code == "invalid_command"


def test_balance_before_the_holder_existed_is_zero(lg: Ledger) -> None:
    """The CTI exists now; a minute before it was opened it held nothing."""
    assert lg.balance_at(CTI, "stamps", START - timedelta(minutes=1)) == 0


def test_balance_at_of_an_unknown_holder_is_rejected(lg: Ledger) -> None:
    """A holder with no events at all is ``unknown_account``."""
    with pytest.raises(Rejected) as caught:
        lg.balance_at("nobody", "stamps", START)
    assert caught.value.code == "unknown_account"


def test_balance_at_of_an_account_without_credits_is_rejected(lg: Ledger) -> None:
    """An admin-profile index holds no credits: ``wrong_account_kind``, as ``balance`` says."""
    with pytest.raises(Rejected) as caught:
        lg.balance_at("admin:uno@example.com", "stamps", START)
    assert caught.value.code == "wrong_account_kind"


def test_balance_at_now_equals_the_write_sides_balance(lg: Ledger, clock: ManualClock) -> None:
    """For every kind of holder, the balance at the clock's now is ``balance``."""
    two_in_one_second(lg, clock)
    for holder, unit in ((CTI, "stamps"), (DISTRIBUTOR, "stamps"), (MASTER, "stamps"),
                         (CLIENT, "points")):  # fmt: skip
        assert lg.balance_at(holder, unit, clock()) == lg.balance(holder, unit)


def grant_expiring_lot(lg: Ledger) -> None:
    """D1 grants C1's CTI a package of 5 stamps valid for 10 days (until 15 January)."""
    lg.execute(
        {"type": "DefinePackage", "actor": DISTRIBUTOR,
         "seller_id": DISTRIBUTOR, "package_id": "G5", "unit": "stamps",
         "quantity": 5, "price": "10.00", "audience": "client", "validity_days": 10}
    )  # fmt: skip
    lg.execute(
        {"type": "AssignPackage", "actor": DISTRIBUTOR,
         "grant_id": "G-1", "seller_id": DISTRIBUTOR, "cti_id": CTI,
         "package_id": "G5"}
    )  # fmt: skip


def test_expired_stamps_stop_counting_on_their_date(lg: Ledger, clock: ManualClock) -> None:
    """On 16 January the lot has expired, though no event recorded it yet: 10 stamps, not 15."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 16, 18, 0, tzinfo=UTC))
    assert lg.balance_at(CTI, "stamps", clock()) == lg.balance(CTI) == 10
    assert lg.balance_at(CTI, "stamps", datetime(2026, 1, 15, 18, 0, tzinfo=UTC)) == 15


def test_booked_balance_keeps_expired_stamps_until_recorded(lg: Ledger, clock: ManualClock) -> None:
    """In the books the lot leaves when ``StampsExpired`` is recorded, by the next command."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 16, 18, 0, tzinfo=UTC))
    before = clock()
    assert lg.balance_at(CTI, "stamps", before, booked=True) == 15
    clock.advance(timedelta(minutes=1))
    lg.execute(consume(cfdi_uuid=UUID_A))
    assert lg.balance_at(CTI, "stamps", clock(), booked=True) == 9
    assert [(m.topic, m.amount, m.balance) for m in lg.history(CTI)][-2:] == [
        ("StampingAccount.StampsExpired", -5, 10),
        ("StampingAccount.StampConsumed", -1, 9),
    ]
