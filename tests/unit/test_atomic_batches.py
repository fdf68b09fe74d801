"""``execute_many(atomic=True)``: every command or none (imports, all-or-nothing tools)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.api import Ledger
from ledger.errors import Rejected
from tests.support import CLIENT, CTI, network_fixture, register_client, transfer_stamps

# A memory ledger with a network and 10 stamps in C1's CTI.
lg = network_fixture(cti_stamps=10)


def register(client_id: str) -> dict[str, Any]:
    """A RegisterClient of D1."""
    return register_client(client_id, name=f"Cliente {client_id}")


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
    transfer = transfer_stamps(5, "T9")
    lg.execute_many([transfer, register(CLIENT)], atomic=True)
    assert lg.balance(CTI) == 10
    assert lg.execute(transfer).replayed is False
    assert lg.balance(CTI) == 15
