"""Hot-CTI benchmark: writers in several processes on one CTI, against one uncontended caller.

Measures in one run on PostgreSQL (a fresh database), the rows taking turns in every repetition
(in a rotating order, so that each compares like moments of the shared machine's load):

- one caller: one process, one ``execute`` at a time, on a CTI nobody else writes;
- ``--processes`` processes x 1 caller on one CTI (each its own ``Ledger``, one command a call);
- the same processes x ``--threads`` threads each, sharing their process's ``Ledger``.

Each row gives stamps per second (median [min-max] of the repetitions), its ratio to the one
caller's median, WAL bytes per stamp, the errors (anything but an outcome or a rejection) and
the stamps lost. WAL is read twice: ``pg_current_wal_lsn`` before and after the run (the whole
server's WAL, which on a shared server counts everybody's writes), and the records of this
database's own transactions between those two positions (``pg_walinspect``: the records with a
block of this database, and every record of their transactions, commit and abort included).
Lost: a caller told ``ok`` whose CFDI is not recorded exactly once, or a CFDI recorded that no
caller was told of. Usage::

    .venv/bin/python benchmarks/bench_hot.py [--repetitions 5] [--commands 1000]

``benchmarks/bench_write.py`` prints the same rows (``hot_rows``) with its PostgreSQL table.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

# Runs from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.storage.store import EventStore
from benchmarks.common import PG_BASE_DEFAULT, fresh_pg_database
from ledger.api import Ledger
from ledger.errors import Rejected
from ledger.outcome import Outcome

ISSUER_RFC = "GODE561231GR8"
PACKAGE_STAMPS = 10_000
PROCESS_TIMEOUT_S = 600
"""Bound on the wait for one worker process."""
HOT_THREADS = 4
"""Threads per process in the hot rows with threads."""


@dataclass
class HotRun:
    """One run of worker processes on one CTI."""

    rate: float
    calls: int
    stamps: int
    errors: Counter[str]
    lost: int
    wal_server_bytes: int
    wal_own_bytes: int | None
    wal_detail: Counter[tuple[str, str]]
    """Own WAL bytes by record type (with or without a full-page image) and relation."""


@dataclass
class HotRow:
    """The repetitions of one kind of run."""

    name: str
    runs: list[HotRun] = field(default_factory=list)

    def median(self, value: str) -> float:
        """The median of one figure of the runs."""
        values = [getattr(r, value) for r in self.runs if getattr(r, value) is not None]
        return statistics.median(values) if values else float("nan")

    def per_stamp(self, value: str) -> float:
        """The median over the runs of a WAL figure divided by the run's stamps."""
        values = [
            getattr(r, value) / r.stamps
            for r in self.runs
            if getattr(r, value) is not None and r.stamps
        ]
        return statistics.median(values) if values else float("nan")


