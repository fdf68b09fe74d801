"""A throwaway Patroni cluster: etcd and two PostgreSQL nodes in synchronous mode, on loopback.

Used by ``tests/integration/test_failover.py``. Everything runs from the machine's binaries
(Debian's ``patroni`` 3.0, ``etcd-server`` 3.4 and ``postgresql-15``; ``scripts/setup``
installs the first two when they are absent), on free loopback ports, in a temporary directory,
as the ``postgres`` system user when run as root (PostgreSQL refuses root). Every process it
starts is stopped on exit, and every PostgreSQL server too (Patroni starts them in sessions of
their own), even when the test fails.

The settings make a failover quick and lossless: ``loop_wait`` 1 s, ``ttl`` 10 s,
``primary_start_timeout`` 0 (a primary whose postmaster dies is failed over at once instead of
restarted in place), ``synchronous_mode`` (a commit is acknowledged only once the standby has
it, and only that standby may be promoted), ``use_pg_rewind`` (the old primary rejoins as a
standby).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.pgcluster import bindir

START_WAIT_S = 90.0
"""Bound on the wait for the cluster to bootstrap (etcd, a leader, a synchronous standby)."""
STOP_WAIT_S = 20.0
"""Bound on a clean stop of a Patroni node before it is killed."""
POLL_S = 0.05
NODES = ("node1", "node2")


def tools() -> dict[str, str] | None:
    """Paths of ``patroni``, ``etcd`` and PostgreSQL's binaries, or None if one is missing."""
    patroni = shutil.which("patroni")
    etcd = shutil.which("etcd")
    binaries = bindir()
    if patroni is None or etcd is None or binaries is None:
        return None
    return {"patroni": patroni, "etcd": etcd, "bin_dir": str(binaries)}


def versions(found: dict[str, str]) -> str:
    """What the cluster runs on, for the test's report."""

    def first_line(*command: str) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"? ({exc})"
        return (done.stdout or done.stderr).strip().splitlines()[0]

    return ", ".join(
        (
            first_line(found["patroni"], "--version"),
            first_line(found["etcd"], "--version"),
            first_line(str(Path(found["bin_dir"]) / "postgres"), "--version"),
        )
    )


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Node:
    """One Patroni node: its PostgreSQL port, REST API port and data directory."""

    name: str
    port: int
    api_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    postmasters: set[int] = field(default_factory=set)

    def url(self, database: str) -> str:
        """A plain URL of ``database`` on this node."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (from ``postmaster.pid``), or None."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        self.postmasters.add(pid)
        return pid

    def api(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Calls this node's REST API: (HTTP status, decoded JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                status, raw = int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            status, raw = int(exc.code), exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def is_primary(self) -> bool:
        """Whether this node's PostgreSQL is a writable primary (asked of the server itself)."""
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2, autocommit=True) as c:
                row = c.execute("SELECT NOT pg_is_in_recovery()").fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])


