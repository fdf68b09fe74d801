"""The ``ledger`` command line (also ``python -m ledger``), DESIGN §7.

Every subcommand takes ``--url`` (default ``$LEDGER_URL`` or ``sqlite:///ledger.db``):

- ``demo``: builds a realistic network on the database and prints the main views;
- ``exec``: JSON-lines commands on stdin, JSON-lines outcomes on stdout, exactly one per line, in
  order, whatever the line holds; a bad line gets its ``{"ok": false, ...}`` and the next runs;
- ``project [--follow [--key FILE]]``: brings the views up to date (and keeps them so with
  ``--follow``; with ``--key`` it also seals the tree and signs checkpoints, as ``seal`` does);
- ``rebuild``: projects the whole history aside, then swaps the new views in (progress on
  stderr); on failure the current views stay and the error names the event;
- ``status``: each view's position, lag behind the log (events, seconds) and last error;
- ``project``, ``rebuild``, ``status`` and ``verify`` take ``--views-url``: the views live there
  and the log is read from ``--url`` (which may be a hot standby);
- ``balance HOLDER [--unit] [--at ISO]``: a balance from the write side (or at an instant);
- ``import-clients FILE [--update]`` / ``export-clients``: clients as CSV
  (``adapters/cli/clients_csv.py``);
- ``verify`` and ``history`` come from ``adapters/cli/audit.py`` when it is installed.

Exit codes: 0 success, 1 a rejection or invalid input, 2 the ledger could not run.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import select
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any

import msgspec
from rich import box
from rich.table import Table

from adapters.cli import clients_csv, data_out
from adapters.cli import proofs as cli_proofs
from adapters.cli import serve as cli_serve
from adapters.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    HelpFormatter,
    ProgressBar,
    add_command,
    amount,
    error,
    fail,
    follow,
    follow_arguments,
    holder_arguments,
    output_console,
    quiet_broken_pipe,
    quiet_logs,
    stopped_by_signals,
    url_option,
    views_url_option,
    whole_number,
)
from adapters.storage.views import LogWatcher
from ledger.api import Ledger
from ledger.commands.json_text import parse_command_json
from ledger.commands.reference import command_models, json_schema
from ledger.errors import LedgerError, Rejected, one_line
from ledger.logging import configure_cli_logging
from ledger.projections.own import entry_point_views
from ledger.projections.runner import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX

EXEC_BATCH_MAX = 1_000
"""Bound on the commands ``exec`` hands the engine at once."""
EXEC_LINE_BYTES_MAX = 1_000_000
"""Bound on one input line of ``exec``: a longer line is one ``invalid_command``, skipped."""
EXEC_BATCH_BYTES_MAX = 8_000_000
"""Bound on the bytes of the lines ``exec`` holds at once."""
EXEC_READ_BYTES = 1 << 16
"""Bytes ``exec`` reads from its input at a time."""

_ENCODER = msgspec.json.Encoder()


# Parser --------------------------------------------------------------------------------------


VIEWS = "the views and their tracking"
"""What ``--views-url`` names for the views' subcommands."""
_page_size = whole_number("_page_size", 1, PAGE_SIZE_MAX)


PAGE_SIZE_HELP = f"notifications read and written per transaction (1..{PAGE_SIZE_MAX})"
VIEW_HELP = (
    "only this view (a built-in one, or your own from a `ledger.views` entry point;"
    " default: every view)"
)


