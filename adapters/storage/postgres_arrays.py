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
_INT8 = struct.Struct(">q")
_TEXT_OID = 25
_BYTEA_OID = 17
_INT8_OID = 20
_ONE_ELEMENT_HEADERS = {oid: _ARRAY_HEADER.pack(1, 0, oid, 1, 1) for oid in (_TEXT_OID, _BYTEA_OID)}
"""The header of a one-element array of each element type."""
_ONE_INT8_HEADER = _ARRAY_HEADER.pack(1, 0, _INT8_OID, 1, 1) + _INT4.pack(8)
"""The header of a one-element ``bigint[]`` and its element's length."""
_LENGTHS_MADE = 4096
_INT4_LENGTHS = tuple(_INT4.pack(n) for n in range(_LENGTHS_MADE))
"""An array element's length prefix for the usual sizes, made once (a tuple index costs a
tenth of a ``pack`` call)."""
_DIGEST_LENGTHS = tuple(n.to_bytes(8, "big") for n in range(_LENGTHS_MADE))
"""The length prefix of each part in ``events_digest`` for the usual sizes, made once."""
_TOPIC_BYTES: dict[str, tuple[bytes, bytes]] = {}
"""Encoded topics (a few dozen, used by every event), alone and as the digest has them (after
their length)."""
_KEY_ORDER = attrgetter("key")


def _array(element_oid: int, elements: Sequence[bytes]) -> bytes:
    """A one-dimensional PostgreSQL array of ``elements`` (each in its type's binary format;
    none is NULL), in the binary wire format."""
    if len(elements) == 1:
        return _one_element_array(element_oid, elements[0])
    return _array_of_any(element_oid, elements)


def _one_element_array(element_oid: int, element: bytes) -> bytes:
    """``_array`` of one element: the header made once, the element's length from a table (a
    ``pack`` call costs as much as the rest of this together)."""
    size = len(element)
    if size < _LENGTHS_MADE:
        return b"".join((_ONE_ELEMENT_HEADERS[element_oid], _INT4_LENGTHS[size], element))
    return _array_of_any(element_oid, (element,))


def _array_of_any(element_oid: int, elements: Sequence[bytes]) -> bytes:
    """``_array`` of any number of elements (apart: its comprehension's cells would be made
    on every call of ``_array``)."""
    count = len(elements)
    if not count:
        return _EMPTY_ARRAY_HEADER.pack(0, 0, element_oid)
    # Each element after its length (interleaved by slice assignment), after the header.
    lengths = _INT4_LENGTHS
    pack = _INT4.pack
    parts: list[bytes] = [b""] * (2 * count + 1)
    parts[0] = _ARRAY_HEADER.pack(1, 0, element_oid, count, 1)
    parts[1::2] = [
        lengths[len(element)] if len(element) < _LENGTHS_MADE else pack(len(element))
        for element in elements
    ]
    parts[2::2] = elements
    return b"".join(parts)


def _int8_array(values: Sequence[int]) -> bytes:
    """``bigint[]`` of ``values``, in the binary wire format."""
    count = len(values)
    if count == 1:
        return _ONE_INT8_HEADER + _INT8.pack(values[0])
    if not count:
        return _EMPTY_ARRAY_HEADER.pack(0, 0, _INT8_OID)
    pack = _INT8_ELEMENT.pack
    return b"".join([_ARRAY_HEADER.pack(1, 0, _INT8_OID, count, 1), *[pack(8, v) for v in values]])


class _BinaryArray(bytes):
    """A one-dimensional PostgreSQL array, already in the binary wire format (its class tells
    psycopg's dumper its type)."""

    element_oid: ClassVar[int]
    array_oid: ClassVar[int]

    @classmethod
    def of(cls, elements: Sequence[bytes]) -> Self:
        """The array of ``elements`` (each in its type's binary format; none is NULL)."""
        return cls(_array(cls.element_oid, elements))


class _TextArray(_BinaryArray):
    """``text[]`` of UTF-8 texts."""

    element_oid = _TEXT_OID
    array_oid = 1009


class _ByteaArray(_BinaryArray):
    """``bytea[]``."""

    element_oid = _BYTEA_OID
    array_oid = 1001


class _Int8Array(bytes):
    """``bigint[]``, already in the binary wire format."""

    array_oid: ClassVar[int] = 1016

    @classmethod
    def of(cls, values: Sequence[int]) -> Self:
        """The array of ``values``."""
        return cls(_int8_array(values))


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


