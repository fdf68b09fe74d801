"""Write-path benchmark: the ledger against the raw database doing the equivalent inserts.

Measures in one run, on SQLite (a temp file) and PostgreSQL (a fresh database):

- ledger batched: ``Ledger.execute_many`` of ConsumeStamp dicts, ``--batch-size`` per call, spread
  over ``--ctis`` stamping accounts (each batch is one transaction: its events, one idempotency
  key row per command in ``ledger_keys`` and one hash-chain link);
- ledger single: one ``Ledger.execute`` per ConsumeStamp (one transaction each); and again
  with its per-command log line rendered, as a host that configures logging would (a handler
  on ``ledger`` at INFO, the command line's JSON formatter, lines written to /dev/null);
- raw: the same number of rows of the same size (a real encoded StampConsumed) inserted into a
  table shaped like the events table, in transactions of the same size: ``executemany`` and (on
  PostgreSQL) ``COPY`` for batches, one-row transactions for singles. The raw baseline holds the
  event rows only; the "raw + keys + link" line adds the key row per command and the chain link
  per transaction that the ledger also writes, for an apples-to-apples view.
- threads: 1, 4 and 16 threads sharing one ``Ledger``, each calling ``execute`` (group commit
  gathers them into shared transactions), beside raw one-row transactions from one connection
  and from 16 connections at once (what the database's own commit batching gives); and as many
  asyncio tasks in one event loop, each awaiting ``aexecute`` (the same group commit, with no
  thread woken per command);
- processes: 4 processes (own ``Ledger`` each, one command per call) spread over many CTIs, and
  (on SQLite) 4 processes on one hot CTI; errors (anything but an outcome or a rejection) are
  counted. They run after the in-process repetitions: they write the CTIs this process has
  cached, so the batches that follow them run on stale state (first attempt lost, CTIs hot for
  a while); that case is its own row ("right after ... processes wrote its CTIs");
- a hot CTI (PostgreSQL, ``benchmarks/bench_hot.py``, in a database of its own): 4 processes
  x 1 caller and 4 processes x 4 threads on one CTI, against one uncontended caller (one
  process on its own CTI) in the same run, with WAL bytes per stamp, errors and stamps lost;
- loading: a CTI with a long history, a young one, and the distributor that made as many
  transfers, each from a cold cache (snapshots at work).

Every rate is the median of ``--repetitions`` runs (the machine is shared and noisy; min-max in
brackets); within a repetition the ledger and its raw baselines take turns, batch by batch and
every ``SINGLE_TURN`` single calls, so that each ratio compares the same moments of load. The
library configures no logging (its host does): with none configured, as in every row but the
"log line rendered" one, the per-command INFO line is not even built. Projections are off
(DESIGN: views may follow in another process): this measures the write path. Usage::

    .venv/bin/python benchmarks/bench_write.py [--backends sqlite,postgres] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent

# Runs from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.storage.sqlite import SQLITE_CACHE_KIB, SQLITE_WAL_AUTOCHECKPOINT_PAGES
from adapters.storage.store import EventStore
from benchmarks.bench_hot import HOT_THREADS, hot_rows, measure_hot
from benchmarks.common import (
    ISSUER_RFC,
    PG_BASE_DEFAULT,
    SETUP_PACKAGE_STAMPS,
    build_network,
    fresh_pg_database,
)
from ledger.api import Ledger
from ledger.errors import Rejected
from ledger.logging import LOGGER_NAME, StructuredFormatter
from ledger.outcome import Outcome
from ledger.write.calls import part_sizes
from ledger.write.group_commit import PIPELINE_GROUP_MAX


@dataclass
class Settings:
    """What one run measures."""

    ctis: int
    batch_size: int
    batched_commands: int
    single_commands: int
    thread_counts: tuple[int, ...]
    processes: int
    repetitions: int
    long_history: int
    backends: tuple[str, ...]
    pg_base: str


@dataclass
class Rates:
    """Rates (per second) of the repetitions of one measurement."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median rate."""
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self) -> str:
        """``[min-max]`` of the repetitions."""
        if not self.values:
            return ""
        return f"[{min(self.values):,.0f}-{max(self.values):,.0f}]"


