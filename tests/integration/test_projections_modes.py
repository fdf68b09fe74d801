"""How views keep up: inline, background, off with a follower; exactly once under crashes."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest

from adapters.storage.views import open_view_database
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    ISSUER_RFC,
    build_network,
    consume,
    network_ledger,
    run_cli,
    seed_network,
    start_cli,
)

WAIT_S = 60.0


def _position(url: str) -> int:
    """The lowest tracked position, read with plain SQL as a portal would."""
    database = open_view_database(url)
    try:
        with database.read() as cursor:
            cursor.execute("SELECT MIN(position) FROM view_tracking")
            (found,) = cursor.fetchall()
    finally:
        database.close()
    return int(found[0] or 0)


def _newest(lg: Ledger) -> int:
    return int(lg.views.projector.source.max_notification_id() or 0)


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _history(url: str, clock: ManualClock, consumptions: int) -> None:
    """A network and ``consumptions`` stamps consumed, with no views projected."""
    with network_ledger(
        clock, url=url, projections="off", inventory=consumptions, cti_stamps=consumptions
    ) as lg:
        commands = [consume() for _ in range(consumptions)]
        for start in range(0, consumptions, 5_000):
            lg.execute_many(commands[start : start + 5_000])


# Modes ---------------------------------------------------------------------------------------


def test_inline_views_are_current_in_sql_when_execute_returns(
    store_url: str, clock: ManualClock
) -> None:
    """A portal reading the table right after ``execute`` sees the write (read-your-writes)."""
    with network_ledger(clock, url=store_url, cti_stamps=10) as lg:
        lg.execute(consume())
        with lg.views.database.read() as cursor:
            cursor.execute(
                "SELECT balance FROM view_balances WHERE holder_id = ? AND unit = 'stamps'",
                ("C1-cti",),
            )
            assert cursor.fetchall() == [(9,)]
        assert _position(store_url) == _newest(lg)


def test_background_views_catch_up_without_a_query(store_url: str, clock: ManualClock) -> None:
    """The thread follows the commits; ``close`` stops it."""
    lg = Ledger.open(store_url, clock=clock, password_cost="fast", projections="background")
    try:
        build_network(lg, cti_stamps=10)
        lg.execute_many([consume(), consume()])
        _wait_until(lambda: _position(store_url) == _newest(lg), "the background thread")
        assert lg.views.status()["background_alive"] is True
        assert [r.balance for r in lg.views.balances("C1-cti")] == [8]
        background = lg.views._background
    finally:
        lg.close()
    assert background is not None
    assert not background.alive


def test_off_leaves_the_views_where_they_are(store_url: str, clock: ManualClock) -> None:
    """With projections off nothing moves until someone catches up."""
    with network_ledger(clock, url=store_url, projections="off", cti_stamps=10) as lg:
        assert lg.views.position() == 0
        assert lg.views.catch_up() == _newest(lg)
        assert lg.views.position() == _newest(lg)
        assert lg.views.lag() == 0


def test_close_twice_is_harmless(sqlite_url: str) -> None:
    """Closing the views and the store a second time does nothing."""
    lg = Ledger.open(sqlite_url, projections="background")
    lg.close()
    lg.close()


# Exactly once --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [False, True])
def test_racing_projectors_never_count_a_page_twice(
    store_url: str, clock: ManualClock, overlap: bool
) -> None:
    """Two processors with tiny pages race over the same log; the result equals a rebuild."""
    _history(store_url, clock, 2_000)
    first = Ledger.open(store_url, projections="off")
    second = Ledger.open(store_url, projections="off")
    try:
        for lg in (first, second):
            lg.views.projector.page_size = 7
            lg.views.projector.overlap = overlap
        threads = [threading.Thread(target=lg.views.catch_up) for lg in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        incremental = first.views.dump()
        first.views.rebuild()
        assert first.views.dump() == incremental
        assert sum(row[2] for row in incremental["view_consumption"]) == 2_000
    finally:
        first.close()
        second.close()


def test_a_changed_view_version_rebuilds_that_view(sqlite_url: str, clock: ManualClock) -> None:
    """A view whose stored version differs is dropped and projected again on open."""
    _history(sqlite_url, clock, 50)
    with Ledger.open(sqlite_url) as lg:
        before = lg.views.dump()
        with lg.views.database.write() as cursor:
            cursor.execute("UPDATE view_tracking SET version = 0 WHERE name = 'consumption'")
            cursor.execute("DELETE FROM view_consumption")
    with Ledger.open(sqlite_url) as lg:
        assert lg.views.projector.positions()["consumption"] == 0
        assert lg.views.dump() == before


def test_a_killed_projector_resumes_without_loss_or_double_counting(
    store_url: str, clock: ManualClock
) -> None:
    """SIGKILL twice in the middle of a catch-up; the finished views equal a clean rebuild."""
    consumptions = 20_000
    _history(store_url, clock, consumptions)
    with Ledger.open(store_url, projections="off") as lg:
        newest = _newest(lg)
    for kill_at in (newest // 4, newest // 2):
        process = start_cli(
            "project",
            "--url",
            store_url,
            "--page-size",
            "20",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until(lambda at=kill_at: _position(store_url) >= at, f"position {kill_at}")
            process.send_signal(signal.SIGKILL)
            process.wait(WAIT_S)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == -signal.SIGKILL
        assert _position(store_url) < newest, "the projector finished before it was killed"
    finished = run_cli("project", "--url", store_url, timeout=WAIT_S)
    assert finished.returncode == 0, finished.stderr
    with Ledger.open(store_url, projections="off") as lg:
        resumed = lg.views.dump()
        assert sum(row[2] for row in resumed["view_consumption"]) == consumptions
        assert [r.balance for r in lg.views.balances("C1-cti")] == [lg.balance("C1-cti")] == [0]
        lg.views.rebuild()
        assert lg.views.dump() == resumed


def test_writer_processes_and_a_follower_converge(store_url: str, clock: ManualClock) -> None:
    """Three ``ledger exec`` writers (views off) and one ``ledger project --follow``."""
    with network_ledger(clock, url=store_url, projections="off", inventory=10_000) as lg:
        lg.execute_many(
            [
                {
                    "type": "RegisterClient",
                    "actor": "D1",
                    "client_id": f"W{n}",
                    "distributor_id": "D1",
                    "profile": {
                        "name": f"Cliente {n}",
                        "rfc": ISSUER_RFC,
                        "email": f"w{n}@example.com",
                        "postal_code": "06600",
                        "regimen_fiscal": "612",
                        "uso_cfdi": "G03",
                    },
                }
                for n in range(3)
            ]
            + [
                {
                    "type": "TransferStamps",
                    "actor": "D1",
                    "transfer_id": f"TW{n}",
                    "from_id": "D1",
                    "to_id": f"W{n}-cti",
                    "quantity": 1_000,
                    "amount": "500.00",
                }
                for n in range(3)
            ]
        )
    follower = start_cli(
        "project",
        "--follow",
        "--interval",
        "0.2",
        "--url",
        store_url,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        writers = []
        for writer in range(3):
            lines = "".join(
                json.dumps(consume(f"W{(writer + n) % 3}-cti", cfdi_uuid=str(uuid.uuid4()))) + "\n"
                for n in range(200)
            )
            process = start_cli(
                "exec",
                "--projections",
                "off",
                "--url",
                store_url,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            writers.append((process, lines))
        for process, lines in writers:
            out, _ = process.communicate(lines, timeout=WAIT_S)
            assert process.returncode == 0
            assert [json.loads(line)["ok"] for line in out.splitlines()] == [True] * 200
        with Ledger.open(store_url, projections="off") as lg:
            newest = _newest(lg)
        _wait_until(lambda: _position(store_url) == newest, "the follower")
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=WAIT_S)
    assert follower.returncode == 0, err
    with Ledger.open(store_url, projections="off") as lg:
        followed = lg.views.dump()
        for n in range(3):
            (row,) = lg.views.balances(f"W{n}-cti")
            assert row.balance == lg.balance(f"W{n}-cti") == 800
        lg.views.rebuild()
        assert lg.views.dump() == followed


def test_a_postgres_follower_wakes_on_notify_before_its_poll_interval(
    pg_url: str, clock: ManualClock
) -> None:
    """With a 60 s poll interval, a commit still reaches the views within seconds (NOTIFY)."""
    seed_network(pg_url, clock, projections="off", cti_stamps=10)
    follower = start_cli(
        "project",
        "--follow",
        "--interval",
        "60",
        "--url",
        pg_url,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Ledger.open(pg_url, clock=clock, projections="off") as lg:
            _wait_until(lambda: _position(pg_url) == _newest(lg), "the first catch-up")
            time.sleep(1.0)  # the follower is now waiting on LISTEN
            started = time.monotonic()
            lg.execute(consume())
            _wait_until(lambda: _position(pg_url) == _newest(lg), "the NOTIFY wake-up")
            assert time.monotonic() - started < 30
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=WAIT_S)
    assert follower.returncode == 0, err
    assert "LISTEN/NOTIFY" in err
