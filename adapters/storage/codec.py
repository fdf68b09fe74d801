"""The stored event codec: msgspec JSON for events and snapshots, with versioned upcasting.

Stored ``state`` is the JSON of the event struct, so an auditor can read it with SQL
(``convert_from(state, 'UTF8')::jsonb`` on PostgreSQL) when encryption is off. The ``topic`` column
names the event stably (``"StampingAccount.StampConsumed"``, ``"...#2"`` for version 2), never a
module path, so code can move without breaking history.

Versioning: an event class with ``class_version = N`` (N > 1) gets the topic ``"Agg.Event#N"`` and
defines ``upcast_vK_vK1(state: dict) -> None`` for each K < N. Stored bytes of an older version are
decoded to a dict, upcast step by step, then converted to the current struct. The current version
decodes straight into its struct (the fast path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
)

from ledger.chain import StoredRow
from ledger.domain import TOPICS, Event, Snapshot

SNAPSHOT_TOPIC_PREFIX = "snapshot:"

# One encoder per process (msgspec's advice): reused for every event.
ENCODER = msgspec.json.Encoder()


class UnusedTranscoder(Transcoder):
    """Satisfies eventsourcing's ``Mapper`` signature; msgspec encodes the structs directly."""

    def encode(self, obj: Any) -> bytes:
        """Never called: the msgspec mapper encodes structs itself."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        """Never called: the msgspec mapper decodes structs itself."""
        raise NotImplementedError


Decode = Callable[[bytes], Any]


def _split_topic(topic: str) -> tuple[str, int]:
    name, _, version = topic.partition("#")
    return name, int(version) if version else 1


def _upcasting_decoder(cls: type[Event], stored_version: int) -> Decode:
    steps = [
        getattr(cls, f"upcast_v{v}_v{v + 1}") for v in range(stored_version, cls.class_version)
    ]

    def decode(data: bytes) -> Any:
        state: dict[str, Any] = msgspec.json.decode(data)
        for step in steps:
            step(state)
        return msgspec.convert(state, type=cls)

    return decode


def decoder_for(topic: str) -> Decode:
    """A function that decodes stored state of ``topic`` into its current event struct."""
    if topic.startswith(SNAPSHOT_TOPIC_PREFIX):
        return msgspec.json.Decoder(type=Snapshot).decode
    cls = TOPICS.get(topic)
    if cls is not None:
        return msgspec.json.Decoder(type=cls).decode
    name, stored_version = _split_topic(topic)
    for current in TOPICS.values():
        current_name, _ = _split_topic(current.topic)
        if current_name == name and current.class_version > stored_version:
            return _upcasting_decoder(current, stored_version)
    raise MapperDeserialisationError(f"unknown event topic {topic!r}")


def encode_event(event: Event | Snapshot) -> tuple[str, bytes]:
    """The topic and stored bytes of an event or snapshot (before compression/encryption)."""
    if isinstance(event, Snapshot):
        return SNAPSHOT_TOPIC_PREFIX + event.topic, ENCODER.encode(event)
    return type(event).topic, ENCODER.encode(event)


class Row(msgspec.Struct, frozen=True, gc=False):
    """A row to insert: the columns of eventsourcing's ``StoredEvent``.

    The write path makes one per event: this struct costs about a seventh of that frozen
    dataclass (whose ``__init__`` sets each field through ``object.__setattr__``). Plain
    values only, so never in a reference cycle.
    """

    originator_id: str
    originator_version: int
    topic: str
    state: bytes


class MsgspecMapper(Mapper[str]):
    """eventsourcing ``Mapper`` storing msgspec structs as JSON (maybe compressed, encrypted)."""

    def __init__(
        self,
        transcoder: Transcoder | None = None,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(transcoder or UnusedTranscoder(), compressor, cipher)
        self._decoders: dict[str, Decode] = {}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        """Encodes an event (or snapshot) struct as eventsourcing's stored event."""
        return StoredEvent(*msgspec.structs.astuple(self.to_row(domain_event)))

    def to_row(self, event: Event | Snapshot) -> Row:
        """Encodes an event (or snapshot) struct as a row to insert, as stored (compressed,
        encrypted); the write path's form of ``to_stored_event``."""
        # ``encode_event``, inline: one call less per event written.
        if isinstance(event, Snapshot):
            topic, state = SNAPSHOT_TOPIC_PREFIX + event.topic, ENCODER.encode(event)
        else:
            topic, state = type(event).topic, ENCODER.encode(event)
        if self.compressor:
            state = self.compressor.compress(state)
        if self.cipher:
            state = self.cipher.encrypt(state)
        return Row(event.originator_id, event.originator_version, topic, state)

    def decode_state(self, topic: str, state: bytes) -> Any:
        """Decodes plain (decrypted, decompressed) state bytes of ``topic``."""
        decode = self._decoders.get(topic)
        if decode is None:
            decode = self._decoders[topic] = decoder_for(topic)
        return decode(state)

    def to_domain_event(self, stored_event: StoredRow) -> Any:
        """Decodes a stored event row into its current event struct."""
        state = stored_event.state
        try:
            if self.cipher:
                state = self.cipher.decrypt(state)
            if self.compressor:
                state = self.compressor.decompress(state)
            event = self.decode_state(stored_event.topic, state)
        except MapperDeserialisationError:
            raise
        except Exception as exc:
            msg = (
                f"cannot decode event {stored_event.topic!r} of "
                f"{stored_event.originator_id!r} v{stored_event.originator_version}: {exc}"
            )
            raise MapperDeserialisationError(msg) from exc
        if (
            event.originator_id != stored_event.originator_id
            or event.originator_version != stored_event.originator_version
        ):
            # The row's key and the signed-off payload disagree: someone edited the table.
            msg = (
                f"stored event {stored_event.originator_id!r} v{stored_event.originator_version}"
                f" carries the payload of {event.originator_id!r} v{event.originator_version}"
            )
            raise MapperDeserialisationError(msg)
        return event