def record_arrays(
    stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]
) -> tuple[bytes, ...]:
    """The parameters of ``ledger_record`` as plain bytes: column arrays, keys in order, the
    digest; what a statement sent with libpq's own call (``WriterConnection.send``) takes.

    The arrays go in PostgreSQL's binary array format, built here in one pass that also
    feeds the digest (``ledger.chain.events_digest`` of the rows, byte for byte): psycopg's
    own list dumpers inspect every element in Python, ~3 µs an event in a batch and ~50 µs
    a single call.
    """
    if len(stored_events) == 1 and len(keys) == 1:
        return _one_row_arrays(stored_events[0], keys[0])
    if len(keys) > 1:  # one key is in order already
        keys = _in_key_order(keys)
    ids: list[bytes] = []
    versions: list[int] = []
    topics: list[bytes] = []
    states: list[bytes] = []
    digest_parts: list[bytes] = []
    add = digest_parts.extend
    lengths = _DIGEST_LENGTHS
    topic_bytes = _TOPIC_BYTES
    for stored in stored_events:
        originator_id = str(stored.originator_id).encode()
        version = stored.originator_version
        version_text = b"%d" % version
        found = topic_bytes.get(stored.topic)
        topic, digest_topic = _topic_parts(stored.topic) if found is None else found
        state = stored.state
        if type(state) is not bytes:
            state = bytes(state)
        ids.append(originator_id)
        versions.append(version)
        topics.append(topic)
        states.append(state)
        # Each field after its length (the topic's is cached with it; a version's text is
        # at most 20 bytes, shorter than the lengths made).
        size = len(originator_id)
        id_length = lengths[size] if size < _LENGTHS_MADE else size.to_bytes(8, "big")
        size = len(state)
        add(
            (
                id_length,
                originator_id,
                lengths[len(version_text)],
                version_text,
                digest_topic,
                lengths[size] if size < _LENGTHS_MADE else size.to_bytes(8, "big"),
                state,
            )
        )
    key_names: list[bytes] = []
    fingerprints: list[bytes] = []
    outcomes: list[bytes] = []
    for key in keys:
        key_names.append(key.key.encode())
        fingerprints.append(key.fingerprint.encode())
        outcomes.append(key.outcome)
    return (
        _array(_TEXT_OID, ids),
        _int8_array(versions),
        _array(_TEXT_OID, topics),
        _array(_BYTEA_OID, states),
        _array(_TEXT_OID, key_names),
        _array(_TEXT_OID, fingerprints),
        _array(_BYTEA_OID, outcomes),
        hashlib.sha256(b"".join(digest_parts)).digest(),
    )


def _one_row_arrays(stored: StoredRow, key: KeyRecord) -> tuple[bytes, ...]:
    """``record_arrays`` of one row and one key (a single command's write), the same bytes
    without the column lists and the loops (~8,000 instructions less)."""
    originator_id = str(stored.originator_id).encode()
    version_text = b"%d" % stored.originator_version
    found = _TOPIC_BYTES.get(stored.topic)
    topic, digest_topic = _topic_parts(stored.topic) if found is None else found
    state = stored.state
    if type(state) is not bytes:
        state = bytes(state)
    digest_parts = (
        _digest_length(originator_id),
        originator_id,
        _DIGEST_LENGTHS[len(version_text)],
        version_text,
        digest_topic,
        _digest_length(state),
        state,
    )
    return (
        _one_element_array(_TEXT_OID, originator_id),
        _ONE_INT8_HEADER + _INT8.pack(stored.originator_version),
        _one_element_array(_TEXT_OID, topic),
        _one_element_array(_BYTEA_OID, state),
        _one_element_array(_TEXT_OID, key.key.encode()),
        _one_element_array(_TEXT_OID, key.fingerprint.encode()),
        _one_element_array(_BYTEA_OID, key.outcome),
        hashlib.sha256(b"".join(digest_parts)).digest(),
    )


def record_parameters(
    stored_events: Sequence[StoredRow], keys: Sequence[KeyRecord]
) -> tuple[Any, ...]:
    """The parameters of ``ledger_record`` for a psycopg cursor: ``record_arrays``, each
    array of the class whose dumper gives psycopg its type."""
    ids, versions, topics, states, key_names, fingerprints, outcomes, digest = record_arrays(
        stored_events, keys
    )
    return (
        _TextArray(ids),
        _Int8Array(versions),
        _TextArray(topics),
        _ByteaArray(states),
        _TextArray(key_names),
        _TextArray(fingerprints),
        _ByteaArray(outcomes),
        digest,
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
    return sorted(keys, key=_KEY_ORDER)


def _topic_parts(topic: str) -> tuple[bytes, bytes]:
    """A topic encoded, alone and as the digest has it (after its length); kept in
    ``_TOPIC_BYTES`` (a few dozen topics)."""
    encoded = topic.encode()
    return _TOPIC_BYTES.setdefault(topic, (encoded, _digest_length(encoded) + encoded))


def _digest_length(part: bytes) -> bytes:
    """The length prefix of ``part`` in ``events_digest``."""
    size = len(part)
    return _DIGEST_LENGTHS[size] if size < _LENGTHS_MADE else size.to_bytes(8, "big")
