"""Fuzzing every command type through ``execute``, ``execute_many`` and ``ledger exec`` (issue 7.8).

Each generated command starts from a plausible one of its type (fields from ``FIELD_VALUES``, by
name) and then has fields replaced by hostile values (random JSON, wrong types, huge and negative
numbers, control characters and lone surrogates, SQL fragments, extreme times), removed, or
joined by unknown ones. Whatever comes in, the answer is an outcome or a ``Rejected`` with a
code docs/COMMANDS.md lists for the command's type, never another exception; the stored event
count moves only when some command succeeded; afterwards the views catch up to the log and
``verify`` finds no breach.

The example counts are small so the whole file runs in tens of seconds on both databases;
``LEDGER_FUZZ_EXAMPLES`` raises them for a longer run.
"""

from __future__ import annotations

import io
import json
import os
import typing
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.cli.main import execute_lines
from adapters.storage.memory import MemoryStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands.models import AnyCommand
from ledger.docs import documented_codes
from ledger.errors import MESSAGES, Rejected
from ledger.outcome import Outcome
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    ISSUER_RFC,
    MASTER,
    client_profile,
    define_catalogue,
    distributor_profile,
    network_ledger,
)

EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "30"))
"""Examples per entry point and database (kept small: CI runs this on both databases)."""
SUB = "D9"
"""A sub-distributor that generated commands register and move through its statuses."""
SECOND_CTI = "C1-x"
"""A second CTI of the client, for blocking and password resets (C1-cti keeps stamping)."""

COMMAND_CLASSES = {
    member.model_fields["type"].default: member
    for member in typing.get_args(typing.get_args(AnyCommand)[0])
}

NEW_ID = st.from_regex(r"\Afz-[a-z0-9]{1,8}\Z")
QUANTITY = st.integers(1, 3)
MONEY = st.sampled_from(["0.00", "10.00", "1999.00"])

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "idempotency_key": NEW_ID,
    "actor": st.sampled_from([MASTER, DISTRIBUTOR, CLIENT, SUB, "nobody"]),
    "master_id": st.just(MASTER),
    "name": st.just("Plataforma"),
    "rfc": st.just("SAT970701NN3"),
    "seller_id": st.sampled_from([MASTER, DISTRIBUTOR]),
    "package_id": st.sampled_from(["P1000", "PTS3000", "PX"]),
    "unit": st.sampled_from(["stamps", "points"]),
    "quantity": QUANTITY,
    "price": MONEY,
    "audience": st.sampled_from(["client", "distributor"]),
    "validity_days": st.integers(1, 30),
    "services": st.just(["timbrado"]),
    "distributor_id": st.sampled_from([DISTRIBUTOR, SUB]),
    "parent_id": st.sampled_from([MASTER, DISTRIBUTOR]),
    "expires_on": st.sampled_from(["2026-06-30", "2027-12-31"]),
    "product": st.sampled_from(["Multinivel", "MKL Dóminus", "Dóminus", "soporte"]),
    "licence_points": st.integers(0, 300),
    "licence_id": NEW_ID,
    "seat_id": st.sampled_from(["seat-1", "seat-2"]),
    "user_id": st.sampled_from(["user-1", "user-2"]),
    "annual_price": MONEY,
    "bulk_stamp_price": MONEY,
    "allow_pcc_stamp_purchase": st.booleans(),
    "allow_pcc_point_purchase": st.booleans(),
    "buyer_id": st.just(DISTRIBUTOR),
    "count": QUANTITY,
    "pay_with": st.sampled_from(["money", "points"]),
    "transfer_id": NEW_ID,
    "batch_id": NEW_ID,
    "grant_id": NEW_ID,
    "spend_id": NEW_ID,
    "from_id": st.just(DISTRIBUTOR),
    "to_id": st.sampled_from([CTI, CLIENT, SUB]),
    "amount": MONEY,
    "lines": st.lists(
        st.fixed_dictionaries({"to_id": st.sampled_from([CTI, SECOND_CTI]), "quantity": QUANTITY}),
        min_size=1,
        max_size=3,
    ),
    "from_cti_id": st.just(CTI),
    "reason": st.just("captura errónea"),
    "client_id": st.sampled_from([CLIENT, "C-new"]),
    "profile": st.just(client_profile()),  # RegisterDistributor: see _plausible
    "nic": st.just("N-1"),
    "cti_id": st.sampled_from([CTI, SECOND_CTI]),
    "favourite": st.booleans(),
    "dropped": st.booleans(),
    "colour": st.sampled_from(["rojo", ""]),
    "email": st.just("admin@example.com"),
    "mobile": st.just("5512345678"),
    "kind": st.sampled_from(["standard", "unlimited", "multinivel", "mkl"]),
    "password": st.just("secreto123"),
    "cti_password": st.just("secreto123"),
    "rfc_lock": st.just(ISSUER_RFC),
    "minimum": QUANTITY,
    "credit": QUANTITY,
    "cfdi_uuid": st.uuids().map(str),
    "issuer_rfc": st.just(ISSUER_RFC),
    "stamped_at": st.sampled_from(["2026-01-05T11:00:00-06:00", "2026-01-04T23:59:59+00:00"]),
    "points": QUANTITY,
    "invoice_ref": NEW_ID,
    "sale_ids": st.lists(NEW_ID, min_size=1, max_size=2),
    "replaces": st.booleans(),
    "retire": st.booleans(),
    "unlimited_cti_fee_points": QUANTITY,
    "cti_ids": st.lists(st.sampled_from([CTI, SECOND_CTI]), min_size=1, max_size=2),
    "purchase_id": NEW_ID,
    "code_id": st.sampled_from(["code-1", "code-2"]),
    "code": st.sampled_from(["ABCD-EFGH-JKLM-NPQR", "0000 0000 0000 0000 0000"]),
    "nip": st.sampled_from(["123456", "000000"]),
    "hold_id": st.sampled_from(["hold-1", "hold-2"]),
    "expires_in_s": st.integers(1, 600),
}
"""A plausible value for each field name of any command (a new field needs one here)."""

