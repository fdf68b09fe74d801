"""Shared field types of outside input: every text bounded and clean, every time in range.

DESIGN §4: text fields never hold NUL or other control characters (tab and newline only in
``comments``) and have a bounded length; times lie between 2000-01-01 and one day after the
clock's now. A command model uses only these types (or a pattern that cannot match a control
character) for its text; ``tests/unit/test_input_fields.py`` fails on a text field without them.

A text with a control character would be recorded forever: PostgreSQL refuses ``\\u0000`` in
``text`` (so every projection page after it failed), and terminals, CSV files and logs read
control characters as instructions. Lone surrogates are refused too: they are not characters and
cannot be encoded as UTF-8. So are the invisible format characters that make one text look like
another (a name, an id, an RFC): the bidirectional overrides and isolates (U+202A-U+202E,
U+2066-U+2069), the zero-width space and joiners (U+200B-U+200D), the byte-order mark (U+FEFF)
and the line and paragraph separators (U+2028, U+2029).

Times are checked twice. The types check what needs no clock (ISO 8601 text with an offset, or an
aware ``datetime``; a date as ``YYYY-MM-DD`` text or a ``date``; never a number or a string of
digits, which pydantic would read as seconds since 1970; an offset, not before 2000-01-01,
not after ``DATE_MAX``), so no later arithmetic on a time can overflow. ``time_errors`` checks what
needs the ledger's clock (not after its now plus one day); the engine calls it on every command,
built from a dict or given as a model, because only the engine holds the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints
from pydantic_core import PydanticCustomError

# Invisible characters that change how a text reads: zero-width space and joiners, line and
# paragraph separators, bidirectional embeddings, overrides and isolates, the byte-order mark.
_INVISIBLE = "\u200b-\u200d\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
# Control characters: C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F), lone surrogates, and the
# invisible ones above.
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_INVISIBLE}]")
# The same without tab (U+0009) and newline (U+000A), for multi-line free text.
_CONTROL_MULTILINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff{_INVISIBLE}]")

TIME_MIN = datetime(2000, 1, 1, tzinfo=UTC)
"""No time or date of a command lies before this."""
DATE_MIN = TIME_MIN.date()
DATE_MAX = date(2199, 12, 31)
"""No date lies after this (expiry dates lie ahead; date arithmetic on them must not overflow)."""
FUTURE_SLACK = timedelta(days=1)
"""An instant may lie this far after the ledger clock's now (clocks of callers drift)."""
FUTURE_DAYS_MAX = 36_525
"""A date may lie at most this many days (about a century) after the ledger clock's today."""


def refuse_control_characters(value: str) -> str:
    """``value`` unchanged, or a validation error if it holds a control character."""
    found = _CONTROL.search(value)
    if found is not None:
        raise PydanticCustomError(
            "control_character",
            "El texto no admite caracteres de control ni invisibles (posición {position}).",
            {"position": found.start()},
        )
    return value


def refuse_control_characters_but_tab_and_newline(value: str) -> str:
    """``value`` unchanged, or a validation error if it holds a control character but tab or LF."""
    found = _CONTROL_MULTILINE.search(value)
    if found is not None:
        raise PydanticCustomError(
            "control_character",
            "El texto solo admite tabuladores y saltos de línea como caracteres de control, "
            "y ningún carácter invisible (posición {position}).",
            {"position": found.start()},
        )
    return value


CLEAN = AfterValidator(refuse_control_characters)
"""Refuses control characters; put it after a ``StringConstraints`` with a ``max_length``."""
CLEAN_MULTILINE = AfterValidator(refuse_control_characters_but_tab_and_newline)
"""Like ``CLEAN`` but tab and newline pass (free multi-line text such as ``comments``)."""

