"""What every ``ledger`` subcommand shares: help layout, ``--url``, one-line failures, pipes.

A failure is one line on stderr naming the subcommand, what failed and why, in English, with the
stable code and the Spanish message kept for end users::

    balance: no account 'C1-cti' (unknown_account: La cuenta no existe.)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from ledger.errors import LedgerError, Rejected, one_line
from ledger.logging import LOGGER_NAME

if TYPE_CHECKING:
    from adapters.storage.views import LogWatcher

EXIT_OK = 0
EXIT_REJECTED = 1
"""A rejection, invalid input, or (verify) a breach."""
EXIT_ERROR = 2
"""The ledger could not run (database unreachable, unreadable file, ...)."""
PIPED_WIDTH = 200
"""Columns of tables written to a pipe or a file (a terminal uses its own width)."""
EXIT_BROKEN_PIPE = 128 + 13
"""What a shell reports for a command ended by SIGPIPE: the reader closed the pipe."""
FOLLOW_INTERVAL_S_DEFAULT = 1.0
"""Seconds between a follower's polls (``--interval``)."""
FOLLOW_BACKOFF_S_MAX = 30.0
"""Bound on a follower's wait before it tries a failed step again."""

URL_HELP = (
    "where the ledger lives: sqlite:///FILE or postgresql://USER@HOST[:PORT][,HOST2[:PORT]]/DB "
    "(default: $LEDGER_URL, else sqlite:///ledger.db); bounded waits, 5 s by default, as "
    "?connect_timeout=S&pool_timeout=S (PostgreSQL) or ?busy_timeout=S (SQLite); with several "
    "hosts, ?target_session_attrs=read-write (the default) or prefer-standby"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each argument's default and keeps descriptions and examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)" and "(default: False)" say nothing: only real defaults are shown.
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def url_option(parser: argparse.ArgumentParser) -> None:
    """Adds ``--url`` (described once, here)."""
    # SUPPRESS: a --url given before the subcommand is not overwritten by this default.
    parser.add_argument("--url", default=argparse.SUPPRESS, help=URL_HELP)


def views_url_option(parser: argparse.ArgumentParser, holds: str) -> None:
    """Adds ``--views-url``: the database of what ``holds`` names, when not the events' one."""
    parser.add_argument(
        "--views-url",
        default=None,
        help=f"database of {holds} (default: the --url database); the log is then read from"
        " --url, which may be a read-only hot standby",
    )


def whole_number(name: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (None: no upper bound).

    ``name`` is what argparse calls the type when the text is no number at all.
    """

    def parse(text: str) -> int:
        value = int(text)
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"at least {low}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{low} to {high}")
        return value

    parse.__name__ = name
    return parse


def seconds(name: str, high: int) -> Callable[[str], float]:
    """An argparse type: seconds, more than 0 and at most ``high`` (``name`` as above)."""

    def parse(text: str) -> float:
        value = float(text)
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"between 0 and {high} seconds")
        return value

    parse.__name__ = name
    return parse


def follow_arguments(parser: argparse.ArgumentParser, keep: str) -> None:
    """Adds ``--follow`` (``keep`` says what it keeps doing) and its polls' ``--interval``."""
    parser.add_argument("--follow", action="store_true", help=keep)
    parser.add_argument(
        "--interval",
        type=seconds("_interval", 60),
        default=FOLLOW_INTERVAL_S_DEFAULT,
        help="seconds between polls when following (PostgreSQL also wakes on NOTIFY)",
    )


@contextlib.contextmanager
def stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Sets ``stop`` on SIGINT or SIGTERM inside the block; the previous handlers come back
    after it (a follower ends its loop instead of dying mid-page)."""

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {
        number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def follow(
    watcher: LogWatcher,
    stop: threading.Event,
    step: Callable[[], None],
    *,
    interval_s: float,
    failed: str | Callable[[], str],
    detail: Callable[[LedgerError], str] = lambda exc: one_line(str(exc)),
    first: bool = False,
) -> None:
    """Runs ``step`` whenever events may have arrived (``watcher``), until ``stop`` is set.

    A failed step (the database away, an event that cannot be taken) is reported on stderr
    (``failed``, or what it returns when called, the wait, ``detail`` of the error) and retried
    after a wait that doubles from ``interval_s`` up to ``FOLLOW_BACKOFF_S_MAX``: a follower
    outlives a database restart and never exits for it. The watcher is closed at the end.
    """
    backoff_s = interval_s
    try:
        while not stop.is_set():
            if not first:
                watcher.wait(stop)
            first = False
            try:
                step()
                backoff_s = interval_s
            except LedgerError as exc:
                what = failed if isinstance(failed, str) else failed()
                sys.stderr.write(f"{what}, retrying in {backoff_s:g} s: {detail(exc)}\n")
                sys.stderr.flush()
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, FOLLOW_BACKOFF_S_MAX)
    finally:
        watcher.close()


def holder_arguments(parser: argparse.ArgumentParser) -> None:
    """A holder's id and ``--unit``: which holder's book a command reads."""
    parser.add_argument(
        "holder", metavar="HOLDER", help="the account id: a CTI, client, distributor or master"
    )
    parser.add_argument(
        "--unit", choices=("stamps", "points"), default="stamps", help="which book to read"
    )


def add_command(
    subparsers: Any, name: str, summary: str, description: str, examples: list[str]
) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary, a description paragraph and examples."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\n{description}",
        epilog=epilog,
        formatter_class=HelpFormatter,
    )
    return parser


def _invalid_fields(details: dict[str, Any]) -> str:
    errors = details.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(f"{e.get('field', '?')}: {e.get('message', '?')}" for e in errors[:5])
    parts = [f"{k}: {v}" for k, v in details.items() if k in ("field", "reason", "line")]
    return "; ".join(parts) or "the command is not valid"


def describe(exc: LedgerError) -> str:
    """What failed and why, in one English line (the code and Spanish message kept)."""
    if not isinstance(exc, Rejected):
        return one_line(str(exc))
    details = exc.details
    account = details.get("account_id")
    if exc.code == "unknown_account" and account is not None:
        what = f"no account {account!r}"
    elif exc.code == "not_authorised":
        what = f"{details.get('actor')!r} may not act on {account!r}"
    elif exc.code in ("invalid_command", "invalid_rfc"):
        what = _invalid_fields(details)
    elif account is not None:
        what = f"account {account!r}"
    else:
        what = ", ".join(f"{k}={v}" for k, v in details.items()) or exc.code.replace("_", " ")
    return one_line(f"{what} ({exc.code}: {exc.message})")


def fail(command: str, exc: LedgerError) -> int:
    """Writes the one-line failure; returns the exit code (1 rejected, 2 could not run)."""
    sys.stderr.write(f"{command}: {describe(exc)}\n")
    return EXIT_REJECTED if isinstance(exc, Rejected) else EXIT_ERROR


def error(command: str, message: str, code: int = EXIT_REJECTED) -> int:
    """Writes ``command: message`` (on one line); returns ``code``."""
    sys.stderr.write(f"{command}: {one_line(message)}\n")
    return code


def quiet_logs() -> None:
    """Warnings only, unless ``$LEDGER_LOG_LEVEL`` says otherwise: bulk commands (demo, import,
    rebuild) would print a line per command."""
    if not os.environ.get("LEDGER_LOG_LEVEL"):
        logging.getLogger(LOGGER_NAME).setLevel(logging.WARNING)


def quiet_broken_pipe() -> int:
    """After the reader closed stdout: no traceback, no second error at exit; SIGPIPE's status."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # stdout is not a real file (tests); nothing will flush into the closed pipe
    return EXIT_BROKEN_PIPE


def amount(value: int, unit: str) -> str:
    """``6,000 points``, ``1 stamp``."""
    name = unit[:-1] if value in (1, -1) and unit.endswith("s") else unit
    return f"{value:,} {name}"


class _OutputConsole(Console):
    """A console that leaves a closed pipe to ``main`` (rich itself would exit with status 1)."""

    def on_broken_pipe(self) -> None:
        """Stops writing and raises ``BrokenPipeError``: the CLI ends with SIGPIPE's status."""
        self.quiet = True
        raise BrokenPipeError


def output_console(file: TextIO | None = None) -> Console:
    """A ``rich`` console for tables and text on ``file`` (default stdout).

    On a terminal: its width and colours. Elsewhere (a pipe, a file, CI): no colours and
    ``PIPED_WIDTH`` columns, so that tables keep one line per row. Markup, emoji codes and
    highlighting are off: names and references from the ledger print as they are.
    """
    options: dict[str, Any] = {"markup": False, "emoji": False, "highlight": False}
    console = _OutputConsole(file=file, **options)
    if console.is_terminal:
        return console
    return _OutputConsole(file=file, width=PIPED_WIDTH, **options)


class ProgressBar:
    """A ``rich`` progress bar on stderr for long passes (rebuild, project, verify, import, demo).

    On a terminal it redraws in place; elsewhere (a log file, CI) rich draws nothing live and
    the closing line says what was done. Call it with ``(done, total)``; ``unit`` names what
    is counted.
    """

    def __init__(self, label: str, unit: str = "events") -> None:
        self.label = label
        self.unit = unit
        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn(f"{label}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task(label, total=None)
        self._started = time.perf_counter()
        self.done = 0

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._progress.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        """Moves the bar to ``done`` of ``total``."""
        self.done = done
        self._progress.update(self._task, completed=done, total=max(total, done))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.console.is_terminal:
            self._progress.stop()
        if exc_type is None:
            elapsed_s = time.perf_counter() - self._started
            rate = self.done / elapsed_s if elapsed_s > 0 else 0.0
            self.console.print(
                f"{self.label}: done, {self.done:,} {self.unit} in {elapsed_s:.1f} s "
                f"({rate:,.0f} {self.unit}/s)",
                highlight=False,
                soft_wrap=True,
            )
