"""The publisher's loop against a target kept in memory: order, retries, never a skip."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from adapters.storage.views import event_decoder, notification_source
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.outbound.message import Outgoing
from ledger.outbound.networks import Networks
from ledger.outbound.publisher import Publisher, TargetRefused, TargetUnavailable
from ledger.outbound.tracking import PositionMoved, Tracking
from tests.support import consume, network_ledger


class Broker:
    """What a broker received, in order, and the failures it is told to answer."""

    def __init__(self, *, fail_sends: int = 0, fail_opens: int = 0, resume: int = 0) -> None:
        self.received: list[int] = []
        self.batches: list[int] = []
        self.fail_sends = fail_sends
        self.fail_opens = fail_opens
        self.resume = resume
        self.opens = 0


class MemoryTarget:
    """A target whose broker is a list; it keeps half of a failed batch, as a broker may."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @property
    def name(self) -> str:
        return "memory:test"

    async def open(self, origin: str, position: int) -> int:
        self.broker.opens += 1
        if self.broker.fail_opens:
            self.broker.fail_opens -= 1
            raise TargetUnavailable("connection refused")
        return max(position, self.broker.resume)

    async def send(self, messages: Sequence[Outgoing]) -> None:
        ids = [m.notification_id for m in messages]
        if self.broker.fail_sends:
            self.broker.fail_sends -= 1
            self.broker.received += ids[: len(ids) // 2]
            raise TargetUnavailable("acks timed out")
        self.broker.received += ids
        self.broker.batches.append(len(ids))

    async def close(self) -> None:
        pass


def _publisher(lg: Ledger, broker: Broker, *, page_size: int = 10) -> Publisher:
    return Publisher(
        notification_source(lg.store),
        event_decoder(lg.store),
        Networks(lg.views.database),
        Tracking(lg.views.database, "memory:test"),
        MemoryTarget(broker),
        origin="test",
        page_size=page_size,
        backoff_s_first=0.01,
        backoff_s_max=0.02,
    )


def _run(publisher: Publisher) -> int:
    return asyncio.run(publisher.run(asyncio.Event()))


@pytest.fixture
def lg(clock: ManualClock):  # type: ignore[no-untyped-def]
    with network_ledger(clock, cti_stamps=40) as ledger:
        ledger.execute_many([consume() for _ in range(25)])
        yield ledger


def _head(lg: Ledger) -> int:
    return len(lg.store.stored_events())  # type: ignore[union-attr]


def test_every_event_goes_once_in_order_in_batches(lg: Ledger) -> None:
    """The broker gets every notification id once, in order, at most a page per batch."""
    broker = Broker()
    publisher = _publisher(lg, broker, page_size=10)
    assert _run(publisher) == _head(lg)
    assert broker.received == list(range(1, _head(lg) + 1))
    assert max(broker.batches) == 10
    assert Tracking(lg.views.database, "memory:test").position() == _head(lg)
    assert lg.status()["publishers"][0]["lag_events"] == 0


def test_a_second_run_sends_only_what_is_new(lg: Ledger) -> None:
    """The position is kept: the next run starts after it."""
    _run(_publisher(lg, Broker()))
    lg.execute_many([consume() for _ in range(3)])
    broker = Broker()
    assert _run(_publisher(lg, broker)) == 3
    assert broker.received == list(range(_head(lg) - 2, _head(lg) + 1))


def test_a_failed_batch_is_sent_again_and_nothing_is_skipped(lg: Ledger) -> None:
    """Failures are retried (the same batch); deduplicated, the broker holds the log in order."""
    broker = Broker(fail_sends=3, fail_opens=2)
    _run(_publisher(lg, broker))
    first_seen = list(dict.fromkeys(broker.received))
    assert first_seen == list(range(1, _head(lg) + 1))
    assert len(broker.received) - len(first_seen) <= 3 * 10
    assert broker.opens == 6  # the first, two refused, one after each failed send


def test_the_last_error_shows_in_status_until_a_batch_goes_through(lg: Ledger) -> None:
    """``status`` names the error and counts the failures while the broker is down."""
    broker = Broker(fail_opens=1_000_000)
    publisher = _publisher(lg, broker)

    async def run_for_a_while() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        while broker.opens < 4:
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(run_for_a_while())
    (status,) = lg.status()["publishers"]
    assert status["position"] == 0
    assert status["lag_events"] == _head(lg)
    assert status["error"] == "connection refused"
    assert status["failures"] >= 3
    broker.fail_opens = 0
    _run(publisher)
    (status,) = lg.status()["publishers"]
    assert (status["position"], status["error"], status["failures"]) == (_head(lg), None, 0)


def test_a_target_that_holds_messages_already_fast_forwards(lg: Ledger) -> None:
    """What the target proves it holds is not sent again."""
    broker = Broker(resume=30)
    _run(_publisher(lg, broker))
    assert broker.received == list(range(31, _head(lg) + 1))


def test_a_refusing_target_stops_the_publisher(lg: Ledger) -> None:
    """A refusal (a stream of another ledger) is raised, not retried."""

    class Refusing(MemoryTarget):
        async def open(self, origin: str, position: int) -> int:
            raise TargetRefused("stream of another ledger")

    publisher = _publisher(lg, Broker())
    publisher.target = Refusing(Broker())
    with pytest.raises(TargetRefused):
        _run(publisher)


def test_two_publishers_of_one_name_cannot_both_move_it(lg: Ledger) -> None:
    """The position moves only from where the publisher found it."""
    tracking = Tracking(lg.views.database, "memory:test")
    tracking.setup()
    tracking.advance(0, 5)
    with pytest.raises(PositionMoved):
        tracking.advance(0, 7)
    assert tracking.position() == 5


def test_messages_are_json_with_the_notification_id(lg: Ledger) -> None:
    """Bodies decode as JSON naming their notification."""
    sent: list[Outgoing] = []

    class Keeping(MemoryTarget):
        async def send(self, messages: Sequence[Outgoing]) -> None:
            sent.extend(messages)

    publisher = _publisher(lg, Broker())
    publisher.target = Keeping(Broker())
    _run(publisher)
    assert [json.loads(m.body)["notification_id"] for m in sent] == [
        m.notification_id for m in sent
    ]
