"""Outage benchmark: how long a command takes to fail when the database is unreachable or busy.

Measures, with the default timeouts (or those given in ``--options``, a URL query string):

- PostgreSQL, open: ``Ledger.open`` on a closed port (nothing listens);
- PostgreSQL, command: a ledger opened through a TCP proxy (``tests/tcp_proxy.py``) executes a
  ConsumeStamp after the proxy closed its port and cut its connections: the server became
  unreachable under a running ledger;
- SQLite, command: a ConsumeStamp while another connection holds the file's write lock.

Each line prints the seconds until the call raised, and the error's class and message. The raw
baseline of the same run: a bare ``psycopg.connect`` to the closed port, and a bare
``sqlite3`` write with the same busy timeout. Usage::

    .venv/bin/python benchmarks/bench_outage.py [--repetitions 3] [--options connect_timeout=5]
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import build_network, consume
from tests.tcp_proxy import TcpProxy

PG_BASE = "postgresql://postgres@127.0.0.1:5432"


def timed_failure(call: Callable[[], object]) -> tuple[float, str]:
    """Seconds until ``call`` raised, and the error."""
    started = time.perf_counter()
    try:
        call()
    except Exception as exc:  # any error is what is measured
        return time.perf_counter() - started, f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - started, "no error"


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_options(url: str, options: str) -> str:
    """``url`` with the query string ``options``."""
    return f"{url}?{options}" if options else url


def pg_open(options: str) -> tuple[float, str]:
    """Ledger.open on a closed port."""
    url = with_options(f"postgresql://postgres@127.0.0.1:{closed_port()}/ledger", options)
    return timed_failure(lambda: Ledger.open(url))


def pg_raw_connect() -> tuple[float, str]:
    """A bare psycopg connect to a closed port (the baseline of the same run)."""
    port = closed_port()
    return timed_failure(
        lambda: psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout=5)
    )


def pg_command(options: str) -> tuple[float, str]:
    """A command after the server became unreachable under a running ledger."""
    name = f"bench_outage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
        proxy = TcpProxy(f"{PG_BASE}/{name}")
        lg = Ledger.open(
            with_options(proxy.url, options),
            clock=clock,
            password_cost="fast",  # noqa: S106  (a cost level, not a password)
            projections="off",
        )
        try:
            build_network(lg, cti_stamps=10)
            proxy.close()
            return timed_failure(lambda: lg.execute({**consume(), "actor": "M"}))
        finally:
            closing = time.perf_counter()
            timed_failure(lg.close)
            print(f"  (close took {time.perf_counter() - closing:.2f} s)")
    finally:
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_command(options: str) -> tuple[float, str]:
    """A command while another connection holds the SQLite write lock."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
        with Ledger.open(
            with_options(f"sqlite:///{path}", options),
            clock=clock,
            password_cost="fast",  # noqa: S106  (a cost level, not a password)
            projections="off",
        ) as lg:
            build_network(lg, cti_stamps=10)
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                return timed_failure(lambda: lg.execute({**consume(), "actor": "M"}))
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()


def sqlite_raw(busy_timeout_s: float) -> tuple[float, str]:
    """A bare sqlite3 write against a held lock with the same busy timeout (the baseline)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "raw.db"
        first = sqlite3.connect(path, isolation_level=None)
        first.execute("CREATE TABLE t (x)")
        first.execute("BEGIN EXCLUSIVE")
        second = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
        try:
            return timed_failure(lambda: second.execute("INSERT INTO t VALUES (1)"))
        finally:
            first.execute("ROLLBACK")
            first.close()
            second.close()


def main() -> None:
    """Runs every scenario ``--repetitions`` times and prints the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--options", default="", help="URL query, e.g. connect_timeout=5")
    parser.add_argument("--sqlite-busy-s", type=float, default=5.0, help="raw baseline's timeout")
    args = parser.parse_args()
    scenarios: list[tuple[str, Callable[[], tuple[float, str]]]] = [
        ("raw psycopg.connect, closed port", pg_raw_connect),
        ("PostgreSQL Ledger.open, closed port", lambda: pg_open(args.options)),
        ("PostgreSQL command, server unreachable", lambda: pg_command(args.options)),
        (f"raw sqlite3 write, lock held, timeout {args.sqlite_busy_s} s",
         lambda: sqlite_raw(args.sqlite_busy_s)),
        ("SQLite command, lock held", lambda: sqlite_command(args.options)),
    ]  # fmt: skip
    for name, scenario in scenarios:
        runs = [scenario() for _ in range(args.repetitions)]
        seconds = [s for s, _ in runs]
        print(
            f"{name}: median {statistics.median(seconds):.2f} s"
            f" [{min(seconds):.2f}-{max(seconds):.2f}]\n  {runs[-1][1][:300]}"
        )


if __name__ == "__main__":
    main()
