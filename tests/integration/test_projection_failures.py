"""The read side cannot be poisoned (DESIGN §3.6, §7; issue 7 item 4).

A hostile row is stored by direct SQL into the events table, as a corrupted or older writer
could: a client whose name holds ``\\u0000`` (PostgreSQL's text cannot hold it) or bytes that
do not decode. The views keep every row they had, stop just before that event, and the failure
(notification id, aggregate) is reported by ``status``, ``project``, ``rebuild`` and ``verify``,
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from adapters.cli.main import main
from ledger.api import Ledger
from ledger.audit import ProjectionHealth, verify
from ledger.audit.views import RUNNING_WITHIN_S
from ledger.clock import ManualClock
from ledger.errors import InfrastructureError
from ledger.projections.runner import ProjectionFailed
from ledger.projections.views import default_views
from tests.support import (
    MASTER,
    build_network,
    cli_env,
    consume,
    network_ledger,
    seed_network,
    start_cli,
)

HOSTILE_ID = "CX"
FOLLOW_WAIT_S = 60.0
VIEW_NAMES = {view.name for view in default_views()}
"""A failed page stops every view: each reports it."""


def _sql(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Runs one statement on the events' database, outside the ledger."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            return connection.execute(statement.replace("%s", "?"), params).fetchall()
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _events_table(url: str) -> tuple[str, str]:
    """The events table and its notification id column."""
    if url.startswith("sqlite:///"):
        return "stored_events", "rowid"
    return "ledger_events", "notification_id"


def store_hostile_event(url: str, kind: str) -> int:
    """Inserts a new client's registration by SQL; returns its notification id."""
    table, id_column = _events_table(url)
    ((state,),) = _sql(
        url,
        f"SELECT state FROM {table} WHERE originator_id = 'C1' AND originator_version = 1",  # noqa: S608
    )
    state = bytes(state)  # type: ignore[call-overload]
    if kind == "nul":
        state = state.replace(b'"C1"', f'"{HOSTILE_ID}"'.encode()).replace(
            b'"name":"', b'"name":"\\u0000'
        )
    else:
        state = b"\xff\xfe\x00 not an event"
    _sql(
        url,
        f"INSERT INTO {table} (originator_id, originator_version, topic, state)"  # noqa: S608
        " VALUES (%s, 1, 'Client.Registered', %s)",
        (HOSTILE_ID, state),
    )
    ((notification_id,),) = _sql(
        url,
        f"SELECT {id_column} FROM {table} WHERE originator_id = %s",  # noqa: S608
        (HOSTILE_ID,),
    )
    return int(str(notification_id))


def remove_hostile_event(url: str) -> None:
    """Repairs the store: the hostile row goes (as an operator restoring a backup would)."""
    table, _ = _events_table(url)
    _sql(url, f"DELETE FROM {table} WHERE originator_id = %s", (HOSTILE_ID,))  # noqa: S608


HOSTILE = [
    pytest.param(("sqlite", "undecodable"), id="sqlite-undecodable"),
    pytest.param(
        ("postgres", "undecodable"), id="postgres-undecodable", marks=pytest.mark.postgres
    ),
    pytest.param(("postgres", "nul"), id="postgres-nul-in-a-name", marks=pytest.mark.postgres),
]


@pytest.fixture
def poisoned(
    request: pytest.FixtureRequest, clock: ManualClock
) -> Iterator[tuple[str, Ledger, int, dict[str, list[tuple[object, ...]]]]]:
    """A ledger with views, then a hostile event, then a valid consumption after it."""
    backend, kind = request.param
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    lg = Ledger.open(url, clock=clock, password_cost="fast")
    try:
        build_network(lg, cti_stamps=10)
        lg.execute(consume(actor=MASTER))
        before = lg.views.dump()
        hostile_id = store_hostile_event(url, kind)
        assert lg.execute(consume(actor=MASTER)).ok  # recorded; its views wait behind the event
        yield url, lg, hostile_id, before
    finally:
        lg.close()


@pytest.mark.parametrize("poisoned", HOSTILE, indirect=True)
def test_a_hostile_event_stops_the_views_just_before_it_and_keeps_their_rows(
    poisoned: tuple[str, Ledger, int, dict[str, list[tuple[object, ...]]]],
) -> None:
    """The views keep every row, sit at the event before it, and queries still answer."""
    _, lg, hostile_id, before = poisoned
    assert lg.views.dump() == before
    assert lg.views.position() == hostile_id - 1
    (cti,) = lg.views.stamping_accounts("D1")  # an inline query answers as of that position
    assert (cti.cti_id, cti.used) == ("C1-cti", 1)
    assert lg.balance("C1-cti") == 8  # the write side has the later consumption


