"""A primary dies under load, then a planned switchover: no acknowledged stamp is lost (issue 23).

Patroni (Debian's ``patroni`` 3.0) with etcd (Debian's ``etcd-server`` 3.4) manages two
PostgreSQL 15 nodes in synchronous mode on loopback ports of the test's own
(``tests/patroni.py``); ``scripts/setup`` installs Patroni and etcd when they are absent. Four
writer processes of four threads each (``tests/failover_writer.py``) consume stamps, half of
them on one hot CTI, through a URL that lists both nodes (``target_session_attrs=read-write``);
each acknowledged CFDI is fsynced to a file before the next command.

Round 1 SIGKILLs the primary's postmaster; Patroni promotes the standby. Round 2 is a planned
switchover back. After each round, on the new primary: every acknowledged stamp is recorded
exactly once; every command that once answered ``CommitOutcomeUnknown`` (and was retried with
its key) is recorded once; every writer thread succeeded within 30 s of the promotion, by
itself; ``verify`` holds, the hash chain of the previous round runs on (``expected_head``), and
the Merkle tree sealed on the new primary is consistent with every checkpoint signed before.
The test prints the timeline: the kill, the promotion, each writer's first success.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.api import Ledger
from ledger.proofs.note import Signer
from tests.conftest import IN_CI
from tests.patroni import Cluster, Node, patroni_cluster, tools, versions
from tests.support import CTI, build_network, ok, register_client, transfer_stamps

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
THREADS = 4
RESUME_WITHIN_S = 30.0
"""Issue 23: writers resume by themselves within 30 s of the promotion."""
PROMOTION_WAIT_S = 60.0
STEADY_ACKS = 50
"""Acknowledged stamps each writer process reaches before a round begins (load is on)."""
CONNECT_TIMEOUT_S = 2
POOL_TIMEOUT_S = 2.0
HOT_STAMPS = 200_000
OWN_STAMPS = 20_000
POLL_S = 0.05


@dataclass
class Round:
    """One failure: what was done, when, and when the new primary took writes."""

    name: str
    started: float
    promoted: float = 0.0
    resumed: dict[str, float] = field(default_factory=dict)
    """Each writer thread's first success after the promotion (wall clock)."""


