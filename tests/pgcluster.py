"""Throwaway PostgreSQL clusters: a primary and a hot standby made with ``pg_basebackup -R``.

Used by the streaming-replica test and ``benchmarks/bench_replica.py``. The servers run from the
PostgreSQL binaries on the machine (``/usr/lib/postgresql/*/bin``), on free loopback ports, in a
temporary directory; as the ``postgres`` system user when run as root (initdb refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.conftest import IN_CI

START_WAIT_S = 60
"""Bound on the wait for a server to accept connections."""
REPLAY_WAIT_S = 60.0
"""Bound on the wait for the standby to replay what the primary committed."""


def bindir() -> Path | None:
    """The newest installed PostgreSQL binaries, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_basebackup")
    return Path(which).parent if which else None


def required_bindir(what: str) -> Path:
    """``bindir()``; without binaries, a failure under CI=true, else a loud skip of ``what``."""
    binaries = bindir()
    if binaries is None:
        if IN_CI:
            pytest.fail("the PostgreSQL binaries are required under CI=true")
        pytest.skip(f"SKIPPED LOUDLY (not under CI): no PostgreSQL binaries for {what}")
    return binaries


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One running server."""

    datadir: Path
    port: int

    def url(self, database: str) -> str:
        """A ledger URL of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


@dataclass
class Replica:
    """A primary and its hot standby."""

    primary: Server
    standby: Server

    def wait_replayed(self, database: str, timeout_s: float = REPLAY_WAIT_S) -> None:
        """Waits until the standby has replayed everything the primary has committed."""
        with psycopg.connect(self.primary.url(database), autocommit=True) as connection:
            row = connection.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.standby.url(database), autocommit=True) as connection:
            while True:
                row = connection.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                if row is not None and row[0]:
                    return
                if time.monotonic() > deadline:
                    msg = f"the standby did not replay up to {target} in {timeout_s} s"
                    raise TimeoutError(msg)
                time.sleep(0.05)


class _Runner:
    def __init__(self, binaries: Path, root: Path) -> None:
        self.binaries = binaries
        self.root = root
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]

    def run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.binaries / program), *args],
            check=True,
            capture_output=True,
            timeout=START_WAIT_S,
        )

    def start(self, datadir: Path, port: int, connections_max: int = 40) -> Server:
        options = (
            f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            f" -c shared_buffers=32MB -c max_connections={connections_max}"
        )
        self.run("pg_ctl", "-D", str(datadir), "-w", "-l", f"{datadir}.log", "-o", options, "start")
        return Server(datadir, port)

    def stop(self, server: Server) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run("pg_ctl", "-D", str(server.datadir), "-m", "immediate", "stop")


@contextlib.contextmanager
def replica(binaries: Path, database: str = "ledger") -> Iterator[Replica]:
    """A primary with ``database`` and a hot standby of it, both stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="ledger-replica-"))
    runner = _Runner(binaries, root)
    servers: list[Server] = []
    try:
        primary_dir = root / "primary"
        runner.run("initdb", "-D", str(primary_dir), "-U", "postgres", "-A", "trust", "-N")
        primary = runner.start(primary_dir, _free_port())
        servers.append(primary)
        with psycopg.connect(primary.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        standby_dir = root / "standby"
        runner.run(
            "pg_basebackup",
            "-D",
            str(standby_dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
        )
        standby = runner.start(standby_dir, _free_port())
        servers.append(standby)
        yield Replica(primary, standby)
    finally:
        for server in reversed(servers):
            runner.stop(server)
        shutil.rmtree(root, ignore_errors=True)


PRIVATE_CONNECTIONS_MAX = 120
"""A private server's connections: room for several ledgers' pools at once."""


class PrivateServer:
    """One private server that a test may stop and start again on the same port."""

    def __init__(self, runner: _Runner, server: Server) -> None:
        self._runner = runner
        self.server = server

    def url(self, database: str) -> str:
        """A ledger URL of ``database`` on this server."""
        return self.server.url(database)

    def stop(self) -> None:
        """Stops the server at once (``pg_ctl stop -m immediate``): clients see it vanish."""
        self._runner.stop(self.server)

    def start(self) -> None:
        """Starts it again on the same port, with the same data."""
        self._runner.start(self.server.datadir, self.server.port, PRIVATE_CONNECTIONS_MAX)


@contextlib.contextmanager
def private_server(binaries: Path, database: str = "ledger") -> Iterator[PrivateServer]:
    """A server of the test's own with ``database``, stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="ledger-private-"))
    runner = _Runner(binaries, root)
    made: Server | None = None
    try:
        datadir = root / "data"
        runner.run("initdb", "-D", str(datadir), "-U", "postgres", "-A", "trust", "-N")
        made = runner.start(datadir, _free_port(), PRIVATE_CONNECTIONS_MAX)
        with psycopg.connect(made.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        yield PrivateServer(runner, made)
    finally:
        if made is not None:
            runner.stop(made)
        shutil.rmtree(root, ignore_errors=True)
