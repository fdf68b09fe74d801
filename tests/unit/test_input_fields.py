"""Clean text and times in range at the boundary (DESIGN §4 introduction, issue 7 item 3)."""

from __future__ import annotations

import io
import json
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from adapters.cli.main import execute_lines
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands.fields import CLEAN, CLEAN_MULTILINE, TimeBound
from ledger.commands.models import AnyCommand, ConsumeStamp
from ledger.errors import Rejected
from ledger.outcome import Outcome
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    MASTER,
    consume,
    fields,
    invalid_fields,
    network_ledger,
    register_client,
    rejection,
)

INVISIBLE_CHARACTERS = [
    chr(c)
    for c in (
        *range(0x200B, 0x200E),
        0x2028,
        0x2029,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0xFEFF,
    )
]
"""Zero-width space and joiners, line and paragraph separators, bidirectional embeddings,
overrides and isolates, the byte-order mark: refused like control characters (issue 19)."""
CONTROL_CHARACTERS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + INVISIBLE_CHARACTERS


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """A ledger on the in-memory store with the standard network (the CTI holds 10 stamps)."""
    with network_ledger(clock, cti_stamps=10) as ledger:
        yield ledger


def stamp(**extra: Any) -> dict[str, Any]:
    """A ConsumeStamp of the standard CTI by the master account."""
    return consume(actor=MASTER, **extra)


# Every text field of every command ---------------------------------------------------------------


def _text_leaves(annotation: Any, path: str, metadata: tuple[Any, ...] = ()) -> Iterator[Any]:
    """(path, metadata) of every ``str`` inside an annotation, through models, unions, tuples."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *more = typing.get_args(annotation)
        yield from _text_leaves(inner, path, (*metadata, *more))
    elif annotation is str:
        yield path, metadata
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            yield from _text_leaves(info.annotation, f"{path}.{name}", tuple(info.metadata))
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType, tuple, typing.Literal):
        if typing.get_origin(annotation) is typing.Literal:
            return  # fixed words chosen by the ledger
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                yield from _text_leaves(arg, path, metadata)


def _flatten(metadata: tuple[Any, ...]) -> list[Any]:
    flat: list[Any] = []
    for item in metadata:
        flat.extend(getattr(item, "metadata", None) or [item])
        flat.append(item)
    return flat


COMMAND_CLASSES = typing.get_args(typing.get_args(AnyCommand)[0])
TEXT_LEAVES = [
    (path, metadata)
    for command_class in COMMAND_CLASSES
    for path, metadata in _text_leaves(command_class, command_class.__name__)
]


def _constraint(metadata: tuple[Any, ...], name: str) -> Any:
    """The first ``name`` constraint (``max_length``, ``pattern``) among ``metadata``; None."""
    return next(
        (getattr(i, name) for i in _flatten(metadata) if getattr(i, name, None) is not None), None
    )


def _max_length(metadata: tuple[Any, ...]) -> int | None:
    return _constraint(metadata, "max_length")


def _pattern(metadata: tuple[Any, ...]) -> str | None:
    return _constraint(metadata, "pattern")


# Texts without CLEAN, one per distinct type: each must be a pattern that refuses control
# characters (tested once per pattern, since many fields share a type such as ``Id``).
PATTERN_TYPES = {
    _pattern(metadata) or path: (path, metadata)
    for path, metadata in TEXT_LEAVES
    if CLEAN not in metadata and CLEAN_MULTILINE not in metadata
}


def test_every_command_has_text_fields_to_check() -> None:
    """The walk finds the text fields (a broken walk would make the next tests vacuous)."""
    paths = {path for path, _ in TEXT_LEAVES}
    assert "RegisterClient.profile.address.street" in paths
    assert "RegisterClient.profile.legal_rep.email" in paths
    assert "ConsumeStamp.cfdi_uuid" in paths
    assert len(COMMAND_CLASSES) >= 32


def test_every_text_field_has_a_length_bound() -> None:
    """Each text of each command (nested models included) has a maximum length."""
    assert [path for path, metadata in TEXT_LEAVES if _max_length(metadata) is None] == []


def test_every_text_field_refuses_control_characters_by_clean_or_by_pattern() -> None:
    """A text field carries ``CLEAN`` (or ``CLEAN_MULTILINE``) or a pattern."""
    assert [path for path, metadata in PATTERN_TYPES.values() if _pattern(metadata) is None] == []


@pytest.mark.parametrize("pattern", sorted(PATTERN_TYPES))
def test_a_text_pattern_admits_no_control_character(pattern: str) -> None:
    """Valid strings of the pattern with a control character inserted are refused."""
    _, metadata = PATTERN_TYPES[pattern]
    adapter: TypeAdapter[str] = TypeAdapter(typing.Annotated[str, *metadata])

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.from_regex(pattern, fullmatch=True),
        st.sampled_from(CONTROL_CHARACTERS),
        st.integers(0, 1000),
    )
    def refuses(valid: str, control: str, where: int) -> None:
        position = where % (len(valid) + 1)
        with pytest.raises(ValidationError):
            adapter.validate_python(valid[:position] + control + valid[position:])

    refuses()


@pytest.mark.parametrize(
    "control", ["\x00", "\x1b", "\x7f", "\x85", "\x9f", "\ud800", "\n", *INVISIBLE_CHARACTERS]
)
def test_control_character_in_a_nested_profile_field_is_invalid_command(
    lg: Ledger, control: str
) -> None:
    """A control character deep in a client's profile is refused, naming the field."""
    command = register_client(address={"street": f"Reforma{control}222"})
    assert invalid_fields(lg, command) == ["RegisterClient.profile.address.street"]


