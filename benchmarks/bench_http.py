"""HTTP benchmark: ``ledger serve`` against the same ledger called in-process, in one run.

On a fresh PostgreSQL database (the tests' server), with projections off on both sides (this
measures the write path; views may follow in another process):

- in-process baselines, in this process: ``aexecute`` of single ConsumeStamp commands from 16
  asyncio tasks on one ``Ledger``, and ``execute_many`` of 1,000-command batches from one caller;
- HTTP, ``ledger serve --workers 1`` in a subprocess: 16 concurrent keep-alive clients sending
  single ``POST /v1/commands`` (wrk with a Lua script making a fresh CFDI UUID per request when
  wrk is installed (Debian's ``wrk``), else an asyncio httpx client in another process), and
  one client sending ``POST /v1/commands/batch`` with 1,000 commands a request (httpx, bodies
  encoded before the clock starts).

Each side gets its own stamping accounts (so neither runs on state the other made stale), and the
two take turns for ``--rounds`` rounds; rates are medians of the rounds, latencies (p50, p99) are
those of the median round. The server logs warnings only (``LEDGER_LOG_LEVEL=WARNING``), like
the library with no logging configured. Usage::

    .venv/bin/python benchmarks/bench_http.py [--seconds 8] [--rounds 3] [--client wrk|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

# Runs from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_write import consumptions

from adapters.storage.api_keys import ApiKeyStore
from benchmarks.common import PG_BASE_DEFAULT, add_clients, build_network, fresh_pg_database
from ledger.api import Ledger
from ledger.errors import Rejected

CONCURRENCY = 16
BATCH = 1_000
CTIS = 1_000
STAMPS_PER_CTI_SECOND = 100
"""Stamps each CTI gets per second measured on its side: the in-process side spends up to about
50,000 a second (``execute_many``) over its 1,000 CTIs. With too few, the last rounds measure
``insufficient_stamps`` rejections (counted as errors), not consumptions."""

WRK_SCRIPT = r"""
-- One ConsumeStamp per request, each with a fresh CFDI UUID: a run nonce, the thread, a counter.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local counter = 0
local ctis = {}
local nonce = "00000000"
function init(args)
  nonce = args[1]
  for i = 0, tonumber(args[2]) - 1 do ctis[#ctis + 1] = args[3] .. i .. "-cti" end
end
function request()
  counter = counter + 1
  local cti = ctis[(counter * 7 + tid) % #ctis + 1]
  local body = string.format(
    '{"type":"ConsumeStamp","cti_id":"%s","cfdi_uuid":"%s-%04x-4000-8000-%012x",' ..
    '"issuer_rfc":"GODE561231GR8"}', cti, nonce, tid, counter)
  return wrk.format("POST", "/v1/commands", wrk.headers, body)
end
"""


@dataclass
class Figure:
    """One measurement: commands a second and per-call latency percentiles (ms)."""

    rate: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    commands: int = 0
    cpu_us: float = float("nan")
    """CPU time of the ledger's process (in-process: this one; HTTP: the server) per command."""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# In-process baselines ---------------------------------------------------------------------------


def measure_aexecute(lg: Ledger, ctis: list[str], seconds: float) -> Figure:
    """``aexecute`` from 16 asyncio tasks for ``seconds``."""
    latencies: list[float] = []
    errors = 0

    async def task(commands: list[dict[str, Any]], stop_at: float) -> None:
        nonlocal errors
        for command in commands:
            if time.perf_counter() >= stop_at:
                return
            started = time.perf_counter()
            try:
                await lg.aexecute(command)
            except Rejected:
                errors += 1
            latencies.append(time.perf_counter() - started)

    plans = [consumptions(ctis, 10_000) for _ in range(CONCURRENCY)]  # outside the CPU count

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(task(plan, started + seconds) for plan in plans))
        return time.perf_counter() - started

    cpu = time.process_time()
    took = asyncio.run(main())
    cpu = time.process_time() - cpu
    return Figure(
        len(latencies) / took,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        errors,
        len(latencies),
        cpu / len(latencies) * 1e6,
    )


def measure_execute_many(lg: Ledger, ctis: list[str], seconds: float) -> Figure:
    """``execute_many`` of 1,000-command batches from one caller for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    commands = 0
    cpu_s = 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch = consumptions(ctis, BATCH)  # made outside the CPU count, as the client's are
        cpu = time.process_time()
        call = time.perf_counter()
        results = lg.execute_many(batch)
        latencies.append(time.perf_counter() - call)
        cpu_s += time.process_time() - cpu
        errors += sum(1 for r in results if isinstance(r, Rejected))
        commands += len(batch)
    took = time.perf_counter() - started
    return Figure(
        commands / took,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        errors,
        commands,
        cpu_s / commands * 1e6,
    )


# HTTP clients (other processes) -----------------------------------------------------------------


def wrk_singles(base: str, key: str, prefix: str, seconds: float) -> Figure:
    """wrk: 2 threads, 16 connections, single ConsumeStamp requests for ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        wrk = shutil.which("wrk")
        assert wrk is not None, "wrk is not installed (apt-get install wrk), use --client httpx"
        done = subprocess.run(
            [
                wrk,
                "-t2",
                f"-c{CONCURRENCY}",
                f"-d{seconds:g}s",
                "--latency",
                "-H",
                f"Authorization: Bearer {key}",
                "-H",
                "Content-Type: application/json",
                "-s",
                script.name,
                base,
                "--",
                uuid.uuid4().hex[:8],
                str(CTIS),
                prefix,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(script.name)
    out = done.stdout

    def millis(label: str) -> float:
        found = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert found is not None, out
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate is not None, out
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    assert requests is not None, out
    return Figure(
        float(rate.group(1)),
        millis("50%"),
        millis("99%"),
        int(errors.group(1)) if errors else 0,
        int(requests.group(1)),
    )


def _httpx_singles(base: str, key: str, ctis: list[str], seconds: float, out: Any) -> None:
    async def main() -> None:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits
        ) as client:

            async def task(stop_at: float) -> None:
                nonlocal errors
                while time.perf_counter() < stop_at:
                    (command,) = consumptions(ctis, 1)
                    started = time.perf_counter()
                    response = await client.post("/v1/commands", json=command, timeout=60)
                    latencies.append(time.perf_counter() - started)
                    errors += response.status_code != 200

            started = time.perf_counter()
            await asyncio.gather(*(task(started + seconds) for _ in range(CONCURRENCY)))
            took = time.perf_counter() - started
        out.put((len(latencies) / took, latencies, errors, len(latencies)))

    asyncio.run(main())


def _httpx_batches(base: str, key: str, ctis: list[str], seconds: float, out: Any) -> None:
    latencies: list[float] = []
    errors = 0
    commands = 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        bodies = [json.dumps(consumptions(ctis, BATCH)).encode() for _ in range(200)]
        started = time.perf_counter()
        for body in bodies:
            if time.perf_counter() - started >= seconds:
                break
            call = time.perf_counter()
            response = client.post(
                "/v1/commands/batch",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=120,
            )
            latencies.append(time.perf_counter() - call)
            errors += sum(1 for r in response.json()["results"] if not r["ok"])
            commands += BATCH
        took = time.perf_counter() - started
    out.put((commands / took, latencies, errors, commands))


def in_process(target: Any, *args: Any) -> Figure:
    """Runs a client function in a fresh (spawned) process; its figure."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    rate, latencies, errors, commands = queue.get(timeout=600)
    process.join(60)
    return Figure(
        rate,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        errors,
        commands,
    )


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_server_cpu(pid: int, run: Any, *args: Any) -> Figure:
    """``run(*args)``'s figure, with the server's CPU time per command (one worker)."""
    before = process_cpu_s(pid)
    figure = run(*args)
    figure.cpu_us = (process_cpu_s(pid) - before) / figure.commands * 1e6
    return figure


@contextlib.contextmanager
def server(url: str, workers: int) -> Iterator[tuple[str, int]]:
    """``ledger serve`` in a subprocess; SIGTERM at the end."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger",
            "serve",
            "--url",
            url,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--projections",
            "off",
        ],
        env={**os.environ, "LEDGER_LOG_LEVEL": "WARNING"},
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each measurement's length")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each side")
    parser.add_argument(
        "--client",
        choices=("wrk", "httpx"),
        default="wrk" if shutil.which("wrk") else "httpx",
        help="the load generator of single requests",
    )
    parser.add_argument("--workers", type=int, default=1, help="ledger serve --workers")
    parser.add_argument("--pg", default=os.environ.get("LEDGER_TEST_PG", PG_BASE_DEFAULT))
    args = parser.parse_args()

    with fresh_pg_database(args.pg) as url:
        lg = Ledger.open(url, projections="off")
        started = time.perf_counter()
        stamps = math.ceil(STAMPS_PER_CTI_SECOND * args.seconds * args.rounds)
        local = build_network(lg, CTIS, stamps, prefix="L")
        remote = add_clients(lg, CTIS, stamps, "H")
        print(f"network: {2 * CTIS:,} CTIs in {time.perf_counter() - started:.0f} s", flush=True)
        keys = ApiKeyStore.open(url)
        _, key = keys.create("M", "write", name="bench", by="bench", now=datetime.now(UTC))
        keys.close()
        # Both sides start cold (the builder's cache is dropped) and warm up the same way: one
        # consumption on each of their CTIs, not counted.
        lg.close()
        lg = Ledger.open(url, projections="off")
        lg.execute_many(consumptions(local, CTIS))
        figures: dict[str, list[Figure]] = {
            "aexecute": [],
            "http_single": [],
            "execute_many": [],
            "http_batch": [],
        }
        with server(url, args.workers) as (base, pid):
            for _ in range(args.workers):
                httpx.post(
                    f"{base}/v1/commands/batch",
                    content=json.dumps(consumptions(remote, CTIS)).encode(),
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=300,
                )
            for round_number in range(args.rounds):
                figures["aexecute"].append(measure_aexecute(lg, local, args.seconds))
                if args.client == "wrk":
                    single = with_server_cpu(pid, wrk_singles, base, key, "H", args.seconds)
                else:
                    single = with_server_cpu(
                        pid, in_process, _httpx_singles, base, key, remote, args.seconds
                    )
                figures["http_single"].append(single)
                figures["execute_many"].append(measure_execute_many(lg, local, args.seconds))
                figures["http_batch"].append(
                    with_server_cpu(
                        pid, in_process, _httpx_batches, base, key, remote, args.seconds
                    )
                )
                if args.workers > 1:  # the process measured is uvicorn's supervisor, not a worker
                    for name in ("http_single", "http_batch"):
                        figures[name][-1].cpu_us = float("nan")
                print(
                    f"round {round_number + 1}: "
                    + ", ".join(f"{k} {v[-1].rate:,.0f}/s" for k, v in figures.items()),
                    flush=True,
                )
        lg.close()

    def median(name: str) -> Figure:
        runs = sorted(figures[name], key=lambda f: f.rate)
        return runs[len(runs) // 2]

    print(
        f"\nPostgreSQL, projections off, {args.rounds} rounds of {args.seconds:g} s, medians "
        f"(client: {args.client}; ledger serve --workers {args.workers}); machine: "
        f"{os.cpu_count()} cores\n"
    )
    print(
        f"{'measurement':58} {'commands/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        f" {'CPU us/cmd':>10}"
    )
    rows = [
        ("aexecute, 16 asyncio tasks, one Ledger (in-process)", "aexecute"),
        ("HTTP POST /v1/commands, 16 keep-alive clients", "http_single"),
        ("execute_many, 1,000-command batches, one caller", "execute_many"),
        ("HTTP POST /v1/commands/batch, 1,000 a request, one client", "http_batch"),
    ]
    for label, name in rows:
        f = median(name)
        print(
            f"{label:58} {f.rate:>11,.0f} {f.p50_ms:>8.2f} {f.p99_ms:>8.2f} {f.errors:>6}"
            f" {f.cpu_us:>10.0f}"
        )
    single = median("http_single").rate / median("aexecute").rate
    batch = median("http_batch").rate / median("execute_many").rate
    print(f"\nHTTP single / aexecute: {single:.2f} x (goal >= 0.5)")
    print(f"HTTP batch / execute_many: {batch:.2f} x (goal >= 0.7)")
    per_round = [
        (h.rate / a.rate, hb.rate / e.rate)
        for a, h, e, hb in zip(
            figures["aexecute"],
            figures["http_single"],
            figures["execute_many"],
            figures["http_batch"],
            strict=True,
        )
    ]
    print(
        "per round (single, batch): "
        + ", ".join(f"({s:.2f}, {b:.2f})" for s, b in per_round)
        + f"; median single {statistics.median(s for s, _ in per_round):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
