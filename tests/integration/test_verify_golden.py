"""History written by the v1 code, loaded as stored rows: today's ledger reads, verifies and
rebuilds across the ``StampConsumed`` v1 → v2 change, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import CLIENT, CTI, DISTRIBUTOR, MASTER, RawDb, consume

GOLDEN = json.loads(
    (Path(__file__).parents[1] / "golden" / "history_v1.json").read_text(encoding="utf-8")
)
NEW_UUID = "0A1B2C3D-0B4D-4C55-9A1E-3D2B7C8E9F99"


def load_golden(url: str) -> None:
    """Creates the tables, then writes the golden rows exactly as the v1 code stored them."""
    Ledger.open(url, projections="off").close()
    db = RawDb(url)
    db.executemany(
        "INSERT INTO {events} ({id}, originator_id, originator_version, topic, state)"
        " VALUES (?,?,?,?,?)",
        [
            (
                row["id"],
                row["originator_id"],
                row["originator_version"],
                row["topic"],
                row["state"].encode("utf-8"),
            )
            for row in GOLDEN["events"]
        ],
    )
    db.executemany(
        "INSERT INTO ledger_chain (last_id, first_id, hash) VALUES (?,?,?)",
        [(c["last_id"], c["first_id"], bytes.fromhex(c["hash"])) for c in GOLDEN["chain"]],
    )
    db.executemany(
        "INSERT INTO ledger_keys (key, fingerprint, outcome) VALUES (?,?,?)",
        [(k["key"], k["fingerprint"], k["outcome"].encode("utf-8")) for k in GOLDEN["keys"]],
    )
    if db.postgres:
        db.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_events', 'notification_id'),"
            " (SELECT max(notification_id) FROM ledger_events))"
        )


@pytest.fixture
def golden_url(store_url: str) -> str:
    """A fresh database holding the golden v1 history."""
    load_golden(store_url)
    return store_url


@pytest.fixture
def later_clock() -> ManualClock:
    """The clock a day after the golden history."""
    return ManualClock(datetime(2026, 1, 6, 18, 0, tzinfo=UTC))


def open_ledger(url: str, clock: ManualClock, projections: Any = "off") -> Ledger:
    """Today's ledger on the golden database."""
    return Ledger.open(url, clock=clock, projections=projections, password_cost="fast")


def test_v1_history_verifies(golden_url: str, later_clock: ManualClock) -> None:
    """The v1 rows verify: chain, versions, double entry, keys and invoices all hold."""
    with open_ledger(golden_url, later_clock) as lg:
        report = lg.verify()
    assert report.ok, report.breaches
    assert report.events == len(GOLDEN["events"]) == 27
    assert report.head_hash == GOLDEN["chain"][-1]["hash"]


def test_v1_history_loads_into_current_balances(golden_url: str, later_clock: ManualClock) -> None:
    """Aggregates rebuilt from v1 events have the balances the v1 code left."""
    with open_ledger(golden_url, later_clock) as lg:
        assert lg.balance(CTI) == 4  # 10 transferred, 4 consumed, 2 reclaimed
        assert lg.balance(DISTRIBUTOR) == 1992
        assert lg.balance(CLIENT, "points") == 380


def test_v2_consumption_after_v1_history_verifies(
    golden_url: str, later_clock: ManualClock
) -> None:
    """A new consumption is stored as v2 after the v1 ones; the whole history still verifies."""
    with open_ledger(golden_url, later_clock) as lg:
        assert lg.execute(consume(cfdi_uuid=NEW_UUID)).balance_after == 3
        report = lg.verify()
        debits = [(m.topic, m.amount, m.balance) for m in lg.history(CTI) if m.amount < 0]
    assert report.ok, report.breaches
    assert debits == [
        ("StampingAccount.StampConsumed", -1, 9),
        ("StampingAccount.StampConsumed", -1, 8),
        ("StampingAccount.StampConsumed", -1, 7),
        ("StampingAccount.StampConsumed", -1, 6),
        ("StampingAccount.StampsReclaimed", -2, 4),
        ("StampingAccount.StampConsumed", -1, 3),
    ]
    rows = RawDb(golden_url).rows(
        "SELECT topic FROM {events} WHERE originator_id = ? ORDER BY originator_version", (CTI,)
    )
    assert [t for (t,) in rows if t.startswith("StampingAccount.StampConsumed")] == [
        "StampingAccount.StampConsumed",
        "StampingAccount.StampConsumed",
        "StampingAccount.StampConsumed",
        "StampingAccount.StampConsumed",
        "StampingAccount.StampConsumed#2",
    ]