def _add_view_commands(commands: Any) -> None:
    """``project``, ``status`` and ``rebuild``."""
    project = add_command(
        commands,
        "project",
        "bring the views up to date",
        "Projects the events recorded since the views' tracked position, then exits; with\n"
        "--follow it keeps following new events (LISTEN/NOTIFY on a PostgreSQL primary,\n"
        "polling on a hot standby and on SQLite) until SIGINT or SIGTERM; a failed catch-up is\n"
        "reported on stderr and retried. Without --follow, an event the views cannot take\n"
        "exits 2 naming it (notification id, aggregate); the views keep every earlier event.\n"
        "With --follow --key the follower also seals the Merkle tree after each catch-up and\n"
        "signs a checkpoint every --every events or --checkpoint-interval seconds (as\n"
        "`ledger seal --follow --key` does; --url must then be the primary).",
        [
            "ledger project",
            "ledger project --follow --url postgresql://postgres@db/ledger",
            "ledger project --follow --url postgresql://postgres@standby/ledger"
            " --views-url postgresql://postgres@views/ledger_views",
            "ledger project --follow --key ledger.key --every 10000 --checkpoint-interval 60",
        ],
    )
    url_option(project)
    views_url_option(project, VIEWS)
    follow_arguments(project, "keep following new events")
    project.add_argument(
        "--page-size", type=_page_size, default=PAGE_SIZE_DEFAULT, help=PAGE_SIZE_HELP
    )
    project.add_argument("--view", metavar="NAME", help=VIEW_HELP)
    cli_proofs.signing_options(project)
    project.set_defaults(func=run_project)

    status = add_command(
        commands,
        "status",
        "print each view's and the Merkle tree's position and lag, and projection errors",
        "For each view: the notification id it has reached, its lag behind the log (events,\n"
        "and seconds since the oldest event it lacks was recorded) and the last projection\n"
        "error (with the notification id and aggregate of the event that caused it), and\n"
        "when a projector last ran over it (its heartbeat). Also whether the log is read from\n"
        "a hot standby, and that standby's replay lag, each publisher's position, lag and\n"
        "last error (`ledger publish`), and the Merkle tree's: the notification id of its last\n"
        "leaf, its lag (events, seconds), and the latest signed checkpoint's size and time.\n"
        "Exit 0, or 1 when a view's last page failed or a publisher's last batch did.",
        ["ledger status", "ledger status --json --views-url postgresql://postgres@views/v"],
    )
    url_option(status)
    views_url_option(status, VIEWS)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=run_status)

    rebuild = add_command(
        commands,
        "rebuild",
        "rebuild the views from the whole history aside, then swap them in",
        "Every view table is rebuilt from the first event in a place beside the current views\n"
        "(a schema on PostgreSQL, a file on SQLite), with a progress bar on stderr, then swapped\n"
        "in with their tracking in one transaction. The current views answer meanwhile; if the\n"
        "build fails they stay, and the error names the event (notification id, aggregate).",
        ["ledger rebuild", "ledger rebuild --page-size 20000"],
    )
    url_option(rebuild)
    views_url_option(rebuild, VIEWS)
    rebuild.add_argument(
        "--page-size", type=_page_size, default=PAGE_SIZE_DEFAULT, help=PAGE_SIZE_HELP
    )
    rebuild.add_argument("--view", metavar="NAME", help=VIEW_HELP)
    rebuild.set_defaults(func=run_rebuild)


def _add_purge_due(commands: Any) -> None:
    """The ``purge-due`` subcommand."""
    purge = add_command(
        commands,
        "purge-due",
        "purge every distributor cancelled 30 days ago or more",
        "Brings the views up to date, then records PurgeDistributor (by the parent) for each\n"
        "cancelled distributor whose purge day has come: its and its clients' personal data\n"
        "leave the view tables; the events stay. One JSON outcome per purge on stdout. Safe to\n"
        "run again, or in two processes: each distributor is purged once.",
        ["ledger purge-due", "ledger purge-due --url postgresql://postgres@db/ledger"],
    )
    url_option(purge)
    views_url_option(purge, VIEWS)
    purge.set_defaults(func=run_purge_due)


