"""Cost of the Merkle tree (issue 20, DESIGN §9), with the raw baselines of the same run.

On SQLite (a temp file) and PostgreSQL (a fresh database), in one run:

- write rate with the tree off and on: batched ``execute_many`` of ConsumeStamp (``--batch-size``
  per call over ``--ctis`` CTIs), in rounds that alternate between no sealer and a
  ``ledger seal --follow --key`` process (another process, as deployed: the tree follows the log
  and never touches the write path). The sealer is started and caught up before an "on" round
  and stopped after it; the lag it had when the round's last batch committed, and how long it
  took to catch up, are printed (the documented lag bound);
- bytes per event: the database's bytes (SQLite ``dbstat``; PostgreSQL
  ``pg_total_relation_size`` after ``VACUUM``) of the ledger's tables, and what the tree's tables
  add (tiles, tracking, checkpoints);
- seal rate against the raw read rate: rebuilding the tree from scratch (``Ledger.seal``)
  against reading every stored column of every event in the same pages with the same driver,
  taking turns, medians;
- inclusion proofs at ``--proof-events`` (default 10,000,000) events, SQLite only: the events
  table is filled synthetically (rows of the real layout, small made-up states, inserted with
  ``executemany``), sealed with the real ``seal``, a checkpoint signed, then
  ``Ledger.prove_inclusion`` of random events is timed (each proof verified afterwards).

Usage::

    .venv/bin/python benchmarks/bench_proofs.py [--backends sqlite,postgres] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from bench_write import consumptions

from adapters.cli.proofs import write_signer
from benchmarks.common import build_network, fresh_pg_database
from ledger.api import Ledger
from ledger.proofs.checkpoint import open_checkpoint
from ledger.proofs.note import Signer
from ledger.proofs.tree import leaf_hash
from ledger.proofs.verify import verify_inclusion
from tests.support import RawDb

ROOT = Path(__file__).resolve().parents[1]
LEDGER = str(ROOT / ".venv" / "bin" / "ledger")
ORIGIN = "bench.example/ledger"
PG_BASE = os.environ.get("LEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    return f"[{min(values):,.0f}-{max(values):,.0f}]"


def sealed_size(url: str) -> int:
    """The tree's sealed size, read directly."""
    rows = RawDb(url).rows("SELECT size FROM ledger_tree")
    return int(rows[0][0]) if rows else 0


def event_count(url: str) -> int:
    ((count,),) = RawDb(url).rows("SELECT count(*) FROM {events}")
    return int(count)