def test_a_repeated_v1_consumption_replays_its_first_outcome(
    golden_url: str, later_clock: ManualClock
) -> None:
    """The idempotency keys written by the v1 code still make a retried CFDI a replay."""
    with open_ledger(golden_url, later_clock) as lg:
        outcome = lg.execute(consume(cfdi_uuid="6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01"))
        assert outcome.replayed
        assert lg.balance(CTI) == 4


def test_views_rebuilt_across_the_change_equal_the_replay(
    golden_url: str, later_clock: ManualClock
) -> None:
    """Views rebuilt from v1 and v2 events equal verify's replay of the same events."""
    with open_ledger(golden_url, later_clock) as lg:
        lg.execute(consume(cfdi_uuid=NEW_UUID))
        lg.views.rebuild()
        report = lg.verify()
    assert report.ok, report.breaches
    assert f"views: balances compared at position {report.last_position}" in report.notes


def test_accounts_recorded_before_their_network_are_authorised_through_their_parents(
    golden_url: str, later_clock: ManualClock
) -> None:
    """A v1 CTI (no ``master_id``) stamps for its network's master only; the refusal records
    nothing, and the consumption records the master as its actor."""
    with open_ledger(golden_url, later_clock) as lg:
        with pytest.raises(Rejected) as refused:
            lg.execute(consume(cfdi_uuid=NEW_UUID, actor=DISTRIBUTOR))
        assert refused.value.code == "not_authorised"
        assert lg.balance(CTI) == 4
        assert lg.execute(consume(cfdi_uuid=NEW_UUID)).balance_after == 3
        assert [m.actor for m in lg.history(CTI)][-2:] == [None, MASTER]


def test_a_ledger_with_masters_from_before_needs_an_actor_to_open_another(
    golden_url: str, later_clock: ManualClock
) -> None:
    """The golden ledger has a master but no first-master key: a new one still needs an actor."""
    command = {"type": "OpenMasterAccount", "master_id": "M9", "name": "X", "rfc": "SAT970701NN3"}
    with open_ledger(golden_url, later_clock) as lg:
        with pytest.raises(Rejected) as refused:
            lg.execute(command)
        assert refused.value.code == "invalid_command"
        assert lg.execute({**command, "actor": MASTER}).ok


def test_sales_recorded_before_buyers_keep_their_old_buyer(
    golden_url: str, later_clock: ManualClock
) -> None:
    """The v1 stamps transfer T-1 is shown with the buyer it was recorded with (C1's CTI) and
    the same account credited; a new transfer names the client. The master's v1 package sale
    (no buyer in its key) may share an invoice with a new one (its buyer is not compared)."""
    with open_ledger(golden_url, later_clock, projections="inline") as lg:
        lg.execute(
            {
                "type": "TransferStamps",
                "actor": DISTRIBUTOR,
                "transfer_id": "T-2",
                "from_id": DISTRIBUTOR,
                "to_id": CTI,
                "quantity": 1,
                "amount": "5.00",
            }
        )
        rows = {s.sale_id: s for s in lg.views.invoices(DISTRIBUTOR)[0].sales}
        old = rows["T-1"]
        assert (old.buyer_id, old.to_id, old.source) == (CTI, CTI, "transfer")
        (new,) = lg.views.unbilled_sales(DISTRIBUTOR, buyer_id=CLIENT)
        assert (new.sale_id, new.to_id) == ("T-2", CTI)
        legacy = lg.views.unbilled_sales(MASTER)[0]
        (fresh,) = lg.execute(
            {
                "type": "BuyPackage",
                "actor": DISTRIBUTOR,
                "buyer_id": DISTRIBUTOR,
                "seller_id": MASTER,
                "package_id": "P1000",
            }
        ).sale_ids
        invoice = {"type": "RegisterInvoice", "actor": MASTER, "seller_id": MASTER}
        outcome = lg.execute(
            {**invoice, "invoice_ref": "F-M1", "sale_ids": [legacy.sale_id, fresh]}
        )
        assert outcome.sale_ids == (legacy.sale_id, fresh)
        assert lg.verify().ok
