"""Structured logs: one line per command; JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec
import structlog

_configured = False


def _fallback(value: Any) -> Any:
    # What structlog's own JSON fallback does: a ``__structlog__`` rendering, else ``repr``.
    render = getattr(value, "__structlog__", None)
    return render() if callable(render) else repr(value)


_JSON_ENCODER = msgspec.json.Encoder(enc_hook=_fallback)


def render_json(event_dict: Any, **_: Any) -> str:
    """One JSON log line; msgspec, because the hot path logs one line per command."""
    return _JSON_ENCODER.encode(event_dict).decode()


class _StderrLogger:
    """Writes each line to ``sys.stderr`` as it is at that moment.

    A stream bound once at configuration would outlive a redirected or captured ``sys.stderr``
    and then write into a closed file.
    """

    def msg(self, message: str) -> None:
        """Writes one line (``sys.stderr`` is line-buffered: no flush needed)."""
        sys.stderr.write(message + "\n")

    info = debug = warning = error = critical = exception = msg


def _stderr_logger_factory(*_: Any) -> _StderrLogger:
    return _StderrLogger()


class _IsoTimestamp:
    """Adds ``timestamp`` as ISO 8601 UTC with microseconds, like structlog's ``TimeStamper``.

    The date and time of day are formatted once per second and reused: on the hot path this
    processor runs once per command, and formatting a datetime each time cost a third of a line.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event_dict: Any) -> Any:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def configure_logging(level: int = logging.INFO, *, force: bool = False) -> None:
    """Sets up structlog once: console rendering on a terminal, JSON lines otherwise."""
    global _configured  # noqa: PLW0603  (process-wide logging setup, done once)
    if _configured and not force:
        return
    renderer: structlog.typing.Processor
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=render_json)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _IsoTimestamp(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=True,
    )
    _configured = True
