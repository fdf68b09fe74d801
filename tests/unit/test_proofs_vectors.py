"""Known-answer tests of the Merkle tree and its verifier (RFC 6962/9162 test data).

The leaves, node hashes, roots and proofs are the RFC 6962 test data published with
transparency-dev/merkle (``testonly/constants.go`` and ``proof/verify_test.go``); the leaf
indexes there count from 1, here from 0.
"""

from __future__ import annotations

import hashlib

import pytest

from ledger.proofs.tree import (
    EMPTY_ROOT,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    leaf_input,
    node_hash,
    parse_leaf_input,
    root,
)
from ledger.proofs.verify import ProofError, verify_consistency, verify_inclusion

LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAF_HASHES = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
]
H = {
    "96a2": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f08": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "bc1a": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca85": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37e": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "fac5": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "6e34": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "0ebc": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "b086": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
}
INCLUSION = [  # (leaf index from 0, tree size, audit path)
    (0, 1, []),
    (0, 8, ["96a2", "5f08", "6b47"]),
    (5, 8, ["bc1a", "ca85", "d37e"]),
    (2, 3, ["fac5"]),
    (1, 5, ["6e34", "5f08", "bc1a"]),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a2", "5f08", "6b47"]),
    (6, 8, ["0ebc", "ca85", "d37e"]),
    (2, 5, ["5f08", "bc1a"]),
    (6, 7, ["0ebc", "b086", "d37e"]),
]
TREE = MemoryTree.of_leaves(LEAVES)


def test_leaf_and_node_hashes_are_rfc_6962s() -> None:
    """The leaf hash prefixes 0x00 and the node hash 0x01 (transparency-dev's vectors)."""
    assert leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    assert [leaf_hash(leaf).hex() for leaf in LEAVES] == LEAF_HASHES


@pytest.mark.parametrize("size", range(9))
def test_the_root_of_each_size_is_the_known_one(size: int) -> None:
    """Sizes 0 to 8: the empty root is SHA-256 of nothing."""
    assert root(size, TREE.subtree).hex() == ROOTS[size]
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_are_the_known_ones_and_verify(
    index: int, size: int, path: list[str]
) -> None:
    """The audit path is the published one; the verifier accepts it against the root."""
    proof = inclusion_proof(index, size, TREE.subtree)
    assert [p.hex() for p in proof] == [H[p] for p in path]
    verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("size1", "size2", "path"), CONSISTENCY)
def test_consistency_proofs_are_the_known_ones_and_verify(
    size1: int, size2: int, path: list[str]
) -> None:
    """The consistency proof is the published one; the verifier accepts it."""
    proof = consistency_proof(size1, size2, TREE.subtree)
    assert [p.hex() for p in proof] == [H[p] for p in path]
    verify_consistency(
        size1, size2, proof, bytes.fromhex(ROOTS[size1]), bytes.fromhex(ROOTS[size2])
    )


def _corrupted_inclusions(index: int, size: int, proof: list[bytes]) -> list[tuple]:
    good_root = bytes.fromhex(ROOTS[size])
    hashed = leaf_hash(LEAVES[index])
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    cases = [
        (index - 1, size, hashed, proof, good_root),
        (index + 1, size, hashed, proof, good_root),
        (index ^ 2, size, hashed, proof, good_root),
        (index, size * 2, hashed, proof, good_root),
        (index, size // 2, hashed, proof, good_root),
        (index, size, leaf_hash(b"WrongLeaf"), proof, good_root),
        (index, size, hashed, proof, EMPTY_ROOT),
        (index, size, hashed, proof, some),
        (index, size, hashed, [*proof, b""], good_root),
        (index, size, hashed, [*proof, good_root], good_root),
        (index, size, hashed, [b"", *proof], good_root),
        (index, size, hashed, [good_root, *proof], good_root),
    ]
    for i in range(len(proof)):
        flipped = [*proof]
        flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        cases.append((index, size, hashed, flipped, good_root))
    if proof:
        cases.append((index, size, hashed, proof[:-1], good_root))
    if len(proof) > 1:
        cases.append((index, size, hashed, [proof[0], some, *proof[1:]], good_root))
    return cases


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION[1:])
def test_corrupted_inclusion_proofs_fail(index: int, size: int, path: list[str]) -> None:
    """transparency-dev's corruptions: wrong index or size, leaf, root, garbage, flipped bits."""
    proof = [bytes.fromhex(H[p]) for p in path]
    for case in _corrupted_inclusions(index, size, proof):
        with pytest.raises(ProofError):
            verify_inclusion(*case)


