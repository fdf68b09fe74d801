"""The proofs of one ledger's log: sealing the tree, checkpoints, inclusion and consistency.

``TreeStore`` is the port: what these need from a database (the tiles, the tree's tracked
size, the checkpoints, the events' leaf inputs). ``adapters/storage/merkle.py`` implements it on
SQLite and PostgreSQL. Everything here is bounded: a seal reads a page of events at a time, a
root or a proof reads O(log n) tiles.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import Notification

from ledger.errors import LedgerError, Rejected
from ledger.proofs.checkpoint import Checkpoint
from ledger.proofs.note import Signer
from ledger.proofs.tiles import TILE_WIDTH, TileAppender, TiledTree, TileKey
from ledger.proofs.tree import consistency_proof, inclusion_proof, root

SEAL_PAGE_SIZE_DEFAULT = 20_000
"""Events hashed and written per seal transaction."""
SEAL_PAGE_SIZE_MAX = 200_000
SEAL_JOBS_MAX = 16
"""Bound on the parallel readers of one seal."""
SEAL_ATTEMPTS_MAX = 10
"""Bound on the retries of a page that another sealer extended first."""


@dataclass(frozen=True, slots=True)
class TreeState:
    """The sealed tree: how many leaves, and the notification id of the last one."""

    size: int
    last_id: int


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint as stored: its size, root, note text and when it was signed."""

    size: int
    root: bytes
    note: str
    signed_at: str


class TreeStore(Protocol):
    """What the proofs need from a ledger's database (``adapters/storage/merkle.py``)."""

    def tree_state(self) -> TreeState:
        """The sealed size and the notification id of its last leaf."""

    def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        """The stored tiles among ``keys``."""

    def leaf_hash_pages(
        self, after_id: int, upto_id: int, page_ids: int, jobs: int = 1
    ) -> Iterator[tuple[list[int], list[bytes]]]:
        """Ids and leaf hashes of the events in (``after_id``, ``upto_id``], in id order, a
        page per ``page_ids`` ids; ``jobs`` > 1 reads and hashes pages ahead in parallel."""

    def extend(
        self, old: TreeState, new: TreeState, tiles: dict[TileKey, bytes], first_ids: dict[int, int]
    ) -> bool:
        """Writes the tiles and moves the tree from ``old`` to ``new`` in one transaction.

        ``first_ids`` maps a new level-0 tile to the notification id of its first leaf.
        Returns False (writing nothing) when the stored tree is no longer ``old``.
        """

    def leaf_index(self, notification_id: int) -> int | None:
        """The leaf index of an event in the sealed tree (None if absent or not sealed yet)."""

    def leaf_input(self, notification_id: int) -> bytes | None:
        """The leaf input of a stored event (DESIGN §9), None if there is none."""

    def stream_rows(self, originator_id: str, after_version: int, limit: int) -> list[Notification]:
        """Up to ``limit`` stored rows of one stream after ``after_version``, with their ids."""

    def max_notification_id(self) -> int:
        """The newest notification id of the log."""

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        """Stores a checkpoint; False if one of that size is stored already."""

    def checkpoints(self, after_size: int, limit: int) -> list[StoredCheckpoint]:
        """Stored checkpoints with a size above ``after_size``, smallest first."""

    def checkpoint(self, *, at_least: int = 0, latest: bool = False) -> StoredCheckpoint | None:
        """The latest checkpoint, or the smallest with a size of at least ``at_least``."""


Progress = Callable[[int, int], None]
"""Called after each page with (leaves sealed, events in the log)."""


class Tree:
    """The sealed tree of a store, read through its tiles."""

    def __init__(self, store: TreeStore) -> None:
        self.store = store
        self.state = store.tree_state()

    def _tiled(self, compute: Callable[[Any], object]) -> TiledTree:
        tiled = TiledTree(self.state.size, self.store.read_tiles)
        tiled.prefetch(compute)
        return tiled

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.state.size:
            raise Rejected(
                "invalid_command",
                field="size",
                reason=f"the tree is sealed up to {self.state.size} leaves",
            )

    def root(self, size: int | None = None) -> bytes:
        """The root at ``size`` (default: the sealed size)."""
        size = self.state.size if size is None else size
        self._check_size(size)
        return root(size, self._tiled(lambda sub: root(size, sub)).subtree)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The audit path of leaf ``index`` at ``size``."""
        self._check_size(size)
        tiled = self._tiled(lambda sub: inclusion_proof(index, size, sub))
        return inclusion_proof(index, size, tiled.subtree)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The consistency proof from ``size1`` to ``size2``."""
        self._check_size(size2)
        if size1 == size2:
            return []
        tiled = self._tiled(lambda sub: consistency_proof(size1, size2, sub))
        return consistency_proof(size1, size2, tiled.subtree)


