"""The message brokers the publisher tests talk to: NATS JetStream and RabbitMQ, for real.

They are found at ``$LEDGER_TEST_NATS`` (default ``nats://127.0.0.1:4222``) and
``$LEDGER_TEST_AMQP`` (default ``amqp://guest:guest@127.0.0.1:5672/``). A test that needs one
fails under ``CI=true`` when it does not answer, and is skipped loudly elsewhere. Every test uses
its own stream, subjects, exchange and queue, and deletes them afterwards.

``Stream`` and ``Queue`` read what a broker holds from synchronous test code, each on an event
loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import aio_pika
import nats
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
NATS_URL = os.environ.get("LEDGER_TEST_NATS", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("LEDGER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def _answers(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), timeout=3):
            return True
    except OSError:
        return False


def _require(url: str, default_port: int, what: str) -> str:
    if _answers(url, default_port):
        return url
    reason = f"no {what} at {url}"
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true: {reason}")
    print(f"\n\n*** SKIPPING {what.upper()} TESTS: {reason} ***\n")
    pytest.skip(f"SKIPPED LOUDLY (not under CI): {reason}")


@pytest.fixture(scope="session")
def nats_url() -> str:
    """A NATS server with JetStream."""
    return _require(NATS_URL, 4222, "NATS")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """A RabbitMQ server."""
    return _require(AMQP_URL, 5672, "RabbitMQ")


@dataclass(frozen=True)
class Received:
    """One message as a consumer sees it."""

    key: str
    """The subject (NATS) or routing key (AMQP)."""
    message_id: str
    body: dict[str, Any]


class Stream:
    """A JetStream stream of this test: ``name`` capturing ``prefix.>``, deleted on close."""

    def __init__(self, url: str) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.name = f"TEST_{suffix.upper()}"
        self.prefix = f"test_{suffix}"
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._client: Any = self._loop.run_until_complete(nats.connect(url))
        self._js = self._client.jetstream()

    def count(self) -> int:
        """Messages in the stream (0 before the publisher made it)."""

        async def count() -> int:
            try:
                info = await self._js.stream_info(self.name)
            except nats.js.errors.NotFoundError:
                return 0
            return int(info.state.messages)

        return self._loop.run_until_complete(count())

    def read(self) -> list[Received]:
        """Every message of the stream, in stream order."""

        async def read() -> list[Received]:
            info = await self._js.stream_info(self.name)
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                stored = await self._js.get_msg(self.name, seq=seq)
                found.append(
                    Received(stored.subject, stored.headers["Nats-Msg-Id"], _json(stored.data))
                )
            return found

        return self._loop.run_until_complete(read())

    def close(self) -> None:
        """Deletes the stream and disconnects."""

        async def close() -> None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self._js.delete_stream(self.name)
            await self._client.close()

        self._loop.run_until_complete(close())
        self._loop.close()


class Queue:
    """An exchange name of this test and a queue bound to all of it (``#``), deleted on close."""

    def __init__(self, url: str) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.exchange = f"test-ledger-{suffix}"
        self.name = f"test-ledger-{suffix}-all"
        self._loop = asyncio.new_event_loop()
        self._connection: Any = self._loop.run_until_complete(aio_pika.connect(url))

        async def declare() -> Any:
            channel = await self._connection.channel()
            exchange = await channel.declare_exchange(
                self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(self.name, durable=True)
            await queue.bind(exchange, "#")
            return channel, queue

        self._channel, self._queue = self._loop.run_until_complete(declare())

    def count(self) -> int:
        """Messages waiting in the queue."""

        async def count() -> int:
            declared = await self._channel.declare_queue(self.name, passive=True)
            return int(declared.declaration_result.message_count)

        return self._loop.run_until_complete(count())

    def read(self) -> list[Received]:
        """Every message waiting in the queue, in order (taken off it)."""

        async def read() -> list[Received]:
            found = []
            while (message := await self._queue.get(no_ack=True, fail=False)) is not None:
                found.append(Received(message.routing_key, message.message_id, _json(message.body)))
            return found

        return self._loop.run_until_complete(read())

    def close(self) -> None:
        """Deletes the queue and the exchange, and disconnects."""

        async def close() -> None:
            await self._channel.queue_delete(self.name)
            await self._channel.exchange_delete(self.exchange)
            await self._connection.close()

        self._loop.run_until_complete(close())
        self._loop.close()


def _json(data: bytes) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(data)
    return found


@pytest.fixture
def stream(nats_url: str) -> Iterator[Stream]:
    """A JetStream stream name and subject prefix of this test alone."""
    made = Stream(nats_url)
    yield made
    made.close()


@pytest.fixture
def queue(amqp_url: str) -> Iterator[Queue]:
    """An AMQP exchange name of this test alone and a queue that receives all of it."""
    made = Queue(amqp_url)
    yield made
    made.close()
