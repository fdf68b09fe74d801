"""``ledger export --format parquet DIR``: the log, its postings and every view as Parquet.

Chose pyarrow: it writes Parquet with exactly the logical types asked for (timestamps with time
zone, int64, dates, booleans), column by column from Python lists, in row groups of bounded
size, and the files are what DuckDB, pandas and polars read natively. DuckDB is used by the
tests and the benchmark to read the files back, not to write them: it would have to receive
the decoded rows from Python anyway.

``DIR`` holds::

    manifest.json             what the export holds, and up to which notification id
    events/part-F-L.parquet   one row per event, notifications F..L
    postings/part-F-L.parquet one row per leg of every movement of those events
    view_<name>/data.parquet  one folder per view table, as of the manifest's position

Columns are typed: ``notification_id``, versions, credits (``delta``, ``stamps``, ...) and
centavos are int64, instants ``timestamp[us, UTC]``, days ``date32``; there is no float money.
``events`` holds every stored column (notification id, originator id and version, topic) plus
the decoded ``type``, ``actor``, ``recorded_at``, ``master_id`` and ``data``: the event's own
fields as JSON, without its secrets (the stored ``state`` bytes would carry the password and
NIP hashes, so they are not copied).

``--since-last`` appends the events after the manifest's notification id as new parts and
rewrites the views. Crash safety: new files are written under ``DIR/.staging/`` (readers of
``events/*.parquet`` never see them), then the new manifest replaces the old one atomically
(``os.replace``), then the staged files are moved into place and files no manifest lists are
removed. A crash before the manifest is replaced leaves the previous export exactly as it was
(the next run drops the staging); a crash after it is finished by the next run, which first
moves any staged file the manifest lists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from ledger.domain import Event
from ledger.errors import LedgerError
from ledger.logging import get_logger
from ledger.outbound.message import event_data, event_type
from ledger.outbound.networks import Networks
from ledger.projections.base import Cursor, Kind, Table, ViewDatabase
from ledger.projections.runner import NotificationSource
from ledger.write.gc_pause import GC_PAUSE

log = get_logger("ledger.export")

MANIFEST = "manifest.json"
STAGING = ".staging"
FORMAT = "ledger-parquet"
FORMAT_VERSION = 1
PAGE_SIZE_DEFAULT = 50_000
"""Events per part file (and per read of the log): memory is bounded by it."""
PAGE_SIZE_MAX = 1_000_000
VIEW_ROWS_PER_GROUP = 100_000
_ENCODER = msgspec.json.Encoder()
"""Rows of a view table read and written at a time."""

UTC_MICROS = pa.timestamp("us", tz="UTC")
EVENTS_SCHEMA = pa.schema(
    [
        ("notification_id", pa.int64()),
        ("recorded_at", UTC_MICROS),
        ("originator_id", pa.string()),
        ("originator_version", pa.int64()),
        ("topic", pa.string()),
        ("type", pa.string()),
        ("actor", pa.string()),
        ("master_id", pa.string()),
        ("data", pa.string()),
    ]
)
POSTINGS_SCHEMA = pa.schema(
    [
        ("notification_id", pa.int64()),
        ("recorded_at", UTC_MICROS),
        ("holder_id", pa.string()),
        ("unit", pa.string()),
        ("delta", pa.int64()),
        ("ref", pa.string()),
        ("counterpart", pa.string()),
        ("actor", pa.string()),
        ("event_type", pa.string()),
        ("master_id", pa.string()),
    ]
)
ARROW_TYPES: dict[Kind, pa.DataType] = {
    "text": pa.string(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "ts": UTC_MICROS,
    "date": pa.date32(),
}


class ExportError(LedgerError):
    """Raised when an export cannot be made (a directory that is not an export, ...)."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What one export wrote."""

    directory: Path
    first_notification_id: int
    last_notification_id: int
    events: int
    postings: int
    view_rows: dict[str, int]


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The export's manifest, or None when ``directory`` holds none."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable manifest: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: not a ledger Parquet export")
    return manifest


