"""The message every publisher sends: its exact fields, its network, and no secrets."""

from __future__ import annotations

import json
import typing
from typing import Any

import msgspec

from adapters.storage.views import event_decoder, notification_source
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.domain import TOPICS
from ledger.outbound.message import (
    SECRET_FIELDS,
    message_id,
    outgoing,
    routing_key,
    subject_token,
)
from ledger.outbound.networks import Networks
from tests.support import CTI, ISSUER_RFC, MASTER, command, consume, network_ledger, open_cti

SECRET_LOOKING = ("hash", "digest", "password", "nip", "secret", "salt")


def _messages(lg: Ledger) -> list[dict[str, Any]]:
    source = notification_source(lg.store)
    decode = event_decoder(lg.store)
    notifications = source.select_notifications(0, 10_000, inclusive_of_start=False)
    events = [decode(n) for n in notifications]
    masters = Networks(lg.views.database).masters(events)
    return [
        {
            "routing_key": routing_key(out),
            **json.loads(out.body),
        }
        for out in (
            outgoing(int(n.id), event, master)
            for n, event, master in zip(notifications, events, masters, strict=True)
        )
    ]


def test_a_consumption_is_one_message_with_its_postings(clock: ManualClock) -> None:
    """A ConsumeStamp's event is sent with its ids, type, actor, both legs and its own fields."""
    with network_ledger(clock, cti_stamps=5) as lg:
        lg.execute(consume(cfdi_uuid="7D9C0F5E-8C3B-4E7A-9F0A-1B2C3D4E5F60"))
        last = _messages(lg)[-1]
    assert last == {
        "routing_key": "M.StampingAccount.StampConsumed",
        "notification_id": last["notification_id"],
        "recorded_at": "2026-01-05T18:00:00Z",
        "originator_id": CTI,
        "originator_version": last["originator_version"],
        "type": "StampingAccount.StampConsumed",
        "actor": MASTER,
        "postings": [
            {
                "holder_id": CTI,
                "unit": "stamps",
                "delta": -1,
                "ref": "7D9C0F5E-8C3B-4E7A-9F0A-1B2C3D4E5F60",
                "counterpart": "sink:consumed",
            },
            {
                "holder_id": "sink:consumed",
                "unit": "stamps",
                "delta": 1,
                "ref": "7D9C0F5E-8C3B-4E7A-9F0A-1B2C3D4E5F60",
                "counterpart": CTI,
            },
        ],
        "data": {
            "cfdi_uuid": "7D9C0F5E-8C3B-4E7A-9F0A-1B2C3D4E5F60",
            "issuer_rfc": ISSUER_RFC,
            "stamped_at": "2026-01-05T18:00:00Z",
            "lot_id": last["data"]["lot_id"],
            "local_date": "2026-01-05",
        },
    }


def test_every_message_is_in_its_master_accounts_network(clock: ManualClock) -> None:
    """Accounts, CTIs and the master itself route under the master account's id; an admin
    login's index, shared by every network, under ``_``."""
    with network_ledger(clock, cti_stamps=5) as lg:
        messages = _messages(lg)
    networks = {m["type"]: m["routing_key"].split(".")[0] for m in messages}
    assert networks.pop("AdminProfile.Claimed") == networks.pop("AdminProfile.AccountAdded") == "_"
    assert set(networks.values()) == {MASTER}
    assert [m["notification_id"] for m in messages] == list(range(1, len(messages) + 1))


def test_no_secret_leaves_the_ledger(clock: ManualClock) -> None:
    """Password hashes (opening, reset) and a credit code's NIP hash and digest are left out."""
    with network_ledger(clock, open_cti("X1")) as lg:
        lg.execute(
            command("ResetStampingPassword", "D1", cti_id="X1", password="0tra-Clave-Segura-9")
        )
        lg.execute(
            command(
                "IssueCreditCode",
                "D1",
                code_id="K1",
                distributor_id="D1",
                unit="stamps",
                quantity=5,
                amount="50.00",
            )
        )
        messages = _messages(lg)
    text = json.dumps(messages)
    for secret in SECRET_FIELDS:
        assert secret not in text
    types = [m["type"] for m in messages]
    assert "StampingAccount.PasswordReset" in types
    assert "CreditCode.Issued" in types


def test_every_event_field_that_looks_secret_is_listed() -> None:
    """A new event field named like a secret fails here until it is in ``SECRET_FIELDS``."""
    looking = set()
    for event_class in TOPICS.values():
        for name in typing.get_type_hints(event_class):
            if any(word in name.lower() for word in SECRET_LOOKING):
                looking.add(name)
    allowed = {"wrong_nips"}  # a count, not a secret
    assert looking - allowed == set(SECRET_FIELDS)


def test_an_id_is_always_one_token_of_a_subject() -> None:
    """Dots and other separators in an id are escaped; plain ids are kept."""
    assert subject_token("PLATAFORMA-1_a") == "PLATAFORMA-1_a"
    assert subject_token("pac.mx") == "pac%2Emx"
    assert subject_token("a*b>c ñ") == "a%2Ab%3Ec%20%C3%B1"
    assert message_id("ledger-abc", 42) == "ledger-abc:42"


def test_the_message_schema_is_stable() -> None:
    """The body's top-level fields are the contract of DESIGN §10, in order."""
    from ledger.outbound.message import EventOut  # noqa: PLC0415

    assert [f.name for f in msgspec.structs.fields(EventOut)] == [
        "notification_id",
        "recorded_at",
        "originator_id",
        "originator_version",
        "type",
        "actor",
        "postings",
        "data",
    ]
