"""Data out beside its raw baselines, in one run (DESIGN §10).

    .venv/bin/python benchmarks/bench_out.py [--events 100000] [--rounds 3]

Writes a PostgreSQL history of ``--events`` events (``bench_rebuild.generate``: a network, then
stamp consumptions), then, in alternating rounds:

- ``publish``: ``Publisher`` (what ``ledger publish`` runs) from position 0 to the head into a
  fresh JetStream stream: reading pages from PostgreSQL, decoding, building the messages,
  awaiting each page's acks, moving the position;
- ``raw JetStream``: the same messages (bodies, subjects, ``Nats-Msg-Id``), built beforehand,
  published with ``publish_async`` into another fresh stream, acks awaited in batches of the
  same size: the broker's own rate, the ceiling;
- ``export``: ``ParquetExport._write_log`` (what ``ledger export`` runs for the log): reading,
  decoding and writing ``events/`` AND ``postings/`` Parquet parts;
- ``DuckDB COPY``: the same rows read from the events table (psycopg, one query), handed to
  DuckDB as Arrow, whose SQL turns each consumption's stored JSON into its two postings and
  ``COPY ... TO`` Parquet: DuckDB doing the postings alone.

Figures are medians over the rounds; the ratios are what DESIGN §10's targets read (publisher
at least 0.7 x raw JetStream, export of postings at least 0.5 x DuckDB's COPY).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import nats
import psycopg
import pyarrow as pa

from adapters.export.parquet import ParquetExport
from adapters.publish.jetstream import JetStreamTarget
from adapters.storage.views import event_decoder, fast_notification_source, notification_source
from benchmarks.bench_rebuild import generate
from ledger.api import Ledger
from ledger.outbound.message import message_id, outgoing, routing_key
from ledger.outbound.networks import Networks
from ledger.outbound.publisher import Publisher
from ledger.outbound.tracking import Tracking

PG = os.environ.get("LEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
NATS = os.environ.get("LEDGER_TEST_NATS", "nats://127.0.0.1:4222")
PAGE = 1_000
EXPORT_PAGE = 50_000


def _median(values: list[float]) -> float:
    return statistics.median(values)


async def _raw_jetstream(messages: list[tuple[str, bytes, str]], batch: int) -> float:
    """Seconds to publish ``messages`` to a fresh stream, acks awaited per ``batch``."""
    suffix = uuid.uuid4().hex[:8]
    client = await nats.connect(NATS)
    js = client.jetstream()
    stream = f"BENCH_RAW_{suffix.upper()}"
    await js.add_stream(name=stream, subjects=[f"benchraw{suffix}.>"])
    try:
        started = time.perf_counter()
        for first in range(0, len(messages), batch):
            futures = [
                await js.publish_async(
                    f"benchraw{suffix}.{subject}", body, headers={"Nats-Msg-Id": msg_id}
                )
                for subject, body, msg_id in messages[first : first + batch]
            ]
            await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
        info = await js.stream_info(stream)
        assert info.state.messages == len(messages)
        return elapsed
    finally:
        await js.delete_stream(stream)
        await client.close()


def _publish(lg: Ledger, head: int) -> float:
    """Seconds for the publisher to take the log from 0 to ``head`` into a fresh stream."""
    suffix = uuid.uuid4().hex[:8]
    stream = f"BENCH_PUB_{suffix.upper()}"
    target = JetStreamTarget(NATS, stream=stream, subject_prefix=f"benchpub{suffix}")
    publisher = Publisher(
        fast_notification_source(lg.store),
        event_decoder(lg.store),
        Networks(lg.views.database),
        Tracking(lg.views.database, f"bench:{suffix}"),
        target,
        origin=f"bench-{suffix}",
        page_size=PAGE,
    )
    started = time.perf_counter()
    published = asyncio.run(publisher.run(asyncio.Event()))
    elapsed = time.perf_counter() - started
    assert published == head, (published, head)

    async def drop() -> None:
        client = await nats.connect(NATS)
        js = client.jetstream()
        info = await js.stream_info(stream)
        assert info.state.messages == head
        await js.delete_stream(stream)
        await client.close()

    asyncio.run(drop())
    return elapsed


def _export(lg: Ledger, head: int) -> tuple[float, int]:
    """Seconds to write events/ and postings/ of the whole log, and the postings written."""
    directory = Path(tempfile.mkdtemp(prefix="bench-out-"))
    try:
        projector = lg.views.projector
        export = ParquetExport(
            directory,
            fast_notification_source(lg.store),
            projector.decode,
            Networks(lg.views.database),
            lg.views.database,
            [],
            [],
            page_size=EXPORT_PAGE,
        )
        staging = directory / ".staging"
        staging.mkdir()
        files: dict[str, list[str]] = {"events": [], "postings": []}
        started = time.perf_counter()
        events, postings = export._write_log(staging, 0, head, files)
        elapsed = time.perf_counter() - started
        assert events == head
        return elapsed, postings
    finally:
        shutil.rmtree(directory, ignore_errors=True)


DUCKDB_POSTINGS = """
COPY (
    SELECT id AS notification_id,
           CAST(json_extract_string(s, '$.timestamp') AS TIMESTAMPTZ) AS recorded_at,
           CASE WHEN leg = 0 THEN originator_id ELSE 'sink:consumed' END AS holder_id,
           'stamps' AS unit,
           CASE WHEN leg = 0 THEN -1 ELSE 1 END::BIGINT AS delta,
           json_extract_string(s, '$.cfdi_uuid') AS ref,
           CASE WHEN leg = 0 THEN 'sink:consumed' ELSE originator_id END AS counterpart,
           json_extract_string(s, '$.actor') AS actor,
           'StampingAccount.StampConsumed' AS event_type,
           'M' AS master_id
    FROM (SELECT id, originator_id, decode(state) AS s FROM events
          WHERE topic LIKE 'StampingAccount.StampConsumed%'),
         (SELECT unnest([0, 1]) AS leg)
    ORDER BY notification_id, leg
) TO '{path}' (FORMAT parquet)
"""


def _duckdb_copy(conninfo: str, table: str) -> tuple[float, int]:
    """Seconds for DuckDB to write the consumptions' postings read from the events table."""
    directory = Path(tempfile.mkdtemp(prefix="bench-duckdb-"))
    try:
        started = time.perf_counter()
        with psycopg.connect(conninfo) as connection:
            rows = connection.execute(
                "SELECT notification_id, originator_id, topic, state"
                f" FROM {table} ORDER BY notification_id"
            ).fetchall()
        ids, originators, topics, states = zip(*rows, strict=True)
        events = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "originator_id": pa.array(originators, pa.string()),
                "topic": pa.array(topics, pa.string()),
                "state": pa.array(states, pa.binary()),
            }
        )
        with duckdb.connect() as db:
            db.register("events", events)
            path = directory / "postings.parquet"
            db.execute(DUCKDB_POSTINGS.format(path=path))
            elapsed = time.perf_counter() - started
            (count,) = db.execute(f"SELECT count(*) FROM '{path}'").fetchone() or (0,)
        return elapsed, int(count)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    """Prints the figures of one run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--ctis", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("ledger").setLevel(logging.WARNING)
    name = f"ledger_bench_out_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG}/{name}"
    try:
        head = generate(url, args.events, args.ctis)
        print(f"history: {head:,} events on PostgreSQL ({name})")
        with Ledger.open(url, projections="off") as lg:
            source = notification_source(lg.store)
            decode = event_decoder(lg.store)
            rows = source.select_notifications(0, head, inclusive_of_start=False)
            decoded = [decode(n) for n in rows]
            masters = Networks(lg.views.database).masters(decoded)
            messages = []
            for notification, event, master in zip(rows, decoded, masters, strict=True):
                out = outgoing(int(notification.id), event, master)
                messages.append(
                    (routing_key(out), out.body, message_id("raw", out.notification_id))
                )
            del rows, decoded
            table = lg.store.recorder.events_table_name
            figures: dict[str, list[float]] = {
                "publish": [],
                "raw": [],
                "export": [],
                "duckdb": [],
            }
            postings = copied = 0
            for round_number in range(args.rounds):
                order = ["raw", "publish"] if round_number % 2 else ["publish", "raw"]
                for which in order:
                    if which == "raw":
                        figures["raw"].append(asyncio.run(_raw_jetstream(messages, PAGE)))
                    else:
                        figures["publish"].append(_publish(lg, head))
                order = ["duckdb", "export"] if round_number % 2 else ["export", "duckdb"]
                for which in order:
                    if which == "export":
                        seconds, postings = _export(lg, head)
                        figures["export"].append(seconds)
                    else:
                        seconds, copied = _duckdb_copy(_conninfo(url), table)
                        figures["duckdb"].append(seconds)
        _report(head, figures, postings, copied)
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _conninfo(url: str) -> str:
    return url


def _report(head: int, figures: dict[str, list[float]], postings: int, copied: int) -> None:
    seconds = {name: _median(values) for name, values in figures.items()}
    publish_rate = head / seconds["publish"]
    raw_rate = head / seconds["raw"]
    export_rate = postings / seconds["export"]
    duckdb_rate = copied / seconds["duckdb"]
    rows: list[tuple[str, Any, Any]] = [
        ("publish (ledger publish, NATS)", f"{publish_rate:,.0f} events/s", ""),
        ("raw JetStream publish_async", f"{raw_rate:,.0f} msgs/s", ""),
        ("  ratio publish / raw", f"{publish_rate / raw_rate:.2f} x", "target >= 0.7"),
        ("export (events + postings)", f"{export_rate:,.0f} postings/s", f"{postings:,} rows"),
        ("DuckDB COPY postings", f"{duckdb_rate:,.0f} postings/s", f"{copied:,} rows"),
        ("  ratio export / DuckDB", f"{export_rate / duckdb_rate:.2f} x", "target >= 0.5"),
    ]
    print(f"medians of {len(figures['publish'])} rounds:")
    for label, value, note in rows:
        print(f"  {label:34} {value:>20}  {note}")
    for name, values in figures.items():
        print(f"  {name} seconds: {', '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
