"""NATS JetStream target: subject ``<prefix>.<master_id>.<Aggregate>.<Event>``, one stream.

Chose nats-py: the NATS maintainers' own asyncio client, with JetStream's ``publish_async``
(many publishes in flight, each acknowledged by the stream) and headers.

Every message carries ``Nats-Msg-Id: <origin>:<notification id>`` (JetStream's duplicate window
drops a resend) and ``Nats-Expected-Last-Msg-Id`` naming the message before it. With that
second header the stream refuses a message whose predecessor is not its last one, so a message
lost in flight (a broker restart mid-batch) can never be overtaken by the ones after it: the
stream holds this ledger's events in notification order with no hole, and its last message
says exactly how far it goes. ``open`` reads that last message and resumes after it, even when
the publisher's tracked position is older (it was killed between the acks and the position's
commit) and the duplicate window has passed. The stream must therefore be this ledger's alone.
(No ``Nats-Expected-Stream``: JetStream refuses two streams with overlapping subjects, so the
subject already names the stream, and every header is paid for on each message.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StreamConfig

from adapters.publish.describe import describe, where
from ledger.outbound.message import Outgoing, message_id, routing_key
from ledger.outbound.publisher import TargetRefused, TargetUnavailable

CONNECT_TIMEOUT_S = 2.0
ACK_TIMEOUT_S = 10.0
"""Bound on the wait for a batch's acks before the batch counts as failed (and is resent)."""
DUPLICATE_WINDOW_S = 120.0
"""The duplicate window of a stream this target creates (JetStream's default)."""
WRONG_LAST_MSG_ID = 10070
"""JetStream's error code for a ``Nats-Expected-Last-Msg-Id`` that is not the stream's last."""


class JetStreamTarget:
    """Publishes to one JetStream stream (created with subjects ``<prefix>.>`` if missing)."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = "LEDGER",
        subject_prefix: str = "ledger",
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.ack_timeout_s = ack_timeout_s
        self._client: Client | None = None
        self._js: Any = None
        self._origin = ""
        self._last_id: str | None = None

    @property
    def name(self) -> str:
        """``nats:<stream>``."""
        return f"nats:{self.stream}"

    async def open(self, origin: str, position: int) -> int:
        """Connects, makes the stream if missing, and resumes after its last message."""
        self._origin = origin
        errors: list[Exception] = []

        async def keep(exc: Exception) -> None:
            errors.append(exc)

        try:
            # nats-py keeps trying a refused first connection: the wait is bounded here.
            self._client = await asyncio.wait_for(
                nats.connect(
                    self.url,
                    allow_reconnect=False,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    error_cb=keep,
                    disconnected_cb=_nothing,
                    closed_cb=_nothing,
                ),
                timeout=CONNECT_TIMEOUT_S,
            )
            self._js = self._client.jetstream(timeout=self.ack_timeout_s)
            try:
                info = await self._js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                info = await self._js.add_stream(
                    StreamConfig(
                        name=self.stream,
                        subjects=[f"{self.subject_prefix}.>"],
                        duplicate_window=DUPLICATE_WINDOW_S,
                    )
                )
            last = None
            if info.state.messages:
                stored = await self._js.get_msg(self.stream, seq=info.state.last_seq)
                last = (stored.headers or {}).get("Nats-Msg-Id")
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            reason = describe(errors[-1] if errors and isinstance(exc, TimeoutError) else exc)
            raise TargetUnavailable(f"NATS at {where(self.url)}: {reason}") from None
        return self._resume(last, position)

    def _resume(self, last: str | None, position: int) -> int:
        """Where to resume, from the stream's last message id (None: an empty stream)."""
        self._last_id = last
        if last is None:
            return position
        origin, _, number = last.rpartition(":")
        if origin != self._origin or not number.isdigit():
            raise TargetRefused(
                f"stream {self.stream} ends with message {last!r}, not one of this ledger"
                f" ({self._origin}): give each ledger a stream of its own (--stream)"
            )
        if int(number) < position:
            raise TargetRefused(
                f"stream {self.stream} ends at notification {number} but the publisher is at"
                f" {position}: messages were removed from the stream; publish to a new stream"
            )
        return int(number)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Publishes every message with its expected predecessor; waits for every ack."""
        if self._js is None:
            raise TargetUnavailable("NATS: not connected")
        prefix = self.subject_prefix
        previous = self._last_id
        futures = []
        try:
            for message in messages:
                headers = {"Nats-Msg-Id": message_id(self._origin, message.notification_id)}
                if previous is not None:
                    headers["Nats-Expected-Last-Msg-Id"] = previous
                futures.append(
                    await self._js.publish_async(
                        f"{prefix}.{routing_key(message)}",
                        message.body,
                        headers=headers,
                    )
                )
                previous = headers["Nats-Msg-Id"]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self.ack_timeout_s)
        except nats.js.errors.APIError as exc:
            if exc.err_code == WRONG_LAST_MSG_ID:
                raise TargetUnavailable(
                    f"NATS stream {self.stream}: a message before this batch did not arrive"
                    f" ({exc.description}); resuming after the stream's last message"
                ) from None
            raise TargetUnavailable(f"NATS stream {self.stream}: {describe(exc)}") from None
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise TargetUnavailable(f"NATS at {where(self.url)}: {describe(exc)}") from None
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
        self._last_id = previous

    async def close(self) -> None:
        """Disconnects; acks still pending are abandoned (the batch is resent)."""
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            # A connection already broken: nothing left to close.
            with contextlib.suppress(OSError, TimeoutError, nats.errors.Error):
                await client.close()


async def _nothing() -> None:
    """nats-py's connection callbacks: nothing to do."""
