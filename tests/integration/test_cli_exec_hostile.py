"""``ledger exec`` answers exactly one JSON line per input line, whatever it holds (issue 7.5)."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest

from adapters.cli.main import EXEC_LINE_BYTES_MAX, main
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    CTI,
    DISTRIBUTOR,
    MASTER,
    client_profile,
    consume,
    network_ledger,
    run_cli,
    seed_network,
)


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def _outcomes(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def _line(command: dict[str, Any]) -> bytes:
    return json.dumps(command).encode()


def _stamp() -> bytes:
    return _line(consume(actor=MASTER))


HOSTILE: list[tuple[bytes, str | None]] = [
    (_stamp(), None),
    (b'{"type": "ConsumeStamp", "cti_id": "\xff\xfe"}', "not UTF-8 text (byte 36)"),
    (_stamp(), None),
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    (b'{"a": "' + b"x" * 2_000_000 + b'"}', f"line longer than {EXEC_LINE_BYTES_MAX} bytes"),
    (_stamp(), None),
    (b"", "empty line: a JSON object was expected"),
    (b"   ", "empty line: a JSON object was expected"),
    (b"42", "not a JSON object"),
    (b'"ConsumeStamp"', "not a JSON object"),
    (_stamp(), None),
]
"""Input lines, each with the reason of its rejection (None: a consumption that succeeds)."""


def _check(outcomes: list[dict[str, Any]]) -> None:
    assert len(outcomes) == len(HOSTILE) + 1  # and the duplicated key, last
    for number, ((_, reason), outcome) in enumerate(zip(HOSTILE, outcomes, strict=False), 1):
        if reason is None:
            assert outcome["ok"] is True, outcome
        else:
            assert outcome["code"] == "invalid_command"
            assert outcome["details"] == {"line": number, "reason": reason}
    assert outcomes[-1]["code"] == "invalid_command"
    assert outcomes[-1]["details"]["errors"][0]["field"] == "quantity"
    assert [o["balance_after"] for o in outcomes if o["ok"]] == [9, 8, 7, 6]


_DUPLICATE = _line(
    {
        "type": "TransferStamps",
        "transfer_id": "T-dup",
        "from_id": DISTRIBUTOR,
        "to_id": CTI,
        "quantity": 1,
        "amount": "0.50",
        "actor": DISTRIBUTOR,
    }
).replace(b'"quantity": 1,', b'"quantity": 1, "quantity": 1000,')
INPUT = b"\n".join([line for line, _ in HOSTILE] + [_DUPLICATE]) + b"\n"


def test_exec_answers_each_hostile_line_once_in_order(
    sqlite_url: str,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad UTF-8, deep nesting, a 2 MB line, empty lines, non-objects, a duplicated key."""
    with network_ledger(clock, url=sqlite_url, cti_stamps=10) as lg:
        before = lg.views.projector.source.max_notification_id()
    _stdin(monkeypatch, INPUT)
    assert main(["exec", "--url", sqlite_url]) == 0
    captured = capsys.readouterr()
    _check(_outcomes(captured.out))
    assert "Traceback" not in captured.err
    with Ledger.open(sqlite_url, clock=clock, password_cost="fast") as lg:
        assert lg.balance(CTI) == 6  # the doubled transfer moved nothing
        assert lg.views.projector.source.max_notification_id() == before + 4


def test_exec_through_a_real_pipe_answers_each_hostile_line_once(
    sqlite_url: str, clock: ManualClock
) -> None:
    """The same through ``python -m ledger exec`` reading a pipe (the select path)."""
    seed_network(sqlite_url, clock, cti_stamps=10)
    done = run_cli("exec", "--url", sqlite_url, input=INPUT, text=False)
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    _check(_outcomes(done.stdout.decode()))


def test_an_over_long_last_line_without_newline_is_one_rejection(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A final line over the limit and never ended is answered once."""
    _stdin(monkeypatch, b"{}\n" + b"x" * (EXEC_LINE_BYTES_MAX + 1))
    assert main(["exec", "--url", sqlite_url]) == 0
    outcomes = _outcomes(capsys.readouterr().out)
    assert [o["code"] for o in outcomes] == ["invalid_command", "invalid_command"]
    assert outcomes[1]["details"]["line"] == 2
    assert outcomes[1]["details"]["reason"] == f"line longer than {EXEC_LINE_BYTES_MAX} bytes"


def test_a_line_of_exactly_the_limit_is_parsed(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The limit itself is allowed: the line is parsed (and refused for what it says)."""
    padding = b" " * (EXEC_LINE_BYTES_MAX - 2)
    _stdin(monkeypatch, b"{" + padding + b"}\n")
    assert main(["exec", "--url", sqlite_url]) == 0
    (outcome,) = _outcomes(capsys.readouterr().out)
    assert outcome["details"]["errors"][0]["field"] == "type"


def test_nul_in_a_client_name_through_exec_is_refused_and_records_nothing(
    store_url: str,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``\\u0000`` in a name is ``invalid_command``; nothing is recorded; the views still run."""
    with network_ledger(clock, url=store_url) as lg:
        before = lg.views.projector.source.max_notification_id()
    command = {
        "type": "RegisterClient",
        "client_id": "C-nul",
        "distributor_id": DISTRIBUTOR,
        "actor": DISTRIBUTOR,
        "profile": {**client_profile(), "name": "Juan\u0000Pérez"},
    }
    line = json.dumps(command).encode()
    assert b"\\u0000" in line
    _stdin(monkeypatch, line + b"\n")
    assert main(["exec", "--url", store_url]) == 0
    (outcome,) = _outcomes(capsys.readouterr().out)
    assert outcome["code"] == "invalid_command"
    assert outcome["details"]["errors"][0]["field"] == "RegisterClient.profile.name"
    with Ledger.open(store_url, clock=clock, password_cost="fast") as lg:
        assert lg.views.projector.source.max_notification_id() == before
        assert [row.client_id for row in lg.views.clients(DISTRIBUTOR)] == ["C1"]
