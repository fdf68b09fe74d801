"""UpdateClientProfile changes only the fields it names (DESIGN §4, issue 19 item 7).

A change of phone used to replace the whole profile and so erase the contacts, the bulk price and
the discount. Now a field named changes, a field named ``null`` is cleared (optional ones only),
nested objects merge field by field, and the profile that results is checked as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from adapters.storage.codec import MsgspecMapper
from adapters.storage.memory import MemoryStore
from ledger.aggregates.client import Client
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    CLIENT,
    DISTRIBUTOR,
    client_profile,
    fields,
    invalid_fields,
    network_ledger,
    rejection,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "profile_changed_v1.json"

FULL_PROFILE: dict[str, Any] = {
    **client_profile(),
    "trade_name": "Papelería Juan",
    "phone": "55 1234 5678",
    "extra_emails": ["compras@example.com"],
    "address": {
        "state": "CDMX",
        "city": "Ciudad de México",
        "street": "Reforma",
        "number_ext": "222",
    },
    "legal_rep": {"name": "Ana Ruiz", "position": "Directora", "email": "ana@example.com"},
    "financial_contact": {"name": "Luis Gómez", "phone": "55 8765 4321"},
    "technical_contact": {"name": "Eva Soto", "email": "eva@example.com"},
    "bulk_stamp_price": "0.90",
    "discount_pct": "7.5",
    "credit_days": 30,
    "comments": "Paga a 30 días.\nLlamar antes.",
}


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """The standard network, its client C1 with every profile field filled."""
    with network_ledger(clock) as ledger:
        ledger.execute(update(FULL_PROFILE))
        assert profile_of(ledger) == FULL_PROFILE
        yield ledger


def update(profile: dict[str, Any], client_id: str = CLIENT) -> dict[str, Any]:
    """An UpdateClientProfile of D1."""
    return {
        "type": "UpdateClientProfile",
        "actor": DISTRIBUTOR,
        "client_id": client_id,
        "profile": profile,
    }


def profile_of(lg: Ledger, client_id: str = CLIENT) -> dict[str, Any]:
    """The client's profile as the write side holds it."""
    client = lg.engine.current(client_id)
    assert isinstance(client, Client)
    return dict(client.profile)


def last_event(lg: Ledger) -> Any:
    """The newest event of the ledger."""
    store = lg.store
    assert isinstance(store, MemoryStore)
    return store.events()[-1]


def test_a_change_of_phone_keeps_everything_else(lg: Ledger) -> None:
    """The contacts, the bulk price, the discount and the rest stay as they were."""
    lg.execute(update({"phone": "33 1111 2222"}))
    assert profile_of(lg) == {**FULL_PROFILE, "phone": "33 1111 2222"}


def test_null_clears_an_optional_field(lg: Ledger) -> None:
    """``null`` removes the field from the profile; the others stay."""
    lg.execute(update({"discount_pct": None, "legal_rep": None, "comments": None}))
    expected = {
        k: v for k, v in FULL_PROFILE.items() if k not in ("discount_pct", "legal_rep", "comments")
    }
    assert profile_of(lg) == expected


@pytest.mark.parametrize("field", ["name", "rfc", "email", "postal_code", "regimen_fiscal"])
def test_a_required_field_cannot_be_cleared(lg: Ledger, field: str) -> None:
    """``null`` in a field every client profile has is invalid_command naming it."""
    assert invalid_fields(lg, update({field: None})) == [f"UpdateClientProfile.profile.{field}"]
    assert profile_of(lg) == FULL_PROFILE


