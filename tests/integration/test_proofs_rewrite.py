"""History rewritten below a signed checkpoint is a breach, even with the chain recomputed.

An intruder with write access edits an event with SQL (a credit of 10 stamps made 1,000), then
recomputes every hash-chain link after it, so the chain check alone passes. ``verify`` with the
verifier key still fails: the log's Merkle root at the checkpoint's size is not the signed one.
"""

from __future__ import annotations

import json

from ledger.api import Ledger
from ledger.chain import GENESIS, events_digest, link
from ledger.clock import ManualClock
from ledger.proofs.note import Signer
from tests.support import CTI, RawDb, build_network, consume

ORIGIN = "ledger.example/rewrite"


class Row:
    """A stored row for ``events_digest``."""

    def __init__(self, originator_id: str, version: int, topic: str, state: bytes) -> None:
        self.originator_id = originator_id
        self.originator_version = version
        self.topic = topic
        self.state = state


def recompute_chain(db: RawDb) -> None:
    """What the intruder does after the edit: every link rehashed over the rows as they are."""
    links = db.rows("SELECT first_id, last_id FROM ledger_chain ORDER BY last_id")
    previous = GENESIS
    for first, last in links:
        rows = db.rows(
            "SELECT originator_id, originator_version, topic, state FROM {events}"
            " WHERE {id} >= ? AND {id} <= ? ORDER BY {id}",
            (first, last),
        )
        previous = link(
            previous, events_digest([Row(a, int(b), c, bytes(d)) for a, b, c, d in rows])
        )
        db.execute("UPDATE ledger_chain SET hash = ? WHERE last_id = ?", (previous, last))


def rewrite_credit(url: str) -> None:
    """The CTI's credit of 10 stamps becomes 1,000, and the chain is recomputed."""
    db = RawDb(url)
    _, _, state = db.event(CTI, 2)
    edited = json.loads(state)
    assert edited["quantity"] == 10
    edited["quantity"] = 1000
    db.execute(
        "UPDATE {events} SET state = ? WHERE originator_id = ? AND originator_version = 2",
        (json.dumps(edited).encode(), CTI),
    )
    recompute_chain(db)


def test_rewrite_below_a_checkpoint_is_a_breach(store_url: str, clock: ManualClock) -> None:
    """Before: verify passes. After the rewrite: the chain passes, the Merkle root does not."""
    signer = Signer.generate(ORIGIN)
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=10)
        lg.checkpoint(signer)
        lg.execute_many([consume() for _ in range(3)])
        lg.checkpoint(signer)
        report = lg.verify(verifier=signer.verifier())
        assert report.ok, report.breaches
        assert any("2 checkpoints" in note and "verified" in note for note in report.notes)
    rewrite_credit(store_url)
    with Ledger.open(store_url, clock=clock, projections="off") as lg:
        report = lg.verify(verifier=signer.verifier())
    chain = {"chain_mismatch", "chain_uncovered", "chain_order"}
    assert not chain & set(report.breach_counts), report.breaches  # the chain was recomputed
    assert report.breach_counts["merkle_root"] == 2  # both checkpoints cover the edited event
    assert report.breach_counts["merkle_tiles"] == 1  # the stored tree saw the original too


def test_a_checkpoint_signed_by_another_key_is_a_breach(store_url: str, clock: ManualClock) -> None:
    """Checkpoints re-signed by the intruder's own key fail against the auditor's key."""
    signer = Signer.generate(ORIGIN)
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg)
        lg.checkpoint(Signer.generate(ORIGIN))
        report = lg.verify(verifier=signer.verifier())
    assert report.breach_counts == {"checkpoint_signature": 1}


def test_deleted_newest_events_fall_short_of_the_checkpoint(
    store_url: str, clock: ManualClock
) -> None:
    """Events removed from the end, with their links, leave a log shorter than its checkpoint."""
    signer = Signer.generate(ORIGIN)
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=10)
        lg.execute(consume())
        lg.checkpoint(signer)
    db = RawDb(store_url)
    ((last,),) = db.rows("SELECT max(last_id) FROM ledger_chain")
    ((first,),) = db.rows("SELECT first_id FROM ledger_chain WHERE last_id = ?", (last,))
    db.execute("DELETE FROM {events} WHERE {id} >= ?", (first,))
    db.execute("DELETE FROM ledger_chain WHERE last_id = ?", (last,))
    with Ledger.open(store_url, clock=clock, projections="off") as lg:
        report = lg.verify(verifier=signer.verifier())
    assert report.breach_counts.get("merkle_root") == 1
    assert "events were deleted" in next(
        b.message for b in report.breaches if b.check == "merkle_root"
    )
