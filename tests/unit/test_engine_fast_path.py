"""The hot path's shortcuts behave as the general path (fingerprints, log lines, the collector)."""

from __future__ import annotations

import gc
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from ledger.clock import ManualClock
from ledger.commands.models import COMMAND_ADAPTER
from ledger.logging import render_json
from ledger.write import preparation
from ledger.write.gc_pause import GC_PAUSE_COMMANDS_MIN
from ledger.write.preparation import Prepared, given_fields, prepare, prepare_many
from tests.support import client_profile, consume, network_ledger

COMMANDS: list[dict[str, Any]] = [
    consume(),
    consume(cfdi_uuid="0b9c3d1e-6f2a-4c4b-9a51-2f1f5c1d7e10"),
    consume(idempotency_key="retry-1", actor="D1"),
    consume(stamped_at="2026-01-05T10:00:00-06:00"),
    consume(stamped_at=None),
    {
        "type": "TransferStamps",
        "actor": "D1",
        "transfer_id": "T1",
        "from_id": "D1",
        "to_id": "C1-cti",
        "quantity": 5,
        "amount": "10.00",
    },
    {
        "type": "TransferStamps",
        "actor": "D1",
        "transfer_id": "T2",
        "from_id": "D1",
        "to_id": "C1-cti",
        "quantity": 5,
    },
    {
        "type": "RegisterClient",
        "actor": "D1",
        "client_id": "C9",
        "distributor_id": "D1",
        "profile": client_profile(),
    },
    {
        "type": "OpenStampingAccount",
        "actor": "D1",
        "cti_id": "X1",
        "client_id": "C1",
        "kind": "standard",
        "password": "clave-secreta-123",
    },
    {
        "type": "MassTransfer",
        "actor": "D1",
        "batch_id": "B1",
        "from_id": "D1",
        "lines": [{"to_id": "C1-cti", "quantity": 1, "amount": "1.00"}],
    },
]


def _general(command: dict[str, Any]) -> dict[str, Any]:
    model = COMMAND_ADAPTER.validate_python(command)
    given: dict[str, Any] = model.model_dump(
        mode="json", exclude_unset=True, exclude={"idempotency_key", "password", "actor"}
    )
    given["type"] = model.type
    return given


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c["type"]))
def test_given_fields_equal_pydantics_json_dump(command: dict[str, Any]) -> None:
    """The fingerprinted fields are pydantic's JSON dump of the given fields, shortcut or not."""
    model = COMMAND_ADAPTER.validate_python(command)
    assert given_fields(model) == _general(command)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c["type"]))
def test_a_fingerprint_is_blake2b_of_the_general_given_fields_sorted(
    command: dict[str, Any],
) -> None:
    """Every fingerprint ever stored is blake2b-128 of pydantic's JSON dump of the given fields
    with sorted keys: the hot path's shortcut (a struct per set of given fields) must give the
    same hex digest, or a retry of a stored command would be refused as a conflict."""
    general = msgspec.json.Encoder(order="sorted").encode(_general(command))
    expected = hashlib.blake2b(general, digest_size=16).hexdigest()
    assert prepare(command, NOW).fingerprint == expected
    assert prepare(command, NOW).fingerprint == expected  # the shape, once made, is reused


def test_given_fields_leave_out_password_and_idempotency_key() -> None:
    """A password and the idempotency key never enter the fingerprinted fields."""
    command = {**COMMANDS[8], "idempotency_key": "k1"}
    given = given_fields(COMMAND_ADAPTER.validate_python(command))
    assert "password" not in given
    assert "idempotency_key" not in given


def test_a_log_line_is_one_json_object() -> None:
    """A rendered log line parses back to the fields it was given."""
    line = render_json(
        {"event": "command", "type": "ConsumeStamp", "actor": "M", "duration_ms": 0.25}
    )
    assert json.loads(line) == {
        "event": "command",
        "type": "ConsumeStamp",
        "actor": "M",
        "duration_ms": 0.25,
    }


def test_a_log_value_json_cannot_hold_is_rendered_by_repr() -> None:
    """A value with no JSON form is written as its repr, as structlog's own renderer does."""

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert json.loads(render_json({"value": Opaque()})) == {"value": "<opaque>"}


