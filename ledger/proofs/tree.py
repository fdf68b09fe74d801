"""The Merkle tree of RFC 9162 §2.1 as pure functions over bytes (no I/O, no ledger types).

A tree is known through ``subtree(level, index)``: the hash of the complete subtree of
``2**level`` leaves starting at leaf ``index * 2**level`` (level 0 is the leaf hashes). The
functions below combine those into the root of any size, an inclusion proof (``PATH``) and a
consistency proof (``PROOF``), following the recursive definitions of RFC 9162 §2.1.1, §2.1.3.1
and §2.1.4.1. Only O(log n) subtree hashes are asked for each, so a stored tree answers from a
few rows (``ledger.proofs.tiles``). ``MemoryTree`` keeps every level in lists, for tests and
small trees. The verifier lives apart, in ``ledger.proofs.verify``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
"""Bytes of a SHA-256 hash."""
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1)."""

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(level, index)``: the hash of leaves ``[index * 2**level, (index + 1) * 2**level)``."""

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def leaf_input(
    notification_id: int, originator_id: str, originator_version: int, topic: str, state: bytes
) -> bytes:
    """The leaf input of one stored event (DESIGN §9).

    The notification id as 8 bytes big-endian, then for each of the originator id (text), the
    version (decimal text), the topic (UTF-8) and the stored state bytes: its length as 8 bytes
    big-endian, then the part.
    """
    parts = [notification_id.to_bytes(8, "big")]
    for part in (
        originator_id.encode(),
        str(originator_version).encode(),
        topic.encode(),
        bytes(state),
    ):
        parts.append(len(part).to_bytes(8, "big"))
        parts.append(part)
    return b"".join(parts)


def parse_leaf_input(leaf: bytes) -> tuple[int, str, int, str, bytes]:
    """``(notification id, originator id, version, topic, state)`` of a leaf input, strictly.

    Raises ``ValueError`` for anything ``leaf_input`` would not have made: a short or long
    part, trailing bytes, text that is not UTF-8, a version that is not plain decimal.
    """
    if len(leaf) < 8:
        raise ValueError("a leaf input starts with an 8-byte notification id")
    parts: list[bytes] = []
    offset = 8
    for _ in range(4):
        if len(leaf) < offset + 8:
            raise ValueError("a leaf input part is cut short")
        length = int.from_bytes(leaf[offset : offset + 8], "big")
        offset += 8
        if len(leaf) < offset + length:
            raise ValueError("a leaf input part is cut short")
        parts.append(leaf[offset : offset + length])
        offset += length
    if offset != len(leaf):
        raise ValueError("bytes after the leaf input's last part")
    originator, version, topic, state = parts
    version_text = version.decode("ascii")
    if not version_text.isdigit() or str(int(version_text)) != version_text:
        raise ValueError("the version is not plain decimal")
    return (
        int.from_bytes(leaf[:8], "big"),
        originator.decode("utf-8"),
        int(version_text),
        topic.decode("utf-8"),
        state,
    )


def split_point(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` > 1): RFC 9162's ``k``."""
    return 1 << ((size - 1).bit_length() - 1)


def range_hash(subtree: SubtreeHash, start: int, end: int) -> bytes:
    """``MTH(D[start:end])`` for a range that RFC 9162's recursion visits.

    Such a range starts on a multiple of the largest power of two not above its length, so it
    splits into one complete subtree on the left and a smaller such range on the right.
    """
    size = end - start
    if size <= 0:
        raise ValueError("an empty range has no subtree hash")
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        if start % size:
            raise ValueError(f"range [{start}, {end}) is not aligned")
        return subtree(level, start >> level)
    k = split_point(size)
    return node_hash(range_hash(subtree, start, start + k), range_hash(subtree, start + k, end))


def root(size: int, subtree: SubtreeHash) -> bytes:
    """The root of the first ``size`` leaves (``EMPTY_ROOT`` for 0)."""
    if size < 0:
        raise ValueError("a tree size is never negative")
    if size == 0:
        return EMPTY_ROOT
    return range_hash(subtree, 0, size)


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves, leaf end first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(range_hash(subtree, start + k, end))
            end = start + k
        else:
            path.append(range_hash(subtree, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, subtree: SubtreeHash) -> list[bytes]:
    """The proof that the tree of ``size1`` leaves is a prefix of the tree of ``size2``."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from {size1} to {size2}")
    proof: list[bytes] = []
    start, end, complete = 0, size2, True
    m = size1
    # SUBPROOF(m, D[start:end], complete), unrolled: each step adds one hash after the rest.
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(range_hash(subtree, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(subtree, start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        proof.append(range_hash(subtree, start, end))
    proof.reverse()
    return proof


class MemoryTree:
    """Every level of a tree in lists (tests, small trees): ``levels[0]`` are the leaf hashes."""

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for hashed in leaf_hashes:
            self.append(hashed)

    @classmethod
    def of_leaves(cls, leaves: Sequence[bytes]) -> MemoryTree:
        """The tree whose leaf inputs are ``leaves``."""
        return cls([leaf_hash(leaf) for leaf in leaves])

    @property
    def size(self) -> int:
        """How many leaves."""
        return len(self.levels[0])

    def append(self, hashed: bytes) -> None:
        """Adds a leaf hash and every complete subtree it closes."""
        level = 0
        self.levels[0].append(hashed)
        while len(self.levels[level]) % 2 == 0:
            pair = self.levels[level][-2:]
            if len(self.levels) == level + 1:
                self.levels.append([])
            self.levels[level + 1].append(node_hash(pair[0], pair[1]))
            level += 1

    def subtree(self, level: int, index: int) -> bytes:
        """The stored hash of a complete subtree."""
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        """The root at ``size`` (default: all leaves)."""
        return root(self.size if size is None else size, self.subtree)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` at ``size`` (default: all leaves)."""
        return inclusion_proof(index, self.size if size is None else size, self.subtree)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """The consistency proof from ``size1`` to ``size2`` (default: all leaves)."""
        return consistency_proof(size1, self.size if size2 is None else size2, self.subtree)


class CompactRange:
    """The roots of the complete subtrees of a growing tree: its root in O(log n) memory.

    ``append`` takes leaf hashes one at a time (a replay of the log); ``root`` folds the
    stack of perfect subtrees from the right, as RFC 9162's MTH does.
    """

    __slots__ = ("size", "stack")

    def __init__(self) -> None:
        self.size = 0
        self.stack: list[bytes] = []

    def append(self, hashed: bytes) -> None:
        """Adds a leaf hash, merging the subtrees it completes."""
        stack = self.stack
        stack.append(hashed)
        self.size += 1
        size = self.size
        while not size & 1:
            right = stack.pop()
            stack[-1] = _sha256(b"\x01" + stack[-1] + right).digest()
            size >>= 1

    def root(self) -> bytes:
        """The root of the leaves appended so far."""
        if not self.stack:
            return EMPTY_ROOT
        value = self.stack[-1]
        for left in reversed(self.stack[:-1]):
            value = node_hash(left, value)
        return value
