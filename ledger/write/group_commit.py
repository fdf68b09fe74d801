"""Group commit: concurrent callers share transactions.

Callers queue their prepared commands. One caller at a time leads: it takes every request
queued (up to ``BATCH_SIZE_MAX`` commands, ``PIPELINE_GROUP_MAX`` on a pipelined store) and runs
them as ONE group, in ONE transaction, while newcomers queue behind it; then it hands each
caller its own results and, once its own are done, passes the lead to the next waiting thread.
A caller alone leads at once (no added latency, no thread switch); under load, each transaction
carries what arrived during the previous one. asyncio callers are led by a committer thread
instead, so the event loop never waits for the database. On a pipelined store the leader
overlaps the write of one group with the decision of the next (``pipeline``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ledger.commands.models import Command
from ledger.errors import DatabaseUnreachable, LedgerError
from ledger.logging import get_logger
from ledger.write import preparation
from ledger.write.arrivals import Arrivals
from ledger.write.attempts import Attempts
from ledger.write.calls import Commands, atomic_batch, part_sizes, too_large
from ledger.write.decision import Tx
from ledger.write.gc_pause import GC_PAUSE, GC_PAUSE_COMMANDS_MIN, gc_pause_for
from ledger.write.pipeline import Pipeline, database_failure
from ledger.write.preparation import Prepared, Result, aprepare_many, prepare
from ledger.write.request import Request, Wake, deliver_each, without_failed_parts

log = get_logger()

BATCH_SIZE_MAX = 5_000
"""Bound on commands per transaction: longer batches are split."""
PIPELINE_GROUP_MAX = 500
"""Bound on the commands of one group on a pipelined store (``Store.pipelined``): a longer
non-atomic batch is written in groups of at most this size (``part_sizes``), each sent while
the next is decided."""
CLOSE_WAIT_S = 60.0
"""Bound on how long ``close`` waits for queued commands to commit."""


def _settle_all(callers: list[tuple[asyncio.Future[list[Result]], Request]]) -> None:
    """Resolves asyncio callers' futures in their loop (unless a caller gave up waiting)."""
    for future, request in callers:
        if future.cancelled():
            continue
        if request.error is not None:
            future.set_exception(request.error)
        else:
            assert request.results is not None
            future.set_result(request.results)


