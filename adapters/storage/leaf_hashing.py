"""Leaf hashes of SQLite rows (DESIGN §9): SQLite has no SHA-256, so Python computes them."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Any

_EIGHT = struct.Struct(">Q")
VERSIONS_CACHED = 10_000
"""Versions below this keep their length-prefixed text (a stream's versions are small ints)."""
PREFIX_CACHE_MAX = 100_000
"""Originator ids and topics whose length-prefixed bytes are kept between pages."""
SELECT_RANGE = (
    "SELECT rowid, originator_id, originator_version, topic, state FROM {events}"
    " WHERE rowid > ? AND rowid <= ? ORDER BY rowid"
)


class SQLiteLeafHasher:
    """Leaf hashes of stored rows, as cheaply as Python makes them.

    Streams and topics repeat from row to row (a CTI's consumptions), so their length-prefixed
    bytes are made once and kept (bounded); per row only the id, the version and the state are
    packed, and one SHA-256 hashes the concatenation.
    """

    def __init__(self) -> None:
        self._prefixed: dict[str, bytes] = {}
        self._versions: dict[int, bytes] = {}

    def hashes(self, rows: Iterable[Any]) -> tuple[list[int], list[bytes]]:
        """Notification ids and leaf hashes of ``(id, originator_id, version, topic, state)``."""
        ids: list[int] = []
        hashes: list[bytes] = []
        sha256 = hashlib.sha256
        eight = _EIGHT.pack
        prefixed = self._prefixed
        prefixed_versions = self._versions
        if len(prefixed) > PREFIX_CACHE_MAX:
            prefixed.clear()
        for notification_id, originator_id, version, topic, state in rows:
            o = prefixed.get(originator_id)
            if o is None:
                raw = originator_id.encode()
                o = prefixed[originator_id] = eight(len(raw)) + raw
            t = prefixed.get(topic)
            if t is None:
                raw = topic.encode()
                t = prefixed[topic] = eight(len(raw)) + raw
            v = prefixed_versions.get(version)
            if v is None:
                raw = b"%d" % version
                v = eight(len(raw)) + raw
                if version < VERSIONS_CACHED:
                    prefixed_versions[version] = v
            # One join: a single copy of the parts (the state is most of the bytes).
            hashes.append(
                sha256(b"".join((b"\x00", eight(notification_id), o, v, t,
                                 eight(len(state)), state))).digest()
            )  # fmt: skip
            ids.append(notification_id)
        return ids, hashes