@dataclass
class Cluster:
    """Two Patroni nodes under one etcd; the URL lists both hosts."""

    scope: str
    root: Path
    nodes: dict[str, Node]
    etcd_port: int

    def url(self, database: str, attrs: str = "read-write", **options: object) -> str:
        """A ledger URL naming both nodes, libpq style, with ``target_session_attrs``."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes.values())
        query = "&".join(
            [f"target_session_attrs={attrs}", *(f"{k}={v}" for k, v in options.items())]
        )
        return f"postgresql://postgres@{hosts}/{database}?{query}"

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the members (name, role, state, timeline, lag), from any node."""
        for node in self.nodes.values():
            with contextlib.suppress(OSError, ValueError):
                status, body = node.api("/cluster")
                if status == 200 and isinstance(body, dict):
                    return list(body.get("members", []))
        return []

    def leader(self) -> str | None:
        """The leader's name, as Patroni has it."""
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return str(member["name"])
        return None

    def wait_healthy(self, leader: str, timeout_s: float = START_WAIT_S) -> None:
        """Waits until ``leader`` leads, is a writable primary, and the other node is its
        synchronous standby, streaming."""
        deadline = time.monotonic() + timeout_s
        while True:
            members = {m.get("name"): m for m in self.members()}
            others = [m for name, m in members.items() if name != leader]
            if (
                members.get(leader, {}).get("role") == "leader"
                and others
                and all(
                    m.get("role") == "sync_standby" and m.get("state") in ("streaming", "running")
                    for m in others
                )
                and self.nodes[leader].is_primary()
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"cluster not healthy with {leader} leading: {members}\n" + self.logs()
                )
            time.sleep(0.2)

    def switchover(self, leader: str, candidate: str) -> None:
        """Asks Patroni for a planned switchover from ``leader`` to ``candidate``."""
        status, body = self.nodes[leader].api(
            "/switchover", {"leader": leader, "candidate": candidate}
        )
        if status != 200:
            raise RuntimeError(f"switchover refused ({status}): {body}")

    def kill_postmaster(self, name: str) -> int:
        """SIGKILLs ``name``'s postmaster (Patroni on that node stays up); returns its pid."""
        pid = self.nodes[name].postmaster_pid()
        assert pid is not None, f"{name} runs no postmaster"
        os.kill(pid, signal.SIGKILL)
        return pid

    def logs(self, lines: int = 40) -> str:
        """The last lines of every node's Patroni log and etcd's (for a failure's report)."""
        parts = []
        for path in sorted(self.root.glob("*.log")):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def _config(scope: str, node: Node, etcd_port: int, root: Path, bin_dir: str) -> dict[str, Any]:
    return {
        "scope": scope,
        "namespace": "/ledger-test/",
        "name": node.name,
        "restapi": {
            "listen": f"127.0.0.1:{node.api_port}",
            "connect_address": f"127.0.0.1:{node.api_port}",
        },
        "etcd3": {"hosts": f"127.0.0.1:{etcd_port}"},
        "bootstrap": {
            "dcs": {
                "ttl": 10,
                "loop_wait": 1,
                "retry_timeout": 4,
                "maximum_lag_on_failover": 1_048_576,
                "primary_start_timeout": 0,
                "synchronous_mode": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "hot_standby": "on",
                        "wal_keep_size": "128MB",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.port}",
            "connect_address": f"127.0.0.1:{node.port}",
            "data_dir": str(node.data_dir),
            "bin_dir": bin_dir,
            "pgpass": str(root / f"{node.name}.pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": "postgres"},
                "replication": {"username": "replicator", "password": "replicator"},
                "rewind": {"username": "postgres", "password": "postgres"},
            },
            "pg_hba": [
                "local all all trust",
                "host replication replicator 127.0.0.1/32 trust",
                "host all all 127.0.0.1/32 trust",
            ],
            "parameters": {
                "unix_socket_directories": str(root),
                "shared_buffers": "32MB",
                "max_connections": 80,
                # A SIGKILLed postmaster loses no page the kernel already has: the test kills
                # processes, never the machine, so fsync only costs time here.
                "fsync": "off",
                "synchronous_commit": "on",
            },
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


class _Processes:
    """What the cluster started, so that all of it is stopped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.as_postgres: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            self.as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        env = {**os.environ, "HOME": str(self.root), "PGPASSFILE": str(self.root / "pgpass")}
        if platform.machine() not in ("x86_64", "AMD64"):
            # etcd 3.4 refuses other architectures unless told it may run there.
            env["ETCD_UNSUPPORTED_ARCH"] = {"aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            )
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            env=env,
            start_new_session=True,
            **self.as_postgres,
        )
        log.close()
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], wait_s: float = STOP_WAIT_S) -> None:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait_s)
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


def _wait_etcd(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while True:
        health = f"http://127.0.0.1:{port}/health"
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(health, timeout=2) as response,
        ):
            if json.loads(response.read()).get("health") == "true":
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"etcd did not start (exit {process.poll()})")
        time.sleep(0.1)


@contextlib.contextmanager
def patroni_cluster(found: dict[str, str], database: str = "ledger") -> Iterator[Cluster]:
    """etcd and two Patroni nodes; ``node1`` leads with ``node2`` its synchronous standby, and
    ``database`` exists. Stopped and removed on exit, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="ledger-patroni-"))
    processes = _Processes(root)
    etcd_port, peer_port, *ports = _free_ports(2 + 2 * len(NODES))
    nodes = {
        name: Node(name, ports[2 * i], ports[2 * i + 1], root / name / "data")
        for i, name in enumerate(NODES)
    }
    cluster = Cluster(f"ledger-{os.getpid()}-{etcd_port}", root, nodes, etcd_port)
    try:
        etcd = processes.start(
            "etcd",
            [
                found["etcd"],
                "--name=etcd0",
                f"--data-dir={root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=etcd0=http://127.0.0.1:{peer_port}",
                f"--initial-cluster-token={cluster.scope}",
                "--initial-cluster-state=new",
            ],
        )
        _wait_etcd(etcd_port, etcd)
        for name, node in nodes.items():
            (root / name).mkdir()
            if processes.as_postgres:
                shutil.chown(root / name, "postgres", "postgres")
            config = root / f"{name}.yml"
            config.write_text(
                json.dumps(_config(cluster.scope, node, etcd_port, root, found["bin_dir"]))
            )
            node.process = processes.start(name, [found["patroni"], str(config)])
            if name == NODES[0]:
                # The first node bootstraps alone, so that it leads.
                _wait_for(lambda: cluster.leader() == NODES[0], "node1 to lead", cluster)
        cluster.wait_healthy(NODES[0])
        with psycopg.connect(nodes[NODES[0]].url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        yield cluster
    finally:
        for node in nodes.values():
            node.postmaster_pid()  # remember it: Patroni starts PostgreSQL in its own session
        for node in nodes.values():
            if node.process is not None:
                processes.stop(node.process)
        for node in nodes.values():
            for pid in node.postmasters:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for process in processes.started:
            processes.stop(process, wait_s=5)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(condition: Any, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}\n" + cluster.logs())
        time.sleep(0.2)