def test_nul_in_a_client_name_is_invalid_command(lg: Ledger) -> None:
    """The NUL byte that stopped every PostgreSQL projection is refused at the boundary."""
    assert invalid_fields(lg, register_client(name="Juan\x00Pérez")) == [
        "RegisterClient.profile.name"
    ]


def test_comments_take_tab_and_newline_but_no_other_control_character(lg: Ledger) -> None:
    """``comments`` is the one text where tab and newline pass; CR, NUL and the invisible
    characters do not."""
    outcome = lg.execute(register_client("C3", comments="Paga a 30 días.\n\tVer contrato."))
    assert outcome.ok is True
    for control in ("\r", "\x00", "\x0b", "\u2028", "\u202e", "\ufeff"):
        rejected = rejection(lg, register_client("C4", comments=f"uno{control}dos"))
        assert fields(rejected) == ["RegisterClient.profile.comments"]


def test_newline_in_a_single_line_text_is_invalid_command(lg: Ledger) -> None:
    """A reclaim's reason is one line: a newline in it is refused."""
    rejected = rejection(
        lg,
        {
            "type": "ReclaimStamps",
            "transfer_id": "R1",
            "from_cti_id": CTI,
            "quantity": 1,
            "reason": "error\nde captura",
            "actor": DISTRIBUTOR,
        },
    )
    assert rejected.code == "invalid_command"
    assert fields(rejected) == ["ReclaimStamps.reason"]


def test_control_character_in_a_password_or_idempotency_key_is_invalid_command(
    lg: Ledger,
) -> None:
    """Texts that are never shown are still text: no control characters in them either."""
    rejected = rejection(
        lg,
        {
            "type": "ResetStampingPassword",
            "cti_id": CTI,
            "password": "secreto\x00123",
            "actor": DISTRIBUTOR,
            "idempotency_key": "k\x01",
        },
    )
    assert sorted(fields(rejected)) == [
        "ResetStampingPassword.idempotency_key",
        "ResetStampingPassword.password",
    ]


def test_over_long_text_is_invalid_command(lg: Ledger) -> None:
    """A megabyte of name is refused by its bound, not recorded."""
    rejected = rejection(lg, register_client(name="x" * 1_000_000))
    assert fields(rejected) == ["RegisterClient.profile.name"]


def test_unknown_field_named_with_control_characters_is_escaped_and_cut(lg: Ledger) -> None:
    """An unknown field's name goes back escaped and cut to 100 characters."""
    rejected = rejection(lg, {**stamp(), "x\x00" + "y" * 500: 1})
    (field,) = fields(rejected)
    assert field.startswith("ConsumeStamp.x\\x00yyy")
    assert len(field) == len("ConsumeStamp.") + 100 + 3


def test_unknown_command_type_is_not_echoed(lg: Ledger) -> None:
    """An unknown type is ``invalid_command`` on field ``type``, without quoting it back."""
    rejected = rejection(lg, {"type": "Teleport\x00" * 1000})
    assert rejected.details["errors"] == [
        {"field": "type", "message": "unknown or missing command type"}
    ]


