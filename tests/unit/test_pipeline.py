"""The pipelined write path (DESIGN §7): a group is sent, and the next one is decided on the
state it left while it is written.

On the in-memory store a sent write is made only when the engine lands it (as a database's
answer comes later), so what happens in between is set by the test, not left to timing: a
competing writer records first, a balance is read, the store fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from adapters.storage.memory import MemoryStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.domain import Event
from ledger.engine import Engine
from ledger.errors import InfrastructureError, Rejected
from ledger.logging import capture_logs
from ledger.outcome import Outcome
from ledger.write import preparation
from ledger.write.calls import part_sizes
from ledger.write.ports import KeyRecord, Sent
from ledger.write.request import Wake
from tests.support import CTI, DISTRIBUTOR, consume, network_ledger, recorded, register_client


@pytest.fixture
def lg(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    """A ledger whose CTI holds 3 stamps, writing groups of at most two commands."""
    with network_ledger(clock, cti_stamps=3) as ledger:
        monkeypatch.setattr("ledger.write.group_commit.PIPELINE_GROUP_MAX", 2)
        yield ledger


def _on_send(lg: Ledger, action: Callable[[int], None]) -> list[int]:
    """Runs ``action(n)`` as the n-th write is sent, before the store makes it; returns the
    event count of each write sent."""
    store = lg.store
    assert isinstance(store, MemoryStore)
    sent: list[int] = []
    record_later = store.record_later

    def send(events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sent:
        sent.append(len(events))
        action(len(sent))
        return record_later(events, keys)

    store.record_later = send  # type: ignore[method-assign]
    return sent


def _transfer(cti_id: str, stamps: int) -> dict[str, Any]:
    return {
        "type": "TransferStamps",
        "actor": DISTRIBUTOR,
        "transfer_id": f"T-{cti_id}-{stamps}",
        "from_id": DISTRIBUTOR,
        "to_id": cti_id,
        "quantity": stamps,
        "amount": "0.00",
    }


def _codes(results: Sequence[Outcome | Rejected]) -> list[str]:
    return [r.code if isinstance(r, Rejected) else "ok" for r in results]


def test_a_long_batch_is_written_in_groups_each_decided_on_the_last(lg: Ledger) -> None:
    """The second group uses the client the first one registered (not recorded yet when it is
    decided) and the third is refused on the balance the second left."""
    sent = _on_send(lg, lambda _n: None)
    results = lg.execute_many(
        [
            register_client("C2"),
            _transfer("C2-cti", 2),
            consume("C2-cti"),
            consume("C2-cti"),
            consume("C2-cti"),
        ]
    )
    assert _codes(results) == ["ok", "ok", "ok", "ok", "insufficient_stamps"]
    assert [r.balance_after for r in results[2:4]] == [1, 0]  # type: ignore[union-attr]
    assert len(sent) == 2  # the refused one writes nothing
    assert lg.balance("C2-cti") == 0


def test_a_group_decided_on_one_that_lost_a_race_is_decided_again(
    lg: Ledger, clock: ManualClock
) -> None:
    """Another writer takes two of the three stamps while the first group is in flight: the
    first loses, the second (decided on top of it) is undone, and both run again on what
    is recorded. Nothing is lost, nothing overdrawn."""
    other = Engine(store=lg.store, clock=clock, password_cost="fast")

    def race(n: int) -> None:
        if n == 1:
            assert _codes(other.execute_many([consume(), consume()])) == ["ok", "ok"]

    _on_send(lg, race)
    results = lg.execute_many([consume(), consume(), consume()])
    assert _codes(results) == ["ok", "insufficient_stamps", "insufficient_stamps"]
    assert results[0].balance_after == 0  # type: ignore[union-attr]
    assert lg.balance(CTI) == 0
    assert other.current(CTI).version == lg.engine.current(CTI).version  # type: ignore[union-attr]


def test_what_was_decided_on_a_lost_group_is_forgotten_everywhere(
    lg: Ledger, clock: ManualClock
) -> None:
    """The group decided on top of the one that lost touched another CTI too: that CTI's
    cached state must not keep the undone consumption (its next version would skip one)."""
    assert _codes(lg.execute_many([register_client("C2"), _transfer("C2-cti", 2)])) == ["ok"] * 2
    other = Engine(store=lg.store, clock=clock, password_cost="fast")

    def race(n: int) -> None:
        if n == 1:
            assert _codes(other.execute_many([consume()])) == ["ok"]

    _on_send(lg, race)
    results = lg.execute_many([consume(), consume(), consume("C2-cti"), consume("C2-cti")])
    assert _codes(results) == ["ok", "ok", "ok", "ok"]
    assert [r.balance_after for r in results] == [1, 0, 1, 0]  # type: ignore[union-attr]
    assert (lg.balance(CTI), lg.balance("C2-cti")) == (0, 0)
    assert lg.execute_many([consume("C2-cti")])[0].code == "insufficient_stamps"  # type: ignore[union-attr]


def test_a_decision_set_aside_on_top_of_a_group_leaves_nothing_in_the_cache(
    lg: Ledger,
) -> None:
    """A group that reaches a hot CTI is not decided on top of the one in flight: it is set
    aside and run once that one is recorded. What it changed meanwhile on the other CTI
    (in place, in the cache) must not survive into the recorded state."""
    assert _codes(lg.execute_many([register_client("C2"), _transfer("C2-cti", 2)])) == ["ok"] * 2
    lg.engine.mark_hot(["C2-cti"])
    results = lg.execute_many([consume(), consume(), consume(), consume("C2-cti")])
    assert _codes(results) == ["ok", "ok", "ok", "ok"]
    assert [r.balance_after for r in results] == [2, 1, 0, 1]  # type: ignore[union-attr]
    assert lg.execute_many([consume()])[0].code == "insufficient_stamps"  # type: ignore[union-attr]


def test_a_balance_read_while_a_group_is_written_shows_only_what_is_recorded(
    lg: Ledger,
) -> None:
    """The cache holds the group in flight (and the next one, decided on top of it); a read
    must not show what may never be recorded."""
    seen: list[int] = []
    _on_send(lg, lambda _n: seen.append(lg.balance(CTI)))
    lg.execute_many([consume(), consume(), consume(), consume()])
    assert seen == [3, 1]
    assert lg.balance(CTI) == 0


def test_when_a_part_fails_the_callers_later_parts_are_not_run(lg: Ledger) -> None:
    """The caller sees the error; what it sent after the failed part is not recorded."""

    def fail(n: int) -> None:
        if n == 1:
            raise InfrastructureError("the database is unreachable")

    events, keys = recorded(lg)
    _on_send(lg, fail)
    with pytest.raises(InfrastructureError, match="unreachable"):
        lg.execute_many([consume(), consume(), consume()])
    assert recorded(lg) == (events, keys)
    assert lg.balance(CTI) == 3


def test_groups_that_reach_a_hot_cti_are_written_together_under_its_lock(lg: Ledger) -> None:
    """A hot CTI is written under its lock, one transaction at a time: the groups queued for
    it go in one transaction (as many as fit), not one locked transaction per group."""
    commits: list[int] = []
    lg.engine.on_commit.append(lambda ids: commits.append(len(ids)))
    lg.engine.mark_hot([CTI])
    results = lg.execute_many([consume(), consume(), consume(), consume()])
    assert _codes(results) == ["ok", "ok", "ok", "insufficient_stamps"]
    assert commits == [3]


def test_the_later_parts_of_a_long_batch_are_parsed_while_the_part_before_is_written(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing is a fifth of a command's Python: the caller parses its first part, and the
    leader parses each later part after the part before it was sent (so the two overlap)."""
    steps: list[str] = []
    real_prepare_many = preparation.prepare_many

    def prepare_many(commands: Any, now: Any) -> Any:
        steps.append(f"parse {len(commands)}")
        return real_prepare_many(commands, now)

    monkeypatch.setattr("ledger.write.preparation.prepare_many", prepare_many)
    _on_send(lg, lambda _n: steps.append("send"))
    results = lg.execute_many([consume(), consume(), consume()])
    assert _codes(results) == ["ok", "ok", "ok"]
    assert steps == ["parse 2", "send", "parse 1", "send"]