def build_parser() -> argparse.ArgumentParser:
    """The ``ledger`` parser with every subcommand (and the audit ones when present)."""
    parser = argparse.ArgumentParser(
        prog="ledger",
        description="An event-sourced ledger of CFDI stamps and points: run commands, read "
        "balances and views, audit the history.",
        epilog="Run `ledger COMMAND --help` for a command's arguments and examples.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = add_command(
        commands,
        "demo",
        "build a realistic demo network and print its views",
        "Registers a master account, distributors, sub-distributors, clients and their stamping\n"
        "accounts (CTI), then simulates weeks of purchases, transfers and consumption, and\n"
        "prints the views. On a database that already holds the demo it only prints them.",
        ["ledger demo", "ledger demo --url sqlite:///demo.db --clients 50 --days 30"],
    )
    url_option(demo)
    demo.add_argument("--clients", type=int, default=300, help="clients to register (10..5000)")
    demo.add_argument("--days", type=int, default=60, help="days of consumption (7..366)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (same seed, same demo)")
    demo.set_defaults(func=run_demo)

    execute = add_command(
        commands,
        "exec",
        "run JSON-lines commands from stdin, one JSON outcome per line on stdout",
        'Each input line is one command object, e.g. {"type": "ConsumeStamp", ...}; each\n'
        'gets exactly one output line, in order: {"ok": true, ...} or {"ok": false,\n'
        '"code": ...}. Commands and fields: docs/COMMANDS.md, or `ledger schema`.',
        [
            "ledger exec < commands.jsonl > outcomes.jsonl",
            'echo \'{"type": "ConsumeStamp", "actor": "M", "cti_id": "C1-cti", '
            '"cfdi_uuid": "...", "issuer_rfc": "..."}\' | ledger exec',
        ],
    )
    url_option(execute)
    execute.add_argument(
        "--projections",
        choices=("inline", "off"),
        default="inline",
        help="inline: views follow each batch; off: leave them to `ledger project --follow`",
    )
    execute.set_defaults(func=run_exec)

    _add_view_commands(commands)

    balance = add_command(
        commands,
        "balance",
        "print a holder's balance",
        "The balance of a stamping account (CTI), client, distributor or master account, from\n"
        "the write side (always current), or at a past instant with --at.",
        ["ledger balance C1-cti", "ledger balance D1 --unit points --at 2026-11-01T12:00:00-06:00"],
    )
    holder_arguments(balance)
    balance.add_argument(
        "--at",
        metavar="ISO",
        help="the balance at this instant: ISO 8601 with an offset, e.g. 2026-11-01T12:00:00-06:00",
    )
    url_option(balance)
    balance.set_defaults(func=run_balance)

    _add_purge_due(commands)

    clients_csv.register(commands)

    schema = add_command(
        commands,
        "schema",
        "print the JSON Schema of the commands",
        "The JSON Schema of every command (or of one), generated from the same models that\n"
        "validate them: for portals written in other languages.",
        ["ledger schema > commands.schema.json", "ledger schema ConsumeStamp"],
    )
    schema.add_argument(
        "type", metavar="TYPE", nargs="?", help="one command type (default: all of them)"
    )
    schema.set_defaults(func=run_schema)

    try:
        from adapters.cli import audit as cli_audit  # noqa: PLC0415  (optional: present when audit is installed)
    except ModuleNotFoundError as exc:
        if exc.name != "adapters.cli.audit":
            raise
    else:
        cli_audit.register(commands)
    cli_serve.register(commands)
    data_out.register(commands)
    cli_proofs.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one subcommand; returns its exit code."""
    args = build_parser().parse_args(argv)
    # The command line is the application: it, not the library, decides where logs go.
    configure_cli_logging()
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return quiet_broken_pipe()
    return code


def _open(args: argparse.Namespace, **options: Any) -> Ledger:
    views_url = getattr(args, "views_url", None)
    if views_url is not None:
        options["views_url"] = views_url
    return Ledger.open(getattr(args, "url", None), **options)


# demo ---------------------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    """``ledger demo``."""
    from adapters.cli import demo  # noqa: PLC0415  (only the demo needs its name lists)

    if not 10 <= args.clients <= 5_000 or not 7 <= args.days <= 366:
        return error("demo", "--clients must be 10..5000 and --days 7..366")
    # A demo runs a hundred thousand commands: one log line each would drown the tables.
    quiet_logs()
    try:
        return demo.run(
            getattr(args, "url", None),
            clients=args.clients,
            days=args.days,
            seed=args.seed,
            out=sys.stdout,
        )
    except LedgerError as exc:
        return fail("demo", exc)


# exec ---------------------------------------------------------------------------------------


def _input_batches(stream: IO[bytes]) -> Iterator[list[bytes | None]]:
    """Lines of ``stream`` in batches: what is already readable, without waiting for more.

    A file or a fast pipe gives big batches (few transactions); an interactive writer gets each
    outcome as soon as its line is complete. A line longer than ``EXEC_LINE_BYTES_MAX`` is
    ``None``: its bytes are skipped up to its end, never held, so a line costs at most that much
    memory and a batch at most ``EXEC_BATCH_BYTES_MAX``.
    """
    try:
        fd = stream.fileno()
        select.select([fd], [], [], 0)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fd = -1
    if fd >= 0:

        def read() -> bytes:
            return os.read(fd, EXEC_READ_BYTES)

        def more_ready() -> bool:
            return bool(select.select([fd], [], [], 0)[0])

    else:
        read = functools.partial(getattr(stream, "read1", stream.read), EXEC_READ_BYTES)

        def more_ready() -> bool:
            return True  # an in-memory stream never makes its reader wait

    line = bytearray()  # the current line so far, never over EXEC_LINE_BYTES_MAX
    skipping = False  # the current line is too long: already answered, its rest is dropped
    batch: list[bytes | None] = []
    batch_bytes = 0
    while True:
        chunk = read()
        if not chunk:
            if line and not skipping:
                batch.append(bytes(line))
            yield from _slices(batch)
            return
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not skipping:
                if len(line) + len(piece) > EXEC_LINE_BYTES_MAX:
                    batch.append(None)
                    skipping = True
                    line.clear()
                else:
                    line += piece
            if end < 0:
                break
            if not skipping:
                batch.append(bytes(line))
                batch_bytes += len(line)
            line.clear()
            skipping = False
            start = end + 1
        if batch and (
            len(batch) >= EXEC_BATCH_MAX or batch_bytes >= EXEC_BATCH_BYTES_MAX or not more_ready()
        ):
            yield from _slices(batch)
            batch = []
            batch_bytes = 0


def _slices(batch: list[bytes | None]) -> Iterator[list[bytes | None]]:
    for start in range(0, len(batch), EXEC_BATCH_MAX):
        yield batch[start : start + EXEC_BATCH_MAX]


def _parse_line(line: bytes | None, number: int) -> dict[str, Any] | Rejected:
    if line is None:
        return Rejected(
            "invalid_command",
            line=number,
            reason=f"line longer than {EXEC_LINE_BYTES_MAX} bytes",
        )
    try:
        return parse_command_json(line)
    except Rejected as rejection:
        return Rejected(rejection.code, line=number, **rejection.details)


def execute_lines(
    lg: Ledger, batches: Iterator[list[bytes | None]], out: IO[bytes]
) -> tuple[int, int]:
    """Runs JSON-lines commands; writes exactly one outcome line per input line. (ok, rejected)."""
    number = 0
    ok = rejected = 0
    for batch in batches:
        parsed: list[dict[str, Any] | Rejected] = []
        for raw in batch:
            number += 1
            parsed.append(_parse_line(raw, number))
        commands = [p for p in parsed if not isinstance(p, Rejected)]
        results = iter(lg.execute_many(commands)) if commands else iter(())
        lines = []
        for item in parsed:
            result = item if isinstance(item, Rejected) else next(results)
            if isinstance(result, Rejected):
                rejected += 1
            else:
                ok += 1
            lines.append(_ENCODER.encode(result.to_dict()))
        if lines:
            out.write(b"\n".join(lines) + b"\n")
            out.flush()
    return ok, rejected


def run_exec(args: argparse.Namespace) -> int:
    """``ledger exec``."""
    try:
        with _open(args, projections=args.projections) as lg:
            execute_lines(lg, _input_batches(sys.stdin.buffer), sys.stdout.buffer)
    except LedgerError as exc:
        return fail("exec", exc)
    return EXIT_OK


def run_purge_due(args: argparse.Namespace) -> int:
    """``ledger purge-due``: one JSON line per purge; exit 1 if any was rejected."""
    try:
        with _open(args) as lg:
            results = lg.purge_due()
    except LedgerError as exc:
        return fail("purge-due", exc)
    for result in results:
        sys.stdout.buffer.write(_ENCODER.encode(result.to_dict()) + b"\n")
    sys.stdout.flush()
    purged = sum(1 for r in results if not isinstance(r, Rejected))
    sys.stderr.write(f"purge-due: {purged} purged, {len(results) - purged} rejected\n")
    return EXIT_OK if purged == len(results) else EXIT_REJECTED


# project, rebuild ---------------------------------------------------------------------------


def run_rebuild(args: argparse.Namespace) -> int:
    """``ledger rebuild``."""
    quiet_logs()
    try:
        with _open(args, projections="off", views=entry_point_views()) as lg:
            data_out.only_view(lg, args.view)
            lg.views.projector.page_size = args.page_size
            with ProgressBar("rebuild") as bar:
                lg.views.rebuild(progress=lambda p: bar(p.done, p.total))
            sys.stdout.write(f"views rebuilt up to notification {lg.views.position()}\n")
    except LedgerError as exc:
        return fail("rebuild", exc)
    return EXIT_OK


def run_project(args: argparse.Namespace) -> int:
    """``ledger project [--follow [--key FILE]]``."""
    refused = cli_proofs.key_without_follow("project", args)
    if refused is not None:
        return refused
    stop = threading.Event()
    try:
        signer = cli_proofs.read_signer(args.key) if args.key else None
        with _open(args, projections="off", views=entry_point_views()) as lg:
            data_out.only_view(lg, args.view)
            lg.views.projector.page_size = args.page_size
            if args.follow:
                signing = None if signer is None else cli_proofs.FollowerSigning(lg, args, signer)
                # A follower reports a failed catch-up and keeps going (``_follow``).
                _follow(
                    lg, getattr(args, "url", None), args.interval, stop, first=True, signing=signing
                )
            else:
                with ProgressBar("project") as bar:
                    lg.views.projector.catch_up(progress=lambda p: bar(p.done, p.total), stop=stop)
            sys.stdout.write(f"views at notification {lg.views.position()}\n")
    except LedgerError as exc:
        return fail("project", exc)
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    """``ledger status``: exit 0, or 1 when some view's last page failed."""
    try:
        with _open(args, projections="off", create_tables=False, views=entry_point_views()) as lg:
            status = lg.status()
    except LedgerError as exc:
        return fail("status", exc)
    views: list[dict[str, Any]] = status["views"]
    if args.json:
        sys.stdout.write(msgspec.json.encode(status).decode() + "\n")
    else:
        out = sys.stdout
        standby = ""
        if status["log_standby"]:
            lag = status["log_replay_lag_s"]
            standby = f", read from a hot standby {'?' if lag is None else f'{lag:.1f}'} s behind"
        console = output_console(out)
        console.print(f"log: newest notification {status['log_position']:,}{standby}")
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for name in ("view", "position", "lag events", "lag s", "failed", "projector ran"):
            table.add_column(name, justify="left" if name == "view" else "right", no_wrap=True)
        now = datetime.now(UTC)
        for view in views:
            lag_s = "?" if view["lag_s"] is None else f"{view['lag_s']:.1f}"
            failed = f"{view['failures']:,} times" if view["error"] else "-"
            ran = "never"
            if view["heartbeat_at"] is not None:
                ago_s = (now - datetime.fromisoformat(view["heartbeat_at"])).total_seconds()
                ran = f"{max(ago_s, 0.0):,.1f} s ago"
            table.add_row(
                view["name"],
                f"{view['position']:,}",
                f"{view['lag_events']:,}",
                lag_s,
                failed,
                ran,
            )
        tree = status["tree"]
        if tree is not None:
            lag_s = "?" if tree["lag_s"] is None else f"{tree['lag_s']:.1f}"
            table.add_row(
                "merkle tree", f"{tree['position']:,}", f"{tree['lag_events']:,}", lag_s, "-", "-"
            )
        console.print(table)
        if tree is not None:
            console.print(cli_proofs.tree_line(tree), highlight=False)
        # An error names the event it stopped at: printed whole, one line each, below.
        for view in views:
            if view["error"]:
                console.print(
                    f"{view['name']}: last error at {view['error_at']}: {one_line(view['error'])}",
                    soft_wrap=True,
                )
        data_out.print_publishers(console, status["publishers"])
    stopped = any(view["error"] for view in views)
    stopped = stopped or any(p["error"] for p in status["publishers"])
    return EXIT_REJECTED if stopped else EXIT_OK


