"""Tamper evidence: rows edited, deleted or inserted with SQL are caught by ``verify``.

Each test builds real books through the ledger, closes it, changes the events table directly
with SQL (as an intruder with database access would), reopens and verifies.
"""

from __future__ import annotations

import pytest

from ledger.api import Ledger
from ledger.audit import VerifyReport
from ledger.clock import ManualClock
from tests.support import CTI, RawDb, consume, network_ledger

UUIDS = [f"6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F{n:02d}" for n in range(10)]


def build_books(url: str, clock: ManualClock) -> None:
    """A network, 10 stamps on C1's CTI and three consumptions, one transaction each."""
    with network_ledger(clock, url=url, projections="off", cti_stamps=10) as lg:
        for cfdi_uuid in UUIDS[:3]:
            lg.execute(consume(cfdi_uuid=cfdi_uuid))


def verified(url: str) -> VerifyReport:
    """``verify`` on a freshly opened ledger."""
    with Ledger.open(url, projections="off") as lg:
        return lg.verify()


def checks(report: VerifyReport) -> set[str]:
    """The names of the checks that found breaches."""
    return set(report.breach_counts)


def test_untouched_books_verify(store_url: str, clock: ManualClock) -> None:
    """Books written only through the ledger verify without a breach."""
    build_books(store_url, clock)
    report = verified(store_url)
    assert report.ok, report.breaches
    assert report.events == 17
    assert report.totals == {"stamps": 0}
    ((head,),) = RawDb(store_url).rows("SELECT hash FROM ledger_chain ORDER BY last_id DESC")[:1]
    assert report.head_hash == bytes(head).hex()


def test_edited_state_breaks_its_chain_link(store_url: str, clock: ManualClock) -> None:
    """An event whose stored JSON was edited is reported at the link that covers it."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position = db.edit(CTI, 2, quantity=1000)  # StampsCredited: 10 stamps
    report = verified(store_url)
    mismatches = [b for b in report.breaches if b.check == "chain_mismatch"]
    assert [b.position for b in mismatches] == [db.link_of(position)]


def test_edited_quantity_unbalances_its_transfer(store_url: str, clock: ManualClock) -> None:
    """An edited quantity leaves the transfer's two sides unequal and the books unbalanced."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position = db.edit(CTI, 2, quantity=1000)
    report = verified(store_url)
    sides = [b for b in report.breaches if b.check == "transfer_sides"]
    assert len(sides) == 1
    assert "T-setup" in sides[0].message
    assert sides[0].position < position  # the debit leg, recorded first in the same transaction
    assert [b.message for b in report.breaches if b.check == "zero_sum"] == [
        "the stamps of all holders sum to 990, not to 0"
    ]


def test_garbled_state_is_reported_undecodable(store_url: str, clock: ManualClock) -> None:
    """A stored state that is no longer an event is a decode breach at its position."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position, _, _ = db.event(CTI, 3)
    db.set_state(CTI, 3, b"{not json")
    report = verified(store_url)
    decode = [b for b in report.breaches if b.check == "decode"]
    assert [(b.position, b.aggregate_id) for b in decode] == [(position, CTI)]
    assert "chain_mismatch" in checks(report)


def test_deleted_event_breaks_its_link_and_leaves_a_version_gap(
    store_url: str, clock: ManualClock
) -> None:
    """A consumption deleted from the middle of a stream: its link and the next version say so."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    next_position, _, _ = db.event(CTI, 4)
    position = db.delete(CTI, 3)
    report = verified(store_url)
    assert checks(report) == {"chain_mismatch", "version_gap"}
    (mismatch,) = [b for b in report.breaches if b.check == "chain_mismatch"]
    assert mismatch.position == db.link_of(position) == position
    (gap,) = [b for b in report.breaches if b.check == "version_gap"]
    assert (gap.position, gap.aggregate_id) == (next_position, CTI)


def test_deleted_newest_event_breaks_its_link(store_url: str, clock: ManualClock) -> None:
    """Deleting the newest event (no later version to show a gap) is still caught by its link."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position = db.delete(CTI, 5)
    report = verified(store_url)
    assert checks(report) == {"chain_mismatch"}
    assert [b.position for b in report.breaches] == [position]


def test_inserted_event_is_outside_every_link(store_url: str, clock: ManualClock) -> None:
    """A well-formed consumption inserted with SQL is not covered by any chain link."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    forged_position = db.insert_copy(CTI, 5, 6, cfdi_uuid=UUIDS[9])
    report = verified(store_url)
    assert checks(report) == {"chain_uncovered"}
    assert [(b.position, b.aggregate_id) for b in report.breaches] == [(forged_position, CTI)]


def test_inserted_duplicate_consumption_is_a_reused_key(store_url: str, clock: ManualClock) -> None:
    """A forged second consumption of an already stamped CFDI is also a reused key."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    first_position, _, _ = db.event(CTI, 3)
    forged_position = db.insert_copy(CTI, 3, 6)
    report = verified(store_url)
    (reused,) = [b for b in report.breaches if b.check == "key_reused"]
    assert reused.position == forged_position
    assert f"first at position {first_position}" in reused.message


def test_truncated_history_misses_the_recorded_head(sqlite_url: str, clock: ManualClock) -> None:
    """Deleting the newest transaction with its link passes the chain, not a recorded head."""
    build_books(sqlite_url, clock)
    recorded_head = verified(sqlite_url).head_hash
    assert recorded_head is not None
    db = RawDb(sqlite_url)
    position, _, _ = db.event(CTI, 5)
    db.execute("DELETE FROM {events} WHERE {id} = ?", (position,))
    db.execute("DELETE FROM ledger_chain WHERE last_id = ?", (position,))
    assert verified(sqlite_url).ok  # the documented limit of a chain kept inside the database
    with Ledger.open(sqlite_url, projections="off") as lg:
        report = lg.verify(expected_head=recorded_head)
    assert checks(report) == {"anchor"}


def test_deleted_chain_link_leaves_its_events_uncovered(store_url: str, clock: ManualClock) -> None:
    """Deleting a link row itself leaves its events outside the chain."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position, _, _ = db.event(CTI, 4)
    db.execute("DELETE FROM ledger_chain WHERE first_id = ?", (position,))
    report = verified(store_url)
    uncovered = [b for b in report.breaches if b.check == "chain_uncovered"]
    assert [b.position for b in uncovered] == [position]
    # The next link was computed from the deleted one, so it no longer follows from its predecessor.
    assert [b.position for b in report.breaches if b.check == "chain_mismatch"] == [position + 1]


@pytest.mark.parametrize("version", [1, 2])
def test_every_edited_event_is_caught(sqlite_url: str, clock: ManualClock, version: int) -> None:
    """Whitespace-only edits (same meaning, other bytes) are caught as well."""
    build_books(sqlite_url, clock)
    db = RawDb(sqlite_url)
    _, _, state = db.event(CTI, version)
    db.set_state(CTI, version, state + b" ")
    assert checks(verified(sqlite_url)) == {"chain_mismatch"}
