"""The batched write path on real databases: one transaction per batch, one outcome per command.

Each test runs on a real SQLite file and on a real PostgreSQL database (``store_url``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import pytest

from adapters.storage.store import EventStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands.models import Command
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.write import group_commit
from ledger.write.decision import Tx
from ledger.write.ports import KeyRecord
from tests.support import (
    CTI,
    DISTRIBUTOR,
    MASTER,
    build_network,
    client_profile,
    consume,
    handler_registered,
)

CLIENT_2 = "C2"
CTI_2 = "C2-cti"


def _open(url: str, clock: ManualClock, *, create_tables: bool = True) -> Ledger:
    return Ledger.open(
        url, clock=clock, projections="off", create_tables=create_tables, password_cost="fast"
    )


@pytest.fixture
def lg(store_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A ledger with the standard network (CTI with 10 stamps) and a second client."""
    with _open(store_url, clock) as ledger:
        build_network(ledger, inventory=1000, cti_stamps=10)
        ledger.execute(
            {
                "type": "RegisterClient",
                "actor": DISTRIBUTOR,
                "client_id": CLIENT_2,
                "distributor_id": DISTRIBUTOR,
                "profile": client_profile(name="Ana", email="ana@example.com"),
            }
        )
        yield ledger


def _events(lg: Ledger, aggregate_id: str) -> list[Any]:
    assert isinstance(lg.store, EventStore)
    return list(lg.store.app.events.get(aggregate_id))


def _codes(results: list[Outcome | Rejected]) -> list[str]:
    return [r.code if isinstance(r, Rejected) else "ok" for r in results]


def _mass_transfer(batch_id: str, lines: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "type": "MassTransfer",
        "actor": DISTRIBUTOR,
        "batch_id": batch_id,
        "from_id": DISTRIBUTOR,
        "lines": [{"to_id": to_id, "quantity": q, "amount": "1.00"} for to_id, q in lines],
    }


def test_a_rejection_in_the_middle_keeps_the_others(lg: Ledger) -> None:
    """A rejected command in a batch leaves the commands around it recorded."""
    results = lg.execute_many([consume(), consume("NOBODY"), consume(), consume()])
    assert _codes(results) == ["ok", "unknown_account", "ok", "ok"]
    assert [r.balance_after for r in results if isinstance(r, Outcome)] == [9, 8, 7]
    assert lg.balance(CTI) == 7


def test_a_batch_of_rejections_records_nothing(lg: Ledger) -> None:
    """A batch whose every command is refused leaves the store as it was."""
    before = len(_events(lg, CTI))
    results = lg.execute_many([consume("NOBODY") for _ in range(4)])
    assert _codes(results) == ["unknown_account"] * 4
    assert len(_events(lg, CTI)) == before
    assert lg.balance(CTI) == 10


def test_a_rejected_command_in_a_batch_records_nothing(lg: Ledger) -> None:
    """Only the accepted commands' events are stored: the rejected one leaves no trace."""
    before = len(_events(lg, CTI))
    lg.execute_many([consume(), consume(CTI, issuer_rfc="X"), consume()])
    assert len(_events(lg, CTI)) == before + 2


def test_a_mass_transfer_is_one_outcome(lg: Ledger) -> None:
    """A mass transfer of two lines gives one outcome with a sale per line."""
    (result,) = lg.execute_many([_mass_transfer("B1", [(CTI, 3), (CTI_2, 4)])])
    assert isinstance(result, Outcome)
    assert result.sale_ids == ("B1:1", "B1:2")
    assert (lg.balance(CTI), lg.balance(CTI_2)) == (13, 4)


def test_a_mass_transfer_with_a_bad_line_moves_nothing(lg: Ledger) -> None:
    """A mass transfer whose second line is refused moves none of its lines; the batch goes on."""
    inventory = lg.balance(DISTRIBUTOR)
    results = lg.execute_many(
        [
            _mass_transfer("B1", [(CTI, 3)]),
            _mass_transfer("B2", [(CTI_2, 4), ("NOBODY-cti", 1)]),
            consume(),
        ]
    )
    assert _codes(results) == ["ok", "unknown_account", "ok"]
    assert (lg.balance(CTI), lg.balance(CTI_2)) == (12, 0)
    assert lg.balance(DISTRIBUTOR) == inventory - 3


