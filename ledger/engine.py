"""The write path: runs commands against aggregates and records their events exactly once.

One *attempt* runs a batch of commands in memory against the aggregates (from the in-process
cache, or loaded), then writes all their events and idempotency keys in ONE transaction. If the
transaction loses a race (another writer wrote the same aggregate version or key first) nothing
was recorded: the touched aggregates are evicted and the batch runs again, now checking the keys
first, a bounded number of times.

Rules for handlers (``ledger/commands/handlers.py``): check every rule of a command before the
first event, so a rejection leaves the aggregates untouched. The engine verifies that: a command
that mutated an aggregate and then raised ``Rejected`` aborts the batch, which then runs again one
command per transaction, where such a command is simply discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import itertools
import logging
import os
import random
import select
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar, get_args

import msgspec
from pydantic import TypeAdapter, ValidationError

from ledger.clock import MEXICO_CITY, Clock, local_date
from ledger.commands.auth import authorise
from ledger.commands.models import COMMAND_ADAPTER, AnyCommand, Command, time_errors
from ledger.domain import Aggregate, Event
from ledger.errors import (
    CommitOutcomeUnknown,
    ConcurrencyError,
    InfrastructureError,
    LedgerError,
    RecordedRejection,
    Rejected,
)
from ledger.logging import get_logger
from ledger.outcome import Outcome
from ledger.passwords import PasswordCost

log = get_logger()

A = TypeVar("A", bound=Aggregate)

ATTEMPTS_MAX = 10
"""Bound on attempts of one batch under optimistic-concurrency conflicts."""
RETRY_DELAY_BASE_S = 0.001
RETRY_DELAY_MAX_S = 0.1
"""A lost race waits a random time up to base * 2**attempt, capped (at most ~0.5 s in all)."""
BATCH_SIZE_MAX = 5_000
"""Bound on commands per transaction: longer batches are split."""
PIPELINE_GROUP_MAX = 500
"""Bound on the commands of one group on a pipelined store (``Store.pipelined``): a longer
non-atomic batch is written in groups of at most this size (``_part_sizes``), each sent while
the next is decided."""
CACHE_SIZE_MAX = 50_000
"""Bound on aggregates kept in memory by one engine."""
SNAPSHOT_INTERVAL = 500
"""An aggregate is snapshotted every this many events, so long histories load fast."""
HOT_WINDOW_S = 10.0
"""An aggregate that lost a race is written under its lock for this long after."""
HOT_SIZE_MAX = 10_000
"""Bound on the hot aggregates one engine remembers."""
MIDNIGHT = datetime.min.time()
"""Where a local day starts."""


class KeyRecord(msgspec.Struct, frozen=True, gc=False):
    """An idempotency key as stored: the fingerprint of its command and its first outcome.

    A struct, not a dataclass: one is made per command, and a frozen dataclass takes about
    0.4 us to make (a struct 0.06). Plain values only, so never in a reference cycle.
    """

    key: str
    fingerprint: str
    outcome: bytes


class WriteConflict(LedgerError):
    """Raised by a store when a write lost a race (version or key already taken)."""


class Store(Protocol):
    """What the engine needs from the event store (implemented in ``adapters/storage/store.py``)."""

    def load(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate rebuilt from its snapshot and events, or None."""

    def catch_up(self, aggregate: Aggregate) -> Aggregate:
        """The aggregate advanced by events recorded after its version."""

    def load_many(self, aggregate_ids: Collection[str]) -> dict[str, Aggregate]:
        """``load`` of each aggregate that exists, by id (a database may answer in one go)."""

    def catch_up_many(self, aggregates: Sequence[Aggregate]) -> None:
        """``catch_up`` of each aggregate, in place (a database may answer in one go)."""

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The stored rows of the keys that were used."""

    @property
    def pipelined(self) -> bool:
        """Whether ``record_later`` returns before the database has answered (PostgreSQL): the
        engine then decides the next group of commands while the last one is being written."""

    def record(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
        """Writes events and keys in one transaction; raises ``WriteConflict`` on a lost race."""

    def record_later(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sent:
        """``record``, sent now; ``Sent.answer`` waits for the database and returns the ids,
        or raises what ``record`` raises. It never raises itself, and its answer must be
        taken once, even when nobody waits for it: until then the store's writer is busy."""

    def locked(self, aggregate_ids: Collection[str]) -> AbstractContextManager[Record]:
        """A transaction no other writer of these aggregates can pass; yields its ``record``.

        Entered before the aggregates are read and the commands decided again, so the retry of
        a lost race cannot lose it again. Leaving without recording rolls back.
        """

    def snapshot(self, aggregates: Iterable[Aggregate], at: datetime) -> None:
        """Stores snapshots of the aggregates' current state."""

    def has_events_of(self, topic: str) -> bool:
        """Whether any event of ``topic`` was recorded (a rare question: may scan)."""


Record = Callable[[Sequence[Event], Sequence[KeyRecord]], Sequence[int]]
"""Writes events and keys in one transaction (the store's ``record``)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A write sent by ``Store.record_later``."""

    answer: Callable[[], Sequence[int]]
    """Waits for the database's answer: the notification ids, or the write's error."""
    fileno: int | None = None
    """A socket that is readable once the answer has come (None: it is here already)."""


Handler = Callable[[Any, "Tx"], Outcome]
HANDLERS: dict[type[Command], Handler] = {}


def handles(command_class: type[Command]) -> Callable[[Handler], Handler]:
    """Registers the handler of a command class."""

    def register(handler: Handler) -> Handler:
        HANDLERS[command_class] = handler
        return handler

    return register


class _PartialRejection(Exception):
    """A handler mutated an aggregate and then rejected; the batch must run command by command."""


class _HotAggregate(Exception):
    """A pipelined decision reached a hot aggregate: the group runs as usual instead."""


