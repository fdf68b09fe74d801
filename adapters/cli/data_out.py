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
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from adapters.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    add_command,
    error,
    fail,
    follow_arguments,
    url_option,
    views_url_option,
    whole_number,
)
from adapters.publish import (
    EXCHANGE_DEFAULT,
    STREAM_DEFAULT,
    SUBJECT_PREFIX_DEFAULT,
    open_target,
)
from adapters.storage.views import LogWatcher, fast_notification_source
from ledger.api import Ledger
from ledger.errors import LedgerError, Rejected
from ledger.outbound.networks import Networks
from ledger.outbound.publisher import (
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    Publisher,
    log_origin,
)
from ledger.outbound.tracking import Tracking
from ledger.projections.runner import ProjectionFailed, Projector

# Kept here rather than imported, so that pyarrow loads only when `export` runs
# (adapters/export/parquet.py's PAGE_SIZE_DEFAULT and PAGE_SIZE_MAX; a test checks they agree).
EXPORT_PAGE_SIZE_DEFAULT = 50_000
EXPORT_PAGE_SIZE_MAX = 1_000_000


POSITIONS = "the views and of the publishers' positions"
"""What ``--views-url`` names for ``publish`` and ``export``."""
_page_size = whole_number("_page_size", 1, PAGE_SIZE_MAX)


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
    views_url_option(publish, POSITIONS)
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
    follow_arguments(publish, "keep publishing new events")
    publish.add_argument(
        "--page-size",
        type=_page_size,
        default=PAGE_SIZE_DEFAULT,
        help=f"events per batch sent and confirmed before the position moves (1..{PAGE_SIZE_MAX})",
    )
    publish.set_defaults(func=run_publish)
    _add_export(commands)


def only_view(lg: Ledger, name: str | None) -> None:
    """Narrows ``lg``'s projector to the view ``name`` (``--view``; None: every view)."""
    if name is None:
        return
    projector = lg.views.projector
    chosen = [view for view in projector.views if view.name == name]
    if not chosen:
        known = ", ".join(view.name for view in projector.views)
        raise Rejected("invalid_command", field="view", reason=f"no view {name} (views: {known})")
    lg.views.projector = Projector(projector.database, projector.source, projector.decode, chosen)


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
                fast_notification_source(lg.store),
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


_export_page_size = whole_number("_export_page_size", 1, EXPORT_PAGE_SIZE_MAX)


def _add_export(commands: Any) -> None:
    """``export``."""
    export = add_command(
        commands,
        "export",
        "write the log, its postings and every view as Parquet files",
        "Writes DIR/events/ (one row per event: notification id, originator id and version,\n"
        "topic, the decoded type, actor, recorded_at, master_id, and data: its fields without\n"
        "secrets, instead of the stored state), DIR/postings/ (one row per leg:\n"
        "notification_id, recorded_at, holder_id, unit, delta, ref, counterpart, actor,\n"
        "event_type, master_id) and one folder per view table, typed (int64 credits and\n"
        "centavos, UTC timestamps), as of the views' position (brought up to date first).\n"
        "DIR/manifest.json holds the last exported notification id; --since-last appends only\n"
        "the events after it and rewrites the views. A crash mid-export leaves the previous\n"
        "manifest and files valid. DuckDB, pandas and polars read the folders as they are.",
        [
            "ledger export --format parquet exports/",
            "ledger export --format parquet exports/ --since-last"
            " --url postgresql://postgres@db/ledger",
            'duckdb -c "SELECT holder_id, unit, sum(delta)'
            " FROM 'exports/postings/*.parquet' GROUP BY ALL\"",
        ],
    )
    url_option(export)
    views_url_option(export, POSITIONS)
    export.add_argument("directory", metavar="DIR", help="where the export lives (made if missing)")
    export.add_argument("--format", choices=("parquet",), default="parquet", help="the file format")
    export.add_argument(
        "--since-last",
        action="store_true",
        help="append what is new since DIR's manifest (default: export everything again)",
    )
    export.add_argument(
        "--page-size",
        type=_export_page_size,
        default=EXPORT_PAGE_SIZE_DEFAULT,
        help=f"events per part file (1..{EXPORT_PAGE_SIZE_MAX})",
    )
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """``ledger export``."""
    # pyarrow loads only for this command.
    from adapters.export.parquet import ParquetExport  # noqa: PLC0415

    try:
        with Ledger.open(
            getattr(args, "url", None), projections="off", views_url=args.views_url
        ) as lg:
            try:
                lg.views.catch_up()
            except ProjectionFailed as exc:
                # The export is then as of the event before it, consistent with the views.
                sys.stderr.write(f"export: the views stop before an event: {exc}\n")
            projector = lg.views.projector
            report = ParquetExport(
                Path(args.directory),
                fast_notification_source(lg.store),
                projector.decode,
                Networks(lg.views.database),
                lg.views.database,
                [table for view in projector.views for table in view.tables],
                [view.name for view in projector.views],
                page_size=args.page_size,
            ).run(since_last=args.since_last)
    except LedgerError as exc:
        return fail("export", exc)
    except OSError as exc:
        return error("export", f"{args.directory}: {exc.strerror or exc}", EXIT_ERROR)
    sys.stdout.write(
        f"exported notifications {report.first_notification_id:,} to"
        f" {report.last_notification_id:,}: {report.events:,} events, {report.postings:,}"
        f" postings, {len(report.view_rows)} view tables, in {report.directory}\n"
    )
    return EXIT_OK
