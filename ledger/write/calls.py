"""What one call's commands become before they queue (group commit).

A non-atomic call is cut into parts, one request each (``part_sizes``); an atomic batch is read
whole, up to its bound (``ATOMIC_SIZE_MAX``), over which every command is answered
``batch_too_large`` and none runs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ledger.commands.models import Command
from ledger.errors import Rejected
from ledger.write.command_log import log_commands
from ledger.write.preparation import COMMAND_TYPES, Prepared, Result

ATOMIC_SIZE_MAX = 50_000
"""Bound on the commands of one atomic batch (one transaction, held in memory): over it, every
command of the batch is answered ``batch_too_large`` and none runs (DESIGN §5)."""


def part_sizes(commands: int, group_max: int) -> list[int]:
    """How a non-atomic call of that many commands is cut into groups (parts) of at most
    ``group_max``: on a pipelined store the last parts shrink, by a tenth of a group each,
    down to six tenths (2,000 commands in groups of 500: 500, 450, 400, 350, 300).

    The write of the last part is the one that nothing overlaps: the caller waits for it
    alone, so it should be short. But a write has a fixed cost (its commit), and a part
    written while the next, smaller one is decided must not take longer than that decision,
    or the leader waits for it instead; hence the gentle steps. Taking turns with equal parts
    of 500, eight rounds of 2,000-command calls on PostgreSQL, the batched ratio to raw
    ``executemany`` went from 0.52 to 0.54 on average (docs/SCALING.md). Groups of under ten
    commands (tests) are cut evenly, the remainder last.
    """
    if commands <= group_max:
        return [commands]
    step = group_max // 10
    if not step:
        whole, rest = divmod(commands, group_max)
        return [group_max] * whole + ([rest] if rest else [])
    # From the last part back (300, 350, 400, 450 for groups of 500), then whole groups.
    steps = itertools.chain(
        (group_max - k * step for k in (4, 3, 2, 1)), itertools.repeat(group_max)
    )
    sizes: list[int] = []
    total = 0
    while total + (size := next(steps)) < commands:
        sizes.append(size)
        total += size
    left = commands - total  # the first part
    if left + sizes[-1] <= group_max:
        sizes[-1] += left  # no first part of a few commands when it fits the next
    else:
        sizes.append(left)
    return sizes[::-1]


Commands = Iterable[Mapping[str, Any] | Command]
"""What ``execute_many`` takes: any iterable (a list, a tuple, a generator, ...)."""


def atomic_batch(commands: Commands) -> tuple[list[Mapping[str, Any] | Command], list[str]]:
    """The commands of an atomic batch as a list, or, over ``ATOMIC_SIZE_MAX``, none and the
    type of each command (for its log line): the commands are read but never kept."""
    iterator = iter(commands)
    batch = list(itertools.islice(iterator, ATOMIC_SIZE_MAX + 1))
    if len(batch) <= ATOMIC_SIZE_MAX:
        return batch, []
    types = [_given_type(command) for command in itertools.chain(batch, iterator)]
    return [], types


def too_large(types: list[str]) -> list[Result]:
    """``batch_too_large`` for each command of an atomic batch over its bound (their types
    given), with one log line each."""
    started = time.perf_counter()
    refusals = [
        Rejected("batch_too_large", commands=len(types), limit=ATOMIC_SIZE_MAX) for _ in types
    ]
    logged = [
        Prepared(None, rejection=refusal, raw_type=raw_type)
        for refusal, raw_type in zip(refusals, types, strict=True)
    ]
    results: list[Result] = list(refusals)
    log_commands(logged, results, started)
    return results


def _given_type(command: Mapping[str, Any] | Command) -> str:
    given = command.get("type") if isinstance(command, Mapping) else getattr(command, "type", "?")
    return given if type(given) is str and given in COMMAND_TYPES else "?"
