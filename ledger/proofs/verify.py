"""Verification of Merkle proofs, RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).

This module stands alone on purpose: an auditor can read it, and nothing else of the project,
to know what a proof from this ledger establishes. It needs only ``hashlib``. Each function
returns nothing when the proof holds and raises ``ProofError`` (saying which step failed)
otherwise; a hash of the wrong length fails too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32


class ProofError(ValueError):
    """Raised when a Merkle proof does not verify."""


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_hashes(*hashes: bytes) -> None:
    for value in hashes:
        if len(value) != HASH_SIZE:
            raise ProofError(f"a hash of {len(value)} bytes (SHA-256 has {HASH_SIZE})")


def root_from_inclusion_proof(
    leaf_index: int, tree_size: int, leaf_hash: bytes, audit_path: Sequence[bytes]
) -> bytes:
    """The root that ``audit_path`` leads to from ``leaf_hash`` (RFC 9162 §2.1.3.2, steps 1-4)."""
    _check_hashes(leaf_hash, *audit_path)
    if not 0 <= leaf_index < tree_size:
        raise ProofError(f"leaf index {leaf_index} is not below the tree size {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    for p in audit_path:
        if sn == 0:
            raise ProofError("the audit path is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the audit path is shorter than the tree is high")
    return r


def verify_inclusion(
    leaf_index: int,
    tree_size: int,
    leaf_hash: bytes,
    audit_path: Sequence[bytes],
    root: bytes,
) -> None:
    """Checks that the leaf with ``leaf_hash`` is leaf ``leaf_index`` of the tree with ``root``."""
    _check_hashes(root)
    if root_from_inclusion_proof(leaf_index, tree_size, leaf_hash, audit_path) != root:
        raise ProofError("the audit path does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Checks that the tree of ``size1`` with ``root1`` is a prefix of ``size2`` with ``root2``."""
    _check_hashes(root1, root2, *proof)
    if not 0 <= size1 <= size2:
        raise ProofError(f"no consistency from size {size1} to size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("trees of one size need an empty proof")
        if root1 != root2:
            raise ProofError("two roots for one tree size")
        return
    if size1 == 0:
        raise ProofError("the empty tree is a prefix of every tree: nothing to prove")
    if not proof:
        raise ProofError("an empty proof for two sizes")
    path = list(proof)
    # Step 2: a first tree of a power-of-two size is itself a node of the second tree.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is high")
    if fr != root1:
        raise ProofError("the proof does not lead to the first root")
    if sr != root2:
        raise ProofError("the proof does not lead to the second root")
