"""The one structured log line per command (DESIGN §7)."""

from __future__ import annotations

import logging
import time

from ledger.errors import Rejected
from ledger.logging import LOGGER_NAME, get_logger
from ledger.write.preparation import Prepared, Result

log = get_logger()
_INFO_ENABLED = logging.getLogger(LOGGER_NAME).isEnabledFor
"""Whether an INFO line reaches a handler (the standard logger's own cached check, called
straight: once per group, and a group is one command for a caller alone)."""


def log_commands(batch: list[Prepared], results: list[Result], started: float) -> None:
    """One line per command, with its type, outcome, code, actor and duration."""
    # One line per command (DESIGN §7); nothing is built when no handler wants INFO.
    if not _INFO_ENABLED(logging.INFO):
        return
    info = log.info
    duration_ms = round((time.perf_counter() - started) * 1000 / max(len(batch), 1), 3)
    for p, result in zip(batch, results, strict=True):
        actor = p.command.actor if p.command is not None else None
        if isinstance(result, Rejected):
            info(
                "command",
                type=p.raw_type,
                outcome="rejected",
                code=result.code,
                actor=actor,
                duration_ms=duration_ms,
            )
        else:
            outcome = "replayed" if result.replayed else "ok"
            info(
                "command",
                type=p.raw_type,
                outcome=outcome,
                code=None,
                actor=actor,
                duration_ms=duration_ms,
            )
            if result.warnings and not result.replayed:
                # What succeeded with a caveat (an automatic top-up that failed, an RFC
                # check digit) gets its own line, so the command lines keep one shape.
                log.warning(
                    "command_warning", type=p.raw_type, actor=actor, warnings=result.warnings
                )