# Texts: one type per kind of content, each with its bound. A field that needs another bound
# writes ``Annotated[str, StringConstraints(min_length=1, max_length=N), CLEAN]``.
Label = Annotated[str, StringConstraints(min_length=1, max_length=100), CLEAN]
"""A short single-line text: a product, a reference, a service, a tag."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=300), CLEAN]
"""A person's or company's name."""
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500), CLEAN]
"""A short explanation given with an operation (a reclaim's reason)."""
Secret = Annotated[str, StringConstraints(min_length=8, max_length=128), CLEAN]
"""A password being set (never recorded in clear)."""
SecretGuess = Annotated[str, StringConstraints(min_length=1, max_length=128), CLEAN]
"""A password being checked."""
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200), CLEAN]
"""A caller's idempotency key."""
Comments = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=2000), CLEAN_MULTILINE
]
"""Free multi-line notes: the one kind of text where tab and newline are allowed."""

# Texts whose pattern admits no control character (checked by the fields test).
Id = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
"""Caller-chosen ids: letters, digits, ``_ . -``; ``:`` and ``@`` are kept for internal streams."""
SaleId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
"""A sale id: a caller's transfer id, or one the ledger derived (those contain ``:``)."""
Money = Annotated[str, StringConstraints(max_length=15, pattern=r"^[0-9]{1,12}\.[0-9]{2}$")]
"""An amount in pesos with two decimals (IVA included), as text: ``"1500.00"``."""

# E-mails and phones: a pattern and a check each (shared by profiles, admin logins, portal users).
_EMAIL_CHARS_MAX = 254  # RFC 5321's limit on a forward path
_EMAIL_LOCAL_CHARS_MAX = 64
_PHONE_DIGITS_MIN = 7
_PHONE_DIGITS_MAX = 20
# A deliberately simple address check (no extra dependency): an ASCII local part of the usual
# characters, "@", and a domain of dotted labels ending in a top-level name. It refuses the
# typos that matter (spaces, missing "@" or domain) and accepts every address a mail server does
# in practice; it does not try to parse quoted local parts or IP literals.
_EMAIL_PATTERN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_PHONE_PATTERN = re.compile(r"\+?[0-9() .\-]+")


def _check_email(value: str) -> str:
    local, _, _ = value.partition("@")
    if (
        len(value) > _EMAIL_CHARS_MAX
        or len(local) > _EMAIL_LOCAL_CHARS_MAX
        or _EMAIL_PATTERN.fullmatch(value) is None
    ):
        raise PydanticCustomError("email", "El correo electrónico no es válido.")
    return value


def _check_phone(value: str) -> str:
    digits = sum(character.isdigit() for character in value)
    if (
        _PHONE_PATTERN.fullmatch(value) is None
        or not _PHONE_DIGITS_MIN <= digits <= _PHONE_DIGITS_MAX
    ):
        raise PydanticCustomError(
            "phone",
            "El teléfono debe tener de 7 a 20 dígitos; solo admite + ( ) - . y espacios.",
        )
    return value


Email = Annotated[
    str,
    StringConstraints(max_length=_EMAIL_CHARS_MAX),
    CLEAN,
    AfterValidator(_check_email),
]
"""An e-mail address (a profile's, an admin login, a portal user)."""
Phone = Annotated[str, StringConstraints(max_length=40), CLEAN, AfterValidator(_check_phone)]
"""A phone number: 7 to 20 digits and ``+ ( ) - .`` or spaces."""


# Times ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeBound:
    """Marks a time type with how far after the ledger clock it may lie (see ``time_errors``)."""

    kind: Literal["instant", "future_date"]


# ISO 8601 as text: a date, a time and an offset (``Z`` or ±hh[:mm]); a date alone for dates.
# Anything else is refused before pydantic's lax parsing, which reads a number, or a string of
# digits, as seconds since 1970 (``1700000000`` would be recorded as 2023-11-14).
_ISO_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)"
)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _instant_input(value: object) -> object:
    """An aware ``datetime`` or ISO 8601 text with an offset goes on; anything else is refused."""
    if isinstance(value, datetime) or (
        isinstance(value, str) and _ISO_INSTANT.fullmatch(value) is not None
    ):
        return value
    raise PydanticCustomError(
        "iso_instant",
        "Se espera una fecha y hora ISO 8601 con zona horaria "
        "(por ejemplo 2026-11-26T12:00:00-06:00).",
    )