class Tx:
    """The aggregates one attempt works on, and what it will record."""

    def __init__(self, engine: Engine, *, fresh: bool = False, pipelined: bool = False) -> None:
        self.engine = engine
        # A pipelined decision stops at the first hot aggregate (``_HotAggregate``).
        self.pipelined = pipelined
        # Under the lock of what it touches, an attempt catches cached aggregates up first.
        self.fresh = fresh
        self.touched: dict[str, Aggregate] = {}
        # Hot aggregates are decided on a clone: the cached original stays as recorded, so a
        # lost race costs a catch-up of it, not a reload.
        self.pristine: dict[str, Aggregate] = {}
        self.created: dict[str, Aggregate] = {}
        self.keys: dict[str, KeyRecord] = {}
        # Aggregates of a fresh attempt already caught up under its lock (in one query).
        self.current: set[str] = set()
        self.now: datetime = engine.clock()
        self.today: date = local_date(self.now)
        self._from_cache: set[str] = set()
        # What the current command has read, with each aggregate's pending-event count at its
        # first read, so "did this command change anything?" costs O(aggregates it read), not
        # O(aggregates in the batch).
        self._read: dict[str, tuple[Aggregate, int]] = {}
        self._created_now: list[str] = []
        self._keys_before = 0

    def begin_command(self) -> None:
        """Reads the clock for the next command and starts tracking what it changes."""
        self.now = self.engine.clock()
        self.today = self.engine.local_day(self.now)
        self._read = {}
        self._created_now = []
        self._keys_before = len(self.keys)

    def find(self, aggregate_id: str) -> Aggregate | None:
        """Any aggregate with this id, or None."""
        agg = self.touched.get(aggregate_id)
        if agg is None:
            agg = self.engine.cache_get(aggregate_id)
            if agg is None:
                agg = self.engine.in_flight(aggregate_id)
            if agg is not None:
                if self.fresh:
                    if aggregate_id not in self.current:
                        agg = self.engine.store.catch_up(agg)
                else:
                    self._from_cache.add(aggregate_id)
                if self.engine.is_hot(aggregate_id):
                    if self.pipelined:
                        raise _HotAggregate(aggregate_id)
                    self.pristine[aggregate_id] = agg
                    agg = agg.clone()
            else:
                agg = self.engine.store.load(aggregate_id)
                if agg is None:
                    return None
            self.touched[aggregate_id] = agg
        if aggregate_id not in self._read:
            self._read[aggregate_id] = (agg, len(agg.pending_events))
        return agg

    def find_current(self, aggregate_id: str) -> Aggregate | None:
        """Like ``find``, but an aggregate from the cache is first caught up with the store.

        For a decision that records nothing when it succeeds (a credentials check), so a
        stale cache cannot hide what another process recorded (a lock); a decision that
        records something is protected by the version check at commit instead.
        """
        agg = self.find(aggregate_id)
        if agg is not None and aggregate_id in self._from_cache and not agg.pending_events:
            self._from_cache.discard(aggregate_id)
            original = self.pristine.get(aggregate_id)
            if original is not None:
                # A hot aggregate: the cached original moves on, the attempt gets a new clone.
                version = original.version
                self.engine.store.catch_up(original)
                if original.version != version:
                    agg = original.clone()
            else:
                agg = self.engine.store.catch_up(agg)  # in place: the cached object moves on
                self.engine.cache_put(agg)
            self.touched[aggregate_id] = agg
            self._read[aggregate_id] = (agg, 0)
        return agg

    def get(self, aggregate_id: str, kind: type[A]) -> A:
        """The aggregate of that kind, or ``unknown_account``."""
        agg = self.find(aggregate_id)
        if not isinstance(agg, kind):
            raise Rejected("unknown_account", account_id=aggregate_id, kind=kind.__name__)
        return agg

    def add(self, aggregate: Aggregate) -> None:
        """A new aggregate; ``already_exists`` if the id is taken."""
        if self.find(aggregate.id) is not None:
            raise Rejected("already_exists", account_id=aggregate.id)
        self.touched[aggregate.id] = aggregate
        self.created[aggregate.id] = aggregate
        self._read[aggregate.id] = (aggregate, 0)
        self._created_now.append(aggregate.id)

    def record_actor(self, actor: str) -> None:
        """Puts ``actor`` on every event the current command made (DESIGN §4a)."""
        for agg, count in self._read.values():
            pending = agg.pending_events
            for index in range(count, len(pending)):
                pending[index] = msgspec.structs.replace(pending[index], actor=actor)

    def changed(self) -> bool:
        """Whether the current command made events or claims (a rejection must not have)."""
        if len(self.keys) != self._keys_before:
            return True
        return any(len(agg.pending_events) != count for agg, count in self._read.values())

    def discard_created(self) -> None:
        """Forgets aggregates the current (rejected, unchanged) command added."""
        for new_id in self._created_now:
            self.touched.pop(new_id, None)
            self.created.pop(new_id, None)
            self._read.pop(new_id, None)
        self._created_now = []

    def lookup(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """Stored or claimed-in-this-attempt rows of ``keys`` (sale ids, invoiced sales, ...)."""
        found = {k: self.keys[k] for k in keys if k in self.keys}
        missing = [k for k in keys if k not in found]
        if missing:
            found.update(self.engine.store.select_keys(missing))
        return found

    def claim(self, key: str, payload: bytes) -> None:
        """Records a unique fact beside the events (``sale:<id>``, ``invoiced:<id>``).

        The key's primary key makes a racing duplicate lose at commit; the batch then runs again
        and the handler sees the fact through ``lookup``.
        """
        assert key not in self.keys, f"claimed twice: {key}"
        self.keys[key] = KeyRecord(key, "", payload)

    def refresh_cached(self) -> bool:
        """Catches up aggregates the current command read from the cache and nobody changed.

        Returns True if any had moved on (another process wrote them), so a rejection decided on
        the stale state must be decided again. Only the current command's reads matter: they
        are what the rejection was decided on.
        """
        moved = False
        for aggregate_id in [i for i in self._read if i in self._from_cache]:
            agg = self.touched[aggregate_id]
            if agg.pending_events:
                continue  # a stale write is caught by the version check at commit
            self._from_cache.discard(aggregate_id)
            original = self.pristine.get(aggregate_id)
            if original is not None:
                version = original.version
                self.engine.store.catch_up(original)
                if original.version == version:
                    continue
                fresh = original.clone()
            else:
                version = agg.version
                fresh = self.engine.store.catch_up(agg)
                if fresh.version == version:
                    continue
                self.engine.cache_put(fresh)
            self.touched[aggregate_id] = fresh
            self._read[aggregate_id] = (fresh, 0)
            moved = True
        return moved


class _GcPause:
    """Pauses Python's cyclic garbage collector while batches run (nested across threads).

    A batch allocates about ten tracked objects per command (model, event, outcome, key row,
    stored row, ...) that all live until its commit. The collector, started every 700
    allocations, scanned them again and again and promoted them, so that a full collection of
    every long-lived object in the process ran about once per batch: 8 µs of 30 per command
    (a quarter of the hot path, measured with 2,000-command batches). Reference counting still
    frees everything at once; cycles made meanwhile wait for the next collection after the
    batch. The collector is resumed only if it was running when the first pause began.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


GC_PAUSE = _GcPause()

ATOMIC_SIZE_MAX = 50_000
"""Bound on the commands of one atomic batch (one transaction, held in memory)."""


def _aborted(results: list[Result]) -> list[Result]:
    """The results of an atomic batch that was not recorded because of its first rejection."""
    first = next(i for i, r in enumerate(results) if isinstance(r, Rejected))
    return [
        r
        if isinstance(r, Rejected) or r.replayed
        else Rejected("batch_aborted", rejected_index=first)
        for r in results
    ]


GC_PAUSE_COMMANDS_MIN = 200
"""Batches at least this long pause the cyclic collector (shorter ones gain nothing from it)."""
CLOSE_WAIT_S = 60.0
"""Bound on how long ``close`` waits for queued commands to commit."""
PREPARE_INLINE_MAX = 32
"""``aexecute_many`` parses at most this many commands in the event loop; more go to a thread."""


def _part_sizes(commands: int, group_max: int) -> list[int]:
    """How a non-atomic call of that many commands is cut into groups (parts) of at most
    ``group_max``: on a pipelined store the last parts shrink, by a tenth of a group each,
    down to six tenths (2,000 commands in groups of 500: 500, 450, 400, 350, 300).

    The write of the last part is the one that nothing overlaps: the caller waits for it
    alone, so it should be short. But a write has a fixed cost (its commit), and a part
    written while the next, smaller one is decided must not take longer than that decision,
    or the leader waits for it instead; hence the gentle steps. Taking turns with equal parts
    of 500, eight rounds of 2,000-command calls on PostgreSQL, the batched ratio to raw
    ``executemany`` went from 0.52 to 0.54 on average (docs/SCALING.md). Groups of under ten
    commands (tests) are cut evenly, the remainder last.
    """
    if commands <= group_max:
        return [commands]
    step = group_max // 10
    if not step:
        whole, rest = divmod(commands, group_max)
        return [group_max] * whole + ([rest] if rest else [])
    # From the last part back (300, 350, 400, 450 for groups of 500), then whole groups.
    steps = itertools.chain(
        (group_max - k * step for k in (4, 3, 2, 1)), itertools.repeat(group_max)
    )
    sizes: list[int] = []
    total = 0
    while total + (size := next(steps)) < commands:
        sizes.append(size)
        total += size
    left = commands - total  # the first part
    if left + sizes[-1] <= group_max:
        sizes[-1] += left  # no first part of a few commands when it fits the next
    else:
        sizes.append(left)
    return sizes[::-1]


def _gc_pause_for(commands: int) -> AbstractContextManager[None]:
    """The collector's pause for a batch of that many commands, or nothing for a short one."""
    return GC_PAUSE if commands >= GC_PAUSE_COMMANDS_MIN else nullcontext()


def _check_atomic_size(commands: Sequence[object]) -> None:
    if len(commands) > ATOMIC_SIZE_MAX:
        raise Rejected("invalid_command", reason=f"an atomic batch holds at most {ATOMIC_SIZE_MAX}")


async def _aprepare(
    commands: Sequence[Mapping[str, Any] | Command], now: datetime
) -> list[Prepared]:
    """Parses commands for an asyncio caller; a long list in a thread, not in the event loop."""
    if len(commands) <= PREPARE_INLINE_MAX:
        return prepare_many(commands, now)
    return await asyncio.to_thread(prepare_many, commands, now)


class _Wake:
    """What a waiting caller's thread blocks on: a bare lock, held until set.

    A ``threading.Event`` is a Condition: each wait makes a lock and joins a waiter list, and
    each set takes the Condition's own lock too. This VM pays about 15 µs of CPU per futex
    wake-up, and every caller is woken once per command: the bare lock cut about a tenth of
    the CPU of a command with 16 threads (docs/SCALING.md).
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """Wakes the waiter, or lets its next ``wait`` return at once (setting twice before
        it waits is setting once)."""
        if self._lock.locked():
            # Only the leading thread sets; were two ever to race, the lock is released.
            with contextlib.suppress(RuntimeError):
                self._lock.release()

    def wait(self) -> None:
        """Blocks until set (since the last wait)."""
        self._lock.acquire()


@dataclass(eq=False, slots=True)
class _Request:
    """One caller's commands waiting for the transaction that will carry them.

    A thread waits on ``wake`` (set when its results are in, or when it must lead); an asyncio
    caller is told through ``notify``, called in the leading thread.
    """

    batch: list[Prepared]
    atomic: bool
    wake: _Wake | None = None
    notify: Callable[[_Request], None] | None = None
    results: list[Result] | None = None
    error: BaseException | None = None
    done: bool = False
    lead: bool = False
    after: _Request | None = None
    """The same caller's previous part: if it fails, this one fails with it, unrun."""
    unparsed: Sequence[Mapping[str, Any] | Command] = ()
    """Commands parsed only when the request is taken (``ready``): a long ``execute_many``
    parses each part while the database writes the one before."""
    now: datetime | None = None

    @property
    def size(self) -> int:
        """How many commands it carries (parsed or not)."""
        return len(self.unparsed) or len(self.batch)

    def ready(self) -> bool:
        """Parses the commands left unparsed; False (and the caller told) if that failed."""
        if self.unparsed:
            assert self.now is not None
            try:
                self.batch = prepare_many(self.unparsed, self.now)
            except Exception as exc:  # a validator's fault: this caller's alone
                self.deliver(None, exc)
                return False
            self.unparsed = ()
        return True

    def deliver(self, results: list[Result] | None, error: BaseException | None) -> None:
        """Hands the caller its results (or the error that stopped its transaction)."""
        self.results = results
        self.error = error
        self.done = True
        if self.wake is not None:
            self.wake.set()
        elif self.notify is not None:
            self.notify(self)
        # else: a leader's own request, delivered in its own thread


@dataclass(eq=False, slots=True)
class _Decided:
    """A group decided in one optimistic attempt, then sent to the store (``Engine._send``).

    Its events were taken off the aggregates when it was decided, so that the next group,
    decided on top of it while it is written, takes only its own.
    """

    group: list[_Request]
    batch: list[Prepared]
    tx: Tx
    results: list[Result]
    events: list[Event]
    due: list[Aggregate]
    """Aggregates due for a snapshot once it is recorded (nothing is decided on top of it)."""
    started: float
    sent: Sent | None = None
    stale: set[str] = field(default_factory=set)
    """Its aggregates that a decision made on top of it changed in place and then set aside:
    they are evicted, not kept, once it is recorded."""

    @property
    def writes(self) -> bool:
        """Whether it has anything to record."""
        return bool(self.events or self.tx.keys)


def wait_readable(fds: Sequence[int]) -> set[int]:
    """Waits until one of ``fds`` is readable (any descriptor number, unlike ``select``);
    returns those that are."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if ready:
            return ready


def _without_failed_parts(group: list[_Request]) -> list[_Request]:
    """The group, parsed, without the parts whose caller's previous part failed (they fail
    with it, unrun, as if the caller had stopped at the error) or that could not be parsed."""
    kept = []
    for request in group:
        failed = request.after.error if request.after is not None else None
        if failed is not None:
            request.deliver(None, failed)
        elif request.ready():
            kept.append(request)
    return kept


def _reraise(exc: BaseException) -> Sequence[int]:
    raise exc


def _settle_all(callers: list[tuple[asyncio.Future[list[Result]], _Request]]) -> None:
    """Resolves asyncio callers' futures in their loop (unless a caller gave up waiting)."""
    for future, request in callers:
        if future.cancelled():
            continue
        if request.error is not None:
            future.set_exception(request.error)
        else:
            assert request.results is not None
            future.set_result(request.results)


