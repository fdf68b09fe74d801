"""Follows the log and publishes every event, in order, never skipping one (DESIGN §10).

A page of notifications after the tracked position is read and decoded (in a worker thread,
while the page before it is being sent), each event becomes one ``Outgoing`` message, and the
whole page goes to the ``Target``, which returns only once the broker confirmed every message
(JetStream acks, AMQP publisher confirms). Only then does the position move, in the views'
database (committing while the next page is sent). A crash at any moment therefore resends at
most two pages (the one in flight, and the one whose position was being recorded), with the
same message ids (``<origin>:<notification id>``), which JetStream drops as duplicates.

When the target fails (the broker down, a timeout) the publisher records the error where
``ledger status`` shows it, waits (bounded, growing backoff), reconnects and sends the same page
again. It never moves past an event the target has not confirmed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.domain import Event
from ledger.errors import InfrastructureError, LedgerError
from ledger.logging import get_logger
from ledger.outbound.message import Outgoing, outgoing
from ledger.outbound.networks import Networks
from ledger.outbound.tracking import Tracking
from ledger.projections.runner import NotificationSource
from ledger.write.gc_pause import gc_pause_for

log = get_logger("ledger.outbound")

PAGE_SIZE_DEFAULT = 1_000
"""Events read, sent and confirmed per batch (the most a crash can make a target resend)."""
PAGE_SIZE_MAX = 20_000
BACKOFF_S_FIRST = 0.5
BACKOFF_S_MAX = 30.0
"""Bound on the wait between attempts while a target is down."""


class TargetUnavailable(InfrastructureError):
    """Raised by a target when the broker cannot be reached or did not confirm in time; the
    publisher waits and sends the same messages again."""


class TargetRefused(LedgerError):
    """Raised by a target when the broker refuses what it holds (a stream of another ledger,
    messages removed from it): sending again cannot help, so the publisher stops."""


class Target(Protocol):
    """Where messages go (``adapters/publish/``): one module per broker, like the stores."""

    @property
    def name(self) -> str:
        """The publisher's name in ``outbound_tracking`` (``nats:LEDGER``, ``amqp:ledger``)."""

    async def open(self, origin: str, position: int) -> int:
        """Connects and declares what it needs; returns the position to resume from.

        That is ``position``, or later when the target can prove the messages up to it are
        already there (a JetStream stream whose last message is this ledger's).
        """

    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Publishes ``messages`` in order; returns once the broker confirmed every one."""

    async def close(self) -> None:
        """Disconnects (calling it again, or before ``open``, does nothing)."""


def log_origin(first: Any | None) -> str:
    """The default origin of a log: a digest of its first stored event.

    The same on the primary and on every standby (the same first row), and different for two
    ledgers (the first event holds its recording instant to the microsecond).
    """
    if first is None:
        return "ledger"
    digest = hashlib.sha256()
    for part in (str(first.originator_id), str(first.originator_version), str(first.topic)):
        digest.update(part.encode("utf-8") + b"\n")
    digest.update(bytes(first.state))
    return f"ledger-{digest.hexdigest()[:12]}"


@dataclass(slots=True)
class _Page:
    """The messages after ``after``, up to ``last`` (``last == after``: nothing new)."""

    after: int
    last: int
    messages: list[Outgoing]


class Publisher:
    """Publishes the log to one target from its tracked position."""

    def __init__(
        self,
        source: NotificationSource,
        decode: Callable[[Any], Event],
        networks: Networks,
        tracking: Tracking,
        target: Target,
        *,
        origin: str,
        page_size: int = PAGE_SIZE_DEFAULT,
        backoff_s_first: float = BACKOFF_S_FIRST,
        backoff_s_max: float = BACKOFF_S_MAX,
    ) -> None:
        if not 1 <= page_size <= PAGE_SIZE_MAX:
            raise ValueError(f"page_size must be 1..{PAGE_SIZE_MAX}")
        if not 0 < backoff_s_first <= backoff_s_max <= 300:
            raise ValueError("backoffs must be 0 < first <= max <= 300 s")
        self.source = source
        self.decode = decode
        self.networks = networks
        self.tracking = tracking
        self.target = target
        self.origin = origin
        self.page_size = page_size
        self.backoff_s_first = backoff_s_first
        self.backoff_s_max = backoff_s_max
        self.published = 0
        self.position = 0
        self._committing: asyncio.Task[None] | None = None
        """The position's last move, committing while the next page is sent."""

    def _read(self, after: int) -> _Page:
        """The next page after ``after``, decoded into messages (runs in a worker thread)."""
        notifications = self.source.select_notifications(
            after, self.page_size, inclusive_of_start=False
        )
        if not notifications:
            return _Page(after, after, [])
        with gc_pause_for(len(notifications)):  # a page's objects all live until it is sent
            events = [self.decode(n) for n in notifications]
            masters = self.networks.masters(events)
            messages = [
                outgoing(int(n.id), event, master)
                for n, event, master in zip(notifications, events, masters, strict=True)
            ]
        return _Page(after, int(notifications[-1].id), messages)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        follow: bool = False,
        wait: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Publishes until caught up (or, with ``follow``, until ``stop``); returns how many.

        ``wait`` returns when new events may have arrived (LISTEN/NOTIFY or a poll interval).
        """
        self.networks.setup()
        self.position = await asyncio.to_thread(self.tracking.setup)
        await self._open(stop)
        log.info("publish_started", target=self.target.name, position=self.position)
        reading: asyncio.Task[_Page] | None = None
        try:
            while not stop.is_set():
                if reading is None:
                    reading = asyncio.create_task(asyncio.to_thread(self._read, self.position))
                page = await reading
                reading = None
                if page.after != self.position:  # the target fast-forwarded meanwhile
                    continue
                if not page.messages:
                    if not follow or wait is None:
                        break
                    await _until(wait(), stop)
                    continue
                # Read the next page while this one is sent and confirmed.
                reading = asyncio.create_task(asyncio.to_thread(self._read, page.last))
                if not await self._deliver(page, stop):
                    break
        finally:
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            try:
                await self._committed()
            finally:
                await self.target.close()
        log.info(
            "publish_stopped",
            target=self.target.name,
            position=self.position,
            published=self.published,
        )
        return self.published

    async def _deliver(self, page: _Page, stop: asyncio.Event) -> bool:
        """Sends the page until confirmed, then moves the position; False if stopped first."""
        backoff_s = self.backoff_s_first
        while True:
            messages = [m for m in page.messages if m.notification_id > self.position]
            try:
                if messages:
                    await self.target.send(messages)
                break
            except TargetUnavailable as exc:
                log.warning(
                    "publish_failed",
                    target=self.target.name,
                    position=self.position,
                    retry_in_s=backoff_s,
                    error=str(exc),
                )
                await asyncio.to_thread(self.tracking.record_error, str(exc))
                await self.target.close()
                if not await _sleep(backoff_s, stop):
                    return False
                backoff_s = min(backoff_s * 2, self.backoff_s_max)
                await self._open(stop)
                if stop.is_set():
                    return False
        # The move commits in a worker thread while the next page is sent; the one before it
        # must have committed first (a failed move raises here, stopping the publisher).
        await self._committed()
        self._committing = asyncio.create_task(
            asyncio.to_thread(self.tracking.advance, self.position, page.last)
        )
        self.published += len(messages)
        self.position = page.last
        log.debug("published", target=self.target.name, position=page.last, count=len(messages))
        return True

    async def _committed(self) -> None:
        """Waits for the position's last move to commit (raising what it raised)."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

    async def _open(self, stop: asyncio.Event) -> None:
        """Connects the target (retrying while it is unavailable); fast-forwards if it can."""
        backoff_s = self.backoff_s_first
        while not stop.is_set():
            try:
                resume = await self.target.open(self.origin, self.position)
            except TargetUnavailable as exc:
                log.warning(
                    "publish_connect_failed",
                    target=self.target.name,
                    retry_in_s=backoff_s,
                    error=str(exc),
                )
                await asyncio.to_thread(self.tracking.record_error, str(exc))
                await self.target.close()
                if not await _sleep(backoff_s, stop):
                    return
                backoff_s = min(backoff_s * 2, self.backoff_s_max)
                continue
            if resume > self.position:
                # The target already holds this ledger's messages up to ``resume``.
                await self._committed()
                await asyncio.to_thread(self.tracking.advance, self.position, resume)
                log.info(
                    "publish_fast_forwarded",
                    target=self.target.name,
                    position=self.position,
                    to=resume,
                )
                self.position = resume
            return


async def _sleep(seconds: float, stop: asyncio.Event) -> bool:
    """Waits ``seconds``; False if ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return True
    return False


async def _until(waiting: Awaitable[None], stop: asyncio.Event) -> None:
    """Waits for ``waiting`` or ``stop``, whichever comes first."""
    task = asyncio.ensure_future(waiting)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopping):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, stopping, return_exceptions=True)
