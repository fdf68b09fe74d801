"""``ledger publish`` and ``ledger export``: the log to a broker, the log and views to files.

Both follow the log as the views do (``--url`` may be a hot standby, ``--views-url`` where the
positions live). ``main.py`` registers them with ``register(commands)``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from adapters.cli.common import EXIT_OK, add_command, fail, url_option
from adapters.publish import (
    EXCHANGE_DEFAULT,
    STREAM_DEFAULT,
    SUBJECT_PREFIX_DEFAULT,
    open_target,
)
from adapters.storage.views import LogWatcher
from ledger.api import Ledger
from ledger.errors import LedgerError
from ledger.outbound.networks import Networks
from ledger.outbound.publisher import (
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    Publisher,
    log_origin,
)
from ledger.outbound.tracking import Tracking

FOLLOW_INTERVAL_S_DEFAULT = 1.0


def _views_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--views-url",
        default=None,
        help="database of the views and of the publishers' positions (default: the --url"
        " database); the log is then read from --url, which may be a read-only hot standby",
    )


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= PAGE_SIZE_MAX:
        raise argparse.ArgumentTypeError(f"1 to {PAGE_SIZE_MAX}")
    return value


def _interval(text: str) -> float:
    value = float(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError("between 0 and 60 seconds")
    return value


def register(commands: Any) -> None:
    """Adds ``publish`` and ``export`` to the ``ledger`` parser."""
    publish = add_command(
        commands,
        "publish",
        "publish every event, in order, to NATS JetStream or an AMQP exchange",
        "Follows the log from this publisher's tracked position and sends each event as one\n"
        "JSON message (notification id, recorded_at, originator, type, actor, postings, data;\n"
        "no secrets). NATS: subject <prefix>.<master_id>.<Aggregate>.<Event> on --stream, with\n"
        "Nats-Msg-Id <origin>:<notification id>. AMQP: topic exchange --exchange, routing key\n"
        "<master_id>.<Aggregate>.<Event>, persistent, message_id the same. The position moves\n"
        "only after the broker confirmed a batch; a crash resends at most that batch (JetStream\n"
        "drops it as duplicates). With the broker down it retries with a bounded backoff and\n"
        "`ledger status` shows the error. Without --follow it exits once caught up.",
        [
            "ledger publish --to nats://127.0.0.1:4222 --follow",
            "ledger publish --url postgresql://postgres@standby/ledger"
            " --to amqp://guest:guest@127.0.0.1:5672/ --exchange ledger --follow",
        ],
    )
    url_option(publish)
    _views_url_option(publish)
    publish.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="nats://HOST:PORT (JetStream) or amqp://USER:PASS@HOST:PORT/VHOST",
    )
    publish.add_argument(
        "--stream", default=STREAM_DEFAULT, help="NATS: the JetStream stream (made if missing)"
    )
    publish.add_argument(
        "--subject-prefix",
        default=SUBJECT_PREFIX_DEFAULT,
        help="NATS: first token of every subject (the stream made here captures PREFIX.>)",
    )
    publish.add_argument(
        "--exchange", default=EXCHANGE_DEFAULT, help="AMQP: the topic exchange (made if missing)"
    )
    publish.add_argument(
        "--origin",
        default=None,
        help="first part of every message id (default: a digest of the log's first event,"
        " the same on the primary and its standbys)",
    )
    publish.add_argument("--follow", action="store_true", help="keep publishing new events")
    publish.add_argument(
        "--interval",
        type=_interval,
        default=FOLLOW_INTERVAL_S_DEFAULT,
        help="seconds between polls when following (PostgreSQL also wakes on NOTIFY)",
    )
    publish.add_argument(
        "--page-size",
        type=_page_size,
        default=PAGE_SIZE_DEFAULT,
        help=f"events per batch sent and confirmed before the position moves (1..{PAGE_SIZE_MAX})",
    )
    publish.set_defaults(func=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    """``ledger publish``."""
    url = getattr(args, "url", None)
    try:
        with Ledger.open(url, projections="off", views_url=args.views_url) as lg:
            target = open_target(
                args.to,
                stream=args.stream,
                exchange=args.exchange,
                subject_prefix=args.subject_prefix,
            )
            projector = lg.views.projector
            origin = args.origin
            if origin is None:
                first = projector.source.select_notifications(0, 1, inclusive_of_start=False)
                origin = log_origin(first[0] if first else None)
            publisher = Publisher(
                projector.source,
                projector.decode,
                Networks(lg.views.database),
                Tracking(lg.views.database, target.name),
                target,
                origin=origin,
                page_size=args.page_size,
            )
            published = asyncio.run(_publish(publisher, url, args.follow, args.interval))
            sys.stdout.write(
                f"published {published:,} events to {target.name} (origin {origin}),"
                f" at notification {publisher.position}\n"
            )
    except LedgerError as exc:
        return fail("publish", exc)
    return EXIT_OK


async def _publish(publisher: Publisher, url: str | None, follow: bool, interval_s: float) -> int:
    """Runs the publisher until caught up, or until SIGINT/SIGTERM when following."""
    stop = asyncio.Event()
    waiting = threading.Event()  # ends a LISTEN/poll wait in its worker thread
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        stop.set()
        waiting.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, request_stop)
    watcher = LogWatcher(url, interval_s=interval_s) if follow else None

    async def wait() -> None:
        assert watcher is not None
        await asyncio.to_thread(watcher.wait, waiting)

    if follow:
        sys.stderr.write(f"publish: following new events to {publisher.target.name}\n")
        sys.stderr.flush()
    try:
        return await publisher.run(stop, follow=follow, wait=wait)
    finally:
        if watcher is not None:
            watcher.close()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)


def print_publishers(console: Console, publishers: list[dict[str, Any]]) -> None:
    """``ledger status``'s lines for the publishers (nothing when none ever ran)."""
    if not publishers:
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("publisher", "position", "lag events", "failed"):
        table.add_column(name, justify="left" if name == "publisher" else "right", no_wrap=True)
    for publisher in publishers:
        failed = f"{publisher['failures']:,} times" if publisher["error"] else "-"
        table.add_row(
            publisher["name"],
            f"{publisher['position']:,}",
            f"{publisher['lag_events']:,}",
            failed,
        )
    console.print(table)
    for publisher in publishers:
        if publisher["error"]:
            console.print(
                f"{publisher['name']}: last error at {publisher['error_at']}: {publisher['error']}",
                soft_wrap=True,
            )
