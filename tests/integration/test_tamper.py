"""Tamper evidence: rows edited, deleted or inserted with SQL are caught by ``verify``.

Each test builds real books through the ledger, closes it, changes the events table directly
with SQL (as an intruder with database access would), reopens and verifies.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from ledger.api import Ledger
from ledger.audit import VerifyReport
from ledger.clock import ManualClock
from tests.support import CTI, consume, network_ledger

UUIDS = [f"6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F{n:02d}" for n in range(10)]


class RawDb:
    """Direct SQL on a ledger's database, SQLite or PostgreSQL (``?`` marks on both)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgres")
        self.events = "ledger_events" if self.postgres else "stored_events"
        self.id_column = "notification_id" if self.postgres else "rowid"

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self.postgres:
            with psycopg.connect(self.url) as conn, conn.cursor() as cursor:
                yield cursor
        else:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                with conn:
                    yield conn.cursor()
            finally:
                conn.close()

    def _sql(self, sql: str) -> str:
        sql = sql.format(events=self.events, id=self.id_column)
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs one statement; returns the rows it changed."""
        with self._cursor() as cursor:
            cursor.execute(self._sql(sql), params)
            return int(cursor.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Runs one statement per parameter row, in one transaction."""
        with self._cursor() as cursor:
            cursor.executemany(self._sql(sql), rows)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query."""
        with self._cursor() as cursor:
            cursor.execute(self._sql(sql), params)
            return [tuple(row) for row in cursor.fetchall()]

    def event(self, originator_id: str, version: int) -> tuple[int, str, bytes]:
        """``(notification id, topic, state)`` of one stored event."""
        ((position, topic, state),) = self.rows(
            "SELECT {id}, topic, state FROM {events}"
            " WHERE originator_id = ? AND originator_version = ?",
            (originator_id, version),
        )
        return int(position), str(topic), bytes(state)

    def set_state(self, originator_id: str, version: int, state: bytes) -> None:
        """Overwrites the stored state of one event."""
        self.execute(
            "UPDATE {events} SET state = ? WHERE originator_id = ? AND originator_version = ?",
            (state, originator_id, version),
        )

    def edit(self, originator_id: str, version: int, **fields: Any) -> int:
        """Changes ``fields`` in one event's stored JSON; the event's notification id."""
        position, _, state = self.event(originator_id, version)
        edited = {**json.loads(state), **fields}
        self.set_state(originator_id, version, json.dumps(edited).encode())
        return position

    def insert_copy(self, originator_id: str, version: int, new: int, **fields: Any) -> int:
        """Inserts a copy of one event as version ``new`` of its stream, ``fields`` changed; the
        copy's notification id."""
        _, topic, state = self.event(originator_id, version)
        forged = {**json.loads(state), "originator_version": new, **fields}
        self.execute(
            "INSERT INTO {events} (originator_id, originator_version, topic, state)"
            " VALUES (?,?,?,?)",
            (originator_id, new, topic, json.dumps(forged).encode()),
        )
        return self.event(originator_id, new)[0]

    def delete(self, originator_id: str, version: int) -> int:
        """Deletes one event (it must be there); its notification id."""
        position, _, _ = self.event(originator_id, version)
        deleted = self.execute(
            "DELETE FROM {events} WHERE originator_id = ? AND originator_version = ?",
            (originator_id, version),
        )
        assert deleted == 1
        return position

    def link_of(self, position: int) -> int:
        """The ``first_id`` of the chain link that covers ``position``."""
        ((first,),) = self.rows(
            "SELECT first_id FROM ledger_chain WHERE first_id <= ? AND last_id >= ?",
            (position, position),
        )
        return int(first)


def build_books(url: str, clock: ManualClock) -> None:
    """A network, 10 stamps on C1's CTI and three consumptions, one transaction each."""
    with network_ledger(clock, url=url, projections="off", cti_stamps=10) as lg:
        for cfdi_uuid in UUIDS[:3]:
            lg.execute(consume(cfdi_uuid=cfdi_uuid))


def verified(url: str) -> VerifyReport:
    """``verify`` on a freshly opened ledger."""
    with Ledger.open(url, projections="off") as lg:
        return lg.verify()


def checks(report: VerifyReport) -> set[str]:
    """The names of the checks that found breaches."""
    return set(report.breach_counts)


def test_untouched_books_verify(store_url: str, clock: ManualClock) -> None:
    """Books written only through the ledger verify without a breach."""
    build_books(store_url, clock)
    report = verified(store_url)
    assert report.ok, report.breaches
    assert report.events == 17
    assert report.totals == {"stamps": 0}
    ((head,),) = RawDb(store_url).rows("SELECT hash FROM ledger_chain ORDER BY last_id DESC")[:1]
    assert report.head_hash == bytes(head).hex()


