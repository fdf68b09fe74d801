"""One batch written exactly once: the attempts, lost races, locked retries and hot aggregates.

One *attempt* runs a batch of commands in memory against the aggregates (from the in-process
cache, or loaded), then writes all their events and idempotency keys in ONE transaction. If the
transaction loses a race (another writer wrote the same aggregate version or key first) nothing
was recorded: the touched aggregates are evicted and the batch runs again, now under the lock of
what it touched and checking the keys first, a bounded number of times.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from ledger.domain import Aggregate
from ledger.errors import (
    CommitOutcomeUnknown,
    ConcurrencyError,
    InfrastructureError,
    LedgerError,
    RecordedRejection,
    Rejected,
)
from ledger.logging import get_logger
from ledger.write import combining
from ledger.write.aggregates import Aggregates
from ledger.write.command_log import log_commands
from ledger.write.decision import Decider, PartialRejection, Tx, fresh_tx
from ledger.write.ports import HotWriter, Overtaken, Record, Turn, WriteConflict
from ledger.write.preparation import Prepared, Result

log = get_logger()

ATTEMPTS_MAX = 10
"""Bound on attempts of one batch under optimistic-concurrency conflicts."""
RETRY_DELAY_BASE_S = 0.001
RETRY_DELAY_MAX_S = 0.1
"""A lost race waits a random time up to base * 2**attempt, capped (at most ~0.5 s in all)."""
SNAPSHOT_INTERVAL = 500
"""An aggregate is snapshotted every this many events, so long histories load fast."""


def aborted(results: list[Result]) -> list[Result]:
    """The results of an atomic batch that was not recorded because of its first rejection."""
    first = next(i for i, r in enumerate(results) if isinstance(r, Rejected))
    return [
        r
        if isinstance(r, Rejected) or r.replayed
        else Rejected("batch_aborted", rejected_index=first)
        for r in results
    ]


def _leave(guard: AbstractContextManager[Record] | None, exc: BaseException | None = None) -> bool:
    """Leaves a guarded context entered by hand (if any), as a ``with`` block would on ``exc``
    (or on no error); whether it suppressed ``exc``."""
    if guard is None:
        return False
    if exc is None:
        return bool(guard.__exit__(None, None, None))
    return bool(guard.__exit__(type(exc), exc, exc.__traceback__))


@dataclass
class Attempts:
    """Runs batches to their record: one transaction each, retried after a lost race."""

    aggregates: Aggregates
    decider: Decider
    on_commit: list[Callable[[Sequence[int]], None]] = field(default_factory=list)
    snapshot_interval: int = SNAPSHOT_INTERVAL

    def run(
        self,
        batch: list[Prepared],
        *,
        atomic: bool,
        lost: tuple[Tx, BaseException] | None = None,
    ) -> list[Result]:
        if atomic:
            # Isolated decisions: a command that changed state and then rejected is simply a
            # rejection here, since any rejection aborts the whole batch anyway. Failed secret
            # checks of an aborted batch are recorded after it, each alone.
            return self._record_failed_checks(
                batch, self._run_batch(batch, isolated=True, atomic=True)
            )
        try:
            return self._run_batch(batch, lost=lost)
        except PartialRejection:
            return [r for one in batch for r in self._run_isolated(one)]

    def _run_isolated(self, one: Prepared) -> list[Result]:
        try:
            return self._run_batch([one], isolated=True)
        except PartialRejection as exc:  # pragma: no cover - isolated runs never raise it
            raise AssertionError("isolated command raised a partial rejection") from exc

    def _run_batch(  # noqa: PLR0915  (the attempts and their guarded context, in one place)
        self,
        batch: list[Prepared],
        *,
        isolated: bool = False,
        atomic: bool = False,
        lost: tuple[Tx, BaseException] | None = None,
    ) -> list[Result]:
        # The first attempt is optimistic: decided on cached state, written in one statement,
        # and a version or key already taken makes it lose (nothing recorded). Every later
        # attempt first locks what the lost attempts touched (``Store.locked``), then reads it
        # afresh, checks the keys and decides under the lock: nobody can write those aggregates
        # before it commits, so contention alone never exhausts the attempts. Aggregates that
        # lost a race lately are hot: their writers lock before writing even the first time
        # and keep the decision if nobody wrote them meanwhile (else decide again, still
        # under the lock), so on a hot account writers queue instead of losing races.
        # ``lost``: the first attempt was made and sent already (pipelined) and failed so.
        store = self.aggregates.store
        locked: set[str] | None = None
        unknown: CommitOutcomeUnknown | None = None
        first = 0
        if lost is not None:
            locked, unknown = self.after_loss(batch, *lost, None, None)
            first = 1
        # Hot aggregates are written through one guarded context for the whole batch: once a
        # write of it was overtaken, the store holds their locks for its next write. It is
        # entered and left by hand, as a ``with`` block would (an ``ExitStack`` around every
        # batch cost ~7,000 instructions, and most batches never need the context).
        guard: AbstractContextManager[Record] | None = None
        try:
            guarded: Record | None = None
            overtaken: Overtaken | None = None
            for attempt in range(first, ATTEMPTS_MAX):
                if attempt > 1 and overtaken is None:
                    # A locked attempt lost too: its commands reached an aggregate it had not
                    # locked, or a key another aggregate's writer took. Back off a little.
                    delay_max_s = min(RETRY_DELAY_MAX_S, RETRY_DELAY_BASE_S * 2**attempt)
                    time.sleep(random.uniform(0, delay_max_s))  # noqa: S311
                started = time.perf_counter()
                tx = Tx(self.aggregates, fresh=locked is not None)
                try:
                    if attempt == 0 and not atomic and not isolated and store.combining:
                        # Commands that name a hot aggregate go to it without a decision
                        # here: whoever writes them decides them.
                        target = combining.hot_target(batch, self.aggregates)
                        if target is not None:
                            return self._combine(batch, target, started)
                    if locked is None:
                        stored_keys = {} if overtaken is None else overtaken.keys
                        results = self.decider.decide(batch, tx, stored_keys, isolated=isolated)
                        if not tx.pristine and guarded is None:
                            return self._write(batch, tx, results, store.record, started, atomic)
                        if (
                            guarded is None
                            and not atomic
                            and not isolated
                            and len(tx.pristine) == 1
                            and store.combining
                            and combining.postable(batch)
                        ):
                            tx.discard()
                            return self._combine(batch, next(iter(tx.pristine)), started)
                        if guarded is None:
                            guard = store.guarded()
                            guarded = guard.__enter__()
                        overtaken = None
                        return self._write(batch, tx, results, guarded, started, atomic)
                    self.aggregates.preload(locked)
                    with store.locked(locked) as record:
                        tx = fresh_tx(self.aggregates, locked)
                        stored_keys = self.decider.stored_keys(batch)
                        results = self.decider.decide(batch, tx, stored_keys, isolated=isolated)
                        return self._write(batch, tx, results, record, started, atomic)
                except Overtaken as exc:
                    overtaken = exc
                    self.caught_up(tx, exc)
                except BaseException as exc:
                    # Nothing stays locked for a guarded write that failed otherwise: a
                    # locked attempt must not wait for this batch's own locks.
                    left, guard = guard, None
                    _leave(left)
                    guarded = overtaken = None
                    locked, unknown = self.after_loss(batch, tx, exc, locked, unknown)
        except BaseException as exc:
            left, guard = guard, None
            if not _leave(left, exc):
                raise
        finally:
            _leave(guard)
        raise ConcurrencyError(f"write conflicts persisted after {ATTEMPTS_MAX} attempts")

    def _combine(self, batch: list[Prepared], aggregate_id: str, started: float) -> list[Result]:
        """Posts a batch for a hot aggregate it reaches, and waits at it: another writer's
        answers, or this writer's turn to decide it with the batches posted meanwhile and to
        write them all in one transaction (``combining``)."""
        aggregates = self.aggregates
        if aggregates.peek(aggregate_id) is None:
            aggregates.preload([aggregate_id])  # so that its turn brings only what is new
        original = aggregates.peek(aggregate_id)
        version = 0 if original is None else original.version
        keys = [k for p in batch for k in p.keys]
        with aggregates.store.combined() as hot:
            turn = hot.wait(aggregate_id, combining.encode_commands(batch), version, keys)
            if turn.answers is not None or turn.events or turn.posted:
                # Still contended (once nobody else writes it, it cools down and its writes
                # go back to the optimistic path).
                aggregates.mark_hot([aggregate_id])
            if turn.answers is not None:
                results = combining.decode_answers(turn.answers)
                log_commands(batch, results, started)
                return results
            # Its turn: the aggregate locked for it, caught up with what others recorded.
            for event in turn.events:
                if original is None or event.originator_version != original.version + 1:
                    aggregates.evict([aggregate_id])  # loaded again when it is decided
                    break
                event.mutate(original)
            return self._take_turn(batch, aggregate_id, hot, turn, started)

    def _take_turn(
        self, batch: list[Prepared], aggregate_id: str, hot: HotWriter, turn: Turn, started: float
    ) -> list[Result]:
        """A writer's turn at a hot aggregate (locked for it): its batch and the batches
        posted for the aggregate decided together and written in one transaction, with the
        answers to the posted ones."""
        aggregates = self.aggregates
        stored_keys = dict(turn.keys)
        now = aggregates.clock()
        posted = [
            (post, prepared)
            for post, commands in turn.posted
            if (prepared := combining.decode_commands(commands, now)) is not None
        ]
        for _ in range(ATTEMPTS_MAX):
            tx = Tx(aggregates)
            combined = batch + [p for _, more in posted for p in more]
            try:
                results = self.decider.decide(combined, tx, stored_keys, isolated=False)
            except BaseException as exc:
                tx.discard()
                if not posted or not isinstance(exc, Exception):
                    raise
                # A partial rejection or a handler's fault among the posted batches: they
                # are left to their writers, which run them as usual.
                posted = []
                continue
            answers, unanswered = combining.answer_posted(posted, results)
            if unanswered:
                # Results that JSON would change: left to their writers to decide.
                tx.discard()
                posted = [(post, more) for post, more in posted if post not in unanswered]
                continue
            events, due = tx.take_events(self.snapshot_interval)
            ids: Sequence[int] = []
            try:
                if events or tx.keys or answers:
                    ids = hot.record(events, list(tx.keys.values()), [aggregate_id], answers)
            except Overtaken as exc:
                self.caught_up(tx, exc)
                stored_keys.update(exc.keys)
                continue
            except BaseException:
                tx.discard()
                raise
            own = results[: len(batch)]
            self.committed(tx, due)
            log_commands(batch, own, started)
            if ids:
                for callback in self.on_commit:
                    callback(ids)
            return own
        raise ConcurrencyError(f"write conflicts persisted after {ATTEMPTS_MAX} attempts")

    def caught_up(self, tx: Tx, overtaken: Overtaken) -> None:
        """After a guarded write was overtaken: the hot originals it was decided on catch up
        with the events that overtook it (no read), the rest of what it touched is dropped,
        and all of it is hot."""
        tx.discard()
        for event in overtaken.events:
            original = tx.pristine.get(event.originator_id)
            if original is not None and event.originator_version == original.version + 1:
                event.mutate(original)
            else:
                self.aggregates.evict([event.originator_id])
        self.aggregates.mark_hot(tx.touched)

    def after_loss(
        self,
        batch: list[Prepared],
        tx: Tx,
        exc: BaseException,
        locked: set[str] | None,
        unknown: CommitOutcomeUnknown | None,
    ) -> tuple[set[str], CommitOutcomeUnknown | None]:
        """After an attempt failed: what the next one must lock (and the unknown commit to
        report if it cannot reach the database), or the error that ends the batch."""
        # Cached aggregates were changed in place: nothing of this attempt may survive it.
        tx.discard()
        if isinstance(exc, WriteConflict):
            # Nothing was recorded (the store rolled the transaction back).
            self.aggregates.mark_hot(tx.touched)
            return (locked or set()) | set(tx.touched), unknown
        if isinstance(exc, CommitOutcomeUnknown):
            if unknown is not None or not all(p.keys for p in batch if p.command is not None):
                raise exc
            # Every command has a key, so running the batch once more is exactly once: a
            # command that was recorded finds its key and replays its first outcome, and
            # the key index refuses to record one twice even if the first commit is still
            # under way on the server. The retry is locked, so it checks the keys first.
            log.warning("commit_outcome_unknown", commands=len(batch), retried=True)
            return (locked or set()) | set(tx.touched), exc
        if unknown is not None and isinstance(exc, InfrastructureError):
            # The retry could not reach the database: the first commit stays unknown.
            raise unknown from exc
        raise exc

    def _record_failed_checks(self, batch: list[Prepared], results: list[Result]) -> list[Result]:
        """An aborted atomic batch still records its failed secret checks (DESIGN §3.3).

        Otherwise wrapping a guess in a batch that is bound to fail would make NIP guesses free.
        Each runs again alone and is decided afresh on what is recorded.
        """
        return [
            self._run_isolated(p)[0] if isinstance(r, RecordedRejection) else r
            for p, r in zip(batch, results, strict=True)
        ]

    def _write(
        self,
        batch: list[Prepared],
        tx: Tx,
        results: list[Result],
        record: Record,
        started: float,
        atomic: bool,
    ) -> list[Result]:
        """Records what an attempt decided (raises ``WriteConflict`` if it lost a race)."""
        if atomic and any(isinstance(r, Rejected) for r in results):
            tx.discard()
            log_commands(batch, results, started)
            return aborted(results)
        events, due = tx.take_events(self.snapshot_interval)
        if not events and not tx.keys:
            log_commands(batch, results, started)
            return results
        notification_ids = record(events, list(tx.keys.values()))
        self.committed(tx, due)
        log_commands(batch, results, started)
        for callback in self.on_commit:
            callback(notification_ids)
        return results

    def committed(self, tx: Tx, due: list[Aggregate]) -> None:
        """A recorded attempt: its aggregates cached as recorded, its snapshots stored."""
        for agg in tx.touched.values():
            self.aggregates.put(agg)
        if due:
            try:
                self.aggregates.store.snapshot(due, tx.now)
            except LedgerError as exc:
                # A snapshot only speeds up loading; the events are recorded. Say so loudly.
                log.error("snapshot_failed", error=str(exc), aggregates=len(due))
