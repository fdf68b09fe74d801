"""``ledger export --format parquet``: typed files that DuckDB, pandas and polars read as they
are, whose sums are the ledger's balances, appended by ``--since-last``, safe from a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapters.cli.main import main
from adapters.export import parquet
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import (
    CTI,
    consume,
    network_ledger,
    open_cti,
    post,
    reserve,
    transfer_points,
    transfer_stamps,
)

SECOND_CTI = "X1"


@pytest.fixture
def lg(store_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A network with stamps and points moved, two CTIs consuming over three local days, and a
    posted hold."""
    with network_ledger(
        clock, open_cti(SECOND_CTI), url=store_url, cti_stamps=40, points=3000
    ) as ledger:
        ledger.execute_many(
            [
                transfer_points(250, "P-1"),
                transfer_stamps(20, "T-2", to_id=SECOND_CTI, amount="9.00"),
            ]
        )
        for day in range(3):
            ledger.execute_many([consume() for _ in range(day + 2)])
            ledger.execute_many([consume(SECOND_CTI) for _ in range(3 - day)])
            clock.advance(timedelta(days=1))
        ledger.execute(reserve("H1"))
        ledger.execute(post("H1"))
        yield ledger


def _export(lg: Ledger, directory: Path, *extra: str) -> None:
    code = main(["export", "--url", lg.url, "--format", "parquet", str(directory), *extra])
    assert code == 0


