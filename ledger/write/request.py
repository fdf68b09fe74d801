"""A caller's commands waiting for the transaction that will carry them (group commit)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from ledger.commands.models import Command
from ledger.write import preparation
from ledger.write.preparation import Prepared, Result


class Wake:
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


class Request(msgspec.Struct, eq=False):
    """One caller's commands waiting for the transaction that will carry them.

    A thread waits on ``wake`` (set when its results are in, or when it must lead); an asyncio
    caller is told through ``notify``, called in the leading thread. A struct: one is made per
    call, and a dataclass of these many fields costs several times as much to make.
    """

    batch: list[Prepared]
    atomic: bool
    wake: Wake | None = None
    notify: Callable[[Request], None] | None = None
    results: list[Result] | None = None
    error: BaseException | None = None
    done: bool = False
    lead: bool = False
    after: Request | None = None
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
                self.batch = preparation.prepare_many(self.unparsed, self.now)
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


def without_failed_parts(group: list[Request]) -> list[Request]:
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


def deliver_each(group: list[Request], results: list[Result]) -> None:
    """Gives each request of a group its own slice of the group's results."""
    start = 0
    for request in group:
        end = start + len(request.batch)
        request.deliver(results[start:end], None)
        start = end
