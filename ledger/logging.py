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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True