class Sealer:
    """A ``ledger seal --follow --key`` process."""

    def __init__(self, url: str, key: Path) -> None:
        self.url = url
        self.process = subprocess.Popen(
            [LEDGER, "seal", "--follow", "--url", url, "--key", str(key), "--every", "10000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LEDGER_LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        # Started (imports done, first catch-up under way) once it says it follows.
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        if "following" not in line:
            raise RuntimeError(f"the sealer did not start: {line}")

    def wait_caught_up(self, timeout_s: float = 600.0) -> float:
        """Seconds until the tree covers every event."""
        started = time.perf_counter()
        target = event_count(self.url)
        while sealed_size(self.url) < target:
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError("the sealer did not catch up")
            time.sleep(0.05)
        return time.perf_counter() - started

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the sealer process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=60)


def write_rates(url: str, key: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Batched consumption, rounds alternating without and with the sealer."""
    rates: dict[str, list[float]] = {"off": [], "on": []}
    lags: list[int] = []
    catch_up_s: list[float] = []
    writer_cpu_us: list[float] = []
    sealer_cpu_us: list[float] = []
    with Ledger.open(url, projections="off") as lg:
        ctis = build_network(lg, args.ctis, args.rounds * args.per_round // args.ctis + 10)
        order = ["off", "on"] * (args.rounds // 2)
        for mode in order:
            commands = consumptions(ctis, args.per_round)
            sealer = Sealer(url, key) if mode == "on" else None
            if sealer is not None:
                sealer.wait_caught_up()
                sealer_cpu = sealer.cpu_s()
            events_before = event_count(url)
            cpu = time.process_time()
            started = time.perf_counter()
            for i in range(0, len(commands), args.batch_size):
                lg.execute_many(commands[i : i + args.batch_size])
            rates[mode].append(len(commands) / (time.perf_counter() - started))
            writer_cpu_us.append(1e6 * (time.process_time() - cpu) / len(commands))
            if sealer is not None:
                lags.append(event_count(url) - sealed_size(url))
                catch_up_s.append(sealer.wait_caught_up())
                events = event_count(url) - events_before
                sealer_cpu_us.append(1e6 * (sealer.cpu_s() - sealer_cpu) / events)
                sealer.stop()
    return {
        "rates": rates,
        "lags": lags,
        "catch_up_s": catch_up_s,
        "writer_cpu_us": writer_cpu_us,
        "sealer_cpu_us": sealer_cpu_us,
    }


def sqlite_bytes(url: str) -> tuple[int, int]:
    """(bytes of the ledger's own tables and indexes, bytes of the tree's), from dbstat."""
    rows = RawDb(url).rows(
        "SELECT s.name, m.tbl_name, sum(s.pgsize) FROM dbstat s"
        " JOIN sqlite_master m ON m.name = s.name GROUP BY s.name"
    )
    tree_tables = {"ledger_tiles", "ledger_tree", "ledger_checkpoints"}
    tree = sum(int(size) for _, table, size in rows if table in tree_tables)
    ledger = sum(
        int(size) for _, table, size in rows
        if table not in tree_tables and not table.startswith("view_")
    )  # fmt: skip
    return ledger, tree


def postgres_bytes(url: str) -> tuple[int, int]:
    """(bytes of the ledger's tables with indexes and TOAST, bytes of the tree's), after VACUUM."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM")
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r'"
        ).fetchall()
    tree_tables = {"ledger_tiles", "ledger_tree", "ledger_checkpoints"}
    tree = sum(int(size) for name, size in rows if name in tree_tables)
    ledger = sum(
        int(size) for name, size in rows
        if name not in tree_tables and not name.startswith("view_")
    )  # fmt: skip
    return ledger, tree


def raw_read(url: str, page: int) -> int:
    """Reads every stored column of every event, a page at a time; returns the count."""
    done = 0
    after = 0
    db = RawDb(url)
    select = db.sql(
        "SELECT {id}, originator_id, originator_version, topic, state FROM {events}"
        " WHERE {id} > ? ORDER BY {id} LIMIT ?"
    )
    with db.cursor() as cursor:
        while True:
            cursor.execute(select, (after, page))
            rows = cursor.fetchall()
            if not rows:
                return done
            done += len(rows)
            after = rows[-1][0]