def _follow(
    lg: Ledger,
    url: str | None,
    interval_s: float,
    stop: threading.Event,
    *,
    first: bool = False,
    signing: cli_proofs.FollowerSigning | None = None,
) -> None:
    """Catches up whenever events may have arrived, until SIGINT or SIGTERM; with
    ``signing`` (``--key``), then seals the tree and signs a checkpoint when one is due.

    A failed catch-up or seal (the database away, an event the views cannot take) is reported
    on stderr and retried after a bounded, growing wait; the follower never exits for it.
    """
    projector = lg.views.projector
    projector.failed_retry_after_s = 0.0  # the backoff below bounds the retries
    watcher = LogWatcher(url, interval_s=interval_s)
    step = "catch-up"

    def catch_up() -> None:
        nonlocal step
        # A stop during the wait ends the loop without one more catch-up. After a failure
        # the next one starts from the tracked position: nothing is lost or counted twice.
        if stop.is_set():
            return
        step = "catch-up"
        projector.catch_up(stop=stop)
        if signing is not None:
            step = "seal"
            signing(stop)

    with stopped_by_signals(stop):
        sys.stderr.write(
            "project: following new events "
            f"({'LISTEN/NOTIFY' if watcher.listening else 'polling'}, every {interval_s:g} s"
            " at most)\n"
        )
        sys.stderr.flush()
        follow(
            watcher,
            stop,
            catch_up,
            interval_s=interval_s,
            failed=lambda: f"project: {step} failed",
            first=first,
        )


