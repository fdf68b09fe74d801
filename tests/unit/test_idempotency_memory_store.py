"""The in-memory store keeps the engine's contract: all-or-nothing writes, keys taken once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.storage.memory import MemoryStore
from ledger.aggregates.master_account import MasterAccount
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.write.ports import KeyRecord, WriteConflict
from tests.support import CTI, build_network, consume

AT = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)


def opened(master_id: str = "M") -> MasterAccount:
    """A new master account with its pending Opened event."""
    return MasterAccount.open(master_id, "Plataforma", "SAT970701NN3", AT)


def test_notification_ids_start_at_one_and_increase() -> None:
    """Each recorded event gets the next notification id."""
    store = MemoryStore()
    assert store.record(opened("M1").collect_events(), []) == [1]
    assert store.record(opened("M2").collect_events() + opened("M3").collect_events(), []) == [
        2,
        3,
    ]


def test_a_taken_version_is_a_write_conflict_that_records_nothing() -> None:
    """Writing version 1 of a stream twice fails, and the failed write leaves nothing."""
    store = MemoryStore()
    store.record(opened().collect_events(), [])
    other = opened("M9").collect_events()
    with pytest.raises(WriteConflict):
        store.record([*other, *opened().collect_events()], [KeyRecord("k", "f", b"{}")])
    assert len(store.stored_events()) == 1
    assert store.select_keys(["k"]) == {}
    assert store.load("M9") is None


def test_a_taken_key_is_a_write_conflict_that_records_nothing() -> None:
    """A used key fails the write of every event that came with it."""
    store = MemoryStore()
    store.record([], [KeyRecord("cfdi:X", "f", b"{}")])
    with pytest.raises(WriteConflict):
        store.record(opened().collect_events(), [KeyRecord("cfdi:X", "g", b"{}")])
    assert store.stored_events() == []
    assert store.select_keys(["cfdi:X"])["cfdi:X"].fingerprint == "f"


def test_a_key_twice_in_one_write_is_a_write_conflict() -> None:
    """Keys are unique within a write too."""
    store = MemoryStore()
    with pytest.raises(WriteConflict):
        store.record([], [KeyRecord("k", "f", b"{}"), KeyRecord("k", "f", b"{}")])
    assert store.key_count() == 0


def test_a_skipped_version_is_a_write_conflict() -> None:
    """A stream's versions have no gaps."""
    store = MemoryStore()
    gap = MasterAccount.PackageRetired(
        originator_id="M", originator_version=3, timestamp=AT, package_id="P1"
    )
    with pytest.raises(WriteConflict):
        store.record([gap], [])
    assert store.stored_events() == []


def test_events_are_stored_as_codec_bytes() -> None:
    """What is kept is the JSON the SQL stores would keep, under the stable topic."""
    store = MemoryStore()
    store.record(opened().collect_events(), [])
    (row,) = store.stored_events()
    assert (row.topic, row.state[:1]) == ("MasterAccount.Opened", b"{")
    assert b'"name":"Plataforma"' in row.state


def test_a_snapshot_and_later_events_rebuild_the_aggregate(clock: ManualClock) -> None:
    """With snapshots every few events, a CTI loads to the same state as from its whole history."""
    with Ledger.open("memory://", clock=clock, password_cost="fast") as lg:
        lg.engine.snapshot_interval = 4
        build_network(lg, cti_stamps=20)
        for _ in range(11):
            lg.execute(consume())
        assert isinstance(lg.store, MemoryStore)
        assert lg.store.snapshot_versions()[CTI] == 12
        replayed = None
        for event in lg.store.events():
            if event.originator_id == CTI:
                replayed = event.mutate(replayed)
        loaded = lg.store.load(CTI)
        assert loaded is not None
        assert replayed is not None
        assert loaded.snapshot_state() == replayed.snapshot_state()
        assert loaded.version == 13
