"""Preparing commands: each is parsed once into its model, its keys and its fingerprint.

Parsing happens in the caller's thread (or, for the later parts of a long call, in the
leader's while the part before is written); nothing here touches the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from pydantic import TypeAdapter, ValidationError

from ledger.commands.fields import time_fields
from ledger.commands.models import COMMAND_ADAPTER, AnyCommand, Command, time_errors
from ledger.errors import Rejected
from ledger.outcome import Outcome

PREPARE_INLINE_MAX = 32
"""``aprepare_many`` parses at most this many commands in the event loop; more go to a thread."""


class Prepared(msgspec.Struct, gc=False):
    """A command parsed, with its keys and fingerprint, or the rejection of its input.

    A struct the collector does not track: one is made per command, and nothing it holds
    refers back to it.
    """

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
            model = _VALIDATE_COMMAND(command)
    except ValidationError as exc:
        return Prepared(None, rejection=validation_rejection(exc), raw_type=raw_type)
    except Rejected as exc:
        return Prepared(None, rejection=exc, raw_type=raw_type)
    return _prepared(model, now)


_VALIDATE_COMMAND = COMMAND_ADAPTER.validator.validate_python
"""``COMMAND_ADAPTER.validate_python`` without its Python wrapper (a fifth of a command's
validation when it is validated alone)."""
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
    plan = _PLANS.get(type(model)) or _plan(type(model))
    values = model.__dict__
    command_type: str = values["type"]
    timed = plan.nested
    for name in plan.times:  # a loop: cheaper than ``any`` over a generator, per command
        if values[name] is not None:
            timed = True
    if timed and (late := time_errors(model, now, f"{command_type}.")):
        rejection = Rejected("invalid_command", errors=late)
        return Prepared(None, rejection=rejection, raw_type=command_type)
    if plan.own_keys:
        keys = model.keys()
    else:
        # ``Command.keys``, inline: the natural keys, then the caller's key.
        keys = model.natural_keys()
        if (idempotency_key := values["idempotency_key"]) is not None:
            keys = (*keys, f"key:{idempotency_key}")
    fingerprint = ""
    if keys:
        fingerprint = _fingerprint(model, plan, values)
    return Prepared(model, keys, fingerprint, raw_type=command_type)


# A password never enters the fingerprint: an unsalted fast hash of it, kept forever in the key
# index, could be brute-forced offline. A retry with another password replays. A command's own
# ``secret_fields`` (a credit code, a NIP) are left out too; ``secret_fingerprint()`` stands in.
# Nor does the actor: it says who acts, not what is done, and it is checked before any replay
# is returned (a key stored before actors were required still replays for an authorised actor).
_NOT_FINGERPRINTED = frozenset({"idempotency_key", "password", "actor"})
_SHAPE_ENCODER = msgspec.json.Encoder()
"""Encodes a shape's struct in its own field order, which is sorted already."""
_FINGERPRINT_HASH = hashlib.blake2b(digest_size=16)
"""Copied per command: cheaper than making one with its keyword arguments."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What preparing a command of one class needs to know of its fields, worked out once."""

    times: tuple[str, ...]
    """Its fields that hold a time (checked against the clock when given)."""
    nested: bool
    """Whether a field can hold a model (whose times are checked too)."""
    plain: bool
    """No custom serializer: a given ``str``, ``int``, ``bool`` or ``None`` is its JSON value."""
    excluded: frozenset[str]
    """Fields that never enter the fingerprint."""
    secret: bool
    """Whether ``secret_fingerprint()`` stands in for some fields."""
    shapes: dict[frozenset[str], _Shape]
    """The struct that encodes each set of given fields met so far (``_fingerprint``)."""
    own_keys: bool
    """Whether the class has its own ``keys`` (else ``Command.keys``, inlined by ``_prepared``)."""
    last_shape: list[tuple[frozenset[str], _Shape | None]]
    """The last set of given fields met and its shape (one pair): the next command of the
    class most often gives the same, and comparing the sets costs less than a frozenset made
    and hashed to look it up in ``shapes``."""


_PLANS: dict[type[Command], _Plan] = {}
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def _plan(cls: type[Command]) -> _Plan:
    times, nested = time_fields(cls)
    plan = _Plan(
        times=tuple(name for name, _ in times),
        nested=bool(nested),
        plain=not _has_custom_serialisation(cls.__pydantic_core_schema__),
        excluded=_NOT_FINGERPRINTED | cls.secret_fields,
        secret=bool(cls.secret_fields),
        shapes={},
        own_keys=cls.keys is not Command.keys,
        last_shape=[(frozenset(), None)],
    )
    _PLANS[cls] = plan
    return plan