# balance ------------------------------------------------------------------------------------


def _instant(text: str) -> datetime | None:
    """An aware datetime from ISO 8601 with an offset; None if the text is not one."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def run_balance(args: argparse.Namespace) -> int:
    """``ledger balance HOLDER [--unit] [--at]``."""
    at = None
    if args.at is not None:
        at = _instant(args.at)
        if at is None:
            return error(
                "balance",
                f"--at {args.at!r}: expected an ISO 8601 time with an offset, "
                "e.g. 2026-11-01T12:00:00-06:00",
            )
    try:
        with _open(args, projections="off", create_tables=False) as lg:
            if at is None:
                value = lg.balance(args.holder, args.unit)
            else:
                value = lg.balance_at(args.holder, args.unit, at)
    except LedgerError as exc:
        return fail("balance", exc)
    sys.stdout.write(f"{amount(value, args.unit)}\n")
    return EXIT_OK


# schema -------------------------------------------------------------------------------------


def run_schema(args: argparse.Namespace) -> int:
    """``ledger schema [TYPE]``: JSON Schema from the command models."""
    try:
        schema = json_schema(args.type)
    except KeyError:
        known = ", ".join(sorted(command_models()))
        return error("schema", f"no command type {args.type!r}; known: {known}")
    sys.stdout.write(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