class ParquetExport:
    """Writes one export of the log and the views into ``directory``."""

    def __init__(
        self,
        directory: Path,
        source: NotificationSource,
        decode: Callable[[Any], Event],
        networks: Networks,
        views: ViewDatabase,
        tables: Sequence[Table],
        view_names: Sequence[str],
        *,
        page_size: int = PAGE_SIZE_DEFAULT,
    ) -> None:
        if not 1 <= page_size <= PAGE_SIZE_MAX:
            raise ValueError(f"page_size must be 1..{PAGE_SIZE_MAX}")
        self.directory = directory
        self.source = source
        self.decode = decode
        self.networks = networks
        self.views = views
        self.tables = tuple(tables)
        self.view_names = tuple(view_names)
        self.page_size = page_size

    def run(self, *, since_last: bool = False) -> ExportReport:
        """Exports everything (or, ``since_last``, what is new) up to the views' position."""
        self.directory.mkdir(parents=True, exist_ok=True)
        previous = settle(self.directory)
        staging = self.directory / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        start = 0
        files: dict[str, list[str]] = {"events": [], "postings": []}
        if since_last and previous is not None:
            start = int(previous["last_notification_id"])
            files = {name: list(previous["files"].get(name, [])) for name in files}
        positions, view_rows, view_files = self._write_views(staging)
        end = min(positions.values(), default=self.source.max_notification_id() or 0)
        if end < start:
            raise ExportError(
                f"the views are at notification {end}, before the last export ({start}):"
                " bring them up to date first (`ledger project`)"
            )
        events, postings = self._write_log(staging, start, end, files)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "last_notification_id": end,
            "exported_at": datetime.now(UTC).isoformat(),
            "view_positions": positions,
            "files": {**files, **view_files},
        }
        commit(self.directory, manifest)
        log.info(
            "exported",
            directory=str(self.directory),
            first=start + 1,
            last=end,
            events=events,
            postings=postings,
        )
        return ExportReport(self.directory, start + 1, end, events, postings, view_rows)

    # The log ------------------------------------------------------------------------------

    def _write_log(
        self, staging: Path, start: int, end: int, files: dict[str, list[str]]
    ) -> tuple[int, int]:
        (staging / "events").mkdir()
        (staging / "postings").mkdir()
        events_done = postings_done = 0
        position = start
        while position < end:
            notifications = self.source.select_notifications(
                position, min(self.page_size, end - position), stop=end, inclusive_of_start=False
            )
            if not notifications:
                break
            first, last = int(notifications[0].id), int(notifications[-1].id)
            # A page makes hundreds of thousands of tracked objects that live until it is
            # written: the cyclic collector, run every 700 allocations, would scan them again
            # and again (measured: most of the page's time). Reference counting frees them.
            with GC_PAUSE:
                events, postings = self._tables(notifications)
            name = f"part-{first:012d}-{last:012d}.parquet"
            pq.write_table(events, staging / "events" / name)
            pq.write_table(postings, staging / "postings" / name)
            files["events"].append(f"events/{name}")
            files["postings"].append(f"postings/{name}")
            events_done += events.num_rows
            postings_done += postings.num_rows
            position = last
        return events_done, postings_done

    def _tables(self, notifications: Sequence[Any]) -> tuple[pa.Table, pa.Table]:
        """The events and postings tables of one page.

        Instants go to Arrow as integer microseconds: converting aware ``datetime``s costs
        pyarrow several times more, and this loop is the export's hot path.
        """
        decoded = [self.decode(n) for n in notifications]
        masters = self.networks.masters(decoded)
        encode = _ENCODER.encode
        ids: list[int] = []
        micros: list[int] = []
        types: list[str] = []
        actors: list[str | None] = []
        data: list[str] = []
        # The postings' columns, appended to one by one (cheaper than a tuple per leg).
        legs: tuple[list[Any], ...] = tuple([] for _ in POSTINGS_SCHEMA)
        (l_ids, l_micros, l_holders, l_units, l_deltas, l_refs, l_counterparts) = legs[:7]
        (l_actors, l_types, l_masters) = legs[7:]
        for notification, event, master in zip(notifications, decoded, masters, strict=True):
            notification_id = int(notification.id)
            kind = event_type(event)
            at = event.timestamp
            stamp = int(at.timestamp()) * 1_000_000 + at.microsecond
            actor = event.actor
            ids.append(notification_id)
            micros.append(stamp)
            types.append(kind)
            actors.append(actor)
            data.append(encode(event_data(event)).decode())
            for posting in event.postings():
                l_ids.append(notification_id)
                l_micros.append(stamp)
                l_holders.append(posting.holder)
                l_units.append(posting.unit)
                l_deltas.append(posting.delta)
                l_refs.append(posting.ref)
                l_counterparts.append(posting.counterpart)
                l_actors.append(actor)
                l_types.append(kind)
                l_masters.append(master)
        events = pa.table(
            [
                pa.array(ids, pa.int64()),
                pa.array(micros, UTC_MICROS),
                pa.array([e.originator_id for e in decoded], pa.string()),
                pa.array([e.originator_version for e in decoded], pa.int64()),
                pa.array([str(n.topic) for n in notifications], pa.string()),
                pa.array(types, pa.string()),
                pa.array(actors, pa.string()),
                pa.array(masters, pa.string()),
                pa.array(data, pa.string()),
            ],
            schema=EVENTS_SCHEMA,
        )
        postings = pa.table(
            [
                pa.array(column, kind)
                for column, kind in zip(legs, POSTINGS_SCHEMA.types, strict=True)
            ],
            schema=POSTINGS_SCHEMA,
        )
        return events, postings

    # The views ----------------------------------------------------------------------------

    def _write_views(
        self, staging: Path
    ) -> tuple[dict[str, int], dict[str, int], dict[str, list[str]]]:
        """Every view table as of one snapshot, and the views' positions in that snapshot."""
        rows: dict[str, int] = {}
        files: dict[str, list[str]] = {}
        with self.views.snapshot() as cursor:
            cursor.execute("SELECT name, position FROM view_tracking")
            tracked = {str(name): int(position) for name, position in cursor.fetchall()}
            positions = {name: tracked.get(name, 0) for name in self.view_names}
            for table in self.tables:
                folder = staging / table.name
                folder.mkdir()
                rows[table.name] = _write_view_table(cursor, table, folder / "data.parquet")
                files[table.name] = [f"{table.name}/data.parquet"]
        return positions, rows, files


