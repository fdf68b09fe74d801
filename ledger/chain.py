"""Tamper evidence: a hash chain over the notification log, one link per write transaction.

Each transaction that records events also records a link ``(first_id, last_id, hash)`` where
``hash = sha256(previous link's hash || digest of the transaction's events in notification
order)``. An event edited, deleted or inserted directly in the database changes a digest, leaves
an event outside every link, or breaks the chain from that link on. ``verify`` recomputes it.
Only a truncation of the newest transactions together with their links goes unseen from inside
the database: keep the head hash ``verify`` prints somewhere else to detect that too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol
from uuid import UUID

GENESIS = b""
"""The hash before the first link."""


class StoredRow(Protocol):
    """The stored columns the digest covers."""

    @property
    def originator_id(self) -> UUID | str:
        """Stream id."""

    @property
    def originator_version(self) -> int:
        """Position in the stream."""

    @property
    def topic(self) -> str:
        """Event type."""

    @property
    def state(self) -> bytes:
        """Stored payload (as stored: compressed or encrypted bytes included)."""


def events_digest(rows: Iterable[StoredRow]) -> bytes:
    """SHA-256 over the stored columns of ``rows``, each part length-prefixed.

    The parts are joined and hashed once: the same digest as one ``update`` per part, without
    eight calls an event.
    """
    return hashlib.sha256(b"".join([row_digest_parts(row) for row in rows])).digest()


def row_digest_parts(row: StoredRow) -> bytes:
    """The bytes ``events_digest`` hashes for one row: its four stored columns, each after its
    length (8 bytes, big-endian); ``verify`` streams them into its hasher row by row."""
    originator_id = str(row.originator_id).encode()
    version = str(row.originator_version).encode()
    topic = row.topic.encode()
    state = bytes(row.state)
    return b"".join(
        (
            _length(len(originator_id)),
            originator_id,
            _length(len(version)),
            version,
            _length(len(topic)),
            topic,
            _length(len(state)),
            state,
        )
    )


_LENGTHS = tuple(n.to_bytes(8, "big") for n in range(4096))
"""The length prefixes of the usual part sizes, made once."""


def _length(n: int) -> bytes:
    return _LENGTHS[n] if n < 4096 else n.to_bytes(8, "big")


def link(previous: bytes, digest: bytes) -> bytes:
    """The hash of a link: ``sha256(previous || digest)`` (PostgreSQL computes the same)."""
    return hashlib.sha256(previous + digest).digest()
