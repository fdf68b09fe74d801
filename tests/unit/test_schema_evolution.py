"""Schema evolution: stored v1 bytes, written by the earlier code, decode with today's classes.

``tests/golden/history_v1.json`` holds rows exactly as the code before
``StampingAccount.StampConsumed`` version 2 stored them. Version 2 records ``local_date``, the
Mexico City day of ``stamped_at``; the upcaster derives it for v1 rows.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent

import ledger.aggregates.admin_profile
import ledger.aggregates.client
import ledger.aggregates.distributor
import ledger.aggregates.master_account
from adapters.storage.codec import MsgspecMapper
from ledger.aggregates.common import read_sale_fact, sale_fact
from ledger.aggregates.credit_code import CreditCode
from ledger.aggregates.stamping_account import StampingAccount
from ledger.domain import Event, Snapshot

GOLDEN = Path(__file__).parents[1] / "golden" / "history_v1.json"
V1_TOPIC = "StampingAccount.StampConsumed"
AT = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)


def golden_rows() -> list[dict[str, Any]]:
    """The stored v1 rows."""
    return list(json.loads(GOLDEN.read_text(encoding="utf-8"))["events"])


def stored(row: dict[str, Any]) -> StoredEvent:
    """A golden row as eventsourcing hands it to the mapper."""
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=row["state"].encode("utf-8"),
    )


def decode(row: dict[str, Any]) -> Event:
    """A golden row decoded by today's mapper."""
    event = MsgspecMapper().to_domain_event(stored(row))
    assert isinstance(event, Event)
    return event


def consumption(cfdi_uuid: str) -> StampingAccount.StampConsumed:
    """The golden v1 consumption of ``cfdi_uuid``, decoded."""
    for row in golden_rows():
        if row["topic"] == V1_TOPIC and cfdi_uuid in row["state"]:
            event = decode(row)
            assert isinstance(event, StampingAccount.StampConsumed)
            return event
    raise AssertionError(cfdi_uuid)


def test_golden_file_holds_v1_consumptions() -> None:
    """The golden rows are version 1: the bare topic and no ``local_date`` in the bytes."""
    rows = [r for r in golden_rows() if r["topic"].startswith(V1_TOPIC)]
    assert len(rows) == 4
    assert {r["topic"] for r in rows} == {V1_TOPIC}
    assert all("local_date" not in r["state"] for r in rows)


def test_every_golden_row_decodes_with_todays_classes() -> None:
    """All 27 stored v1 rows of every kind decode into current event structs."""
    events = [decode(row) for row in golden_rows()]
    assert len(events) == 27
    assert [(e.originator_id, e.originator_version) for e in events] == [
        (r["originator_id"], r["originator_version"]) for r in golden_rows()
    ]


def test_v1_consumption_decodes_into_v2_with_its_local_day() -> None:
    """A v1 consumption stamped at 18:06 UTC counts for that day in Mexico City."""
    event = consumption("6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01")
    assert type(event).class_version == 2
    assert event.stamped_at == datetime(2026, 1, 5, 18, 6, 0, 250, tzinfo=UTC)
    assert event.local_date == date(2026, 1, 5)
    assert event.lot_id == "T-1"


def test_upcast_local_day_is_mexico_citys_not_utcs() -> None:
    """Stamped at 01:06 UTC on 6 January: still 5 January in Mexico City."""
    event = consumption("6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F04")
    assert event.stamped_at.astimezone(UTC).date() == date(2026, 1, 6)
    assert event.local_date == date(2026, 1, 5)


def test_upcast_keeps_the_offset_the_pac_gave() -> None:
    """A ``stamped_at`` given with an offset (05:59:59-06:00) keeps its local day."""
    event = consumption("6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F03")
    assert event.local_date == date(2026, 1, 6)


def test_v2_events_are_stored_under_the_versioned_topic() -> None:
    """A new consumption is stored as ``#2`` with its local day in the bytes, and reads back."""
    old = consumption("6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01")
    mapper = MsgspecMapper()
    row = mapper.to_stored_event(old)
    assert row.topic == "StampingAccount.StampConsumed#2"
    assert b'"local_date":"2026-01-05"' in row.state
    assert mapper.to_domain_event(row) == old


def test_v1_bytes_missing_stamped_at_fail_loudly() -> None:
    """A v1 row the upcaster cannot read is a decode error, never a silently wrong day."""
    row = next(r for r in golden_rows() if r["topic"] == V1_TOPIC)
    broken = json.loads(row["state"])
    del broken["stamped_at"]
    with pytest.raises(MapperDeserialisationError):
        decode({**row, "state": json.dumps(broken)})


def _new(aggregate_name: str) -> Any:
    """A freshly created aggregate of that kind."""
    at = datetime(2026, 1, 5, tzinfo=UTC)
    if aggregate_name == "Distributor":
        return ledger.aggregates.distributor.Distributor.register(
            "D", "M", {"name": "x"}, at, master_id="M"
        )
    if aggregate_name == "Client":
        return ledger.aggregates.client.Client.register(
            "C", "D", "1", {"name": "x"}, at, master_id="M"
        )
    return ledger.aggregates.master_account.MasterAccount.open("M", "P", "SAT970701NN3", at)


