"""``execute_many(atomic=True)``: every command or none (imports, all-or-nothing tools)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import CLIENT, CTI, DISTRIBUTOR, client_profile, network_ledger


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """A memory ledger with a network and 10 stamps in C1's CTI."""
    with network_ledger(clock, cti_stamps=10) as ledger:
        yield ledger


def register(client_id: str) -> dict[str, object]:
    """A RegisterClient of D1."""
    return {
        "type": "RegisterClient",
        "actor": DISTRIBUTOR,
        "client_id": client_id,
        "distributor_id": DISTRIBUTOR,
        "profile": client_profile(name=f"Cliente {client_id}"),
    }


def test_an_atomic_batch_with_a_rejection_records_nothing(lg: Ledger) -> None:
    """One rejected command aborts the batch: the others are not recorded either."""
    results = lg.execute_many([register("C7"), register(CLIENT), register("C8")], atomic=True)
    assert [r.code for r in results if isinstance(r, Rejected)] == [
        "batch_aborted",
        "already_exists",
        "batch_aborted",
    ]
    assert results[0].details == {"rejected_index": 1}  # type: ignore[union-attr]
    for absent in ("C7", "C8"):
        with pytest.raises(Rejected) as e:
            lg.balance(absent, "points")
        assert e.value.code == "unknown_account"


def test_an_atomic_batch_without_rejections_records_everything(lg: Ledger) -> None:
    """All commands succeed together."""
    results = lg.execute_many([register("C7"), register("C8")], atomic=True)
    assert [r.ok for r in results] == [True, True]
    assert lg.balance("C8", "points") == 0


def test_an_aborted_atomic_batch_leaves_the_cache_clean(lg: Ledger) -> None:
    """State changed in memory by an aborted batch is not seen afterwards."""
    transfer = {
        "type": "TransferStamps",
        "actor": DISTRIBUTOR,
        "transfer_id": "T9",
        "from_id": DISTRIBUTOR,
        "to_id": CTI,
        "quantity": 5,
    }
    lg.execute_many([transfer, register(CLIENT)], atomic=True)
    assert lg.balance(CTI) == 10
    assert lg.execute(transfer).replayed is False
    assert lg.balance(CTI) == 15
