"""Where the auditors' tools read: stored rows, chain links and streams, in bounded pages.

``AuditSource`` is the port: the little an audit needs from an event store. The stores implement
it in ``adapters/storage/audit.py`` (their ``audit_source()``); ``RowsSource`` holds rows in
memory, for tests and for checking an export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from eventsourcing.persistence import Mapper, Notification

from ledger.chain import GENESIS, events_digest, link
from ledger.domain import Event
from ledger.errors import IntegrityBreach


@dataclass(frozen=True, slots=True)
class Link:
    """One stored chain link: the transaction's rows ``first_id..last_id`` and its hash."""

    first_id: int
    last_id: int
    hash: bytes


class AuditSource(Protocol):
    """Bounded reads of the stored history (what ``verify`` and ``history`` need)."""

    decode: Callable[[Notification], Event]
    """Decodes a stored row (raises eventsourcing's ``MapperDeserialisationError``)."""
    chained: bool
    """Whether the store keeps a hash chain (``memory://`` does not)."""

    def notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Up to ``limit`` stored rows with notification id > ``after``, in id order."""

    def links(self, after: int, limit: int) -> Sequence[Link]:
        """Up to ``limit`` chain links with ``last_id`` > ``after``, in order."""

    def max_position(self) -> int:
        """The highest notification id (0 when empty)."""

    def chain_head(self) -> int:
        """The ``last_id`` of the newest chain link (0 when none)."""

    def stream(self, originator_id: str, after: int, limit: int) -> Sequence[Event]:
        """Up to ``limit`` decoded events of one stream with version > ``after``, in order."""


def undecodable(originator_id: str, exc: Exception) -> IntegrityBreach:
    """The error for a stored event that cannot be read: a wrong key or an edited row."""
    return IntegrityBreach(
        f"cannot decode the events of {originator_id!r} (wrong or missing LEDGER_CIPHER_KEY,"
        f" or an edited event; run `ledger verify`): {exc}"
    )


class RowsSource:
    """An ``AuditSource`` over rows held in memory (tests, exported histories)."""

    chained = True

    def __init__(self, rows: Iterable[Notification], links: Iterable[Link], mapper: Mapper[Any]):
        self.rows = sorted(rows, key=lambda row: row.id)
        self.link_rows = sorted(links, key=lambda item: item.last_id)
        self.decode = cast(Callable[[Notification], Event], mapper.to_domain_event)

    @classmethod
    def one_link_per_row(cls, rows: Sequence[Notification], mapper: Mapper[Any]) -> RowsSource:
        """Rows with one link per row, as if each were written in its own transaction."""
        links: list[Link] = []
        previous = GENESIS
        for row in sorted(rows, key=lambda item: item.id):
            previous = link(previous, events_digest([row]))
            links.append(Link(row.id, row.id, previous))
        return cls(rows, links, mapper)

    def notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Rows after ``after``."""
        return [row for row in self.rows if row.id > after][:limit]

    def links(self, after: int, limit: int) -> Sequence[Link]:
        """Links after ``after``."""
        return [item for item in self.link_rows if item.last_id > after][:limit]

    def max_position(self) -> int:
        """The highest row id."""
        return self.rows[-1].id if self.rows else 0

    def chain_head(self) -> int:
        """The newest link's ``last_id``."""
        return self.link_rows[-1].last_id if self.link_rows else 0

    def stream(self, originator_id: str, after: int, limit: int) -> Sequence[Event]:
        """One page of a stream, decoded."""
        rows = [r for r in self.rows if r.originator_id == originator_id]
        rows = [r for r in rows if r.originator_version > after][:limit]
        return [self.decode(row) for row in rows]