def test_a_nested_object_merges_field_by_field(lg: Ledger) -> None:
    """A new city keeps the street; a contact's new e-mail keeps its name and position."""
    lg.execute(
        update(
            {
                "address": {"city": "Guadalajara", "number_ext": None},
                "legal_rep": {"email": "ana.ruiz@example.com"},
            }
        )
    )
    profile = profile_of(lg)
    assert profile["address"] == {"state": "CDMX", "city": "Guadalajara", "street": "Reforma"}
    assert profile["legal_rep"] == {
        "name": "Ana Ruiz",
        "position": "Directora",
        "email": "ana.ruiz@example.com",
    }
    assert {k: v for k, v in profile.items() if k not in ("address", "legal_rep")} == {
        k: v for k, v in FULL_PROFILE.items() if k not in ("address", "legal_rep")
    }


def test_a_contact_name_cannot_be_cleared(lg: Ledger) -> None:
    """A contact always has a name: ``null`` in it is refused, naming the field."""
    rejected = rejection(lg, update({"legal_rep": {"name": None}}))
    assert fields(rejected) == ["UpdateClientProfile.profile.legal_rep.name"]


def test_a_new_contact_needs_a_name(lg: Ledger) -> None:
    """A contact the profile did not have, given without a name, is refused as a whole."""
    lg.execute(update({"technical_contact": None}))
    assert invalid_fields(lg, update({"technical_contact": {"email": "t@example.com"}})) == [
        "UpdateClientProfile.profile.technical_contact.name"
    ]


def test_the_result_is_checked_as_a_whole(lg: Ledger) -> None:
    """A company's RFC with the régimen of a person kept from before is refused."""
    assert invalid_fields(lg, update({"rfc": "MAB9307148T4"})) == [
        "UpdateClientProfile.profile.regimen_fiscal"
    ]
    outcome = lg.execute(update({"rfc": "MAB9307148T4", "regimen_fiscal": "601"}))
    assert outcome.ok is True
    assert profile_of(lg)["rfc"] == "MAB9307148T4"


def test_an_empty_change_is_invalid_command(lg: Ledger) -> None:
    """A change that names no field is refused (it would record nothing new)."""
    assert rejection(lg, update({})).code == "invalid_command"


def test_the_rfc_warning_comes_with_a_change_of_rfc_only(lg: Ledger) -> None:
    """A bad check digit is a warning of the change that names the RFC, not of later ones."""
    outcome = lg.execute(update({"rfc": "GODE561231GR9"}))
    assert outcome.warnings == ("rfc_check_digit",)
    assert lg.execute(update({"phone": "33 1111 2222"})).warnings == ()


def test_the_event_holds_the_whole_profile_and_names_the_fields_changed(lg: Ledger) -> None:
    """``ProfileChanged`` keeps the resulting profile (views and exports read it whole) and
    the fields the command named."""
    lg.execute(update({"phone": "33 1111 2222", "comments": None}))
    event = last_event(lg)
    assert isinstance(event, Client.ProfileChanged)
    assert event.changed == ("phone", "comments")
    assert event.profile == profile_of(lg)


def test_the_directory_searches_the_profile_kept(lg: Ledger) -> None:
    """After a change of phone, a search by a contact's name still finds the client."""
    lg.execute(update({"phone": "33 1111 2222"}))
    assert [row.client_id for row in lg.views.clients(DISTRIBUTOR, search="Eva Soto")] == [CLIENT]


def test_a_profile_change_stored_before_partial_changes_decodes(clock: ManualClock) -> None:
    """The golden bytes of a ``ProfileChanged`` without ``changed`` decode, and replay into
    the whole profile they hold."""
    (row,) = json.loads(GOLDEN.read_text(encoding="utf-8"))["events"]
    assert '"changed"' not in row["state"]
    event = MsgspecMapper().to_domain_event(
        StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=row["state"].encode("utf-8"),
        )
    )
    assert isinstance(event, Client.ProfileChanged)
    assert event.changed == ()
    assert event.profile["legal_rep"] == {"name": "Ana Ruiz", "email": "ana@example.com"}
    with network_ledger(clock) as ledger:
        client = ledger.engine.current(CLIENT)
        assert isinstance(client, Client)
        event.apply(client)
        assert client.profile == event.profile
