"""Logs by the library convention: records on the ``ledger`` logger; the host decides the rest.

The library never configures logging (no handlers, no levels, no global structlog set-up). Each
line is a standard ``logging.LogRecord`` on ``ledger`` (or a child such as
``ledger.projections``) whose message reads ``command type=ConsumeStamp outcome=ok ...`` and
whose ``ledger`` attribute holds the same fields as a dict, for structured handlers. A host that
configures nothing sees nothing below WARNING (Python's default); to route or silence the lines:

    logging.getLogger("ledger").setLevel(logging.INFO)       # one line per command
    logging.getLogger("ledger").addHandler(my_handler)       # or let them propagate to root

The command line (``adapters/cli/main.py``) is an application, so it configures output itself with
``configure_cli_logging``: JSON lines when stderr is not a terminal, readable on one, level from
``LEDGER_LOG_LEVEL``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import structlog

LOGGER_NAME = "ledger"
FIELDS_ATTRIBUTE = "ledger"
"""The attribute of each record that holds its fields (``event`` included) as a dict."""


class _Line:
    """A record's message, rendered as ``event key=value ...`` only if a handler asks for it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        items = " ".join(f"{k}={v}" for k, v in self.fields.items() if k != "event")
        return f"{self.fields['event']} {items}" if items else str(self.fields["event"])


class Logger:
    """A structured logger over one standard logger: ``log.info("event", key=value, ...)``."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def is_enabled_for(self, level: int) -> bool:
        """Whether a line at ``level`` would reach any handler (cheap: logging caches it)."""
        return self._logger.isEnabledFor(level)

    def _log(self, level: int, event: str, fields: dict[str, Any], *, exc_info: bool) -> None:
        if self._logger.isEnabledFor(level):
            fields = {"event": event, **fields}
            self._logger.log(
                level,
                _Line(fields),
                exc_info=exc_info,
                extra={FIELDS_ATTRIBUTE: fields},
                stacklevel=3,
            )

    def debug(self, event: str, **fields: Any) -> None:
        """A DEBUG line."""
        self._log(logging.DEBUG, event, fields, exc_info=False)

    def info(self, event: str, **fields: Any) -> None:
        """An INFO line."""
        self._log(logging.INFO, event, fields, exc_info=False)

    def warning(self, event: str, **fields: Any) -> None:
        """A WARNING line."""
        self._log(logging.WARNING, event, fields, exc_info=False)

    def error(self, event: str, **fields: Any) -> None:
        """An ERROR line."""
        self._log(logging.ERROR, event, fields, exc_info=False)

    def exception(self, event: str, **fields: Any) -> None:
        """An ERROR line with the traceback of the exception being handled."""
        self._log(logging.ERROR, event, fields, exc_info=True)


def get_logger(name: str = LOGGER_NAME) -> Logger:
    """The library's logger ``name`` (``ledger`` or a child of it)."""
    return Logger(name)


# What the command line configures ----------------------------------------------------------


def _fallback(value: Any) -> Any:
    # What structlog's own JSON fallback does: a ``__structlog__`` rendering, else ``repr``.
    render = getattr(value, "__structlog__", None)
    return render() if callable(render) else repr(value)


_JSON_ENCODER = msgspec.json.Encoder(enc_hook=_fallback)


def render_json(event_dict: Any, **_: Any) -> str:
    """One JSON log line; msgspec, because the hot path logs one line per command."""
    return _JSON_ENCODER.encode(event_dict).decode()


class _IsoTimestamp:
    """ISO 8601 UTC with microseconds; date and time of day formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1e6):06d}Z"


class StructuredFormatter(logging.Formatter):
    """Renders a record as JSON (``json=True``) or as structlog's readable console line."""

    def __init__(self, *, json: bool) -> None:
        super().__init__()
        self.json = json
        self._timestamp = _IsoTimestamp()
        self._console = None if json else structlog.dev.ConsoleRenderer(colors=False)

    def format(self, record: logging.LogRecord) -> str:
        """The record's fields with its timestamp, level and logger."""
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        event_dict: dict[str, Any] = {
            "timestamp": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(fields, dict):
            event_dict.update(fields)
        else:
            event_dict["event"] = record.getMessage()
        if record.exc_info:
            event_dict["exception"] = self.formatException(record.exc_info)
        if self._console is not None:
            return str(self._console(None, event_dict["level"], event_dict))
        return render_json(event_dict)


class _StderrOfTheMoment(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a line is written (it may be redirected later)."""

    def emit(self, record: logging.LogRecord) -> None:
        """One formatted line (``sys.stderr`` is line-buffered: no flush needed)."""
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def level_from_env(default: int = logging.INFO) -> int:
    """``$LEDGER_LOG_LEVEL`` (a name such as ``WARNING`` or a number), else ``default``."""
    raw = os.environ.get("LEDGER_LOG_LEVEL", "").strip()
    if not raw:
        return default
    if raw.isdigit():
        return int(raw)
    level = logging.getLevelName(raw.upper())
    if not isinstance(level, int):
        raise ValueError(  # noqa: TRY004  (a bad setting's value, not a wrong type)
            f"LEDGER_LOG_LEVEL={raw!r}: expected DEBUG, INFO, WARNING or ERROR"
        )
    return level


_CLI_HANDLER: logging.Handler | None = None


def configure_cli_logging(level: int | None = None, *, json: bool | None = None) -> None:
    """For the command line only: one handler on ``ledger`` writing to stderr.

    JSON when stderr is not a terminal, readable on one; the level is ``level``, else
    ``$LEDGER_LOG_LEVEL``, else INFO. Calling it again replaces the earlier set-up.
    """
    global _CLI_HANDLER  # noqa: PLW0603  (the CLI process's one handler)
    logger = logging.getLogger(LOGGER_NAME)
    if _CLI_HANDLER is not None:
        logger.removeHandler(_CLI_HANDLER)
    handler = _StderrOfTheMoment()
    handler.setFormatter(
        StructuredFormatter(json=not sys.stderr.isatty() if json is None else json)
    )
    logger.addHandler(handler)
    logger.setLevel(level_from_env() if level is None else level)
    logger.propagate = False
    _CLI_HANDLER = handler


@contextmanager
def capture_logs(level: int = logging.DEBUG) -> Iterator[list[dict[str, Any]]]:
    """Collects the library's lines as dicts (``event``, ``log_level`` and fields), for tests."""
    captured: list[dict[str, Any]] = []

    class _Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fields = getattr(record, FIELDS_ATTRIBUTE, None) or {"event": record.getMessage()}
            captured.append({**fields, "log_level": record.levelname.lower()})

    logger = logging.getLogger(LOGGER_NAME)
    handler = _Capture(level)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
