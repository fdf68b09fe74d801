"""What both recorders share with the store above them.

``RecordRows`` is what a locked transaction yields to record in it; ``OutcomeUnknown`` is a write
whose connection broke after it was sent; ``raising`` is a write that failed before it was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eventsourcing.persistence import PersistenceError

from ledger.chain import StoredRow
from ledger.write.ports import KeyRecord, Sent

RecordRows = Callable[[Sequence[StoredRow], Sequence[KeyRecord]], Sequence[int]]
"""Records stored rows and keys in a locked transaction and commits it."""


class OutcomeUnknown(PersistenceError):
    """Raised by a recorder when its connection broke after a write was sent to the server."""


def raising(exc: BaseException) -> Sent:
    """A write that failed before it was sent: its answer raises ``exc``."""

    def answer() -> Sequence[int]:
        raise exc

    return Sent(answer)