def setup_network(lg: Ledger, ctis: Sequence[str], stamps_each: int) -> None:
    """A master account, a distributor and one client per CTI, each CTI holding ``stamps_each``."""
    expires = (datetime.now(tz=UTC).date() + timedelta(days=365)).isoformat()
    packages = -(-len(ctis) * stamps_each // PACKAGE_STAMPS)
    profile = {"rfc": ISSUER_RFC, "postal_code": "06600", "email": "c@example.com"}
    commands: list[dict[str, Any]] = [
        {"type": "OpenMasterAccount", "master_id": "M", "name": "Plataforma", "rfc": "SAT970701NN3"}
        | {"actor": "M"},
        {
            "type": "DefinePackage",
            "actor": "M",
            "seller_id": "M",
            "package_id": "P",
            "unit": "stamps",
            "quantity": PACKAGE_STAMPS,
            "price": "500.00",
            "audience": "distributor",
        },
        {
            "type": "RegisterDistributor",
            "actor": "M",
            "distributor_id": "D",
            "parent_id": "M",
            "profile": {"name": "Distribuidora", "rfc": "MAB9307148T4"}
            | {"email": "d@example.com", "postal_code": "06600"},
        },
        {"type": "ValidateDistributor", "distributor_id": "D", "actor": "M"},
        {"type": "ActivateDistributor", "distributor_id": "D", "actor": "M", "expires_on": expires},
        {
            "type": "BuyPackage",
            "actor": "D",
            "buyer_id": "D",
            "seller_id": "M",
            "package_id": "P",
            "count": packages,
        },
    ]
    for n, cti in enumerate(ctis):
        client = cti.removesuffix("-cti")
        commands += [
            {
                "type": "RegisterClient",
                "actor": "D",
                "client_id": client,
                "distributor_id": "D",
                "profile": profile
                | {"name": f"Cliente {n}", "regimen_fiscal": "612", "uso_cfdi": "G03"},
            },
            {
                "type": "TransferStamps",
                "actor": "D",
                "transfer_id": f"T-{cti}",
                "from_id": "D",
                "to_id": cti,
                "quantity": stamps_each,
                "amount": "0.00",
            },
        ]
    for result in lg.execute_many(commands):
        assert isinstance(result, Outcome), result


def consumptions(cti: str, count: int) -> list[dict[str, Any]]:
    """``count`` ConsumeStamp dicts on ``cti`` with fresh CFDI UUIDs."""
    return [
        {
            "type": "ConsumeStamp",
            "actor": "M",
            "cti_id": cti,
            "cfdi_uuid": str(uuid.uuid4()),
            "issuer_rfc": ISSUER_RFC,
        }
        for _ in range(count)
    ]


def hot_worker(
    url: str, commands: list[dict[str, Any]], threads: int, barrier: Any, results: Any
) -> None:
    """In a child process: its own ledger, ``threads`` threads each sending every
    ``threads``-th command with ``execute``; reports the CFDIs told ``ok`` and the errors."""
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (the process's log lines, to the end)
    errors: Counter[str] = Counter()
    stamped: list[str] = []
    lock = threading.Lock()
    with Ledger.open(url, projections="off", create_tables=False, password_cost="fast") as lg:  # noqa: S106
        # Its cache warmed as a long-running process's would be: the CTI loaded once.
        lg.engine.current(commands[0]["cti_id"])

        def run(first: int) -> None:
            for command in commands[first::threads]:
                try:
                    outcome = lg.execute(command)
                except Rejected as rejection:
                    with lock:
                        errors[f"rejected:{rejection.code}"] += 1
                    continue
                except Exception as exc:  # counted: an error is what this measurement looks for
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                if outcome.ok and not outcome.replayed:
                    with lock:
                        stamped.append(command["cfdi_uuid"].upper())

        workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
        barrier.wait(timeout=PROCESS_TIMEOUT_S)
        started = time.time()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        ended = time.time()
    results.put((started, ended, len(commands), stamped, errors))


class Wal:
    """The WAL written between two positions: the server's, and this database's own.

    While a run is measured, a temporary replication slot (dropped after the run) keeps the
    server from recycling its WAL before it is read: on a shared server other sessions' tests
    request checkpoints every few seconds.
    """

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            self.inspect = True
        except psycopg.Error:
            self.inspect = False  # not installed, or not allowed: the server's figure alone
        row = self.conn.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        self.blocks = f"%/{row[0]}/%"
        self.slot = f"bench_hot_{uuid.uuid4().hex[:10]}"
        self.held = False

    def begin(self) -> str:
        """The position a run starts at (its WAL kept until ``written``)."""
        if self.inspect:
            try:
                self.conn.execute(
                    "SELECT pg_create_physical_replication_slot(%s, true, true)", (self.slot,)
                )
                self.held = True
            except psycopg.Error:
                self.held = False  # no slot to spare: read it anyway, it may be recycled
        return self.position()

    def position(self) -> str:
        """The server's WAL position, flushed (what ``pg_walinspect`` can read up to)."""
        row = self.conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def written(self, start: str, end: str) -> tuple[int, int | None, Counter[tuple[str, str]]]:
        """Bytes of WAL between two positions: the server's, and this database's own records
        (those with a block of it, and every record of their transactions), the latter by
        record type and relation."""
        row = self.conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint", (end, start)
        ).fetchone()
        assert row is not None
        server = int(row[0])
        detail: Counter[tuple[str, str]] = Counter()
        if not self.inspect:
            return server, None, detail
        try:
            rows = self.conn.execute(
                "WITH r AS MATERIALIZED (SELECT xid, resource_manager || '/' || record_type AS "
                "kind, record_length, fpi_length, block_ref LIKE %s AS own, "
                "substring(block_ref from 'rel [0-9]+/[0-9]+/([0-9]+)') AS node "
                "FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn)), "
                "mine AS (SELECT DISTINCT xid FROM r WHERE own AND xid <> '0'::xid) "
                "SELECT r.kind || CASE WHEN r.fpi_length > 0 THEN ' (FPI)' ELSE '' END, "
                "coalesce(c.relname, ''), sum(r.record_length)::bigint FROM r "
                "LEFT JOIN pg_class c ON r.own AND c.relfilenode::text = r.node "
                "WHERE r.own OR r.xid IN (SELECT xid FROM mine) GROUP BY 1, 2",
                (self.blocks, start, end),
            ).fetchall()
        except psycopg.Error:
            return server, None, detail  # recycled before it was read
        finally:
            if self.held:
                self.conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                self.held = False
        for kind, relation, length in rows:
            detail[(kind, relation)] += length
        return server, sum(detail.values()), detail

    def close(self) -> None:
        """Closes the connection (which drops a slot still held)."""
        self.conn.close()


def recorded_cfdis(lg: Ledger, cti: str, after: int) -> Counter[str]:
    """How many times each CFDI was consumed on ``cti`` after its version ``after``."""
    assert isinstance(lg.store, EventStore)
    return Counter(
        str(event.cfdi_uuid).upper()
        for event in lg.store.app.events.get(cti, gt=after)
        if type(event).__name__ == "StampConsumed"
    )


def run_workers(
    lg: Ledger,
    url: str,
    wal: Wal,
    cti: str,
    shape: tuple[int, int],
    commands: int,
    target: Callable[..., None],
    *extra: Any,
) -> tuple[list[tuple[Any, ...]], Counter[str], Counter[str], tuple[Any, Any]]:
    """``shape`` (processes, threads) workers ``target(url, plan, threads, barrier, results,
    *extra)`` send ``commands`` consumptions of ``cti`` in all, started together. Returns their
    outputs, the CFDIs they were told and the ones recorded, and the WAL positions around
    them."""
    processes, threads = shape
    before = lg.engine.current(cti)
    assert before is not None
    plans = [consumptions(cti, commands // processes) for _ in range(processes)]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ledger.api", "psycopg"])
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [
        context.Process(target=target, args=(url, plan, threads, barrier, results, *extra))
        for plan in plans
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=PROCESS_TIMEOUT_S)
    start = wal.begin()
    outputs = [results.get(timeout=PROCESS_TIMEOUT_S) for _ in workers]
    end = wal.position()
    for worker in workers:
        worker.join(timeout=PROCESS_TIMEOUT_S)
    told: Counter[str] = Counter()
    for output in outputs:
        told.update(output[3])
    recorded = recorded_cfdis(lg, cti, before.version)
    return outputs, told, recorded, (start, end)


def run_hot(
    lg: Ledger, url: str, wal: Wal, cti: str, processes: int, threads: int, commands: int
) -> HotRun:
    """``processes`` processes with ``threads`` callers each send ``commands`` consumptions of
    ``cti`` in all; their rate from the first start to the last end, and what they wrote."""
    outputs, told, recorded, (start, end) = run_workers(
        lg, url, wal, cti, (processes, threads), commands, hot_worker
    )
    errors: Counter[str] = Counter()
    for output in outputs:
        errors.update(output[4])
    calls = sum(output[2] for output in outputs)
    elapsed = max(output[1] for output in outputs) - min(output[0] for output in outputs)
    # Told ok but not recorded once, or recorded without anybody told.
    lost = sum(((told - recorded) + (recorded - told)).values())
    server, own, detail = wal.written(start, end)
    stamps = sum(told.values())
    return HotRun(stamps / elapsed, calls, stamps, errors, lost, server, own, detail)


def measure_hot(
    url: str, *, processes: int, threads: int, commands: int, repetitions: int
) -> list[HotRow]:
    """The one caller, the hot processes and the hot processes' threads, taking turns."""
    alone, hot = "ALONE-cti", "HOT-cti"
    kinds = {
        "alone": (alone, 1, 1),
        "hot": (hot, processes, 1),
        "hot_threads": (hot, processes, threads),
    }
    rows = {name: HotRow(name) for name in kinds}
    with Ledger.open(url, projections="off", password_cost="fast") as lg:  # noqa: S106
        setup_network(lg, [alone, hot], commands * repetitions * 2 + 10)
        wal = Wal(url)
        try:
            for repetition in range(repetitions):
                names = list(kinds)
                turn = repetition % len(names)
                for name in names[turn:] + names[:turn]:
                    cti, count, each = kinds[name]
                    run = run_hot(lg, url, wal, cti, count, each, commands)
                    rows[name].runs.append(run)
        finally:
            wal.close()
    return list(rows.values())


def hot_rows(rows: list[HotRow], processes: int, threads: int) -> list[tuple[str, str, str]]:
    """The rows as text: what, median/s [min-max], and the notes (ratio, WAL, errors, lost)."""
    by_name = {row.name: row for row in rows}
    alone = by_name["alone"].median("rate")
    titles = {
        "alone": "1 process x 1 caller, its own CTI (uncontended)",
        "hot": f"{processes} processes x 1 caller, one hot CTI",
        "hot_threads": f"{processes} processes x {threads} threads, one hot CTI",
    }
    out = []
    for name, title in titles.items():
        row = by_name[name]
        rates = [r.rate for r in row.runs]
        errors: Counter[str] = Counter()
        rejected = 0
        for run in row.runs:
            for code, n in run.errors.items():
                if code.startswith("rejected:"):
                    rejected += n
                else:
                    errors[code] += n
        calls = sum(r.calls for r in row.runs)
        lost = sum(r.lost for r in row.runs)
        own = row.per_stamp("wal_own_bytes")
        own_text = "n/a" if math.isnan(own) else f"{own:,.0f}"  # no pg_walinspect
        note = (
            f"{row.median('rate') / alone:.2f} x 1 caller; WAL/stamp {own_text} own, "
            f"{row.per_stamp('wal_server_bytes'):,.0f} server; errors {sum(errors.values())}"
            f"{' ' + str(dict(errors)) if errors else ''} / rejected {rejected} / lost {lost}"
            f" of {calls:,} calls"
        )
        spread = f"{row.median('rate'):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"
        out.append((title, spread, note))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the benchmark and prints its rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=HOT_THREADS, help="threads per process")
    parser.add_argument("--commands", type=int, default=1_000, help="stamps per run")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--pg", default=os.environ.get("LEDGER_TEST_PG", PG_BASE_DEFAULT))
    parser.add_argument(
        "--wal-detail", action="store_true", help="own WAL by record type and relation"
    )
    args = parser.parse_args(argv)
    real_stderr = sys.stderr
    with (
        open(os.devnull, "w") as devnull,
        fresh_pg_database(args.pg.rstrip("/"), "bench_hot") as url,
    ):
        sys.stderr = devnull  # the ledger's warnings (a lost race) would reach the terminal
        try:
            rows = measure_hot(
                url,
                processes=args.processes,
                threads=args.threads,
                commands=args.commands,
                repetitions=args.repetitions,
            )
        finally:
            sys.stderr = real_stderr
    print(
        f"{args.commands:,} ConsumeStamp a run, one execute a call; median of "
        f"{args.repetitions} repetitions [min-max], stamps per second; WAL bytes per stamp: "
        "this database's own transactions (pg_walinspect) and the whole server's "
        "(pg_current_wal_lsn, everybody's writes on a shared server)."
    )
    for title, spread, note in hot_rows(rows, args.processes, args.threads):
        print(f"postgres  {title:<52} {spread:>24}  {note}")
    if args.wal_detail:
        for row in rows:
            runs = [r for r in row.runs if r.wal_own_bytes is not None]
            stamps = sum(r.stamps for r in runs)
            detail = sum((r.wal_detail for r in runs), Counter())
            print(f"{row.name}: own WAL by record and relation, bytes per stamp (all runs)")
            for (kind, relation), length in detail.most_common(14):
                print(f"  {kind:<44} {relation:<32} {length / stamps:>9,.1f}")


if __name__ == "__main__":
    main()