# Times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stamped_at",
    [
        "0001-01-01T00:00:00+00:00",  # raised OverflowError from execute
        "9999-12-31T23:00:00-12:00",  # raised OverflowError from execute
        "1999-12-31T23:59:59+00:00",
        "2026-01-06T18:00:01+00:00",  # the clock is 2026-01-05T18:00Z: one day and a second
        "2026-01-05T12:00:00",  # no offset
    ],
)
def test_stamped_at_out_of_range_is_invalid_command_naming_the_field(
    lg: Ledger, stamped_at: str
) -> None:
    """A time before 2000 or over a day after the clock's now is refused, never a crash."""
    assert invalid_fields(lg, stamp(stamped_at=stamped_at)) == ["ConsumeStamp.stamped_at"]


def test_stamped_at_up_to_a_day_ahead_and_back_to_2000_is_accepted(lg: Ledger) -> None:
    """The bounds themselves are inside the range."""
    assert lg.execute(stamp(stamped_at="2026-01-06T18:00:00+00:00")).ok is True
    assert lg.execute(stamp(stamped_at="2000-01-01T00:00:00+00:00")).ok is True
    assert lg.balance(CTI) == 8


def test_the_upper_bound_follows_the_ledger_clock(lg: Ledger, clock: ManualClock) -> None:
    """Refused today, the same time is accepted once the ledger clock has moved on."""
    later = "2026-03-01T12:00:00-06:00"
    assert rejection(lg, stamp(stamped_at=later)).code == "invalid_command"
    clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    assert lg.execute(stamp(stamped_at=later)).ok is True


def test_a_model_built_by_the_caller_is_checked_against_the_clock_too(lg: Ledger) -> None:
    """A ready ``ConsumeStamp`` model with a time a year ahead is refused like a dict."""
    model = ConsumeStamp.model_validate(
        stamp(stamped_at=datetime(2027, 1, 5, tzinfo=UTC).isoformat())
    )
    with pytest.raises(Rejected) as caught:
        lg.execute(model)
    assert fields(caught.value) == ["ConsumeStamp.stamped_at"]


def test_each_command_of_a_batch_gets_its_own_outcome_around_bad_times(lg: Ledger) -> None:
    """Extreme times amid valid consumptions: the valid ones succeed, the others are refused."""
    results = lg.execute_many(
        [
            stamp(),
            stamp(stamped_at="0001-01-01T00:00:00+00:00"),
            stamp(),
            stamp(stamped_at="9999-12-31T23:00:00-12:00"),
            stamp(),
        ]
    )
    assert [r.ok if isinstance(r, Outcome) else r.code for r in results] == [
        True,
        "invalid_command",
        True,
        "invalid_command",
        True,
    ]
    assert lg.balance(CTI) == 7


@pytest.mark.parametrize("expires_on", ["1999-12-31", "9999-12-31", "2200-01-01"])
def test_expires_on_out_of_range_is_invalid_command(lg: Ledger, expires_on: str) -> None:
    """An expiry before 2000 or centuries ahead is refused (its date arithmetic would overflow)."""
    rejected = rejection(
        lg,
        {
            "type": "RenewDistributor",
            "distributor_id": DISTRIBUTOR,
            "expires_on": expires_on,
            "actor": MASTER,
        },
    )
    assert rejected.code == "invalid_command"
    assert fields(rejected) == ["RenewDistributor.expires_on"]


def test_expires_on_years_ahead_is_accepted(lg: Ledger, clock: ManualClock) -> None:
    """An expiry lies ahead by nature: ten years ahead is fine."""
    ahead = (clock() + timedelta(days=3650)).date().isoformat()
    outcome = lg.execute(
        {
            "type": "RenewDistributor",
            "distributor_id": DISTRIBUTOR,
            "expires_on": ahead,
            "actor": MASTER,
        }
    )
    assert outcome.ok is True
    assert CLIENT  # the network's client is untouched by a renewal


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:00:00-12:00"])
def test_balance_at_an_extreme_instant_is_invalid_command(lg: Ledger, at: str) -> None:
    """A query time outside 2000-01-01..2199-12-31 is refused (it raised OverflowError)."""
    with pytest.raises(Rejected) as caught:
        lg.balance_at(CTI, "stamps", at)
    assert caught.value.code == "invalid_command"
    assert caught.value.details["field"] == "at"


@pytest.mark.parametrize(
    "text",
    [
        "Juan\u202ePérez",  # a right-to-left override makes "zeréP" read as "Pérez"
        "Juan\u200bPérez",  # zero-width space: two names that look alike
        "\ufeffJuan Pérez",
        "Juan\u2066Pérez\u2069",
    ],
)
def test_a_name_with_invisible_characters_is_invalid_command(lg: Ledger, text: str) -> None:
    """Bidirectional overrides and zero-width characters in a name are refused, naming it."""
    assert invalid_fields(lg, register_client("C5", name=text)) == ["RegisterClient.profile.name"]


