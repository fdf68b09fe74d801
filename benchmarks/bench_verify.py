"""Verify benchmark: ``Ledger.verify`` speed and memory beside the raw read-and-decode rate.

One run:

1. generates ``--events`` events (default 1,000,000) through the ledger on a SQLite file:
   a master account, a distributor, ``--ctis`` clients with a CTI each, stamps transferred to
   every CTI, then ConsumeStamp in ``execute_many`` batches of 5,000 spread over the CTIs;
2. copies the stored rows (events and chain links, bytes and notification ids unchanged) into a
   fresh PostgreSQL database with COPY, so both backends hold the identical history;
3. for each backend, in a fresh child process each (so peak RSS belongs to one measurement):
   - *read+decode*: every row through ``select_notifications`` pages and the ledger's mapper,
     nothing else: the floor any replay pays;
   - *verify*: ``Ledger.verify()``, all checks; resident memory sampled along the way.

Prints a table: events/s, seconds, peak RSS (``ru_maxrss``) and RSS at the start and at 25/50/75/
100 % of the replay (flat means memory does not grow with history). Usage::

    .venv/bin/python benchmarks/bench_verify.py [--events 1000000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

# Runs from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.logging import configure_cli_logging
from tests.support import client_profile

PG_BASE_DEFAULT = "postgresql://postgres@127.0.0.1:5432"
BATCH_SIZE = 5_000
READ_PAGE_SIZE = 5_000
ISSUER_RFC = "GODE561231GR8"
COPY_ROWS_PER_FETCH = 20_000


def rss_mib() -> float:
    """Current resident memory of this process in MiB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Generation ------------------------------------------------------------------------------------


def profile(n: int) -> dict[str, Any]:
    """A valid client profile."""
    return client_profile(f"Cliente {n}", f"c{n}@example.com")


def run_all(lg: Ledger, commands: list[dict[str, Any]]) -> None:
    """Executes commands in batches, failing on any rejection."""
    for start in range(0, len(commands), BATCH_SIZE):
        for result in lg.execute_many(commands[start : start + BATCH_SIZE]):
            assert getattr(result, "ok", False), result


