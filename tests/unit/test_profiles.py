"""Distributor and client profiles validated at the boundary (ledger.commands.profiles)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pydantic
import pytest

from ledger.commands.profiles import (
    Address,
    ClientProfile,
    Contact,
    DistributorProfile,
    profile_error_to_rejection,
)
from ledger.errors import Rejected

CLIENT: dict[str, Any] = {
    "name": "Ferretería Díaz",
    "rfc": "GODE561231GR8",
    "email": "facturas@ferreteriadiaz.com.mx",
    "postal_code": "06600",
    "regimen_fiscal": "612",
    "uso_cfdi": "G03",
}
DISTRIBUTOR: dict[str, Any] = {
    "name": "Timbres del Bajío SA de CV",
    "rfc": "MAB9307148T4",
    "email": "ventas@timbresbajio.mx",
    "postal_code": "37000",
}


def client(**changes: Any) -> ClientProfile:
    """A client profile with the minimal fields, changed as given."""
    return ClientProfile.model_validate({**CLIENT, **changes})


def rejection_of(model: type[pydantic.BaseModel], data: dict[str, Any]) -> Rejected:
    """The Rejected a profile's validation error translates to."""
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(data)
    return profile_error_to_rejection(caught.value)


def test_client_profile_accepts_the_minimal_fields() -> None:
    """Name, RFC, e-mail, postal code, régimen and uso are enough for a client."""
    profile = client()
    assert (profile.rfc, profile.regimen_fiscal, profile.uso_cfdi) == (
        "GODE561231GR8",
        "612",
        "G03",
    )
    assert profile.extra_emails == ()
    assert profile.address is None


def test_client_profile_accepts_every_optional_field() -> None:
    """A fully filled profile keeps each value, nested ones as models."""
    profile = client(
        trade_name="Ferre Díaz",
        phone="+52 (55) 1234-5678",
        extra_emails=["contabilidad@ferreteriadiaz.com.mx", "dueno@gmail.com"],
        address={
            "state": "CDMX",
            "city": "Ciudad de México",
            "colonia": "Roma Norte",
            "street": "Álvaro Obregón",
            "number_ext": "120",
            "number_int": "3-B",
            "reference": "Frente al parque",
        },
        person_type="fisica",
        legal_rep={"name": "Eduardo Gómez Díaz"},
        financial_contact={
            "name": "Ana Ruiz",
            "position": "Contadora",
            "email": "ana@ferreteriadiaz.com.mx",
            "phone": "5512345678",
        },
        technical_contact={"name": "Luis Pérez", "phone": "33 1234 5678"},
        bulk_stamp_price="1.20",
        discount_pct="7.5",
        credit_days=30,
        comments="Paga por transferencia.",
    )
    assert profile.address == Address(
        state="CDMX",
        city="Ciudad de México",
        colonia="Roma Norte",
        street="Álvaro Obregón",
        number_ext="120",
        number_int="3-B",
        reference="Frente al parque",
    )
    assert profile.legal_rep == Contact(name="Eduardo Gómez Díaz")
    assert profile.extra_emails == ("contabilidad@ferreteriadiaz.com.mx", "dueno@gmail.com")
    assert profile.discount_pct == Decimal("7.5")
    assert profile.credit_days == 30


def test_profile_is_frozen() -> None:
    """A validated profile cannot be changed in place."""
    profile = client()
    with pytest.raises(pydantic.ValidationError):
        profile.name = "Otro"


def test_profile_trims_free_text() -> None:
    """Blanks around a name are dropped."""
    assert client(name="  Ferretería Díaz \t").name == "Ferretería Díaz"


def test_profile_normalizes_the_rfc_to_upper_case() -> None:
    """The RFC is stored as the SAT writes it."""
    assert client(rfc="gode561231gr8").rfc == "GODE561231GR8"


def test_profile_keeps_rfc_warnings_retrievable() -> None:
    """A wrong check digit passes validation and shows up as a warning."""
    assert client(rfc="VACE460910SX6").rfc_warnings() == ("rfc_check_digit",)


def test_profile_without_rfc_warnings_has_none() -> None:
    """A verified RFC has no warnings."""
    assert client().rfc_warnings() == ()


def test_profile_gives_the_bulk_stamp_price_in_centavos() -> None:
    """'1.20' is 120 centavos."""
    assert client(bulk_stamp_price="1.20").bulk_stamp_price_centavos() == 120


