"""Structured logs: one line per command with its type, outcome, code and duration (DESIGN §7)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from ledger.logging import capture_logs, configure_cli_logging, get_logger
from tests.support import (
    CLIENT,
    CTI,
    client_profile,
    command,
    consume,
    network_fixture,
    network_ledger,
    on_cti,
    open_cti,
    register_client,
    verify_credentials,
)

PASSWORD = "clave-secreta-123"

# A ledger on the in-memory store with the standard network; C1's CTI holds a stamp.
lg = network_fixture(cti_stamps=1)


@contextlib.contextmanager
def cli_stderr(level: int | None = None, *, json: bool | None = None) -> Iterator[io.StringIO]:
    """What the CLI's logging (``configure_cli_logging(level, json=json)``) writes to stderr
    inside the block; the ``ledger`` logger is reset afterwards."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out):
            configure_cli_logging(level, json=json)
            yield out
    finally:
        _reset_cli_logging()


def test_each_command_logs_one_line(lg: Ledger) -> None:
    """A batch of three commands logs three lines, in order, with type and outcome."""
    with capture_logs() as logs:
        lg.execute_many([consume(), consume(), command("TagClient", "D1", client_id=CLIENT)])
    assert [(e["event"], e["type"], e["outcome"]) for e in logs] == [
        ("command", "ConsumeStamp", "ok"),
        ("command", "ConsumeStamp", "rejected"),
        ("command", "TagClient", "rejected"),
    ]


def test_a_rejection_logs_its_code_and_duration(lg: Ledger) -> None:
    """A rejected command's line carries the stable code and a duration in milliseconds."""
    with capture_logs() as logs, pytest.raises(Rejected):
        lg.execute(consume("NOBODY"))
    (line,) = logs
    assert (line["outcome"], line["code"]) == ("rejected", "unknown_account")
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0


def test_a_success_logs_its_duration(lg: Ledger) -> None:
    """A successful command's line carries a duration in milliseconds and an empty code."""
    with capture_logs() as logs:
        lg.execute(consume())
    (line,) = logs
    assert (line["outcome"], line["code"]) == ("ok", None)
    assert line["duration_ms"] >= 0


def test_an_invalid_command_logs_its_type(lg: Ledger) -> None:
    """A command refused by its schema still logs the type it claimed."""
    with capture_logs() as logs, pytest.raises(Rejected):
        lg.execute({"type": "ConsumeStamp", "actor": "M", "cti_id": CTI})
    (line,) = logs
    assert (line["type"], line["code"]) == ("ConsumeStamp", "invalid_command")


def test_a_replay_logs_as_replayed(lg: Ledger) -> None:
    """A repeat is told apart from a first success."""
    command = consume()
    lg.execute(command)
    with capture_logs() as logs:
        lg.execute(command)
    assert [line["outcome"] for line in logs] == ["replayed"]


def test_logs_never_carry_a_password(lg: Ledger) -> None:
    """Opening, resetting, verifying (right and wrong) and refusing passwords logs none of them."""
    commands = [
        open_cti("X1", password=PASSWORD),
        on_cti("ResetStampingPassword", "X1", password=PASSWORD + "-2"),
        verify_credentials(PASSWORD + "-2", "X1"),
        verify_credentials(PASSWORD, "X1"),
        on_cti("ResetStampingPassword", "X1", password="corta"),
    ]
    with capture_logs() as logs:
        results = lg.execute_many(commands)
    assert [r.code if isinstance(r, Rejected) else r.valid for r in results] == [
        None,
        None,
        True,
        False,
        "invalid_command",
    ]
    assert len(logs) == len(commands)
    assert "clave" not in repr(logs)
    assert "corta" not in repr(logs)


def test_logs_never_carry_a_profile(lg: Ledger) -> None:
    """Registering and updating a client logs no personal data, even when refused."""
    profile = client_profile("Rosa Íñiguez", "rosa.iniguez@example.com")
    update = {"client_id": "C2", "profile": {**profile, "postal_code": "1"}}
    with capture_logs() as logs:
        lg.execute_many(
            [register_client(**profile), command("UpdateClientProfile", "D1", **update)]
        )
    assert len(logs) == 2
    for secret in ("Rosa", "iniguez", "GODE561231GR8", "06600"):
        assert secret not in repr(logs)


def test_log_lines_go_to_the_stderr_of_the_moment() -> None:
    """The CLI's handler writes to whatever ``sys.stderr`` is when a line is written."""
    configured_on = io.StringIO()
    with contextlib.redirect_stderr(configured_on):
        configure_cli_logging(logging.INFO, json=True)
    configured_on.close()  # as a test's capture stream is closed after the test
    now = io.StringIO()
    try:
        with contextlib.redirect_stderr(now):
            get_logger().info("command", type="Probe", outcome="ok")
    finally:
        _reset_cli_logging()
    assert '"type":"Probe"' in now.getvalue()


def test_log_timestamps_are_iso_utc_with_microseconds() -> None:
    """Each JSON line's timestamp is ISO 8601 in UTC with microseconds, and it is now."""
    with cli_stderr(logging.INFO, json=True) as out:
        get_logger().info("command", type="Probe", outcome="ok")
    line = json.loads(out.getvalue())
    assert (line["event"], line["level"], line["logger"]) == ("command", "info", "ledger")
    stamp = line["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((datetime.now(tz=UTC) - at).total_seconds()) < 5


def test_the_cli_renders_readable_lines_on_a_terminal() -> None:
    """Without JSON the line is structlog's console rendering: the event, then key=value."""
    with cli_stderr(logging.INFO, json=False) as out:
        get_logger().info("command", type="Probe", outcome="ok")
    text = out.getvalue()
    assert "command" in text
    assert "type=Probe" in text
    assert not text.startswith("{")


def test_the_log_level_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LEDGER_LOG_LEVEL=WARNING`` silences the per-command lines of the CLI."""
    monkeypatch.setenv("LEDGER_LOG_LEVEL", "WARNING")
    with cli_stderr(json=True) as out:
        get_logger().info("command", type="Probe", outcome="ok")
        get_logger().warning("something", detail=1)
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["something"]


def test_a_bad_log_level_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown level name is an error that names the variable, not a silent default."""
    monkeypatch.setenv("LEDGER_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="LEDGER_LOG_LEVEL"):
        configure_cli_logging(json=True)


def test_opening_a_ledger_configures_no_logging(clock: ManualClock) -> None:
    """The library adds no handler, sets no level and leaves structlog unconfigured."""
    before = (
        list(logging.getLogger().handlers),
        list(logging.getLogger("ledger").handlers),
        logging.getLogger("ledger").level,
        structlog.is_configured(),
    )
    with network_ledger(clock, cti_stamps=1) as ledger:
        ledger.execute(consume())
    after = (
        list(logging.getLogger().handlers),
        list(logging.getLogger("ledger").handlers),
        logging.getLogger("ledger").level,
        structlog.is_configured(),
    )
    assert after == before
    assert before[3] is False


def test_a_host_routes_the_lines_with_standard_logging(lg: Ledger) -> None:
    """A host's handler on ``ledger`` receives a readable message and the fields as a dict."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("ledger")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        lg.execute(consume())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    (record,) = records
    assert record.getMessage().startswith("command type=ConsumeStamp outcome=ok")
    assert record.ledger["type"] == "ConsumeStamp"  # type: ignore[attr-defined]


def _reset_cli_logging() -> None:
    logger = logging.getLogger("ledger")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
