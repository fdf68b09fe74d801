"""Where a hot CTI's time goes: bench_hot's rows with each worker process instrumented.

Runs one uncontended caller and ``--processes`` x ``--threads`` writers on one hot CTI, taking
turns as ``bench_hot.py`` does, for one or more variants in the same run (each its own fresh
database; a variant sets module attributes in the main process and in every worker, or has its
tables and functions created by another checkout, e.g. main, to compare code before and after).
Prints each row's rate and ratio to the uncontended caller, and with ``--detail`` per stamp:
statements sent (round trips), time in the hot wait (answered or a turn, by the batches the turn
took), the turn's client time and CPU between its wait and its guarded write, the guarded
writes, events caught up, optimistic writes and lost attempts, and the worker's CPU and context
switches. ``--server-trace`` adds each turn's phases as the server saw them
(``trace_hot_server.py``). Usage::

    .venv/bin/python benchmarks/trace_hot.py --repetitions 5 --threads 1,4 --detail \\
        --variants '{"main": {"checkout": "/work/main"}, "new": {}}'
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_hot
import trace_hot_server

from adapters.storage import postgres, postgres_guarded
from ledger.api import Ledger
from ledger.write import attempts

PROCESS_TIMEOUT_S = 600


class Stats:
    """Counts and seconds by name, summed over a worker's threads."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.time: defaultdict[str, float] = defaultdict(float)
        self.lock = threading.Lock()

    def add(self, name: str, elapsed: float, n: int = 1) -> None:
        """Adds ``n`` to a count and ``elapsed`` to its seconds."""
        with self.lock:
            self.count[name] += n
            self.time[name] += elapsed


STATS = Stats()


def timed(owner: Any, attribute: str, name: str) -> None:
    """Counts and times every call of ``owner.attribute``."""
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            STATS.add(name, time.perf_counter() - started)

    setattr(owner, attribute, wrapper)