# Ledger ------------------------------------------------------------------------------------------


def consumptions(ctis: Sequence[str], count: int) -> list[dict[str, Any]]:
    """``count`` ConsumeStamp dicts with fresh CFDI UUIDs, spread evenly over ``ctis``."""
    order = list(ctis)
    random.shuffle(order)
    return [
        {
            "type": "ConsumeStamp",
            "actor": "M",
            "cti_id": order[i % len(order)],
            "cfdi_uuid": str(uuid.uuid4()),
            "issuer_rfc": ISSUER_RFC,
        }
        for i in range(count)
    ]


def elapsed(run: Callable[..., object], *args: Any) -> float:
    """Seconds ``run(*args)`` took."""
    started = time.perf_counter()
    run(*args)
    return time.perf_counter() - started


def each(work: Callable[[Any], object], items: Sequence[Any]) -> None:
    """``work`` of every item, in order."""
    for item in items:
        work(item)


def timed(run: Callable[[], int]) -> float:
    """The rate of ``run`` (which returns how many items it did) per second."""
    started = time.perf_counter()
    done = run()
    return done / (time.perf_counter() - started)


@dataclass
class Loading:
    """Median seconds to load aggregates from a cold cache (a freshly opened ledger)."""

    young_cti_s: float
    old_cti_s: float
    distributor_s: float
    distributor_events: int