def _plain_only(annotation: Any) -> bool:
    """Whether a field of this type can only hold a ``str``, ``int``, ``bool`` or ``None``
    (what pydantic stores for such a field is of that type, whatever the input was)."""
    if annotation in _PLAIN_TYPES:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _plain_only(get_args(annotation)[0])
    if origin is Literal:
        return _PLAIN_TYPES.issuperset(type(value) for value in get_args(annotation))
    if origin in (Union, UnionType):
        return all(_plain_only(arg) for arg in get_args(annotation))
    return False


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
    fields, plus ``type``.
    """
    return _given(model, _PLANS.get(type(model)) or _plan(type(model)))


def _given(model: Command, plan: _Plan) -> dict[str, Any]:
    # When every given value is a ``str``, ``int``, ``bool`` or ``None`` and the model has no
    # custom serializer, JSON mode returns the values unchanged, so they are read straight
    # from the model: the hot path (ConsumeStamp) then skips pydantic's serializer.
    values = model.__dict__
    if plain := plan.plain:
        given = {
            name: values[name] for name in model.__pydantic_fields_set__.difference(plan.excluded)
        }
        plain = _PLAIN_TYPES.issuperset(map(type, given.values()))
    if not plain:
        given = model.model_dump(mode="json", exclude_unset=True, exclude=set(plan.excluded))
    given["type"] = values["type"]
    if plan.secret:
        given.update(model.secret_fingerprint())
    return given


def _fingerprint(model: Command, plan: _Plan, values: dict[str, Any]) -> str:
    """blake2b-128 of the given fields as JSON with sorted keys (``given_fields``); ``values``
    is the model's ``__dict__``.

    The usual command (plain values, no secret) is encoded as a struct of its given fields,
    in sorted order, made for that set of fields once: the same bytes as the dict
    ``given_fields`` makes, at a third of the cost (no dict, no sort per command).
    """
    shape = None
    if plan.plain and not plan.secret:
        fields_set = model.__pydantic_fields_set__
        # One read of the pair: another thread may replace it meanwhile.
        last_names, shape = plan.last_shape[0]
        if shape is None or fields_set != last_names:
            given_names = frozenset(fields_set)
            shape = plan.shapes.get(given_names)
            if shape is None:
                shape = _shape(plan, type(model), given_names)
            plan.last_shape[0] = (given_names, shape)
        field_values = shape.values(values)
        if not shape.plain and not _PLAIN_TYPES.issuperset(map(type, field_values)):
            shape = None
    if shape is None:
        text = _FINGERPRINT_ENCODER.encode(_given(model, plan))
    else:
        text = _SHAPE_ENCODER.encode(shape.struct(*field_values))
    hasher = _FINGERPRINT_HASH.copy()
    hasher.update(text)
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class _Shape:
    """The fingerprinted fields of one set of given fields, in sorted order (``type`` too)."""

    struct: type[msgspec.Struct]
    values: Callable[[dict[str, Any]], tuple[Any, ...]]
    plain: bool
    """Whether every field's type admits only plain values (no check per command then)."""


_SHAPES_MAX = 64
"""Bound on the shapes kept per command class (optional fields given or not)."""


def _shape(plan: _Plan, cls: type[Command], given_names: frozenset[str]) -> _Shape:
    names = sorted((given_names - plan.excluded) | {"type"})
    getter = operator.itemgetter(*names)
    fields = cls.model_fields
    shape = _Shape(
        msgspec.defstruct("Given", names, array_like=False),
        (lambda values: (getter(values),)) if len(names) == 1 else getter,
        all(_plain_only(fields[name].annotation) for name in names),
    )
    if len(plan.shapes) < _SHAPES_MAX:
        plan.shapes[given_names] = shape
    return shape


async def aprepare_many(
    commands: Sequence[Mapping[str, Any] | Command], now: datetime
) -> list[Prepared]:
    """Parses commands for an asyncio caller; a long list in a thread, not in the event loop."""
    if len(commands) <= PREPARE_INLINE_MAX:
        return prepare_many(commands, now)
    return await asyncio.to_thread(prepare_many, commands, now)
