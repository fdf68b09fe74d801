"""Proofs over the log (DESIGN §9): an RFC 9162 Merkle tree, signed checkpoints, statements.

- ``tree``: the tree math as pure functions over bytes (leaf and node hashes, roots, inclusion
  and consistency proofs), no I/O and no ledger types;
- ``verify``: the verifier alone (RFC 9162 §2.1.3.2 and §2.1.4.2), so an auditor can read it
  without the rest;
- ``tiles``: subtree hashes kept in tiles of height 8 (c2sp.org/tlog-tiles), pure: the storage
  adapter reads and writes the tiles;
- ``note`` and ``checkpoint``: C2SP signed notes (Ed25519) and tlog checkpoints;
- ``log``: the ``TreeStore`` port, sealing, checkpoints, inclusion and consistency proofs;
- ``statement``: statements a holder checks without the database;
- ``audit``: ``verify``'s check of the log against its signed checkpoints.

What each proves and does not: docs/PROOFS.md.
"""