# Numbers are not times -------------------------------------------------------------------------

EPOCHS: list[Any] = [1_700_000_000, "1700000000", 1.7e9, "1.7e9", 0, True]
"""A Unix epoch as a number, as digits, as a float: pydantic's lax mode read them as dates."""


def _time_leaves() -> Iterator[tuple[str, Any]]:
    """(path, annotation) of every time or date field of every command."""
    for command_class in COMMAND_CLASSES:
        for name, info in command_class.model_fields.items():
            metadata = [*info.metadata, *getattr(info.annotation, "__metadata__", ())]
            for arg in typing.get_args(info.annotation):
                metadata += getattr(arg, "__metadata__", ())
            if any(isinstance(m, TimeBound) for m in metadata):
                yield f"{command_class.__name__}.{name}", info


TIME_LEAVES = dict(_time_leaves())


def test_the_walk_finds_the_time_fields() -> None:
    """Instants and dates of commands are found (a broken walk would make the next test vacuous)."""
    assert {"ConsumeStamp.stamped_at", "IssueCreditCode.expires_on"} <= set(TIME_LEAVES)
    assert "ActivateDistributor.expires_on" in TIME_LEAVES


@pytest.mark.parametrize("path", sorted(TIME_LEAVES))
@pytest.mark.parametrize("value", EPOCHS, ids=repr)
def test_every_time_field_refuses_a_number(path: str, value: Any) -> None:
    """Each time and date field of each command refuses a number or a string of digits."""
    info = TIME_LEAVES[path]
    annotation = info.annotation
    if info.metadata:  # pydantic moved a bare ``Annotated`` type's metadata to the field
        annotation = typing.Annotated[annotation, *info.metadata]
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    with pytest.raises(ValidationError):
        adapter.validate_python(value)


@pytest.mark.parametrize("value", EPOCHS, ids=repr)
def test_an_epoch_as_stamped_at_is_invalid_command_naming_the_field(lg: Ledger, value: Any) -> None:
    """``execute`` refuses a bare epoch as a stamping time, naming the field."""
    assert invalid_fields(lg, stamp(stamped_at=value)) == ["ConsumeStamp.stamped_at"]


@pytest.mark.parametrize("value", [1_767_225_600, "1767225600", "20270131", 20270131])
def test_an_epoch_as_a_date_is_invalid_command_naming_the_field(lg: Ledger, value: Any) -> None:
    """A date field takes ``YYYY-MM-DD``: an epoch at midnight or bare digits are refused."""
    command = {
        "type": "RenewDistributor",
        "distributor_id": DISTRIBUTOR,
        "expires_on": value,
        "actor": MASTER,
    }
    assert invalid_fields(lg, command) == ["RenewDistributor.expires_on"]


def test_an_epoch_in_a_batch_is_refused_alone(lg: Ledger) -> None:
    """``execute_many``: the epochs are refused, the commands around them succeed."""
    results = lg.execute_many(
        [stamp(), stamp(stamped_at=1_700_000_000), stamp(stamped_at="1700000000"), stamp()]
    )
    assert [r.ok if isinstance(r, Outcome) else r.code for r in results] == [
        True,
        "invalid_command",
        "invalid_command",
        True,
    ]
    assert lg.balance(CTI) == 8


def test_an_epoch_through_exec_is_invalid_command(lg: Ledger) -> None:
    """``ledger exec``: a JSON number or digits as ``stamped_at`` get ``invalid_command``."""
    lines = [
        json.dumps(stamp(stamped_at=1_700_000_000)).encode(),
        json.dumps(stamp(stamped_at="1700000000")).encode(),
        json.dumps(stamp(stamped_at="2026-01-05T11:00:00-06:00")).encode(),
    ]
    out = io.BytesIO()
    execute_lines(lg, iter([list[bytes | None](lines)]), out)
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [a.get("code", "ok") for a in answers] == ["invalid_command", "invalid_command", "ok"]
    assert answers[0]["details"]["errors"][0]["field"] == "ConsumeStamp.stamped_at"


def test_an_aware_datetime_and_iso_text_pass(lg: Ledger) -> None:
    """What passes: an aware ``datetime``, ISO 8601 text with an offset (``Z`` too)."""
    for value in (
        datetime(2026, 1, 5, 12, tzinfo=UTC),
        "2026-01-05T12:00:00Z",
        "2026-01-05T06:00:00.250-06:00",
    ):
        assert lg.execute(stamp(stamped_at=value)).ok is True