@pytest.mark.parametrize(("size1", "size2", "path"), CONSISTENCY[1:])
def test_corrupted_consistency_proofs_fail(size1: int, size2: int, path: list[str]) -> None:
    """Wrong sizes, roots, an empty or padded proof, a truncated proof, a flipped bit."""
    proof = [bytes.fromhex(H[p]) for p in path]
    root1, root2 = bytes.fromhex(ROOTS[size1]), bytes.fromhex(ROOTS[size2])
    cases = [
        (size1 - 1, size2, proof, root1, root2),
        (size1 + 1, size2, proof, root1, root2),
        (size1 ^ 2, size2, proof, root1, root2),
        (size1, size2 * 2, proof, root1, root2),
        (size1, size2 // 2, proof, root1, root2),
        (size1, size2, proof, leaf_hash(b"WrongRoot"), root2),
        (size1, size2, proof, root1, leaf_hash(b"WrongRoot")),
        (size1, size2, proof, root2, root1),
        (size1, size2, [], root1, root2),
        (size1, size2, [*proof, b""], root1, root2),
        (size1, size2, [*proof, root1], root1, root2),
        (size1, size2, [*proof, root2], root1, root2),
        (size1, size2, [b"", *proof], root1, root2),
        (size1, size2, [root1, *proof], root1, root2),
        (size1, size2, [root2, *proof], root1, root2),
        (size1, size2, [proof[0], *proof], root1, root2),
        (size1, size2, proof[:-1], root1, root2),
    ]
    for i in range(len(proof)):
        flipped = [*proof]
        flipped[i] = bytes([proof[i][0] ^ 16]) + proof[i][1:]
        cases.append((size1, size2, flipped, root1, root2))
    for case in cases:
        with pytest.raises(ProofError):
            verify_consistency(*case)


def test_consistency_edge_cases() -> None:
    """Equal sizes need equal roots and no proof; size 0 and time travel fail."""
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency(1, 1, [], TREE.root(1), TREE.root(1))
    for case in [
        (1, 1, [], TREE.root(1), TREE.root(2)),
        (0, 1, [], EMPTY_ROOT, TREE.root(1)),
        (1, 0, [], TREE.root(1), EMPTY_ROOT),
        (2, 1, [], TREE.root(2), TREE.root(1)),
        (1, 2, [], TREE.root(1), TREE.root(2)),
        (1, 1, [EMPTY_ROOT], TREE.root(1), TREE.root(1)),
        (0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
    ]:
        with pytest.raises(ProofError):
            verify_consistency(*case)


def test_inclusion_edge_cases() -> None:
    """A one-leaf tree's root is its leaf hash; index beyond the size or a short hash fails."""
    one = leaf_hash(b"data")
    verify_inclusion(0, 1, one, [], one)
    for case in [
        (0, 1, one, [], b""),
        (0, 1, b"", [], one),
        (0, 0, one, [], EMPTY_ROOT),
        (1, 0, one, [], EMPTY_ROOT),
        (2, 1, one, [], one),
    ]:
        with pytest.raises(ProofError):
            verify_inclusion(*case)


def test_the_leaf_input_is_the_designs_bytes() -> None:
    """Id as 8 bytes big-endian, then each part's length as 8 bytes big-endian and the part."""
    got = leaf_input(258, "ab", 12, "T", b"\x00\xff")
    assert got == (
        bytes.fromhex("0000000000000102")
        + bytes.fromhex("0000000000000002") + b"ab"
        + bytes.fromhex("0000000000000002") + b"12"
        + bytes.fromhex("0000000000000001") + b"T"
        + bytes.fromhex("0000000000000002") + b"\x00\xff"
    )  # fmt: skip


def test_a_leaf_input_parses_back_strictly() -> None:
    """What leaf_input makes parses back; a cut, padded or odd input is refused."""
    leaf = leaf_input(258, "ab", 12, "T", b"\x00\xff")
    assert parse_leaf_input(leaf) == (258, "ab", 12, "T", b"\x00\xff")
    for bad in (leaf[:-1], leaf + b"\x00", leaf[:7], leaf_input(1, "a", 1, "T", b"")[:-9]):
        with pytest.raises(ValueError, match="leaf input"):
            parse_leaf_input(bad)
    with pytest.raises(ValueError, match="decimal"):
        parse_leaf_input(_with_version(b"012"))


def _with_version(version: bytes) -> bytes:
    parts = [b"ab", version, b"T", b""]
    body = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    return (1).to_bytes(8, "big") + body