def top_up(lg: Ledger, cti: str, stamps: int) -> str:
    """Gives ``cti`` ``stamps`` more (the hot CTI of the process runs); returns its id."""
    results = lg.execute_many(
        [
            {
                "type": "BuyPackage",
                "buyer_id": "D",
                "seller_id": "M",
                "package_id": "P",
                "count": -(-stamps // SETUP_PACKAGE_STAMPS),
                "actor": "D",
            },
            {
                "type": "TransferStamps",
                "transfer_id": f"T-hot-{cti}",
                "from_id": "D",
                "to_id": cti,
                "quantity": stamps,
                "amount": "0.00",
                "actor": "D",
            },
        ]
    )
    assert all(isinstance(r, Outcome) for r in results), results
    return cti


def measure_loading(url: str, s: Settings) -> Loading:
    """Cold loads of a young CTI, a CTI with ``long_history`` consumptions and the distributor
    that made ``long_history`` transfers (snapshots at work)."""
    with Ledger.open(url, projections="off", password_cost="fast") as lg:  # noqa: S106  (a cost, not a password)
        (young, old, target) = build_network(lg, 3, s.long_history + 10, prefix="H")
        lg.execute_many(consumptions([young], 5))
        commands = consumptions([old], s.long_history)
        for start in range(0, len(commands), 5_000):
            lg.execute_many(commands[start : start + 5_000])
        lg.execute(
            {
                "type": "BuyPackage",
                "actor": "D",
                "buyer_id": "D",
                "seller_id": "M",
                "package_id": "P",
                "count": -(-s.long_history // SETUP_PACKAGE_STAMPS),
            }
        )
        transfers = [
            {
                "type": "TransferStamps",
                "actor": "D",
                "transfer_id": f"TL-{n}",
                "from_id": "D",
                "to_id": target,
                "quantity": 1,
                "amount": "0.00",
            }
            for n in range(s.long_history)
        ]
        for start in range(0, len(transfers), 5_000):
            results = lg.execute_many(transfers[start : start + 5_000])
            assert all(isinstance(r, Outcome) for r in results), results[:3]
        distributor_events = lg.engine.current("D").version  # type: ignore[union-attr]
    times: dict[str, list[float]] = {young: [], old: [], "D": []}
    for _ in range(5):
        for aggregate_id, samples in times.items():
            with Ledger.open(url, projections="off", create_tables=False) as cold:
                started = time.perf_counter()
                agg = cold.store.load(aggregate_id)
                samples.append(time.perf_counter() - started)
                assert agg is not None
    return Loading(
        statistics.median(times[young]),
        statistics.median(times[old]),
        statistics.median(times["D"]),
        distributor_events,
    )


# Raw database --------------------------------------------------------------------------------


def raw_rows(
    ctis: Sequence[str], count: int, first_version: int, sample: StoredEvent
) -> list[tuple[Any, ...]]:
    """Event-table rows like the ledger's: a real stored StampConsumed's topic and state."""
    rows = []
    versions = dict.fromkeys(ctis, first_version)
    order = list(ctis)
    for i in range(count):
        cti = order[i % len(order)]
        versions[cti] += 1
        rows.append((cti, versions[cti], sample.topic, sample.state))
    return rows


def key_rows(count: int) -> list[tuple[str, str, bytes]]:
    """Idempotency-key rows of the ledger's size."""
    outcome = Outcome(type="ConsumeStamp", balance_after=99, details={"local_date": "2026-01-05"})
    return [
        (f"cfdi:{str(uuid.uuid4()).upper()}", uuid.uuid4().hex, outcome.encode())
        for _ in range(count)
    ]


RowWriter = Callable[[tuple[Any, ...]], None]
"""Writes one row in a transaction of its own."""


@contextlib.contextmanager
def per_thread(
    connections: Sequence[Any], write: Callable[[Any, tuple[Any, ...]], None]
) -> Iterator[RowWriter]:
    """``write(connection, row)`` from any thread, each thread on a connection of its own taken
    from ``connections`` (as many as threads); they are closed after the block."""
    free = list(connections)
    local = threading.local()
    lock = threading.Lock()

    def single(row: tuple[Any, ...]) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            with lock:
                conn = local.conn = free.pop()
        write(conn, row)

    try:
        yield single
    finally:
        for conn in connections:
            conn.close()


class RawPostgres:
    """The raw PostgreSQL baselines, in tables shaped like the ledger's."""

    kinds = ("executemany", "copy", "with_keys")
    schema = (
        "CREATE TABLE raw_events (originator_id text NOT NULL, "
        "originator_version bigint NOT NULL, topic text, state bytea, "
        "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))",
        "CREATE UNIQUE INDEX ON raw_events (notification_id)",
        "CREATE TABLE raw_keys (key text PRIMARY KEY, fingerprint text NOT NULL, "
        "outcome bytea NOT NULL)",
        "CREATE TABLE raw_chain (last_id bigint PRIMARY KEY, first_id bigint NOT NULL, "
        "hash bytea NOT NULL)",
    )
    insert = (
        "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
        "VALUES (%s, %s, %s, %s)"
    )

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        for statement in self.schema:
            self.conn.execute(statement)

    def parallel(self, threads: int) -> contextlib.AbstractContextManager[RowWriter]:
        """One-row transactions from ``threads`` connections: each thread keeps its own."""

        def single(conn: psycopg.Connection[Any], row: tuple[Any, ...]) -> None:
            with conn.transaction():
                conn.execute(self.insert, row, prepare=True)

        connections = [psycopg.connect(self.url, autocommit=True) for _ in range(threads)]
        return per_thread(connections, single)

    def batch(
        self, kind: str, rows: list[tuple[Any, ...]], keys: list[tuple[str, str, bytes]], link: int
    ) -> None:
        """One transaction of ``rows`` (and ``keys`` and a link for ``with_keys``)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            if kind == "copy":
                with cur.copy(
                    "COPY raw_events (originator_id, originator_version, topic, state) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
                return
            cur.executemany(self.insert, rows)
            if kind == "with_keys":
                cur.executemany("INSERT INTO raw_keys VALUES (%s, %s, %s)", keys)
                cur.execute("INSERT INTO raw_chain VALUES (%s, %s, %s)", (link, 0, b"h" * 32))

    def single(self, row: tuple[Any, ...]) -> None:
        """One one-row transaction."""
        with self.conn.transaction():
            self.conn.execute(self.insert, row, prepare=True)

    def close(self) -> None:
        """Closes the connection."""
        self.conn.close()


class RawSQLite:
    """The raw SQLite baselines (WAL, like eventsourcing), in tables shaped like the ledger's."""

    kinds = ("executemany", "with_keys")
    insert = "INSERT INTO raw_events VALUES (?, ?, ?, ?)"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # The same connection settings and key-table layout as the ledger's SQLite recorder, so
        # the raw baseline does the same work the same way.
        self.conn.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        self.conn.execute(
            "CREATE TABLE raw_events (originator_id TEXT, originator_version INTEGER, "
            "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
        )
        self.conn.execute(
            "CREATE TABLE raw_keys (key TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL, "
            "outcome BLOB NOT NULL)"
        )
        self.conn.execute(
            "CREATE TABLE raw_chain (last_id INTEGER PRIMARY KEY, first_id INTEGER NOT NULL, "
            "hash BLOB NOT NULL)"
        )

    def batch(
        self, kind: str, rows: list[tuple[Any, ...]], keys: list[tuple[str, str, bytes]], link: int
    ) -> None:
        """One transaction of ``rows`` (and ``keys`` and a link for ``with_keys``)."""
        self.conn.execute("BEGIN")
        self.conn.executemany(self.insert, rows)
        if kind == "with_keys":
            self.conn.executemany("INSERT INTO raw_keys VALUES (?, ?, ?)", keys)
            self.conn.execute("INSERT INTO raw_chain VALUES (?, ?, ?)", (link, 0, b"h" * 32))
        self.conn.execute("COMMIT")

    def single(self, row: tuple[Any, ...]) -> None:
        """One one-row transaction."""
        self.conn.execute("BEGIN")
        self.conn.execute(self.insert, row)
        self.conn.execute("COMMIT")

    def parallel(self, threads: int) -> contextlib.AbstractContextManager[RowWriter]:
        """One-row transactions from ``threads`` connections (SQLite takes one writer at a time)."""

        def single(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(self.insert, row)
            conn.execute("COMMIT")

        connections = [
            sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
            for _ in range(threads)
        ]
        return per_thread(connections, single)

    def close(self) -> None:
        """Closes the connection."""
        self.conn.close()


# Threads and processes -----------------------------------------------------------------------


def in_threads(threads: int, work: Callable[[Any], object], items: Sequence[Any]) -> float:
    """The rate of ``work`` over ``items`` split between ``threads`` threads started at once."""
    chunks = [items[n::threads] for n in range(threads)]
    failures: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def run(chunk: Sequence[Any]) -> None:
        start.wait()
        try:
            for item in chunk:
                work(item)
        except BaseException as exc:  # re-raised in the main thread below
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    start.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    return len(items) / elapsed


async def in_tasks(
    tasks: int, work: Callable[[Any], Awaitable[object]], items: Sequence[Any]
) -> float:
    """The rate of ``work`` over ``items`` split between ``tasks`` asyncio tasks."""
    chunks = [items[n::tasks] for n in range(tasks)]

    async def run(chunk: Sequence[Any]) -> None:
        for item in chunk:
            await work(item)

    started = time.perf_counter()
    await asyncio.gather(*(run(chunk) for chunk in chunks))
    return len(items) / (time.perf_counter() - started)


@dataclass
class ProcessRun:
    """What a set of worker processes did: their rate together and the errors they saw."""

    rate: float
    calls: int
    errors: Counter[str]


def process_worker(url: str, commands: list[dict[str, Any]], barrier: Any, results: Any) -> None:
    """In a child process: its own ledger, one ``execute`` per command; errors are counted."""
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (the process's log lines, to the end)
    errors: Counter[str] = Counter()
    with Ledger.open(url, projections="off", create_tables=False, password_cost="fast") as lg:  # noqa: S106
        barrier.wait(timeout=PROCESS_TIMEOUT_S)
        started = time.time()
        for command in commands:
            try:
                lg.execute(command)
            except Rejected as rejection:
                errors[f"rejected:{rejection.code}"] += 1
            except Exception as exc:  # counted: an error is what this measurement looks for
                errors[type(exc).__name__] += 1
        ended = time.time()
    results.put((started, ended, len(commands), errors))


PROCESS_TIMEOUT_S = 600
"""Bound on the wait for one worker process."""
SINGLE_TURN = 25
"""Single calls in a row before the raw baseline takes its turn (and back)."""


def run_processes(url: str, plans: list[list[dict[str, Any]]]) -> ProcessRun:
    """One process per plan, started together; the rate from the first start to the last end."""
    # Forked from a server that has imported the ledger once: clean processes that start fast.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ledger.api", "psycopg"])
    barrier = context.Barrier(len(plans))
    results = context.Queue()
    processes = [
        context.Process(target=process_worker, args=(url, plan, barrier, results)) for plan in plans
    ]
    for process in processes:
        process.start()
    outputs = [results.get(timeout=PROCESS_TIMEOUT_S) for _ in processes]
    for process in processes:
        process.join(timeout=PROCESS_TIMEOUT_S)
    errors: Counter[str] = Counter()
    for output in outputs:
        errors.update(output[3])
    calls = sum(output[2] for output in outputs)
    elapsed = max(output[1] for output in outputs) - min(output[0] for output in outputs)
    return ProcessRun(calls / elapsed, calls, errors)


# Running ---------------------------------------------------------------------------------------


def stamps_per_cti(s: Settings) -> int:
    """Enough stamps that no CTI runs out during the run (commands are spread evenly)."""
    per_rep = (
        2 * -(-s.batched_commands // s.ctis)  # steady, then right after the processes
        # each thread count, the asyncio tasks and the single caller whose log line is rendered
        + -(-s.single_commands // s.ctis) * (len(s.thread_counts) + 2)
        + -(-process_commands(s) * s.processes // s.ctis)
    )
    warm_up = -(-s.batch_size // s.ctis)
    return per_rep * s.repetitions + warm_up + 10


def process_commands(s: Settings) -> int:
    """Commands each worker process sends, one per call."""
    return max(s.single_commands // 2, 20)


@contextlib.contextmanager
def log_lines_rendered() -> Iterator[None]:
    """The per-command log line rendered as a host that configures logging would: a handler on
    ``ledger`` at INFO with the command line's JSON formatter, its lines written to /dev/null."""
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(StructuredFormatter(json=True))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


def logged_execute(lg: Ledger, commands: Sequence[dict[str, Any]]) -> None:
    """``Ledger.execute`` of each command, its log line rendered (``log_lines_rendered``)."""
    with log_lines_rendered():
        each(lg.execute, commands)


def hot_stamps(s: Settings) -> int:
    """Stamps the hot CTI needs for every process run on it."""
    return process_commands(s) * s.processes * s.repetitions + 10


def measure(
    lg: Ledger,
    raw: RawPostgres | RawSQLite,
    url: str,
    ctis: Sequence[str],
    hot: str,
    s: Settings,
    errors: dict[str, Counter[str]],
    calls: dict[str, int],
) -> dict[str, Rates]:
    """Every rate, the ledger and the raw database alternating within each repetition.

    Alternating puts the ledger and its baseline under the same load from the other users of
    this shared machine, so their ratio means more than either figure alone.
    """
    rates: dict[str, Rates] = {}
    assert isinstance(lg.store, EventStore)
    # The raw rows carry a real stored consumption's topic and state (same size).
    (sample,) = lg.store.recorder.select_events(ctis[0], desc=True, limit=1)
    version = 1_000_000
    b = s.batch_size

    def ledger_batched(commands: list[dict[str, Any]]) -> int:
        for start in range(0, len(commands), b):
            results = lg.execute_many(commands[start : start + b])
            assert all(isinstance(r, Outcome) and not r.replayed for r in results)
        return len(commands)

    links = itertools.count(1)  # keys of the raw chain links
    for _ in range(s.repetitions):
        # Batch by batch, the ledger and each raw baseline in turn: the load of the shared
        # machine shifts from second to second, and each ratio compares like moments.
        commands = consumptions(ctis, s.batched_commands)
        seconds: Counter[str] = Counter()
        raws = {}
        for kind in raw.kinds:  # each its own event versions
            raws[kind] = (raw_rows(ctis, len(commands), version, sample), key_rows(len(commands)))
            version += len(commands)
        for start in range(0, len(commands), b):
            chunk = slice(start, start + b)
            seconds["ledger_batched"] += elapsed(ledger_batched, commands[chunk])
            for kind, (rows, keys) in raws.items():
                link = next(links)
                seconds[kind] += elapsed(raw.batch, kind, rows[chunk], keys[chunk], link)
        for name, spent in seconds.items():
            rates.setdefault(name, Rates()).values.append(len(commands) / spent)
        # One caller, one command per call, against raw one-row transactions: in turns of
        # SINGLE_TURN calls each, for the same reason.
        commands = consumptions(ctis, s.single_commands)
        logged = consumptions(ctis, s.single_commands)
        rows = raw_rows(ctis, s.single_commands, version, sample)
        version += s.single_commands
        ledger_s = logged_s = raw_s = 0.0
        for start in range(0, len(commands), SINGLE_TURN):
            turn = slice(start, start + SINGLE_TURN)
            ledger_s += elapsed(each, lg.execute, commands[turn])
            logged_s += elapsed(logged_execute, lg, logged[turn])
            raw_s += elapsed(each, raw.single, rows[turn])
        rates.setdefault(f"ledger_threads_{min(s.thread_counts)}", Rates()).values.append(
            len(commands) / ledger_s
        )
        rates.setdefault("ledger_logged", Rates()).values.append(len(logged) / logged_s)
        rates.setdefault("single", Rates()).values.append(len(rows) / raw_s)
        for threads in s.thread_counts[1:]:
            commands = consumptions(ctis, s.single_commands)
            rate = in_threads(threads, lg.execute, commands)
            rates.setdefault(f"ledger_threads_{threads}", Rates()).values.append(rate)
        # As many asyncio tasks as the most threads, in one event loop: the same group
        # commit, with no thread woken per command (a committer thread leads for them).
        commands = consumptions(ctis, s.single_commands)
        rate = asyncio.run(in_tasks(max(s.thread_counts), lg.aexecute, commands))
        rates.setdefault("ledger_tasks", Rates()).values.append(rate)
        rows = raw_rows(ctis, s.single_commands, version, sample)
        version += s.single_commands
        threads = max(s.thread_counts)
        with raw.parallel(threads) as single:
            rate = in_threads(threads, single, rows)
        rates.setdefault("single_parallel", Rates()).values.append(rate)
    # The processes write the CTIs this process has cached, so what this process writes right
    # after them runs on stale state: its first attempt loses, and the CTIs it lost are hot
    # (decided on clones, written locked) for HOT_WINDOW_S. They run after every in-process
    # repetition, so those measure the steady state; the stale case has its own row.
    for _ in range(s.repetitions):
        runs = [("processes_spread", list(ctis))]
        if isinstance(raw, RawSQLite):  # PostgreSQL's hot CTI: ``bench_hot``'s rows
            runs.append(("processes_hot", [hot]))
        for name, targets in runs:
            plans = [consumptions(targets, process_commands(s)) for _ in range(s.processes)]
            run = run_processes(url, plans)
            rates.setdefault(name, Rates()).values.append(run.rate)
            errors.setdefault(name, Counter()).update(run.errors)
            calls[name] = calls.get(name, 0) + run.calls
            if name == "processes_spread":
                commands = consumptions(ctis, s.batched_commands)
                rate = timed(lambda commands=commands: ledger_batched(commands))
                rates.setdefault("ledger_batched_stale", Rates()).values.append(rate)
    return rates


def run_backend(backend: str, s: Settings, tmp: Path) -> list[tuple[str, str, Rates | str, str]]:
    """Every measurement on one backend, as table rows."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp / 'ledger.db'}"
            history_url = f"sqlite:///{tmp / 'history.db'}"
        else:
            url = stack.enter_context(fresh_pg_database(s.pg_base))
            history_url = stack.enter_context(fresh_pg_database(s.pg_base))
        errors: dict[str, Counter[str]] = {}
        calls: dict[str, int] = {}
        with Ledger.open(url, projections="off", password_cost="fast") as lg:  # noqa: S106  (a cost, not a password)
            ctis = build_network(lg, s.ctis, stamps_per_cti(s))
            hot = top_up(lg, ctis[0], hot_stamps(s))
            lg.execute_many(consumptions(ctis, s.batch_size))  # warm up the cache
            raw = RawSQLite(tmp / "raw.db") if backend == "sqlite" else RawPostgres(url)
            try:
                rates = measure(lg, raw, url, ctis, hot, s, errors, calls)
            finally:
                raw.close()
        loading = measure_loading(history_url, s) if s.long_history else None
        hot_runs = None
        if backend == "postgres":
            hot_runs = measure_hot(
                stack.enter_context(fresh_pg_database(s.pg_base)),
                processes=s.processes,
                threads=HOT_THREADS,
                commands=process_commands(s) * s.processes,
                repetitions=s.repetitions,
            )

    def ratio(a: str, b: str) -> str:
        return f"ledger/raw {rates[a].median / rates[b].median:.2f}"

    b = s.batch_size
    rows: list[tuple[str, str, Rates | str, str]] = [
        (backend, f"ledger execute_many ({b}/call; +keys +link)", rates["ledger_batched"], ""),
        (
            backend,
            f"raw executemany events ({b} rows/tx)",
            rates["executemany"],
            ratio("ledger_batched", "executemany"),
        ),
    ]
    if "copy" in rates:
        rows.append(
            (
                backend,
                f"raw COPY events ({b} rows/tx)",
                rates["copy"],
                ratio("ledger_batched", "copy"),
            )
        )
    else:
        rows.append((backend, "raw COPY events", "n/a (SQLite has no COPY)", ""))
    rows += [
        (
            backend,
            f"raw executemany events + keys + link ({b}/tx)",
            rates["with_keys"],
            ratio("ledger_batched", "with_keys"),
        ),
        (
            backend,
            f"ledger execute_many ({b}/call) right after {s.processes} processes wrote its CTIs",
            rates["ledger_batched_stale"],
            ratio("ledger_batched_stale", "executemany") + " (stale cache: hot CTIs)",
        ),
        (
            backend,
            "raw one-row transactions (events only), 1 connection",
            rates["single"],
            "",
        ),
        (
            backend,
            f"raw one-row transactions, {max(s.thread_counts)} connections at once",
            rates["single_parallel"],
            "",
        ),
    ]
    one = rates[f"ledger_threads_{min(s.thread_counts)}"].median
    for threads in s.thread_counts:
        name = f"ledger_threads_{threads}"
        note = ratio(name, "single")
        if threads != min(s.thread_counts):
            note += f"; {rates[name].median / one:.1f} x 1 thread"
        if threads == max(s.thread_counts) and threads != min(s.thread_counts):
            note += f"; {rates[name].median / rates['single_parallel'].median:.2f} x raw"
            note += f" {threads} connections"
        rows.append(
            (backend, f"ledger execute, {threads} threads on one Ledger", rates[name], note)
        )
        if threads == 1:
            rows.append(
                (
                    backend,
                    "ledger execute, 1 thread, log line rendered (JSON to /dev/null)",
                    rates["ledger_logged"],
                    ratio("ledger_logged", "single"),
                )
            )
    tasks = max(s.thread_counts)
    times = rates["ledger_tasks"].median / one
    rows.append(
        (
            backend,
            f"ledger aexecute, {tasks} asyncio tasks on one Ledger",
            rates["ledger_tasks"],
            f"{ratio('ledger_tasks', 'single')}; {times:.1f} x 1 thread",
        )
    )
    for name, what in (("processes_spread", "many CTIs"), ("processes_hot", "one hot CTI")):
        if name not in rates:
            continue
        failed = {k: v for k, v in errors[name].items() if not k.startswith("rejected:")}
        rejected = sum(v for k, v in errors[name].items() if k.startswith("rejected:"))
        rows.append(
            (
                backend,
                f"ledger {s.processes} processes x execute, {what}",
                rates[name],
                f"{ratio(name, 'single')}; errors {sum(failed.values())} {dict(failed) or ''}"
                f"/ rejected {rejected} of {calls[name]:,} calls",
            )
        )
    if hot_runs is not None:
        rows += [
            (backend, f"ledger {title}", spread, note)
            for title, spread, note in hot_rows(hot_runs, s.processes, HOT_THREADS)
        ]
    if loading is not None:
        rows.append(
            (
                backend,
                f"cold load: young CTI / CTI with {s.long_history:,} consumptions",
                f"{loading.young_cti_s * 1000:.1f} ms / {loading.old_cti_s * 1000:.1f} ms",
                "",
            )
        )
        rows.append(
            (
                backend,
                f"cold load: distributor with {loading.distributor_events:,} events",
                f"{loading.distributor_s * 1000:.1f} ms",
                "",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the benchmark and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--ctis", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=2_000)
    parser.add_argument("--batched-commands", type=int, default=20_000)
    parser.add_argument("--single-commands", type=int, default=1_000)
    parser.add_argument("--threads", default="1,4,16", help="thread counts on one Ledger")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--long-history", type=int, default=100_000)
    parser.add_argument("--pg", default=os.environ.get("LEDGER_TEST_PG", PG_BASE_DEFAULT))
    parser.add_argument("--quick", action="store_true", help="fewer, smaller repetitions")
    args = parser.parse_args(argv)
    s = Settings(
        ctis=args.ctis,
        batch_size=args.batch_size,
        batched_commands=args.batched_commands,
        single_commands=args.single_commands,
        thread_counts=tuple(int(n) for n in args.threads.split(",")),
        processes=args.processes,
        repetitions=args.repetitions,
        long_history=args.long_history,
        backends=tuple(args.backends.split(",")),
        pg_base=args.pg.rstrip("/"),
    )
    if args.quick:
        s.repetitions, s.batched_commands, s.single_commands = 3, 10_000, 500
        s.long_history = min(s.long_history, 20_000)
    # Warnings the ledger logs (a lost race, a retried commit) would reach the terminal through
    # logging's last-resort handler: they land in /dev/null instead.
    real_stderr = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            with tempfile.TemporaryDirectory(prefix="bench-write-") as tmp:
                rows = [r for b in s.backends for r in run_backend(b, s, Path(tmp))]
        finally:
            sys.stderr = real_stderr
    print(
        f"{s.ctis:,} CTIs, batches of {s.batch_size:,}, {s.batched_commands:,} batched and "
        f"{s.single_commands:,} single commands per thread count and "
        f"{process_commands(s):,} per process per repetition; median of {s.repetitions} "
        "repetitions [min-max], per second. Each ledger batch writes its events, one "
        "ledger_keys row per command and one ledger_chain link per transaction (one per "
        "call on SQLite; on PostgreSQL a call is written in pipelined transactions of "
        f"{part_sizes(s.batch_size, PIPELINE_GROUP_MAX)}); the raw 'events' baselines "
        "write the event rows only. Threads and processes send one command per call; their "
        "ratio is to raw one-row transactions from 1 connection. The machine is shared: "
        "compare ratios within this run, not figures across runs."
    )
    print(f"{'backend':<9} {'measurement':<58} {'median/s':>12} {'[min-max]':>19}  ratio")
    for backend, name, rates, note in rows:
        if isinstance(rates, str):
            print(f"{backend:<9} {name:<58} {rates:>32}  {note}")
        else:
            print(f"{backend:<9} {name:<58} {rates.median:>12,.0f} {rates.spread():>19}  {note}")
    print(
        "Targets (issue 25, item 4): PostgreSQL batched >= 0.6 x raw executemany; 1 thread "
        "with the log line rendered >= 0.6 x raw one-row transactions; 16 asyncio tasks >= "
        "6 x 1 thread; 16 threads >= 1.0 x raw one-row transactions from 16 connections."
    )


if __name__ == "__main__":
    main()
