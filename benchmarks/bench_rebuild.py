"""Rebuild speed of the views beside the raw read-and-decode rate of the same events.

    .venv/bin/python benchmarks/bench_rebuild.py [--events 1000000] [--backends sqlite,postgres]

Writes a history of ``--events`` events (a network set up through commands, then stamp
consumptions spread over 60 days, written straight through the event store in big batches, as
the engine's batched writes would), then, each in a fresh process so figures do not mix:

- ``read+decode``: ``select_notifications`` pages and the msgspec decode of every event: the
  ceiling any projection reading this log can reach;
- ``rebuild``: ``Views.rebuild()``: drop the views, project the whole history;
- ``rebuild 1/4``: the same over the first quarter of the history only, to show that peak memory
  does not grow with the length of the history (pages are bounded).

Peak memory is the process's maximum resident set size (``ru_maxrss``), interpreter included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.storage.views import event_decoder, notification_source
from ledger.aggregates.stamping_account import StampingAccount
from ledger.api import Ledger
from ledger.clock import ManualClock, local_date
from ledger.logging import configure_cli_logging
from tests.support import client_profile

PAGE = 10_000
WRITE_BATCH = 20_000
ISSUER_RFC = "GODE561231GR8"


def _profile(n: int) -> dict[str, Any]:
    return {
        **client_profile(f"Cliente {n}", f"cliente{n}@example.com"),
        "phone": f"55 {n:04d} 0000",
    }


def generate(url: str, events: int, ctis: int) -> int:
    """Writes the history; returns the number of events stored."""
    start = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    clock = ManualClock(start)
    with Ledger.open(url, projections="off", clock=clock, password_cost="fast") as lg:  # noqa: S106  (a cost level)
        setup: list[dict[str, Any]] = [
            {"type": "OpenMasterAccount", "master_id": "M", "name": "P", "rfc": "SAT970701NN3"},
            {
                "type": "DefinePackage",
                "actor": "M",
                "seller_id": "M",
                "package_id": "P1M",
                "unit": "stamps",
                "quantity": 1_000_000,
                "price": "100000.00",
                "audience": "distributor",
            },
            {
                "type": "RegisterDistributor",
                "actor": "M",
                "distributor_id": "D1",
                "parent_id": "M",
                "profile": {
                    "name": "Distribuidora",
                    "rfc": "MAB9307148T4",
                    "email": "d@example.com",
                    "postal_code": "06600",
                },
            },
            {"type": "ValidateDistributor", "distributor_id": "D1", "actor": "M"},
            {
                "type": "ActivateDistributor",
                "distributor_id": "D1",
                "actor": "M",
                "expires_on": "2027-12-31",
            },
            {
                "type": "BuyPackage",
                "actor": "D1",
                "buyer_id": "D1",
                "seller_id": "M",
                "package_id": "P1M",
                "count": events // 1_000_000 + 2,
            },
        ]
        setup += [
            {
                "type": "RegisterClient",
                "actor": "D1",
                "client_id": f"C{n}",
                "distributor_id": "D1",
                "profile": _profile(n),
            }
            for n in range(ctis)
        ]
        per_cti = events // ctis + 10
        setup += [
            {
                "type": "TransferStamps",
                "actor": "D1",
                "transfer_id": f"T{n}",
                "from_id": "D1",
                "to_id": f"C{n}-cti",
                "quantity": per_cti,
                "amount": "1000.00",
            }
            for n in range(ctis)
        ]
        for result in lg.execute_many(setup):
            assert getattr(result, "ok", False), result
        versions = {f"C{n}-cti": 2 for n in range(ctis)}
        remaining = events - (6 + 3 * ctis + 2 * ctis)
        spacing = timedelta(days=60) / max(remaining, 1)
        at = start
        batch: list[Any] = []
        for index in range(remaining):
            cti = f"C{index % ctis}-cti"
            versions[cti] += 1
            at += spacing
            batch.append(
                StampingAccount.StampConsumed(
                    originator_id=cti,
                    originator_version=versions[cti],
                    timestamp=at,
                    cfdi_uuid=str(uuid.UUID(int=index)),
                    issuer_rfc=ISSUER_RFC,
                    stamped_at=at,
                    local_date=local_date(at),
                    lot_id=f"T{index % ctis}",
                )
            )
            if len(batch) == WRITE_BATCH:
                lg.store.record(batch, [])
                batch = []
        if batch:
            lg.store.record(batch, [])
        newest = lg.store.recorder.max_notification_id() or 0  # type: ignore[union-attr]
        return int(newest)


def measure(url: str, what: str, pages_max: int | None) -> dict[str, Any]:
    """One measurement in this process (run by a child)."""
    configure_cli_logging(logging.WARNING)
    with Ledger.open(url, projections="off") as lg:
        started = time.perf_counter()
        if what == "read":
            source = notification_source(lg.store)
            decode = event_decoder(lg.store)
            position = 0
            count = 0
            while True:
                page = source.select_notifications(position, PAGE, inclusive_of_start=False)
                if not page:
                    break
                for notification in page:
                    decode(notification)
                position = page[-1].id
                count += len(page)
        else:
            count = lg.views.projector.rebuild(pages_max=pages_max)
        seconds = time.perf_counter() - started
    return {
        "events": count,
        "seconds": seconds,
        "rate": count / seconds,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(url: str, what: str, pages_max: int | None) -> dict[str, Any]:
    args = [sys.executable, __file__, "--measure", what, "--url", url]
    if pages_max is not None:
        args += ["--pages-max", str(pages_max)]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _fresh_postgres(base: str) -> str:
    import psycopg  # noqa: PLC0415

    name = f"bench_rebuild_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def _drop_postgres(base: str, url: str) -> None:
    import psycopg  # noqa: PLC0415

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    """Runs the benchmark and prints a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ctis", type=int, default=2_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--pg", default=os.environ.get("LEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
    )
    parser.add_argument("--measure", choices=["read", "rebuild"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--pages-max", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.url, args.measure, args.pages_max)))
        return
    configure_cli_logging(logging.WARNING)
    rows = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            path = Path(tempfile.gettempdir()) / f"bench_rebuild_{uuid.uuid4().hex[:8]}.db"
            url = f"sqlite:///{path}"
        else:
            url = _fresh_postgres(args.pg)
        try:
            started = time.perf_counter()
            total = generate(url, args.events, args.ctis)
            written_s = time.perf_counter() - started
            print(f"{backend}: {total:,} events written in {written_s:.1f} s", file=sys.stderr)
            read = _child(url, "read", None)
            full = _child(url, "rebuild", None)
            quarter = _child(url, "rebuild", max(total // 4 // PAGE, 1))
            rows.append((backend, total, read, full, quarter))
        finally:
            if backend == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            else:
                _drop_postgres(args.pg, url)
    header = (
        f"{'backend':<9} {'events':>10} {'read+decode ev/s':>17} {'rebuild ev/s':>13} "
        f"{'rebuild s':>10} {'peak MB full':>13} {'peak MB 1/4':>12}"
    )
    print(header)
    print("-" * len(header))
    for backend, total, read, full, quarter in rows:
        print(
            f"{backend:<9} {total:>10,} {read['rate']:>17,.0f} {full['rate']:>13,.0f} "
            f"{full['seconds']:>10.1f} {full['maxrss_mb']:>13.0f} {quarter['maxrss_mb']:>12.0f}"
        )


if __name__ == "__main__":
    main()
