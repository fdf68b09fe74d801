"""Holds (DESIGN §4): ReserveStamp, PostReservation, VoidReservation, expiry by the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from ledger.aggregates.stamping_account import StampingAccount
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.domain import Snapshot
from tests import support
from tests.support import CTI, DISTRIBUTOR, consume, network_fixture, post, rejection, reserve, void
from tests.unit.test_audit_verify import check, next_version

CFDI = "6F9619FF-8B86-D011-B42D-00C04FC964FF"

# A ledger on the in-memory store; C1's CTI holds 3 stamps.
lg = network_fixture(cti_stamps=3)


def consumed(lg: Ledger) -> int:
    """Stamps in the consumed sink, from the balances view."""
    rows = lg.views.balances("sink:consumed")
    return rows[0].balance if rows else 0


def held(lg: Ledger) -> int:
    """Stamps C1's CTI has set aside now."""
    return lg.balance(f"held:{CTI}")


# Reserving -----------------------------------------------------------------------------------


def test_a_reserve_sets_one_stamp_aside_until_five_minutes_later(
    lg: Ledger, clock: ManualClock
) -> None:
    """The outcome names the hold, the available balance and when the hold expires."""
    outcome = lg.execute(reserve())
    assert (outcome.hold_id, outcome.balance_after, outcome.cti_id) == ("H1", 2, CTI)
    assert outcome.expires_at == (clock() + timedelta(seconds=300)).isoformat()
    assert (lg.balance(CTI), held(lg)) == (2, 1)


def test_a_reserve_lasts_what_the_caller_asks_within_a_day(lg: Ledger, clock: ManualClock) -> None:
    """``expires_in_s`` is 1 to 86,400 seconds."""
    assert rejection(lg, reserve(expires_in_s=0)).code == "invalid_command"
    assert rejection(lg, reserve(expires_in_s=86_401)).code == "invalid_command"
    outcome = lg.execute(reserve(expires_in_s=86_400))
    assert outcome.expires_at == (clock() + timedelta(days=1)).isoformat()


def test_held_stamps_cannot_be_spent_twice(lg: Ledger) -> None:
    """With every stamp held, neither a consumption nor another hold finds one."""
    for n in range(3):
        lg.execute(reserve(f"H{n}"))
    assert lg.balance(CTI) == 0
    assert rejection(lg, consume()).code == "insufficient_stamps"
    assert rejection(lg, reserve("H9")).code == "insufficient_stamps"


def test_a_repeated_reserve_replays_and_another_with_the_same_id_conflicts(lg: Ledger) -> None:
    """The hold id is the reserve's key."""
    first = lg.execute(reserve(cfdi_uuid=CFDI))
    again = lg.execute(reserve(cfdi_uuid=CFDI))
    assert again.replayed
    assert again.expires_at == first.expires_at
    assert rejection(lg, reserve()).code == "idempotency_conflict"
    assert held(lg) == 1


def test_only_the_master_account_reserves(lg: Ledger) -> None:
    """The stamping service alone: the distributor is not authorised, no actor is invalid."""
    assert rejection(lg, reserve(actor=DISTRIBUTOR)).code == "not_authorised"
    command = reserve()
    del command["actor"]
    assert rejection(lg, command).code == "invalid_command"
    lg.execute(reserve("H2"))
    assert rejection(lg, post("H2", actor=DISTRIBUTOR)).code == "not_authorised"
    assert rejection(lg, void("H2", actor=DISTRIBUTOR)).code == "not_authorised"


# Posting and voiding -------------------------------------------------------------------------


def test_a_posted_hold_is_a_consumption_of_its_cfdi(lg: Ledger, clock: ManualClock) -> None:
    """The held stamp goes to the consumed sink; the available balance does not move again."""
    lg.execute(reserve(cfdi_uuid=CFDI.lower()))
    outcome = lg.execute(post())
    assert (outcome.balance_after, outcome.hold_id) == (2, "H1")
    assert outcome.details == {"local_date": "2026-01-05"}
    assert (lg.balance(CTI), held(lg), consumed(lg)) == (2, 0, 1)
    assert lg.balance_at(CTI, "stamps", clock()) == 2
    assert rejection(lg, consume(cfdi_uuid=CFDI)).code == "idempotency_conflict"


