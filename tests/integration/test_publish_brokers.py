"""``ledger publish`` against real brokers: killed mid-stream, the stream still equals the log.

The publisher runs as its own process (``python -m ledger publish``) over a SQLite ledger of a
few thousand events and is killed with SIGKILL five times while it publishes, at growing
points of the stream; a last run finishes. Then the whole stream is read back: one message per
event, in notification order (JetStream: no duplicate at all; AMQP: after removing repeated
message ids, at most two pages of them per kill).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.brokers import AMQP_URL, Queue, Received, Stream
from tests.support import build_network, consume
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

CONSUMPTIONS = 2_500
PAGE_SIZE = 25
KILLS = 5
WAIT_S_MAX = 60.0


@pytest.fixture(scope="module")
def log_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite ledger of a network and ``CONSUMPTIONS`` stamps consumed (read-only here)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('publish') / 'ledger.db'}"
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    with Ledger.open(url, clock=clock, password_cost="fast", projections="off") as lg:
        build_network(lg, cti_stamps=CONSUMPTIONS)
        for _ in range(CONSUMPTIONS // 500):
            lg.execute_many([consume() for _ in range(500)])
    return url


def _log(url: str) -> list[tuple[int, str, int, str]]:
    """Every stored event: notification id, originator, version, type."""
    with Ledger.open(url, projections="off") as lg:
        rows = lg.views.projector.source.select_notifications(0, 100_000, inclusive_of_start=False)
    return [
        (int(r.id), str(r.originator_id), int(r.originator_version), r.topic.partition("#")[0])
        for r in rows
    ]


def _publish(url: str, views_url: str, *target: str, follow: bool = False) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "ledger",
        "publish",
        "--url",
        url,
        "--views-url",
        views_url,
        "--page-size",
        str(PAGE_SIZE),
        "--origin",
        "test-ledger",
        *target,
    ]
    if follow:
        command += ["--follow", "--interval", "0.2"]
    env = {**os.environ, "LEDGER_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _kill_mid_stream(start: callable, count: callable, total: int) -> int:  # type: ignore[valid-type]
    """Runs the publisher and kills it with SIGKILL ``KILLS`` times, each once the broker holds
    more than the next fraction of ``total``; returns how many kills hit a running process."""
    hits = 0
    for kill in range(1, KILLS + 1):
        process = start()
        threshold = total * kill // (KILLS + 3)  # the last kill with 3/8 of the log to go
        deadline = time.monotonic() + WAIT_S_MAX
        while count() <= threshold and process.poll() is None:
            assert time.monotonic() < deadline, "the publisher made no progress"
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hits += 1
        process.communicate()
    return hits


def _published_after_kills(
    log_url: str, tmp_path: Path, target: list[str], count: Callable[[], int]
) -> tuple[list[tuple[int, str, int, str]], str]:
    """The log, and the output of a full run to ``target`` after ``KILLS`` SIGKILLs mid-stream
    (``count``: what the broker holds), each kill and the full run checked."""
    views_url = f"sqlite:///{tmp_path / 'positions.db'}"
    log = _log(log_url)
    hits = _kill_mid_stream(lambda: _publish(log_url, views_url, *target), count, len(log))
    assert hits == KILLS
    finished = _publish(log_url, views_url, *target)
    out, err = finished.communicate(timeout=WAIT_S_MAX)
    assert finished.returncode == 0, err
    return log, out


def _check_in_order(received: list[Received], log: list[tuple[int, str, int, str]], key) -> None:  # type: ignore[no-untyped-def]
    assert len(received) == len(log)
    for message, (notification_id, originator, version, kind) in zip(received, log, strict=True):
        assert message.message_id == f"test-ledger:{notification_id}"
        assert message.key == key(kind)
        body = message.body
        assert (
            body["notification_id"],
            body["originator_id"],
            body["originator_version"],
            body["type"],
        ) == (notification_id, originator, version, kind)


def _network(kind: str) -> str:
    return "_" if kind.startswith("AdminProfile.") else "M"


def test_jetstream_holds_the_log_once_in_order_after_five_kills(
    log_url: str, tmp_path: Path, stream: Stream
) -> None:
    """Five SIGKILLs mid-stream, then a full run: the stream is the log, no gap, no duplicate."""
    target = ["--to", stream.url, "--stream", stream.name, "--subject-prefix", stream.prefix]
    log, out = _published_after_kills(log_url, tmp_path, target, stream.count)
    assert f"at notification {len(log)}" in out
    _check_in_order(stream.read(), log, lambda kind: f"{stream.prefix}.{_network(kind)}.{kind}")


def test_amqp_holds_the_log_in_order_with_at_most_the_unconfirmed_tail_again(
    log_url: str, tmp_path: Path, queue: Queue
) -> None:
    """Five SIGKILLs mid-stream: deduplicated by message id the queue is the log, in order;
    what came twice is at most two pages per kill, each time with the same body."""
    target = ["--to", AMQP_URL, "--exchange", queue.exchange]
    log, _ = _published_after_kills(log_url, tmp_path, target, queue.count)
    received = queue.read()
    first: dict[str, Received] = {}
    for message in received:
        if message.message_id in first:
            assert message.body == first[message.message_id].body
        else:
            first[message.message_id] = message
    # Per kill, at most the page in flight and the page whose position was being recorded.
    assert len(received) - len(first) <= KILLS * 2 * PAGE_SIZE
    _check_in_order(list(first.values()), log, lambda kind: f"{_network(kind)}.{kind}")


def test_a_broker_that_is_down_shows_in_status_and_nothing_is_skipped(
    log_url: str, tmp_path: Path, stream: Stream
) -> None:
    """With NATS unreachable the follower retries and ``status`` shows the error; once NATS
    answers it publishes everything, in order, and the error clears."""
    views_url = f"sqlite:///{tmp_path / 'positions.db'}"
    log = _log(log_url)
    port = TcpProxy(stream.url)
    free_port = port.port
    port.close()  # nothing listens there now: the broker is down
    target = [
        "--to",
        f"nats://127.0.0.1:{free_port}",
        "--stream",
        stream.name,
        "--subject-prefix",
        stream.prefix,
    ]
    process = _publish(log_url, views_url, *target, follow=True)
    try:
        with Ledger.open(log_url, projections="off", views_url=views_url) as lg:
            deadline = time.monotonic() + WAIT_S_MAX
            while not (publishers := lg.status()["publishers"]) or publishers[0]["failures"] < 2:
                assert time.monotonic() < deadline
                assert process.poll() is None
                time.sleep(0.05)
            (down,) = publishers
            assert down["name"] == f"nats:{stream.name}"
            assert (down["position"], down["lag_events"]) == (0, len(log))
            assert f"127.0.0.1:{free_port}" in down["error"]
            with TcpProxy(stream.url, port=free_port):
                while lg.status()["publishers"][0]["position"] < len(log):
                    assert time.monotonic() < deadline
                    assert process.poll() is None
                    time.sleep(0.05)
                (up,) = lg.status()["publishers"]
            assert (up["lag_events"], up["error"], up["failures"]) == (0, None, 0)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=WAIT_S_MAX)
    assert process.returncode == 0, err
    _check_in_order(stream.read(), log, lambda kind: f"{stream.prefix}.{_network(kind)}.{kind}")