def test_profile_without_bulk_stamp_price_gives_none() -> None:
    """No price set is None, not zero."""
    assert client().bulk_stamp_price_centavos() is None


def test_client_profile_accepts_the_generic_rfc_with_its_regimen() -> None:
    """Público en general (XAXX010101000) with 616 and S01 is a valid client."""
    profile = client(rfc="XAXX010101000", regimen_fiscal="616", uso_cfdi="S01")
    assert profile.rfc == "XAXX010101000"


def test_distributor_profile_accepts_the_minimal_fields() -> None:
    """A distributor needs neither régimen nor uso."""
    profile = DistributorProfile.model_validate(DISTRIBUTOR)
    assert (profile.regimen_fiscal, profile.uso_cfdi) == (None, None)


def test_distributor_profile_checks_a_regimen_when_given() -> None:
    """A persona moral distributor cannot be in a físicas-only régimen."""
    rejection = rejection_of(DistributorProfile, {**DISTRIBUTOR, "regimen_fiscal": "612"})
    assert rejection.code == "invalid_command"
    assert [error["field"] for error in rejection.details["errors"]] == ["profile.regimen_fiscal"]


def test_client_profile_requires_regimen_and_uso() -> None:
    """A client without régimen fiscal and uso CFDI is invalid_command on both fields."""
    data = {
        key: value for key, value in CLIENT.items() if key not in ("regimen_fiscal", "uso_cfdi")
    }
    rejection = rejection_of(ClientProfile, data)
    assert rejection.code == "invalid_command"
    assert rejection.details == {
        "errors": [
            {"field": "profile.regimen_fiscal", "type": "missing", "message": "Field required"},
            {"field": "profile.uso_cfdi", "type": "missing", "message": "Field required"},
        ]
    }


def test_bad_rfc_maps_to_invalid_rfc() -> None:
    """An RFC with a bad format is invalid_rfc on profile.rfc, with a Spanish message."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "rfc": "GODE561331GR8"})
    assert rejection.code == "invalid_rfc"
    assert rejection.details == {
        "errors": [
            {
                "field": "profile.rfc",
                "type": "invalid_rfc",
                "message": "El RFC no es válido: contiene una fecha imposible.",
            }
        ]
    }


def test_rfc_with_spaces_maps_to_invalid_rfc() -> None:
    """Spaces inside the RFC are not stripped: the profile is invalid_rfc."""
    assert rejection_of(ClientProfile, {**CLIENT, "rfc": "GODE 561231 GR8"}).code == "invalid_rfc"


@pytest.mark.parametrize(("field", "value"), [("postal_code", "0660"), ("uso_cfdi", "Z99")])
def test_bad_rfc_wins_over_other_field_errors(field: str, value: str) -> None:
    """With the RFC and another field wrong (a postal code, or an uso de CFDI not in the
    catalogue: catalogue codes are checked even when the RFC failed, person-type checks wait
    for it), the code is invalid_rfc and both are listed."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "rfc": "XX", field: value})
    assert rejection.code == "invalid_rfc"
    fields = [error["field"] for error in rejection.details["errors"]]
    assert fields == ["profile.rfc", f"profile.{field}"]


def test_rejection_does_not_echo_input_values() -> None:
    """Neither the RFC nor the e-mail given appear in the rejection."""
    rejection = rejection_of(
        ClientProfile, {**CLIENT, "rfc": "ZZZZ991399ZZZ", "email": "juan.perez@@correo.mx"}
    )
    text = repr(rejection.to_dict())
    assert "ZZZZ991399ZZZ" not in text
    assert "juan.perez" not in text


@pytest.mark.parametrize("postal_code", ["0660", "066000", "06 600", "O6600", "06600 ", 6600])
def test_profile_rejects_a_postal_code_that_is_not_five_digits(postal_code: object) -> None:
    """The postal code is exactly five ASCII digits, given as text."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "postal_code": postal_code})
    assert rejection.code == "invalid_command"
    assert [error["field"] for error in rejection.details["errors"]] == ["profile.postal_code"]


@pytest.mark.parametrize(
    "email",
    [
        "ana",
        "ana@",
        "@correo.mx",
        "ana@correo",
        "ana correo@correo.mx",
        "ana@@correo.mx",
        "ana..ruiz@correo.mx",
        ".ana@correo.mx",
        "ana@-correo.mx",
        "ana@correo.mx ",
        "a" * 65 + "@correo.mx",
    ],
)
def test_profile_rejects_a_malformed_email(email: str) -> None:
    """An address without a proper local part, '@' and dotted domain is invalid_command."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "email": email})
    assert rejection.code == "invalid_command"
    assert rejection.details["errors"][0]["field"] == "profile.email"
    assert rejection.details["errors"][0]["type"] == "email"


