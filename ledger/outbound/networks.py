"""The master account (network) of every aggregate, for subjects, routing keys and exports.

An aggregate's network never changes: it is decided by its first event (``master_id`` when the
event records it, else the network of its parent, distributor or client). ``Networks`` learns
it from those events as a consumer reads the log and keeps it in ``outbound_networks`` in the
views' database, written before the consumer's position moves past the event. So any consumer
at position P finds the network of every aggregate created up to P, whoever wrote the row, and
rows written by a consumer that crashed before moving its position are merely written again.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.aggregates.master_account import MasterAccount
from ledger.domain import Created, Event
from ledger.outbound.message import NO_NETWORK
from ledger.projections.base import Table, ViewDatabase, chunks

NETWORKS = Table(
    "outbound_networks",
    (("aggregate_id", "text"), ("master_id", "text")),
    key=("aggregate_id",),
)
"""One row per aggregate: the master account whose network it belongs to."""

PARENT_FIELDS = ("parent_id", "distributor_id", "client_id")
"""Fields of a created event that name the account it was created under, most direct first."""
CACHE_MAX = 200_000
"""Bound on the networks kept in memory (the table holds them all)."""
LOOKUP_CHUNK = 500
"""Ids looked up per query."""


class Networks:
    """Finds the network of each event's aggregate, page by page."""

    def __init__(self, database: ViewDatabase, *, cache_max: int = CACHE_MAX) -> None:
        self.database = database
        self.cache_max = cache_max
        self._known: dict[str, str] = {}
        self._ready = False

    def setup(self) -> None:
        """Creates the table if it does not exist (done by the first ``masters`` otherwise)."""
        if not self._ready:
            self.database.create([NETWORKS])
            self._ready = True

    def masters(self, events: Sequence[Event]) -> list[str]:
        """The master account of each event's aggregate, in order (``NO_NETWORK`` for none).

        Networks first seen in ``events`` are written to the table before this returns.
        """
        self.setup()
        if len(self._known) > self.cache_max:
            self._known.clear()
        known = self._known
        wanted = {e.originator_id for e in events if not isinstance(e, Created)}
        for event in events:
            if isinstance(event, Created) and not getattr(event, "master_id", ""):
                wanted.update(
                    str(getattr(event, name))
                    for name in PARENT_FIELDS
                    if getattr(event, name, None)
                )
        self._load(wanted - known.keys())
        learnt: dict[str, str] = {}
        found: list[str] = []
        for event in events:
            if isinstance(event, Created):
                master = _master_of_created(event, known)
                if known.get(event.originator_id) != master:
                    learnt[event.originator_id] = master
                known[event.originator_id] = master
            else:
                master = known.get(event.originator_id, NO_NETWORK)
            found.append(master)
        if learnt:
            with self.database.write() as cursor:
                cursor.insert(NETWORKS, list(learnt.items()), "DO NOTHING")
        return found

    def _load(self, ids: set[str]) -> None:
        if not ids:
            return
        with self.database.read() as cursor:
            for part in chunks(sorted(ids), min(LOOKUP_CHUNK, cursor.in_list_max)):
                condition, params = cursor.any_of(part)
                cursor.execute(
                    f"SELECT aggregate_id, master_id FROM outbound_networks"  # noqa: S608  (constant SQL; values bound)
                    f" WHERE aggregate_id {condition}",
                    params,
                )
                self._known.update((str(a), str(m)) for a, m in cursor.fetchall())


def _master_of_created(event: Created, known: dict[str, str]) -> str:
    """The network of an aggregate, from its first event."""
    if isinstance(event, MasterAccount.Opened):
        return event.originator_id
    recorded = getattr(event, "master_id", "")
    if recorded:
        return str(recorded)
    for name in PARENT_FIELDS:
        parent = getattr(event, name, None)
        if parent:
            return known.get(str(parent), NO_NETWORK)
    return NO_NETWORK
