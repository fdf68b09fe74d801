"""Instructions per command, counted by callgrind: the same count from run to run, whatever
else the machine is doing (unlike seconds on this shared 2-core machine).

Each scenario runs in a child process under ``valgrind --tool=callgrind --instr-atstart=no``.
Its set-up (imports, the network, the commands as dicts) runs uninstrumented; then a warm-up,
then phase A (N commands) and phase B (3N commands) are each counted alone, through callgrind's
client requests (a few lines of C compiled here, loaded with ctypes). Per command:
(B - A) / 2N, so what a phase costs whatever its size (a call's own overhead) cancels out.

    .venv/bin/python benchmarks/bench_cpu.py                  # every scenario (~3-4 minutes)
    .venv/bin/python benchmarks/bench_cpu.py --only memory     # scenarios whose name has it
    .venv/bin/python benchmarks/bench_cpu.py --check           # CI: the bound of BOUNDS
    .venv/bin/python benchmarks/bench_cpu.py --profile memory-batched  # + callgrind_annotate

PostgreSQL scenarios count the client only (the server is another process); SQLite's work is
in the process, so it is counted. The raw baselines are sqlite3 ``executemany`` of the event rows,
``msgspec.json.decode`` of the same commands, one-row INSERT transactions on sqlite3 (the event
row alone, and a command's rows as the ledger writes them: key, event, chain link) and on
psycopg, and psycopg's ``executemany`` of the event rows.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432"

BOUNDS = {"memory-batched": 75_000}
"""``--check`` (run by ``scripts/test``) fails when a scenario costs more instructions a command
than its bound here: a batched ConsumeStamp on the memory store cost 121,900 before the hot path
was trimmed (157,000 as first counted, the whole process's difference), 76,500 after, and 72,800
once preparing a command read fewer attributes of its model (the bound was 78,000)."""

SHIM_C = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
"""

BATCH = 2_000
"""Commands per ``execute_many`` call in the batched scenarios."""
COST = "fast"
"""The password hashing cost of the benchmark ledgers (no command here hashes one)."""


@dataclass(frozen=True)
class Scenario:
    """A workload: ``n`` commands in phase A (3n in phase B), how they are sent, and what to
    divide by (``per``: commands a unit, 2 for a reserve + post)."""

    name: str
    n: int
    what: str


SCENARIOS = [
    Scenario("memory-batched", BATCH, "ConsumeStamp, execute_many of 2,000, memory store"),
    Scenario("memory-single", 300, "ConsumeStamp, execute one a call, memory store"),
    Scenario("sqlite-batched", BATCH, "ConsumeStamp, execute_many of 2,000, SQLite file"),
    Scenario("sqlite-single", 300, "ConsumeStamp, execute one a call, SQLite file"),
    Scenario("postgres-batched", BATCH, "ConsumeStamp, execute_many of 2,000, PostgreSQL client"),
    Scenario("postgres-single", 300, "ConsumeStamp, execute one a call, PostgreSQL client"),
    Scenario("memory-transfer-batched", BATCH, "TransferStamps, execute_many of 2,000, memory"),
    Scenario("memory-transfer-single", 300, "TransferStamps, execute one a call, memory"),
    Scenario("memory-hold-batched", BATCH, "ReserveStamp + PostReservation (a pair), memory"),
    Scenario("raw-sqlite-executemany", BATCH, "raw: sqlite3 executemany of the event rows"),
    Scenario("raw-msgspec-decode", BATCH, "raw: msgspec.json.decode of the ConsumeStamp JSON"),
    Scenario("raw-sqlite-one-row", 300, "raw: sqlite3 one-row INSERT transaction (BEGIN, COMMIT)"),
    Scenario("raw-sqlite-ledger-row", 300, "raw: sqlite3 transaction of a command's rows + link"),
    Scenario("raw-postgres-one-row", 300, "raw: psycopg one-row INSERT transaction, client"),
    Scenario("raw-postgres-executemany", BATCH, "raw: psycopg executemany of the rows, client"),
]


# The child: one scenario under callgrind ---------------------------------------------------


class Callgrind:
    """callgrind's client requests (no-ops outside valgrind)."""

    def __init__(self, shim: str) -> None:
        self._lib = ctypes.CDLL(shim)

    def start(self) -> None:
        self._lib.cg_start()

    def stop(self) -> None:
        self._lib.cg_stop()

    def zero(self) -> None:
        self._lib.cg_zero()

    def dump(self, label: str) -> None:
        self._lib.cg_dump(label.encode())


def _consume(cti_id: str) -> dict[str, Any]:
    return {
        "type": "ConsumeStamp",
        "actor": "M",
        "cti_id": cti_id,
        "cfdi_uuid": str(uuid.uuid4()),
        "issuer_rfc": "GODE561231GR8",
    }


def _transfer() -> dict[str, Any]:
    return {
        "type": "TransferStamps",
        "actor": "D1",
        "transfer_id": f"T-{uuid.uuid4()}",
        "from_id": "D1",
        "to_id": "C1-cti",
        "quantity": 1,
        "amount": "1.00",
    }


def _hold_pair() -> list[dict[str, Any]]:
    hold_id = f"H-{uuid.uuid4()}"
    return [
        {
            "type": "ReserveStamp",
            "actor": "M",
            "hold_id": hold_id,
            "cti_id": "C1-cti",
            "cfdi_uuid": str(uuid.uuid4()),
            "issuer_rfc": "GODE561231GR8",
        },
        {"type": "PostReservation", "actor": "M", "hold_id": hold_id},
    ]


@contextlib.contextmanager
def _ledger(backend: str, pg: str) -> Iterator[Any]:
    from ledger.api import Ledger  # noqa: PLC0415  (imported in the child only)

    if backend == "memory":
        with Ledger.open("memory://", projections="off", password_cost=COST) as lg:
            yield lg
        return
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            with Ledger.open(url, projections="off", password_cost=COST) as lg:
                yield lg
        return
    import psycopg  # noqa: PLC0415

    name = f"bench_cpu_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with Ledger.open(f"{pg}/{name}", projections="off", password_cost=COST) as lg:
            yield lg
    finally:
        with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _ledger_workload(name: str, lg: Any, total: int) -> Callable[[int], None]:
    """Builds the network and the commands; returns ``send(count)``, which sends the next
    ``count`` units of work."""
    from ledger.first_steps import quickstart  # noqa: PLC0415

    quickstart(lg, stamps=total * 2 + 10)
    per = 2 if "hold" in name else 1
    if "transfer" in name:
        buy = {"type": "BuyPackage", "buyer_id": "D1", "seller_id": "M", "actor": "D1"}
        lg.execute({**buy, "package_id": "P1000", "count": total // 1000 + 2})
        commands = [_transfer() for _ in range(total)]
    elif "hold" in name:
        commands = [c for _ in range(total) for c in _hold_pair()]
    else:
        commands = [_consume("C1-cti") for _ in range(total)]
    position = 0
    single = name.endswith("-single")

    def send(count: int) -> None:
        nonlocal position
        chunk = commands[position : position + count * per]
        position += count * per
        if single:
            for command in chunk:
                lg.execute(command)
            return
        for start in range(0, len(chunk), BATCH * per):
            results = lg.execute_many(chunk[start : start + BATCH * per])
            assert all(getattr(r, "ok", False) for r in results), results[:3]

    return send


def _raw_workload(name: str, total: int, folder: str, pg: str) -> Callable[[int], None]:
    import sqlite3  # noqa: PLC0415

    import msgspec  # noqa: PLC0415

    if name.startswith("raw-postgres"):
        return _raw_postgres(name, total, pg)
    if name == "raw-sqlite-ledger-row":
        return _raw_sqlite_ledger_rows(total, folder)
    commands = [_consume("C1-cti") for _ in range(total)]
    if name == "raw-msgspec-decode":
        texts = [msgspec.json.encode(c) for c in commands]
        decode = msgspec.json.Decoder().decode
        position = 0

        def decode_next(count: int) -> None:
            nonlocal position
            for text in texts[position : position + count]:
                decode(text)
            position += count

        return decode_next
    connection = sqlite3.connect(f"{folder}/raw.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(
        "CREATE TABLE events (originator_id TEXT, originator_version INTEGER, topic TEXT,"
        " state BLOB, PRIMARY KEY (originator_id, originator_version))"
    )
    # About the size of a stored StampConsumed (its msgspec state).
    rows = [("C1-cti", version, "StampingAccount.StampConsumed#2", os.urandom(180))
            for version in range(1, total + 1)]  # fmt: skip
    position = 0
    if name == "raw-sqlite-one-row":

        def insert_each(count: int) -> None:
            nonlocal position
            for row in rows[position : position + count]:
                connection.execute("BEGIN")
                connection.execute("INSERT INTO events VALUES (?, ?, ?, ?)", row)
                connection.execute("COMMIT")
            position += count

        return insert_each

    def insert_next(count: int) -> None:
        nonlocal position
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO events VALUES (?, ?, ?, ?)",
                               rows[position : position + count])  # fmt: skip
        connection.execute("COMMIT")
        position += count

    return insert_next


def _raw_sqlite_ledger_rows(total: int, folder: str) -> Callable[[int], None]:
    """What one command's write costs on SQLite at the least: its statements on a bare sqlite3
    connection (key row, event row, chain head read, link hashed and inserted), one
    transaction each, as ``LedgerSQLiteRecorder`` writes them."""
    import sqlite3  # noqa: PLC0415

    from ledger.chain import events_digest, link  # noqa: PLC0415

    connection = sqlite3.connect(f"{folder}/raw.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    for statement in (
        "CREATE TABLE events (originator_id TEXT, originator_version INTEGER, topic TEXT,"
        " state BLOB, PRIMARY KEY (originator_id, originator_version))",
        "CREATE TABLE keys (key TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL,"
        " outcome BLOB NOT NULL)",
        "CREATE TABLE chain (last_id INTEGER PRIMARY KEY, first_id INTEGER NOT NULL,"
        " hash BLOB NOT NULL)",
        "INSERT INTO chain VALUES (0, 0, x'00')",
    ):
        connection.execute(statement)
    rows = [("C1-cti", version, "StampingAccount.StampConsumed#2", os.urandom(180))
            for version in range(1, total + 1)]  # fmt: skip
    keys = [(f"cfdi:{uuid.uuid4()}", "f" * 32, b'{"type":"ConsumeStamp"}') for _ in rows]
    position = 0

    @dataclass(frozen=True)
    class Row:
        originator_id: str
        originator_version: int
        topic: str
        state: bytes

    def write_each(count: int) -> None:
        nonlocal position
        cursor = connection.cursor()
        for row, key in zip(rows[position : position + count], keys[position : position + count],
                            strict=True):  # fmt: skip
            cursor.execute("BEGIN")
            cursor.execute("INSERT INTO keys VALUES (?, ?, ?)", key)
            cursor.execute("INSERT INTO events VALUES (?, ?, ?, ?)", row)
            last = cursor.lastrowid
            cursor.execute("SELECT hash FROM chain ORDER BY last_id DESC LIMIT 1")
            previous = cursor.fetchone()[0]
            chained = link(previous, events_digest([Row(*row)]))
            cursor.execute("INSERT INTO chain VALUES (?, ?, ?)", (last, last, chained))
            cursor.execute("COMMIT")
        position += count

    return write_each


def _raw_postgres(name: str, total: int, pg: str) -> Callable[[int], None]:
    """psycopg's own client-side cost: one-row INSERT transactions, or ``executemany`` of
    ``BATCH`` rows a transaction, into a table shaped like the events table (a database of
    its own, dropped when the process ends)."""
    import atexit  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    database = f"bench_cpu_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')

    connection = psycopg.connect(f"{pg}/{database}")

    def drop() -> None:
        connection.close()
        with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')

    atexit.register(drop)
    connection.execute(
        "CREATE TABLE events (notification_id BIGSERIAL, originator_id TEXT, originator_version"
        " INTEGER, topic TEXT, state BYTEA, PRIMARY KEY (originator_id, originator_version))"
    )
    connection.commit()
    rows = [("C1-cti", version, "StampingAccount.StampConsumed#2", os.urandom(180))
            for version in range(1, total + 1)]  # fmt: skip
    insert = (
        "INSERT INTO events (originator_id, originator_version, topic, state)"
        " VALUES (%s, %s, %s, %s)"
    )
    position = 0

    def send(count: int) -> None:
        nonlocal position
        chunk = rows[position : position + count]
        position += count
        with connection.cursor() as cursor:
            if name == "raw-postgres-one-row":
                for row in chunk:
                    cursor.execute(insert, row)
                    connection.commit()
                return
            for start in range(0, len(chunk), BATCH):
                cursor.executemany(insert, chunk[start : start + BATCH])
                connection.commit()

    return send


def child(name: str, n: int, shim: str, pg: str) -> None:
    """Runs one scenario: set-up uninstrumented, warm-up, then phases A (n) and B (3n)."""
    sys.path.insert(0, str(ROOT))
    callgrind = Callgrind(shim)
    warm = max(n // 4, 50)
    total = warm + n + 3 * n
    with contextlib.ExitStack() as stack:
        if name.startswith("raw-"):
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            send = _raw_workload(name, total, folder, pg)
        else:
            backend = name.split("-", maxsplit=1)[0]
            lg = stack.enter_context(_ledger(backend, pg))
            send = _ledger_workload(name, lg, total)
        callgrind.start()
        send(warm)
        callgrind.zero()
        send(n)
        callgrind.dump("A")
        send(3 * n)
        callgrind.dump("B")
        callgrind.stop()


# The parent: runs the children and reads their counts --------------------------------------


def build_shim(folder: Path) -> Path:
    """Compiles the client-request shim (valgrind's header, from Debian's valgrind)."""
    header = Path("/usr/include/valgrind/callgrind.h")
    if not header.exists():
        sys.exit(f"bench_cpu: {header} is missing (Debian's valgrind package installs it)")
    source = folder / "cg_shim.c"
    source.write_text(SHIM_C)
    library = folder / "cg_shim.so"
    subprocess.run(
        ["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],  # noqa: S607
        check=True,
    )
    return library


_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def _phase_counts(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for out in folder.glob("callgrind.out*"):
        text = out.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: Client Request: (\w+)", text, re.MULTILINE)
        found = _TOTALS.search(text)
        if trigger and found:
            counts[trigger.group(1)] = int(found.group(1))
    return counts


def measure(scenario: Scenario, shim: Path, pg: str, profile: bool) -> float:
    """Instructions per command of one scenario (a child under callgrind)."""
    with tempfile.TemporaryDirectory() as folder:
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={folder}/callgrind.out.%p",
            sys.executable, str(Path(__file__).resolve()), "--child", scenario.name,
            "--n", str(scenario.n), "--shim", str(shim), "--pg", pg,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"bench_cpu: {scenario.name} failed:\n{done.stderr[-3000:]}")
        counts = _phase_counts(Path(folder))
        if set(counts) != {"A", "B"}:
            sys.exit(f"bench_cpu: {scenario.name}: no phase counts in {sorted(counts)}")
        if profile:
            _print_profile(Path(folder))
        return (counts["B"] - counts["A"]) / (2 * scenario.n)


def _print_profile(folder: Path) -> None:
    """callgrind_annotate of phase B: the top functions by inclusive cost."""
    for out in folder.glob("callgrind.out*"):
        if "Client Request: B" in out.read_text(errors="replace"):
            annotated = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", str(out)],  # noqa: S607
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            lines = annotated.stdout.splitlines()
            start = next((i for i, line in enumerate(lines) if "file:function" in line), 0)
            print("\n".join(lines[start : start + 26]))


def main() -> None:
    """Measures the scenarios and prints a table (or checks the bounds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="scenarios whose name contains this")
    parser.add_argument("--check", action="store_true", help="fail past a bound of BOUNDS")
    parser.add_argument("--profile", default="", help="print the callgrind profile of these")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--pg", default=os.environ.get("LEDGER_BENCH_PG", PG_DEFAULT))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shim", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.shim, args.pg)
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench_cpu: valgrind is not installed (Debian's valgrind package)")
    chosen = [s for s in SCENARIOS if (s.name in BOUNDS if args.check else args.only in s.name)]
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        shim = build_shim(Path(folder))
        for scenario in chosen:
            per = measure(scenario, shim, args.pg, profile=scenario.name in args.profile.split(","))
            figures[scenario.name] = per
            if not args.json:
                print(f"{scenario.name:<26} {per:>12,.0f} instructions a command   {scenario.what}",
                      flush=True)  # fmt: skip
    if args.json:
        print(json.dumps(figures))
    if args.check:
        over = {name: per for name, per in figures.items() if per > BOUNDS[name]}
        for name, per in over.items():
            print(f"bench_cpu: {name} costs {per:,.0f} instructions a command, over its bound "
                  f"{BOUNDS[name]:,}")  # fmt: skip
        if over:
            sys.exit(1)
        print("bench_cpu: within the bounds")


if __name__ == "__main__":
    main()
