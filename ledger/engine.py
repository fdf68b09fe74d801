"""The write path's façade: runs commands and records their events exactly once.

``Engine`` puts together the mechanisms of ``ledger/write/`` (its ``__init__`` maps them):
commands are prepared in the caller's thread (``prepare``), queued for a shared transaction
(``group_commit``), decided against the aggregates in memory (``decision``, ``aggregates``) and
written exactly once (``attempts``; ``pipeline`` on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ledger.clock import Clock
from ledger.commands.auth import authorise as authorise_by_rules
from ledger.commands.models import Command
from ledger.domain import Aggregate
from ledger.passwords import PasswordCost
from ledger.write.aggregates import CACHE_SIZE_MAX, Aggregates
from ledger.write.attempts import SNAPSHOT_INTERVAL, Attempts
from ledger.write.decision import Authorise, Decider
from ledger.write.group_commit import GroupCommit
from ledger.write.ports import Store
from ledger.write.preparation import Result

__all__ = ["Engine", "Result"]


class Engine:
    """Executes commands; one per ``Ledger``, safe to share between threads."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        cache_size_max: int = CACHE_SIZE_MAX,
        snapshot_interval: int = SNAPSHOT_INTERVAL,
        password_cost: PasswordCost = "normal",  # noqa: S107  (a cost level, not a password)
        authorise: Authorise = authorise_by_rules,
    ) -> None:
        self.store = store
        self.clock = clock
        self.aggregates = Aggregates(store, clock, cache_size_max, password_cost)
        decider = Decider(self.aggregates, authorise)
        self._attempts = Attempts(self.aggregates, decider, [], snapshot_interval)
        self.on_commit: list[Callable[[Sequence[int]], None]] = self._attempts.on_commit
        """Called with the new notification ids after each commit."""
        self._group_commit = GroupCommit(self._attempts)
        self.execute_one: Callable[[Mapping[str, Any] | Command], Result] = (
            self._group_commit.execute
        )
        """``execute``, bound straight to the group commit: ``Ledger.execute`` calls it, one
        Python call less on the path of a caller that sends one command a call."""

    @property
    def snapshot_interval(self) -> int:
        """An aggregate is snapshotted every this many events."""
        return self._attempts.snapshot_interval

    @snapshot_interval.setter
    def snapshot_interval(self, events: int) -> None:
        self._attempts.snapshot_interval = events

    def execute(self, command: Mapping[str, Any] | Command) -> Result:
        """Runs one command; its outcome or rejection (``execute_many`` of one, without the
        lists: the path of a caller that sends one command a call)."""
        return self._group_commit.execute(command)

    def execute_many(
        self, commands: Iterable[Mapping[str, Any] | Command], *, atomic: bool = False
    ) -> list[Result]:
        """Runs commands in order in as few transactions as is safe; one result per command.

        Concurrent callers share transactions (group commit). ``atomic``: one transaction for
        all of them alone, and if any is rejected none is recorded (the others get
        ``batch_aborted``). Otherwise, on a pipelined store, a long list is written in groups,
        each sent while the next is decided.
        """
        return self._group_commit.execute_many(commands, atomic=atomic)

    async def aexecute_many(
        self, commands: Iterable[Mapping[str, Any] | Command], *, atomic: bool = False
    ) -> list[Result]:
        """``execute_many`` for asyncio: joins the same queue without blocking the event loop."""
        return await self._group_commit.aexecute_many(commands, atomic=atomic)

    def current(self, aggregate_id: str) -> Aggregate | None:
        """The aggregate as recorded now (cached state caught up with the store)."""
        return self.aggregates.current(aggregate_id)

    def is_hot(self, aggregate_id: str) -> bool:
        """Whether the aggregate lost a race lately (its writers then lock before writing)."""
        return self.aggregates.is_hot(aggregate_id)

    def mark_hot(self, aggregate_ids: Iterable[str]) -> None:
        """Remembers that these aggregates lost a race now."""
        self.aggregates.mark_hot(aggregate_ids)

    def queued(self) -> int:
        """How many commands wait for a transaction (not counting the one in flight)."""
        return self._group_commit.queued()

    def close(self) -> None:
        """Refuses new commands, lets queued ones commit, and stops the committer thread."""
        self._group_commit.close()
