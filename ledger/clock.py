"""The ledger's clock: every recorded movement carries its time; tests and simulations inject it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache, partial
from zoneinfo import ZoneInfo

MEXICO_CITY = ZoneInfo("America/Mexico_City")

Clock = Callable[[], datetime]
"""A clock returns the current time as an aware ``datetime``."""


system_clock: Clock = partial(datetime.now, UTC)
"""The machine's time in UTC: ``datetime.now(UTC)``, called with no Python frame of ours (the
ledger reads it once per transaction, and a caller alone makes one a command)."""


class ManualClock:
    """A clock that only moves when told to (tests, simulations, the demo)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        """The current manual time."""
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Moves the clock forward by ``delta`` and returns the new time."""
        if delta < timedelta(0):
            raise ValueError("time never runs backwards")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, at: datetime) -> None:
        """Moves the clock to ``at`` (never backwards)."""
        with self._lock:
            if at < self._now:
                raise ValueError("time never runs backwards")
            self._now = at


def local_date(at: datetime) -> date:
    """The calendar date of an aware ``datetime`` in Mexico City (the ledger's business day)."""
    return at.astimezone(MEXICO_CITY).date()


@lru_cache(maxsize=1024)
def date_text(day: date) -> str:
    """``day.isoformat()``, remembered: formatting a date costs more than the rest of an
    outcome, and a day's consumptions all name the same day."""
    return day.isoformat()


def parse_time(value: str | datetime) -> datetime:
    """An aware ``datetime`` from an ISO 8601 string with an offset (or an aware datetime)."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        raise ValueError("times need an offset (ISO 8601 with a zone)")
    return at
