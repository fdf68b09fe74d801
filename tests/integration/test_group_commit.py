"""Group commit: concurrent callers of one ``Ledger`` share transactions (DESIGN §7).

Each test holds the first commit (an ``on_commit`` callback waits) until the other callers'
commands are queued, so what goes into which transaction is determined, not left to timing.
Each test runs on a real SQLite file and on a real PostgreSQL database (``store_url``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import psycopg
import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands.models import Command
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.write.decision import Tx
from ledger.write.preparation import Result
from tests.support import CTI, MASTER, build_network, consume, handler_registered, network_ledger

WAIT_S = 30.0
"""Bound on every wait of these tests (only a broken group commit reaches it)."""


@pytest.fixture
def lg(store_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A ledger with the standard network and a CTI holding 10 stamps."""
    with network_ledger(
        clock, url=store_url, projections="off", inventory=1000, cti_stamps=10
    ) as ledger:
        yield ledger


class Commits:
    """Records every commit (its event count and thread); can hold the first one back."""

    def __init__(self, lg: Ledger, *, hold_until_queued: int = 0) -> None:
        self.lg = lg
        self.sizes: list[int] = []
        self.threads: list[threading.Thread] = []
        self.hold_until_queued = hold_until_queued
        self.committing = threading.Event()
        self.held_enough = False
        lg.engine.on_commit.append(self)

    def __call__(self, notification_ids: Sequence[int]) -> None:
        self.sizes.append(len(notification_ids))
        self.threads.append(threading.current_thread())
        if len(self.sizes) == 1 and self.hold_until_queued:
            self.committing.set()
            deadline = time.monotonic() + WAIT_S
            while self.lg.engine.queued() < self.hold_until_queued:
                assert time.monotonic() < deadline, "callers never queued"
                time.sleep(0.001)
            self.held_enough = True


