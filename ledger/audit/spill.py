"""Set membership over the whole history in bounded memory: a throwaway SQLite file on disk.

``verify`` must know whether an idempotency key was used twice and whether every movement's legs
meet, over millions of events, without holding per-event data in memory. It appends compact rows
here (a 64-bit hash of each key and its position; the rare movement legs left unmatched at the end
of their transaction; sales and invoiced sales) and lets SQLite's external sorter group them at
the end. SQLite's own memory is capped by ``CACHE_KIB``.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ledger.closing import Closing

CACHE_KIB = 4 * 1024
"""Page cache (and so sort memory) of the spill database, in KiB."""

_SCHEMA = (
    "CREATE TABLE keys (hash INTEGER NOT NULL, position INTEGER NOT NULL)",
    "CREATE TABLE legs (ref TEXT, unit TEXT, low TEXT, high TEXT, delta INTEGER,"
    " debit INTEGER, credit INTEGER, position INTEGER, holder TEXT)",
    "CREATE TABLE sales (sale_id TEXT, seller TEXT, position INTEGER)",
    "CREATE TABLE invoiced (sale_id TEXT, seller TEXT, position INTEGER)",
    "CREATE TABLE holds (hold_id TEXT, opened INTEGER, position INTEGER, holder TEXT)",
)

Leg = tuple[str, str, str, str, int, int, int, int, str]
"""``(ref, unit, low, high, delta, debit, credit, position, holder)``; low/high name the pair."""


class Spill(Closing):
    """A temporary SQLite file that takes rows in batches and answers grouped questions."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="ledger-verify-", dir=directory)
        self.db = sqlite3.connect(Path(self._dir.name) / "spill.db", isolation_level=None)
        for pragma in (
            "journal_mode=OFF",
            "synchronous=OFF",
            "locking_mode=EXCLUSIVE",
            "temp_store=FILE",
            f"cache_size=-{CACHE_KIB}",
        ):
            self.db.execute(f"PRAGMA {pragma}")
        for statement in _SCHEMA:
            self.db.execute(statement)
        self.keys: list[tuple[int, int]] = []
        self.legs: list[Leg] = []
        self.sales: list[tuple[str, str, int]] = []
        self.invoiced: list[tuple[str, str, int]] = []
        self.holds: list[tuple[str, int, int, str]] = []
        self._buffers: tuple[tuple[str, list[Any]], ...] = (
            ("keys", self.keys),
            ("legs", self.legs),
            ("sales", self.sales),
            ("invoiced", self.invoiced),
            ("holds", self.holds),
        )
        """Each table of ``_SCHEMA`` and the list buffering its rows."""

    def flush(self) -> None:
        """Writes the buffered rows (called once per page, so buffers stay page-sized)."""
        db = self.db
        db.execute("BEGIN")
        for table, rows in self._buffers:
            if rows:
                placeholders = ",".join("?" * len(rows[0]))
                db.executemany(f"INSERT INTO {table} VALUES ({placeholders})", rows)  # noqa: S608
                rows.clear()
        db.execute("COMMIT")

    def repeated_keys(self) -> Iterator[list[int]]:
        """Positions of each key hash seen more than once (candidates: hashes can collide)."""
        self.flush()
        rows = self.db.execute(
            "SELECT hash, position FROM keys WHERE hash IN "
            "(SELECT hash FROM keys GROUP BY hash HAVING count(*) > 1) ORDER BY hash, position"
        )
        current: int | None = None
        positions: list[int] = []
        for key_hash, position in rows:
            if key_hash != current and positions:
                yield positions
                positions = []
            current = key_hash
            positions.append(int(position))
        if positions:
            yield positions

    def unmatched_legs(self) -> Iterator[tuple[str, str, str, str, int, bool, bool, int, str]]:
        """Movements whose legs, over the whole history, do not cancel or lack a side."""
        self.flush()
        rows = self.db.execute(
            "SELECT ref, unit, low, high, sum(delta), max(debit), max(credit), min(position),"
            " min(holder) FROM legs GROUP BY ref, unit, low, high"
            " HAVING sum(delta) != 0 OR max(debit) = 0 OR max(credit) = 0 ORDER BY min(position)"
        )
        for ref, unit, low, high, total, debit, credit, position, holder in rows:
            yield (
                ref,
                unit,
                low,
                high,
                int(total),
                bool(debit),
                bool(credit),
                int(position),
                holder,
            )

    def invoices_of_unknown_sales(self) -> Iterator[tuple[str, str, int, str | None]]:
        """``(sale_id, invoicing seller, position, actual seller or None)`` of bad invoices."""
        self.flush()
        self.db.execute("CREATE INDEX IF NOT EXISTS sales_by_id ON sales (sale_id)")
        rows = self.db.execute(
            "SELECT i.sale_id, i.seller, i.position, s.seller FROM invoiced i"
            " LEFT JOIN sales s ON s.sale_id = i.sale_id"
            " WHERE s.sale_id IS NULL OR s.seller != i.seller ORDER BY i.position"
        )
        for sale_id, seller, position, actual in rows:
            yield sale_id, seller, int(position), actual

    def holds_closed_unopened(self) -> Iterator[tuple[str, int, str]]:
        """``(hold_id, position, holder)`` of holds closed without having been opened first."""
        self.flush()
        rows = self.db.execute(
            "SELECT hold_id, min(position), min(holder) FROM holds GROUP BY hold_id"
            " HAVING min(CASE WHEN opened = 1 THEN position END) IS NULL"
            " OR min(CASE WHEN opened = 1 THEN position END)"
            " > min(CASE WHEN opened = 0 THEN position END) ORDER BY min(position)"
        )
        for hold_id, position, holder in rows:
            yield hold_id, int(position), holder

    def close(self) -> None:
        """Deletes the spill file."""
        self.db.close()
        self._dir.cleanup()
