"""What both recorders share with the store above them.

``RecordRows`` is what a locked transaction yields to record in it; ``OutcomeUnknown`` is a write
whose connection broke after it was sent; ``OvertakenRows`` a guarded write that found its
aggregates moved on or its keys used; ``raising`` is a write that failed before it was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import PersistenceError

from ledger.chain import StoredRow
from ledger.write.ports import KeyRecord, Sent

RecordRows = Callable[[Sequence[StoredRow], Sequence[KeyRecord]], Sequence[int]]
"""Records stored rows and keys in a locked transaction and commits it."""


class OutcomeUnknown(PersistenceError):
    """Raised by a recorder when its connection broke after a write was sent to the server."""


class OvertakenRows(Exception):
    """Raised by a recorder's guarded write that recorded nothing because others wrote first:
    the rows recorded after the versions it was decided on, and its keys' stored rows."""

    def __init__(self, rows: Sequence[StoredRow], keys: dict[str, KeyRecord]) -> None:
        super().__init__(f"overtaken by {len(rows)} events and {len(keys)} used keys")
        self.rows = rows
        self.keys = keys


def raising(exc: BaseException) -> Sent:
    """A write that failed before it was sent: its answer raises ``exc``."""

    def answer() -> Sequence[int]:
        raise exc

    return Sent(answer)


@dataclass
class RowsTurn:
    """What a recorder's wait at a hot aggregate gave (``Store.hot``), as stored rows."""

    answers: bytes | None = None
    """Another writer's answers to the batch: it is done."""
    rows: list[StoredRow] = field(default_factory=list)
    """Otherwise it is this writer's turn: the rows recorded after the version it knew,"""
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    """the rows of its keys that were used,"""
    posted: list[tuple[int, bytes]] = field(default_factory=list)
    """and the batches other writers posted for the aggregate meanwhile."""
