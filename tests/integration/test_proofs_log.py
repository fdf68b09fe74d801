"""The Merkle tree over a real log (DESIGN §9): seal, checkpoints, inclusion and consistency.

Every proof is checked with the verifier and the verifier key alone, as an outsider would.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from adapters.cli.main import main
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from ledger.proofs.checkpoint import open_checkpoint
from ledger.proofs.log import Tree
from ledger.proofs.note import Signer, Verifier
from ledger.proofs.tree import MemoryTree, leaf_hash, leaf_input
from ledger.proofs.verify import verify_consistency, verify_inclusion
from tests.support import RawDb, build_network, consume

ORIGIN = "ledger.example/test"


def raw_rows(url: str) -> list[tuple[int, str, int, str, bytes]]:
    """Every stored event as (notification id, originator id, version, topic, state)."""
    rows = RawDb(url).rows(
        "SELECT {id}, originator_id, originator_version, topic, state FROM {events} ORDER BY {id}"
    )
    return [(int(a), str(b), int(c), str(d), bytes(e)) for a, b, c, d, e in rows]


def reference_tree(url: str) -> MemoryTree:
    """The tree recomputed from the events table alone, leaf by leaf."""
    return MemoryTree([leaf_hash(leaf_input(*row)) for row in raw_rows(url)])


def checked_inclusion(proof: dict[str, Any], verifier: Verifier) -> None:
    """Verifies an inclusion proof with the verifier key alone."""
    checkpoint = open_checkpoint(proof["checkpoint"], verifier)
    assert checkpoint.size == proof["tree_size"]
    leaf = base64.b64decode(proof["leaf_input"])
    assert int.from_bytes(leaf[:8], "big") == proof["notification_id"]
    verify_inclusion(
        proof["leaf_index"],
        proof["tree_size"],
        leaf_hash(leaf),
        [base64.b64decode(p) for p in proof["audit_path"]],
        checkpoint.root,
    )


def test_seal_checkpoint_and_prove(store_url: str, clock: ManualClock) -> None:
    """The sealed root equals the tree recomputed from the table; proofs verify offline."""
    signer = Signer.generate(ORIGIN)
    verifier = signer.verifier()
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=300)
        assert lg.checkpoint() is None
        first = open_checkpoint(lg.checkpoint(signer) or "", verifier)
        lg.execute_many([consume() for _ in range(270)])
        second = open_checkpoint(lg.checkpoint(signer) or "", verifier)
        assert lg.checkpoint() == lg.checkpoints()[-1].note
        assert [c.size for c in lg.checkpoints()] == [first.size, second.size]
        reference = reference_tree(store_url)
        assert reference.size == second.size > 256 > first.size
        assert first.root == reference.root(first.size)
        assert second.root == reference.root(second.size)
        ids = [row[0] for row in raw_rows(store_url)]
        for index in (0, 1, first.size - 1, first.size, 255, 256, second.size - 1):
            proof = lg.prove_inclusion(ids[index])
            assert proof["leaf_index"] == index
            assert proof["tree_size"] == second.size
            checked_inclusion(proof, verifier)
        early = lg.prove_inclusion(ids[3], size=1)
        assert early["tree_size"] == first.size
        checked_inclusion(early, verifier)
        consistency = lg.prove_consistency(first.size, second.size)
        verify_consistency(
            first.size,
            second.size,
            [base64.b64decode(p) for p in consistency["proof"]],
            open_checkpoint(consistency["checkpoint1"], verifier).root,
            open_checkpoint(consistency["checkpoint2"], verifier).root,
        )
        with pytest.raises(Rejected) as late:
            lg.prove_inclusion(ids[-1] + 1)
        assert late.value.code == "invalid_command"
        with pytest.raises(Rejected) as no_checkpoint:
            lg.prove_consistency(1, second.size)
        assert no_checkpoint.value.code == "invalid_command"


def test_seal_is_resumable_and_exactly_once(store_url: str, clock: ManualClock) -> None:
    """Small pages, a stop midway and two sealers: every event is one leaf, in order."""
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=50)
        lg.execute_many([consume() for _ in range(40)])
        pages: list[int] = []
        state = lg.seal(
            page_size=7, stop=lambda: len(pages) >= 3, progress=lambda d, t: pages.append(d)
        )
        assert state.size == 21
        with Ledger.open(store_url, clock=clock, projections="off") as other:
            other.seal(page_size=5)
        state = lg.seal(page_size=11, jobs=3)  # pages read ahead by three threads
        reference = reference_tree(store_url)
        assert state.size == reference.size
        assert lg.tree_store().tree_state().last_id == raw_rows(store_url)[-1][0]
        assert Tree(lg.tree_store()).root() == reference.root()


def test_leaf_hash_in_sql_alone(pg_url: str, clock: ManualClock) -> None:
    """On PostgreSQL an outsider recomputes every leaf hash with SQL alone (docs/PROOFS.md)."""
    with Ledger.open(pg_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT sha256('\\x00'::bytea || int8send(notification_id)"
            " || int8send(octet_length(convert_to(originator_id, 'UTF8'))::bigint)"
            " || convert_to(originator_id, 'UTF8')"
            " || int8send(octet_length(originator_version::text)::bigint)"
            " || convert_to(originator_version::text, 'UTF8')"
            " || int8send(octet_length(convert_to(topic, 'UTF8'))::bigint)"
            " || convert_to(topic, 'UTF8')"
            " || int8send(octet_length(state)::bigint) || state)"
            " FROM ledger_events ORDER BY notification_id"
        ).fetchall()
    assert [bytes(r[0]) for r in rows] == reference_tree(pg_url).levels[0]
    assert hashlib.sha256(b"").digest()  # the empty root, for the reader of the SQL above


def test_status_shows_the_tree_beside_the_views(
    store_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``Ledger.status()["tree"]`` and ``ledger status``: the sealed size, the notification id of
    the last leaf, the lag behind the log (events, and seconds since the oldest unsealed event
    was recorded) and the latest checkpoint's size and signing time."""
    signer = Signer.generate(ORIGIN)
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=50)
        newest = lg.status()["log_position"]
        clock.advance(timedelta(seconds=90))
        assert lg.status()["tree"] == {
            "size": 0,
            "position": 0,
            "lag_events": newest,
            "lag_s": 90.0,
            "checkpoint": None,
        }
        lg.checkpoint(signer)  # seals, then signs at the clock's time
        sealed = len(raw_rows(store_url))
        assert lg.status()["tree"] == {
            "size": sealed,
            "position": newest,
            "lag_events": 0,
            "lag_s": 0.0,
            "checkpoint": {"size": sealed, "signed_at": "2026-01-05T18:01:30Z"},
        }
        lg.execute_many([consume() for _ in range(3)])
        clock.advance(timedelta(seconds=15))
        status = lg.status()
        assert status["log_position"] == newest + 3
        assert status["tree"]["lag_events"] == 3
        assert status["tree"]["lag_s"] == 15.0
        assert status["tree"]["position"] == newest
        assert status["tree"]["checkpoint"] == {"size": sealed, "signed_at": "2026-01-05T18:01:30Z"}
    capsys.readouterr()
    assert main(["status", "--url", store_url, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["tree"]
    assert (printed["size"], printed["position"], printed["lag_events"]) == (sealed, newest, 3)
    assert printed["checkpoint"]["size"] == sealed
    assert main(["status", "--url", store_url]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("merkle tree ")]
    assert row.split()[2:4] == [f"{newest:,}", "3"]
    assert (
        f"merkle tree: {sealed:,} leaves sealed; latest checkpoint {sealed:,} leaves, signed"
        " 2026-01-05T18:01:30Z" in out
    )
    with Ledger.open("memory://", projections="off") as memory:
        assert memory.status()["tree"] is None
