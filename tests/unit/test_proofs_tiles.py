"""Tiles of height 8 across three tile levels (more than 65,536 leaves)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from ledger.proofs.tiles import TILE_BYTES, TileAppender, TiledTree
from ledger.proofs.tree import (
    CompactRange,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
)

SIZE = 70_001


def test_three_tile_levels_answer_like_the_whole_tree() -> None:
    """Roots, paths and consistency proofs from tiles equal those of a tree held whole."""
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(SIZE)]
    whole = MemoryTree(hashes)
    stored: dict[tuple[int, int], bytes] = {}
    reads: list[int] = []

    def read(keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        keys = list(keys)
        reads.append(len(keys))
        return {key: stored[key] for key in keys if key in stored}

    size = 0
    for chunk in (1, 255, 300, 65_000, 4_445):
        stored.update(TileAppender.load(size, read).append(hashes[size : size + chunk]))
        size += chunk
    assert size == SIZE
    assert len(stored[(2, 0)]) == 32  # one hash of 65,536 leaves at tile level 2
    assert len(stored[(0, 0)]) == TILE_BYTES
    for n in (1, 256, 257, 65_536, 65_537, SIZE):
        tiled = TiledTree(SIZE, read)
        assert root(n, tiled.subtree) == whole.root(n)
        assert inclusion_proof(n - 1, n, tiled.subtree) == whole.inclusion_proof(n - 1, n)
        assert consistency_proof(1, n, tiled.subtree) == whole.consistency_proof(1, n)
    reads.clear()
    tiled = TiledTree(SIZE, read)
    tiled.prefetch(lambda subtree: inclusion_proof(12_345, SIZE, subtree))
    assert inclusion_proof(12_345, SIZE, tiled.subtree) == whole.inclusion_proof(12_345)
    assert len(reads) == 1  # every tile of the proof in one read
    assert reads[0] <= 6


def test_a_subtree_beyond_the_size_is_refused() -> None:
    """A tree of 5 leaves has no complete subtree of 8."""
    stored = TileAppender(0, []).append([leaf_hash(b"x")] * 5)
    tiled = TiledTree(5, lambda keys: {k: stored[k] for k in keys if k in stored})
    with pytest.raises(ValueError, match="not complete"):
        tiled.subtree(3, 0)


def test_a_compact_range_gives_every_root() -> None:
    """Appending leaf by leaf, the root at each size equals the whole tree's."""
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(300)]
    whole = MemoryTree(hashes)
    compact = CompactRange()
    assert compact.root() == whole.root(0)
    for n, hashed in enumerate(hashes, start=1):
        compact.append(hashed)
        assert compact.root() == whole.root(n)