def test_a_mass_transfer_beyond_the_inventory_moves_nothing(lg: Ledger) -> None:
    """A mass transfer whose total exceeds the pool is refused whole."""
    inventory = lg.balance(DISTRIBUTOR)
    results = lg.execute_many([_mass_transfer("B1", [(CTI, 1), (CTI_2, inventory)])])
    assert _codes(results) == ["insufficient_inventory"]
    assert (lg.balance(CTI), lg.balance(CTI_2), lg.balance(DISTRIBUTOR)) == (10, 0, inventory)


def test_a_duplicate_cfdi_in_one_batch_gets_the_first_outcome(lg: Ledger) -> None:
    """The same CFDI twice in one batch is stamped once; the second gets the first outcome."""
    command = consume()
    first, second = lg.execute_many([command, dict(command)])
    assert isinstance(first, Outcome)
    assert isinstance(second, Outcome)
    assert (first.replayed, second.replayed) == (False, True)
    assert second.balance_after == first.balance_after == 9
    assert lg.balance(CTI) == 9


def test_a_duplicate_cfdi_with_other_fields_in_one_batch_is_a_conflict(lg: Ledger) -> None:
    """The same CFDI with another issuer RFC in the same batch is ``idempotency_conflict``."""
    command = consume()
    results = lg.execute_many([command, {**command, "issuer_rfc": "MAB9307148T4"}])
    assert _codes(results) == ["ok", "idempotency_conflict"]
    assert lg.balance(CTI) == 9


def test_a_batch_that_loses_a_race_retries_and_is_right(
    lg: Ledger, store_url: str, clock: ManualClock
) -> None:
    """A batch decided on a stale cached CTI loses at commit, runs again and records all."""
    with _open(store_url, clock, create_tables=False) as other:
        other.execute(consume())  # caches the CTI in `other`
        lg.execute_many([consume(), consume()])  # `other`'s cached CTI is now stale
        results = other.execute_many([consume(), consume(), consume()])
    assert [r.balance_after for r in results if isinstance(r, Outcome)] == [6, 5, 4]
    assert lg.balance(CTI) == 4
    consumed = [e for e in _events(lg, CTI) if type(e).__name__ == "StampConsumed"]
    assert len(consumed) == 6


def test_a_cfdi_stamped_through_another_ledger_replays_in_a_batch(
    lg: Ledger, store_url: str, clock: ManualClock
) -> None:
    """A batch holding a CFDI another process already stamped gives it its first outcome."""
    stamped = consume()
    with _open(store_url, clock, create_tables=False) as other:
        first = other.execute(stamped)
    results = lg.execute_many([consume(), dict(stamped), consume(), consume()])
    assert [(r.replayed, r.balance_after) for r in results if isinstance(r, Outcome)] == [
        (False, 8),
        (True, first.balance_after),
        (False, 7),
        (False, 6),
    ]
    assert lg.balance(CTI) == 6


def test_a_stale_rejection_is_decided_again_on_fresh_state(
    lg: Ledger, store_url: str, clock: ManualClock
) -> None:
    """A CTI that looked empty in a stale cache but was topped up elsewhere consumes."""
    with _open(store_url, clock, create_tables=False) as other:
        other.execute_many([consume() for _ in range(10)])  # `other` caches an empty CTI
        lg.execute(
            {
                "type": "TransferStamps",
                "actor": DISTRIBUTOR,
                "transfer_id": "T-top-up",
                "from_id": DISTRIBUTOR,
                "to_id": CTI,
                "quantity": 2,
                "amount": "1.00",
            }
        )
        result = other.execute(consume())
    assert result.balance_after == 1


def _before_optimistic_writes(store: EventStore, action: Callable[[], object]) -> None:
    """Runs ``action`` before each optimistic write (sent at once, or pipelined)."""
    record, record_later = store.record, store.record_later

    def record_after(events: Any, keys: Any) -> Any:
        action()
        return record(events, keys)

    def record_later_after(events: Any, keys: Any) -> Any:
        action()
        return record_later(events, keys)

    store.record = record_after  # type: ignore[method-assign]
    store.record_later = record_later_after  # type: ignore[method-assign]