def test_the_same_post_replays_and_a_post_with_other_fields_conflicts(lg: Ledger) -> None:
    """Posting a posted hold again with the same fields is a replay."""
    lg.execute(reserve())
    first = lg.execute(post())
    again = lg.execute(post())
    assert again.replayed
    assert again.balance_after == first.balance_after
    other = post(stamped_at="2026-01-05T11:00:00-06:00")
    assert rejection(lg, other).code == "idempotency_conflict"
    assert rejection(lg, void()).code == "hold_closed"
    assert consumed(lg) == 1


def test_a_void_gives_the_stamp_back_and_replays(lg: Ledger) -> None:
    """Voiding twice is one void; posting a voided hold is ``hold_closed``."""
    lg.execute(reserve())
    assert lg.execute(void()).balance_after == 3
    assert lg.execute(void()).replayed
    assert rejection(lg, post()).code == "hold_closed"
    assert (lg.balance(CTI), held(lg)) == (3, 0)


def test_an_unknown_hold_is_refused(lg: Ledger) -> None:
    """Posting or voiding a hold never reserved is ``unknown_hold``."""
    assert rejection(lg, post("nope")).code == "unknown_hold"
    assert rejection(lg, void("nope")).code == "unknown_hold"


def test_a_void_returns_the_stamp_to_its_lot(lg: Ledger) -> None:
    """The hold took from the lot a consumption takes; the void puts it back there."""
    lg.execute(reserve("A"))
    lg.execute(support.transfer_stamps(1, "T2", amount="0.00"))
    for _ in range(2):
        lg.execute(consume())
    cti = lg.engine.current(CTI)
    assert [(lot.lot_id, lot.remaining) for lot in cti.lots] == [("T2", 1)]  # type: ignore[union-attr]
    lg.execute(void("A"))
    cti = lg.engine.current(CTI)
    lots = [(lot.lot_id, lot.remaining) for lot in cti.lots]  # type: ignore[union-attr]
    assert lots == [("T-setup", 1), ("T2", 1)]


# Expiry by the clock -------------------------------------------------------------------------


def test_an_expired_hold_counts_back_at_once_and_cannot_be_posted(
    lg: Ledger, clock: ManualClock
) -> None:
    """From ``expires_at`` on, the stamp is available again before anything is recorded."""
    lg.execute(reserve(expires_in_s=60))
    clock.advance(timedelta(seconds=59))
    assert (lg.balance(CTI), held(lg)) == (2, 1)
    clock.advance(timedelta(seconds=1))
    assert (lg.balance(CTI), held(lg)) == (3, 0)
    assert lg.balance_at(CTI, "stamps", clock()) == 3
    assert lg.balance_at(CTI, "stamps", clock(), booked=True) == 2
    assert rejection(lg, post()).code == "hold_expired"


def test_an_expired_hold_is_settled_by_the_next_consumption(lg: Ledger, clock: ManualClock) -> None:
    """With all stamps held and one hold expired, a consumption takes that stamp."""
    for n in range(3):
        lg.execute(reserve(f"H{n}", expires_in_s=60 * (n + 1)))
    clock.advance(timedelta(seconds=60))
    assert lg.execute(consume()).balance_after == 0
    assert held(lg) == 2
    assert rejection(lg, post("H0")).code == "hold_expired"
    lg.execute(post("H1"))
    assert consumed(lg) == 2
    assert lg.verify().ok


def test_voiding_an_expired_hold_is_a_void_and_posting_it_stays_expired(
    lg: Ledger, clock: ManualClock
) -> None:
    """A void after ``expires_at`` says ``expired``; posting the hold then is ``hold_expired``."""
    lg.execute(reserve())
    clock.advance(timedelta(minutes=10))
    outcome = lg.execute(void())
    assert (outcome.balance_after, outcome.details) == (3, {"expired": True})
    assert rejection(lg, post()).code == "hold_expired"
    assert lg.execute(void()).replayed


