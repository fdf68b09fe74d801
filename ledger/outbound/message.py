"""One stored event as the message that leaves the ledger (DESIGN §10).

``{notification_id, recorded_at, originator_id, originator_version, type, actor, postings:
[{holder_id, unit, delta, ref, counterpart}], data: {...}}`` where ``data`` holds the event's
own fields. Secrets never leave: the slow salted hashes of passwords and NIPs and the digest of
a credit code stay in the log, exactly as the views leave them out.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from ledger.domain import Event

SECRET_FIELDS = frozenset({"password_hash", "nip_hash", "code_digest"})
"""Event fields that never leave the ledger (``tests/unit/test_outbound_message.py`` fails on a
new event field whose name looks secret and is not listed here)."""
BASE_FIELDS = frozenset({"originator_id", "originator_version", "timestamp", "actor"})
"""Fields of every event, carried at the message's top level rather than in ``data``."""
NO_NETWORK = "_"
"""The network token of an aggregate in no master account's network (an admin login's index).
No id starts with ``_``, so it cannot be mistaken for a master account."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class PostingOut(msgspec.Struct, frozen=True):
    """One leg of a movement, as sent."""

    holder_id: str
    unit: str
    delta: int
    ref: str
    counterpart: str


class EventOut(msgspec.Struct, frozen=True):
    """One event, as sent (the JSON body of every message)."""

    notification_id: int
    recorded_at: datetime
    originator_id: str
    originator_version: int
    type: str
    actor: str | None
    postings: list[PostingOut]
    data: dict[str, Any]


class Outgoing(msgspec.Struct, frozen=True):
    """A message ready for a target: its body, its network and type, and its notification id."""

    notification_id: int
    master_id: str
    type: str
    body: bytes


def event_type(event: Event) -> str:
    """``Aggregate.Event``: the event's topic without its version suffix."""
    return event.topic.partition("#")[0]


_DATA_FIELDS: dict[type[Event], tuple[str, ...]] = {}
"""The fields of ``data`` per event class (its own fields, less the secrets), found once."""


def event_data(event: Event) -> dict[str, Any]:
    """The event's own fields, without the base fields and without secrets (values as the
    event holds them: msgspec's encoder writes instants, dates and nested structs)."""
    names = _DATA_FIELDS.get(type(event))
    if names is None:
        names = _DATA_FIELDS[type(event)] = tuple(
            field.name
            for field in msgspec.structs.fields(event)
            if field.name not in BASE_FIELDS and field.name not in SECRET_FIELDS
        )
    return {name: getattr(event, name) for name in names}


def event_out(notification_id: int, event: Event) -> EventOut:
    """The message body of one event."""
    return EventOut(
        notification_id=notification_id,
        recorded_at=event.timestamp,
        originator_id=event.originator_id,
        originator_version=event.originator_version,
        type=event_type(event),
        actor=event.actor,
        postings=[
            PostingOut(p.holder, p.unit, p.delta, p.ref, p.counterpart) for p in event.postings()
        ],
        data=event_data(event),
    )


_ENCODER = msgspec.json.Encoder()


def outgoing(notification_id: int, event: Event, master_id: str) -> Outgoing:
    """The message of one event in the network of ``master_id``."""
    body = _ENCODER.encode(event_out(notification_id, event))
    return Outgoing(notification_id, master_id, event_type(event), body)


def subject_token(text: str) -> str:
    """``text`` as one token of a NATS subject or AMQP routing key.

    Ids may hold ``.``, which separates tokens in both: it (and anything but letters, digits,
    ``_`` and ``-``) is written ``%XX`` per UTF-8 byte, so every id has exactly one token.
    """
    if not _UNSAFE.search(text):
        return text
    return "".join(
        char
        if not _UNSAFE.match(char)
        else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in text
    )


def routing_key(message: Outgoing) -> str:
    """``<master_id>.<Aggregate>.<Event>``: the AMQP routing key, and the NATS subject after
    its prefix."""
    return f"{subject_token(message.master_id)}.{message.type}"


def message_id(origin: str, notification_id: int) -> str:
    """``<origin>:<notification_id>``: the same for every send of one event (deduplication)."""
    return f"{origin}:{notification_id}"