def _in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    """Runs each call in its own thread; their results (or exceptions) in order."""
    out: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            out[index] = calls[index]()
        except Exception as exc:  # returned to the test, which asserts on it
            out[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
        assert not thread.is_alive()
    return out


def _while_first_commit_is_held(
    lg: Ledger, first: Callable[[], Any], others: list[Callable[[], Any]], queued: int
) -> tuple[Any, list[Any], Commits]:
    """``first`` commits alone and is held until ``others`` queued ``queued`` commands."""
    commits = Commits(lg, hold_until_queued=queued)
    first_result: list[Any] = []
    leader = threading.Thread(target=lambda: first_result.append(first()))
    leader.start()
    assert commits.committing.wait(WAIT_S)
    results = _in_threads(others)
    leader.join(timeout=WAIT_S)
    assert commits.held_enough
    return first_result[0], results, commits


def _execute(lg: Ledger, command: dict[str, Any]) -> Callable[[], Outcome]:
    return lambda: lg.execute(command)


def test_a_lone_caller_commits_in_its_own_thread(lg: Ledger) -> None:
    """A caller alone leads its own commit: no hand-over to another thread, no wait."""
    commits = Commits(lg)
    lg.execute(consume(actor=MASTER))
    assert commits.threads == [threading.current_thread()]
    assert commits.sizes == [1]


def test_commands_that_arrive_during_a_commit_share_the_next_one(lg: Ledger) -> None:
    """Five callers that queue while a commit is in flight are all carried by the next one."""
    first, results, commits = _while_first_commit_is_held(
        lg,
        _execute(lg, consume(actor=MASTER)),
        [_execute(lg, consume(actor=MASTER)) for _ in range(5)],
        queued=5,
    )
    assert commits.sizes == [1, 5]
    assert first.balance_after == 9
    assert sorted(r.balance_after for r in results) == [4, 5, 6, 7, 8]
    assert lg.balance(CTI) == 4


def test_a_rejection_in_a_shared_commit_fails_no_other_caller(lg: Ledger) -> None:
    """Refused commands in a shared transaction get their own code; the others are recorded."""
    taken = consume(actor=MASTER)
    others = [
        _execute(lg, consume(actor=MASTER)),
        _execute(lg, consume("NOBODY", actor=MASTER)),
        _execute(lg, {**taken, "issuer_rfc": "MAB9307148T4"}),
        _execute(lg, consume(actor=MASTER, issuer_rfc="bad")),
        _execute(lg, consume(actor=MASTER)),
    ]
    first, results, commits = _while_first_commit_is_held(lg, _execute(lg, taken), others, queued=5)
    assert first.balance_after == 9
    codes = [r.code if isinstance(r, Rejected) else "ok" for r in results]
    assert codes == ["ok", "unknown_account", "idempotency_conflict", "invalid_rfc", "ok"]
    assert sorted(r.balance_after for r in results if isinstance(r, Outcome)) == [7, 8]
    assert commits.sizes == [1, 2]
    assert lg.balance(CTI) == 7


class _Faulty(Command):
    """A command whose handler fails with an unexpected error (a bug)."""

    type: Literal["_Faulty"] = "_Faulty"
    cti_id: str = CTI


def _faulty(_command: _Faulty, _tx: Tx) -> Outcome:
    raise RuntimeError("a handler's bug")


@handler_registered(_Faulty, _faulty)
def test_a_handler_fault_in_a_shared_commit_reaches_only_its_caller(lg: Ledger) -> None:
    """A command that raises an unexpected error fails its own caller; the others commit."""
    _first, results, commits = _while_first_commit_is_held(
        lg,
        _execute(lg, consume(actor=MASTER)),
        [
            _execute(lg, consume(actor=MASTER)),
            lambda: lg.execute(_Faulty(actor=MASTER)),
            _execute(lg, consume(actor=MASTER)),
        ],
        queued=3,
    )
    first_ok, fault, last_ok = results
    assert isinstance(fault, RuntimeError)
    assert sorted([first_ok.balance_after, last_ok.balance_after]) == [7, 8]
    assert commits.sizes == [1, 1, 1]
    assert lg.balance(CTI) == 7


def test_execute_many_callers_join_the_same_transaction(lg: Ledger) -> None:
    """Batches and single commands queued together are one transaction; each keeps its order."""
    first, results, commits = _while_first_commit_is_held(
        lg,
        _execute(lg, consume(actor=MASTER)),
        [
            lambda: lg.execute_many([consume(actor=MASTER) for _ in range(3)]),
            lambda: lg.execute_many([consume(actor=MASTER) for _ in range(2)]),
            _execute(lg, consume(actor=MASTER)),
        ],
        queued=6,
    )
    assert commits.sizes == [1, 6]
    three, two, one = results
    for batch in (three, two):
        balances = [r.balance_after for r in batch]
        assert balances == sorted(balances, reverse=True)
    all_balances = [r.balance_after for r in [*three, *two, one]]
    assert sorted(all_balances) == [3, 4, 5, 6, 7, 8]
    assert first.balance_after == 9


def test_an_atomic_batch_commits_alone(lg: Ledger) -> None:
    """An atomic batch queued among others gets a transaction of its own, and aborts alone."""
    _first, results, commits = _while_first_commit_is_held(
        lg,
        _execute(lg, consume(actor=MASTER)),
        [
            lambda: lg.execute_many(
                [consume(actor=MASTER), consume("NOBODY", actor=MASTER)], atomic=True
            ),
            _execute(lg, consume(actor=MASTER)),
        ],
        queued=3,
    )
    atomic, single = results
    assert [r.code for r in atomic] == ["batch_aborted", "unknown_account"]
    assert single.balance_after == 8
    assert commits.sizes == [1, 1]
    assert lg.balance(CTI) == 8


def test_more_commands_than_fit_in_a_transaction_go_in_the_next(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued commands past the per-transaction bound wait for the following transaction."""
    monkeypatch.setattr("ledger.write.group_commit.BATCH_SIZE_MAX", 3)
    first, results, commits = _while_first_commit_is_held(
        lg,
        _execute(lg, consume(actor=MASTER)),
        [lambda: lg.execute_many([consume(actor=MASTER) for _ in range(2)]) for _ in range(3)],
        queued=6,
    )
    assert commits.sizes == [1, 2, 2, 2]
    assert sorted(r.balance_after for batch in results for r in batch) == [3, 4, 5, 6, 7, 8]
    assert first.balance_after == 9


def test_many_asyncio_tasks_share_commits_and_get_their_own_results(lg: Ledger) -> None:
    """Forty tasks ask for 10 stamps: 10 outcomes and 30 insufficient_stamps, none twice."""

    async def main() -> list[Result]:
        return await asyncio.gather(*(lg.aexecute_many([consume(actor=MASTER)]) for _ in range(40)))

    commits = Commits(lg)
    results = [r for batch in asyncio.run(main()) for r in batch]
    assert sorted(r.balance_after for r in results if isinstance(r, Outcome)) == list(range(10))
    codes = [r.code for r in results if isinstance(r, Rejected)]
    assert codes == ["insufficient_stamps"] * 30
    assert sum(commits.sizes) == 10
    assert lg.balance(CTI) == 0
    assert all(t.name.startswith("ledger-commit") for t in commits.threads)


def test_the_asyncio_callers_of_a_group_are_told_in_one_call_into_their_loop(lg: Ledger) -> None:
    """Each call into a loop from another thread writes to its wake-up pipe: the callers a
    commit served are told together (one call per commit), not one call each."""
    submitted = threading.Event()
    sizes: list[int] = []

    def hold(ids: Sequence[int]) -> None:
        sizes.append(len(ids))
        assert submitted.wait(WAIT_S), "the tasks never queued"

    lg.engine.on_commit.append(hold)
    calls: list[int] = []

    async def all_submitted() -> None:
        submitted.set()  # runs after every aexecute task reached its first await

    async def main() -> list[Outcome | None]:
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        tasks = [lg.aexecute(consume(actor=MASTER)) for _ in range(10)]
        return await asyncio.gather(*tasks, all_submitted())

    outcomes = [o for o in asyncio.run(main()) if o is not None]
    assert sorted(o.balance_after for o in outcomes) == list(range(10))
    assert sum(sizes) == 10
    assert len(sizes) < 10
    assert len(calls) == len(sizes)


def test_threads_and_asyncio_tasks_share_one_ledger_and_each_gets_its_own_result(
    lg: Ledger,
) -> None:
    """Thread callers (woken by their own lock) and asyncio tasks (told through their loop)
    in the same queue, leading in turn: 10 stamps for 40 calls, each answered once."""

    def call(command: dict[str, Any]) -> str:
        try:
            lg.execute(command)
        except Rejected as rejection:
            return rejection.code
        return "ok"

    async def task(command: dict[str, Any]) -> str:
        try:
            await lg.aexecute(command)
        except Rejected as rejection:
            return rejection.code
        return "ok"

    async def tasks() -> list[str]:
        return await asyncio.gather(*(task(consume(actor=MASTER)) for _ in range(20)))

    from_tasks: list[str] = []
    runner = threading.Thread(target=lambda: from_tasks.extend(asyncio.run(tasks())))
    runner.start()
    from_threads = _in_threads([lambda: call(consume(actor=MASTER)) for _ in range(20)])
    runner.join(timeout=WAIT_S)
    codes = sorted(from_threads + from_tasks)
    assert codes == ["insufficient_stamps"] * 30 + ["ok"] * 10
    assert lg.balance(CTI) == 0
    assert lg.verify().ok


def test_aexecute_leaves_the_event_loop_free_during_a_commit(lg: Ledger) -> None:
    """While a commit is in flight the event loop keeps running other tasks."""
    committing = threading.Event()
    loop_ran = threading.Event()
    loop_ran_during_commit: list[bool] = []

    def hold(_ids: Sequence[int]) -> None:
        committing.set()
        loop_ran_during_commit.append(loop_ran.wait(WAIT_S))

    lg.engine.on_commit.append(hold)

    async def other_task() -> None:
        while not committing.is_set():
            await asyncio.sleep(0.001)
        loop_ran.set()

    async def main() -> Outcome:
        outcome, _ = await asyncio.gather(lg.aexecute(consume(actor=MASTER)), other_task())
        return outcome

    assert asyncio.run(main()).balance_after == 9
    assert loop_ran_during_commit == [True]


def test_aexecute_raises_the_rejection(lg: Ledger) -> None:
    """A refused command raises ``Rejected`` with its code in the awaiting task."""

    async def main() -> None:
        await lg.aexecute(consume("NOBODY", actor=MASTER))

    with pytest.raises(Rejected) as caught:
        asyncio.run(main())
    assert caught.value.code == "unknown_account"


def test_a_closed_ledger_refuses_aexecute(lg: Ledger) -> None:
    """After ``close`` an awaited command fails at once instead of waiting forever."""
    lg.close()

    async def main() -> None:
        await lg.aexecute(consume(actor=MASTER))

    with pytest.raises(Exception, match="closed"):
        asyncio.run(main())


def test_a_long_batch_is_written_in_groups_decided_while_the_last_is_written(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    """On PostgreSQL a long batch goes in groups, each decided on the state the group being
    written left (a CTI balance not recorded yet); SQLite has no server to overlap with and
    writes it in one transaction. The results are the same."""
    monkeypatch.setattr("ledger.write.group_commit.PIPELINE_GROUP_MAX", 4)
    commits = Commits(lg)
    results = lg.execute_many([consume(actor=MASTER) for _ in range(11)])
    assert [r.balance_after for r in results[:10]] == list(range(9, -1, -1))  # type: ignore[union-attr]
    assert isinstance(results[10], Rejected)
    assert results[10].code == "insufficient_stamps"
    assert commits.sizes == ([4, 4, 2] if store_url.startswith("postgresql") else [10])
    assert lg.balance(CTI) == 0


def test_a_group_that_loses_a_race_while_the_next_is_decided_loses_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """PostgreSQL: another process consumes while the first group is on its way. That group
    loses the race and runs again, the group decided on top of it is decided again, and every
    stamp goes to exactly one caller."""
    monkeypatch.setattr("ledger.write.group_commit.PIPELINE_GROUP_MAX", 4)
    options: dict[str, Any] = {"clock": clock, "projections": "off", "password_cost": "fast"}
    with Ledger.open(pg_url, **options) as lg, Ledger.open(pg_url, **options) as other:
        build_network(lg, inventory=1000, cti_stamps=10)
        record_later = lg.store.record_later
        sent: list[int] = []

        def racing(events: Sequence[Any], keys: Sequence[Any]) -> Any:
            sent.append(len(events))
            if len(sent) == 1:
                taken = other.execute_many([consume(actor=MASTER) for _ in range(3)])
                assert [r.balance_after for r in taken] == [9, 8, 7]  # type: ignore[union-attr]
            return record_later(events, keys)

        monkeypatch.setattr(lg.store, "record_later", racing)
        results = lg.execute_many([consume(actor=MASTER) for _ in range(9)])
        assert sent[0] == 4  # the first group was sent (and lost)
        outcomes = [r for r in results if isinstance(r, Outcome)]
        assert [r.balance_after for r in outcomes] == list(range(6, -1, -1))
        assert [r.code for r in results if isinstance(r, Rejected)] == ["insufficient_stamps"] * 2
        assert lg.balance(CTI) == other.balance(CTI) == 0


def _waiting_in_submit(thread: threading.Thread) -> bool:
    """Whether ``thread`` waits for its results in the engine (queued, or decided)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "_submit":
            return True
        frame = frame.f_back
    return False


def test_callers_that_queue_while_a_write_waits_on_the_server_are_decided_meanwhile(
    pg_url: str, clock: ManualClock
) -> None:
    """PostgreSQL: the first write waits on a lock another session holds. The leader does not
    wait with it: callers that queue meanwhile are taken and decided on top of it (and sent
    once it is recorded)."""
    options: dict[str, Any] = {"clock": clock, "projections": "off", "password_cost": "fast"}
    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%ledger_record%'"
    )
    with Ledger.open(pg_url, **options) as lg, psycopg.connect(pg_url, autocommit=True) as admin:
        build_network(lg, inventory=1000, cti_stamps=10)
        commits = Commits(lg)
        first: list[Any] = []
        others: list[Any] = []
        leader = threading.Thread(target=lambda: first.append(lg.execute(consume())))
        threads = [
            threading.Thread(target=lambda: others.append(lg.execute(consume()))) for _ in range(5)
        ]
        with psycopg.connect(pg_url) as blocker:
            blocker.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            leader.start()
            deadline = time.monotonic() + WAIT_S
            while admin.execute(waiting).fetchone() is None:
                assert time.monotonic() < deadline, "the first write never waited"
                time.sleep(0.01)
            for thread in threads:
                thread.start()
            while lg.engine.queued() == 5 or not all(_waiting_in_submit(t) for t in threads):
                assert time.monotonic() < deadline, "nothing was taken during the write"
                time.sleep(0.01)
            assert admin.execute(waiting).fetchone() is not None  # still on the server
            blocker.rollback()
        leader.join(WAIT_S)
        for thread in threads:
            thread.join(WAIT_S)
    assert commits.sizes[0] == 1
    assert sum(commits.sizes) == 6
    assert first[0].balance_after == 9
    assert sorted(r.balance_after for r in others) == [4, 5, 6, 7, 8]
