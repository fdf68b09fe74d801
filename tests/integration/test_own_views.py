"""Analysts' own views (``ledger.projections.own``): the example of docs/VIEWS.md, run.

``examples/monthly_stamps_by_rfc.py`` counts the stamps consumed per issuer RFC per month.
It is registered with ``Ledger.open(views=[...])`` and through a ``ledger.views`` entry point,
tracked exactly once like the built-in views, rebuilt, and run alone with ``--view``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.storage.views import SQLiteViewDatabase
from examples.monthly_stamps_by_rfc import MonthlyStampsByRfc, RfcMonth
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from ledger.projections.own import OwnView, Rows, Table, ViewDefinitionError
from tests.support import ISSUER_RFC, consume, network_ledger, post, reserve

ROOT = Path(__file__).resolve().parents[2]
OTHER_RFC = "XAXX010101000"
EXPECTED = [
    RfcMonth(ISSUER_RFC, "2026-01", 3),
    RfcMonth(ISSUER_RFC, "2026-02", 2),
    RfcMonth(OTHER_RFC, "2026-01", 1),
    RfcMonth(OTHER_RFC, "2026-02", 4),
]


def _consume_two_months(lg: Ledger, clock: ManualClock) -> None:
    """January: 3 stamps for ISSUER_RFC (one a posted hold), 1 for OTHER_RFC; February: 2
    and 4."""
    lg.execute_many([consume(), consume(), consume(issuer_rfc=OTHER_RFC)])
    lg.execute(reserve("H1"))
    lg.execute(post("H1"))
    clock.advance(timedelta(days=31))
    lg.execute_many([consume(), consume(), *[consume(issuer_rfc=OTHER_RFC) for _ in range(4)]])


@pytest.fixture
def lg(store_url: str, clock: ManualClock) -> Iterator[Ledger]:
    with network_ledger(clock, url=store_url, cti_stamps=20) as ledger:
        yield ledger


def test_the_monthly_report_per_rfc_counts_every_stamp_once(lg: Ledger, clock: ManualClock) -> None:
    """Registered on open, the view counts each consumption and posted hold once, inline; a
    second processor and a rebuild give the same rows."""
    with Ledger.open(lg.url, clock=clock, views=[MonthlyStampsByRfc()]) as own:
        _consume_two_months(own, clock)
        report = own.views.own("monthly_stamps_by_rfc")
        assert report.months() == EXPECTED
        assert report.months(OTHER_RFC) == EXPECTED[2:]
        assert report.month("2026-02") == [EXPECTED[3], EXPECTED[1]]
        with Ledger.open(lg.url, projections="off", views=[MonthlyStampsByRfc()]) as other:
            assert other.views.catch_up() == 0  # already counted: nothing twice
            other.views.rebuild()
            assert other.views.own("monthly_stamps_by_rfc").months() == EXPECTED
        assert report.months() == EXPECTED
        status = {view["name"]: view for view in own.status()["views"]}
        assert status["monthly_stamps_by_rfc"]["lag_events"] == 0


def test_a_view_added_later_is_built_from_the_first_event(lg: Ledger, clock: ManualClock) -> None:
    """Opened on a ledger with history, the view catches up from the start on its own."""
    _consume_two_months(lg, clock)
    with Ledger.open(lg.url, clock=clock, views=[MonthlyStampsByRfc()]) as own:
        assert own.views.own("monthly_stamps_by_rfc").months() == EXPECTED


def test_rows_merge_a_pages_changes_in_event_order(tmp_path: Path) -> None:
    """``add`` sums, ``set`` replaces, ``delete`` removes the stored row first; timestamps are
    stored as the database stores them."""
    table = Table(
        "view_t",
        (("k", "text"), ("n", "int"), ("at", "ts")),
        key=("k",),
    )
    database = SQLiteViewDatabase(str(tmp_path / "v.db"))
    database.create([table])
    at = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
    pages = [
        [("add", "a", {"n": 2}), ("add", "a", {"n": 3}), ("set", "b", {"n": 10, "at": at})],
        [("add", "b", {"n": 1}), ("delete", "a", {}), ("add", "a", {"n": 4})],
        [("add", "c", {"n": 7}), ("set", "c", {"n": 1}), ("add", "c", {"n": 1})],
        [("add", "d", {"n": 1}), ("delete", "d", {})],
    ]
    for page in pages:
        rows = Rows([table], database.dialect)
        for op, key, fields in page:
            if op == "delete":
                rows.delete("view_t", {"k": key})
            else:
                getattr(rows, op)("view_t", {"k": key}, **fields)
        with database.write() as cursor:
            rows.flush(cursor)
    with database.read() as cursor:
        cursor.execute("SELECT k, n, at FROM view_t ORDER BY k")
        found = [(k, n, database.dialect.to_ts(stamp)) for k, n, stamp in cursor.fetchall()]
    database.close()
    assert found == [("a", 4, None), ("b", 11, at), ("c", 2, None)]


def test_a_wrong_definition_is_refused() -> None:
    """Names must be plain, tables ``view_*``, keys among the columns; names unique."""
    with pytest.raises(ViewDefinitionError):

        class _BadTable(OwnView):
            name = "bad"
            tables = (Table("balances; DROP", (("k", "text"),), key=("k",)),)

    with pytest.raises(ViewDefinitionError):

        class _BadKey(OwnView):
            name = "bad_key"
            tables = (Table("view_bad_key", (("k", "text"),), key=("other",)),)

    class Clash(OwnView):
        name = "balances"
        tables = (Table("view_clash", (("k", "text"),), key=("k",)),)

    with pytest.raises(Rejected) as caught:
        Ledger.open("memory://", views=[Clash()])
    assert caught.value.code == "invalid_command"


def _ledger_cli(*args: str, plugins: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)]),
        "LEDGER_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_an_entry_point_view_runs_alone_with_project_and_rebuild(
    sqlite_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    """An installed package's ``ledger.views`` entry point is found by the command line;
    ``project --view`` and ``rebuild --view`` run it alone; ``status`` lists it."""
    plugins = tmp_path / "site"
    info = plugins / "monthly_report-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: monthly-report\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[ledger.views]\nmonthly = examples.monthly_stamps_by_rfc:MonthlyStampsByRfc\n"
    )
    with network_ledger(clock, url=sqlite_url, cti_stamps=20) as lg:
        _consume_two_months(lg, clock)
    projected = _ledger_cli(
        "project", "--url", sqlite_url, "--view", "monthly_stamps_by_rfc", plugins=plugins
    )
    assert projected.returncode == 0, projected.stderr
    rebuilt = _ledger_cli(
        "rebuild", "--url", sqlite_url, "--view", "monthly_stamps_by_rfc", plugins=plugins
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    status = _ledger_cli("status", "--json", "--url", sqlite_url, plugins=plugins)
    positions = {v["name"]: v["position"] for v in json.loads(status.stdout)["views"]}
    head = positions.pop("monthly_stamps_by_rfc")
    assert head > 0
    with Ledger.open(sqlite_url, projections="off", views=[MonthlyStampsByRfc()]) as lg:
        assert lg.views.own("monthly_stamps_by_rfc").months() == EXPECTED
    unknown = _ledger_cli("project", "--url", sqlite_url, "--view", "nope", plugins=plugins)
    assert unknown.returncode == 1
    assert "no view nope" in unknown.stderr