@dataclass(slots=True)
class Prepared:
    """A command parsed, with its keys and fingerprint, or the rejection of its input."""

    command: Command | None
    keys: tuple[str, ...] = ()
    fingerprint: str = ""
    rejection: Rejected | None = None
    raw_type: str = "?"


Result = Outcome | Rejected


_FIELD_NAME_CHARS_MAX = 100


def _field_name(part: str | int) -> str:
    """A location part of a field error; a name the caller made up (an unknown field) is cut
    and escaped, since it goes back to the caller and may hold anything."""
    text = str(part)
    if len(text) > _FIELD_NAME_CHARS_MAX or not text.isprintable():
        text = text[:_FIELD_NAME_CHARS_MAX].encode("unicode_escape").decode("ascii")
    return text


def validation_rejection(exc: ValidationError) -> Rejected:
    """``invalid_command`` (or ``invalid_rfc``) with field errors; input values are never echoed."""
    errors = []
    code = "invalid_command"
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(_field_name(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # pydantic's message quotes the type given, which may be anything at all.
            where, message = "type", "unknown or missing command type"
        # A missing RFC field is a malformed command, not a bad RFC.
        elif where.endswith(("rfc", "rfc_lock")) and error["type"] != "missing":
            code = "invalid_rfc"
        errors.append({"field": where, "message": message})
    return Rejected(code, errors=errors)


_FINGERPRINT_ENCODER = msgspec.json.Encoder(order="sorted")
COMMAND_TYPES = frozenset(
    member.model_fields["type"].default for member in get_args(get_args(AnyCommand)[0])
)
"""Every command type the ledger knows."""


def prepare(command: Mapping[str, Any] | Command, now: datetime) -> Prepared:
    """Parses a command once: its model, its keys and the fingerprint of the fields given.

    ``now`` is the ledger clock's time: no time in a command may lie more than a day after it.
    """
    raw_type = "?"
    try:
        # A plain dict first: ``isinstance`` against a model class or ``Mapping`` goes through
        # ABC machinery (~1 µs a command on the hot path).
        if type(command) is not dict and isinstance(command, Command):
            model = command
        else:
            if type(command) is dict or isinstance(command, Mapping):
                given_type = command.get("type")
                # Only a known type goes into the log line, never whatever the caller sent.
                if type(given_type) is str and given_type in COMMAND_TYPES:
                    raw_type = given_type
            model = COMMAND_ADAPTER.validate_python(command)
    except ValidationError as exc:
        return Prepared(None, rejection=validation_rejection(exc), raw_type=raw_type)
    except Rejected as exc:
        return Prepared(None, rejection=exc, raw_type=raw_type)
    return _prepared(model, now)


_COMMAND_LIST_ADAPTER: TypeAdapter[list[Any]] = TypeAdapter(list[AnyCommand])


def prepare_many(commands: Sequence[Mapping[str, Any] | Command], now: datetime) -> list[Prepared]:
    """``prepare`` of each command, in order.

    A list of plain dicts is validated in one call into pydantic (1.6 us a ConsumeStamp
    against 2.35 us one call each, on this machine); if any of them is invalid, each is
    parsed alone, so that each gets its own rejection, exactly as ``prepare`` gives it.
    """
    if len(commands) > 1 and all(type(c) is dict for c in commands):
        try:
            models = _COMMAND_LIST_ADAPTER.validate_python(commands)
        except (ValidationError, Rejected):
            pass  # parsed again one by one below, each for its own rejection
        else:
            return [_prepared(model, now) for model in models]
    return [prepare(c, now) for c in commands]


def _prepared(model: Command, now: datetime) -> Prepared:
    """A validated command with its keys and fingerprint, or the rejection of its times."""
    command_type: str = model.type  # type: ignore[attr-defined]
    late = time_errors(model, now, f"{command_type}.")
    if late:
        rejection = Rejected("invalid_command", errors=late)
        return Prepared(None, rejection=rejection, raw_type=command_type)
    keys = model.keys()
    fingerprint = ""
    if keys:
        given = given_fields(model)
        fingerprint = hashlib.blake2b(
            _FINGERPRINT_ENCODER.encode(given), digest_size=16
        ).hexdigest()
    return Prepared(model, keys, fingerprint, raw_type=command_type)


# A password never enters the fingerprint: an unsalted fast hash of it, kept forever in the key
# index, could be brute-forced offline. A retry with another password replays. A command's own
# ``secret_fields`` (a credit code, a NIP) are left out too; ``secret_fingerprint()`` stands in.
# Nor does the actor: it says who acts, not what is done, and it is checked before any replay
# is returned (a key stored before actors were required still replays for an authorised actor).
_NOT_FINGERPRINTED = frozenset({"idempotency_key", "password", "actor"})
_PLAIN_SERIALISATION: dict[type[Command], tuple[bool, frozenset[str]]] = {}


def _has_custom_serialisation(schema: object) -> bool:
    # pydantic keeps every custom serializer (field_serializer, PlainSerializer, ...) under a
    # "serialization" key of the core schema.
    if isinstance(schema, dict):
        return "serialization" in schema or any(
            _has_custom_serialisation(v) for v in schema.values()
        )
    if isinstance(schema, list | tuple):
        return any(_has_custom_serialisation(v) for v in schema)
    return False


def given_fields(model: Command) -> dict[str, Any]:
    """The fields the caller gave, as JSON values: what a command's fingerprint covers.

    Equal to ``model_dump(mode="json", exclude_unset=True)`` without the unfingerprinted
    fields, plus ``type``. When every given value is a ``str``, ``int``, ``bool`` or ``None``
    and the model has no custom serializer, JSON mode returns the values unchanged, so they are
    read straight from the model: the hot path (ConsumeStamp) then skips pydantic's serializer.
    """
    cls = type(model)
    known = _PLAIN_SERIALISATION.get(cls)
    if known is None:
        known = (
            not _has_custom_serialisation(cls.__pydantic_core_schema__),
            _NOT_FINGERPRINTED | cls.secret_fields,
        )
        _PLAIN_SERIALISATION[cls] = known
    plain, excluded = known
    if plain:
        values = model.__dict__
        given: dict[str, Any] = {}
        for name in model.model_fields_set:
            if name in excluded:
                continue
            value = values[name]
            if value is not None and type(value) not in (str, int, bool):
                break
            given[name] = value
        else:
            given["type"] = model.type  # type: ignore[attr-defined]
            if cls.secret_fields:
                given.update(model.secret_fingerprint())
            return given
    given = model.model_dump(mode="json", exclude_unset=True, exclude=set(excluded))
    given["type"] = model.type  # type: ignore[attr-defined]
    if cls.secret_fields:
        given.update(model.secret_fingerprint())
    return given


@dataclass
class Engine:
    """Executes commands; one per ``Ledger``, safe to share between threads."""

    store: Store
    clock: Clock
    on_commit: list[Callable[[Sequence[int]], None]] = field(default_factory=list)
    cache_size_max: int = CACHE_SIZE_MAX
    snapshot_interval: int = SNAPSHOT_INTERVAL
    password_cost: PasswordCost = "normal"  # noqa: S105  (a cost level, not a password)
    _cache: OrderedDict[str, Aggregate] = field(default_factory=OrderedDict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _day: tuple[datetime, datetime, date] | None = None
    network_masters: dict[str, str] = field(default_factory=dict)
    """Master of each account recorded before ``master_id`` existed (see ``commands/auth``)."""
    _queue: deque[_Request] = field(default_factory=deque)
    _queue_lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Condition = field(init=False)
    _leading: bool = False
    _closed: bool = False
    _committer_pool: ThreadPoolExecutor | None = None
    _hot: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _flight: _Decided | None = None
    """The group being written on a pipelined store (touched only by the leader)."""
    _unrecorded: set[str] = field(default_factory=set)
    """Aggregates whose cached state holds decisions not recorded yet (see ``current``)."""
    _arrivals: tuple[int, int] | None = None
    """A pipe a caller writes to when it queues while the leader waits for a write in flight
    (``_await_answer``), so that the leader decides its commands meanwhile."""
    _watching: bool = False
    """Whether the leader waits on ``_arrivals`` (the queue lock guards it)."""
    _told: list[tuple[asyncio.AbstractEventLoop, Any, _Request]] = field(default_factory=list)
    """asyncio callers served and not told yet (touched only by the leader: ``_tell_loops``)."""

    def __post_init__(self) -> None:
        self._idle = threading.Condition(self._queue_lock)

    def local_day(self, at: datetime) -> date:
        """``local_date(at)``, remembered until that local day ends (it is read per command)."""
        day = self._day
        if day is not None and day[0] <= at < day[1]:
            return day[2]
        today = local_date(at)
        start = datetime.combine(today, MIDNIGHT, MEXICO_CITY).astimezone(UTC)
        end = datetime.combine(today + timedelta(days=1), MIDNIGHT, MEXICO_CITY).astimezone(UTC)
        # Kept only if the bounds are that day's (a zone change at midnight would break them).
        if local_date(start) == today and local_date(end) == today + timedelta(days=1):
            self._day = (start, end, today)
        return today

    # Cache -----------------------------------------------------------------------------------

    def cache_get(self, aggregate_id: str) -> Aggregate | None:
        """The cached aggregate (most recently used first out of the bound)."""
        agg = self._cache.get(aggregate_id)
        if agg is not None:
            self._cache.move_to_end(aggregate_id)
        return agg

    def cache_put(self, aggregate: Aggregate) -> None:
        """Keeps an aggregate whose state matches what is recorded."""
        self._cache[aggregate.id] = aggregate
        self._cache.move_to_end(aggregate.id)
        while len(self._cache) > self.cache_size_max:
            self._cache.popitem(last=False)

    def in_flight(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate as the group being written left it, if it touched it (the next group
        is decided on that state, even if the cache has dropped it meanwhile)."""
        flight = self._flight
        return None if flight is None else flight.tx.touched.get(aggregate_id)

    def evict(self, aggregate_ids: Iterable[str]) -> None:
        """Forgets aggregates whose in-memory state may differ from what is recorded."""
        for aggregate_id in aggregate_ids:
            self._cache.pop(aggregate_id, None)

    # Reads -----------------------------------------------------------------------------------

    def current(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate as recorded now (cached state caught up with the store).

        An aggregate that a group being written (or decided on top of it) changed is read
        from the store instead: its cached state holds what may not be recorded yet.
        """
        with self._lock:
            if aggregate_id in self._unrecorded:
                return self.store.load(aggregate_id)
            agg = self.cache_get(aggregate_id)
            agg = self.store.load(aggregate_id) if agg is None else self.store.catch_up(agg)
            if agg is not None:
                self.cache_put(agg)
            return agg

    # Writes ----------------------------------------------------------------------------------

    def execute_many(
        self, commands: Sequence[Mapping[str, Any] | Command], *, atomic: bool = False
    ) -> list[Result]:
        """Runs commands in order in as few transactions as is safe; one result per command.

        Concurrent callers share transactions (group commit, ``_submit``). ``atomic``: one
        transaction for all of them alone, and if any is rejected none is recorded (the others
        get ``batch_aborted``). Otherwise, on a pipelined store, a long list is written in
        groups of at most ``PIPELINE_GROUP_MAX``, each sent while the next is decided.
        """
        if atomic:
            _check_atomic_size(commands)
            with _gc_pause_for(len(commands)):
                now = self.clock()
                return self._submit([_Request(prepare_many(commands, now), True)])
        if len(commands) == 1:  # ``execute``: nothing to split
            return self._submit([_Request([prepare(commands[0], self.clock())], False)])
        results: list[Result] = []
        remaining = iter(commands)
        part = self._group_max()
        while chunk := list(itertools.islice(remaining, BATCH_SIZE_MAX)):
            with _gc_pause_for(len(chunk)):
                now = self.clock()
                # The first part is parsed in the caller's thread, outside the commit in
                # flight; the later ones by whoever leads, each while the database writes
                # the part before it.
                bounds = list(itertools.accumulate(_part_sizes(len(chunk), part), initial=0))
                requests = [_Request(prepare_many(chunk[: bounds[1]], now), False)]
                requests += [
                    _Request([], False, unparsed=chunk[start:end], now=now)
                    for start, end in itertools.pairwise(bounds[1:])
                ]
                results.extend(self._submit(requests))
                # Dropped before the collector resumes: it then scans only what survives
                # the call (the outcomes), not the call's parsed commands too (~1 ms a call
                # of 2,000 on this machine).
                del requests
        return results

    async def aexecute_many(
        self, commands: Sequence[Mapping[str, Any] | Command], *, atomic: bool = False
    ) -> list[Result]:
        """``execute_many`` for asyncio: joins the same queue without blocking the event loop."""
        if atomic:
            _check_atomic_size(commands)
            return await self._asubmit(await _aprepare(commands, self.clock()), atomic=True)
        results: list[Result] = []
        for start in range(0, len(commands), BATCH_SIZE_MAX):
            chunk = commands[start : start + BATCH_SIZE_MAX]
            results.extend(await self._asubmit(await _aprepare(chunk, self.clock()), atomic=False))
        return results

    # Group commit ----------------------------------------------------------------------------
    #
    # Callers queue their prepared commands. One caller at a time leads: it takes every request
    # queued (up to BATCH_SIZE_MAX commands, PIPELINE_GROUP_MAX on a pipelined store) and runs
    # them as ONE group, in ONE transaction, while newcomers queue behind it; then it hands
    # each caller its own results and, once its own are done, passes the lead to the next
    # waiting thread. A caller alone leads at once (no added latency, no thread switch); under
    # load, each transaction carries what arrived during the previous one. asyncio callers are
    # led by a committer thread instead, so the event loop never waits for the database.
    #
    # On a pipelined store (PostgreSQL) a group is sent without waiting for the database
    # (``Store.record_later``), and the next group (queued already, or arriving while the
    # leader waits: ``_await_answer``) is decided meanwhile, on top of the state the first one
    # left (``_commit_next``): the database's work and ours overlap. The next group is sent
    # only once the first is recorded; if the first lost a race or failed, what was decided on
    # top of it is undone and decided again afterwards. Groups that are not plain optimistic
    # decisions (atomic, hot aggregates, a partial rejection, a snapshot due) are run as
    # before, once nothing is in flight.

    def _submit(self, requests: list[_Request]) -> list[Result]:
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
            wake = None if lead else _Wake()
            for request in requests:
                request.wake = wake
            self._queue.extend(requests)
            self._leading = True
            self._arrived()
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

        def notify(request: _Request) -> None:
            # Told by the leader once it is done with the group (``_tell_loops``).
            self._told.append((loop, future, request))

        request = _Request(batch, atomic, None, notify)
        with self._queue_lock:
            self._check_open()
            self._queue.append(request)
            if self._leading:
                self._arrived()
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
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, _Request]]] = {}
        for loop, future, request in told:
            by_loop.setdefault(loop, []).append((future, request))
        for loop, callers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, callers)
            except RuntimeError:
                # The callers' loop closed while their commands were committed: nobody is
                # left to tell. What was recorded stays recorded; a retry replays it.
                log.warning("caller_gone", commands=sum(r.size for _, r in callers))

    def _lead(self, own: list[_Request] | None) -> None:
        """Commits queued groups until ``own`` are done (without: until nothing is left)."""
        try:
            while own is None or not all(r.done for r in own):
                # Before the queue is looked at: once nobody leads, another thread may.
                self._tell_loops()
                group = self._next_group()
                if group:
                    self._commit_next(group)
                elif self._flight is not None:
                    if not self._await_answer(self._flight):
                        self._land(None)
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

    def _next_group(self) -> list[_Request]:
        """The next requests to commit together, or none (and, unless a group is still being
        written, nobody leads any more)."""
        with self._queue_lock:
            if not self._queue:
                if self._flight is None:
                    self._leading = False
                    self._idle.notify_all()
                return []
            first = self._queue.popleft()
            if first.atomic:
                return [first]  # an atomic batch shares its transaction with nobody
            return [first, *self._take_queued(first.size, self._group_max())]

    def _take_queued(self, size: int, limit: int) -> list[_Request]:
        """The queued non-atomic requests that fit with ``size`` commands in ``limit`` (the
        queue lock is held)."""
        taken: list[_Request] = []
        while self._queue:
            head = self._queue[0]
            if head.atomic or size + head.size > limit:
                break
            taken.append(self._queue.popleft())
            size += head.size
        return taken

    def _arrived(self) -> None:
        """Wakes the leader if it waits for an answer (the queue lock is held)."""
        if self._watching:
            self._watching = False
            assert self._arrivals is not None
            os.write(self._arrivals[1], b"\0")

    def _await_answer(self, flight: _Decided) -> bool:
        """Waits until the group in flight is answered, or a caller queues: True for the
        latter (its commands are then decided while the database still works)."""
        fileno = flight.sent.fileno if flight.sent is not None else None
        if fileno is None:
            return False
        with self._queue_lock:
            if self._queue:
                return True
            if self._arrivals is None:
                self._arrivals = os.pipe()
                os.set_blocking(self._arrivals[0], False)
            self._watching = True
        wake = self._arrivals[0]
        try:
            readable = wait_readable([fileno, wake])
        finally:
            with self._queue_lock:
                self._watching = False
        if wake in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 64)
        return fileno not in readable and bool(self._queue)

    def _group_max(self) -> int:
        return min(BATCH_SIZE_MAX, PIPELINE_GROUP_MAX) if self.store.pipelined else BATCH_SIZE_MAX

    def _hand_off(self) -> None:
        """Passes the lead to a waiting thread (one queued, else one whose group is being
        written), or to the committer thread."""
        with self._queue_lock:
            waiting: Iterable[_Request]
            if self._queue:
                waiting = self._queue
            elif self._flight is not None:
                waiting = self._flight.group
            else:
                self._leading = False
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

    def _commit_next(self, group: list[_Request]) -> None:
        """Commits a group, overlapping its write with the next decision when it can."""
        group = _without_failed_parts(group)
        if not group:
            return
        try:
            self._commit_or_send(group)
        except BaseException as exc:
            # A fault of the pipeline itself: the group's callers must not wait for ever.
            for request in group:
                if not request.done:
                    request.deliver(None, exc)
            raise

    def _commit_or_send(self, group: list[_Request]) -> None:
        flight = self._flight
        if group[0].atomic or not self.store.pipelined:
            # Atomic, or no database to overlap with: decided and written at once.
            if flight is not None:
                self._land(None)
            self._commit_group(group)
            return
        if flight is not None and flight.due:
            self._land(None)  # its snapshots must be of its own state: nothing on top of it
            flight = None
        batch = group[0].batch if len(group) == 1 else [p for r in group for p in r.batch]
        with self._lock, _gc_pause_for(len(batch)):
            decided, touched, hot = self._decide_group(group, batch)
        if flight is not None:
            if decided is None:
                flight.stale.update(touched)
            if not self._land(decided):
                decided = None  # decided on what was not recorded: undone
        elif decided is not None:
            self._send(decided)
        if decided is None:
            if self._flight is not None:
                self._land(None)
            with self._lock, contextlib.suppress(LedgerError):
                # What the undone decision had in hand was evicted: loaded again in one go
                # (if the database fails here, the group's own attempt says so).
                self._preload(touched)
            if hot:
                # Written under locks, one transaction at a time: as many as a transaction
                # takes go together (each locked transaction costs a few round trips).
                group += self._more_of_the_queue(sum(r.size for r in group))
            self._commit_group(group)

    def _more_of_the_queue(self, size: int) -> list[_Request]:
        """Queued non-atomic requests that fit in a transaction with ``size`` commands."""
        with self._queue_lock:
            return self._take_queued(size, BATCH_SIZE_MAX)

    def _decide_group(
        self, group: list[_Request], batch: list[Prepared]
    ) -> tuple[_Decided | None, list[str], bool]:
        """A plain optimistic decision of the group (none, and nothing changed, when the group
        must run as usual: hot aggregates, a partial rejection, a handler's fault), the
        aggregates it read, and whether it stopped at a hot one."""
        started = time.perf_counter()
        tx = Tx(self, pipelined=True)
        try:
            results = self._decide(batch, tx, {}, isolated=False)
        except BaseException as exc:
            self._discard(tx)
            if isinstance(exc, Exception):
                # Run again as usual (which reports a fault).
                return None, list(tx.touched), isinstance(exc, _HotAggregate)
            raise
        events, due = self._take_events(tx)
        self._unrecorded.update(tx.touched)
        decided = _Decided(group, batch, tx, results, events, due, started)
        return decided, list(tx.touched), False

    def _send(self, decided: _Decided) -> None:
        """Starts recording a decided group; it is in flight until ``_land``."""
        if decided.writes:
            try:
                decided.sent = self.store.record_later(
                    decided.events, list(decided.tx.keys.values())
                )
            except Exception as exc:  # a store's fault: the group fails when it lands
                decided.sent = Sent(functools.partial(_reraise, exc))
        self._flight = decided

    def _land(self, then: _Decided | None) -> bool:
        """Waits for the group in flight; if it was recorded, sends ``then`` (decided on top
        of it) and finishes it. If not, undoes ``then`` and runs the group again as usual.
        Returns whether ``then`` stands."""
        flight = self._flight
        assert flight is not None
        self._flight = None
        try:
            ids = flight.sent.answer() if flight.sent is not None else []
        except BaseException as exc:
            with self._lock:
                if then is not None:
                    self._discard(then.tx)
                    self._unrecorded.difference_update(then.tx.touched)
                self._unrecorded.difference_update(flight.tx.touched)
            if not isinstance(exc, Exception):
                with self._lock:
                    self._discard(flight.tx)
                for request in flight.group:
                    request.deliver(None, exc)
                raise
            self._commit_group(flight.group, lost=(flight.tx, exc))
            return False
        if then is not None:
            self._send(then)
        self._finish(flight, ids)
        return True

    def _finish(self, decided: _Decided, ids: Sequence[int]) -> None:
        """A recorded group: its aggregates cached as recorded, its log lines, its results."""
        with self._lock:
            if decided.writes:
                self._committed(decided.tx, decided.due)
                self.evict(decided.stale)
            if self._flight is None:
                self._unrecorded.clear()
            else:
                self._unrecorded.difference_update(
                    i for i in decided.tx.touched if i not in self._flight.tx.touched
                )
        self._log(decided.batch, decided.results, decided.started)
        try:
            if decided.writes:
                for callback in self.on_commit:
                    callback(ids)
        finally:
            # Recorded: its callers get their results even if a callback failed.
            start = 0
            for request in decided.group:
                end = start + len(request.batch)
                request.deliver(decided.results[start:end], None)
                start = end

    def _commit_group(
        self, group: list[_Request], lost: tuple[Tx, BaseException] | None = None
    ) -> None:
        """Runs a group's commands in one batch and gives each request its own results.

        ``lost``: the group's first attempt, and how its write failed (it was pipelined).
        """
        group = _without_failed_parts(group)
        if not group:
            return
        batch = group[0].batch if len(group) == 1 else [p for r in group for p in r.batch]
        try:
            with self._lock, _gc_pause_for(len(batch)):
                results = self._run(batch, atomic=group[0].atomic, lost=lost)
        except LedgerError as exc:
            # The database failed or a lock timed out: the transaction carried them all.
            for request in group:
                request.deliver(None, exc)
            return
        except Exception as exc:
            if len(group) > 1:
                # A fault in one command (a handler's bug) fails only its own caller.
                for request in group:
                    self._commit_group([request])
                return
            group[0].deliver(None, exc)
            return
        except BaseException as exc:
            for request in group:
                request.deliver(None, exc)
            raise
        start = 0
        for request in group:
            end = start + len(request.batch)
            request.deliver(results[start:end], None)
            start = end

    def _run(
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
        except _PartialRejection:
            return [r for one in batch for r in self._run_isolated(one)]

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
        with self._queue_lock:
            arrivals, self._arrivals = self._arrivals, None
        if arrivals is not None:
            for fd in arrivals:
                os.close(fd)

    # One batch -------------------------------------------------------------------------------

    def _run_isolated(self, one: Prepared) -> list[Result]:
        try:
            return self._run_batch([one], isolated=True)
        except _PartialRejection as exc:  # pragma: no cover - isolated runs never raise it
            raise AssertionError("isolated command raised a partial rejection") from exc

    def _run_batch(
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
        locked: set[str] | None = None
        unknown: CommitOutcomeUnknown | None = None
        first = 0
        if lost is not None:
            locked, unknown = self._after_loss(batch, *lost, None, None)
            first = 1
        for attempt in range(first, ATTEMPTS_MAX):
            if attempt > 1:
                # A locked attempt lost too: its commands reached an aggregate it had not
                # locked, or a key another aggregate's writer took. Back off a little.
                delay_max_s = min(RETRY_DELAY_MAX_S, RETRY_DELAY_BASE_S * 2**attempt)
                time.sleep(random.uniform(0, delay_max_s))  # noqa: S311
            started = time.perf_counter()
            tx = Tx(self, fresh=locked is not None)
            try:
                if locked is None:
                    results = self._decide(batch, tx, {}, isolated=isolated)
                    if not tx.pristine:
                        return self._write(batch, tx, results, self.store.record, started, atomic)
                    with self.store.locked(list(tx.touched)) as record:
                        if self._caught_up(tx):
                            self._discard(tx)
                            self._preload(tx.touched)
                            tx = self._fresh_tx(tx.touched)
                            stored_keys = self._stored_keys(batch)
                            results = self._decide(batch, tx, stored_keys, isolated=isolated)
                        return self._write(batch, tx, results, record, started, atomic)
                self._preload(locked)
                with self.store.locked(locked) as record:
                    tx = self._fresh_tx(locked)
                    stored_keys = self._stored_keys(batch)
                    results = self._decide(batch, tx, stored_keys, isolated=isolated)
                    return self._write(batch, tx, results, record, started, atomic)
            except BaseException as exc:
                locked, unknown = self._after_loss(batch, tx, exc, locked, unknown)
        raise ConcurrencyError(f"write conflicts persisted after {ATTEMPTS_MAX} attempts")

    def _after_loss(
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
        self._discard(tx)
        if isinstance(exc, WriteConflict):
            # Nothing was recorded (the store rolled the transaction back).
            self.mark_hot(tx.touched)
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

    def _preload(self, aggregate_ids: Iterable[str]) -> None:
        """Loads evicted aggregates before a locked attempt, so that under the lock each is
        only caught up (one short read) while the transaction waits."""
        missing = [i for i in aggregate_ids if i not in self._cache]
        for agg in self.store.load_many(missing).values():
            self.cache_put(agg)

    def _fresh_tx(self, aggregate_ids: Collection[str]) -> Tx:
        """An attempt under the lock of ``aggregate_ids``, their cached state caught up at once
        (one query on PostgreSQL, instead of one per aggregate as the attempt reaches it)."""
        tx = Tx(self, fresh=True)
        cached = [a for i in aggregate_ids if (a := self._cache.get(i)) is not None]
        self.store.catch_up_many(cached)
        tx.current.update(a.id for a in cached)
        return tx

    def _decide(
        self, batch: list[Prepared], tx: Tx, stored_keys: dict[str, KeyRecord], *, isolated: bool
    ) -> list[Result]:
        return [self._run_one(p, tx, stored_keys, isolated=isolated) for p in batch]

    def _stored_keys(self, batch: list[Prepared]) -> dict[str, KeyRecord]:
        return self.store.select_keys([k for p in batch for k in p.keys])

    def _caught_up(self, tx: Tx) -> bool:
        """Whether a hot aggregate the attempt decided on was written since (it is now current)."""
        originals = list(tx.pristine.values())
        versions = [original.version for original in originals]
        self.store.catch_up_many(originals)
        return any(o.version != v for o, v in zip(originals, versions, strict=True))

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
            self._discard(tx)
            self._log(batch, results, started)
            return _aborted(results)
        events, due = self._take_events(tx)
        if not events and not tx.keys:
            self._log(batch, results, started)
            return results
        notification_ids = record(events, list(tx.keys.values()))
        self._committed(tx, due)
        self._log(batch, results, started)
        for callback in self.on_commit:
            callback(notification_ids)
        return results

    # Hot aggregates --------------------------------------------------------------------------

    def is_hot(self, aggregate_id: str) -> bool:
        """Whether the aggregate lost a race in the last ``HOT_WINDOW_S`` seconds."""
        lost_at = self._hot.get(aggregate_id)
        return lost_at is not None and time.monotonic() - lost_at < HOT_WINDOW_S

    def mark_hot(self, aggregate_ids: Iterable[str]) -> None:
        """Remembers that these aggregates lost a race now."""
        now = time.monotonic()
        for aggregate_id in aggregate_ids:
            self._hot[aggregate_id] = now
            self._hot.move_to_end(aggregate_id)
        while len(self._hot) > HOT_SIZE_MAX:
            self._hot.popitem(last=False)

    def _discard(self, tx: Tx) -> None:
        """Forgets every aggregate an attempt touched, with its unrecorded events.

        The originals of hot aggregates stay cached: the attempt changed only their clones.
        """
        self.evict(i for i in tx.touched if i not in tx.pristine)
        for agg in tx.touched.values():
            agg.pending_events.clear()

    def _take_events(self, tx: Tx) -> tuple[list[Event], list[Aggregate]]:
        """The events an attempt made, taken off its aggregates (so that an attempt decided
        on top of them takes only its own), and the aggregates due for a snapshot once they
        are recorded."""
        events: list[Event] = []
        due: list[Aggregate] = []
        interval = self.snapshot_interval
        for agg in tx.touched.values():
            pending = agg.pending_events
            if pending:
                first = pending[0].originator_version
                if agg.version // interval > (first - 1) // interval:
                    due.append(agg)
                events.extend(pending)
                pending.clear()
        return events, due

    def _committed(self, tx: Tx, due: list[Aggregate]) -> None:
        for agg in tx.touched.values():
            self.cache_put(agg)
        if due:
            try:
                self.store.snapshot(due, tx.now)
            except LedgerError as exc:
                # A snapshot only speeds up loading; the events are recorded. Say so loudly.
                log.error("snapshot_failed", error=str(exc), aggregates=len(due))

    def _run_one(
        self, p: Prepared, tx: Tx, stored_keys: dict[str, KeyRecord], *, isolated: bool
    ) -> Result:
        if p.rejection is not None:
            return p.rejection
        command = p.command
        assert command is not None
        handler = HANDLERS.get(type(command))
        if handler is None:  # pragma: no cover - every command model has a handler
            return Rejected("invalid_command", reason=f"no handler for {p.raw_type}")
        tx.begin_command()
        try:
            # Before any replay: a repeat's first outcome is shown only to who may act.
            actor = authorise(command, tx)
        except Rejected as rejection:
            assert not tx.changed(), "authorise records nothing"
            tx.discard_created()
            return rejection
        replay = self._replay(p, tx, stored_keys)
        if replay is not None:
            return replay
        try:
            try:
                outcome = handler(command, tx)
            except Rejected:
                if not tx.changed() and tx.refresh_cached():
                    outcome = handler(command, tx)  # decided again on fresh state
                else:
                    raise
        except RecordedRejection as rejection:
            # A failed secret check: its events stay in the attempt and are recorded with it;
            # its keys are not claimed, so a retry is judged afresh (DESIGN §3.3).
            return rejection
        except Rejected as rejection:
            if tx.changed():
                if not isolated:
                    raise _PartialRejection from rejection
                self.evict(tx.touched)
                tx.touched.clear()
                tx.created.clear()
                # An isolated attempt holds this command alone: a fact it claimed before
                # rejecting must not be recorded either.
                tx.keys.clear()
            else:
                tx.discard_created()
            if p.keys and not any(k in stored_keys for k in p.keys):
                # The first attempt skips the key lookup (a used key fails the insert anyway),
                # but a repeat must never be judged afresh: a stamped CFDI retried after the
                # balance ran out still gets its first outcome.
                replay = self._replay(p, tx, self.store.select_keys(p.keys))
                if replay is not None:
                    return replay
            return rejection
        tx.record_actor(actor)
        for key in p.keys:
            tx.keys[key] = KeyRecord(key, p.fingerprint, outcome.encode())
        return outcome

    def _replay(self, p: Prepared, tx: Tx, stored_keys: dict[str, KeyRecord]) -> Result | None:
        command = p.command
        assert command is not None
        for key in p.keys:
            found = tx.keys.get(key) or stored_keys.get(key)
            if found is None:
                continue
            if found.fingerprint == p.fingerprint:
                first = Outcome.decode(found.outcome)
                return msgspec.structs.replace(first, replayed=True)
            code = (
                "already_exists"
                if command.creates and key.startswith("id:")
                else "idempotency_conflict"
                if key.startswith("key:")
                else command.conflict_code
            )
            return Rejected(code, key=key)
        return None

    def _log(self, batch: list[Prepared], results: list[Result], started: float) -> None:
        # One line per command (DESIGN §7); nothing is built when no handler wants INFO.
        if not log.is_enabled_for(logging.INFO):
            return
        info = log.info
        duration_ms = round((time.perf_counter() - started) * 1000 / max(len(batch), 1), 3)
        for p, result in zip(batch, results, strict=True):
            actor = p.command.actor if p.command is not None else None
            if isinstance(result, Rejected):
                info(
                    "command",
                    type=p.raw_type,
                    outcome="rejected",
                    code=result.code,
                    actor=actor,
                    duration_ms=duration_ms,
                )
            else:
                outcome = "replayed" if result.replayed else "ok"
                info(
                    "command",
                    type=p.raw_type,
                    outcome=outcome,
                    code=None,
                    actor=actor,
                    duration_ms=duration_ms,
                )
                if result.warnings and not result.replayed:
                    # What succeeded with a caveat (an automatic top-up that failed, an RFC
                    # check digit) gets its own line, so the command lines keep one shape.
                    log.warning(
                        "command_warning", type=p.raw_type, actor=actor, warnings=result.warnings
                    )