@pytest.mark.parametrize(
    "email", ["ana.ruiz+facturas@correo.com.mx", "A_B@sub.dominio-mx.org", "x@y.io"]
)
def test_profile_accepts_ordinary_emails(email: str) -> None:
    """Dots, plus tags, underscores, hyphens and sub-domains are fine."""
    assert client(email=email).email == email


def test_profile_rejects_more_than_two_extra_emails() -> None:
    """At most two extra e-mails are kept."""
    rejection = rejection_of(
        ClientProfile, {**CLIENT, "extra_emails": ["a@correo.mx", "b@correo.mx", "c@correo.mx"]}
    )
    assert rejection.code == "invalid_command"
    assert rejection.details["errors"][0]["field"] == "profile.extra_emails"


def test_profile_reports_the_index_of_a_bad_extra_email() -> None:
    """A bad second extra e-mail is reported at profile.extra_emails.1."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "extra_emails": ["a@correo.mx", "b@"]})
    assert rejection.details["errors"][0]["field"] == "profile.extra_emails.1"


def test_profile_rejects_unknown_fields() -> None:
    """A misspelt field is an error, not silently dropped."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "codigo_postal": "06600"})
    assert rejection.code == "invalid_command"
    assert rejection.details["errors"][0]["field"] == "profile.codigo_postal"
    assert rejection.details["errors"][0]["type"] == "extra_forbidden"


def test_profile_rejects_unknown_fields_in_nested_models() -> None:
    """A misspelt address field is reported with its full path."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "address": {"calle": "Reforma"}})
    assert rejection.details["errors"][0]["field"] == "profile.address.calle"


def test_profile_rejects_a_contact_without_name() -> None:
    """A contact needs at least a name."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "legal_rep": {"email": "a@correo.mx"}})
    assert rejection.details["errors"][0]["field"] == "profile.legal_rep.name"


def test_profile_rejects_a_blank_name() -> None:
    """A name of only blanks is empty once trimmed."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "name": "   "})
    assert rejection.details["errors"][0]["field"] == "profile.name"


@pytest.mark.parametrize("phone", ["123", "55-1234-abcd", "1" * 21])
def test_profile_rejects_a_bad_phone(phone: str) -> None:
    """A phone needs 7 to 20 digits and only phone punctuation."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "phone": phone})
    assert rejection.details["errors"][0]["field"] == "profile.phone"


@pytest.mark.parametrize("price", ["1.5", "1", 1.5, "-1.00", "1,200.00"])
def test_profile_rejects_a_bulk_stamp_price_that_is_not_money_text(price: object) -> None:
    """The bulk stamp price is text with exactly two decimals."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "bulk_stamp_price": price})
    assert rejection.code == "invalid_command"
    assert rejection.details["errors"][0]["field"] == "profile.bulk_stamp_price"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        *(("discount_pct", discount) for discount in (-1, "100.01", "7.125", True)),
        *(("credit_days", days) for days in (-1, 366, "30", 30.0, True)),
    ],
)
def test_profile_rejects_a_discount_or_credit_days_out_of_range(field: str, value: object) -> None:
    """discount_pct is 0 to 100 with at most two decimals; credit_days is an integer from 0 to
    365, not text or a float."""
    rejection = rejection_of(ClientProfile, {**CLIENT, field: value})
    assert rejection.details["errors"][0]["field"] == f"profile.{field}"


@pytest.mark.parametrize(
    ("field", "bound"),
    [("discount_pct", 0), ("discount_pct", 100), ("credit_days", 0), ("credit_days", 365)],
)
def test_profile_accepts_the_bounds_of_discount_and_credit_days(field: str, bound: int) -> None:
    """0 and 100 percent, 0 and 365 days, are all allowed."""
    assert getattr(client(**{field: bound}), field) == bound


def test_client_profile_rejects_an_unknown_regimen() -> None:
    """A régimen not in the SAT catalogue is invalid_command on its field."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "regimen_fiscal": "600"})
    assert rejection.code == "invalid_command"
    assert rejection.details["errors"] == [
        {
            "field": "profile.regimen_fiscal",
            "type": "catalogue",
            "message": "El régimen fiscal no existe en el catálogo del SAT.",
        }
    ]


