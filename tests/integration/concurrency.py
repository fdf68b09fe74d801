"""Helpers of the concurrency tests: OS processes that consume stamps from one shared database.

Workers are forked from a fork server (clean processes, as separate servers would be), open
their own ``Ledger`` on the database the test created (``create_tables=False``),
wait at a barrier so they all start at once, and send back one plain dict per command.
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from collections import Counter
from datetime import datetime
from typing import Any

from adapters.storage.store import EventStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import CTI, MASTER, consume, network_ledger

BATCH_SIZE = 5
"""Commands per ``execute_many`` for workers in batch mode."""
RESULT_TIMEOUT_S = 120
"""Bound on the wait for one worker's results."""
THREADS = 4
"""Threads sharing one ``Ledger`` in a worker in ``threads`` mode."""


def worker(
    url: str,
    now: str,
    commands: list[dict[str, Any]],
    mode: str,
    barrier: Any,
    results: Any,
) -> None:
    """Runs in a child process: ``commands`` one by one (``single``), from ``THREADS`` threads
    (``threads``) or in batches (``batch``, ``whole``)."""
    try:
        with Ledger.open(
            url,
            clock=ManualClock(datetime.fromisoformat(now)),
            projections="off",
            create_tables=False,
            password_cost="fast",
        ) as lg:
            barrier.wait(timeout=RESULT_TIMEOUT_S)
            out: list[dict[str, Any]] = []
            if mode == "single":
                out = [_execute(lg, command) for command in commands]
            elif mode == "threads":
                out = _execute_in_threads(lg, commands)
            else:
                # "batch": small batches; "whole": every command in one batch (a long batch
                # sends its keys ahead of its commit on PostgreSQL).
                size = len(commands) if mode == "whole" else BATCH_SIZE
                for start in range(0, len(commands), size):
                    out.extend(r.to_dict() for r in lg.execute_many(commands[start : start + size]))
        results.put(("ok", out))
    except BaseException:
        # Reported to the parent, which fails the test with the child's traceback.
        results.put(("error", traceback.format_exc()))


def _execute(lg: Ledger, command: dict[str, Any]) -> dict[str, Any]:
    """One command's outcome or rejection as a plain dict; any other error propagates."""
    try:
        return lg.execute(command).to_dict()
    except Rejected as rejection:
        return rejection.to_dict()


def _execute_in_threads(lg: Ledger, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``THREADS`` threads share the process's ledger, each sending every THREADS-th command."""
    out: list[dict[str, Any] | None] = [None] * len(commands)
    failures: list[BaseException] = []

    def run(first: int) -> None:
        try:
            for index in range(first, len(commands), THREADS):
                out[index] = _execute(lg, commands[index])
        except BaseException as exc:  # reported below, with every other thread's
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RESULT_TIMEOUT_S)
    if failures:
        raise failures[0]
    assert all(r is not None for r in out), "a thread did not finish"
    return [r for r in out if r is not None]