@pytest.mark.parametrize("poisoned", HOSTILE, indirect=True)
def test_status_project_and_verify_name_the_event_that_broke_the_views(
    poisoned: tuple[str, Ledger, int, dict[str, list[tuple[object, ...]]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``Ledger.status()`` and ``ledger status`` give each view's position, lag and failure;
    ``ledger project`` exits 2 naming the event; ``verify`` has a ``views`` breach at it."""
    url, lg, hostile_id, before = poisoned
    status = lg.status()
    assert status["log_position"] == hostile_id + 1
    assert {view["name"] for view in status["views"]} == VIEW_NAMES
    for view in status["views"]:
        assert view["position"] == hostile_id - 1
        assert view["lag_events"] == 2
        assert view["error_notification_id"] == hostile_id
        assert view["error_aggregate_id"] == HOSTILE_ID
        assert view["error_topic"] == "Client.Registered"
        assert view["failures"] >= 1
        assert f"notification {hostile_id} (aggregate {HOSTILE_ID}" in view["error"]
    named = f"notification {hostile_id} (aggregate {HOSTILE_ID}, Client.Registered)"
    capsys.readouterr()
    assert main(["status", "--url", url]) == 1
    assert named in capsys.readouterr().out
    assert main(["status", "--url", url, "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert {view["error_notification_id"] for view in printed["views"]} == {hostile_id}

    assert main(["project", "--url", url]) == 2
    assert named in capsys.readouterr().err
    assert lg.views.dump() == before

    report = lg.verify()
    stopped = [
        breach
        for breach in report.breaches
        if breach.check == "views" and "its last page failed" in breach.message
    ]
    assert len(stopped) == len(VIEW_NAMES)
    assert {(b.position, b.aggregate_id) for b in stopped} == {(hostile_id, HOSTILE_ID)}


@pytest.mark.parametrize("poisoned", HOSTILE, indirect=True)
def test_a_failed_rebuild_leaves_the_views_as_they_were(
    poisoned: tuple[str, Ledger, int, dict[str, list[tuple[object, ...]]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rebuild`` builds aside: on failure the old views and positions stay, the error names
    the event, and the aside is gone."""
    url, lg, hostile_id, before = poisoned
    with pytest.raises(ProjectionFailed) as failed:
        lg.views.rebuild()
    assert (failed.value.notification_id, failed.value.aggregate_id) == (hostile_id, HOSTILE_ID)
    assert lg.views.dump() == before
    assert lg.views.position() == hostile_id - 1
    capsys.readouterr()
    assert main(["rebuild", "--url", url]) == 2
    assert f"notification {hostile_id} (aggregate {HOSTILE_ID}" in capsys.readouterr().err
    assert lg.views.dump() == before
    if url.startswith("sqlite:///"):
        assert not Path(url.removeprefix("sqlite:///") + ".views-aside").exists()
    else:
        assert _sql(url, "SELECT 1 FROM pg_namespace WHERE nspname = 'ledger_views_aside'") == []


@pytest.mark.parametrize("poisoned", HOSTILE[:2], indirect=True)
def test_a_follower_reports_the_event_keeps_running_and_resumes_after_a_repair(
    poisoned: tuple[str, Ledger, int, dict[str, list[tuple[object, ...]]]],
    tmp_path: Path,
) -> None:
    """``ledger project --follow`` reports the failure on stderr, stays up, and once the row
    is repaired catches up and clears the error."""
    url, lg, hostile_id, _ = poisoned
    err_path = tmp_path / "follower.err"
    with err_path.open("w") as err:
        follower = start_cli(
            "project",
            "--follow",
            "--interval",
            "0.2",
            env=cli_env(LEDGER_URL=url),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        _wait_for(lambda: f"notification {hostile_id} (aggregate" in err_path.read_text())
        assert follower.poll() is None
        remove_hostile_event(url)
        _wait_for(lambda: lg.views.projector.position() == hostile_id + 1)
        assert follower.poll() is None
        assert [view["error"] for view in lg.status()["views"]] == [None] * len(VIEW_NAMES)
        assert lg.views.stamping_accounts("D1")[0].used == 2
    finally:
        follower.terminate()
        follower.wait(30)


def test_background_mode_keeps_running_and_reports(sqlite_url: str, clock: ManualClock) -> None:
    """The background thread survives a hostile event and ``status()`` shows it."""
    seed_network(sqlite_url, clock, cti_stamps=10)
    hostile_id = store_hostile_event(sqlite_url, "undecodable")
    with Ledger.open(sqlite_url, clock=clock, password_cost="fast", projections="background") as lg:
        _wait_for(lambda: lg.views.status()["last_error"] is not None)
        status = lg.views.status()
        assert status["background_alive"] is True
        assert f"notification {hostile_id}" in status["last_error"]
        assert lg.views.position() == hostile_id - 1


def test_a_second_rebuild_at_once_is_refused(store_url: str, clock: ManualClock) -> None:
    """Only one rebuild builds aside at a time; the other fails without touching the views."""
    with network_ledger(clock, url=store_url) as lg:
        before = lg.views.dump()
        with lg.views.database.aside(), pytest.raises(InfrastructureError, match="another rebuild"):
            lg.views.rebuild()
        assert lg.views.dump() == before
        assert lg.views.rebuild() == lg.views.position()
        assert lg.views.dump() == before


LATE_TRANSFER = {
    "type": "TransferStamps",
    "transfer_id": "T-late",
    "from_id": "D1",
    "to_id": "C1-cti",
    "quantity": 1,
    "amount": "0.00",
    "actor": "D1",
}
"""A command recorded by a ledger that does not project (``projections="off"``)."""


def _views_breaches(report: object) -> list[object]:
    return [b for b in report.breaches if b.check == "views"]  # type: ignore[attr-defined]


def test_verify_notes_views_that_no_projector_runs_with_their_lag(
    store_url: str, clock: ManualClock
) -> None:
    """Views behind the log with no projector running (no recent heartbeat) are not projected,
    not stuck: a note per view with its lag, and no breach."""
    seed_network(store_url, clock)
    with Ledger.open(store_url, clock=clock, password_cost="fast", projections="off") as lg:
        position = lg.views.position()
        lg.execute(LATE_TRANSFER)  # two events: the distributor's and the CTI's
        head = position + 2
        later = datetime.now(UTC) + timedelta(seconds=RUNNING_WITHIN_S + 1)
        health = ProjectionHealth(lg.views.database, grace_s=0.0, now=lambda: later)
        report = verify(lg.store.audit_source(), health=health)
        assert report.ok
        assert _views_breaches(report) == []
        behind = [note for note in report.notes if "is not projected: 2 events behind" in note]
        assert len(behind) == len(VIEW_NAMES)
        assert all(f"at position {position} (newest {head} when" in n for n in behind)
        assert all("no projector has run over it since" in note for note in behind)
        assert lg.verify().ok  # the same from the API, once the last heartbeat is old


def test_verify_calls_a_view_that_a_running_projector_cannot_advance_stuck(
    store_url: str, clock: ManualClock
) -> None:
    """A projector runs over the views (its heartbeat is fresh) but they stay behind the log:
    a ``views`` breach per view, at the position they are stuck at."""
    with Ledger.open(store_url, clock=clock, password_cost="fast", projections="off") as lg:
        build_network(lg)
        lg.views.catch_up()
        position = lg.views.position()
        lg.execute(LATE_TRANSFER)
        lg.views.projector.beat()  # it runs, yet does not advance the views
        beaten = datetime.now(UTC)
        health = ProjectionHealth(lg.views.database, grace_s=0.0, now=lambda: beaten)
        report = verify(lg.store.audit_source(), health=health)
    stuck = [b for b in _views_breaches(report) if "stuck" in b.message]  # type: ignore[attr-defined]
    assert len(stuck) == len(VIEW_NAMES)
    assert {b.position for b in stuck} == {position}  # type: ignore[attr-defined]
    assert all("a projector runs over it" in b.message for b in stuck)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_a_projecting_ledger_catches_up_its_own_views_before_verifying(
    store_url: str, clock: ManualClock, mode: str
) -> None:
    """Another process wrote after this ledger's last catch-up: its own ``verify()`` projects
    first, so its views are at the log's head, and ``status`` shows the heartbeat."""
    with Ledger.open(store_url, clock=clock, password_cost="fast", projections=mode) as lg:  # type: ignore[arg-type]
        build_network(lg)
        with Ledger.open(store_url, clock=clock, password_cost="fast", projections="off") as other:
            other.execute(LATE_TRANSFER)
            head = other.views.projector.source.max_notification_id()
        report = lg.verify()
        assert report.ok, report.breaches
        assert _views_breaches(report) == []
        assert lg.views.position() == head
        assert all(view["heartbeat_at"] is not None for view in lg.status()["views"])


def test_an_older_tracking_table_gets_the_failure_columns(
    store_url: str, clock: ManualClock
) -> None:
    """A tracking table made before failures were recorded is read by ``status`` as it is,
    and extended when the ledger is opened to write."""
    with network_ledger(clock, url=store_url) as lg:
        position = lg.views.position()
    for column in (
        "error",
        "error_notification_id",
        "error_aggregate_id",
        "error_topic",
        "error_at",
        "failures",
        "heartbeat_at",
    ):
        _sql(store_url, f"ALTER TABLE view_tracking DROP COLUMN {column}")
    with Ledger.open(store_url, clock=clock, password_cost="fast", create_tables=False) as lg:
        assert [view["failures"] for view in lg.status()["views"]] == [0] * len(VIEW_NAMES)
    with Ledger.open(store_url, clock=clock, password_cost="fast") as lg:
        assert [view["error"] for view in lg.status()["views"]] == [None] * len(VIEW_NAMES)
        assert lg.views.position() == position


def _wait_for(condition: object, timeout_s: float = FOLLOW_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():  # type: ignore[operator]
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the condition did not hold in time")
        time.sleep(0.1)


@pytest.mark.parametrize("views_backend", ["sqlite", "postgres"])
def test_views_live_in_their_own_database(
    store_url: str,
    views_backend: str,
    tmp_path: Path,
    clock: ManualClock,
    request: pytest.FixtureRequest,
) -> None:
    """With ``views_url`` the views and their tracking are written there, and nothing of the
    read side is in the events' database; a rebuild there gives the same rows."""
    if views_backend == "sqlite":
        views_url = f"sqlite:///{tmp_path / 'views.db'}"
    else:
        base = str(request.getfixturevalue("pg_base_url"))
        name = f"ledger_views_{uuid.uuid4().hex[:12]}"
        _sql(f"{base}/postgres", f'CREATE DATABASE "{name}"')
        request.addfinalizer(
            lambda: _sql(f"{base}/postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )
        views_url = f"{base}/{name}"
    with network_ledger(clock, url=store_url, views_url=views_url, cti_stamps=5) as lg:
        lg.execute(consume(actor=MASTER))
        (cti,) = lg.views.stamping_accounts("D1")
        assert (cti.cti_id, cti.balance, cti.used) == ("C1-cti", 4, 1)
        before = lg.views.dump()
        lg.views.rebuild()
        assert lg.views.dump() == before
        assert lg.status()["views"][0]["lag_events"] == 0
    if store_url.startswith("sqlite"):
        found = _sql(store_url, "SELECT name FROM sqlite_master WHERE name LIKE 'view_%'")
    else:
        found = _sql(
            store_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_name LIKE 'view_%%'",
        )
    assert found == []


FOLDED = "| DETAIL: \\u0000 cannot be converted to text. | CONTEXT: JSON data"
"""PostgreSQL's DETAIL and CONTEXT lines of the nul event's failure, folded into its line."""


@pytest.mark.parametrize("poisoned", HOSTILE[2:], indirect=True)
def test_a_postgresql_failure_is_one_line_with_its_detail_and_context_folded_in(
    poisoned: tuple[str, Ledger, int, dict[str, list[tuple[object, ...]]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``project``, ``status``, ``verify`` and ``rebuild`` print each failure on one line that
    keeps PostgreSQL's DETAIL and CONTEXT; ``--json`` and the log lines keep them too."""
    url, lg, hostile_id, _ = poisoned
    named = f"notification {hostile_id} (aggregate {HOSTILE_ID}, Client.Registered)"
    printed: dict[str, str] = {}
    for command in ("project", "status", "verify", "rebuild"):
        capsys.readouterr()
        main([command, "--url", url])
        out, err = capsys.readouterr()
        printed[command] = out + err
        for line in (out + err).splitlines():
            assert not line.lstrip().startswith(("DETAIL", "CONTEXT", "HINT")), (command, line)
        failure_lines = [line for line in (out + err).splitlines() if named in line]
        assert failure_lines, command
        for line in failure_lines:
            assert FOLDED in line or '"error":' in line, (command, line)
    assert f"project: {named}" in printed["project"]
    assert f"rebuild: {named}" in printed["rebuild"]
    assert printed["status"].count(FOLDED) == len(VIEW_NAMES)
    assert printed["verify"].count(FOLDED) == len(VIEW_NAMES)

    capsys.readouterr()
    main(["status", "--url", url, "--json"])
    status = json.loads(capsys.readouterr().out)
    assert all(FOLDED in view["error"] for view in status["views"])
    main(["verify", "--url", url, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert sum(FOLDED in breach["message"] for breach in report["breaches"]) == len(VIEW_NAMES)
    assert all("\n" not in view["error"] for view in lg.status()["views"])