def reset_tree(url: str) -> None:
    """Forgets the tree (tiles and tracked size), as on a ledger made before it existed."""
    with RawDb(url).cursor() as cursor:
        cursor.execute("DELETE FROM ledger_tiles")
        cursor.execute("UPDATE ledger_tree SET size = 0, last_id = 0")
    if url.startswith("postgres"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ledger_tiles")


def seal_rates(url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Seal from scratch (one reader, and ``--jobs`` readers) against the raw read, in turns.

    Beside the rates: each turn's seal/raw ratio, and the CPU seconds of each (this process's,
    and any child process's), which the other engineers' load does not move as it moves the
    rates: on SQLite (Python hashes) the CPU a row bounds the ratio whatever the load.
    """
    rates: dict[str, list[float]] = {"raw": [], "seal": [], "seal_jobs": []}
    for name in ("raw", "seal", "seal_jobs"):
        rates[f"{name}_cpu_s"] = []
    for name in ("seal", "seal_jobs"):
        rates[f"{name}_ratio"] = []
    for _ in range(args.seal_repetitions):
        cpu = time.process_time()
        started = time.perf_counter()
        count = raw_read(url, 20_000)
        rates["raw"].append(count / (time.perf_counter() - started))
        rates["raw_cpu_s"].append(time.process_time() - cpu)
        for name, jobs in (("seal", 1), ("seal_jobs", args.jobs)):
            reset_tree(url)
            with Ledger.open(url, projections="off") as lg:
                cpu, children = time.process_time(), children_cpu_s()
                started = time.perf_counter()
                state = lg.seal(page_size=20_000, jobs=jobs)
                rates[name].append(state.size / (time.perf_counter() - started))
                rates[f"{name}_cpu_s"].append(
                    time.process_time() - cpu + children_cpu_s() - children
                )
            rates[f"{name}_ratio"].append(rates[name][-1] / rates["raw"][-1])
    return rates


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's ended children (none today: a reader
    process, if a seal ever starts one, is counted)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def synthetic_proofs(tmp: Path, args: argparse.Namespace, signer: Signer) -> dict[str, Any]:
    """Proof times on a synthetic log of ``--proof-events`` events (SQLite)."""
    url = f"sqlite:///{tmp / 'proofs.db'}"
    Ledger.open(url, projections="off").close()
    conn = sqlite3.connect(tmp / "proofs.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(7)
    state = b'{"cfdi_uuid":"' + b"0" * 36 + b'","quantity":1,"lot":"2026-01-01"}'
    started = time.perf_counter()
    chunk = 200_000
    for first in range(0, args.proof_events, chunk):
        rows = [
            (f"C{i % 100_000}-cti", i // 100_000 + 1, "StampingAccount.StampConsumed#2", state)
            for i in range(first, min(first + chunk, args.proof_events))
        ]
        with conn:
            conn.executemany(
                "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
                " VALUES (?, ?, ?, ?)",
                rows,
            )
    conn.close()
    fill_s = time.perf_counter() - started
    with Ledger.open(url, projections="off") as lg:
        started = time.perf_counter()
        raw = raw_read(url, 20_000)
        raw_s = time.perf_counter() - started
        started = time.perf_counter()
        lg.seal(page_size=20_000, jobs=args.jobs)
        seal_s = time.perf_counter() - started
        note = lg.checkpoint(signer)
        assert note is not None
        checkpoint = open_checkpoint(note, signer.verifier())
        times: list[float] = []
        proofs: list[dict[str, Any]] = []
        for _ in range(args.proofs):
            notification_id = rng.randrange(1, args.proof_events + 1)
            started = time.perf_counter()
            proofs.append(lg.prove_inclusion(notification_id))
            times.append(time.perf_counter() - started)
    for proof in proofs:
        verify_inclusion(
            proof["leaf_index"],
            proof["tree_size"],
            leaf_hash(base64.b64decode(proof["leaf_input"])),
            [base64.b64decode(p) for p in proof["audit_path"]],
            checkpoint.root,
        )
    times.sort()
    return {
        "events": args.proof_events,
        "fill_s": fill_s,
        "raw_rate": raw / raw_s,
        "seal_rate": args.proof_events / seal_s,
        "median_ms": 1000 * median(times),
        "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
        "max_ms": 1000 * times[-1],
        "db_bytes": (tmp / "proofs.db").stat().st_size,
    }


def run_backend(url: str, args: argparse.Namespace, key: Path) -> None:
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    print(f"\n== {backend} ==", flush=True)
    writes = write_rates(url, key, args)
    off, on = writes["rates"]["off"], writes["rates"]["on"]
    print(
        f"batched consumption, tree off: {median(off):,.0f}/s {spread(off)}; with the sealer"
        f" following: {median(on):,.0f}/s {spread(on)}; on/off {median(on) / median(off):.3f}"
    )
    print(
        f"sealer lag when a round's last batch committed: median {median(writes['lags']):,.0f}"
        f" events (max {max(writes['lags']):,}); caught up {median(writes['catch_up_s']):.2f} s"
        f" later (max {max(writes['catch_up_s']):.2f} s)"
    )
    writer_us, sealer_us = median(writes["writer_cpu_us"]), median(writes["sealer_cpu_us"])
    print(
        f"CPU (load-independent): the writer process {writer_us:.1f} us a command"
        f"{' (PostgreSQL server not counted)' if backend == 'PostgreSQL' else ''}; the sealer"
        f" process {sealer_us:.1f} us an event ({100 * sealer_us / writer_us:.1f} % of the"
        " writer's), on another core or host when there is one"
    )
    events = event_count(url)
    ledger_bytes, tree_bytes = postgres_bytes(url) if backend == "PostgreSQL" else sqlite_bytes(url)
    print(
        f"bytes per event ({events:,} events): ledger {ledger_bytes / events:,.1f}, tree"
        f" {tree_bytes / events:,.1f} (+{100 * tree_bytes / ledger_bytes:.1f} %)"
    )
    seals = seal_rates(url, args)
    raw = median(seals["raw"])
    print(
        f"raw read of every column: {raw:,.0f} rows/s {spread(seals['raw'])}; seal from"
        f" scratch, one reader: {median(seals['seal']):,.0f} events/s {spread(seals['seal'])}"
        f" ({median(seals['seal']) / raw:.2f} x raw); {args.jobs} readers:"
        f" {median(seals['seal_jobs']):,.0f} events/s {spread(seals['seal_jobs'])}"
        f" ({median(seals['seal_jobs']) / raw:.2f} x raw)"
    )
    ratios = ", ".join(
        f"{name} {median(seals[f'{key}_ratio']):.2f} x"
        f" [{min(seals[f'{key}_ratio']):.2f}-{max(seals[f'{key}_ratio']):.2f}]"
        for name, key in (("one reader", "seal"), (f"{args.jobs} readers", "seal_jobs"))
    )
    postgres = backend == "PostgreSQL"
    cpu = {
        key: 1e6 * median(seals[f"{key}_cpu_s"]) / events for key in ("raw", "seal", "seal_jobs")
    }
    print(
        f"seal/raw within each turn ({args.seal_repetitions} turns), median: {ratios}; CPU"
        f" (load-independent) a row: raw read {cpu['raw']:.2f} us, seal {cpu['seal']:.2f} us,"
        f" {args.jobs} readers {cpu['seal_jobs']:.2f} us"
        f"{' (the PostgreSQL server, which hashes, not counted)' if postgres else ''}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--ctis", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--per-round", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seal-repetitions", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="readers of the parallel seal")
    parser.add_argument("--proof-events", type=int, default=10_000_000)
    parser.add_argument("--proofs", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="small figures, to try the script")
    parser.add_argument("--skip-writes", action="store_true", help="only the 10 M proofs")
    parser.add_argument("--skip-proofs", action="store_true", help="no 10 M proofs")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_round, args.rounds, args.proof_events, args.proofs = 2_000, 2, 300_000, 50
    signer = Signer.generate(ORIGIN)
    with tempfile.TemporaryDirectory(prefix="bench_proofs_") as name:
        tmp = Path(name)
        key = tmp / "bench.key"
        write_signer(str(key), signer)
        print(
            f"bench_proofs: {args.rounds} rounds of {args.per_round:,} ConsumeStamp in batches"
            f" of {args.batch_size} over {args.ctis} CTIs per backend; proofs at"
            f" {args.proof_events:,} events",
            flush=True,
        )
        if not args.skip_writes:
            for backend in args.backends.split(","):
                if backend == "sqlite":
                    run_backend(f"sqlite:///{tmp / 'writes.db'}", args, key)
                else:
                    with fresh_pg_database(PG_BASE) as url:
                        run_backend(url, args, key)
        if args.skip_proofs:
            return
        proofs = synthetic_proofs(tmp, args, signer)
        print(
            f"\n== inclusion proofs, SQLite, {proofs['events']:,} synthetic events ==\n"
            f"filled in {proofs['fill_s']:.0f} s ({proofs['db_bytes'] / 1e9:.2f} GB);"
            f" seal {proofs['seal_rate']:,.0f} events/s against a raw read of"
            f" {proofs['raw_rate']:,.0f} rows/s ({proofs['seal_rate'] / proofs['raw_rate']:.2f});"
            f" lg.prove_inclusion: median {proofs['median_ms']:.2f} ms, p99"
            f" {proofs['p99_ms']:.2f} ms, max {proofs['max_ms']:.2f} ms"
            f" ({args.proofs} random events, each verified)"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
