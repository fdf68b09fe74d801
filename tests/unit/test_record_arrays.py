"""``record_arrays`` builds the same bytes whatever its path: one element (a single command's
write, the header made once), none, many, or elements too long for the length tables.

The reference here spells PostgreSQL's binary array format out with one ``struct.pack`` per
field; ``tests/integration/test_record_parameters.py`` has a real server read the arrays back.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from eventsourcing.persistence import StoredEvent

from adapters.storage.postgres_arrays import record_arrays, record_parameters
from ledger.chain import events_digest
from ledger.write.ports import KeyRecord

LONG = 5_000
"""Longer than the length prefixes the builder keeps made (4,096)."""


def _reference_array(element_oid: int, elements: Sequence[bytes]) -> bytes:
    if not elements:
        return struct.pack(">iii", 0, 0, element_oid)
    parts = [struct.pack(">iiiii", 1, 0, element_oid, len(elements), 1)]
    for element in elements:
        parts += [struct.pack(">i", len(element)), element]
    return b"".join(parts)


def _reference_int8_array(values: Sequence[int]) -> bytes:
    if not values:
        return struct.pack(">iii", 0, 0, 20)
    header = struct.pack(">iiiii", 1, 0, 20, len(values), 1)
    return header + b"".join(struct.pack(">iq", 8, value) for value in values)


def _reference(rows: Sequence[StoredEvent], keys: Sequence[KeyRecord]) -> tuple[bytes, ...]:
    keys = sorted(keys, key=lambda k: k.key)
    return (
        _reference_array(25, [str(r.originator_id).encode() for r in rows]),
        _reference_int8_array([r.originator_version for r in rows]),
        _reference_array(25, [r.topic.encode() for r in rows]),
        _reference_array(17, [r.state for r in rows]),
        _reference_array(25, [k.key.encode() for k in keys]),
        _reference_array(25, [k.fingerprint.encode() for k in keys]),
        _reference_array(17, [k.outcome for k in keys]),
        events_digest(rows),
    )


ROW = StoredEvent("C1-cti", 7, "StampingAccount.StampConsumed#2", b'{"a":1}')
KEY = KeyRecord("cfdi:B", "f2", b"\x00\xff")
CASES = {
    "one row, one key": ([ROW], [KEY]),
    "nothing": ([], []),
    "one row, no key": ([ROW], []),
    "keys only": ([], [KEY, KeyRecord("cfdi:A", "", b"")]),
    "many": (
        [ROW, StoredEvent("Ñandú-ĉti", 2**40, "Client.Registered", bytes(range(256)))],
        [KeyRecord("id:Ñ", "f1", b"{}"), KEY, KeyRecord("cfdi:A", "", b"")],
    ),
    "long one": (
        [StoredEvent("x" * LONG, 2**62, "T" * LONG, b"\x01" * LONG)],
        [KeyRecord("k" * LONG, "f" * LONG, b"\x02" * LONG)],
    ),
    "long among many": (
        [ROW, StoredEvent("y", 1, "T", b"\x03" * LONG)],
        [KEY, KeyRecord("cfdi:C", "f", b"\x04" * LONG)],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_arrays_equal_the_plain_encoding(case: str) -> None:
    """Each array and the digest equal the format spelled out field by field."""
    rows, keys = CASES[case]
    assert record_arrays(rows, keys) == _reference(rows, keys)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cursor_parameters_carry_the_same_bytes(case: str) -> None:
    """The cursor's parameters are the same bytes, each array of its dumper's class."""
    rows, keys = CASES[case]
    arrays = record_arrays(rows, keys)
    parameters = record_parameters(rows, keys)
    assert [bytes(p) for p in parameters] == list(arrays)
    assert all(type(p) is bytes for p in arrays)
    assert [type(p).__name__ for p in parameters[:7]] == [
        "_TextArray", "_Int8Array", "_TextArray", "_ByteaArray",
        "_TextArray", "_TextArray", "_ByteaArray",
    ]  # fmt: skip