def test_a_lost_race_is_retried_under_the_lock_and_wins(
    lg: Ledger, store_url: str, clock: ManualClock
) -> None:
    """A write that loses its race is decided again under the lock, once, and is recorded."""
    late = consume()
    with _open(store_url, clock, create_tables=False) as other:
        other.execute(consume())  # `other` caches the CTI: 9 stamps
        store = other.store
        assert isinstance(store, EventStore)
        rivals: list[Outcome] = []
        # A real rival write to the same CTI lands just before the optimistic commit.
        _before_optimistic_writes(store, lambda: rivals.append(lg.execute(consume())))
        locked = store.locked
        entered: list[list[str]] = []

        def count_locked(aggregate_ids: Any) -> Any:
            entered.append(sorted(aggregate_ids))
            return locked(aggregate_ids)

        store.locked = count_locked  # type: ignore[method-assign]
        result = other.execute(late)
    assert [r.balance_after for r in rivals] == [8]
    assert entered == [[CTI]]
    assert result.balance_after == 7
    assert lg.balance(CTI) == 7
    assert isinstance(lg.store, EventStore)
    assert len(lg.store.select_keys([f"cfdi:{late['cfdi_uuid'].upper()}"])) == 1


def test_a_hot_cti_is_written_without_a_failed_optimistic_write_or_a_reload(
    lg: Ledger, store_url: str, clock: ManualClock
) -> None:
    """After a lost race the CTI is hot: its next writes are guarded (checked before anything
    is written, and caught up from the answer when overtaken) or, on PostgreSQL, posted for
    whoever holds its lock: no optimistic write that fails, no reload."""
    with _open(store_url, clock, create_tables=False) as other:
        other.execute(consume())  # `other` caches the CTI: 9 stamps
        lg.execute(consume())  # 8: `other`'s copy is stale
        assert other.execute(consume()).balance_after == 7  # lost once, then locked
        assert other.engine.is_hot(CTI)
        lg.execute(consume())  # 6: stale again
        store = other.store
        assert isinstance(store, EventStore)
        calls: list[str] = []
        load = store.load

        def counted_load(aggregate_id: str) -> Any:
            calls.append(f"load {aggregate_id}")
            return load(aggregate_id)

        _before_optimistic_writes(store, lambda: calls.append("optimistic write"))
        store.load = counted_load  # type: ignore[method-assign]
        assert other.execute(consume()).balance_after == 5
        assert other.balance(CTI) == 5
    assert calls == []
    assert lg.balance(CTI) == 5


class _ClaimThenReject(Command):
    """A command whose handler claims a fact and then rejects (a handler bug)."""

    type: Literal["_ClaimThenReject"] = "_ClaimThenReject"
    name: str
    cti_id: str = CTI


def _claim_then_reject(command: _ClaimThenReject, tx: Tx) -> Outcome:
    tx.claim(f"test:{command.name}", b"claimed")
    raise Rejected("invalid_command", reason="rejected after a claim")


@handler_registered(_ClaimThenReject, _claim_then_reject)
def test_a_handler_that_rejects_after_a_claim_records_nothing(lg: Ledger) -> None:
    """A command that changed state and then rejected is discarded; the rest of the batch runs."""
    results = lg.execute_many([consume(), _ClaimThenReject(name="x", actor=MASTER), consume()])
    assert _codes(results) == ["ok", "invalid_command", "ok"]
    assert isinstance(lg.store, EventStore)
    assert lg.store.select_keys(["test:x"]) == {}
    assert lg.balance(CTI) == 8


def test_keys_and_events_of_a_batch_commit_together(lg: Ledger) -> None:
    """Every consumption of a batch has its CFDI key, with the outcome it returned."""
    commands = [consume() for _ in range(5)]
    results = lg.execute_many(commands)
    assert isinstance(lg.store, EventStore)
    stored = lg.store.select_keys([f"cfdi:{c['cfdi_uuid'].upper()}" for c in commands])
    assert len(stored) == 5
    for command, result in zip(commands, results, strict=True):
        record: KeyRecord = stored[f"cfdi:{command['cfdi_uuid'].upper()}"]
        assert Outcome.decode(record.outcome) == result


def test_a_batch_past_the_bound_is_split_into_transactions(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands past the per-transaction bound go in further transactions, all recorded."""
    monkeypatch.setattr(group_commit, "BATCH_SIZE_MAX", 4)
    commits: list[Sequence[int]] = []
    lg.engine.on_commit.append(commits.append)
    results = lg.execute_many([consume() for _ in range(10)])
    assert [r.balance_after for r in results if isinstance(r, Outcome)] == list(range(9, -1, -1))
    assert [len(ids) for ids in commits] == [4, 4, 2]