def test_a_void_after_the_expiry_was_recorded_records_only_its_key(
    lg: Ledger, clock: ManualClock
) -> None:
    """The hold is void already; the void answers so and replays afterwards."""
    lg.execute(reserve())
    clock.advance(timedelta(minutes=10))
    lg.execute(consume())  # records the expiry
    before = len(lg.store.stored_events())
    assert lg.execute(void()).details == {"expired": True}
    assert len(lg.store.stored_events()) == before
    assert lg.execute(void()).replayed
    assert rejection(lg, post()).code == "hold_expired"


# One CFDI, one consumption ---------------------------------------------------------------------


def test_a_cfdi_held_open_cannot_be_consumed_directly(lg: Ledger, clock: ManualClock) -> None:
    """Its hold will consume it; once the hold expired, ConsumeStamp may."""
    lg.execute(reserve(cfdi_uuid=CFDI, expires_in_s=60))
    refused = rejection(lg, consume(cfdi_uuid=CFDI.lower()))
    assert refused.code == "idempotency_conflict"
    assert refused.details == {"key": f"cfdi:{CFDI}", "hold_id": "H1"}
    clock.advance(timedelta(seconds=60))
    assert lg.execute(consume(cfdi_uuid=CFDI)).balance_after == 2
    assert rejection(lg, post()).code == "hold_expired"


def test_a_consumed_cfdi_cannot_be_held(lg: Ledger) -> None:
    """Reserving a stamp for a CFDI already consumed is refused with its key."""
    lg.execute(consume(cfdi_uuid=CFDI))
    refused = rejection(lg, reserve(cfdi_uuid=CFDI))
    assert (refused.code, refused.details["key"]) == ("idempotency_conflict", f"cfdi:{CFDI}")


def test_a_hold_whose_cfdi_was_consumed_elsewhere_cannot_be_posted(lg: Ledger) -> None:
    """The CFDI's key decides: consumed on another CTI first, the post is refused."""
    lg.execute(support.open_cti("C1-cti2", password="secreto-largo-1"))
    lg.execute(support.transfer_stamps(1, "T2", to_id="C1-cti2", amount="0.00"))
    lg.execute(reserve(cfdi_uuid=CFDI))
    lg.execute(consume("C1-cti2", cfdi_uuid=CFDI))
    assert rejection(lg, post()).code == "idempotency_conflict"
    assert lg.execute(void()).balance_after == 3
    assert lg.verify().ok


def test_a_voided_cfdi_can_be_held_again_and_consumed_once(lg: Ledger) -> None:
    """A void consumes nothing: the CFDI may be held again; posting that hold consumes it."""
    lg.execute(reserve("A", cfdi_uuid=CFDI))
    lg.execute(void("A"))
    lg.execute(reserve("B", cfdi_uuid=CFDI))
    assert rejection(lg, reserve("C", cfdi_uuid=CFDI)).code == "idempotency_conflict"
    lg.execute(post("B"))
    assert rejection(lg, reserve("D", cfdi_uuid=CFDI)).code == "idempotency_conflict"
    assert consumed(lg) == 1


# Books and audit -----------------------------------------------------------------------------


def test_holds_are_double_entry_through_the_held_book(lg: Ledger) -> None:
    """Reserve: CTI to its held book; post: held book to the consumed sink; void: back."""
    lg.execute(reserve("A", cfdi_uuid=CFDI))
    lg.execute(reserve("B"))
    lg.execute(post("A"))
    lg.execute(void("B"))
    legs = [(m.amount, m.counterpart, m.ref) for m in lg.history(f"held:{CTI}")]
    assert legs == [
        (1, CTI, "hold:A"),
        (1, CTI, "hold:B"),
        (-1, "sink:consumed", CFDI),
        (-1, CTI, "hold:B"),
    ]
    cti_legs = [(m.amount, m.counterpart) for m in lg.history(CTI)][-3:]
    assert cti_legs == [(-1, f"held:{CTI}"), (-1, f"held:{CTI}"), (1, f"held:{CTI}")]
    report = lg.verify()
    assert report.ok, report.breaches
    assert report.totals["stamps"] == 0


