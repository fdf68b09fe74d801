"""AMQP 0-9-1 target (RabbitMQ): a durable topic exchange, routing key ``<master_id>.<type>``.

Chose aio-pika (over aiormq): the maintained asyncio client, so one event loop drives either
broker, and publisher confirms are futures that many publishes can await together; pika's
blocking channel would confirm one message per round trip. The publisher sends on aiormq's
channel underneath aio-pika's, whose lock keeps the publishes of a batch in order.

Messages are persistent, ``message_id`` ``<origin>:<notification id>``, ``content_type``
``application/json``, ``type`` the event type. A batch counts only once the broker confirmed
every message; after a crash or a lost connection the batch in flight is sent again with the
same ids (at most that tail is seen twice: consumers deduplicate by ``message_id``). An
unroutable message is dropped by the broker, as AMQP does: bind your queues before publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractConnection
from pamqp import commands as spec

from adapters.publish.describe import describe, where
from ledger.outbound.message import Outgoing, message_id, routing_key
from ledger.outbound.publisher import TargetUnavailable

CONNECT_TIMEOUT_S = 5.0
CONFIRM_TIMEOUT_S = 10.0
"""Bound on the wait for a batch's confirms before the batch counts as failed (and is resent)."""


class AmqpTarget:
    """Publishes to one topic exchange (declared durable if missing)."""

    def __init__(
        self, url: str, *, exchange: str = "ledger", confirm_timeout_s: float = CONFIRM_TIMEOUT_S
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.confirm_timeout_s = confirm_timeout_s
        self._connection: AbstractConnection | None = None
        self._channel: Any = None
        self._origin = ""

    @property
    def name(self) -> str:
        """``amqp:<exchange>``."""
        return f"amqp:{self.exchange}"

    async def open(self, origin: str, position: int) -> int:
        """Connects with publisher confirms and declares the exchange."""
        self._origin = origin
        try:
            self._connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
            channel = await self._connection.channel(publisher_confirms=True)
            await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            self._channel = await channel.get_underlay_channel()
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise TargetUnavailable(f"AMQP at {where(self.url)}: {describe(exc)}") from None
        return position

    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Publishes every message (in order, on one channel); waits for every confirm."""
        channel = self._channel
        if channel is None:
            raise TargetUnavailable("AMQP: not connected")
        tasks = []
        try:
            for message in messages:
                properties = spec.Basic.Properties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=message_id(self._origin, message.notification_id),
                    message_type=message.type,
                    app_id="ledger",
                )
                # Tasks start in creation order and queue on the channel's lock in that order.
                tasks.append(
                    asyncio.ensure_future(
                        channel.basic_publish(
                            message.body,
                            exchange=self.exchange,
                            routing_key=routing_key(message),
                            properties=properties,
                            mandatory=False,
                        )
                    )
                )
            results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=self.confirm_timeout_s)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
            raise TargetUnavailable(f"AMQP at {where(self.url)}: {describe(exc)}") from None
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        if not all(isinstance(result, spec.Basic.Ack) for result in results):
            raise TargetUnavailable(f"AMQP exchange {self.exchange}: a message was not confirmed")

    async def close(self) -> None:
        """Disconnects (a broken connection is simply dropped)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            # Already broken: nothing left to close.
            with contextlib.suppress(
                OSError, TimeoutError, aiormq.exceptions.AMQPError, RuntimeError
            ):
                await asyncio.wait_for(connection.close(), timeout=CONNECT_TIMEOUT_S)
