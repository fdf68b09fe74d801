"""The cyclic garbage collector, paused while long batches run."""

from __future__ import annotations

import gc
import threading
from contextlib import AbstractContextManager, nullcontext

GC_PAUSE_COMMANDS_MIN = 200
"""Batches at least this long pause the cyclic collector (shorter ones gain nothing from it)."""


class GcPause:
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


GC_PAUSE = GcPause()


_NO_PAUSE: AbstractContextManager[None] = nullcontext()
"""Reused: a ``nullcontext`` may be entered any number of times, even at once."""


def gc_pause_for(commands: int) -> AbstractContextManager[None]:
    """The collector's pause for a batch of that many commands, or nothing for a short one."""
    return GC_PAUSE if commands >= GC_PAUSE_COMMANDS_MIN else _NO_PAUSE
