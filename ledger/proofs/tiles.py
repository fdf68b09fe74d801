"""Subtree hashes in tiles of height 8 (c2sp.org/tlog-tiles), pure: storage reads and writes them.

Tile ``(level, index)`` holds up to 256 consecutive hashes of tree level ``8 * level``: entry
``j`` of tile level ``L`` is the hash of the complete subtree of ``256**L`` leaves starting at
leaf ``j * 256**L``. Level-0 tiles hold the leaf hashes. A tile with fewer than 256 hashes is
the partial tile at the right edge; it only ever grows, and a full tile never changes.

A tree of ``n`` leaves keeps ``n + n/256 + n/65536 + ...`` hashes (32.1 bytes a leaf), and
any complete subtree is folded from at most 128 hashes of one tile, so a root or a proof reads
O(log n) tiles (one per tile level touched) and hashes at most a few hundred nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from ledger.proofs.tree import HASH_SIZE, SubtreeHash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile."""
TILE_BYTES = TILE_WIDTH * HASH_SIZE

TileKey = tuple[int, int]
"""``(tile level, tile index)``."""
ReadTiles = Callable[[Iterable[TileKey]], dict[TileKey, bytes]]
"""Reads the stored tiles among the keys (a missing tile is left out)."""


def fold(hashes: bytes) -> bytes:
    """The root of the complete subtree whose ``2**k`` hashes are concatenated in ``hashes``."""
    if len(hashes) == HASH_SIZE:
        return hashes
    sha256 = hashlib.sha256
    # Each level's node hash is SHA-256(0x01 || left || right), taken straight from the bytes
    # (this runs once per leaf when a tree is sealed: no call per node but the hash's own).
    level = [
        sha256(b"\x01" + hashes[i : i + 2 * HASH_SIZE]).digest()
        for i in range(0, len(hashes), 2 * HASH_SIZE)
    ]
    while len(level) > 1:
        level = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)
        ]
    return level[0]


def tile_of(level: int, index: int) -> tuple[TileKey, int, int]:
    """Where the subtree ``(level, index)`` lies: its tile, first entry and entry count."""
    tile_level, rest = divmod(level, TILE_HEIGHT)
    first = index << rest
    return (tile_level, first >> TILE_HEIGHT), first & (TILE_WIDTH - 1), 1 << rest


def entries_at(size: int, tile_level: int) -> int:
    """Hashes a tree of ``size`` leaves has at tile level ``tile_level``."""
    return size >> (TILE_HEIGHT * tile_level)


class TiledTree:
    """A tree of ``size`` leaves answered from stored tiles, read once each and cached."""

    def __init__(self, size: int, read_tiles: ReadTiles) -> None:
        self.size = size
        self.read_tiles = read_tiles
        self.tiles: dict[TileKey, bytes] = {}
        self._subtrees: dict[tuple[int, int], bytes] = {}

    def prefetch(self, compute: Callable[[SubtreeHash], object]) -> None:
        """Reads, in one call, every tile that ``compute`` will ask for (a dry run with dummies)."""
        wanted: set[TileKey] = set()

        def record(level: int, index: int) -> bytes:
            wanted.add(tile_of(level, index)[0])
            return bytes(HASH_SIZE)

        compute(record)
        missing = [key for key in wanted if key not in self.tiles]
        if missing:
            self.tiles.update(self.read_tiles(missing))

    def subtree(self, level: int, index: int) -> bytes:
        """The hash of a complete subtree of this tree (``SubtreeHash``)."""
        cached = self._subtrees.get((level, index))
        if cached is not None:
            return cached
        if (index + 1) << level > self.size:
            raise ValueError(f"subtree ({level}, {index}) is not complete in a tree of {self.size}")
        key, first, count = tile_of(level, index)
        tile = self.tiles.get(key)
        if tile is None:
            tile = self.read_tiles([key]).get(key, b"")
            self.tiles[key] = tile
        end = (first + count) * HASH_SIZE
        if len(tile) < end:
            raise LookupError(f"tile {key} is missing hashes the tree of {self.size} needs")
        value = fold(tile[first * HASH_SIZE : end])
        self._subtrees[(level, index)] = value
        return value


class TileAppender:
    """Grows a stored tree: holds the right-edge partial tile of each level, gives changed tiles.

    ``edges[L]`` is the content of the partial tile of level ``L`` (``b""`` when the level's
    entries fill whole tiles). ``append`` takes new leaf hashes and returns every tile it
    changed or made, with its full content, for the store to upsert.
    """

    def __init__(self, size: int, edges: Sequence[bytes]) -> None:
        self.size = size
        self.edges = list(edges)
        for level, edge in enumerate(self.edges):
            if len(edge) != (entries_at(size, level) % TILE_WIDTH) * HASH_SIZE:
                raise ValueError(f"the partial tile of level {level} does not fit size {size}")

    @staticmethod
    def edge_keys(size: int) -> list[TileKey]:
        """The partial tiles a tree of ``size`` leaves has (what ``__init__`` needs read)."""
        keys: list[TileKey] = []
        level = 0
        while entries_at(size, level):
            count = entries_at(size, level)
            if count % TILE_WIDTH:
                keys.append((level, count // TILE_WIDTH))
            level += 1
        return keys

    @classmethod
    def load(cls, size: int, read_tiles: ReadTiles) -> TileAppender:
        """The appender of a stored tree of ``size`` leaves."""
        stored = read_tiles(cls.edge_keys(size))
        edges: list[bytes] = []
        level = 0
        while entries_at(size, level):
            count = entries_at(size, level)
            partial = count % TILE_WIDTH
            edges.append(stored.get((level, count // TILE_WIDTH), b"") if partial else b"")
            level += 1
        return cls(size, edges)

    def append(self, leaf_hashes: Sequence[bytes]) -> dict[TileKey, bytes]:
        """Adds the leaf hashes; returns the tiles changed, each with its whole content."""
        changed: dict[TileKey, bytes] = {}
        pending = b"".join(leaf_hashes)
        level = 0
        while pending:
            if len(self.edges) == level:
                self.edges.append(b"")
            before = entries_at(self.size, level)
            tile_index = before // TILE_WIDTH
            data = self.edges[level] + pending
            full = len(data) // TILE_BYTES
            roots: list[bytes] = []
            for i in range(full):
                tile = data[i * TILE_BYTES : (i + 1) * TILE_BYTES]
                changed[(level, tile_index + i)] = tile
                roots.append(fold(tile))
            rest = data[full * TILE_BYTES :]
            if rest:
                changed[(level, tile_index + full)] = rest
            self.edges[level] = rest
            pending = b"".join(roots)
            level += 1
        self.size += len(leaf_hashes)
        return changed