@dataclass(eq=False)
class GroupCommit:
    """The queue of callers' requests and who leads it; one per engine, shared by threads."""

    attempts: Attempts
    _queue: deque[Request] = field(default_factory=deque)
    _queue_lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Condition = field(init=False)
    _leading: bool = False
    _closed: bool = False
    _committer_pool: ThreadPoolExecutor | None = None
    _pipeline: Pipeline = field(init=False)
    _arrivals: Arrivals = field(init=False)
    """How a caller that queues wakes a leader waiting for a write in flight."""
    _told: list[tuple[asyncio.AbstractEventLoop, Any, Request]] = field(default_factory=list)
    """asyncio callers served and not told yet (touched only by the leader: ``_tell_loops``)."""

    def __post_init__(self) -> None:
        self._idle = threading.Condition(self._queue_lock)
        self._arrivals = Arrivals(self._queue, self._queue_lock)
        self._pipeline = Pipeline(
            self.attempts, self.commit_group, self.more_of_the_queue, self.fail_waiting
        )

    def execute_many(self, commands: Commands, *, atomic: bool = False) -> list[Result]:
        """Runs commands in order in as few transactions as is safe; one result per command.

        Concurrent callers share transactions (``_submit``). ``atomic``: one
        transaction for all of them alone, and if any is rejected none is recorded (the others
        get ``batch_aborted``); over ``ATOMIC_SIZE_MAX`` commands every one is
        ``batch_too_large`` and none runs. Otherwise, on a pipelined store, a long list is
        written in groups of at most ``PIPELINE_GROUP_MAX``, each sent while the next is
        decided. ``commands`` may be any iterable; a non-atomic one is read a part at a time.
        """
        clock = self.attempts.aggregates.clock
        if atomic:
            batch, too_many = atomic_batch(commands)
            if too_many:
                return too_large(too_many)
            with gc_pause_for(len(batch)):
                return self._submit([Request(preparation.prepare_many(batch, clock()), True)])
        # Nothing to split (a type test, cheaper than an ABC's on the hot path).
        if type(commands) is list and len(commands) == 1:
            return [self.execute(commands[0])]
        results: list[Result] = []
        remaining = iter(commands)
        part = self._group_max()
        while chunk := list(itertools.islice(remaining, BATCH_SIZE_MAX)):
            with gc_pause_for(len(chunk)):
                now = clock()
                # The first part is parsed in the caller's thread, outside the commit in
                # flight; the later ones by whoever leads, each while the database writes
                # the part before it.
                bounds = list(itertools.accumulate(part_sizes(len(chunk), part), initial=0))
                requests = [Request(preparation.prepare_many(chunk[: bounds[1]], now), False)]
                requests += [
                    Request([], False, unparsed=chunk[start:end], now=now)
                    for start, end in itertools.pairwise(bounds[1:])
                ]
                results.extend(self._submit(requests))
                # Dropped before the collector resumes: it then scans only what survives
                # the call (the outcomes), not the call's parsed commands too (~1 ms a call
                # of 2,000 on this machine).
                del requests
        return results

    def execute(self, command: Mapping[str, Any] | Command) -> Result:
        """One command's result: ``execute_many([command])[0]``, without the lists.

        A caller alone (nobody leads, so nothing is queued) leads at once, without the queue
        (``_lead_alone``); otherwise it queues as ``execute_many`` does.
        """
        with self._queue_lock:
            if self._closed:  # ``_check_open``, inline
                raise LedgerError("the ledger is closed")
            alone = not self._leading
            self._leading = True
        if not alone:
            now = self.attempts.aggregates.clock()
            return self._submit([Request([prepare(command, now)], False)])[0]
        request = self._lead_alone(command)
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results[0]

    async def aexecute_many(self, commands: Commands, *, atomic: bool = False) -> list[Result]:
        """``execute_many`` for asyncio: joins the same queue without blocking the event loop."""
        clock = self.attempts.aggregates.clock
        if atomic:
            batch, too_many = atomic_batch(commands)
            if too_many:
                return too_large(too_many)
            prepared = await aprepare_many(batch, clock())
            return await self._asubmit(prepared, atomic=True)
        results: list[Result] = []
        remaining = iter(commands)
        while chunk := list(itertools.islice(remaining, BATCH_SIZE_MAX)):
            prepared = await aprepare_many(chunk, clock())
            results.extend(await self._asubmit(prepared, atomic=False))
        return results

    def _lead_alone(self, command: Mapping[str, Any] | Command) -> Request:
        """Leads for a caller alone: its command is parsed, then goes to the pipeline (or, on a
        store with no pipeline, is decided and written) without passing through the queue.

        The clock is read once, for the parse and the decision: the leader reads it after it
        took the lead, so a group's time never lies before the one of the group led before.
        On a pipelined store the write is then on the server: callers that queue meanwhile
        are decided while it is written, as any leader does (``_lead``); with nobody queued,
        the leader waits for the answer (``Arrivals.await_answer``) and lands it.
        """
        pipeline = self._pipeline
        try:
            now = self.attempts.aggregates.clock()
            request = Request([prepare(command, now)], False)
            pipeline.commit_or_send([request], now)
            flight = pipeline.flight
            if flight is not None and not self._queue:
                # An answer here already (the memory store's) needs no wait for it.
                sent = flight.sent
                if sent is None or sent.fileno is None or not self._arrivals.await_answer(flight):
                    pipeline.land(None)
        except BaseException:
            self._tell_loops()
            self._hand_off()
            raise
        if not request.done:
            self._lead([request])  # callers queued during the write: led as usual
            return request
        if self._told:
            self._tell_loops()
        self._hand_off()
        return request

    def _submit(self, requests: list[Request]) -> list[Result]:
        """Queues a caller's commands (in parts, one request each), leads if nobody does, and
        waits for their results."""
        requests = [r for r in requests if r.size]
        if not requests:
            return []
        for previous, request in itertools.pairwise(requests):
            request.after = previous
        with self._queue_lock:
            self._check_open()
            lead = not self._leading
            # A caller that leads at once is never woken: it needs no wake.
            wake = None if lead else Wake()
            for request in requests:
                request.wake = wake
            self._queue.extend(requests)
            self._leading = True
            self._arrivals.arrived()
        while wake is not None:
            # Woken when one of its requests is done or must lead (the flags are set before
            # the wake, and a wake set meanwhile makes the next wait return at once).
            wake.wait()
            if any(r.lead for r in requests):
                lead = True
                break
            if all(r.done for r in requests):
                break
        if lead:
            self._lead(requests)
        results: list[Result] = []
        for request in requests:
            if request.error is not None:
                raise request.error
            assert request.results is not None
            results.extend(request.results)
        return results

    def _asubmit(self, batch: list[Prepared], *, atomic: bool) -> asyncio.Future[list[Result]]:
        """Queues an asyncio caller's commands; the future resolves in its event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Result]] = loop.create_future()
        if not batch:
            future.set_result([])
            return future

        def notify(request: Request) -> None:
            # Told by the leader once it is done with the group (``_tell_loops``).
            self._told.append((loop, future, request))

        request = Request(batch, atomic, None, notify)
        with self._queue_lock:
            self._check_open()
            self._queue.append(request)
            if self._leading:
                self._arrivals.arrived()
                return future
            self._leading = True
            committer = self._committer()
        committer.submit(self._lead, None)
        return future

    def _tell_loops(self) -> None:
        """Resolves the futures of the asyncio callers served since the last call: one call
        into each event loop for all of its callers (each such call writes to the loop's
        wake-up pipe; one per caller cost a system call and a wake-up a command)."""
        if not self._told:
            return
        told, self._told = self._told, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Request]]] = {}
        for loop, future, request in told:
            by_loop.setdefault(loop, []).append((future, request))
        for loop, callers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, callers)
            except RuntimeError:
                # The callers' loop closed while their commands were committed: nobody is
                # left to tell. What was recorded stays recorded; a retry replays it.
                log.warning("caller_gone", commands=sum(r.size for _, r in callers))

    def _lead(self, own: list[Request] | None) -> None:
        """Commits queued groups until ``own`` are done (without: until nothing is left)."""
        try:
            while own is None or not all(r.done for r in own):
                # Before the queue is looked at: once nobody leads, another thread may.
                if self._told:
                    self._tell_loops()
                group = self._next_group()
                if group:
                    self._commit_next(group)
                elif (flight := self._pipeline.flight) is not None:
                    if not self._arrivals.await_answer(flight):
                        self._pipeline.land(None)
                else:  # nobody leads any more
                    assert own is None, "a waiting request left the queue unserved"
                    return
        except BaseException:
            self._tell_loops()
            self._hand_off()  # the others must not wait for a leader that is gone
            raise
        if own is not None:
            self._tell_loops()
            self._hand_off()

    def _next_group(self) -> list[Request]:
        """The next requests to commit together, or none (and, unless a group is still being
        written, nobody leads any more)."""
        with self._queue_lock:
            if not self._queue:
                if self._pipeline.flight is None:
                    self._leading = False
                    if self._closed:  # only ``close`` waits for the lead to go
                        self._idle.notify_all()
                return []
            first = self._queue.popleft()
            if first.atomic:
                return [first]  # an atomic batch shares its transaction with nobody
            return [first, *self._take_queued(first.size, self._group_max())]

    def _take_queued(self, size: int, limit: int) -> list[Request]:
        """The queued non-atomic requests that fit with ``size`` commands in ``limit`` (the
        queue lock is held)."""
        taken: list[Request] = []
        while self._queue:
            head = self._queue[0]
            if head.atomic or size + head.size > limit:
                break
            taken.append(self._queue.popleft())
            size += head.size
        return taken

    def _group_max(self) -> int:
        pipelined = self.attempts.aggregates.store.pipelined
        return min(BATCH_SIZE_MAX, PIPELINE_GROUP_MAX) if pipelined else BATCH_SIZE_MAX

    def _hand_off(self) -> None:
        """Passes the lead to a waiting thread (one queued, else one whose group is being
        written), or to the committer thread."""
        with self._queue_lock:
            waiting: Iterable[Request]
            if self._queue:
                waiting = self._queue
            elif (flight := self._pipeline.flight) is not None:
                waiting = flight.group
            else:
                self._leading = False
                if self._closed:  # only ``close`` waits for the lead to go
                    self._idle.notify_all()
                return
            for request in waiting:
                if request.wake is not None and not request.done:
                    request.lead = True
                    request.wake.set()
                    return
            self._committer().submit(self._lead, None)

    def _committer(self) -> ThreadPoolExecutor:
        """The thread that leads for asyncio callers (made on first use; the queue lock is held)."""
        if self._committer_pool is None:
            self._committer_pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-commit")
        return self._committer_pool

    def _commit_next(self, group: list[Request]) -> None:
        """Commits a group, overlapping its write with the next decision when it can."""
        group = without_failed_parts(group)
        if not group:
            return
        try:
            self._pipeline.commit_or_send(group)
        except BaseException as exc:
            # A fault of the pipeline itself: the group's callers must not wait for ever.
            for request in group:
                if not request.done:
                    request.deliver(None, exc)
            raise

    def more_of_the_queue(self, size: int) -> list[Request]:
        """Queued non-atomic requests that fit in a transaction with ``size`` commands."""
        with self._queue_lock:
            return self._take_queued(size, BATCH_SIZE_MAX)

    def commit_group(
        self, group: list[Request], lost: tuple[Tx, BaseException] | None = None
    ) -> BaseException | None:
        """Runs a group's commands in one batch and gives each request its own results.

        ``lost``: the group's first attempt, and how its write failed (it was pipelined).
        Returns the error that failed the whole group, if one did.
        """
        group = without_failed_parts(group)
        if not group:
            return None
        batch = group[0].batch if len(group) == 1 else [p for r in group for p in r.batch]
        try:
            if len(batch) < GC_PAUSE_COMMANDS_MIN:
                # No pause to enter (``gc_pause_for``'s ``nullcontext`` cost ~2,500
                # instructions, a command's write alone on SQLite).
                with self.attempts.aggregates.lock:
                    results = self.attempts.run(batch, atomic=group[0].atomic, lost=lost)
            else:
                with self.attempts.aggregates.lock, GC_PAUSE:
                    results = self.attempts.run(batch, atomic=group[0].atomic, lost=lost)
        except LedgerError as exc:
            # The database failed or a lock timed out: the transaction carried them all.
            for request in group:
                request.deliver(None, exc)
            unreachable = database_failure(exc)
            if isinstance(unreachable, DatabaseUnreachable):
                self.fail_waiting(unreachable)
            return exc
        except Exception as exc:
            if len(group) > 1:
                # A fault in one command (a handler's bug) fails only its own caller.
                for request in group:
                    self.commit_group([request])
                return None
            group[0].deliver(None, exc)
            return exc
        except BaseException as exc:
            for request in group:
                request.deliver(None, exc)
            raise
        deliver_each(group, results)
        return None

    def fail_waiting(self, error: DatabaseUnreachable) -> None:
        """Fails every queued request with ``error``: the database could not be reached in
        the pool's wait. Each of them would otherwise wait that long again, one group after
        another (16 threads waited 8 x the pool timeout); they arrived while that wait ran,
        so each is answered within its own bound, and a retry tries afresh."""
        with self._queue_lock:
            waiting = list(self._queue)
            self._queue.clear()
        for request in waiting:
            request.deliver(None, error)

    def queued(self) -> int:
        """How many commands wait for a transaction (not counting the one in flight)."""
        with self._queue_lock:
            return sum(r.size for r in self._queue)

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("the ledger is closed")

    def close(self) -> None:
        """Refuses new commands, lets queued ones commit, and stops the committer thread."""
        with self._queue_lock:
            self._closed = True
            self._idle.wait_for(lambda: not self._leading, timeout=CLOSE_WAIT_S)
            pool, self._committer_pool = self._committer_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._arrivals.close()