def events(directory: Path) -> list[dict[str, Any]]:
    """Every writer's timeline entries."""
    return [
        json.loads(line)
        for path in sorted(directory.glob("events-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def lines(directory: Path, prefix: str) -> list[str]:
    """The UUIDs of every writer's ``prefix`` file (``acked`` or ``unknown``), upper case as
    the ledger stores them."""
    return [
        line.upper()
        for path in sorted(directory.glob(f"{prefix}-*"))
        for line in path.read_text().splitlines()
        if line
    ]


def recorded(node: Node) -> Counter[str]:
    """How many times each CFDI is consumed in ``node``'s events (plain SQL and JSON)."""
    with psycopg.connect(node.url("ledger"), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT state FROM ledger_events WHERE topic LIKE 'StampingAccount.StampConsumed%'"
        ).fetchall()
    return Counter(str(json.loads(bytes(row[0]))["cfdi_uuid"]).upper() for row in rows)


def threads() -> list[str]:
    return [f"{w}.{t}" for w in range(WRITERS) for t in range(THREADS)]


def wait_promoted(node: Node) -> float:
    """Waits until ``node`` accepts writes; the wall-clock time it was first seen to."""
    deadline = time.monotonic() + PROMOTION_WAIT_S
    while not node.is_primary():
        assert time.monotonic() < deadline, f"{node.name} was not promoted"
        time.sleep(POLL_S)
    return time.time()


def wait_resumed(directory: Path, run: Round) -> None:
    """Waits until every writer thread succeeded after the promotion (bounded)."""
    deadline = time.monotonic() + RESUME_WITHIN_S + 5
    while True:
        for entry in events(directory):
            if entry.get("kind") == "ok" and entry["t"] >= run.promoted:
                thread = str(entry["thread"])
                run.resumed[thread] = min(run.resumed.get(thread, entry["t"]), entry["t"])
        if set(run.resumed) >= set(threads()) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def wait_acks(directory: Path, count: int) -> None:
    """Waits until every writer process acknowledged ``count`` more stamps than now."""

    def acked(writer: int) -> int:
        path = directory / f"acked-{writer}"
        return len(path.read_text().splitlines()) if path.exists() else 0

    start = {w: acked(w) for w in range(WRITERS)}
    deadline = time.monotonic() + 60
    while any(acked(w) < start[w] + count for w in range(WRITERS)):
        assert time.monotonic() < deadline, "the writers do not write"
        time.sleep(0.1)


def check(node: Node, directory: Path, run: Round) -> dict[str, int]:
    """The round's assertions on the new primary ``node``."""
    acked = lines(directory, "acked")
    unknown = set(lines(directory, "unknown"))
    counts = recorded(node)
    assert len(acked) == len(set(acked)), "a writer acknowledged a CFDI twice"
    lost = [u for u in acked if counts[u] == 0]
    doubled = [u for u, n in counts.items() if n > 1]
    assert lost == [], f"{len(lost)} acknowledged stamps are not recorded on {node.name}"
    assert doubled == [], f"{len(doubled)} stamps are recorded twice on {node.name}"
    assert all(counts[u] == 1 for u in unknown & set(acked))
    late = {
        thread: at - run.promoted
        for thread, at in run.resumed.items()
        if at - run.promoted > RESUME_WITHIN_S
    }
    missing = set(threads()) - set(run.resumed)
    assert not missing, f"writer threads {sorted(missing)} did not resume in {RESUME_WITHIN_S} s"
    assert not late, f"writer threads resumed late: {late}"
    return {"acked": len(acked), "unknown": len(unknown), "recorded": sum(counts.values())}


def timeline(run: Round, directory: Path) -> str:
    """The round as printed: the failure, the promotion, each writer's errors and resumption."""
    out = [
        f"{run.name}:",
        "  +0.00 s  failure begins",
        f"  +{run.promoted - run.started:.2f} s  new primary takes writes",
    ]
    entries = [e for e in events(directory) if e["t"] >= run.started]
    for writer in range(WRITERS):
        mine = [e for e in entries if str(e.get("thread", "")).startswith(f"{writer}.")]
        errors = Counter(
            str(e["error"])
            for e in mine
            if e.get("kind") == "error" and e["t"] <= max(run.resumed.values())
        )
        first_error = min((e["t"] for e in mine if e.get("kind") == "error"), default=None)
        resumed = [run.resumed[t] for t in threads() if t.startswith(f"{writer}.")]
        since = run.started
        erred = "no error" if first_error is None else f"first error +{first_error - since:.2f} s"
        out.append(
            f"  writer {writer}: {erred},"
            f" threads resumed +{min(resumed) - since:.2f}..+{max(resumed) - since:.2f} s"
            f" ({min(resumed) - run.promoted:.2f}..{max(resumed) - run.promoted:.2f} s after"
            f" the promotion); errors meanwhile: {dict(errors) or 'none'}"
        )
    said = Counter(
        f"{e['error']}: {_reason(e.get('message', ''))}"
        for e in entries
        if e.get("kind") == "error" and e["t"] <= max(run.resumed.values())
    )
    out += [f"  {count} x {text}" for text, count in said.most_common(6)]
    return "\n".join(out)


def _reason(message: str) -> str:
    """What failed and the driver's reason, without the servers and the advice."""
    action = message.split(":", 1)[0]
    found = re.search(r"\): (.*?)(\. Check|\. Retry|$)", message)
    return f"{action}: {(found.group(1) if found else message)[:120]}"


SIGNER = Signer.generate("failover.test/ledger")


def verified(url: str, expected_head: str | None) -> str:
    """Seals the Merkle tree over the new primary's log and signs a checkpoint, then runs
    ``verify``: the chain holds (and still contains ``expected_head``), and every checkpoint,
    those signed on the old primary included, is consistent with the next. Returns the chain
    head."""
    with Ledger.open(url, projections="off", create_tables=False) as lg:
        lg.checkpoint(SIGNER)
        sizes = [c.size for c in lg.checkpoints()]
        report = lg.verify(expected_head=expected_head, verifier=SIGNER.verifier())
        if len(sizes) > 1:
            lg.prove_consistency(sizes[0], sizes[-1])  # the tree runs on from the first one
    assert report.ok, report.breaches[:5]
    assert sizes == sorted(sizes)
    assert report.head_hash is not None
    return report.head_hash


@pytest.fixture
def found() -> dict[str, str]:
    """Patroni, etcd and PostgreSQL's binaries (installed by ``scripts/setup``)."""
    tools_found = tools()
    if tools_found is None:
        reason = (
            "patroni, etcd or the PostgreSQL binaries are missing (scripts/setup installs them)"
        )
        if IN_CI:
            pytest.fail(f"required under CI=true: {reason}")
        pytest.skip(f"SKIPPED LOUDLY (not under CI): {reason}")
    return tools_found


@pytest.fixture
def cluster(found: dict[str, str]) -> Iterator[Cluster]:
    """The Patroni cluster, with the test network; stopped whatever happens."""
    print(f"\nfailover test on {versions(found)}")
    with patroni_cluster(found) as made:
        yield made


def test_a_primary_killed_under_load_then_switched_back_loses_no_acknowledged_stamp(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGKILL of the primary's postmaster, then a planned switchover, under 16 writers."""
    url = cluster.url("ledger", connect_timeout=CONNECT_TIMEOUT_S, pool_timeout=POOL_TIMEOUT_S)
    own = [f"W{n}" for n in range(WRITERS * THREADS)]
    with Ledger.open(url, projections="off", password_cost="fast") as lg:
        build_network(
            lg, inventory=HOT_STAMPS + OWN_STAMPS * len(own) + 1000, cti_stamps=HOT_STAMPS
        )
        ok(
            lg,
            *(register_client(client) for client in own),
            *(
                transfer_stamps(OWN_STAMPS, f"T-{client}", to_id=f"{client}-cti", amount="0.00")
                for client in own
            ),
        )
        lg.checkpoint(SIGNER)  # the first signed checkpoint, on node1
    rounds: list[Round] = []
    with ExitStack() as stack:
        writers = []
        for w in range(WRITERS):
            log = stack.enter_context((tmp_path / f"writer-{w}.log").open("wb"))
            mine = [f"{client}-cti" for client in own[w * THREADS : (w + 1) * THREADS]]
            writers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.failover_writer",
                        url,
                        str(tmp_path),
                        str(w),
                        str(THREADS),
                        CTI,
                        *mine,
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "LEDGER_LOG_LEVEL": "WARNING"},
                )
            )
        try:
            wait_acks(tmp_path, STEADY_ACKS)
            heads: list[str] = []

            first = Round("round 1: SIGKILL of node1's postmaster", time.time())
            cluster.kill_postmaster("node1")
            first.promoted = wait_promoted(cluster.nodes["node2"])
            wait_resumed(tmp_path, first)
            rounds.append(first)
            figures = check(cluster.nodes["node2"], tmp_path, first)
            print(timeline(first, tmp_path), f"\n  totals: {figures}")
            heads.append(verified(cluster.nodes["node2"].url("ledger"), None))
            cluster.wait_healthy("node2")  # node1 is back as the synchronous standby
            wait_acks(tmp_path, STEADY_ACKS)

            second = Round("round 2: planned switchover node2 -> node1", time.time())
            cluster.switchover("node2", "node1")
            second.promoted = wait_promoted(cluster.nodes["node1"])
            wait_resumed(tmp_path, second)
            rounds.append(second)
            figures = check(cluster.nodes["node1"], tmp_path, second)
            print(timeline(second, tmp_path), f"\n  totals: {figures}")
        finally:
            (tmp_path / "stop").touch()
            for writer in writers:
                try:
                    writer.wait(60)
                except subprocess.TimeoutExpired:
                    writer.kill()
                    writer.wait(10)
        for w, writer in enumerate(writers):
            assert writer.returncode == 0, (tmp_path / f"writer-{w}.log").read_text()[-2000:]
    final = check(cluster.nodes["node1"], tmp_path, rounds[-1])
    print(f"after both rounds: {final}")
    verified(cluster.nodes["node1"].url("ledger"), heads[0])
