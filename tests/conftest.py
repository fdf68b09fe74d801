"""Shared fixtures: a real SQLite file and a real PostgreSQL database per test.

PostgreSQL is found at ``$LEDGER_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432``). If
nothing answers there but PostgreSQL's binaries are installed, a throwaway server is started in a
temporary directory for the session. If that is impossible, PostgreSQL tests fail under
``CI=true`` and are skipped, loudly, anywhere else.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from ledger.clock import ManualClock
from tests.brokers import amqp_url, nats_url, queue, stream  # noqa: F401  (fixtures)

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _can_connect(base_url: str) -> bool:
    try:
        with psycopg.connect(f"{base_url}/postgres", connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_throwaway_server() -> str | None:
    """Starts a private PostgreSQL from the installed binaries; None if there are none."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [
        p for p in [shutil.which("pg_ctl")] if p
    ]
    if not candidates:
        return None
    bindir = Path(candidates[-1]).parent
    datadir = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
    port = _free_port()
    # initdb refuses to run as root: run the server as the postgres system user then.
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(datadir / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir / "data"),
            "-w",
            "-l",
            str(datadir / "log"),
            "-o",
            f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir / "data"), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(datadir, ignore_errors=True)

    atexit.register(stop)
    return f"postgresql://postgres@127.0.0.1:{port}"


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """URL of a reachable PostgreSQL server (without database)."""
    base = os.environ.get("LEDGER_TEST_PG", DEFAULT_PG).rstrip("/")
    if _can_connect(base):
        return base
    reason = f"no PostgreSQL at {base}"
    try:
        started = _start_throwaway_server()
    except (OSError, subprocess.CalledProcessError) as exc:
        started = None
        reason += f"; starting a throwaway server failed: {exc}"
    if started and _can_connect(started):
        return started
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    print(f"\n\n*** SKIPPING POSTGRESQL TESTS: {reason} ***\n")
    pytest.skip(f"SKIPPED LOUDLY (not under CI): {reason}")


PG_FIXTURES = frozenset({"pg_url", "pg_base_url"})


def _uses_postgres(item: pytest.Item) -> bool:
    if PG_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgres" in callspec.params.values()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches PostgreSQL carries the ``postgres`` marker, so that
    ``-m "not postgres"`` is a quick local run (CONTRIBUTING.md)."""
    for item in items:
        if _uses_postgres(item):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def pg_url(pg_base_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    # A test that reached PostgreSQL in a way the marking above does not see must say so.
    assert request.node.get_closest_marker("postgres") is not None, (
        f"{request.node.nodeid} uses PostgreSQL without the postgres marker"
    )
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{pg_base_url}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{pg_base_url}/{name}"
    with (
        psycopg.connect(f"{pg_base_url}/postgres", autocommit=True) as conn,
        contextlib.suppress(psycopg.Error),
    ):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: a real SQLite file, then a real PostgreSQL database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at noon, Mexico City, 5 January 2026."""
    return ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))


@pytest.fixture(autouse=True)
def _ledger_logging_restored() -> Iterator[None]:
    """What a test (or the CLI it runs in-process) sets on the ``ledger`` logger is undone."""
    logger = logging.getLogger("ledger")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
