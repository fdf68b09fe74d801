"""``verify`` on real databases: views against the replay, writers running meanwhile, the CLI."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from adapters.cli import audit as cli_audit
from ledger.audit import verify
from ledger.clock import ManualClock
from tests.integration.test_tamper import build_books
from tests.support import CTI, RawDb, consume, network_ledger


def test_views_equal_the_replay(store_url: str, clock: ManualClock) -> None:
    """Inline views are compared with the replay at the last position, and agree."""
    with network_ledger(clock, url=store_url, cti_stamps=10) as lg:
        lg.execute(consume())
        report = lg.verify()
    assert report.ok, report.breaches
    assert f"views: balances compared at position {report.last_position}" in report.notes


def test_an_edited_view_row_is_a_breach(store_url: str, clock: ManualClock) -> None:
    """A view balance changed with SQL no longer equals the events: reported for that holder."""
    with network_ledger(clock, url=store_url, cti_stamps=10) as lg:
        RawDb(store_url).execute(
            "UPDATE view_balances SET balance = balance + 5 WHERE holder_id = ?", (CTI,)
        )
        report = lg.verify()
    (breach,) = [b for b in report.breaches if b.check == "views"]
    assert breach.aggregate_id == CTI
    assert breach.message.startswith(f"view balances shows 15 stamps for {CTI}; the events give 10")


def test_verify_while_writers_append_reports_no_false_breach(
    store_url: str, clock: ManualClock
) -> None:
    """Consumptions committed while verify reads (small pages) never look like tampering."""
    with network_ledger(clock, url=store_url, projections="off", cti_stamps=1000) as lg:
        lg.execute_many([consume() for _ in range(300)])
        done = threading.Event()

        def write() -> None:
            while not done.is_set():
                lg.execute_many([consume() for _ in range(5)])

        writer = threading.Thread(target=write)
        writer.start()
        try:
            report = verify(lg.store.audit_source(), page_size=7)  # type: ignore[arg-type]
        finally:
            done.set()
            writer.join()
        assert report.ok, report.breaches
        assert lg.verify().ok


def test_cli_verify_exits_0_on_sound_books(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ledger verify`` prints the summary and exits 0."""
    build_books(sqlite_url, clock)
    assert cli_audit.main(["verify", "--url", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verify: OK: 17 events, 5 streams")
    assert "sum of all stamps: 0" in out


def test_cli_verify_exits_1_and_lists_the_breach(
    store_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a deleted event, ``ledger verify`` lists the breaches and exits 1."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position, _, _ = db.event(CTI, 3)
    db.execute("DELETE FROM {events} WHERE originator_id = ? AND originator_version = 3", (CTI,))
    assert cli_audit.main(["verify", "--url", store_url]) == 1
    out = capsys.readouterr().out
    assert "verify: BREACHES FOUND" in out
    assert f"BREACH chain_mismatch (position {position}): chain link {position}..{position}" in out


def test_cli_verify_json_carries_the_report(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json`` prints the report as one JSON object."""
    build_books(sqlite_url, clock)
    assert cli_audit.main(["verify", "--url", sqlite_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["events"], report["totals"]) == (True, 17, {"stamps": 0})


def test_cli_verify_prints_plain_progress_off_a_terminal(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal no bar is drawn: stderr gets the closing line only."""
    build_books(sqlite_url, clock)
    cli_audit.main(["verify", "--url", sqlite_url])
    err = capsys.readouterr().err
    assert err.startswith("verify: done, 17 events in ")
    assert "\r" not in err


def test_cli_verify_exits_2_when_it_cannot_read(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that holds no ledger cannot be verified: exit 2 with the reason."""
    url = f"sqlite:///{tmp_path}/empty.db"
    assert cli_audit.main(["verify", "--url", url]) == 2
    assert "cannot verify" in capsys.readouterr().err


def test_cli_history_lists_movements(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ledger history HOLDER --json`` writes one movement per line, oldest first."""
    build_books(sqlite_url, clock)
    assert cli_audit.main(["history", CTI, "--url", sqlite_url, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(m["amount"], m["balance"]) for m in lines] == [(10, 10), (-1, 9), (-1, 8), (-1, 7)]


def test_cli_history_of_an_unknown_holder_exits_1(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown holder is reported with its rejection code."""
    build_books(sqlite_url, clock)
    assert cli_audit.main(["history", f"nobody-{uuid.uuid4().hex[:6]}", "--url", sqlite_url]) == 1
    assert "unknown_account" in capsys.readouterr().err
