"""Writes of a hot aggregate (one that lost races lately) on real databases.

A hot aggregate's write is guarded: it checks versions and keys before it writes anything, and
when others wrote first it gets what they wrote in its answer, so that it decides again without
reading. On PostgreSQL, writers in several processes commit for each other (``combining``):
whoever's turn comes decides and writes every batch posted for the aggregate.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from adapters.storage.postgres import LOCK_BUCKETS
from adapters.storage.store import EventStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import ConcurrencyError
from ledger.outcome import Outcome
from ledger.write.ports import Overtaken
from tests.support import CTI, build_network, consume, transfer_stamps

WAIT_S = 30.0
"""Bound on how long a test waits for another thread to reach a point."""


def _open(url: str, clock: ManualClock) -> Ledger:
    return Ledger.open(url, clock=clock, projections="off", password_cost="fast")


@pytest.fixture
def two(store_url: str, clock: ManualClock) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one database, as two processes would hold them (10 stamps on the CTI);
    both have the CTI cached."""
    with _open(store_url, clock) as first:
        build_network(first, inventory=1000, cti_stamps=10)
        with _open(store_url, clock) as second:
            assert first.balance(CTI) == second.balance(CTI) == 10
            yield first, second


def _count_guarded(lg: Ledger) -> list[str]:
    """What each guarded write of ``lg`` did: "recorded" or "overtaken"."""
    store = lg.store
    assert isinstance(store, EventStore)
    writes: list[str] = []
    guarded = store.guarded

    @contextmanager
    def counted() -> Iterator[Callable[..., Any]]:
        with guarded() as record:

            def write(events: Any, keys: Any) -> Any:
                try:
                    ids = record(events, keys)
                except Overtaken:
                    writes.append("overtaken")
                    raise
                writes.append("recorded")
                return ids

            yield write

    store.guarded = counted  # type: ignore[method-assign]
    return writes


def test_a_hot_write_overtaken_decides_again_on_what_overtook_it(
    two: tuple[Ledger, Ledger],
) -> None:
    """Another process wrote the hot CTI since this one cached it: the guarded write records
    nothing and answers the events that overtook it, and the decision made again on them is
    written next, without reading the CTI again (the distributor the transfer changed in
    place is read again)."""
    first, second = two
    assert first.execute(consume()).balance_after == 9  # `second`'s copy is stale
    second.engine.mark_hot([CTI])
    writes = _count_guarded(second)
    store = second.store
    assert isinstance(store, EventStore)
    loads: list[str] = []
    load, catch_up = store.load, store.catch_up
    store.load = lambda i: loads.append(i) or load(i)  # type: ignore[method-assign]
    store.catch_up = lambda a: loads.append(a.id) or catch_up(a)  # type: ignore[method-assign]
    # A transfer is decided here (it is not posted for another process to decide).
    outcome = second.execute(transfer_stamps(5, "T-hot", amount="2.50"))
    assert writes == ["overtaken", "recorded"]
    assert CTI not in loads
    assert isinstance(outcome, Outcome)
    assert first.balance(CTI) == second.balance(CTI) == 14


def test_a_hot_write_whose_key_was_used_replays_its_first_outcome(
    two: tuple[Ledger, Ledger],
) -> None:
    """The same CFDI was stamped by another process: the guarded write finds its key used and
    the caller gets the first outcome, marked replayed; nothing is recorded twice."""
    first, second = two
    command = consume()
    assert first.execute(command).balance_after == 9
    second.engine.mark_hot([CTI])
    again = second.execute(command)
    assert (again.balance_after, again.replayed) == (9, True)
    assert first.balance(CTI) == 9


@contextmanager
def _holding_the_turn(url: str, aggregate_id: str) -> Iterator[Callable[[], None]]:
    """Holds a hot aggregate's lock from another session, as a writer whose turn it is would;
    yields what releases it."""
    lock_class = zlib.crc32(b"ledger_events") & 0x7FFF_FFFF
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s) & %s)",
            (lock_class, aggregate_id, LOCK_BUCKETS - 1),
        )
        yield lambda: conn.execute("SELECT pg_advisory_unlock_all()")


def _wait_for(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _posts(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM ledger_hot_posts").fetchone()
        assert row is not None
        return int(row[0])


def _links(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM ledger_chain").fetchone()
        assert row is not None
        return int(row[0])


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:  # handed to the test, which checks it
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.postgres
def test_writers_waiting_at_a_hot_cti_are_written_together_by_whoever_gets_the_turn(
    pg_url: str, clock: ManualClock
) -> None:
    """Two processes post their stamps for a hot CTI while its lock is held; once it is free,
    one of them gets the turn and writes both stamps in one transaction, and each caller gets
    its own outcome (nothing replayed)."""
    with _open(pg_url, clock) as first, _open(pg_url, clock) as second:
        build_network(first, inventory=1000, cti_stamps=10)
        assert second.balance(CTI) == 10
        for lg in (first, second):
            lg.engine.mark_hot([CTI])
        links = _links(pg_url)
        with _holding_the_turn(pg_url, CTI) as release:
            one, one_out = _in_thread(lambda: first.execute(consume()))
            _wait_for(lambda: _posts(pg_url) == 1, "the first post")
            other, other_out = _in_thread(lambda: second.execute(consume()))
            _wait_for(lambda: _posts(pg_url) == 2, "the second post")
            release()
            one.join(WAIT_S)
            other.join(WAIT_S)
        results = one_out + other_out
        assert all(isinstance(r, Outcome) for r in results), results
        assert sorted(r.balance_after for r in results) == [8, 9]
        assert not any(r.replayed for r in results)
        assert _links(pg_url) == links + 1  # one transaction for both
        assert _posts(pg_url) == 0
        assert first.balance(CTI) == second.balance(CTI) == 8


@pytest.mark.postgres
def test_a_writer_that_stops_waiting_at_a_hot_cti_takes_its_stamp_back(
    pg_url: str, clock: ManualClock
) -> None:
    """A wait at a hot CTI that ends in an error (a lock timeout; here the wait is cancelled)
    withdraws the posted stamp: the caller gets the error and nobody records the stamp later."""
    command = consume()
    with _open(pg_url, clock) as first, _open(pg_url, clock) as second:
        build_network(first, inventory=1000, cti_stamps=10)
        assert second.balance(CTI) == 10
        second.engine.mark_hot([CTI])
        with _holding_the_turn(pg_url, CTI) as release:
            waiting, out = _in_thread(lambda: second.execute(command))
            _wait_for(lambda: _posts(pg_url) == 1, "the post")
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'CALL %%hot_wait%%' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"
                )
            waiting.join(WAIT_S)
            release()
        assert len(out) == 1
        assert isinstance(out[0], ConcurrencyError)
        assert _posts(pg_url) == 0
        first.engine.mark_hot([CTI])
        assert first.execute(consume()).balance_after == 9  # a turn that finds nothing posted
        assert second.execute(command).replayed is False  # its retry is judged afresh
        assert first.balance(CTI) == 8
