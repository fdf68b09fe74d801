"""The embedding API (DESIGN §7): ``Ledger.open``, ``execute``, ``execute_many``, ``balance``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

from adapters.storage.config import env_for_url
from adapters.storage.memory import MemoryStore
from adapters.storage.merkle import MerkleStore
from adapters.storage.store import EventStore, open_application
from adapters.storage.views import (
    event_decoder,
    log_replication,
    notification_source,
    open_view_database,
)
from ledger import audit
from ledger.aggregates.stamping_account import StampingAccount
from ledger.clock import Clock, local_date, system_clock
from ledger.closing import Closing
from ledger.commands.handlers import __all__ as _registered  # noqa: F401  (registers handlers)
from ledger.commands.models import Command
from ledger.domain import HELD_PREFIX, UNITS
from ledger.engine import Engine, Result
from ledger.errors import LedgerError, Rejected
from ledger.outbound.tracking import outbound_status
from ledger.outcome import Outcome
from ledger.passwords import PasswordCost
from ledger.projections.base import View
from ledger.projections.own import ViewDefinitionError, check_views
from ledger.projections.runner import ProjectionError, Projector
from ledger.projections.views import Views, default_views
from ledger.proofs import log as proofs
from ledger.proofs.audit import MerkleCheck, SignedHead
from ledger.proofs.note import Signer, Verifier
from ledger.proofs.statement import build_statement
from ledger.read_scope import check_read, status_for

PURGE_PAGE_SIZE = 500
"""Distributors purged per batch by ``purge_due``."""
PURGE_PAGES_MAX = 1_000
"""Bound on the batches of one ``purge_due`` run (half a million purges)."""

Projections = Literal["inline", "background", "off"]


class Ledger(Closing):
    """An open credits ledger on SQLite or PostgreSQL. Safe to share between threads."""

    def __init__(
        self, store: EventStore | MemoryStore, engine: Engine, url: str, projections: Projections
    ):
        self.store = store
        self.engine = engine
        self.url = url
        self.views_url = url
        self.projections = projections
        self._views: Views | None = None
        self._tree: MerkleStore | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        projections: Projections = "inline",
        clock: Clock | None = None,
        create_tables: bool = True,
        password_cost: PasswordCost = "normal",  # noqa: S107  (a cost level, not a password)
        views_url: str | None = None,
        views: Sequence[View] = (),
    ) -> Ledger:
        """Opens the ledger at ``url`` (``None``: ``$LEDGER_URL`` or ``./ledger.db``).

        ``views_url`` (default ``url``) is where the views and their tracking live (DESIGN §8):
        the log is read from ``url``, which may then be a read-only hot standby. ``views`` adds
        your own views (``ledger.projections.own``) to the built-in ones, tracked alike.
        """
        store: EventStore | MemoryStore
        if url is not None and url.startswith("memory:"):
            # Tests and simulations: the engine on an in-process store, through the real codec.
            store = MemoryStore()
        else:
            store = EventStore(open_application(env_for_url(url, create_tables=create_tables)))
        engine = Engine(store=store, clock=clock or system_clock, password_cost=password_cost)
        ledger = cls(store, engine, url or "", projections)
        try:
            if create_tables and isinstance(store, EventStore):
                ledger.tree_store().setup()
            ledger.views_url = views_url or url or ""
            ledger._open_views(views_url or url, create_tables=create_tables, own=views)
        except BaseException:
            ledger.close()
            raise
        return ledger

    def _open_views(
        self, views_url: str | None, *, create_tables: bool, own: Sequence[View] = ()
    ) -> None:
        """The read side (``ledger/projections``) in ``views_url``, run as asked."""
        if self.projections not in ("inline", "background", "off"):
            raise Rejected("invalid_command", field="projections", reason="inline|background|off")
        if isinstance(self.store, MemoryStore) and views_url != self.url:
            raise Rejected("invalid_command", field="views_url", reason="not with memory://")
        try:
            views = check_views([*default_views(), *own])
        except ViewDefinitionError as exc:
            raise Rejected("invalid_command", field="views", reason=str(exc)) from None
        database = open_view_database(views_url)
        projector = Projector(
            database, notification_source(self.store), event_decoder(self.store), views
        )
        self._views = Views(database, projector, self.engine.clock, self.projections)
        if create_tables:
            projector.setup()
        if self.projections == "background":
            self._views.start_background()
        # An in-memory ledger's views are private to this process, so inline ones catch up
        # when queried (still read-your-writes) instead of after every commit of the tests.
        if self.projections == "background" or (
            self.projections == "inline" and not isinstance(self.store, MemoryStore)
        ):
            self.engine.on_commit.append(self._views.after_commit)

    @property
    def views(self) -> Views:
        """The read side: typed queries over the views (DESIGN §6)."""
        self._check_open()
        assert self._views is not None
        return self._views

    def execute(self, command: Mapping[str, Any] | Command) -> Outcome:
        """Runs one command; returns its outcome or raises ``Rejected``."""
        if self._closed:  # ``_check_open``, inline: the path of one command a call
            raise LedgerError("the ledger is closed")
        result = self.engine.execute_one(command)
        if isinstance(result, Rejected):
            raise result
        return result

    def execute_many(
        self, commands: Iterable[Mapping[str, Any] | Command], *, atomic: bool = False
    ) -> list[Result]:
        """Runs commands in as few transactions as is safe; one outcome or rejection each.

        ``commands`` may be any iterable. With ``atomic=True`` they share one transaction and a
        single rejection records nothing (the others get ``batch_aborted``, with the index of
        the first rejection); an atomic batch holds at most ``ATOMIC_SIZE_MAX`` (50,000)
        commands: over it, every one is answered ``batch_too_large`` and none runs.
        """
        self._check_open()
        return self.engine.execute_many(commands, atomic=atomic)

    def status(self) -> dict[str, Any]:
        """The read side's health (DESIGN §7): the log's newest notification id, whether it is
        read from a hot standby and that standby's replay lag, the mode, and for each view its
        position, lag in events and seconds, and last projection error; each publisher's
        position, lag and last error (``ledger publish``); and the Merkle tree's (``tree``:
        ``proofs.tree_status``, None on ``memory://``)."""
        self._check_open()
        status = self.views.status()
        newest = self.views.projector.source.max_notification_id() or 0
        publishers = outbound_status(self.views.database, newest)
        return {
            "log_position": newest,
            **log_replication(self.store),
            **status,
            "publishers": [publisher.to_dict() for publisher in publishers],
            "tree": self._tree_status(newest),
        }

    def _tree_status(self, newest: int) -> dict[str, Any] | None:
        if isinstance(self.store, MemoryStore):
            return None
        now = self.engine.clock()
        projector = self.views.projector
        return proofs.tree_status(
            self.tree_store(), newest, lambda position: projector.waited_s(position, now)
        )

    def status_for(self, actor_id: str) -> dict[str, Any]:
        """``status()`` as ``actor_id`` may read it (``read_scope.status_for``): a projection
        failure's text and aggregate only for a master account."""
        return status_for(actor_id, self.status(), self.engine.current)

    def purge_due(self) -> list[Result]:
        """Purges every distributor cancelled 30 days ago or more; one result per purge.

        The candidates come from the distributors view (brought up to date first); each purge
        is a ``PurgeDistributor`` by the distributor's parent, checked again by the write side
        and keyed ``purge:<id>``, so running this again, or in two processes, purges each once.
        """
        self._check_open()
        self.views.catch_up()
        results: list[Result] = []
        seen: set[str] = set()
        for _ in range(PURGE_PAGES_MAX):
            due = [(d, p) for d, p in self.views.purge_due(limit=PURGE_PAGE_SIZE) if d not in seen]
            if not due:
                return results
            seen.update(d for d, _ in due)
            results += self.execute_many(
                [{"type": "PurgeDistributor", "distributor_id": d, "actor": p} for d, p in due]
            )
            self.views.catch_up()
        return results

    async def aexecute(self, command: Mapping[str, Any] | Command) -> Outcome:
        """``execute`` for asyncio: the same group commit, without blocking the event loop.

        Cancelling the awaiting task does not withdraw a command already queued: it may still
        be recorded (send it again with the same idempotency key to learn its outcome).
        """
        (result,) = await self.aexecute_many([command])
        if isinstance(result, Rejected):
            raise result
        return result

    async def aexecute_many(
        self, commands: Iterable[Mapping[str, Any] | Command], *, atomic: bool = False
    ) -> list[Result]:
        """``execute_many`` for asyncio: the same group commit, without blocking the event loop."""
        self._check_open()
        return await self.engine.aexecute_many(commands, atomic=atomic)

    def balance(self, holder_id: str, unit: str = "stamps") -> int:
        """The holder's current balance of ``unit`` from the write side (always up to date)."""
        self._check_open()
        if unit not in UNITS:
            raise Rejected("invalid_command", field="unit", reason="stamps or points")
        if holder_id.startswith(HELD_PREFIX):
            # A CTI's held book: the stamps its open holds set aside now.
            cti = self.engine.current(holder_id.removeprefix(HELD_PREFIX))
            if not isinstance(cti, StampingAccount):
                raise Rejected("unknown_account", account_id=holder_id)
            return cti.held(self.engine.clock()) if unit == "stamps" else 0
        holder = self.engine.current(holder_id)
        if holder is None:
            raise Rejected("unknown_account", account_id=holder_id)
        balance = getattr(holder, "balance", None)
        if balance is None:
            raise Rejected("wrong_account_kind", account_id=holder_id)
        if unit == "stamps" and isinstance(holder, StampingAccount):
            now = self.engine.clock()
            return holder.balance(unit, local_date(now), now)
        return int(balance(unit))

    def check_read(self, actor_id: str, account_id: str) -> None:
        """Raises ``Rejected`` unless ``actor_id`` may read ``account_id`` (``read_scope``:
        itself or below it in its network; ``unknown_account`` for an id of no account)."""
        self._check_open()
        check_read(actor_id, account_id, self.engine.current)

    def balance_at(
        self, holder_id: str, unit: str, at: str | datetime, *, booked: bool = False
    ) -> int:
        """The holder's balance at instant ``at``, from its events (``ledger.audit.history``)."""
        self._check_open()
        return audit.balance_at(self.store.audit_source(), holder_id, unit, at, booked=booked)

    def history(self, holder_id: str, unit: str = "stamps") -> list[audit.Movement]:
        """Every movement of the holder with its running balance, from its events."""
        return list(self.iter_history(holder_id, unit))

    def iter_history(self, holder_id: str, unit: str = "stamps") -> Iterator[audit.Movement]:
        """``history`` one movement at a time, read page by page (a long history, streamed).

        A stamping account's expiries are movements at their instants, up to the clock's now,
        so the last running balance is ``balance()``.
        """
        self._check_open()
        return audit.iter_history(
            self.store.audit_source(), holder_id, unit, now=self.engine.clock()
        )

    def verify(
        self,
        *,
        progress: audit.Progress | None = None,
        expected_head: str | None = None,
        verifier: Verifier | None = None,
    ) -> audit.VerifyReport:
        """Replays every event and checks DESIGN §3 (``ledger.audit.verify``) and, on SQLite
        and PostgreSQL, the log against its signed checkpoints (§9; signatures checked with
        ``verifier`` when given).

        An inline or background ledger first brings its own views up to date (other processes
        may have written since its last catch-up), so that they are judged, not its idleness.
        """
        self._check_open()
        # The in-memory store's views are private to this process and followed on demand.
        database = None if isinstance(self.store, MemoryStore) else self.views.database
        if database is not None and self.projections in ("inline", "background"):
            with contextlib.suppress(ProjectionError):
                # A failed page is recorded where verify reads it, and reported as a breach.
                self.views.catch_up()
        return audit.verify(
            self.store.audit_source(),
            views=audit.view_checks(database),
            health=None if database is None else audit.ProjectionHealth(database),
            progress=progress,
            expected_head=expected_head,
            row_checks=[]
            if isinstance(self.store, MemoryStore)
            else [self._merkle_check(verifier)],
        )

    def _merkle_check(self, verifier: Verifier | None) -> MerkleCheck:
        """``verify``'s check of the tree: checkpoints and tiles as stored when it starts."""
        store = self.tree_store()
        tree = proofs.Tree(store)
        return MerkleCheck(
            [SignedHead(c.size, c.note) for c in proofs.all_checkpoints(store)],
            verifier=verifier,
            consistency=tree.consistency_proof,
            sealed=(tree.state.size, tree.root),
        )

    def tree_store(self) -> MerkleStore:
        """The Merkle tree's storage (DESIGN §9); SQLite and PostgreSQL only."""
        self._check_open()
        if not isinstance(self.store, EventStore):
            raise LedgerError("proofs need a SQLite or PostgreSQL ledger, not memory://")
        if self._tree is None:
            self._tree = MerkleStore(self.store)
        return self._tree

    def seal(
        self,
        *,
        page_size: int = proofs.SEAL_PAGE_SIZE_DEFAULT,
        progress: proofs.Progress | None = None,
        stop: Callable[[], bool] | None = None,
        jobs: int = 1,
    ) -> proofs.TreeState:
        """Extends the Merkle tree over the events recorded since it was last sealed
        (``jobs`` > 1: pages hashed ahead in parallel, for a long existing log)."""
        return proofs.seal(
            self.tree_store(), page_size=page_size, progress=progress, stop=stop, jobs=jobs
        )

    def checkpoint(self, signer: Signer | None = None) -> str | None:
        """The latest signed checkpoint's note text (None before the first).

        With ``signer``: seals the tree first, signs its head and stores that checkpoint.
        """
        store = self.tree_store()
        if signer is not None:
            proofs.seal(store)
            now = self.engine.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return proofs.sign_checkpoint(store, signer, now=now).note
        latest = store.checkpoint(latest=True)
        return None if latest is None else latest.note

    def checkpoints(self) -> list[proofs.StoredCheckpoint]:
        """Every stored checkpoint, smallest first."""
        return list(proofs.all_checkpoints(self.tree_store()))

    def prove_inclusion(self, notification_id: int, size: int | None = None) -> dict[str, Any]:
        """The inclusion proof of an event against a signed checkpoint (DESIGN §9)."""
        return proofs.prove_inclusion(self.tree_store(), notification_id, size)

    def prove_consistency(self, size1: int, size2: int) -> dict[str, Any]:
        """The consistency proof between two signed checkpoints (DESIGN §9)."""
        return proofs.prove_consistency(self.tree_store(), size1, size2)

    def statement(
        self, holder_id: str, unit: str, start: date | str, end: date | str
    ) -> dict[str, Any]:
        """A statement of the holder's movements from ``start`` to ``end`` (dates, inclusive)
        with what proves them against the latest signed checkpoint (``ledger.proofs.statement``).
        """
        return build_statement(
            self.tree_store(), event_decoder(self.store), holder_id, unit, start, end
        )

    def close(self) -> None:
        """Closes connections; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.engine.close()
        finally:
            try:
                if self._views is not None:
                    self._views.close()
            finally:
                self.store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError("the ledger is closed")
