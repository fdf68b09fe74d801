"""Views fed from a streaming replica: a follower on the hot standby beside one on the primary.

One run starts a throwaway primary and a hot standby (``pg_basebackup -R``, tests/pgcluster.py).
Writers run ``execute_many`` batches of ConsumeStamp on the primary for ``--seconds``. Two
``ledger project --follow`` processes run at the same time, each writing its views into its own
database on the test server (``--pg``): one reads the log from the standby (polling), the other
from the primary (LISTEN/NOTIFY). A sampler reads, every ``--sample-s``, the primary's newest
notification id and each follower's tracked position.

Printed:
- the writers' rate on the primary (events/s);
- each follower's sustained rate while the writers ran and its catch-up time after they stopped;
- each follower's lag: in events (primary's newest id minus the view's position, at each sample)
  and in seconds (for each sampled newest id, the time until the view reached it), median and p99;
- each follower's rate from a backlog: ``ledger project`` of the whole log into empty views;
- the raw baseline of the same run: the log read from the standby with plain SQL in pages of
  the follower's size (rows/s), what any follower must at least spend reading;
- the storage per event on the primary (events, idempotency keys, chain, with indexes).

Usage::

    .venv/bin/python benchmarks/bench_replica.py [--seconds 20] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger.api import Ledger  # noqa: E402
from tests.pgcluster import Replica, bindir, replica  # noqa: E402
from tests.support import MASTER, build_network, consume  # noqa: E402

PG_BASE_DEFAULT = "postgresql://postgres@127.0.0.1:5432"
PAGE_SIZE = 20_000


def _max_id(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    row = connection.execute("SELECT max(notification_id) FROM ledger_events").fetchone()
    return int(str(row[0])) if row and row[0] is not None else 0


def _position(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    try:
        rows = connection.execute("SELECT position FROM view_tracking").fetchall()
    except psycopg.errors.UndefinedTable:
        return 0
    return min((int(str(row[0])) for row in rows), default=0)


@dataclass
class Follower:
    """One ``ledger project --follow`` process and what the sampler saw of it."""

    name: str
    log_url: str
    views_url: str
    process: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)

    def start(self) -> None:
        """Starts the follower process."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger",
                "project",
                "--follow",
                "--url",
                self.log_url,
                "--views-url",
                self.views_url,
                "--interval",
                "0.1",
            ],
            cwd=ROOT,
            env={**os.environ, "LEDGER_LOG_LEVEL": "warning"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stops it (SIGTERM)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] if ordered else 0.0


def _lags_s(heads: list[tuple[float, int]], seen: list[tuple[float, int]]) -> list[float]:
    """For each sampled newest id, seconds until the follower's position reached it."""
    lags: list[float] = []
    index = 0
    for at, head in heads:
        while index < len(seen) and (seen[index][0] < at or seen[index][1] < head):
            index += 1
        if index == len(seen):
            break
        lags.append(seen[index][0] - at)
    return lags


def _raw_read_rate(url: str, page_size: int) -> tuple[int, float]:
    """Rows per second reading the whole log with plain SQL in pages."""
    started = time.perf_counter()
    rows = 0
    after = 0
    with psycopg.connect(url, autocommit=True) as connection:
        while True:
            page = connection.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                " FROM ledger_events WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
                (after, page_size),
            ).fetchall()
            if not page:
                break
            rows += len(page)
            after = int(str(page[-1][0]))
    return rows, rows / (time.perf_counter() - started)