def _write_view_table(cursor: Cursor, table: Table, path: Path) -> int:
    """Writes one view table in key order, a row group at a time; returns its rows."""
    dialect = cursor.dialect
    schema = pa.schema([(name, ARROW_TYPES[kind]) for name, kind in table.columns])
    converters: list[Callable[[Any], Any]] = []
    for _, kind in table.columns:
        if kind == "ts":
            converters.append(dialect.to_ts)
        elif kind == "date":
            converters.append(dialect.to_day)
        elif kind == "bool":
            converters.append(lambda value: None if value is None else bool(value))
        else:
            converters.append(_same)
    names = ", ".join(table.column_names)
    cursor.execute(f"SELECT {names} FROM {table.name} ORDER BY {', '.join(table.key)}")  # noqa: S608  (names from the table spec)
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        while True:
            batch = cursor.fetchmany(VIEW_ROWS_PER_GROUP)
            if not batch and count:
                break
            columns = list(zip(*batch, strict=True)) if batch else [() for _ in table.columns]
            arrays = [
                pa.array([convert(value) for value in column], type=kind)
                for column, convert, kind in zip(columns, converters, schema.types, strict=True)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            count += len(batch)
            if not batch:
                break
    return count


def _same(value: Any) -> Any:
    return value


# Crash safety --------------------------------------------------------------------------------


def commit(directory: Path, manifest: dict[str, Any]) -> None:
    """Replaces the manifest atomically, then moves the staged files into place."""
    staging = directory / STAGING
    temporary = staging / MANIFEST
    with temporary.open("w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    for path in _files_under(staging):
        _fsync(path)
    os.replace(temporary, directory / MANIFEST)
    _fsync_directory(directory)
    settle(directory)


def settle(directory: Path) -> dict[str, Any] | None:
    """Finishes or forgets an interrupted export; returns the manifest in force.

    Every file the manifest lists that is still staged is moved into place; then the staging
    and every Parquet file the manifest does not list are removed.
    """
    manifest = read_manifest(directory)
    staging = directory / STAGING
    listed: set[str] = set()
    if manifest is not None:
        for names in manifest["files"].values():
            listed.update(names)
        for name in sorted(listed):
            staged, target = staging / name, directory / name
            if staged.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
    shutil.rmtree(staging, ignore_errors=True)
    for folder in directory.iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        for path in folder.glob("*.parquet"):
            if f"{folder.name}/{path.name}" not in listed:
                path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a view table that no longer exists
    return manifest


def _files_under(folder: Path) -> Iterator[Path]:
    for root, _, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a directory
        _fsync(path)