SQL = st.sampled_from(
    [
        "'; DROP TABLE ledger_events; --",
        "x' OR '1'='1",
        "Robert'); DELETE FROM view_balances; --",
        "'||pg_sleep(5)||'",
        "%s%s%s",
        "$1",
        "\\x00",
        "C1-cti' --",
    ]
)
CONTROL_TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\x1b", "\x7f", "\x85", "\x9f", "\r", "\n", "\t", "\ud800"]),
    ),
    max_size=20,
)
NUMBERS = st.one_of(
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63), 10**30, 1.5, -0.0, 1e308, -1e308]),
    st.integers(),
    st.floats(),
)
TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00+00:00",
        "9999-12-31T23:00:00-12:00",
        "1999-12-31",
        "9999-12-31",
        "2026-13-45",
        "2026-01-05T11:00:00",
        "2030-01-01T00:00:00+00:00",
        "1970-01-01T00:00:00Z",
    ]
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
HOSTILE = st.one_of(
    JSON_VALUES, SQL, CONTROL_TEXT, NUMBERS, TIMES, st.just("x" * 5000), st.just([CTI] * 20_000)
)


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    """A command of any type: plausible fields, then some hostile changes."""
    command_type = draw(st.sampled_from(sorted(COMMAND_CLASSES)))
    command: dict[str, Any] = {"type": command_type}
    for name, info in COMMAND_CLASSES[command_type].model_fields.items():
        if name != "type" and (info.is_required() or draw(st.booleans())):
            command[name] = draw(FIELD_VALUES[name])
    if command_type == "RegisterDistributor":
        command["profile"] = distributor_profile()
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(["replace", "replace", "nest", "delete", "add"]))
        name = draw(st.sampled_from(sorted(command) or ["type"]))
        if change == "replace":
            command[name] = draw(HOSTILE)
        elif change == "nest" and isinstance(command.get("profile"), dict):
            profile = dict(command["profile"])
            profile[draw(st.sampled_from([*sorted(profile), "address", "comments"]))] = draw(
                st.one_of(HOSTILE, st.fixed_dictionaries({"street": CONTROL_TEXT}))
            )
            command["profile"] = profile
        elif change == "delete":
            command.pop(name)
        else:
            command[draw(st.one_of(st.text(max_size=8), SQL))] = draw(HOSTILE)
    return command


# Checks --------------------------------------------------------------------------------------


def _stored(lg: Ledger) -> int:
    if isinstance(lg.store, MemoryStore):
        return len(lg.store.stored_events())
    return int(lg.views.projector.source.max_notification_id() or 0)


def _recorded_something(result: object) -> bool:
    """Whether a result may have recorded events (a fresh success; a replay records nothing)."""
    return isinstance(result, Outcome) and not result.replayed


def _listed(code: str, command: object) -> None:
    """A rejection's code is one docs/COMMANDS.md lists for the command's type (issue 19)."""
    assert code in MESSAGES, code
    command_type = command.get("type") if isinstance(command, dict) else None
    if isinstance(command_type, str) and command_type in COMMAND_CLASSES:
        assert code in documented_codes(command_type), (command_type, code)
    else:
        assert code == "invalid_command", (command_type, code)