def test_edited_state_breaks_its_chain_link(store_url: str, clock: ManualClock) -> None:
    """An event whose stored JSON was edited is reported at the link that covers it."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position = db.edit(CTI, 2, quantity=1000)  # StampsCredited: 10 stamps
    report = verified(store_url)
    mismatches = [b for b in report.breaches if b.check == "chain_mismatch"]
    assert [b.position for b in mismatches] == [db.link_of(position)]


def test_edited_quantity_unbalances_its_transfer(store_url: str, clock: ManualClock) -> None:
    """An edited quantity leaves the transfer's two sides unequal and the books unbalanced."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position = db.edit(CTI, 2, quantity=1000)
    report = verified(store_url)
    sides = [b for b in report.breaches if b.check == "transfer_sides"]
    assert len(sides) == 1
    assert "T-setup" in sides[0].message
    assert sides[0].position < position  # the debit leg, recorded first in the same transaction
    assert [b.message for b in report.breaches if b.check == "zero_sum"] == [
        "the stamps of all holders sum to 990, not to 0"
    ]


def test_garbled_state_is_reported_undecodable(store_url: str, clock: ManualClock) -> None:
    """A stored state that is no longer an event is a decode breach at its position."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position, _, _ = db.event(CTI, 3)
    db.set_state(CTI, 3, b"{not json")
    report = verified(store_url)
    decode = [b for b in report.breaches if b.check == "decode"]
    assert [(b.position, b.aggregate_id) for b in decode] == [(position, CTI)]
    assert "chain_mismatch" in checks(report)


def test_deleted_event_breaks_its_link_and_leaves_a_version_gap(
    store_url: str, clock: ManualClock
) -> None:
    """A consumption deleted from the middle of a stream: its link and the next version say so."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    next_position, _, _ = db.event(CTI, 4)
    position = db.delete(CTI, 3)
    report = verified(store_url)
    assert checks(report) == {"chain_mismatch", "version_gap"}
    (mismatch,) = [b for b in report.breaches if b.check == "chain_mismatch"]
    assert mismatch.position == db.link_of(position) == position
    (gap,) = [b for b in report.breaches if b.check == "version_gap"]
    assert (gap.position, gap.aggregate_id) == (next_position, CTI)


def test_deleted_newest_event_breaks_its_link(store_url: str, clock: ManualClock) -> None:
    """Deleting the newest event (no later version to show a gap) is still caught by its link."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position = db.delete(CTI, 5)
    report = verified(store_url)
    assert checks(report) == {"chain_mismatch"}
    assert [b.position for b in report.breaches] == [position]


def test_inserted_event_is_outside_every_link(store_url: str, clock: ManualClock) -> None:
    """A well-formed consumption inserted with SQL is not covered by any chain link."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    forged_position = db.insert_copy(CTI, 5, 6, cfdi_uuid=UUIDS[9])
    report = verified(store_url)
    assert checks(report) == {"chain_uncovered"}
    assert [(b.position, b.aggregate_id) for b in report.breaches] == [(forged_position, CTI)]


def test_inserted_duplicate_consumption_is_a_reused_key(store_url: str, clock: ManualClock) -> None:
    """A forged second consumption of an already stamped CFDI is also a reused key."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    first_position, _, _ = db.event(CTI, 3)
    forged_position = db.insert_copy(CTI, 3, 6)
    report = verified(store_url)
    (reused,) = [b for b in report.breaches if b.check == "key_reused"]
    assert reused.position == forged_position
    assert f"first at position {first_position}" in reused.message


def test_truncated_history_misses_the_recorded_head(sqlite_url: str, clock: ManualClock) -> None:
    """Deleting the newest transaction with its link passes the chain, not a recorded head."""
    build_books(sqlite_url, clock)
    recorded_head = verified(sqlite_url).head_hash
    assert recorded_head is not None
    db = RawDb(sqlite_url)
    position, _, _ = db.event(CTI, 5)
    db.execute("DELETE FROM {events} WHERE {id} = ?", (position,))
    db.execute("DELETE FROM ledger_chain WHERE last_id = ?", (position,))
    assert verified(sqlite_url).ok  # the documented limit of a chain kept inside the database
    with Ledger.open(sqlite_url, projections="off") as lg:
        report = lg.verify(expected_head=recorded_head)
    assert checks(report) == {"anchor"}


def test_deleted_chain_link_leaves_its_events_uncovered(store_url: str, clock: ManualClock) -> None:
    """Deleting a link row itself leaves its events outside the chain."""
    build_books(store_url, clock)
    db = RawDb(store_url)
    position, _, _ = db.event(CTI, 4)
    db.execute("DELETE FROM ledger_chain WHERE first_id = ?", (position,))
    report = verified(store_url)
    uncovered = [b for b in report.breaches if b.check == "chain_uncovered"]
    assert [b.position for b in uncovered] == [position]
    # The next link was computed from the deleted one, so it no longer follows from its predecessor.
    assert [b.position for b in report.breaches if b.check == "chain_mismatch"] == [position + 1]


@pytest.mark.parametrize("version", [1, 2])
def test_every_edited_event_is_caught(sqlite_url: str, clock: ManualClock, version: int) -> None:
    """Whitespace-only edits (same meaning, other bytes) are caught as well."""
    build_books(sqlite_url, clock)
    db = RawDb(sqlite_url)
    _, _, state = db.event(CTI, version)
    db.set_state(CTI, version, state + b" ")
    assert checks(verified(sqlite_url)) == {"chain_mismatch"}