@pytest.mark.parametrize(
    ("aggregate_name", "added"),
    [
        ("Distributor", {"converted_from": None}),
        ("Client", {"seats": {}}),
        ("MasterAccount", {"subscription_products": {}, "admin_email": None}),
    ],
)
def test_a_snapshot_stored_before_an_attribute_existed_still_loads(
    aggregate_name: str, added: dict[str, Any]
) -> None:
    """Attributes added later (``snapshot_defaults``) take their defaults from older snapshots."""
    snapshot = Snapshot.take(_new(aggregate_name), datetime(2026, 1, 5, tzinfo=UTC))
    state = msgspec.json.decode(snapshot.state)
    for name in added:
        del state[name]  # as a snapshot written before the attribute existed
    older = msgspec.structs.replace(snapshot, state=msgspec.Raw(msgspec.json.encode(state)))
    aggregate = older.mutate(None)
    assert {n: getattr(aggregate, n) for n in added} == added


# Actors and networks (DESIGN §4a): fields added with defaults -----------------------------------


def test_every_v1_event_decodes_without_an_actor() -> None:
    """Bytes stored before events recorded their actor decode with ``actor`` None."""
    rows = golden_rows()
    assert all('"actor"' not in row["state"] for row in rows)
    assert {decode(row).actor for row in rows} == {None}


@pytest.mark.parametrize(
    "topic", ["Distributor.Registered", "Client.Registered", "StampingAccount.Opened"]
)
def test_v1_accounts_decode_without_their_network(topic: str) -> None:
    """An account opened before ``master_id`` existed decodes with "" (found by its parents)."""
    (row,) = [r for r in golden_rows() if r["topic"] == topic]
    assert '"master_id"' not in row["state"]
    event = decode(row)
    assert event.master_id == ""  # type: ignore[attr-defined]
    assert event.mutate(None).master_id == ""


def test_a_snapshot_stored_before_master_id_restores_with_the_default() -> None:
    """Snapshot state lacking an attribute added with a default takes the default."""
    account = StampingAccount.open(
        "X", client_id="C", distributor_id="D", master_id="M", kind="standard", at=AT
    )
    state = json.loads(msgspec.json.encode(account.snapshot_state()))
    del state["master_id"]
    restored = msgspec.json.decode(json.dumps(state), type=StampingAccount.snapshot_type)
    assert restored.master_id == ""  # type: ignore[attr-defined]


def test_a_sale_recorded_before_buyers_keeps_its_old_buyer() -> None:
    """The golden transfer T-1 to C1's CTI decodes with no ``buyer_id`` and source transfer: its
    sale names the CTI as buyer (as it was recorded) and as the account credited."""
    (row,) = [
        r
        for r in golden_rows()
        if r["topic"] == "Distributor.CreditsTransferred" and '"T-1"' in r["state"]
    ]
    assert "buyer_id" not in row["state"]
    event = decode(row)
    assert isinstance(event, ledger.aggregates.distributor.Distributor.CreditsTransferred)
    assert (event.buyer_id, event.source) == ("", "transfer")
    sale = event.sale()
    assert (sale.buyer_id, sale.to_id, sale.source) == ("C1-cti", "C1-cti", "transfer")


def test_a_sale_key_stored_before_buyers_reads_as_the_sellers_alone() -> None:
    """The golden key ``sale:T-1`` holds the seller's id alone: its buyer is unknown (None), so
    an invoice does not compare it; a new payload names both."""
    keys = json.loads(GOLDEN.read_text(encoding="utf-8"))["keys"]
    (kept,) = [k for k in keys if k["key"] == "sale:T-1"]
    fact = read_sale_fact(kept["outcome"].encode("utf-8"))
    assert (fact.seller_id, fact.buyer_id, fact.code_id) == ("D1", None, "")
    new = read_sale_fact(sale_fact("D1", "C1", "K1"))
    assert (new.seller_id, new.buyer_id, new.code_id) == ("D1", "C1", "K1")


def test_a_redemption_recorded_before_codes_were_sales_has_no_client() -> None:
    """``CreditCode.Redeemed`` gained ``client_id`` with a default: older bytes decode."""
    event = decode(
        {
            "originator_id": "K1",
            "originator_version": 2,
            "topic": "CreditCode.Redeemed",
            "state": '{"originator_id":"K1","originator_version":2,'
            '"timestamp":"2026-01-05T18:00:00Z","to_id":"C1-cti","quantity":5,"unit":"stamps"}',
        }
    )
    assert isinstance(event, CreditCode.Redeemed)
    assert (event.to_id, event.client_id) == ("C1-cti", "")


def test_an_auto_top_up_failure_recorded_before_reasons_has_none() -> None:
    """``AutoTopUpFailed`` gained ``reason`` with a default: older bytes decode with ""."""
    event = decode(
        {
            "originator_id": "C1-cti",
            "originator_version": 9,
            "topic": "StampingAccount.AutoTopUpFailed",
            "state": '{"originator_id":"C1-cti","originator_version":9,'
            '"timestamp":"2026-01-05T18:00:00Z",'
            '"cfdi_uuid":"6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01","available":3,'
            '"distributor_id":"D1","requested":50}',
        }
    )
    assert isinstance(event, StampingAccount.AutoTopUpFailed)
    assert event.reason == ""
