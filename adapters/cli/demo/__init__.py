"""``ledger demo``: a realistic reseller network, built in seconds, and its views printed.

The package keeps what happens apart from how it is shown:

- ``people``: names, valid RFCs, phones and profiles, from one seeded ``random.Random``;
- ``network``: who is in the network and the commands of its opening day (no ledger);
- ``scenario``: sends those, then each simulated day's commands, to a ``Ledger`` under a
  ``ManualClock``; returns a ``ScenarioReport`` (no ``rich``);
- ``snapshot``: reads what the views hold into plain rows (queries only);
- ``render``: ``rich`` tables and a chart of those rows (no ledger);
- this module: ``run``, the ``ledger demo`` subcommand, and the three ``ledger`` commands it
  suggests to try next on the same database.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import TextIO

from adapters.cli.common import ProgressBar, output_console
from adapters.cli.demo.network import (
    CLOSING,
    CLOSING_CLIENT,
    CONVERTED_BY,
    CONVERTED_DISTRIBUTOR,
    LICENSED_BY,
    MASTER,
    SUBSCRIPTIONS,
    opening_day,
)
from adapters.cli.demo.render import (
    print_already_there,
    print_built,
    print_next_commands,
    print_views,
)
from adapters.cli.demo.scenario import Scenario
from adapters.cli.demo.snapshot import Snapshot, read_views
from ledger.api import Ledger
from ledger.clock import MEXICO_CITY, ManualClock

__all__ = [
    "CLOSING",
    "CLOSING_CLIENT",
    "CONVERTED_BY",
    "CONVERTED_DISTRIBUTOR",
    "LICENSED_BY",
    "MASTER",
    "SUBSCRIPTIONS",
    "next_commands",
    "run",
]
DEFAULT_URL = "sqlite:///ledger.db"
"""Where ``ledger`` goes without ``--url`` or ``$LEDGER_URL``."""


def _program() -> str:
    """How to run ``ledger`` from the current folder: ``ledger`` if it is on the PATH."""
    candidates = [Path(sys.argv[0]), Path(sys.executable).with_name("ledger")]
    program = next((p for p in candidates if p.name == "ledger" and p.is_file()), None)
    if program is None:
        return f"{_relative(Path(sys.executable))} -m ledger"
    on_path = shutil.which("ledger")
    if on_path is not None and Path(on_path).resolve() == program.resolve():
        return "ledger"
    return _relative(program)


def _relative(path: Path) -> str:
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def next_commands(shown: Snapshot, url: str | None) -> list[str]:
    """Three ``ledger`` commands worth trying on the demo's database, ready to paste."""
    program = _program()
    where = ""
    if url is not None or not os.environ.get("LEDGER_URL"):
        where = " --url " + shlex.quote(url or DEFAULT_URL)
    commands = []
    if shown.chart is not None:
        then = datetime.combine(shown.chart.days[0][0], clock_time(12), tzinfo=MEXICO_CITY)
        commands.append(f"{program} balance {shown.chart.cti_id} --at {then.isoformat()}{where}")
    if shown.points_buyer is not None:
        commands.append(f"{program} history {shown.points_buyer} --unit points{where}")
    commands.append(f"{program} verify{where}")
    return commands


def run(url: str | None, *, clients: int, days: int, seed: int, out: TextIO) -> int:
    """Builds the demo on ``url`` and prints its views (only prints them if it is there already)."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.astimezone(MEXICO_CITY).date()
    console = output_console(out)
    clock = ManualClock(
        datetime.combine(opening_day(today, days), clock_time(8), tzinfo=MEXICO_CITY)
    )
    # The views catch up once at the end: one pass over the history beats one per batch.
    with Ledger.open(url, clock=clock, password_cost="fast", projections="off") as lg:  # noqa: S106  (a cost level)
        if lg.engine.current(MASTER) is not None:
            # Running the demo twice is the most natural thing to do: show what is there and
            # record nothing (the clock has moved, so a second network would not be the same).
            clock.set(now)
            print_already_there(console)
            lg.views.catch_up()
        else:
            scenario = Scenario(lg, clock, clients=clients, days=days, seed=seed, today=today)
            with ProgressBar("demo", unit="days") as bar:
                scenario.play(now, progress=bar)
            with ProgressBar("views", unit="events") as bar:
                lg.views.catch_up(progress=lambda p: bar(p.done, p.total))
            report = scenario.purge_due()  # it reads the views: after them
            print_built(
                console,
                report,
                events=lg.views.position(),
                clients=clients,
                days=days,
                seconds=time.perf_counter() - started,
                url=lg.url or DEFAULT_URL,
            )
        console.print()
        shown = read_views(lg)
        print_views(console, shown)
        if not (url or os.environ.get("LEDGER_URL") or "").startswith("memory:"):
            print_next_commands(console, next_commands(shown, url), Path.cwd())
    return 0