def generate(url: str, events: int, ctis: int) -> int:
    """Writes about ``events`` events through the ledger; returns how many it wrote."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    cost = "fast"  # scrypt cost of CTI passwords: none are set here
    with Ledger.open(url, clock=clock, projections="off", password_cost=cost) as lg:
        setup: list[dict[str, Any]] = [
            {"type": "OpenMasterAccount", "master_id": "M", "name": "Plataforma",
             "rfc": "SAT970701NN3"},
            {"type": "DefinePackage", "actor": "M",
             "seller_id": "M", "package_id": "P1000", "unit": "stamps",
             "quantity": 1000, "price": "500.00", "audience": "distributor"},
            {"type": "RegisterDistributor", "actor": "M", "distributor_id": "D1", "parent_id": "M",
             "profile": {"name": "Distribuidora", "rfc": "MAB9307148T4",
                         "email": "d1@example.com", "postal_code": "06600"}},
            {"type": "ValidateDistributor", "distributor_id": "D1", "actor": "M"},
            {"type": "ActivateDistributor", "distributor_id": "D1", "actor": "M",
             "expires_on": "2027-12-31"},
            {"type": "BuyPackage", "actor": "D1",
             "buyer_id": "D1", "seller_id": "M", "package_id": "P1000",
             "count": events // 1000 + ctis},
        ]  # fmt: skip
        per_cti = events // ctis + 2
        setup += [
            {"type": "RegisterClient", "actor": "D1", "client_id": f"C{n}", "distributor_id": "D1",
             "profile": profile(n)}
            for n in range(ctis)
        ]  # fmt: skip
        setup += [
            {"type": "TransferStamps", "actor": "D1", "transfer_id": f"T{n}", "from_id": "D1",
             "to_id": f"C{n}-cti", "quantity": per_cti, "amount": "1.00"}
            for n in range(ctis)
        ]  # fmt: skip
        run_all(lg, setup)
        written = int(lg.store.recorder.max_notification_id() or 0)  # type: ignore[union-attr]
        started = time.perf_counter()
        n = 0
        while written < events:
            size = min(BATCH_SIZE, events - written)
            batch = [
                {"type": "ConsumeStamp", "actor": "M", "cti_id": f"C{(n + i) % ctis}-cti",
                 "cfdi_uuid": str(uuid.uuid4()), "issuer_rfc": ISSUER_RFC}
                for i in range(size)
            ]  # fmt: skip
            n += size
            run_all(lg, batch)
            written += size
            clock.advance(timedelta(milliseconds=50))
            if written % 100_000 < BATCH_SIZE:
                rate = n / (time.perf_counter() - started)
                print(f"  generated {written:,} events ({rate:,.0f} consumptions/s)", flush=True)
        return int(lg.store.recorder.max_notification_id() or 0)  # type: ignore[union-attr]


def copy_to_postgres(sqlite_path: str, pg_url: str) -> None:
    """Copies events and chain links, bytes and ids unchanged, into a fresh ledger database."""
    Ledger.open(pg_url, projections="off").close()  # creates the tables
    source = sqlite3.connect(sqlite_path)
    with psycopg.connect(pg_url) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY ledger_events (notification_id, originator_id, originator_version, topic,"
            " state) FROM STDIN"
        ) as copy:
            rows = source.execute(
                "SELECT rowid, originator_id, originator_version, topic, state"
                " FROM stored_events ORDER BY rowid"
            )
            while chunk := rows.fetchmany(COPY_ROWS_PER_FETCH):
                for row in chunk:
                    copy.write_row(row)
        with cursor.copy("COPY ledger_chain (last_id, first_id, hash) FROM STDIN") as copy:
            for row in source.execute("SELECT last_id, first_id, hash FROM ledger_chain"):
                copy.write_row(row)
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_events', 'notification_id'),"
            " (SELECT max(notification_id) FROM ledger_events))"
        )
        cursor.execute("ANALYZE ledger_events")
    source.close()


# Measurements (each in its own child process) --------------------------------------------------


def child_read(url: str) -> dict[str, Any]:
    """Every row read and decoded, nothing else."""
    with Ledger.open(url, projections="off", create_tables=False) as lg:
        source = lg.store.audit_source()
        decode = source.decode
        start_rss = rss_mib()
        started = time.perf_counter()
        after = 0
        count = 0
        while rows := source.notifications(after, READ_PAGE_SIZE):
            for row in rows:
                decode(row)
            count += len(rows)
            after = rows[-1].id
        seconds = time.perf_counter() - started
    return {"events": count, "seconds": seconds, "start_rss": start_rss, "peak": peak_rss_mib()}


def child_verify(url: str) -> dict[str, Any]:
    """``Ledger.verify`` with resident memory sampled at quarters of the replay."""
    samples: dict[int, float] = {}

    def progress(done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if quarter not in samples:
            samples[quarter] = rss_mib()

    with Ledger.open(url, projections="off", create_tables=False) as lg:
        start_rss = rss_mib()
        started = time.perf_counter()
        report = lg.verify(progress=progress)
        seconds = time.perf_counter() - started
    return {
        "events": report.events,
        "seconds": seconds,
        "ok": report.ok,
        "breaches": report.breach_counts,
        "start_rss": start_rss,
        "samples": [round(samples[q], 1) for q in sorted(samples)],
        "peak": peak_rss_mib(),
    }


def measure(mode: str, url: str) -> dict[str, Any]:
    """Runs one measurement in a fresh Python process."""
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_CIPHER_KEY"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--url", url],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Generates, copies, measures and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ctis", type=int, default=1_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-base", default=os.environ.get("LEDGER_TEST_PG", PG_BASE_DEFAULT))
    parser.add_argument(
        "--db", help="keep the generated SQLite file here; reuse it if it exists already"
    )
    parser.add_argument("--child", choices=("read", "verify"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_cli_logging(logging.WARNING)  # one log line per command would dominate generation
    if args.child:
        run = child_read if args.child == "read" else child_verify
        print(json.dumps(run(args.url)))
        return

    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        sqlite_path = str(Path(args.db).resolve()) if args.db else f"{tmp}/ledger.db"
        sqlite_url = f"sqlite:///{sqlite_path}"
        if Path(sqlite_path).exists():
            print(f"reusing the events in {sqlite_path}")
        else:
            print(f"generating {args.events:,} events over {args.ctis:,} CTIs on SQLite ...")
            started = time.perf_counter()
            total = generate(sqlite_url, args.events, args.ctis)
            print(f"  {total:,} events in {time.perf_counter() - started:.0f} s")
        urls: dict[str, str] = {}
        if "sqlite" in backends:
            urls["sqlite"] = sqlite_url
        pg_name = f"bench_verify_{os.getpid()}"
        if "postgres" in backends:
            with psycopg.connect(f"{args.pg_base}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{pg_name}"')
            urls["postgres"] = f"{args.pg_base}/{pg_name}"
            started = time.perf_counter()
            copy_to_postgres(sqlite_path, urls["postgres"])
            print(f"  copied to PostgreSQL in {time.perf_counter() - started:.0f} s")
        try:
            results = {
                name: {"read": measure("read", url), "verify": measure("verify", url)}
                for name, url in urls.items()
            }
        finally:
            if "postgres" in urls:
                with psycopg.connect(f"{args.pg_base}/postgres", autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    print()
    print(
        f"{'backend':10} {'measurement':13} {'events':>10} {'seconds':>8} {'events/s':>10}"
        f" {'peak RSS':>9} {'RSS at start, 25/50/75/100 %':>30}"
    )
    for name, result in results.items():
        for what, r in result.items():
            label = "read+decode" if what == "read" else "verify"
            samples = ", ".join(f"{s:.0f}" for s in r.get("samples", []))
            trail = f"{r['start_rss']:.0f}" + (f"; {samples}" if samples else "")
            print(
                f"{name:10} {label:13} {r['events']:>10,} {r['seconds']:>8.1f}"
                f" {r['events'] / r['seconds']:>10,.0f} {r['peak']:>7.0f} MiB {trail:>30}"
            )
            if what == "verify" and not r["ok"]:
                print(f"  verify found breaches: {r['breaches']}")


if __name__ == "__main__":
    main()
