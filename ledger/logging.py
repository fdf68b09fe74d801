"""Structured logs: one line per command; JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys
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
        """Writes one line."""
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    info = debug = warning = error = critical = exception = msg


def _stderr_logger_factory(*_: Any) -> _StderrLogger:
    return _StderrLogger()


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
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=True,
    )
    _configured = True