def test_the_held_book_at_an_instant(lg: Ledger, clock: ManualClock) -> None:
    """``balance_at`` of the held book: open holds not past their time."""
    start = clock()
    lg.execute(reserve(expires_in_s=60))
    assert lg.balance_at(f"held:{CTI}", "stamps", start + timedelta(seconds=59)) == 1
    assert lg.balance_at(f"held:{CTI}", "stamps", start + timedelta(seconds=60)) == 0
    later = start + timedelta(seconds=60)
    assert lg.balance_at(f"held:{CTI}", "stamps", later, booked=True) == 1


def test_an_unlimited_account_records_holds_without_a_balance(lg: Ledger) -> None:
    """Holds on an unlimited CTI set nothing aside; posting counts a consumption."""
    support.ok(
        lg,
        support.buy("PTS3000", count=1),
        support.transfer_points(1500, "TP", amount="0.00"),
        support.open_cti("U1", "unlimited", password="secreto-largo-1"),
    )
    outcome = lg.execute(reserve("U", cti_id="U1", cfdi_uuid=CFDI))
    assert (outcome.balance_after, lg.balance("held:U1")) == (0, 0)
    lg.execute(post("U"))
    cti = lg.engine.current("U1")
    assert cti is not None
    assert cti.used == 1  # type: ignore[attr-defined]
    assert rejection(lg, consume("U1", cfdi_uuid=CFDI)).code == "idempotency_conflict"
    assert consumed(lg) == 0
    assert lg.verify().ok


def test_a_hold_time_is_the_ledger_clock(lg: Ledger, clock: ManualClock) -> None:
    """``expires_at`` counts from the ledger clock, not the caller's."""
    clock.set(datetime(2026, 1, 6, 0, 0, tzinfo=UTC))
    assert lg.execute(reserve()).expires_at == "2026-01-06T00:05:00+00:00"


# verify ----------------------------------------------------------------------------------------


def _forge_close(rows: list[Any], hold_id: str, lot_id: str = "T-setup") -> list[Any]:
    event = StampingAccount.ReservationVoided(
        originator_id=CTI,
        originator_version=next_version(rows, CTI),
        timestamp=datetime(2026, 1, 5, 18, 30, tzinfo=UTC),
        hold_id=hold_id,
        expired=False,
        lot_id=lot_id,
    )
    return support.forged(rows, event)


def test_verify_reports_a_hold_closed_twice(lg: Ledger) -> None:
    """A second close of a hold is ``hold_closed_twice`` (its stamp came back twice)."""
    lg.execute(reserve("A"))
    lg.execute(reserve("B"))
    lg.execute(void("A"))
    rows = _forge_close(support.rows_of(lg), "A")
    report = check(rows)
    assert report.breach_counts == {"hold_closed_twice": 1}, report.breaches
    assert report.breaches[0].position == rows[-1].id


def test_verify_reports_a_hold_closed_unopened_and_a_negative_held_book(lg: Ledger) -> None:
    """Closing a hold never opened takes the held book below zero."""
    rows = _forge_close(support.rows_of(lg), "ghost")
    report = check(rows)
    assert report.breach_counts == {"hold_not_opened": 1, "negative_balance": 1}
    negative = next(b for b in report.breaches if b.check == "negative_balance")
    assert negative.message.startswith(f"held:{CTI} goes to -1 stamps")


def test_a_snapshot_stored_before_holds_restores_a_cti_without_open_holds(lg: Ledger) -> None:
    """Snapshots are stored schema too: one without the hold fields still loads."""
    cti = lg.engine.current(CTI)
    assert isinstance(cti, StampingAccount)
    taken = Snapshot.take(cti, cti.modified_on)
    state = msgspec.json.decode(taken.state)
    del state["holds"], state["held_cfdis"]
    old = msgspec.structs.replace(taken, state=msgspec.Raw(msgspec.json.encode(state)))
    restored = old.mutate(None)
    assert isinstance(restored, StampingAccount)
    assert (restored.holds, restored.held_cfdis, restored.balance()) == ({}, {}, 3)
