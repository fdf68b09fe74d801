"""Credentials-check benchmark: does the answer's time tell an unknown id, a lock, a wrong password?

For each backend (a temp SQLite file, a fresh PostgreSQL database) and the production password
cost (scrypt ``normal``), times ``VerifyStampingCredentials`` on four paths, interleaved so they
share the load of the moment: an unknown CTI id (``valid: false``, nothing recorded), a locked CTI
(``credentials_locked``, nothing recorded), a wrong password (``valid: false``, one event
recorded) and the right password (``valid: true``). The raw baseline of the same run is one bare
``verify_password`` (the scrypt hash every path costs). Medians over ``--checks`` per path, with
the 10th-90th percentiles. Usage::

    .venv/bin/python benchmarks/bench_credentials.py [--checks 40] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.common import fresh_pg_database
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from ledger.passwords import hash_password, verify_password
from tests.support import CLIENT, DISTRIBUTOR, MASTER, build_network

PG_BASE = "postgresql://postgres@127.0.0.1:5432"
PASSWORD = "Tr0mbón-azul-77"  # noqa: S105  (a throwaway test password)
CTIS_LOCKED = "LOCKED"
CTI_OPEN = "OPEN"


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh database URL of the backend, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{Path(directory) / 'ledger.db'}"
        return
    with fresh_pg_database(PG_BASE, "bench_credentials") as url:
        yield url


def check(cti_id: str, password: str) -> dict[str, str]:
    """VerifyStampingCredentials by the stamping service."""
    return {
        "type": "VerifyStampingCredentials",
        "cti_id": cti_id,
        "password": password,
        "actor": MASTER,
    }


def timed(call: Callable[[], object]) -> float:
    """Milliseconds one call took (a rejection counts as an answer)."""
    started = time.perf_counter()
    with suppress(Rejected):
        call()
    return (time.perf_counter() - started) * 1000


def summary(samples: list[float]) -> str:
    """Median and 10th-90th percentiles."""
    deciles = statistics.quantiles(samples, n=10)
    return f"median {statistics.median(samples):7.2f} ms [{deciles[0]:.2f}-{deciles[-1]:.2f}]"


def run(backend: str, checks: int) -> None:
    """Times every path on one backend and prints the figures."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    with database(backend) as url, Ledger.open(url, clock=clock, projections="off") as lg:
        build_network(lg)
        # The wrong-password path uses a CTI for every four checks, so none of them locks.
        wrong = [f"W{n}" for n in range((checks + 3) // 4)]
        for cti_id in (CTIS_LOCKED, CTI_OPEN, *wrong):
            lg.execute(
                {
                    "type": "OpenStampingAccount",
                    "cti_id": cti_id,
                    "client_id": CLIENT,
                    "kind": "standard",
                    "password": PASSWORD,
                    "actor": DISTRIBUTOR,
                }
            )
        for _ in range(5):
            lg.execute(check(CTIS_LOCKED, "no-es-la-clave"))
        stored = hash_password(PASSWORD)
        paths: dict[str, Callable[[], object]] = {
            "raw verify_password (one scrypt)": lambda: verify_password("no-es-la-clave", stored),
            "unknown id (valid false)": lambda: lg.execute(check("NOBODY", PASSWORD)),
            "locked (credentials_locked)": lambda: lg.execute(check(CTIS_LOCKED, PASSWORD)),
            "wrong password (valid false, recorded)": lambda: lg.execute(
                check(wrong[len(samples["right password (valid true)"]) // 4], "no-es-la-clave")
            ),
            "right password (valid true)": lambda: lg.execute(check(CTI_OPEN, PASSWORD)),
        }
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(checks):
            for name, call in paths.items():
                samples[name].append(timed(call))
        print(f"{backend}, {checks} checks per path, scrypt cost normal:")
        for name, values in samples.items():
            print(f"  {name:42} {summary(values)}")


def main() -> None:
    """Runs the backends asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=40)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    logging.getLogger("ledger").setLevel(logging.WARNING)
    for backend in args.backends.split(","):
        run(backend, args.checks)


if __name__ == "__main__":
    main()
