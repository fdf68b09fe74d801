"""Preparing commands: each is parsed once into its model, its keys and its fingerprint.

Parsing happens in the caller's thread (or, for the later parts of a long call, in the
leader's while the part before is written); nothing here touches the store.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import msgspec
from pydantic import TypeAdapter, ValidationError

from ledger.commands.models import COMMAND_ADAPTER, AnyCommand, Command, time_errors
from ledger.errors import Rejected
from ledger.outcome import Outcome

PREPARE_INLINE_MAX = 32
"""``aprepare_many`` parses at most this many commands in the event loop; more go to a thread."""


@dataclass(slots=True)
class Prepared:
    """A command parsed, with its keys and fingerprint, or the rejection of its input."""

    command: Command | None
    keys: tuple[str, ...] = ()
    fingerprint: str = ""
    rejection: Rejected | None = None
    raw_type: str = "?"


Result = Outcome | Rejected


_FIELD_NAME_CHARS_MAX = 100


def _field_name(part: str | int) -> str:
    """A location part of a field error; a name the caller made up (an unknown field) is cut
    and escaped, since it goes back to the caller and may hold anything."""
    text = str(part)
    if len(text) > _FIELD_NAME_CHARS_MAX or not text.isprintable():
        text = text[:_FIELD_NAME_CHARS_MAX].encode("unicode_escape").decode("ascii")
    return text


def validation_rejection(exc: ValidationError) -> Rejected:
    """``invalid_command`` (or ``invalid_rfc``) with field errors; input values are never echoed."""
    errors = []
    code = "invalid_command"
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(_field_name(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # pydantic's message quotes the type given, which may be anything at all.
            where, message = "type", "unknown or missing command type"
        # A missing RFC field is a malformed command, not a bad RFC.
        elif where.endswith(("rfc", "rfc_lock")) and error["type"] != "missing":
            code = "invalid_rfc"
        errors.append({"field": where, "message": message})
    return Rejected(code, errors=errors)


_FINGERPRINT_ENCODER = msgspec.json.Encoder(order="sorted")
COMMAND_TYPES = frozenset(
    member.model_fields["type"].default for member in get_args(get_args(AnyCommand)[0])
)
"""Every command type the ledger knows."""


def prepare(command: Mapping[str, Any] | Command, now: datetime) -> Prepared:
    """Parses a command once: its model, its keys and the fingerprint of the fields given.

    ``now`` is the ledger clock's time: no time in a command may lie more than a day after it.
    """
    raw_type = "?"
    try:
        # A plain dict first: ``isinstance`` against a model class or ``Mapping`` goes through
        # ABC machinery (~1 µs a command on the hot path).
        if type(command) is not dict and isinstance(command, Command):
            model = command
        else:
            if type(command) is dict or isinstance(command, Mapping):
                given_type = command.get("type")
                # Only a known type goes into the log line, never whatever the caller sent.
                if type(given_type) is str and given_type in COMMAND_TYPES:
                    raw_type = given_type
            model = COMMAND_ADAPTER.validate_python(command)
    except ValidationError as exc:
        return Prepared(None, rejection=validation_rejection(exc), raw_type=raw_type)
    except Rejected as exc:
        return Prepared(None, rejection=exc, raw_type=raw_type)
    return _prepared(model, now)


_COMMAND_LIST_ADAPTER: TypeAdapter[list[Any]] = TypeAdapter(list[AnyCommand])


def prepare_many(commands: Sequence[Mapping[str, Any] | Command], now: datetime) -> list[Prepared]:
    """``prepare`` of each command, in order.

    A list of plain dicts is validated in one call into pydantic (1.6 us a ConsumeStamp
    against 2.35 us one call each, on this machine); if any of them is invalid, each is
    parsed alone, so that each gets its own rejection, exactly as ``prepare`` gives it.
    """
    if len(commands) > 1 and all(type(c) is dict for c in commands):
        try:
            models = _COMMAND_LIST_ADAPTER.validate_python(commands)
        except (ValidationError, Rejected):
            pass  # parsed again one by one below, each for its own rejection
        else:
            return [_prepared(model, now) for model in models]
    return [prepare(c, now) for c in commands]


def _prepared(model: Command, now: datetime) -> Prepared:
    """A validated command with its keys and fingerprint, or the rejection of its times."""
    command_type: str = model.type  # type: ignore[attr-defined]
    late = time_errors(model, now, f"{command_type}.")
    if late:
        rejection = Rejected("invalid_command", errors=late)
        return Prepared(None, rejection=rejection, raw_type=command_type)
    keys = model.keys()
    fingerprint = ""
    if keys:
        given = given_fields(model)
        fingerprint = hashlib.blake2b(
            _FINGERPRINT_ENCODER.encode(given), digest_size=16
        ).hexdigest()
    return Prepared(model, keys, fingerprint, raw_type=command_type)


# A password never enters the fingerprint: an unsalted fast hash of it, kept forever in the key
# index, could be brute-forced offline. A retry with another password replays. A command's own
# ``secret_fields`` (a credit code, a NIP) are left out too; ``secret_fingerprint()`` stands in.
# Nor does the actor: it says who acts, not what is done, and it is checked before any replay
# is returned (a key stored before actors were required still replays for an authorised actor).
_NOT_FINGERPRINTED = frozenset({"idempotency_key", "password", "actor"})
_PLAIN_SERIALISATION: dict[type[Command], tuple[bool, frozenset[str]]] = {}


def _has_custom_serialisation(schema: object) -> bool:
    # pydantic keeps every custom serializer (field_serializer, PlainSerializer, ...) under a
    # "serialization" key of the core schema.
    if isinstance(schema, dict):
        return "serialization" in schema or any(
            _has_custom_serialisation(v) for v in schema.values()
        )
    if isinstance(schema, list | tuple):
        return any(_has_custom_serialisation(v) for v in schema)
    return False


def given_fields(model: Command) -> dict[str, Any]:
    """The fields the caller gave, as JSON values: what a command's fingerprint covers.

    Equal to ``model_dump(mode="json", exclude_unset=True)`` without the unfingerprinted
    fields, plus ``type``. When every given value is a ``str``, ``int``, ``bool`` or ``None``
    and the model has no custom serializer, JSON mode returns the values unchanged, so they are
    read straight from the model: the hot path (ConsumeStamp) then skips pydantic's serializer.
    """
    cls = type(model)
    known = _PLAIN_SERIALISATION.get(cls)
    if known is None:
        known = (
            not _has_custom_serialisation(cls.__pydantic_core_schema__),
            _NOT_FINGERPRINTED | cls.secret_fields,
        )
        _PLAIN_SERIALISATION[cls] = known
    plain, excluded = known
    if plain:
        values = model.__dict__
        given: dict[str, Any] = {}
        for name in model.model_fields_set:
            if name in excluded:
                continue
            value = values[name]
            if value is not None and type(value) not in (str, int, bool):
                break
            given[name] = value
        else:
            given["type"] = model.type  # type: ignore[attr-defined]
            if cls.secret_fields:
                given.update(model.secret_fingerprint())
            return given
    given = model.model_dump(mode="json", exclude_unset=True, exclude=set(excluded))
    given["type"] = model.type  # type: ignore[attr-defined]
    if cls.secret_fields:
        given.update(model.secret_fingerprint())
    return given


async def aprepare_many(
    commands: Sequence[Mapping[str, Any] | Command], now: datetime
) -> list[Prepared]:
    """Parses commands for an asyncio caller; a long list in a thread, not in the event loop."""
    if len(commands) <= PREPARE_INLINE_MAX:
        return prepare_many(commands, now)
    return await asyncio.to_thread(prepare_many, commands, now)