def _date_input(value: object) -> object:
    """A ``date`` or ``YYYY-MM-DD`` text goes on; a number or a datetime is refused."""
    if (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and _ISO_DATE.fullmatch(value) is not None
    ):
        return value
    raise PydanticCustomError(
        "iso_date", "Se espera una fecha AAAA-MM-DD (por ejemplo 2027-01-31)."
    )


def _check_instant(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("timezone_aware", "La fecha y hora necesita su zona horaria.")
    # Comparing aware datetimes never converts them, so extreme years cannot overflow here.
    if value < TIME_MIN:
        raise PydanticCustomError("time_too_early", "La fecha no puede ser anterior al año 2000.")
    if value.date() > DATE_MAX:
        raise PydanticCustomError("time_too_late", "La fecha está demasiado en el futuro.")
    return value


def _check_date(value: date) -> date:
    if value < DATE_MIN:
        raise PydanticCustomError("date_too_early", "La fecha no puede ser anterior al año 2000.")
    if value > DATE_MAX:
        raise PydanticCustomError("date_too_late", "La fecha está demasiado en el futuro.")
    return value


Instant = Annotated[
    datetime,
    BeforeValidator(_instant_input),
    AfterValidator(_check_instant),
    TimeBound("instant"),
]
"""When something happened: aware, from 2000-01-01 to the ledger clock's now plus one day."""
FutureDate = Annotated[
    date, BeforeValidator(_date_input), AfterValidator(_check_date), TimeBound("future_date")
]
"""A date that lies ahead by nature (an expiry): from 2000-01-01 to about a century ahead."""


def _time_bound(annotation: Any) -> TimeBound | None:
    """The ``TimeBound`` inside a field's annotation (through ``| None``), if any."""
    for item in getattr(annotation, "__metadata__", ()):
        if isinstance(item, TimeBound):
            return item
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            bound = _time_bound(arg)
            if bound is not None:
                return bound
    return None


def _holds_models(annotation: Any) -> bool:
    """Whether a field's annotation can hold a model (directly, optionally, or in a tuple)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_models(arg) for arg in get_args(annotation))


@cache
def time_fields(
    model_class: type[BaseModel],
) -> tuple[tuple[tuple[str, TimeBound], ...], tuple[str, ...]]:
    """The model's time fields with their bounds, and its fields that hold nested models."""
    times = []
    nested = []
    for name, info in model_class.model_fields.items():
        # pydantic moves a bare ``Annotated`` type's metadata to the field; ``X | None`` keeps it.
        bound = next((m for m in info.metadata if isinstance(m, TimeBound)), None)
        bound = bound or _time_bound(info.annotation)
        if bound is not None:
            times.append((name, bound))
        elif _holds_models(info.annotation):
            nested.append(name)
    return tuple(times), tuple(nested)


def time_errors(model: BaseModel, now: datetime, prefix: str = "") -> list[dict[str, str]]:
    """Field errors of the model's times (nested models included) against the clock's ``now``."""
    times, nested = time_fields(type(model))
    errors: list[dict[str, str]] = []
    for name, bound in times:
        value = getattr(model, name)
        if value is None:
            continue
        if bound.kind == "instant":
            if value > now + FUTURE_SLACK:
                errors.append(
                    {
                        "field": prefix + name,
                        "message": "La fecha no puede ser posterior a mañana.",
                    }
                )
        elif (value - now.date()).days > FUTURE_DAYS_MAX:
            errors.append(
                {"field": prefix + name, "message": "La fecha está demasiado en el futuro."}
            )
    for name in nested:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            errors.extend(time_errors(value, now, f"{prefix}{name}."))
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    errors.extend(time_errors(item, now, f"{prefix}{name}.{index}."))
    return errors