def test_a_fault_parsing_a_later_part_fails_that_caller_from_there(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A validator's bug met in a later part: the caller gets the error, the parts before it
    stay recorded (as when a part's write fails), nothing after it is run."""
    real_prepare_many = preparation.prepare_many
    parsed: list[int] = []

    def prepare_many(commands: Any, now: Any) -> Any:
        parsed.append(len(commands))
        if len(parsed) == 2:
            raise ZeroDivisionError("a validator's bug")
        return real_prepare_many(commands, now)

    monkeypatch.setattr("ledger.write.preparation.prepare_many", prepare_many)
    with pytest.raises(ZeroDivisionError, match="validator"):
        lg.execute_many([consume(), consume(), consume(), consume(), consume()])
    assert lg.balance(CTI) == 1
    assert parsed == [2, 2]  # the third part is never parsed


def test_a_wake_set_before_its_wait_is_kept_once() -> None:
    """Set twice before the waiter waits: its next wait returns at once, the one after
    blocks until the next set."""
    wake = Wake()
    wake.set()
    wake.set()
    wake.wait()  # returns: it was set
    waited = threading.Event()

    def wait() -> None:
        wake.wait()
        waited.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not waited.wait(0.05)  # the two sets made one
    wake.set()
    assert waited.wait(5)
    waiter.join()


def test_the_callers_of_a_recorded_group_get_their_results_when_a_commit_callback_fails(
    lg: Ledger,
) -> None:
    """A failing ``on_commit`` callback does not leave the group's callers waiting: what was
    recorded is answered (asyncio callers here, led by the committer thread)."""

    def fail(_ids: Sequence[int]) -> None:
        raise RuntimeError("a callback's bug")

    lg.engine.on_commit.append(fail)

    async def main() -> list[Outcome]:
        calls = [lg.aexecute(consume()) for _ in range(2)]
        return await asyncio.wait_for(asyncio.gather(*calls), timeout=10)

    outcomes = asyncio.run(main())
    assert sorted(o.balance_after for o in outcomes) == [1, 2]
    assert lg.balance(CTI) == 1


def test_a_caller_whose_event_loop_closed_is_logged_and_the_others_are_answered(
    lg: Ledger,
) -> None:
    """The loop of an asyncio caller closes while its command is committed: the command
    stays recorded, the leader logs ``caller_gone`` and goes on serving the others."""
    release = threading.Event()

    def hold(_ids: Sequence[int]) -> None:
        assert release.wait(10), "never released"

    lg.engine.on_commit.append(hold)

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lg.aexecute(consume()), timeout=0.05)

    with capture_logs(logging.WARNING) as logs:
        asyncio.run(give_up())  # the loop is closed when this returns
        release.set()
        lg.engine.on_commit.remove(hold)
        assert lg.execute(consume()).balance_after == 1  # served after the one that left
    assert {"event": "caller_gone", "commands": 1, "log_level": "warning"} in logs
    assert lg.balance(CTI) == 1


@pytest.mark.parametrize(
    ("commands", "group_max", "sizes"),
    [
        (500, 500, [500]),
        (2000, 500, [500, 450, 400, 350, 300]),
        (5000, 500, [500] * 7 + [450, 400, 350, 300]),
        (1100, 500, [450, 350, 300]),  # what is left joins the first part when it fits
        (2001, 500, [1, 500, 450, 400, 350, 300]),
        (11, 4, [4, 4, 3]),  # groups under ten commands: even parts, the remainder last
    ],
)
def test_the_last_parts_of_a_long_call_shrink_so_its_last_write_is_short(
    commands: int, group_max: int, sizes: list[int]
) -> None:
    assert part_sizes(commands, group_max) == sizes