def _collector_states(clock: ManualClock, commands: int) -> tuple[bool, bool]:
    """Whether the cyclic collector ran during a batch's commit, and after the batch."""
    during: list[bool] = []
    with network_ledger(clock, cti_stamps=commands) as lg:
        lg.engine.on_commit.append(lambda _ids: during.append(gc.isenabled()))
        lg.execute_many([consume() for _ in range(commands)])
    return during[0], gc.isenabled()


def test_the_collector_pauses_during_a_long_batch_and_runs_after() -> None:
    """The cyclic garbage collector is paused while a long batch runs and running again after."""
    assert gc.isenabled()
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    assert _collector_states(clock, GC_PAUSE_COMMANDS_MIN) == (False, True)


def test_the_collector_runs_during_a_short_batch() -> None:
    """A batch shorter than the bound (a few callers' commands) leaves the collector alone."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    assert _collector_states(clock, GC_PAUSE_COMMANDS_MIN - 1) == (True, True)


def test_a_collector_the_application_stopped_stays_stopped() -> None:
    """A batch never starts a collector that the application had stopped."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    gc.disable()
    try:
        assert _collector_states(clock, GC_PAUSE_COMMANDS_MIN) == (False, False)
    finally:
        gc.enable()


def test_a_long_batch_leaves_the_collector_nothing_of_its_own_to_scan() -> None:
    """What outlives a long batch is its outcomes, and the collector does not track them
    (``gc=False``): it scanned 2,000 of them after each call of 2,000 commands. Nor is any of
    the batch's parsed commands left (the memory store keeps its rows: they are the data)."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    commands = GC_PAUSE_COMMANDS_MIN
    with network_ledger(clock, cti_stamps=commands) as lg:
        gc.collect()
        gc.disable()  # nothing collected meanwhile: what is young is what the batch left
        try:
            results = lg.execute_many([consume() for _ in range(commands)])
            young = Counter(type(o).__name__ for o in gc.get_objects(generation=0))
        finally:
            gc.enable()
    assert [getattr(r, "balance_after", None) for r in results[-2:]] == [1, 0]
    assert young["Outcome"] == young["Prepared"] == young["ConsumeStamp"] == 0
    assert not gc.is_tracked(results[0])


NOW = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)


def _parsed(p: Prepared) -> tuple[Any, ...]:
    """What a parse gives, with the rejection as its code and field errors."""
    rejection = None if p.rejection is None else (p.rejection.code, p.rejection.details)
    return (p.command, p.keys, p.fingerprint, rejection, p.raw_type)


def test_a_list_of_valid_commands_parses_as_each_alone_in_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``prepare_many`` of valid dicts gives what ``prepare`` gives each, without validating
    them one by one."""
    expected = [_parsed(prepare(c, NOW)) for c in COMMANDS]
    one_by_one: list[object] = []
    real = preparation.COMMAND_ADAPTER

    class Counting:
        def validate_python(self, command: object) -> Any:
            one_by_one.append(command)
            return real.validate_python(command)

    monkeypatch.setattr("ledger.write.preparation.COMMAND_ADAPTER", Counting())
    assert [_parsed(p) for p in prepare_many(COMMANDS, NOW)] == expected
    assert one_by_one == []


def test_each_invalid_command_of_a_list_gets_its_own_rejection() -> None:
    """One invalid command makes the whole list parse one by one: every command gets what
    ``prepare`` gives it alone (the valid ones parsed, each invalid one its own rejection)."""
    commands: list[Any] = [
        consume(),
        consume(cfdi_uuid="not-a-uuid"),
        {"type": "NoSuchCommand", "actor": "M"},
        consume(issuer_rfc="GODE561231GR8\x00"),
        consume(stamped_at="2026-03-01T00:00:00-06:00"),  # after the clock's now
        consume(),
    ]
    parsed = prepare_many(commands, NOW)
    assert [_parsed(p) for p in parsed] == [_parsed(prepare(c, NOW)) for c in commands]
    codes = [p.rejection.code if p.rejection else "ok" for p in parsed]
    assert codes == [
        "ok",
        "invalid_command",
        "invalid_command",
        "invalid_rfc",
        "invalid_command",
        "ok",
    ]
