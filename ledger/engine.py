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

import gc
import hashlib
import itertools
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar

import msgspec
from pydantic import ValidationError

from ledger.clock import MEXICO_CITY, Clock, local_date
from ledger.commands.auth import authorise
from ledger.commands.models import COMMAND_ADAPTER, Command
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
CACHE_SIZE_MAX = 50_000
"""Bound on aggregates kept in memory by one engine."""
SNAPSHOT_INTERVAL = 500
"""An aggregate is snapshotted every this many events, so long histories load fast."""
MIDNIGHT = datetime.min.time()
"""Where a local day starts."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An idempotency key as stored: the fingerprint of its command and its first outcome."""

    key: str
    fingerprint: str
    outcome: bytes


class WriteConflict(LedgerError):
    """Raised by a store when a write lost a race (version or key already taken)."""


class Store(Protocol):
    """What the engine needs from the event store (implemented in ``adapters/store.py``)."""

    def load(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate rebuilt from its snapshot and events, or None."""

    def catch_up(self, aggregate: Aggregate) -> Aggregate:
        """The aggregate advanced by events recorded after its version."""

    def select_keys(self, keys: Sequence[str]) -> dict[str, KeyRecord]:
        """The stored rows of the keys that were used."""

    def record(self, events: Sequence[Event], keys: Sequence[KeyRecord]) -> Sequence[int]:
        """Writes events and keys in one transaction; raises ``WriteConflict`` on a lost race."""

    def snapshot(self, aggregates: Iterable[Aggregate], at: datetime) -> None:
        """Stores snapshots of the aggregates' current state."""

    def has_events_of(self, topic: str) -> bool:
        """Whether any event of ``topic`` was recorded (a rare question: may scan)."""


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


class Tx:
    """The aggregates one attempt works on, and what it will record."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.touched: dict[str, Aggregate] = {}
        self.created: dict[str, Aggregate] = {}
        self.keys: dict[str, KeyRecord] = {}
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
            if agg is not None:
                self._from_cache.add(aggregate_id)
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
            agg = self.engine.store.catch_up(agg)  # in place: the cached object moves on
            self.touched[aggregate_id] = agg
            self._read[aggregate_id] = (agg, 0)
            self.engine.cache_put(agg)
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
            version = agg.version
            fresh = self.engine.store.catch_up(agg)
            self._from_cache.discard(aggregate_id)
            if fresh.version != version:
                self.touched[aggregate_id] = fresh
                self.engine.cache_put(fresh)
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


"""The process's pause of the cyclic collector during batches."""


@dataclass(slots=True)
class Prepared:
    """A command parsed, with its keys and fingerprint, or the rejection of its input."""

    command: Command | None
    keys: tuple[str, ...] = ()
    fingerprint: str = ""
    rejection: Rejected | None = None
    raw_type: str = "?"


Result = Outcome | Rejected


def validation_rejection(exc: ValidationError) -> Rejected:
    """``invalid_command`` (or ``invalid_rfc``) with field errors; input values are never echoed."""
    errors = []
    code = "invalid_command"
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"])
        # A missing RFC field is a malformed command, not a bad RFC.
        if where.endswith(("rfc", "rfc_lock")) and error["type"] != "missing":
            code = "invalid_rfc"
        errors.append({"field": where, "message": error["msg"]})
    return Rejected(code, errors=errors)


_FINGERPRINT_ENCODER = msgspec.json.Encoder(order="sorted")


def prepare(command: Mapping[str, Any] | Command) -> Prepared:
    """Parses a command once: its model, its keys and the fingerprint of the fields given."""
    raw_type = "?"
    try:
        if isinstance(command, Command):
            model = command
        else:
            raw_type = str(command.get("type", "?")) if isinstance(command, Mapping) else "?"
            model = COMMAND_ADAPTER.validate_python(command)
    except ValidationError as exc:
        return Prepared(None, rejection=validation_rejection(exc), raw_type=raw_type)
    except Rejected as exc:
        return Prepared(None, rejection=exc, raw_type=raw_type)
    keys = model.keys()
    fingerprint = ""
    if keys:
        given = given_fields(model)
        fingerprint = hashlib.blake2b(
            _FINGERPRINT_ENCODER.encode(given), digest_size=16
        ).hexdigest()
    return Prepared(model, keys, fingerprint, raw_type=model.type)  # type: ignore[attr-defined]


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

    def evict(self, aggregate_ids: Iterable[str]) -> None:
        """Forgets aggregates whose in-memory state may differ from what is recorded."""
        for aggregate_id in aggregate_ids:
            self._cache.pop(aggregate_id, None)

    # Reads -----------------------------------------------------------------------------------

    def current(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate as recorded now (cached state caught up with the store)."""
        with self._lock:
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

        ``atomic``: one transaction for all of them, and if any is rejected none is recorded (the
        others get ``batch_aborted``).
        """
        if atomic:
            return self._execute_atomic(commands)
        results: list[Result] = []
        remaining = iter(commands)
        while True:
            with GC_PAUSE:
                chunk = [prepare(c) for c in itertools.islice(remaining, BATCH_SIZE_MAX)]
                if not chunk:
                    return results
                with self._lock:
                    try:
                        results.extend(self._run_batch(chunk))
                    except _PartialRejection:
                        for one in chunk:
                            results.extend(self._run_isolated(one))

    def _execute_atomic(self, commands: Sequence[Mapping[str, Any] | Command]) -> list[Result]:
        if len(commands) > ATOMIC_SIZE_MAX:
            raise Rejected(
                "invalid_command", reason=f"an atomic batch holds at most {ATOMIC_SIZE_MAX}"
            )
        with GC_PAUSE:
            batch = [prepare(c) for c in commands]
            with self._lock:
                # Isolated decisions: a command that changed state and then rejected is simply
                # a rejection here, since any rejection aborts the whole batch anyway.
                return self._run_batch(batch, isolated=True, atomic=True)

    def _run_isolated(self, one: Prepared) -> list[Result]:
        try:
            return self._run_batch([one], isolated=True)
        except _PartialRejection as exc:  # pragma: no cover - isolated runs never raise it
            raise AssertionError("isolated command raised a partial rejection") from exc

    def _run_batch(
        self, batch: list[Prepared], *, isolated: bool = False, atomic: bool = False
    ) -> list[Result]:
        check_keys = False
        unknown: CommitOutcomeUnknown | None = None
        for attempt in range(ATTEMPTS_MAX):
            stored_keys: dict[str, KeyRecord] = {}
            tx = Tx(self)
            started = time.perf_counter()
            try:
                if check_keys:
                    wanted = [k for p in batch for k in p.keys]
                    stored_keys = self.store.select_keys(wanted)
                results = [self._run_one(p, tx, stored_keys, isolated=isolated) for p in batch]
                if atomic and any(isinstance(r, Rejected) for r in results):
                    self._discard(tx)
                    self._log(batch, results, started)
                    return self._record_failed_checks(batch, _aborted(results))
                events = [e for agg in tx.touched.values() for e in agg.pending_events]
                if not events and not tx.keys:
                    self._log(batch, results, started)
                    return results
                notification_ids = self.store.record(events, list(tx.keys.values()))
            except WriteConflict:
                # Nothing was recorded (the store rolled the transaction back).
                self._discard(tx)
                check_keys = True
                # Back off randomly and exponentially (full jitter): with several processes on
                # one hot aggregate, linear waits kept them colliding until the bound.
                delay_max_s = min(RETRY_DELAY_MAX_S, RETRY_DELAY_BASE_S * 2**attempt)
                time.sleep(random.uniform(0, delay_max_s))  # noqa: S311
                continue
            except CommitOutcomeUnknown as exc:
                self._discard(tx)
                if unknown is not None or not all(p.keys for p in batch if p.command is not None):
                    raise
                # Every command has a key, so running the batch once more is exactly once: a
                # command that was recorded finds its key and replays its first outcome, and
                # the key index refuses to record one twice even if the first commit is still
                # under way on the server.
                log.warning("commit_outcome_unknown", commands=len(batch), retried=True)
                unknown = exc
                check_keys = True
                continue
            except BaseException as exc:
                # Cached aggregates were changed in place: nothing of this attempt may survive it.
                self._discard(tx)
                if unknown is not None and isinstance(exc, InfrastructureError):
                    # The retry could not reach the database: the first commit stays unknown.
                    raise unknown from exc
                raise
            self._committed(tx, events)
            self._log(batch, results, started)
            for callback in self.on_commit:
                callback(notification_ids)
            return results
        raise ConcurrencyError(f"write conflicts persisted after {ATTEMPTS_MAX} attempts")

    def _record_failed_checks(self, batch: list[Prepared], results: list[Result]) -> list[Result]:
        """An aborted atomic batch still records its failed secret checks (DESIGN §3.3).

        Otherwise wrapping a guess in a batch that is bound to fail would make NIP guesses free.
        Each runs again alone and is decided afresh on what is recorded.
        """
        return [
            self._run_isolated(p)[0] if isinstance(r, RecordedRejection) else r
            for p, r in zip(batch, results, strict=True)
        ]

    def _discard(self, tx: Tx) -> None:
        """Forgets every aggregate an attempt touched, with its unrecorded events."""
        self.evict(tx.touched)
        for agg in tx.touched.values():
            agg.pending_events.clear()

    def _committed(self, tx: Tx, events: list[Event]) -> None:
        due: list[Aggregate] = []
        for agg in tx.touched.values():
            if agg.pending_events:
                first = agg.pending_events[0].originator_version
                if agg.version // self.snapshot_interval > (first - 1) // self.snapshot_interval:
                    due.append(agg)
                agg.pending_events.clear()
            self.cache_put(agg)
        if due:
            try:
                self.store.snapshot(due, tx.now)
            except LedgerError as exc:
                # A snapshot only speeds up loading; the events are recorded. Say so loudly.
                log.error("snapshot_failed", error=str(exc), aggregates=len(due))
        assert all(not a.pending_events for a in tx.touched.values()), len(events)

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
