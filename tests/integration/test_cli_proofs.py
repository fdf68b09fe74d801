"""The proofs' command line: keys, seal (and its follower), checkpoints, proofs (DESIGN §9)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.cli.main import main
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.proofs.checkpoint import open_checkpoint
from ledger.proofs.note import Signer, Verifier
from tests.support import build_network, cli_env, consume, start_cli

ORIGIN = "ledger.example/cli"


def keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Verifier]:
    """A key made by ``ledger keygen``, and the verifier key it printed."""
    key = tmp_path / "ledger.key"
    assert main(["keygen", "--origin", ORIGIN, "--out", str(key)]) == 0
    verifier = Verifier.parse(capsys.readouterr().out)
    return key, verifier


def test_keygen_writes_a_private_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mode 0600, the printed verifier key matches it, and an existing file is never replaced."""
    key, verifier = keygen(tmp_path, capsys)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Signer.parse(key.read_text()).verifier() == verifier
    before = key.read_text()
    assert main(["keygen", "--origin", ORIGIN, "--out", str(key)]) == 1
    assert "never overwritten" in capsys.readouterr().err
    assert key.read_text() == before
    assert main(["keygen", "--origin", "has space", "--out", str(tmp_path / "x")]) == 1


def test_checkpoint_prove_and_list(
    store_url: str, clock: ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """checkpoint prints a note the verifier key opens; prove's JSON verifies; a shared key file
    is refused; the key's text appears in no output."""
    key, verifier = keygen(tmp_path, capsys)
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg)
    assert main(["checkpoint", "--url", store_url, "--key", str(key)]) == 0
    captured = capsys.readouterr()
    head = open_checkpoint(captured.out, verifier)
    secret = key.read_text().strip().split("+", 4)[4]
    assert secret not in captured.out + captured.err
    assert main(["checkpoints", "--url", store_url, "--json"]) == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["tree_size"] == head.size
    assert main(["prove", "inclusion", "--url", store_url, "--notification-id", "2"]) == 0
    proof = json.loads(capsys.readouterr().out)
    assert (proof["leaf_index"], proof["tree_size"]) == (1, head.size)
    assert main(["prove", "consistency", "--url", store_url, "--from", "1", "--to", "2"]) == 1
    assert "no stored checkpoint of size 1" in capsys.readouterr().err
    os.chmod(key, 0o644)
    assert main(["checkpoint", "--url", store_url, "--key", str(key)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_seal_follow_signs_checkpoints_as_events_arrive(
    sqlite_url: str, clock: ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A follower with --key --every 5 signs new heads while commands run, and stops on SIGTERM
    without printing the key."""
    key, verifier = keygen(tmp_path, capsys)
    with Ledger.open(sqlite_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=50)
    follower = subprocess.Popen(
        [sys.executable, "-m", "ledger", "seal", "--follow", "--url", sqlite_url, "--key",
         str(key), "--every", "5", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert follower.stderr is not None
        assert "following" in follower.stderr.readline()
        with Ledger.open(sqlite_url, clock=clock, projections="off") as lg:
            for _ in range(3):
                lg.execute_many([consume() for _ in range(6)])
                time.sleep(0.3)
            events = lg.tree_store().max_notification_id()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                latest = lg.checkpoint()
                if latest is not None and open_checkpoint(latest, verifier).size == events:
                    break
                time.sleep(0.1)
            sizes = [c.size for c in lg.checkpoints()]
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0
    assert sizes[-1] == events
    assert len(sizes) >= 2
    assert key.read_text().strip().split("+", 4)[4] not in out + err


def test_project_follow_with_key_seals_and_signs_checkpoints(
    store_url: str, clock: ManualClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A projection follower with --key --every 5 keeps the views current, seals the tree and
    signs checkpoints up to the newest event that the verifier key opens and verify accepts;
    the key's text appears in none of its output."""
    key, verifier = keygen(tmp_path, capsys)
    with Ledger.open(store_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=50)
    follower = start_cli(
        "project", "--follow", "--url", store_url, "--key", str(key), "--every", "5",
        "--interval", "0.1",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(LEDGER_LOG_LEVEL="INFO"),
    )  # fmt: skip
    try:
        assert follower.stderr is not None
        assert "following" in follower.stderr.readline()
        with Ledger.open(store_url, clock=clock, projections="off") as lg:
            for _ in range(3):
                lg.execute_many([consume() for _ in range(6)])
                time.sleep(0.3)
            store = lg.tree_store()
            newest = store.max_notification_id()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                latest = store.checkpoint(latest=True)
                state = store.tree_state()
                caught_up = state.last_id == newest and lg.views.position() == newest
                if caught_up and latest is not None and latest.size == state.size:
                    break
                time.sleep(0.1)
            checkpoints = lg.checkpoints()
            position = lg.views.position()
            report = lg.verify(verifier=verifier)
            sealed = store.tree_state()
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert position == sealed.last_id == newest
    assert len(checkpoints) >= 2
    assert checkpoints[-1].size == sealed.size
    for stored in checkpoints:
        assert open_checkpoint(stored.note, verifier).size == stored.size
    assert report.ok, report.breaches
    assert any(f"{len(checkpoints)} checkpoints" in note for note in report.notes), report.notes
    assert "checkpoint_signed" in out + err
    assert key.read_text().strip().split("+", 4)[4] not in out + err


@pytest.mark.parametrize("command", ["seal", "project"])
def test_key_without_follow_is_refused(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """--key signs while following: without --follow it exits 1 saying so, and opens nothing."""
    key, _ = keygen(tmp_path, capsys)
    assert main([command, "--url", sqlite_url, "--key", str(key)]) == 1
    assert (
        capsys.readouterr().err == f"{command}: --key signs while following: use it with --follow\n"
    )
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
