"""Hypothesis: the project's proofs against an implementation of RFC 9162 §2.1 written here.

The reference below is written from the RFC's recursive definitions (MTH, PATH, SUBPROOF) and
verifies by rebuilding the roots recursively: it shares no code with ``ledger.proofs``. Every
proof the project makes equals the reference's and verifies with both verifiers; any flipped
byte of a leaf, path or root fails with both; tiles grown in random chunks answer like a tree
held whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.proofs.tiles import TileAppender, TiledTree
from ledger.proofs.tree import MemoryTree, consistency_proof, inclusion_proof, root
from ledger.proofs.verify import ProofError, verify_consistency, verify_inclusion


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return ref_leaf(leaves[0])
    k = ref_k(len(leaves))
    return ref_node(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = ref_k(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [ref_mth(leaves)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], complete), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def ref_root_from_path(m: int, n: int, leaf: bytes, path: list[bytes]) -> bytes:
    """The root PATH(m, D[n]) leads to, mirroring its definition; raises on a wrong length."""
    if n == 1:
        if path:
            raise ValueError("path too long")
        return leaf
    if not path:
        raise ValueError("path too short")
    k = ref_k(n)
    if m < k:
        return ref_node(ref_root_from_path(m, k, leaf, path[:-1]), path[-1])
    return ref_node(path[-1], ref_root_from_path(m - k, n - k, leaf, path[:-1]))


def ref_roots_from_subproof(
    m: int, n: int, proof: list[bytes], complete: bool, old_root: bytes
) -> tuple[bytes, bytes]:
    """(MTH(D[0:m]), MTH(D[0:n])) rebuilt from SUBPROOF(m, D[n], complete)."""
    if m == n:
        if complete:
            if proof:
                raise ValueError("proof too long")
            return old_root, old_root
        if len(proof) != 1:
            raise ValueError("proof of the wrong length")
        return proof[0], proof[0]
    if not proof:
        raise ValueError("proof too short")
    k = ref_k(n)
    if m <= k:
        old, new = ref_roots_from_subproof(m, k, proof[:-1], complete, old_root)
        return old, ref_node(new, proof[-1])
    old, new = ref_roots_from_subproof(m - k, n - k, proof[:-1], False, old_root)
    return ref_node(proof[-1], old), ref_node(proof[-1], new)


def ref_verify_inclusion(m: int, n: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    try:
        return 0 <= m < n and ref_root_from_path(m, n, leaf, path) == root
    except ValueError:
        return False


def ref_verify_consistency(m: int, n: int, proof: list[bytes], root1: bytes, root2: bytes) -> bool:
    try:
        old, new = ref_roots_from_subproof(m, n, proof, True, root1)
    except ValueError:
        return False
    return 0 < m <= n and old == root1 and new == root2


def flip(data: bytes, position: int, bit: int) -> bytes:
    position %= max(len(data), 1)
    return data[:position] + bytes([data[position] ^ (1 << bit)]) + data[position + 1 :]


def flipped(hashes: list[bytes], which: int, position: int, bit: int) -> list[bytes]:
    """``hashes`` with one bit of the ``which``-th flipped."""
    return [*hashes[:which], flip(hashes[which], position, bit), *hashes[which + 1 :]]


def refused_by_both(
    cases: list[tuple[Any, ...]],
    reference: Callable[..., bool],
    verify: Callable[..., None],
    kind: str,
) -> None:
    """Every case (a corrupted proof) is refused by the reference and by ``verify``."""
    for case in cases:
        assert not reference(*case)
        try:
            verify(*case)
        except ProofError:
            pass
        else:
            raise AssertionError(f"accepted a corrupted {kind} proof {case}")


LEAVES = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaves=LEAVES, data=st.data())
def test_inclusion_proofs_agree_with_the_reference(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Root and audit path equal the reference's; both verifiers accept; a flipped byte fails."""
    n = len(leaves)
    m = data.draw(st.integers(0, n - 1))
    tree = MemoryTree.of_leaves(leaves)
    root = tree.root()
    assert root == ref_mth(leaves)
    path = tree.inclusion_proof(m)
    assert path == ref_path(m, leaves)
    leaf = ref_leaf(leaves[m])
    assert ref_verify_inclusion(m, n, leaf, path, root)
    verify_inclusion(m, n, leaf, path, root)
    position, bit = data.draw(st.integers(0, 10_000)), data.draw(st.integers(0, 7))
    bad_leaf = ref_leaf(flip(leaves[m], position, bit)) if leaves[m] else flip(leaf, 0, bit)
    bad_root = flip(root, position, bit)
    cases = [(m, n, bad_leaf, path, root), (m, n, leaf, path, bad_root)]
    if path:
        which = data.draw(st.integers(0, len(path) - 1))
        cases.append((m, n, leaf, flipped(path, which, position, bit), root))
    refused_by_both(cases, ref_verify_inclusion, verify_inclusion, "inclusion")


@settings(max_examples=150, deadline=None)
@given(leaves=LEAVES, data=st.data())
def test_consistency_proofs_agree_with_the_reference(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """PROOF(m, D[n]) equals the reference's; both verifiers accept; a flipped byte fails."""
    n = len(leaves)
    m = data.draw(st.integers(1, n))
    tree = MemoryTree.of_leaves(leaves)
    proof = tree.consistency_proof(m, n)
    assert proof == ref_subproof(m, leaves, True)
    root1, root2 = ref_mth(leaves[:m]), ref_mth(leaves)
    assert ref_verify_consistency(m, n, proof, root1, root2)
    verify_consistency(m, n, proof, root1, root2)
    position, bit = data.draw(st.integers(0, 10_000)), data.draw(st.integers(0, 7))
    cases = [(m, n, proof, flip(root1, position, bit), root2),
             (m, n, proof, root1, flip(root2, position, bit))]  # fmt: skip
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        cases.append((m, n, flipped(proof, which, position, bit), root1, root2))
    refused_by_both(cases, ref_verify_consistency, verify_consistency, "consistency")


@settings(max_examples=25, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 300), min_size=1, max_size=8),
    data=st.data(),
)
def test_tiles_grown_in_chunks_answer_like_the_whole_tree(
    chunks: list[int], data: st.DataObject
) -> None:
    """Tiles appended in random chunks (reloaded between them) give the reference's answers."""
    leaves = [i.to_bytes(4, "big") for i in range(sum(chunks))]
    stored: dict[tuple[int, int], bytes] = {}

    def read(keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {key: stored[key] for key in keys if key in stored}

    size = 0
    for chunk in chunks:
        appender = TileAppender.load(size, read)
        stored.update(appender.append([ref_leaf(leaf) for leaf in leaves[size : size + chunk]]))
        size += chunk
    n = data.draw(st.integers(1, size))
    m = data.draw(st.integers(0, n - 1))
    tiled = TiledTree(size, read)
    reference = leaves[:n]
    assert root(n, tiled.subtree) == ref_mth(reference)
    assert inclusion_proof(m, n, tiled.subtree) == ref_path(m, reference)
    assert consistency_proof(m + 1, n, tiled.subtree) == ref_subproof(m + 1, reference, True)
