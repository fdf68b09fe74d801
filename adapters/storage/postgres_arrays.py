"""The parameters of PostgreSQL's ``ledger_record``: column arrays in the binary wire format and
the chain digest, built in one pass over the stored rows.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, ClassVar, Self, cast

import psycopg
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format

from adapters.storage.config import StoreConfigError
from ledger.chain import StoredRow
from ledger.write.ports import KeyRecord

_INT4 = struct.Struct(">i")
_ARRAY_HEADER = struct.Struct(">iiiii")  # dimensions, has-nulls flag, element type, length, base
_EMPTY_ARRAY_HEADER = struct.Struct(">iii")
_INT8_ELEMENT = struct.Struct(">iq")  # an int8 element: its length (8) and its value
_DIGEST_LENGTH = struct.Struct(">Q")  # the length prefix of each part in ``events_digest``
_TOPIC_BYTES: dict[str, tuple[bytes, bytes]] = {}
"""Encoded topics (a few dozen, used by every event), alone and as the digest has them (after
their length)."""


class _BinaryArray(bytes):
    """A one-dimensional PostgreSQL array, already in the binary wire format."""

    element_oid: ClassVar[int]
    array_oid: ClassVar[int]

    @classmethod
    def of(cls, elements: Sequence[bytes]) -> Self:
        """The array of ``elements`` (each in its type's binary format; none is NULL)."""
        if not elements:
            return cls(_EMPTY_ARRAY_HEADER.pack(0, 0, cls.element_oid))
        # Each element after its length (interleaved by slice assignment), after the header.
        pack = _INT4.pack
        parts: list[bytes] = [b""] * (2 * len(elements))
        parts[0::2] = [pack(len(element)) for element in elements]
        parts[1::2] = elements
        header = _ARRAY_HEADER.pack(1, 0, cls.element_oid, len(elements), 1)
        return cls(header + b"".join(parts))


class _TextArray(_BinaryArray):
    """``text[]`` of UTF-8 texts."""

    element_oid = 25
    array_oid = 1009


class _ByteaArray(_BinaryArray):
    """``bytea[]``."""

    element_oid = 17
    array_oid = 1001


class _Int8Array(bytes):
    """``bigint[]``, already in the binary wire format."""

    array_oid: ClassVar[int] = 1016

    @classmethod
    def of(cls, values: Sequence[int]) -> Self:
        """The array of ``values``."""
        if not values:
            return cls(_EMPTY_ARRAY_HEADER.pack(0, 0, 20))
        pack = _INT8_ELEMENT.pack
        return cls(
            b"".join([_ARRAY_HEADER.pack(1, 0, 20, len(values), 1), *[pack(8, v) for v in values]])
        )


class _ReadyArrayDumper(Dumper):
    """Sends a ready binary array as it is (its type from its class)."""

    format = Format.BINARY

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        self.oid = cls.array_oid  # type: ignore[attr-defined]
        connection = self.connection
        if connection is not None and connection.info.encoding != "utf-8":
            raise StoreConfigError(
                f"the PostgreSQL client encoding is {connection.info.encoding}, not UTF-8"
            )

    def dump(self, obj: Any) -> Buffer:
        """The array's bytes."""
        return cast("bytes", obj)


for _array_class in (_TextArray, _ByteaArray, _Int8Array):
    psycopg.adapters.register_dumper(_array_class, _ReadyArrayDumper)


def record_parameters(
    stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]
) -> tuple[Any, ...]:
    """The parameters of ``ledger_record``: column arrays, keys in order, the digest.

    The arrays go in PostgreSQL's binary array format, built here in one pass that also
    feeds the digest (``ledger.chain.events_digest`` of the rows, byte for byte): psycopg's
    own list dumpers inspect every element in Python, ~3 µs an event in a batch and ~50 µs
    a single call.
    """
    keys = _in_key_order(keys)
    ids: list[bytes] = []
    versions: list[int] = []
    topics: list[bytes] = []
    states: list[bytes] = []
    digest_parts: list[bytes] = []
    add = digest_parts.extend
    length = _DIGEST_LENGTH.pack
    topic_bytes = _TOPIC_BYTES
    for stored in stored_events:
        originator_id = str(stored.originator_id).encode()
        version = stored.originator_version
        version_text = b"%d" % version
        found = topic_bytes.get(stored.topic)
        if found is None:
            encoded = stored.topic.encode()
            found = topic_bytes.setdefault(stored.topic, (encoded, length(len(encoded)) + encoded))
        topic, digest_topic = found
        state = stored.state
        if type(state) is not bytes:
            state = bytes(state)
        ids.append(originator_id)
        versions.append(version)
        topics.append(topic)
        states.append(state)
        # Each field after its length (the topic's is cached with it).
        add(
            (
                length(len(originator_id)),
                originator_id,
                length(len(version_text)),
                version_text,
                digest_topic,
                length(len(state)),
                state,
            )
        )
    return (
        _TextArray.of(ids),
        _Int8Array.of(versions),
        _TextArray.of(topics),
        _ByteaArray.of(states),
        _TextArray.of([k.key.encode() for k in keys]),
        _TextArray.of([k.fingerprint.encode() for k in keys]),
        _ByteaArray.of([k.outcome for k in keys]),
        hashlib.sha256(b"".join(digest_parts)).digest(),
    )


def guarded_parameters(
    stored_events: Sequence[StoredRow],
    keys: Sequence[KeyRecord],
    held: bool,
    also_lock: Sequence[str],
    answers: Sequence[tuple[int, bytes]],
) -> tuple[Any, ...]:
    """The parameters of ``ledger_record_guarded``: ``record_parameters``, then whether the
    connection holds locks kept by an overtaken write or a turn, the streams whose lock the
    write must hold besides those it writes, and the answers to other writers' batches."""
    return (
        *record_parameters(stored_events, keys),
        held,
        _TextArray.of([i.encode() for i in also_lock]),
        _Int8Array.of([post for post, _ in answers]),
        _ByteaArray.of([answer for _, answer in answers]),
    )


def _in_key_order(keys: Sequence[KeyRecord]) -> list[KeyRecord]:
    # Every writer inserts its keys in one global order, so two transactions that share keys
    # wait for each other in that order and never in a cycle (no deadlock between batches).
    return sorted(keys, key=attrgetter("key"))
