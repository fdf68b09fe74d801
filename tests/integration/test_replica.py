"""Views fed from a real PostgreSQL streaming replica into their own database (DESIGN §8).

The test starts its own primary and a hot standby made with ``pg_basebackup -R``. Writers run on
the primary; ``ledger project --follow`` reads the log from the standby and writes the views into
a third database; it is SIGKILLed twice mid-way. The views must never show an event the standby
has not replayed, ``ledger status`` must report the lag in events and seconds, and at the end the
views must equal a clean rebuild. ``ledger verify --url <standby>`` runs read-only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from ledger.api import Ledger
from tests.pgcluster import Replica, replica, required_bindir
from tests.support import CTI, MASTER, build_network, cli_env, consume, run_cli, start_cli

BATCHES = 20
BATCH_SIZE = 100
EVENTS = BATCHES * BATCH_SIZE
WAIT_S = 90.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Replica]:
    """A throwaway primary and hot standby for this module."""
    with replica(required_bindir("a replica")) as made:
        yield made


def _max_id(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT max(notification_id) FROM ledger_events").fetchone()
    return int(row[0] or 0) if row else 0


def _views_position(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        try:
            rows = connection.execute("SELECT position FROM view_tracking").fetchall()
        except psycopg.errors.UndefinedTable:
            return 0
    return min((int(row[0]) for row in rows), default=0)


def _follower(standby_url: str, views_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        follow = ("project", "--follow", "--url", standby_url, "--views-url", views_url)
        return start_cli(
            *follow,
            *("--interval", "0.1", "--page-size", "100"),
            env=cli_env(LEDGER_LOG_LEVEL="warning"),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=WAIT_S)


def test_a_follower_on_the_standby_feeds_views_in_their_own_database(
    cluster: Replica, pg_url: str, tmp_path: Path
) -> None:
    """Killed twice, the follower's views equal a clean rebuild and never run ahead of the
    standby; status reports the lag; verify reads the standby without writing."""
    primary_url = cluster.primary.url("ledger")
    standby_url = cluster.standby.url("ledger")
    views_url = pg_url
    with Ledger.open(primary_url, projections="off", password_cost="fast") as writer:
        build_network(writer, inventory=EVENTS + 1000, cti_stamps=EVENTS + 10)
        cluster.wait_replayed("ledger")
        start = _max_id(primary_url)

        ahead: list[tuple[int, int]] = []
        sampling = threading.Event()

        def sample() -> None:
            # The views' position first, then the standby's newest id: the standby only grows,
            # so a position above that id is an event the views got from nowhere else.
            while not sampling.is_set():
                position = _views_position(views_url)
                replayed = _max_id(standby_url)
                if position > replayed:
                    ahead.append((position, replayed))
                time.sleep(0.02)

        def write() -> None:
            for _ in range(BATCHES):
                results = writer.execute_many([consume(actor=MASTER) for _ in range(BATCH_SIZE)])
                assert all(getattr(result, "ok", False) for result in results)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        writes = threading.Thread(target=write)
        sampler.start()
        writes.start()
        log = tmp_path / "follower.err"
        try:
            for kill in range(2):
                follower = _follower(standby_url, views_url, log)
                reached = _views_position(views_url)
                _wait_for(
                    lambda reached=reached: _views_position(views_url) > reached + 300,  # type: ignore[misc]
                    f"follower {kill + 1} to move",
                )
                follower.send_signal(signal.SIGKILL)
                follower.wait(30)
                if kill == 0:
                    # The follower is dead and the writers go on: the views lag behind.
                    _wait_for(
                        lambda: _max_id(standby_url) > _views_position(views_url) + 100,
                        "the log to run ahead of the dead follower",
                    )
                    status = _cli(
                        "status", "--url", standby_url, "--views-url", views_url, "--json"
                    )
                    assert status.returncode == 0, status.stderr
                    reported = json.loads(status.stdout)
                    assert reported["log_standby"] is True
                    assert reported["log_replay_lag_s"] is not None
                    for view in reported["views"]:
                        assert view["lag_events"] >= 100
                        assert view["lag_s"] > 0
                        assert view["error"] is None
            follower = _follower(standby_url, views_url, log)
            writes.join(WAIT_S)
            assert not writes.is_alive()
            cluster.wait_replayed("ledger")
            final = _max_id(primary_url)
            assert final >= start + EVENTS
            _wait_for(lambda: _views_position(views_url) == final, "the views to reach the end")
            # The killed followers may have taken the views to the end already: SIGTERM only
            # once this one follows (its handler is in place), or it dies of the signal.
            _wait_for(
                lambda: log.read_text().count("following new events") == 3,
                "the last follower to follow",
            )
            follower.send_signal(signal.SIGTERM)
            assert follower.wait(30) == 0, log.read_text()
        finally:
            sampling.set()
            sampler.join(WAIT_S)
            writes.join(WAIT_S)
        assert ahead == []
        assert "polling" in log.read_text()

    with psycopg.connect(cluster.primary.url("postgres"), autocommit=True) as connection:
        connection.execute('CREATE DATABASE "rebuilt"')
    rebuilt_url = cluster.primary.url("rebuilt")
    with Ledger.open(standby_url, views_url=rebuilt_url, projections="off") as clean:
        clean.views.rebuild()
        expected = clean.views.dump()
    with Ledger.open(standby_url, views_url=views_url, projections="off") as followed:
        assert followed.views.dump() == expected
        (account,) = [row for row in followed.views.stamping_accounts("D1") if row.cti_id == CTI]
        assert account.used == EVENTS

    verified = _cli("verify", "--url", standby_url, "--views-url", views_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verify: OK" in verified.stdout
    assert "views: balances compared at position" in verified.stdout
    # The writers kept no views on the primary (projections off): verify notes that the
    # standby's copies of them are empty, and reads the standby without writing anything.
    alone = _cli("verify", "--url", standby_url)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "note: views: balances has projected nothing here yet" in alone.stdout
