"""The ``ledger`` command line: exec, balance, project, rebuild, demo (real databases)."""

from __future__ import annotations

import io
import json
import sys
from datetime import timedelta
from typing import Any

import pytest

from adapters.cli.main import main
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import consume, network_ledger, run_cli, seed_network


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def _outcomes(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


MASTER = {"type": "OpenMasterAccount", "master_id": "M", "name": "P", "rfc": "SAT970701NN3"}


def test_exec_answers_every_line_in_order_and_never_stops(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Good, not-JSON, not-an-object, empty, invalid and repeated lines each get their outcome."""
    lines = [
        json.dumps(MASTER),
        "{not json",
        "[1, 2]",
        "",
        json.dumps({"type": "OpenMasterAccount", "master_id": "M2"}),
        json.dumps(MASTER),
        json.dumps({"type": "Teleport"}),
    ]
    _stdin(monkeypatch, "\n".join(lines) + "\n")
    assert main(["exec", "--url", sqlite_url]) == 0
    outcomes = _outcomes(capsys.readouterr().out)
    assert [(o["ok"], o.get("code")) for o in outcomes] == [
        (True, None),
        (False, "invalid_command"),
        (False, "invalid_command"),
        (False, "invalid_command"),
        (False, "invalid_command"),
        (True, None),
        (False, "invalid_command"),
    ]
    assert outcomes[1]["details"]["line"] == 2
    assert outcomes[3]["details"]["line"] == 4
    assert outcomes[5]["replayed"] is True
    assert outcomes[0]["type"] == "OpenMasterAccount"


def test_exec_reports_a_rejection_with_its_code_and_message(
    store_url: str,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A consumption without stamps is ``insufficient_stamps`` with the Spanish message."""
    seed_network(store_url, clock)
    _stdin(monkeypatch, json.dumps(consume()) + "\n")
    assert main(["exec", "--url", store_url]) == 0
    (outcome,) = _outcomes(capsys.readouterr().out)
    assert outcome["ok"] is False
    assert outcome["code"] == "insufficient_stamps"
    assert outcome["message"] == "Sin folios disponibles."


def test_exec_through_a_real_pipe(sqlite_url: str, clock: ManualClock) -> None:
    """``python -m ledger exec`` reads a pipe in batches and answers each line."""
    seed_network(sqlite_url, clock, cti_stamps=100)
    lines = "".join(json.dumps(consume()) + "\n" for _ in range(50)) + "oops\n"
    done = run_cli("exec", "--url", sqlite_url, input=lines)
    assert done.returncode == 0, done.stderr
    outcomes = _outcomes(done.stdout)
    assert [o["ok"] for o in outcomes] == [True] * 50 + [False]
    assert outcomes[49]["balance_after"] == 50


def test_exec_uses_ledger_url_when_no_url_is_given(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --url the command runs on $LEDGER_URL."""
    monkeypatch.setenv("LEDGER_URL", sqlite_url)
    _stdin(monkeypatch, json.dumps(MASTER) + "\n")
    assert main(["exec"]) == 0
    assert _outcomes(capsys.readouterr().out)[0]["ok"] is True
    with Ledger.open(sqlite_url) as lg:
        assert lg.balance("M") == 0


def test_balance_prints_the_write_side_balance(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ledger balance C1-cti`` prints the number; points with --unit."""
    seed_network(sqlite_url, clock, cti_stamps=25)
    assert main(["balance", "C1-cti", "--url", sqlite_url]) == 0
    assert main(["balance", "D1", "--unit", "points", "--url", sqlite_url]) == 0
    assert capsys.readouterr().out.splitlines() == ["25 stamps", "0 points"]


def test_balance_at_an_instant(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """--at gives the balance the holder had then."""
    with network_ledger(clock, url=sqlite_url, cti_stamps=25) as lg:
        before = clock().isoformat()
        clock.advance(timedelta(hours=1))
        lg.execute(consume())
    assert main(["balance", "C1-cti", "--at", before, "--url", sqlite_url]) == 0
    assert main(["balance", "C1-cti", "--url", sqlite_url]) == 0
    assert capsys.readouterr().out.splitlines() == ["25 stamps", "24 stamps"]


def test_balance_of_an_unknown_holder_exits_1_with_the_code(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown account is a rejection: exit 1, the code on stderr."""
    seed_network(sqlite_url, clock)
    assert main(["balance", "nobody", "--url", sqlite_url]) == 1
    assert "unknown_account" in capsys.readouterr().err


def test_rebuild_prints_plain_progress_off_a_terminal(
    store_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not on a terminal: plain progress lines and a closing summary; the views are whole."""
    with network_ledger(clock, url=store_url, cti_stamps=30) as lg:
        lg.execute_many([consume() for _ in range(30)])
        before = lg.views.dump()
    assert main(["rebuild", "--url", store_url, "--page-size", "10"]) == 0
    captured = capsys.readouterr()
    assert "rebuild: done," in captured.err
    assert "\r" not in captured.err
    assert "views rebuilt up to notification" in captured.out
    with Ledger.open(store_url, projections="off") as lg:
        assert lg.views.dump() == before


def test_project_catches_up_and_exits(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ledger project`` without --follow stops once the views are current."""
    with network_ledger(clock, url=sqlite_url, projections="off", cti_stamps=5) as lg:
        newest = lg.views.projector.source.max_notification_id()
    assert main(["project", "--url", sqlite_url]) == 0
    assert f"views at notification {newest}" in capsys.readouterr().out


def test_the_audit_subcommands_are_registered() -> None:
    """``verify`` and ``history`` come from adapters/cli/audit.py."""
    done = run_cli("--help", timeout=60)
    assert done.returncode == 0
    for command in ("demo", "exec", "project", "rebuild", "balance", "verify", "history"):
        assert command in done.stdout


def test_demo_builds_a_network_and_prints_its_views(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A small demo runs without rejections and prints the main tables."""
    assert main(["demo", "--url", sqlite_url, "--clients", "20", "--days", "10"]) == 0
    out = capsys.readouterr().out
    assert "rejected" not in out
    for title in (
        "Distributors of PLATAFORMA",
        "Sub-distributors of D-CENTRO",
        "Stamping accounts of D-NORTE",
        "Sales of PLATAFORMA not invoiced yet",
        "Credit codes of D-NORTE",
        "Panel purchases from D-NORTE",
    ):
        assert title in out
    with Ledger.open(sqlite_url, projections="off") as lg:
        statuses = {r.distributor_id: r.status for r in lg.views.distributors("PLATAFORMA")}
        assert statuses == {
            "D-NORTE": "active",
            "D-CENTRO": "active",
            "D-SUR": "active",
            "D-OESTE": "unvalidated",
            "D-BAJA": "purged",
        }
        codes = {c.code_id: c.state for c in lg.views.credit_codes("D-NORTE")}
        assert codes == {
            "CODIGO-1": "redeemed",
            "CODIGO-2": "locked",
            "CODIGO-3": "active",
            "CODIGO-4": "cancelled",
        }
        assert lg.verify().ok


def test_purge_due_purges_once_and_a_second_run_does_nothing(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A distributor cancelled on 5 Jan 2026 is due by now; the second run finds nothing."""
    with network_ledger(clock, url=sqlite_url) as lg:
        for command_type in ("SuspendDistributor", "CancelDistributor"):
            lg.execute({"type": command_type, "distributor_id": "D1", "actor": "M"})
    assert main(["purge-due", "--url", sqlite_url]) == 0
    (outcome,) = _outcomes(capsys.readouterr().out)
    assert (outcome["type"], outcome["details"]) == ("PurgeDistributor", {"status": "purged"})
    assert main(["purge-due", "--url", sqlite_url]) == 0
    assert capsys.readouterr().out == ""


def test_a_second_demo_shows_the_first_and_records_nothing(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running the demo again on the same file prints its views again and adds no event."""
    assert main(["demo", "--url", sqlite_url, "--clients", "10", "--days", "7"]) == 0
    capsys.readouterr()
    with Ledger.open(sqlite_url, projections="off") as lg:
        events_before = lg.views.position()
    assert main(["demo", "--url", sqlite_url, "--clients", "10", "--days", "7"]) == 0
    out = capsys.readouterr().out
    assert "already holds the demo" in out
    assert "Distributors of PLATAFORMA" in out
    with Ledger.open(sqlite_url, projections="off") as lg:
        assert lg.views.position() == events_before
