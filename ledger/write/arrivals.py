"""The leader's wait for the answer to a write in flight, cut short when a caller queues.

On a pipelined store the leader sends a group's write and, with nobody queued, waits on the
database connection's socket. A caller that queues meanwhile writes a byte to a pipe the leader
waits on too, so that the leader decides the caller's commands while the database still works
(``pipeline``), instead of after the answer.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections import deque
from dataclasses import dataclass

from ledger.write.pipeline import Decided
from ledger.write.request import Request


@dataclass(eq=False)
class Arrivals:
    """The pipe between callers that queue and a leader that waits for an answer; one per
    group commit, sharing its queue and the lock that guards it."""

    queue: deque[Request]
    queue_lock: threading.Lock
    _pipe: tuple[int, int] | None = None
    """Made on the first wait (a store that is not pipelined never needs it)."""
    _poller: select.poll | None = None
    """What the leader waits on: the pipe's end, registered when the pipe is made, and the
    socket of the last wait (``_socket``), so that a wait on the same socket registers
    nothing (a poll made and registered anew, as ``wait_readable`` does, costs about 3,500
    instructions a wait more)."""
    _socket: int | None = None
    _watching: bool = False
    """Whether the leader waits on ``_pipe`` (``queue_lock`` guards it)."""

    def arrived(self) -> None:
        """Wakes the leader if it waits for an answer (the queue lock is held)."""
        if self._watching:
            self._watching = False
            assert self._pipe is not None
            os.write(self._pipe[1], b"\0")

    def await_answer(self, flight: Decided) -> bool:
        """Waits until the group in flight is answered, or a caller queues: True for the
        latter (its commands are then decided while the database still works)."""
        fileno = flight.sent.fileno if flight.sent is not None else None
        if fileno is None:
            return False
        with self.queue_lock:
            if self.queue:
                return True
            if self._pipe is None:
                self._pipe = os.pipe()
                os.set_blocking(self._pipe[0], False)
                self._poller = select.poll()
                self._poller.register(self._pipe[0], select.POLLIN)
                self._socket = None
            self._watching = True
            poller = self._poller
            assert poller is not None  # made with the pipe
            if fileno != self._socket:
                if self._socket is not None:
                    poller.unregister(self._socket)
                poller.register(fileno, select.POLLIN)
                self._socket = fileno
        wake = self._pipe[0]
        try:
            # As ``wait_readable``: until one of them has an event.
            readable: set[int] = set()
            while not readable:
                readable = {fd for fd, _ in poller.poll()}
        finally:
            with self.queue_lock:
                self._watching = False
        if wake in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 64)
        return fileno not in readable and bool(self.queue)

    def close(self) -> None:
        """Closes the pipe, if one was made (once nobody leads)."""
        with self.queue_lock:
            pipe, self._pipe = self._pipe, None
            self._poller = self._socket = None
        if pipe is not None:
            for fd in pipe:
                os.close(fd)
