"""On a pipelined store (PostgreSQL), the next group is decided while the last one is written.

A group is sent without waiting for the database (``Store.record_later``), and the next group
(queued already, or arriving while the leader waits) is decided meanwhile, on top of the state
the first one left: the database's work and ours overlap. The next group is sent only once the
first is recorded; if the first lost a race or failed, what was decided on top of it is undone
and decided again afterwards. Groups that are not plain optimistic decisions (atomic, hot
aggregates, a partial rejection, a snapshot due) are run by ``Attempts`` as usual, once nothing
is in flight.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec

from ledger.domain import Aggregate, Event
from ledger.errors import CommitOutcomeUnknown, DatabaseUnreachable, InfrastructureError
from ledger.write import combining
from ledger.write.attempts import Attempts
from ledger.write.command_log import log_commands
from ledger.write.decision import HotAggregate, Tx
from ledger.write.gc_pause import GC_PAUSE, GC_PAUSE_COMMANDS_MIN
from ledger.write.ports import Sent
from ledger.write.preparation import Prepared, Result
from ledger.write.request import Request, deliver_each

CommitGroup = Callable[[list[Request], "tuple[Tx, BaseException] | None"], BaseException | None]
"""Runs a group as usual (``GroupCommit.commit_group``); with how its pipelined write failed.
Returns the error that failed the whole group, if one did."""
MoreOfTheQueue = Callable[[int], list[Request]]
"""Queued requests that fit in one transaction with that many commands."""
FailWaiting = Callable[[DatabaseUnreachable], None]
"""Fails every queued request with that error (``GroupCommit.fail_waiting``)."""


def database_failure(exc: BaseException | None) -> InfrastructureError | None:
    """The error for callers whose commands were not sent when ``exc`` stopped a group: the
    database could not be used (their own commands are then not recorded either), or None.

    A ``CommitOutcomeUnknown`` is the sent group's alone; what stopped its own retry (the
    database unreachable) is what the others meet.
    """
    if isinstance(exc, CommitOutcomeUnknown):
        exc = exc.__cause__
        if isinstance(exc, CommitOutcomeUnknown):
            return None
    return exc if isinstance(exc, InfrastructureError) else None


class Decided(msgspec.Struct, eq=False):
    """A group decided in one optimistic attempt, then sent to the store (``Pipeline.send``).

    Its events were taken off the aggregates when it was decided, so that the next group,
    decided on top of it while it is written, takes only its own. A struct: one is made per
    group (a write of one command, for a caller alone), and a dataclass costs several times
    as much to make.
    """

    group: list[Request]
    batch: list[Prepared]
    tx: Tx
    results: list[Result]
    events: list[Event]
    due: list[Aggregate]
    """Aggregates due for a snapshot once it is recorded (nothing is decided on top of it)."""
    started: float
    writes: bool
    """Whether it has anything to record (events or keys)."""
    sent: Sent | None = None
    stale: set[str] = msgspec.field(default_factory=set)
    """Its aggregates that a decision made on top of it changed in place and then set aside:
    they are evicted, not kept, once it is recorded."""


def _reraise(exc: BaseException) -> Sequence[int]:
    raise exc


@dataclass(eq=False)
class Pipeline:
    """The group in flight, and how the next one is decided on top of it (the leader's alone)."""

    attempts: Attempts
    commit_group: CommitGroup
    more_of_the_queue: MoreOfTheQueue
    fail_waiting: FailWaiting
    flight: Decided | None = None
    """The group being written, if any (set by ``send``, cleared by ``land``; a plain field,
    not a property: the leader reads it twice a command)."""
    _landed_failure: InfrastructureError | None = None
    """Why the last group that failed to land failed, when the database could not be used."""

    def commit_or_send(self, group: list[Request], now: datetime | None = None) -> None:
        """Decides a group on top of the one in flight and sends it once that one is recorded;
        or runs it as usual when it cannot be (atomic, hot, a partial rejection, a fault).

        ``now``: the clock, read by the leader since it leads (else it is read here)."""
        aggregates = self.attempts.aggregates
        flight = self.flight
        if group[0].atomic or not aggregates.store.pipelined:
            # Atomic, or no database to overlap with: decided and written at once.
            if flight is not None:
                self.land(None)
            self.commit_group(group, None)
            return
        if flight is not None and flight.due:
            self.land(None)  # its snapshots must be of its own state: nothing on top of it
            flight = None
        batch = group[0].batch if len(group) == 1 else [p for r in group for p in r.batch]
        decided: Decided | None
        touched: Collection[str]
        with aggregates.lock:
            failed: InfrastructureError | None = None
            if aggregates.store.combining and combining.hot_target(batch, aggregates):
                # Posted for its hot aggregate (``Attempts``): nothing to decide here.
                decided, touched, hot = None, [], True
            elif len(batch) < GC_PAUSE_COMMANDS_MIN:
                decided, touched, hot, failed = self._decide_group(group, batch, now)
            else:
                with GC_PAUSE:
                    decided, touched, hot, failed = self._decide_group(group, batch, now)
        # With the database failing, each step below would wait the pool's timeout again:
        # a group whose decision, whose predecessor's landing or whose reload met that
        # failure fails with it at once (nothing of it was sent).
        if flight is not None:
            if decided is None:
                flight.stale.update(touched)
            if not self.land(decided):
                decided = None  # decided on what was not recorded: undone
                failed = failed or self._landed_failure
        elif decided is not None:
            self.send(decided)
        if failed is not None:
            self._fail(group, failed)
            return
        if decided is None:
            if self.flight is not None and not self.land(None) and self._landed_failure:
                self._fail(group, self._landed_failure)
                return
            try:
                with aggregates.lock:
                    # What the undone decision had in hand was evicted: loaded again in one go.
                    aggregates.preload(touched)
            except InfrastructureError as exc:
                self._fail(group, exc)
                return
            if hot:
                # Written under locks, one transaction at a time: as many as a transaction
                # takes go together (each locked transaction costs a few round trips).
                group += self.more_of_the_queue(sum(r.size for r in group))
            self.commit_group(group, None)

    def _decide_group(
        self, group: list[Request], batch: list[Prepared], now: datetime | None
    ) -> tuple[Decided | None, Collection[str], bool, InfrastructureError | None]:
        """A plain optimistic decision of the group (none, and nothing changed, when the group
        must run as usual: hot aggregates, a partial rejection, a handler's fault), the
        aggregates it read if none, whether it stopped at a hot one, and the database's
        failure if a read failed (the group then fails with it instead of running again)."""
        started = time.perf_counter()
        attempts = self.attempts
        tx = Tx(attempts.aggregates, pipelined=True, now=now)
        try:
            results = attempts.decider.decide(batch, tx, {}, isolated=False)
        except BaseException as exc:
            tx.discard()
            if isinstance(exc, InfrastructureError):
                return None, list(tx.touched), False, exc
            if isinstance(exc, Exception):
                # Run again as usual (which reports a fault).
                return None, list(tx.touched), isinstance(exc, HotAggregate), None
            raise
        events, due = tx.take_events(attempts.snapshot_interval)
        attempts.aggregates.unrecorded.update(tx.touched)
        writes = bool(events or tx.keys)
        return Decided(group, batch, tx, results, events, due, started, writes), (), False, None

    def _fail(self, group: list[Request], error: InfrastructureError) -> None:
        """The group fails with ``error``; if the database is unreachable, so does every
        request queued behind it (each would wait the pool's timeout again, in turn)."""
        for request in group:
            if not request.done:
                request.deliver(None, error)
        if isinstance(error, DatabaseUnreachable):
            self.fail_waiting(error)

    def send(self, decided: Decided) -> None:
        """Starts recording a decided group; it is in flight until ``land``."""
        if decided.writes:
            try:
                decided.sent = self.attempts.aggregates.store.record_later(
                    decided.events, list(decided.tx.keys.values())
                )
            except Exception as exc:  # a store's fault: the group fails when it lands
                decided.sent = Sent(functools.partial(_reraise, exc))
        self.flight = decided
        self.attempts.aggregates.in_flight_state = decided.tx.touched

    def land(self, then: Decided | None) -> bool:
        """Waits for the group in flight; if it was recorded, sends ``then`` (decided on top
        of it) and finishes it. If not, undoes ``then`` and runs the group again as usual.
        Returns whether ``then`` stands."""
        flight = self.flight
        assert flight is not None
        aggregates = self.attempts.aggregates
        self.flight = None
        aggregates.in_flight_state = {}
        try:
            ids = flight.sent.answer() if flight.sent is not None else ()
        except BaseException as exc:
            with aggregates.lock:
                if then is not None:
                    then.tx.discard()
                    aggregates.unrecorded.difference_update(then.tx.touched)
                aggregates.unrecorded.difference_update(flight.tx.touched)
            if not isinstance(exc, Exception):
                with aggregates.lock:
                    flight.tx.discard()
                for request in flight.group:
                    request.deliver(None, exc)
                raise
            self._landed_failure = database_failure(
                self.commit_group(flight.group, (flight.tx, exc))
            )
            return False
        if then is not None:
            self.send(then)
        self._finish(flight, ids)
        return True

    def _finish(self, decided: Decided, ids: Sequence[int]) -> None:
        """A recorded group: its aggregates cached as recorded, its log lines, its results."""
        attempts = self.attempts
        aggregates = attempts.aggregates
        writes = decided.writes
        with aggregates.lock:
            if writes:
                attempts.committed(decided.tx, decided.due)
                if decided.stale:
                    aggregates.evict(decided.stale)
            if self.flight is None:
                aggregates.unrecorded.clear()
            else:
                flying = self.flight.tx.touched
                aggregates.unrecorded.difference_update(
                    i for i in decided.tx.touched if i not in flying
                )
        log_commands(decided.batch, decided.results, decided.started)
        try:
            if writes:
                for callback in attempts.on_commit:
                    callback(ids)
        finally:
            # Recorded: its callers get their results even if a callback failed.
            group = decided.group
            if len(group) == 1:
                group[0].deliver(decided.results, None)
            else:
                deliver_each(group, decided.results)
