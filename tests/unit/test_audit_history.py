"""A holder's movements and its balance at any instant, from its own events (memory store)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ledger.api import Ledger
from ledger.audit import Movement
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    MASTER,
    consume,
    network_ledger,
    reserve,
    void,
)

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


# Expiries at their instants (DESIGN §6 audit) ----------------------------------------------------

EXPIRY = datetime(2026, 1, 16, 6, 0, tzinfo=UTC)
"""Midnight of 16 January in Mexico City: the instant the lot valid until 15 January leaves."""


def assert_every_instant_agrees(lg: Ledger, holder: str = CTI) -> list[Movement]:
    """At every movement's instant, the running balance of the last movement then is
    ``balance_at``; the last one is ``balance()``. Returns the history."""
    history = lg.history(holder)
    for index, movement in enumerate(history):
        if index + 1 < len(history) and history[index + 1].at == movement.at:
            continue
        assert lg.balance_at(holder, "stamps", movement.at) == movement.balance, movement
    assert history[-1].balance == lg.balance(holder)
    return history


def test_an_expired_lot_is_a_movement_at_its_instant(lg: Ledger, clock: ManualClock) -> None:
    """Nothing recorded the expiry yet: history still lists it at midnight, reason expired,
    and its last running balance is the balance."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 16, 18, 0, tzinfo=UTC))
    history = assert_every_instant_agrees(lg)
    last = history[-1]
    assert (last.at, last.amount, last.balance, last.reason) == (EXPIRY, -5, 10, "expired")
    assert (last.topic, last.counterpart, last.ref) == (
        "StampingAccount.StampsExpired",
        "sink:expired",
        f"expiry:{CTI}:G-1",
    )


def test_an_expiry_is_listed_before_it_is_due_no_more(lg: Ledger, clock: ManualClock) -> None:
    """On 15 January the lot still counts: no expiry movement yet."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 16, 5, 59, tzinfo=UTC))
    history = assert_every_instant_agrees(lg)
    assert all(m.reason is None for m in history)
    assert history[-1].balance == 15


def test_a_recorded_expiry_stays_at_its_instant_and_counts_once(
    lg: Ledger, clock: ManualClock
) -> None:
    """The consumption that records the expiry a day later lists only itself."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 17, 18, 0, tzinfo=UTC))
    lg.execute(consume(cfdi_uuid=UUID_A))
    history = assert_every_instant_agrees(lg)
    assert [(m.at, m.amount, m.balance, m.reason) for m in history[-2:]] == [
        (EXPIRY, -5, 10, "expired"),
        (clock(), -1, 9, None),
    ]


def test_a_hold_that_runs_out_is_a_movement_at_its_instant(lg: Ledger, clock: ManualClock) -> None:
    """A hold of 5 minutes: at its end the stamp is back (reason hold_expired) and leaves the
    held book, though nothing recorded it; the void recorded later adds nothing."""
    lg.execute(reserve("H1", UUID_A, expires_in_s=300))
    ends = clock() + timedelta(minutes=5)
    clock.advance(timedelta(minutes=10))
    history = assert_every_instant_agrees(lg)
    assert [(m.at, m.amount, m.balance, m.reason) for m in history[-2:]] == [
        (clock() - timedelta(minutes=10), -1, 9, None),
        (ends, 1, 10, "hold_expired"),
    ]
    held = assert_every_instant_agrees(lg, f"held:{CTI}")
    assert [(m.at, m.amount, m.reason) for m in held] == [
        (ends - timedelta(minutes=5), 1, None),
        (ends, -1, "hold_expired"),
    ]
    lg.execute(consume(cfdi_uuid=UUID_B))
    assert [(m.at, m.amount, m.reason) for m in assert_every_instant_agrees(lg)[-2:]] == [
        (ends, 1, "hold_expired"),
        (clock(), -1, None),
    ]


def test_a_hold_on_a_lot_that_expired_meanwhile_brings_nothing_back(
    lg: Ledger, clock: ManualClock
) -> None:
    """A hold takes a stamp of the expiring lot late on its last day and runs out after
    midnight: the lot leaves at midnight, and the stamp that comes back leaves with it."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 16, 5, 30, tzinfo=UTC))  # 23:30 on 15 January in Mexico City
    lg.execute(reserve("H1", UUID_A, expires_in_s=7200))
    clock.set(datetime(2026, 1, 16, 9, 0, tzinfo=UTC))
    history = assert_every_instant_agrees(lg)
    assert [(m.at, m.amount, m.reason) for m in history[-3:]] == [
        (EXPIRY, -4, "expired"),
        (EXPIRY + timedelta(hours=1, minutes=30), 1, "hold_expired"),
        (EXPIRY + timedelta(hours=1, minutes=30), -1, "expired"),
    ]
    assert history[-1].balance == lg.balance(CTI) == 10


def test_a_stamp_voided_back_into_an_expired_lot_leaves_with_it(
    lg: Ledger, clock: ManualClock
) -> None:
    """Voided after midnight but before its end, the hold's stamp returns to a lot that has
    expired: the void and the expiry it records net out, the balance stays."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 16, 5, 30, tzinfo=UTC))
    lg.execute(reserve("H1", UUID_A, expires_in_s=7200))
    clock.set(datetime(2026, 1, 16, 6, 30, tzinfo=UTC))
    lg.execute(void("H1"))
    history = assert_every_instant_agrees(lg)
    assert [(m.at, m.amount, m.balance, m.reason) for m in history[-3:]] == [
        (EXPIRY, -4, 10, "expired"),
        (clock(), 1, 11, None),
        (clock(), -1, 10, "expired"),
    ]
    assert lg.verify().ok


def test_a_movement_carries_its_reason_in_its_dict(lg: Ledger, clock: ManualClock) -> None:
    """``to_dict`` (``ledger history``, the HTTP API) names the reason."""
    grant_expiring_lot(lg)
    clock.set(datetime(2026, 1, 16, 18, 0, tzinfo=UTC))
    assert lg.history(CTI)[-1].to_dict()["reason"] == "expired"
    assert lg.history(CTI)[0].to_dict()["reason"] is None
