"""Input rules: `invalid_command` for schema errors, `invalid_rfc` for RFCs (DESIGN §4, §5)."""

from __future__ import annotations

import pytest

from ledger.api import Ledger
from ledger.rfc import CHECK_DIGIT_WARNING
from tests.support import (
    CLIENT,
    DISTRIBUTOR,
    MASTER,
    consume,
    fields,
    invalid_fields,
    network_fixture,
    open_cti,
    register_client,
    rejection,
    transfer_stamps,
)

# A ledger on the in-memory store with the standard network.
lg = network_fixture()


# invalid_command -------------------------------------------------------------------------------


def test_wrong_type_of_field_is_invalid_command_naming_the_field(lg: Ledger) -> None:
    """A quantity that is not an integer is refused with the field's name."""
    assert invalid_fields(lg, transfer_stamps(quantity="diez")) == ["TransferStamps.quantity"]


def test_missing_field_is_invalid_command_naming_the_field(lg: Ledger) -> None:
    """A command without a required field names the missing field."""
    command = transfer_stamps(1)
    del command["to_id"]
    assert invalid_fields(lg, command) == ["TransferStamps.to_id"]


def test_unknown_field_is_invalid_command(lg: Ledger) -> None:
    """A misspelt field is an error, not silently ignored."""
    rejected = rejection(
        lg, {"type": "TagClient", "actor": DISTRIBUTOR, "client_id": CLIENT, "favorite": True}
    )
    assert rejected.code == "invalid_command"
    assert fields(rejected) == ["TagClient.favorite"]


def test_unknown_command_type_is_invalid_command(lg: Ledger) -> None:
    """A command type the ledger does not know is refused."""
    assert rejection(lg, {"type": "StealStamps"}).code == "invalid_command"


@pytest.mark.parametrize("quantity", [0, -5, 1.5, True])
def test_quantity_must_be_a_positive_integer(lg: Ledger, quantity: object) -> None:
    """Zero, negative, fractional and boolean quantities are refused."""
    assert invalid_fields(lg, transfer_stamps(quantity)) == ["TransferStamps.quantity"]


@pytest.mark.parametrize("amount", ["10", "10.5", "-1.00", "1,000.00", "abc"])
def test_money_needs_two_decimals(lg: Ledger, amount: str) -> None:
    """Money fields are strings with exactly two decimals."""
    assert invalid_fields(lg, transfer_stamps(1, amount=amount)) == ["TransferStamps.amount"]


def test_schema_errors_never_echo_input_values(lg: Ledger) -> None:
    """Neither the message nor the details repeat what the caller sent (it may be personal)."""
    secret = "Zq7-s3c"  # too short for a password and not an e-mail address
    rejected = rejection(lg, open_cti(password=secret))
    assert rejected.code == "invalid_command"
    assert fields(rejected) == ["OpenStampingAccount.password"]
    assert secret not in repr(rejected.to_dict())
    profile_rejected = rejection(lg, register_client(email=secret))
    assert fields(profile_rejected) == ["RegisterClient.profile.email"]
    assert secret not in repr(profile_rejected.to_dict())


def test_postal_code_needs_five_digits(lg: Ledger) -> None:
    """A postal code of four digits is refused."""
    assert invalid_fields(lg, register_client(postal_code="0660")) == [
        "RegisterClient.profile.postal_code"
    ]


def test_regimen_outside_the_catalogue_is_invalid_command(lg: Ledger) -> None:
    """A régimen fiscal that is not a CFDI 4.0 code is refused."""
    assert invalid_fields(lg, register_client(regimen_fiscal="999")) == [
        "RegisterClient.profile.regimen_fiscal"
    ]


def test_aware_stamping_time_is_required(lg: Ledger) -> None:
    """A stamping time without an offset is refused."""
    naive = consume(
        cfdi_uuid="6f1c1a2e-0000-4000-8000-000000000001", stamped_at="2026-01-05T10:00:00"
    )
    assert invalid_fields(lg, naive) == ["ConsumeStamp.stamped_at"]


# invalid_rfc -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rfc", "reason"),
    [
        ("GODE-561231-GR8", "characters"),  # hyphens
        ("GODE561231G", "length"),  # 11 characters
        ("GODE561231GR8X", "length"),  # 14 characters
        ("1ODE561231GR8", "format"),  # a digit where the name letters go
        ("GODE561331GR8", "date"),  # month 13
        ("GODE560230GR8", "date"),  # 30 February
    ],
)
def test_bad_rfc_is_invalid_rfc(lg: Ledger, rfc: str, reason: str) -> None:
    """A bad format, length or date of the client's RFC is an error."""
    rejected = rejection(lg, register_client(rfc=rfc))
    assert rejected.code == "invalid_rfc"
    assert fields(rejected) == ["RegisterClient.profile.rfc"]


def test_a_missing_rfc_is_invalid_command(lg: Ledger) -> None:
    """A profile without an RFC lacks a field: that is a schema error, not a bad RFC."""
    command = register_client()
    del command["profile"]["rfc"]
    assert invalid_fields(lg, command) == ["RegisterClient.profile.rfc"]


def test_a_short_issuer_rfc_is_invalid_rfc(lg: Ledger) -> None:
    """An issuer RFC of the wrong length is a bad RFC."""
    rejected = rejection(
        lg, consume(cfdi_uuid="6f1c1a2e-0000-4000-8000-000000000001", issuer_rfc="GODE56")
    )
    assert rejected.code == "invalid_rfc"


@pytest.mark.parametrize("rfc", ["XAXX010101000", "XEXX010101000"])
def test_generic_rfcs_are_allowed(lg: Ledger, rfc: str) -> None:
    """The SAT's generic RFCs register without warnings."""
    outcome = lg.execute(register_client(rfc=rfc, regimen_fiscal="616", uso_cfdi="S01"))
    assert outcome.ok
    assert outcome.warnings == ()


def test_twelve_character_rfc_registers_a_persona_moral(lg: Ledger) -> None:
    """A 12-character RFC (persona moral) is accepted with a régimen for morales."""
    outcome = lg.execute(register_client(rfc="MAB9307148T4", regimen_fiscal="601"))
    assert outcome.warnings == ()
    assert lg.engine.current("C2").profile["rfc"] == "MAB9307148T4"  # type: ignore[union-attr]


def test_lower_case_rfc_is_stored_upper_case(lg: Ledger) -> None:
    """An RFC typed in lower case is normalised."""
    lg.execute(register_client(rfc="gode561231gr8"))
    assert lg.engine.current("C2").profile["rfc"] == "GODE561231GR8"  # type: ignore[union-attr]


def test_bad_check_digit_is_only_a_warning(lg: Ledger) -> None:
    """An RFC whose check digit does not verify registers, with a warning in the outcome."""
    outcome = lg.execute(register_client(rfc="GODE561231GR9"))
    assert outcome.ok
    assert outcome.warnings == (CHECK_DIGIT_WARNING,)
    assert lg.balance("C2-cti") == 0


def test_bad_rfc_lock_is_invalid_rfc(lg: Ledger) -> None:
    """A CTI's RFC lock is checked like any RFC."""
    rejected = rejection(lg, open_cti(password="correct horse", rfc_lock="GODE561331GR8"))
    assert rejected.code == "invalid_rfc"


def test_bad_master_rfc_is_invalid_rfc(lg: Ledger) -> None:
    """The master account's RFC is checked too."""
    other = {"master_id": "M2", "name": "Otra", "rfc": "SAT97"}
    rejected = rejection(lg, {"type": "OpenMasterAccount", "actor": MASTER, **other})
    assert rejected.code == "invalid_rfc"