def run_workers(
    url: str, now: datetime, plans: list[tuple[list[dict[str, Any]], str]]
) -> list[list[dict[str, Any]]]:
    """Starts one process per ``(commands, mode)`` plan at once; each one's results, in order."""
    # A fork server imports the ledger once and forks clean processes from it (no thread, no
    # connection of the test's): each worker still opens its own ledger, as a separate server
    # would, but eight of them start in a second instead of eight interpreters' imports.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    barrier = context.Barrier(len(plans))
    queues = [context.Queue() for _ in plans]
    processes = [
        context.Process(target=worker, args=(url, now.isoformat(), commands, mode, barrier, queue))
        for (commands, mode), queue in zip(plans, queues, strict=True)
    ]
    for process in processes:
        process.start()
    try:
        outputs = [queue.get(timeout=RESULT_TIMEOUT_S) for queue in queues]
    finally:
        for process in processes:
            process.join(timeout=RESULT_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    errors = [detail for status, detail in outputs if status != "ok"]
    assert not errors, "\n".join(errors)
    return [detail for _, detail in outputs]


def consumed_uuids(lg: Ledger, cti_id: str) -> Counter[str]:
    """How many StampConsumed events each CFDI UUID has in the CTI's stored stream."""
    assert isinstance(lg.store, EventStore)
    return Counter(
        event.cfdi_uuid
        for event in lg.store.app.events.get(cti_id)
        if type(event).__name__ == "StampConsumed"
    )


def stored_cfdi_keys(lg: Ledger, uuids: list[str]) -> int:
    """How many of these CFDI UUIDs have a row in the idempotency index."""
    assert isinstance(lg.store, EventStore)
    return len(lg.store.select_keys([f"cfdi:{u.upper()}" for u in uuids]))


PROCESSES = 4
"""Worker processes per scenario (two run commands one by one, two in batches)."""


def check_processes_never_overdraw(url: str, clock: ManualClock) -> None:
    """Four processes ask 80 consumptions of a CTI holding 40: exactly 40 succeed, none twice."""
    stamps, per_process = 40, 20
    with network_ledger(clock, url=url, projections="off", inventory=1000, cti_stamps=stamps) as lg:
        plans = [
            ([consume() for _ in range(per_process)], "single" if n % 2 == 0 else "batch")
            for n in range(PROCESSES)
        ]
        outputs = run_workers(url, clock(), plans)
        results = [r for output in outputs for r in output]
        successes = [r for r in results if r["ok"]]
        # One balance value per success, 39 down to 0: no two consumptions saw the same stamp.
        assert sorted(r["balance_after"] for r in successes) == list(range(stamps))
        assert not any(r.get("replayed", False) for r in successes)
        assert {r["code"] for r in results if not r["ok"]} == {"insufficient_stamps"}
        assert lg.balance(CTI) == 0
        assert min(m.balance for m in lg.history(CTI)) == 0
        won = [
            c["cfdi_uuid"].upper()
            for (commands, _), output in zip(plans, outputs, strict=True)
            for c, r in zip(commands, output, strict=True)
            if r["ok"]
        ]
        recorded = consumed_uuids(lg, CTI)
        assert recorded == Counter(won)
        assert set(recorded.values()) == {1}
        assert stored_cfdi_keys(lg, [c["cfdi_uuid"] for c, _ in _all(plans)]) == stamps


def check_racing_duplicates_record_once(url: str, clock: ManualClock) -> None:
    """Four processes send the same 20 CFDIs at once: each stamped once, all see its outcome."""
    stamps, cfdis = 100, 20
    with network_ledger(clock, url=url, projections="off", inventory=1000, cti_stamps=stamps) as lg:
        commands = [consume() for _ in range(cfdis)]
        plans = [
            (
                list(commands) if n < 2 else list(reversed(commands)),
                "single" if n % 2 == 0 else "batch",
            )
            for n in range(PROCESSES)
        ]
        by_cfdi = results_by_cfdi(plans, run_workers(url, clock(), plans))
        for results in by_cfdi.values():
            assert all(r["ok"] for r in results), results
            assert sorted(r.get("replayed", False) for r in results) == [False] + [True] * (
                PROCESSES - 1
            )
            first = [{k: v for k, v in r.items() if k != "replayed"} for r in results]
            assert all(outcome == first[0] for outcome in first), results
        assert sorted(rs[0]["balance_after"] for rs in by_cfdi.values()) == list(
            range(stamps - cfdis, stamps)
        )
        assert lg.balance(CTI) == stamps - cfdis
        recorded = consumed_uuids(lg, CTI)
        assert recorded == Counter({c["cfdi_uuid"].upper(): 1 for c in commands})
        assert stored_cfdi_keys(lg, [c["cfdi_uuid"] for c in commands]) == cfdis


def check_long_batches_racing_record_once(url: str, clock: ManualClock) -> None:
    """Four processes send the same 600 CFDIs as one batch each, half of them in reverse order."""
    stamps, cfdis = 1000, 600
    with network_ledger(clock, url=url, projections="off", inventory=1000, cti_stamps=stamps) as lg:
        commands = [consume() for _ in range(cfdis)]
        plans = [
            (list(commands) if n % 2 == 0 else list(reversed(commands)), "whole")
            for n in range(PROCESSES)
        ]
        by_cfdi = results_by_cfdi(plans, run_workers(url, clock(), plans))
        for results in by_cfdi.values():
            assert sorted(r.get("replayed", False) for r in results) == [False] + [True] * (
                PROCESSES - 1
            ), results
            first = [{k: v for k, v in r.items() if k != "replayed"} for r in results]
            assert all(outcome == first[0] for outcome in first), results
        assert lg.balance(CTI) == stamps - cfdis
        assert consumed_uuids(lg, CTI) == Counter({c["cfdi_uuid"].upper(): 1 for c in commands})


def results_by_cfdi(
    plans: list[tuple[list[dict[str, Any]], str]], outputs: list[list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Every worker's answer to each CFDI, by CFDI UUID, in the order of the plans."""
    by_cfdi: dict[str, list[dict[str, Any]]] = {}
    for (sent, _), output in zip(plans, outputs, strict=True):
        for command, result in zip(sent, output, strict=True):
            by_cfdi.setdefault(command["cfdi_uuid"], []).append(result)
    return by_cfdi


def _all(
    plans: list[tuple[list[dict[str, Any]], str]],
) -> list[tuple[dict[str, Any], str]]:
    return [(command, mode) for commands, mode in plans for command in commands]


HOT_PROCESSES = 8
"""Worker processes on one hot CTI, each with ``THREADS`` threads."""


def check_hot_cti_never_errors(url: str, clock: ManualClock) -> None:
    """8 processes x 4 threads consume one CTI holding fewer stamps than they ask for.

    Every call gets an outcome or ``insufficient_stamps``, never an error; exactly as many
    consumptions as stamps are recorded, each CFDI once; ``verify`` finds nothing wrong.
    """
    stamps, per_process = 120, 24
    with network_ledger(clock, url=url, projections="off", inventory=1000, cti_stamps=stamps) as lg:
        plans = [
            ([consume(actor=MASTER) for _ in range(per_process)], "threads")
            for _ in range(HOT_PROCESSES)
        ]
        outputs = run_workers(url, clock(), plans)
        results = [r for output in outputs for r in output]
        assert len(results) == HOT_PROCESSES * per_process
        assert {r["code"] for r in results if not r["ok"]} == {"insufficient_stamps"}
        successes = [r for r in results if r["ok"]]
        assert sorted(r["balance_after"] for r in successes) == list(range(stamps))
        assert not any(r.get("replayed", False) for r in successes)
        assert lg.balance(CTI) == 0
        recorded = consumed_uuids(lg, CTI)
        assert sum(recorded.values()) == stamps
        assert set(recorded.values()) == {1}
        report = lg.verify()
        assert report.ok, report