def _sql(directory: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """DuckDB's answer to ``query`` over the export's folders, each read as one table."""
    with duckdb.connect() as connection:
        for folder in ("events", "postings", "view_consumption", "view_sales", "view_balances"):
            files = f"{directory}/{folder}/*.parquet"
            connection.execute(f"CREATE VIEW {folder} AS SELECT * FROM read_parquet('{files}')")  # noqa: S608  (the test's own paths)
        return connection.execute(query, list(params)).fetchall()


def _head(lg: Ledger) -> int:
    return int(lg.views.projector.source.max_notification_id() or 0)


def test_postings_sum_to_every_balance_and_consumption_to_its_view(
    lg: Ledger, tmp_path: Path
) -> None:
    """Loaded by DuckDB: sum(delta) per holder and unit is ``lg.balance`` for every holder,
    and a CTI's consumption per local day is its view's, in the events and the view folder."""
    _export(lg, tmp_path)
    sums = _sql(tmp_path, "SELECT holder_id, unit, sum(delta) FROM postings GROUP BY ALL")
    checked = 0
    for holder, unit, total in sums:
        try:
            balance = lg.balance(holder, unit)
        except Rejected:
            assert holder.startswith(("sink:", "held:")) or holder == "issuance", holder
            continue
        assert (holder, unit, total) == (holder, unit, balance)
        checked += 1
    assert checked >= 5  # master, distributor, client wallet, two CTIs
    for cti in (CTI, SECOND_CTI):
        daily = [(d.local_date, d.count) for d in lg.views.consumption(cti).daily]
        assert len(daily) == (4 if cti == CTI else 3)  # the posted hold on the fourth day
        from_events = _sql(
            tmp_path,
            "SELECT CAST(json_extract_string(data, '$.local_date') AS DATE), count(*) FROM events"
            " WHERE originator_id = ? AND type IN"
            " ('StampingAccount.StampConsumed', 'StampingAccount.ReservationPosted')"
            " GROUP BY 1 ORDER BY 1",
            cti,
        )
        from_view = _sql(
            tmp_path,
            "SELECT local_date, stamps FROM view_consumption WHERE cti_id = ? ORDER BY 1",
            cti,
        )
        assert from_events == from_view == daily


def test_columns_are_typed_and_no_money_is_a_float(lg: Ledger, tmp_path: Path) -> None:
    """Instants are UTC timestamps, credits and centavos int64; no column anywhere is a float."""
    _export(lg, tmp_path)
    postings = pq.read_schema(next((tmp_path / "postings").glob("*.parquet")))
    assert postings.names == [
        "notification_id",
        "recorded_at",
        "holder_id",
        "unit",
        "delta",
        "ref",
        "counterpart",
        "actor",
        "event_type",
        "master_id",
    ]
    assert postings.field("delta").type == pa.int64()
    assert postings.field("recorded_at").type == pa.timestamp("us", tz="UTC")
    sales = pq.read_schema(tmp_path / "view_sales" / "data.parquet")
    assert sales.field("amount_centavos").type == pa.int64()
    assert sales.field("at").type == pa.timestamp("us", tz="UTC")
    for path in tmp_path.rglob("*.parquet"):
        for field in pq.read_schema(path):
            assert not pa.types.is_floating(field.type), (path, field)
    assert _sql(tmp_path, "SELECT sum(amount_centavos) FROM view_sales")[0][0] > 0


def test_pandas_and_polars_read_every_folder_as_it_is(lg: Ledger, tmp_path: Path) -> None:
    """Each folder is one table to pandas and polars, with DuckDB's row count."""
    _export(lg, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"events", "postings", "view_balances", "view_consumption"}
    for folder in manifest["files"]:
        files = f"{tmp_path}/{folder}/*.parquet"
        (expected,) = _sql(tmp_path, f"SELECT count(*) FROM read_parquet('{files}')")[0]  # noqa: S608
        assert len(pd.read_parquet(tmp_path / folder)) == expected
        assert pl.read_parquet(tmp_path / folder / "*.parquet").height == expected
    events = pl.read_parquet(tmp_path / "events" / "*.parquet")
    assert events["notification_id"].to_list() == list(range(1, _head(lg) + 1))
    assert "password_hash" not in "".join(events["data"].to_list())


def test_since_last_appends_only_what_is_new(lg: Ledger, tmp_path: Path) -> None:
    """A second export appends the new events as new parts; nothing is repeated."""
    _export(lg, tmp_path)
    first = json.loads((tmp_path / "manifest.json").read_text())
    lg.execute_many([consume() for _ in range(4)])
    _export(lg, tmp_path, "--since-last")
    second = json.loads((tmp_path / "manifest.json").read_text())
    assert second["last_notification_id"] == _head(lg) == first["last_notification_id"] + 4
    assert second["files"]["events"][: len(first["files"]["events"])] == first["files"]["events"]
    ids = _sql(tmp_path, "SELECT notification_id FROM events ORDER BY 1")
    assert [i for (i,) in ids] == list(range(1, _head(lg) + 1))
    assert _sql(tmp_path, "SELECT sum(delta) FROM postings WHERE holder_id = ?", CTI) == [
        (lg.balance(CTI),)
    ]


def test_a_crash_mid_export_leaves_the_previous_export_valid(
    lg: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before its manifest is replaced, an export changes nothing a reader sees; the
    next run exports what is new exactly once."""
    _export(lg, tmp_path)
    before = (tmp_path / "manifest.json").read_text()
    counted = _sql(tmp_path, "SELECT count(*), sum(delta) FROM postings")
    lg.execute_many([consume() for _ in range(3)])

    def crash(directory: Path, manifest: dict[str, Any]) -> None:
        raise KeyboardInterrupt  # the process dies with the new parts staged

    monkeypatch.setattr(parquet, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        _export(lg, tmp_path, "--since-last")
    assert (tmp_path / ".staging" / "events").is_dir()
    assert (tmp_path / "manifest.json").read_text() == before
    assert _sql(tmp_path, "SELECT count(*), sum(delta) FROM postings") == counted
    monkeypatch.undo()
    _export(lg, tmp_path, "--since-last")
    ids = _sql(tmp_path, "SELECT notification_id FROM events ORDER BY 1")
    assert [i for (i,) in ids] == list(range(1, _head(lg) + 1))
    assert not (tmp_path / ".staging").exists()


def test_a_crash_after_the_manifest_is_finished_by_the_next_run(
    lg: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after its manifest was replaced but before its files were moved into place, the
    export is completed by the next run before anything else."""
    _export(lg, tmp_path)
    lg.execute_many([consume() for _ in range(2)])
    settle = parquet.settle
    calls: list[Path] = []

    def dies_the_second_time(directory: Path) -> dict[str, Any] | None:
        calls.append(directory)
        if len(calls) == 2:  # the one after the new manifest replaced the old
            raise KeyboardInterrupt
        return settle(directory)

    monkeypatch.setattr(parquet, "settle", dies_the_second_time)
    with pytest.raises(KeyboardInterrupt):
        _export(lg, tmp_path, "--since-last")
    monkeypatch.undo()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["last_notification_id"] == _head(lg)
    assert (tmp_path / ".staging").is_dir()
    parquet.settle(tmp_path)
    for names in manifest["files"].values():
        for name in names:
            assert (tmp_path / name).exists()
    assert not (tmp_path / ".staging").exists()
    ids = _sql(tmp_path, "SELECT notification_id FROM events ORDER BY 1")
    assert [i for (i,) in ids] == list(range(1, _head(lg) + 1))


def test_the_command_line_bounds_are_the_exporters() -> None:
    """``ledger export --page-size`` offers the exporter's own default and bound."""
    from adapters.cli import data_out  # noqa: PLC0415

    assert data_out.EXPORT_PAGE_SIZE_DEFAULT == parquet.PAGE_SIZE_DEFAULT
    assert data_out.EXPORT_PAGE_SIZE_MAX == parquet.PAGE_SIZE_MAX


def test_the_bulk_readers_log_is_the_recorders(lg: Ledger) -> None:
    """``FastNotifications`` lists the same rows as the recorder, pages and bounds included."""
    from adapters.storage.views import fast_notification_source  # noqa: PLC0415

    fast = fast_notification_source(lg.store)
    plain = lg.views.projector.source
    head = _head(lg)

    def rows(source: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        found = source.select_notifications(*args, **kwargs)
        return [
            (n.id, n.originator_id, n.originator_version, n.topic, bytes(n.state)) for n in found
        ]

    assert len(rows(fast, 0, 1_000, inclusive_of_start=False)) == head
    for args, kwargs in [
        ((0, 1_000), {"inclusive_of_start": False}),
        ((5, 7), {"inclusive_of_start": False}),
        ((5, 7), {}),
        ((3, 100), {"stop": 9, "inclusive_of_start": False}),
        ((head, 10), {"inclusive_of_start": False}),
    ]:
        assert rows(fast, *args, **kwargs) == rows(plain, *args, **kwargs), (args, kwargs)