def seal(
    store: TreeStore,
    *,
    page_size: int = SEAL_PAGE_SIZE_DEFAULT,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
    jobs: int = 1,
) -> TreeState:
    """Extends the tree over every event recorded since its last leaf, a page per transaction.

    Resumable: each page commits with the tree's new size, so a stopped seal goes on from
    there. Two sealers never add a leaf twice: a page whose tree moved meanwhile is given up
    and the seal goes on from what the other stored. ``jobs`` > 1 hashes pages ahead in
    parallel (``TreeStore.leaf_hash_pages``), for a long existing log.
    """
    if not 1 <= page_size <= SEAL_PAGE_SIZE_MAX:
        raise Rejected("invalid_command", field="page_size", reason=f"1..{SEAL_PAGE_SIZE_MAX}")
    if not 1 <= jobs <= SEAL_JOBS_MAX:
        raise Rejected("invalid_command", field="jobs", reason=f"1..{SEAL_JOBS_MAX}")
    state = store.tree_state()
    appender: TileAppender | None = None
    lost = 0
    while stop is None or not stop():
        upto = store.max_notification_id()
        if upto <= state.last_id:
            break
        pages = store.leaf_hash_pages(state.last_id, upto, page_size, jobs)
        try:
            for ids, hashes in pages:
                if stop is not None and stop():
                    break
                if not ids:
                    continue
                if appender is None or appender.size != state.size:
                    appender = TileAppender.load(state.size, store.read_tiles)
                first_size = state.size
                tiles = appender.append(hashes)
                first_ids = {
                    index // TILE_WIDTH: ids[index - first_size]
                    for index in range(first_size, first_size + len(ids))
                    if index % TILE_WIDTH == 0
                }
                new = TreeState(state.size + len(ids), ids[-1])
                if not store.extend(state, new, tiles, first_ids):
                    # Another sealer moved the tree: go on from what it stored.
                    lost += 1
                    if lost >= SEAL_ATTEMPTS_MAX:
                        raise LedgerError("seal: the tree keeps moving under another sealer")
                    appender = None
                    state = store.tree_state()
                    break
                state = new
                if progress is not None:
                    progress(state.size, max(upto, state.last_id))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
    return state


def sign_checkpoint(
    store: TreeStore, signer: Signer, *, now: str | None = None
) -> StoredCheckpoint:
    """Signs the sealed tree's head with ``signer`` (origin: the key's name) and stores it.

    A checkpoint of that size stored already is returned instead (one note per size).
    """
    tree = Tree(store)
    size = tree.state.size
    existing = store.checkpoint(at_least=size)
    if existing is not None and existing.size == size:
        return existing
    head = Checkpoint(signer.name, size, tree.root(size))
    signed_at = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stored = StoredCheckpoint(size, head.root, head.sign(signer), signed_at)
    if not store.add_checkpoint(stored):
        racing = store.checkpoint(at_least=size)
        assert racing is not None
        return racing
    return stored


def tree_status(
    store: TreeStore, newest: int, waited_s: Callable[[int], float | None]
) -> dict[str, Any]:
    """Where the tree stands (``Ledger.status()["tree"]``, ``ledger status``).

    ``size`` leaves sealed, up to notification ``position``; ``lag_events``: notification ids
    between it and ``newest`` (as the views count theirs); ``lag_s``: ``waited_s(position)``,
    the seconds since the oldest event not sealed yet was recorded (0 when caught up, None
    when unreadable); ``checkpoint``: the latest signed one's size and signing time, or None.
    """
    state = store.tree_state()
    latest = store.checkpoint(latest=True)
    lag = max(newest - state.last_id, 0)
    return {
        "size": state.size,
        "position": state.last_id,
        "lag_events": lag,
        "lag_s": 0.0 if lag == 0 else waited_s(state.last_id),
        "checkpoint": None
        if latest is None
        else {"size": latest.size, "signed_at": latest.signed_at},
    }


def b64(value: bytes) -> str:
    """Standard base64 (the proofs' JSON form of a hash)."""
    return base64.b64encode(value).decode()


def prove_inclusion(
    store: TreeStore, notification_id: int, size: int | None = None
) -> dict[str, Any]:
    """The inclusion proof of an event against a stored checkpoint (DESIGN §9).

    ``size`` None: the latest checkpoint; otherwise the smallest stored checkpoint of at least
    ``size`` leaves that covers the event.
    """
    index = store.leaf_index(notification_id)
    if index is None:
        raise Rejected(
            "invalid_command",
            field="notification_id",
            reason="no such event in the sealed tree (run `ledger seal`)",
        )
    leaf = store.leaf_input(notification_id)
    assert leaf is not None
    checkpoint = (
        store.checkpoint(latest=True)
        if size is None
        else store.checkpoint(at_least=max(size, index + 1))
    )
    if checkpoint is None or checkpoint.size <= index:
        raise Rejected(
            "invalid_command",
            field="size",
            reason="no signed checkpoint covers this event yet (run `ledger checkpoint`)",
        )
    path = Tree(store).inclusion_proof(index, checkpoint.size)
    return {
        "notification_id": notification_id,
        "leaf_index": index,
        "tree_size": checkpoint.size,
        "leaf_input": b64(leaf),
        "audit_path": [b64(p) for p in path],
        "checkpoint": checkpoint.note,
    }


def prove_consistency(store: TreeStore, size1: int, size2: int) -> dict[str, Any]:
    """The consistency proof between two stored checkpoints (DESIGN §9)."""
    if not 0 < size1 <= size2:
        raise Rejected("invalid_command", field="from", reason="0 < from <= to")
    first = store.checkpoint(at_least=size1)
    second = store.checkpoint(at_least=size2)
    for wanted, found, name in ((size1, first, "from"), (size2, second, "to")):
        if found is None or found.size != wanted:
            raise Rejected(
                "invalid_command", field=name, reason=f"no stored checkpoint of size {wanted}"
            )
    assert first is not None
    assert second is not None
    proof = Tree(store).consistency_proof(size1, size2)
    return {
        "size1": size1,
        "size2": size2,
        "proof": [b64(p) for p in proof],
        "checkpoint1": first.note,
        "checkpoint2": second.note,
    }


def all_checkpoints(store: TreeStore, page_size: int = 1_000) -> Iterable[StoredCheckpoint]:
    """Every stored checkpoint, smallest first, a page at a time."""
    after = 0
    while True:
        page = store.checkpoints(after, page_size)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1].size