def test_client_profile_rejects_a_regimen_of_the_other_person_type() -> None:
    """A 13-character RFC (física) cannot be in 601 (morales only)."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "regimen_fiscal": "601"})
    assert rejection.details["errors"][0]["message"] == (
        "El régimen fiscal 601 no aplica a personas físicas."
    )


def test_client_profile_rejects_a_uso_of_the_other_person_type() -> None:
    """A persona moral cannot use D01 (a personal deduction)."""
    rejection = rejection_of(
        ClientProfile, {**CLIENT, "rfc": "MAB9307148T4", "regimen_fiscal": "601", "uso_cfdi": "D01"}
    )
    assert rejection.details["errors"][0]["field"] == "profile.uso_cfdi"
    assert rejection.details["errors"][0]["message"] == (
        "El uso de CFDI D01 no aplica a personas morales."
    )


def test_client_profile_rejects_a_uso_that_does_not_admit_the_regimen() -> None:
    """CN01 (nómina) does not admit régimen 612."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "uso_cfdi": "CN01"})
    assert rejection.code == "invalid_command"
    assert rejection.details["errors"][0]["message"] == (
        "El uso de CFDI CN01 no admite el régimen fiscal 612 del receptor."
    )


def test_profile_rejects_a_person_type_that_contradicts_the_rfc() -> None:
    """A 13-character RFC is a persona física, so person_type 'moral' is refused."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "person_type": "moral"})
    assert rejection.details["errors"][0]["field"] == "profile.person_type"


def test_profile_rejects_an_unknown_person_type() -> None:
    """person_type is 'fisica' or 'moral'."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "person_type": "empresa"})
    assert rejection.details["errors"][0]["type"] == "literal_error"


def test_profile_that_is_not_an_object_is_reported_at_the_profile() -> None:
    """A profile given as text is invalid_command on 'profile' itself."""
    rejection = rejection_of(ClientProfile, "Ferretería")  # type: ignore[arg-type]
    assert rejection.code == "invalid_command"
    assert rejection.details["errors"][0]["field"] == "profile"


def test_rejection_prefix_can_be_chosen() -> None:
    """Callers nesting a profile elsewhere choose the field prefix."""
    with pytest.raises(pydantic.ValidationError) as caught:
        ClientProfile.model_validate({**CLIENT, "postal_code": "1"})
    rejection = profile_error_to_rejection(caught.value, prefix="row")
    assert rejection.details["errors"][0]["field"] == "row.postal_code"


@pytest.mark.parametrize("rfc", ["XAXX010101000", "XEXX010101000"])
def test_a_generic_rfc_needs_regimen_616(rfc: str) -> None:
    """Público en general and extranjeros are régimen 616 (SAT, CFDI 4.0): another régimen is
    invalid_command naming the field, as any catalogue mismatch."""
    rejection = rejection_of(ClientProfile, {**CLIENT, "rfc": rfc, "regimen_fiscal": "612"})
    assert rejection.code == "invalid_command"
    fields = [(e["field"], e["type"]) for e in rejection.details["errors"]]
    assert ("profile.regimen_fiscal", "catalogue") in fields


@pytest.mark.parametrize("rfc", ["XAXX010101000", "XEXX010101000"])
def test_a_generic_rfc_needs_uso_s01(rfc: str) -> None:
    """With 616, a uso other than S01 is invalid_command naming profile.uso_cfdi."""
    profile = {**CLIENT, "rfc": rfc, "regimen_fiscal": "616", "uso_cfdi": "CP01"}
    rejection = rejection_of(ClientProfile, profile)
    assert [(e["field"], e["type"]) for e in rejection.details["errors"]] == [
        ("profile.uso_cfdi", "catalogue")
    ]


def test_a_distributor_with_a_generic_rfc_names_only_616_and_s01() -> None:
    """A distributor may leave régimen and uso out; given, they must be 616 and S01."""
    generic = {**DISTRIBUTOR, "rfc": "XAXX010101000"}
    assert DistributorProfile.model_validate(generic).regimen_fiscal is None
    rejection = rejection_of(DistributorProfile, {**generic, "regimen_fiscal": "605"})
    assert [e["field"] for e in rejection.details["errors"]] == ["profile.regimen_fiscal"]