def _typed(result: object, command: object) -> None:
    if isinstance(result, Rejected):
        _listed(result.code, command)
    else:
        assert isinstance(result, Outcome), result
        assert result.ok is True


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def lg(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[Ledger]:
    """A ledger with the standard network, a sub-distributor and a second CTI, per backend."""
    url = (
        "memory://"
        if request.param == "memory"
        else request.getfixturevalue(f"{'sqlite' if request.param == 'sqlite' else 'pg'}_url")
    )
    with network_ledger(clock, url=url, inventory=20_000, cti_stamps=2_000) as ledger:
        define_catalogue(ledger)
        for result in ledger.execute_many(
            [
                {
                    "type": "ContractSubscription",
                    "distributor_id": DISTRIBUTOR,
                    "product": "Multinivel",
                    "actor": DISTRIBUTOR,
                },
                {
                    "type": "ContractSubscription",
                    "distributor_id": DISTRIBUTOR,
                    "product": "MKL Dóminus",
                    "actor": DISTRIBUTOR,
                },
                {
                    "type": "RegisterDistributor",
                    "distributor_id": SUB,
                    "parent_id": DISTRIBUTOR,
                    "profile": distributor_profile("Sub Uno", "sub@example.com"),
                    "actor": DISTRIBUTOR,
                },
                {
                    "type": "OpenStampingAccount",
                    "cti_id": SECOND_CTI,
                    "client_id": CLIENT,
                    "password": "secreto123",
                    "actor": DISTRIBUTOR,
                },
            ]
        ):
            assert isinstance(result, Outcome), result
        yield ledger
        # Afterwards the views still project up to the log, and the history is whole.
        ledger.views.catch_up()
        assert ledger.views.position() == _stored(ledger)
        report = ledger.verify()
        assert report.ok, report


def _fuzz(run: Callable[..., None], strategy: st.SearchStrategy[Any]) -> None:
    settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(run))()


def test_execute_answers_every_command_with_an_outcome_or_a_typed_rejection(lg: Ledger) -> None:
    """One command at a time: an outcome, or ``Rejected`` with a code, and nothing recorded."""

    def run(command: dict[str, Any]) -> None:
        before = _stored(lg)
        try:
            result: Outcome | Rejected = lg.execute(command)
        except Rejected as rejection:
            result = rejection
        _typed(result, command)
        if not _recorded_something(result):
            assert _stored(lg) == before, (command, result)

    _fuzz(run, commands())


def test_execute_many_answers_each_command_of_a_batch(lg: Ledger) -> None:
    """A batch gets one typed result per command; if none succeeded, nothing was recorded."""

    def run(batch: list[dict[str, Any]]) -> None:
        before = _stored(lg)
        results = lg.execute_many(batch)
        assert len(results) == len(batch)
        for result, command in zip(results, batch, strict=True):
            _typed(result, command)
        if not any(_recorded_something(r) for r in results):
            assert _stored(lg) == before, (batch, results)

    _fuzz(run, st.lists(commands(), min_size=1, max_size=6))


def _exec_line(command: dict[str, Any] | bytes) -> bytes:
    if isinstance(command, bytes):
        return command.replace(b"\n", b" ")
    # json.dumps writes NaN and lone surrogates as JSON parsers refuse them: hostile lines too.
    return json.dumps(command).encode()


def test_exec_answers_every_line_once(lg: Ledger) -> None:
    """``ledger exec``: one JSON object per input line, in order, each typed."""

    def run(batch: list[dict[str, Any] | bytes]) -> None:
        before = _stored(lg)
        out = io.BytesIO()
        execute_lines(lg, iter([[_exec_line(c) for c in batch]]), out)
        answers = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(answers) == len(batch)
        for answer, command in zip(answers, batch, strict=True):
            assert answer["ok"] in (True, False)
            if not answer["ok"]:
                _listed(answer["code"], command)
        if not any(a["ok"] and not a.get("replayed") for a in answers):
            assert _stored(lg) == before, (batch, answers)

    _fuzz(run, st.lists(st.one_of(commands(), st.binary(max_size=40)), min_size=1, max_size=6))


def test_every_command_type_has_plausible_values_for_its_fields() -> None:
    """The generator knows a plausible value for every field of every command type."""
    missing = {
        f"{command_type}.{name}"
        for command_type, model in COMMAND_CLASSES.items()
        for name in model.model_fields
        if name != "type" and name not in FIELD_VALUES
    }
    assert missing == set()
    assert uuid  # fresh CFDI UUIDs come from st.uuids()
