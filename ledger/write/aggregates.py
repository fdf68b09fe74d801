"""The aggregates one engine keeps in memory, and what it knows about them.

- A bounded LRU cache of aggregates as recorded (``get``, ``put``, ``evict``).
- The hot ones: aggregates that lost a race lately, written under their lock for a while.
- The unrecorded ones: aggregates whose cached state holds a decision still being written
  (``pipeline``), and the state the group being written left them in (``in_flight``).
- Two things the handlers read from the engine: the password hashing cost and the masters of
  accounts recorded before ``master_id`` existed (``ledger/commands/auth.py``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from ledger.clock import MEXICO_CITY, Clock, local_date
from ledger.domain import Aggregate
from ledger.passwords import PasswordCost
from ledger.write.ports import Store

CACHE_SIZE_MAX = 50_000
"""Bound on aggregates kept in memory by one engine."""
HOT_WINDOW_S = 10.0
"""An aggregate that lost a race is written under its lock for this long after."""
HOT_SIZE_MAX = 10_000
"""Bound on the hot aggregates one engine remembers."""
MIDNIGHT = datetime.min.time()
"""Where a local day starts."""


@dataclass
class Aggregates:
    """The aggregates of one engine in memory; ``lock`` guards them (and every decision)."""

    store: Store
    clock: Clock
    cache_size_max: int = CACHE_SIZE_MAX
    password_cost: PasswordCost = "normal"  # noqa: S105  (a cost level, not a password)
    lock: threading.RLock = field(default_factory=threading.RLock)
    network_masters: dict[str, str] = field(default_factory=dict)
    """Master of each account recorded before ``master_id`` existed (see ``commands/auth``)."""
    unrecorded: set[str] = field(default_factory=set)
    """Aggregates whose cached state holds decisions not recorded yet (see ``current``)."""
    in_flight_state: Mapping[str, Aggregate] = field(default_factory=dict)
    """The aggregates as the group being written left them (set by the pipeline)."""
    _cache: OrderedDict[str, Aggregate] = field(default_factory=OrderedDict)
    _hot: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _day: tuple[datetime, datetime, date] | None = None

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

    def get(self, aggregate_id: str) -> Aggregate | None:
        """The cached aggregate (most recently used first out of the bound)."""
        agg = self._cache.get(aggregate_id)
        if agg is not None:
            self._cache.move_to_end(aggregate_id)
        return agg

    def peek(self, aggregate_id: str) -> Aggregate | None:
        """The cached aggregate, without counting it as used."""
        return self._cache.get(aggregate_id)

    def put(self, aggregate: Aggregate) -> None:
        """Keeps an aggregate whose state matches what is recorded."""
        self._cache[aggregate.id] = aggregate
        self._cache.move_to_end(aggregate.id)
        while len(self._cache) > self.cache_size_max:
            self._cache.popitem(last=False)

    def in_flight(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate as the group being written left it, if it touched it (the next group
        is decided on that state, even if the cache has dropped it meanwhile)."""
        return self.in_flight_state.get(aggregate_id)

    def evict(self, aggregate_ids: Iterable[str]) -> None:
        """Forgets aggregates whose in-memory state may differ from what is recorded."""
        for aggregate_id in aggregate_ids:
            self._cache.pop(aggregate_id, None)

    def preload(self, aggregate_ids: Iterable[str]) -> None:
        """Loads evicted aggregates before a locked attempt, so that under the lock each is
        only caught up (one short read) while the transaction waits."""
        missing = [i for i in aggregate_ids if i not in self._cache]
        for agg in self.store.load_many(missing).values():
            self.put(agg)

    def catch_up_cached(self, aggregate_ids: Collection[str]) -> list[Aggregate]:
        """Catches up the cached ones of ``aggregate_ids`` with the store (one query on
        PostgreSQL, instead of one per aggregate); returns them."""
        cached = [a for i in aggregate_ids if (a := self._cache.get(i)) is not None]
        self.store.catch_up_many(cached)
        return cached

    # Reads -----------------------------------------------------------------------------------

    def current(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate as recorded now (cached state caught up with the store).

        An aggregate that a group being written (or decided on top of it) changed is read
        from the store instead: its cached state holds what may not be recorded yet.
        """
        with self.lock:
            if aggregate_id in self.unrecorded:
                return self.store.load(aggregate_id)
            agg = self.get(aggregate_id)
            agg = self.store.load(aggregate_id) if agg is None else self.store.catch_up(agg)
            if agg is not None:
                self.put(agg)
            return agg

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