def run(cluster: Replica, pg_base: str, seconds: float, batch_size: int, sample_s: float) -> None:
    """One measured run."""
    primary_url = cluster.primary.url("ledger")
    standby_url = cluster.standby.url("ledger")
    names = {kind: f"bench_views_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("standby", "primary")}
    with psycopg.connect(f"{pg_base}/postgres", autocommit=True) as connection:
        for name in names.values():
            connection.execute(f'CREATE DATABASE "{name}"')
    followers = [
        Follower("on the standby", standby_url, f"{pg_base}/{names['standby']}"),
        Follower("on the primary", primary_url, f"{pg_base}/{names['primary']}"),
    ]
    stamps = 2_000_000
    try:
        with Ledger.open(
            primary_url,
            projections="off",
            password_cost="fast",  # noqa: S106  (a cost level, not a password)
        ) as writer:
            build_network(writer, inventory=stamps, cti_stamps=stamps)
            cluster.wait_replayed("ledger")
            for follower in followers:
                follower.start()
            heads: list[tuple[float, int]] = []
            done = threading.Event()

            def sample() -> None:
                with (
                    psycopg.connect(primary_url, autocommit=True) as primary,
                    psycopg.connect(followers[0].views_url, autocommit=True) as first,
                    psycopg.connect(followers[1].views_url, autocommit=True) as second,
                ):
                    while not done.is_set():
                        heads.append((time.perf_counter(), _max_id(primary)))
                        for follower, views in zip(followers, (first, second), strict=True):
                            follower.samples.append((time.perf_counter(), _position(views)))
                        time.sleep(sample_s)

            sampler = threading.Thread(target=sample)
            sampler.start()
            # The followers start (and catch up with the set-up) before the writers do.
            start_id = _max_id_of(primary_url)
            deadline = time.perf_counter() + 300
            while any(not f.samples or f.samples[-1][1] < start_id for f in followers):
                if time.perf_counter() > deadline:
                    sys.exit("the followers did not start in 300 s")
                time.sleep(sample_s)
            started = time.perf_counter()
            written = 0
            while time.perf_counter() - started < seconds:
                results = writer.execute_many([consume(actor=MASTER) for _ in range(batch_size)])
                written += sum(1 for result in results if getattr(result, "ok", False))
            writing_s = time.perf_counter() - started
            end_id = _max_id_of(primary_url)
            stopped = time.perf_counter()
            caught_up: dict[str, float] = {}
            deadline = stopped + 300
            while len(caught_up) < len(followers) and time.perf_counter() < deadline:
                for follower in followers:
                    if follower.name not in caught_up and follower.samples[-1][1] >= end_id:
                        caught_up[follower.name] = follower.samples[-1][0] - stopped
                time.sleep(sample_s)
            done.set()
            sampler.join()
    finally:
        for follower in followers:
            follower.stop()
    backlog = {follower.name: _catch_up_rate(follower.log_url, pg_base) for follower in followers}
    rows, raw_rate = _raw_read_rate(standby_url, PAGE_SIZE)
    with psycopg.connect(primary_url, autocommit=True) as connection:
        sizes = connection.execute(
            "SELECT pg_total_relation_size('ledger_events'), pg_total_relation_size('ledger_keys'),"
            " pg_total_relation_size('ledger_chain'), (SELECT count(*) FROM ledger_events)"
        ).fetchone()
    assert sizes is not None
    events_bytes, keys_bytes, chain_bytes, count = (int(str(value)) for value in sizes)
    print(f"writers on the primary: {written:,} events in {writing_s:.1f} s")
    print(f"  {written / writing_s:,.0f} events/s (batches of {batch_size})")
    print(
        f"raw baseline: the log read from the standby with SQL: {raw_rate:,.0f} rows/s ({rows:,})"
    )
    window = [(at, head) for at, head in heads if started <= at <= started + writing_s]
    for follower in followers:
        during = [(at, p) for at, p in follower.samples if started <= at <= started + writing_s]
        rate = (during[-1][1] - during[0][1]) / (during[-1][0] - during[0][0]) if during else 0.0
        lag_events = [
            float(max(head - position, 0))
            for (_, head), (_, position) in zip(heads, follower.samples, strict=False)
            if started <= _ <= started + writing_s
        ]
        lag_s = _lags_s(window, follower.samples)
        catch = caught_up.get(follower.name)
        print(f"follower {follower.name}:")
        print(f"  sustained {rate:,.0f} events/s while the writers ran")
        print(
            f"  lag in events: median {statistics.median(lag_events or [0]):,.0f},"
            f" p99 {_percentile(lag_events, 0.99):,.0f}"
        )
        print(
            f"  lag in seconds: median {statistics.median(lag_s or [0]):.2f},"
            f" p99 {_percentile(lag_s, 0.99):.2f} ({len(lag_s)} samples)"
        )
        print(
            "  caught up "
            + ("never (300 s)" if catch is None else f"{catch:.1f} s after the writers stopped")
        )
        print(f"  from a backlog (the whole log into empty views): {backlog[follower.name]}")
    print(f"(events {start_id:,} .. {end_id:,}; samples every {sample_s} s)")
    print(
        f"storage on the primary per event: events {events_bytes / count:,.0f} B,"
        f" keys {keys_bytes / count:,.0f} B, chain {chain_bytes / count:,.0f} B"
        " (tables with their indexes)"
    )
    with psycopg.connect(f"{pg_base}/postgres", autocommit=True) as connection:
        for name in names.values():
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _catch_up_rate(log_url: str, pg_base: str) -> str:
    """``ledger project`` of the whole log into a fresh views database: its own summary line."""
    name = f"bench_views_backlog_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{pg_base}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ledger",
                "project",
                "--url",
                log_url,
                "--views-url",
                f"{pg_base}/{name}",
            ],
            cwd=ROOT,
            env={**os.environ, "LEDGER_LOG_LEVEL": "warning"},
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        with psycopg.connect(f"{pg_base}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    lines = [line for line in done.stderr.splitlines() if "done," in line]
    return lines[-1].removeprefix("project: done, ") if lines else done.stderr.strip()


def _max_id_of(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        return _max_id(connection)


def main() -> None:
    """Parses the options and runs once."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the writers run")
    parser.add_argument("--batch-size", type=int, default=1000, help="commands per execute_many")
    parser.add_argument("--sample-s", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("--pg", default=PG_BASE_DEFAULT, help="server for the views databases")
    args = parser.parse_args()
    binaries = bindir()
    if binaries is None:
        sys.exit("no PostgreSQL binaries found (pg_basebackup)")
    with replica(binaries) as cluster:
        run(cluster, args.pg.rstrip("/"), args.seconds, args.batch_size, args.sample_s)


if __name__ == "__main__":
    main()
