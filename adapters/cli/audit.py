"""The auditors' subcommands of the ``ledger`` CLI: ``verify`` and ``history``.

``adapters/cli/main.py`` calls ``register(subparsers)``; each subcommand sets ``func(args) -> int``
(the exit code) as its default. ``main(argv)`` runs them on their own
(``python -m adapters.cli.audit``).

- ``ledger verify [--url URL] [--expect-head HEX] [--json]``: replays every event and checks the
  invariants; progress on stderr (a live line on a terminal, a plain line every few seconds
  otherwise); the summary and each breach on stdout. Exit 0 when the books hold, 1 on any breach,
  2 when verification could not run (database unreachable, events unreadable).
- ``ledger history HOLDER [--unit stamps|points] [--url URL] [--json]``: every movement of the
  holder, oldest first, with its running balance.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table

from adapters.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REJECTED,
    ProgressBar,
    add_command,
    describe,
    holder_arguments,
    output_console,
    quiet_broken_pipe,
    url_option,
)
from adapters.cli.proofs import read_verifier
from adapters.storage.bundle import verify_bundle
from ledger.api import Ledger
from ledger.audit import Movement, VerifyReport
from ledger.errors import LedgerError, Rejected, one_line

BREACHES_PRINTED_MAX = 50
"""Breaches listed on stdout (``--json`` lists every one the report kept)."""

EXIT_BREACH = EXIT_REJECTED

HISTORY_ROWS_PER_TABLE = 200
"""Movements per printed slice of ``ledger history``."""
HISTORY_COLUMNS: tuple[tuple[str, int, JustifyMethod], ...] = (
    ("time", 25, "left"),
    ("amount", 9, "right"),
    ("balance", 9, "right"),
    ("counterpart", 24, "left"),
    ("ref", 38, "left"),
    ("actor", 16, "left"),
    ("event", 0, "left"),
)
"""Name, minimum width and alignment of each column of ``ledger history``."""
HISTORY_WIDTH = sum(width for _, width, _ in HISTORY_COLUMNS) + 3 * len(HISTORY_COLUMNS) + 30
"""Columns the history needs at those widths (with an event's topic); a narrower terminal
gets each slice sized to its own rows instead."""


def register(subparsers: Any) -> None:
    """Adds ``verify`` and ``history`` to the ``ledger`` CLI's subparsers."""
    verify = add_command(
        subparsers,
        "verify",
        "replay every event and check the ledger's invariants (exit 1 on a breach)",
        "One pass over the whole history: the hash chain (tamper evidence), double entry and\n"
        "zero sum per unit, no negative balance, exactly-once keys, and the views against the\n"
        "replay. Prints the chain head: keep it elsewhere and pass it back with --expect-head\n"
        "to detect a truncated history. Exit 0 when the books hold, 1 on any breach, 2 when\n"
        "verification could not run.",
        ["ledger verify", "ledger verify --expect-head 3f2a... --json > report.json"],
    )
    url_option(verify)
    verify.add_argument(
        "--expect-head",
        metavar="HEX",
        help="a chain head hash recorded earlier: a breach if history no longer contains it",
    )
    verify.add_argument(
        "--views-url",
        default=None,
        help="database of the views, when not the --url one (compared with the replay)",
    )
    verify.add_argument(
        "--verifier-key",
        metavar="VKEY",
        help="the checkpoints' verifier key (<origin>+<id>+<key>, or a file holding it): every"
        " stored checkpoint's signature is checked with it",
    )
    verify.add_argument(
        "--bundle",
        metavar="DIR",
        help="verify an exported log (ledger export-log) with no database; needs --verifier-key",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=run_verify)

    history = add_command(
        subparsers,
        "history",
        "print a holder's movements with their running balance",
        "Every movement of the holder's book, oldest first, read from its events: time, amount,\n"
        "running balance, counterpart and reference.",
        ["ledger history C1-cti", "ledger history D1 --unit points --json | head"],
    )
    holder_arguments(history)
    url_option(history)
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.set_defaults(func=run_history)


def print_report(report: VerifyReport, out: TextIO) -> None:
    """The human summary of a verify report."""
    verdict = "OK" if report.ok else "BREACHES FOUND"
    out.write(
        f"verify: {verdict}: {report.events:,} events, {report.aggregates:,} streams,"
        f" {report.holders:,} holders, {report.links:,} chain links,"
        f" {report.keys:,} idempotency keys, up to position {report.last_position:,}"
        f" in {report.duration_s:.1f} s\n"
    )
    out.write(f"chain head: {report.head_hash or '-'}\n")
    for unit, total in report.totals.items():
        out.write(f"sum of all {unit}: {total}\n")
    for note in report.notes:
        out.write(f"note: {one_line(note)}\n")
    for check, count in sorted(report.breach_counts.items()):
        out.write(f"breaches: {check}: {count}\n")
    for breach in report.breaches[:BREACHES_PRINTED_MAX]:
        where = f"position {breach.position}" if breach.position is not None else "overall"
        if breach.aggregate_id is not None:
            where += f", {breach.aggregate_id}"
        out.write(f"BREACH {breach.check} ({where}): {one_line(breach.message)}\n")
    hidden = sum(report.breach_counts.values()) - min(len(report.breaches), BREACHES_PRINTED_MAX)
    if hidden > 0:
        out.write(f"... and {hidden} more breaches (--json lists those kept)\n")


def _history_table(*, header: bool, fixed: bool) -> Table:
    """The history's columns; ``fixed``: wide enough for usual ids, so that slices line up."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_header=header)
    for name, width, justify in HISTORY_COLUMNS:
        # Ids and topics fold on a narrow terminal rather than lose their end.
        table.add_column(name, min_width=width if fixed else None, justify=justify, overflow="fold")
    return table


def print_history(movements: Iterable[Movement], console: Console) -> None:
    """Movements as a table, ``HISTORY_ROWS_PER_TABLE`` rows at a time.

    The history of a busy account is long: printing it in slices keeps memory bounded and
    shows the first rows at once (``| head`` does not wait for the whole history).
    """
    fixed = console.width >= HISTORY_WIDTH
    table = _history_table(header=True, fixed=fixed)
    for m in movements:
        table.add_row(
            m.at.isoformat(), f"{m.amount:+,}", f"{m.balance:,}", m.counterpart, m.ref,
            m.actor or "-", m.topic,
        )  # fmt: skip
        if table.row_count == HISTORY_ROWS_PER_TABLE:
            console.print(table)
            table = _history_table(header=False, fixed=fixed)
    if table.row_count or table.show_header:
        console.print(table)


def run_verify(args: argparse.Namespace) -> int:
    """``ledger verify``."""
    try:
        verifier = read_verifier(args.verifier_key) if args.verifier_key else None
        if args.bundle:
            if verifier is None:
                sys.stderr.write("verify: --bundle needs --verifier-key\n")
                return EXIT_REJECTED
            with ProgressBar("verify") as bar:
                report = verify_bundle(args.bundle, verifier, progress=bar)
            return _print_verify(args, report)
        with (
            Ledger.open(
                getattr(args, "url", None),
                projections="off",
                create_tables=False,
                views_url=args.views_url,
            ) as lg,
            ProgressBar("verify") as bar,
        ):
            report = lg.verify(progress=bar, expected_head=args.expect_head, verifier=verifier)
    except LedgerError as exc:
        sys.stderr.write(f"verify: cannot verify: {describe(exc)}\n")
        return EXIT_ERROR
    return _print_verify(args, report)


def _print_verify(args: argparse.Namespace, report: VerifyReport) -> int:
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    else:
        print_report(report, sys.stdout)
    return EXIT_OK if report.ok else EXIT_BREACH


def run_history(args: argparse.Namespace) -> int:
    """``ledger history HOLDER``."""
    out = sys.stdout
    try:
        with Ledger.open(getattr(args, "url", None), projections="off", create_tables=False) as lg:
            movements = lg.iter_history(args.holder, args.unit)
            if args.json:
                for m in movements:
                    out.write(json.dumps(m.to_dict(), ensure_ascii=False) + "\n")
            else:
                print_history(movements, output_console(out))
    except LedgerError as exc:
        sys.stderr.write(f"history: {describe(exc)}\n")
        return EXIT_REJECTED if isinstance(exc, Rejected) else EXIT_ERROR
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``verify`` or ``history`` without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="ledger")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return quiet_broken_pipe()
    return code


if __name__ == "__main__":
    sys.exit(main())