def instrument() -> None:
    """Wraps the hot path's calls in this process."""
    timed(psycopg.Cursor, "execute", "rt.cursor.execute")
    timed(psycopg.Connection, "execute", "rt.conn.execute")
    original_wait = postgres_guarded.GuardedWriter.wait

    def wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        turn = original_wait(self, *args, **kwargs)
        elapsed = time.perf_counter() - started
        if turn.answers is not None:
            STATS.add("wait.answered", elapsed)
        else:
            STATS.add(f"wait.turn.posted={len(turn.posted)}", elapsed)
            STATS.add("wait.turn", elapsed)
            STATS.add("turn.events_caught_up", 0, len(turn.rows))
            self.trace_turn_at = (time.perf_counter(), time.thread_time())
        return turn

    postgres_guarded.GuardedWriter.wait = wait  # type: ignore[method-assign]
    original_record = postgres_guarded.GuardedWriter.record

    def record(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        at = getattr(self, "trace_turn_at", None)
        if at is not None:
            self.trace_turn_at = None
            STATS.add("turn.client_wall", started - at[0])
            STATS.add("turn.client_cpu", time.thread_time() - at[1])
        try:
            ids = original_record(self, *args, **kwargs)
        except Exception as exc:
            STATS.add(f"record.{type(exc).__name__}", time.perf_counter() - started)
            raise
        STATS.add("record.ok", time.perf_counter() - started)
        return ids

    postgres_guarded.GuardedWriter.record = record  # type: ignore[method-assign]
    timed(attempts.Attempts, "_take_turn", "take_turn")
    timed(attempts.Attempts, "_combine", "combine")
    timed(postgres.LedgerPostgresRecorder, "insert_events", "optimistic.insert_events")
    timed(postgres.LedgerPostgresRecorder, "insert_events_later", "pipelined.send")
    timed(postgres.LedgerPostgresRecorder, "locked", "locked")
    timed(postgres.LedgerPostgresRecorder, "select_keys", "select_keys")
    timed(postgres.LedgerPostgresRecorder, "select_events", "select_events")
    timed(attempts.Attempts, "after_loss", "after_loss")


def apply(settings: dict[str, Any]) -> None:
    """Sets ``module.attribute`` to each value."""
    for name, value in settings.items():
        module, attribute = name.rsplit(".", 1)
        setattr(importlib.import_module(module), attribute, value)


class _Result:
    def put(self, item: Any) -> None:
        self.item = item


class _Barrier:
    """The workers' barrier, noting the process's CPU when it opens."""

    def __init__(self, barrier: Any) -> None:
        self.barrier = barrier
        self.usage = resource.getrusage(resource.RUSAGE_SELF)

    def wait(self, timeout: float) -> None:
        self.barrier.wait(timeout=timeout)
        self.usage = resource.getrusage(resource.RUSAGE_SELF)


def worker(
    url: str,
    commands: list[dict[str, Any]],
    threads: int,
    barrier: Any,
    results: Any,
    settings: dict[str, Any],
) -> None:
    """``bench_hot.hot_worker``, instrumented; reports its counts and times too."""
    apply(settings)
    instrument()
    result = _Result()
    proxy = _Barrier(barrier)
    bench_hot.hot_worker(url, commands, threads, proxy, result)
    end = resource.getrusage(resource.RUSAGE_SELF)
    STATS.add("client_cpu_user", end.ru_utime - proxy.usage.ru_utime)
    STATS.add("client_cpu_sys", end.ru_stime - proxy.usage.ru_stime)
    STATS.add("client_switches_voluntary", 0, end.ru_nvcsw - proxy.usage.ru_nvcsw)
    STATS.add("client_switches_involuntary", 0, end.ru_nivcsw - proxy.usage.ru_nivcsw)
    stats = {k: (STATS.count[k], STATS.time[k]) for k in STATS.count}
    results.put((*result.item, stats))


def run(
    db: tuple[str, Ledger, bench_hot.Wal],
    cti: str,
    shape: tuple[int, int],
    commands: int,
    settings: dict[str, Any],
) -> tuple[Any, ...]:
    """One run of ``shape`` (processes, threads) on ``cti``: rate, stamps, errors, lost, WAL
    and the workers' summed counts and times."""
    url, lg, wal = db
    outputs, told, recorded, (start, end) = bench_hot.run_workers(
        lg, url, wal, cti, shape, commands, worker, settings
    )
    errors: Counter[str] = Counter()
    count: Counter[str] = Counter()
    spent: defaultdict[str, float] = defaultdict(float)
    for output in outputs:
        errors.update(output[4])
        for name, (n, seconds) in output[5].items():
            count[name] += n
            spent[name] += seconds
    elapsed = max(o[1] for o in outputs) - min(o[0] for o in outputs)
    wrong = (told - recorded) + (recorded - told)
    for cfdi in wrong:
        print(f"  lost? {cfdi}: told {told[cfdi]}, recorded {recorded[cfdi]}", file=sys.stdout)
    _, own, _ = wal.written(start, end)
    stamps = sum(told.values())
    return stamps / elapsed, stamps, errors, sum(wrong.values()), own, count, spent


def report(name: str, runs: list[tuple[Any, ...]], alone: float, detail: bool) -> None:
    """Prints one row, and its counts per stamp with ``detail``."""
    rate = statistics.median(r[0] for r in runs)
    own = [r[4] / r[1] for r in runs if r[4]]
    print(
        f"{name}: {rate:,.0f}/s ({rate / alone:.2f} x alone) rates {[round(r[0]) for r in runs]}"
        f" errors {dict(sum((r[2] for r in runs), Counter()))} lost {sum(r[3] for r in runs)}"
        f" WAL own/stamp {statistics.median(own) if own else float('nan'):,.0f}"
    )
    if not detail:
        return
    count: Counter[str] = Counter()
    spent: defaultdict[str, float] = defaultdict(float)
    stamps = sum(r[1] for r in runs)
    for r in runs:
        count.update(r[5])
        for key, seconds in r[6].items():
            spent[key] += seconds
    for key in sorted(count.keys() | spent.keys()):
        per_call = spent[key] / count[key] * 1e3 if count[key] else 0.0
        print(
            f"   {key:<32} {count[key] / stamps:8.3f}/stamp {spent[key] / stamps * 1e3:8.3f} "
            f"ms/stamp {per_call:8.3f} ms/call"
        )


def open_variant(
    stack: contextlib.ExitStack, base: str, settings: dict[str, Any], stamps: int, trace: bool
) -> tuple[str, Ledger, bench_hot.Wal]:
    """A fresh database for one variant, its network set up."""
    url = stack.enter_context(bench_hot.fresh_pg_database(base))
    checkout = settings.get("checkout")
    if checkout:
        # The tables and server functions as that checkout makes them.
        opener = (
            "import sys; from ledger.api import Ledger; "
            "Ledger.open(sys.argv[1], projections='off', password_cost='fast').close()"
        )
        python = f"{checkout}/.venv/bin/python"
        subprocess.run([python, "-c", opener, url], check=True, cwd=checkout)
    lg = stack.enter_context(
        Ledger.open(url, projections="off", password_cost="fast", create_tables=not checkout)  # noqa: S106
    )
    bench_hot.setup_network(lg, ["ALONE-cti", "HOT-cti"], stamps)
    wal = bench_hot.Wal(url)
    stack.callback(wal.close)
    if trace:
        trace_hot_server.patch(url)
    return url, lg, wal


def main() -> None:
    """Runs the rows of every variant, taking turns, and prints them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", default="1", help="threads per process, a comma list")
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--pg", default=bench_hot.PG_BASE_DEFAULT)
    parser.add_argument("--server-trace", action="store_true")
    parser.add_argument("--detail", action="store_true")
    parser.add_argument(
        "--variants",
        default='{"this": {}}',
        help='JSON: name -> {"module.attribute": value, "checkout": path}',
    )
    args = parser.parse_args()
    variants: dict[str, dict[str, Any]] = json.loads(args.variants)
    settings = {v: {k: x for k, x in s.items() if k != "checkout"} for v, s in variants.items()}
    first = next(iter(variants))
    kinds = [("alone", first, "ALONE-cti", (1, 1))] + [
        (f"{v} {args.processes}x{t}", v, "HOT-cti", (args.processes, int(t)))
        for v in variants
        for t in args.threads.split(",")
    ]
    out: dict[str, list[tuple[Any, ...]]] = {k[0]: [] for k in kinds}
    traces: dict[str, list[dict[str, Any]]] = {}
    real_stderr = sys.stderr
    with contextlib.ExitStack() as stack:
        sys.stderr = stack.enter_context(Path(os.devnull).open("w"))
        stamps = args.commands * args.repetitions * 2 + 10
        dbs = {}
        for name, setting in variants.items():
            apply(settings[name])
            dbs[name] = open_variant(stack, args.pg, setting, stamps, args.server_trace)
            apply(settings[first])
        for repetition in range(args.repetitions):
            turn = repetition % len(kinds)
            for name, variant, cti, shape in kinds[turn:] + kinds[:turn]:
                db = dbs[variant]
                out[name].append(run(db, cti, shape, args.commands, settings[variant]))
                if args.server_trace:
                    traces.setdefault(name, []).append(trace_hot_server.analyse(db[0]))
        sys.stderr = real_stderr
    alone = statistics.median(r[0] for r in out["alone"])
    for name, runs in out.items():
        report(name, runs, alone, args.detail)
        for trace in traces.get(name, []):
            phases = {k: (round(v[0], 3), round(v[1], 3), v[2]) for k, v in trace.items()}
            print("   server (median, mean ms, n):", phases)


if __name__ == "__main__":
    main()
