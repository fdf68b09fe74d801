"""RFC validation (ledger.rfc)."""

from __future__ import annotations

import pytest

from ledger.errors import Rejected
from ledger.rfc import CHECK_DIGIT_WARNING, RFCCheck, validate_rfc

# Real-shaped RFCs whose check digits verify: the first two come from python-stdnum's own
# doctests, SAT970701NN3 is the SAT's own RFC, and the Ñ and & ones were computed with
# stdnum.mx.rfc.calc_check_digit.
VALID_FISICA = "GODE561231GR8"
VALID_MORAL = "MAB9307148T4"
VALID_MORAL_SAT = "SAT970701NN3"
VALID_FISICA_WITH_ENIE = "MUÑO800101AB3"
VALID_MORAL_WITH_AMPERSAND = "A&C010203AB9"
# From stdnum's doctests too: well formed, but its check digit does not verify.
WRONG_CHECK_DIGIT = "VACE460910SX6"


def test_validate_rfc_accepts_a_persona_fisica() -> None:
    """13 characters is a persona física, without warnings when the check digit verifies."""
    assert validate_rfc(VALID_FISICA) == RFCCheck(rfc=VALID_FISICA, person_type="fisica")


def test_validate_rfc_accepts_a_persona_moral() -> None:
    """12 characters is a persona moral."""
    assert validate_rfc(VALID_MORAL) == RFCCheck(rfc=VALID_MORAL, person_type="moral")


def test_validate_rfc_accepts_the_sat_rfc() -> None:
    """The SAT's own RFC is a valid persona moral."""
    assert validate_rfc(VALID_MORAL_SAT).person_type == "moral"


def test_validate_rfc_accepts_enie() -> None:
    """Ñ is a letter of the RFC alphabet."""
    assert validate_rfc(VALID_FISICA_WITH_ENIE).warnings == ()


def test_validate_rfc_accepts_ampersand() -> None:
    """& appears in company RFCs (e.g. "A&C")."""
    assert validate_rfc(VALID_MORAL_WITH_AMPERSAND).warnings == ()


def test_validate_rfc_normalizes_to_upper_case() -> None:
    """Lower-case input, ñ included, is returned upper-case."""
    assert validate_rfc("muño800101ab3").rfc == VALID_FISICA_WITH_ENIE


def test_validate_rfc_accepts_the_generic_national_rfc() -> None:
    """XAXX010101000 (público en general) is allowed as a generic RFC."""
    assert validate_rfc("XAXX010101000") == RFCCheck(rfc="XAXX010101000", person_type="generic")


def test_validate_rfc_accepts_the_generic_foreign_rfc() -> None:
    """XEXX010101000 (residentes en el extranjero) is allowed as a generic RFC."""
    assert validate_rfc("XEXX010101000") == RFCCheck(rfc="XEXX010101000", person_type="generic")


def test_validate_rfc_warns_about_a_wrong_check_digit() -> None:
    """A bad check digit is a warning, not a rejection."""
    check = validate_rfc(WRONG_CHECK_DIGIT)
    assert check == RFCCheck(
        rfc=WRONG_CHECK_DIGIT, person_type="fisica", warnings=(CHECK_DIGIT_WARNING,)
    )
    assert CHECK_DIGIT_WARNING == "rfc_check_digit"


def test_validate_rfc_warns_about_a_malformed_homoclave() -> None:
    """A homoclave the SAT never assigns (0 first) is a check-digit warning too."""
    assert validate_rfc("GODE5612310R8").warnings == (CHECK_DIGIT_WARNING,)


def test_generic_rfc_counts_as_fisica_for_the_catalogues() -> None:
    """Generic RFCs take the personas físicas rows of the SAT catalogues."""
    assert validate_rfc("XAXX010101000").catalogue_person_type == "fisica"


def test_moral_rfc_counts_as_moral_for_the_catalogues() -> None:
    """A 12-character RFC takes the personas morales rows."""
    assert validate_rfc(VALID_MORAL).catalogue_person_type == "moral"


@pytest.mark.parametrize(
    ("rfc", "reason"),
    [
        ("GODE561231GR", "format"),  # 12 characters but a persona física's four letters
        ("GOD1561231GR8", "format"),  # a digit among the name letters
        ("GODE56123AGR8", "format"),  # a letter in the date
        ("COMG600703", "length"),  # a persona física without homoclave: not valid for CFDI
        ("GODE561231GR8X", "length"),
        ("", "characters"),
        ("GODE 561231 GR8", "characters"),  # spaces are not stripped
        ("GODE-561231-GR8", "characters"),  # nor hyphens
        (" GODE561231GR8", "characters"),
        ("GODE561231GR8\n", "characters"),
        ("GODE561231GR.", "characters"),
        ("\u0131ODE561231GR8", "characters"),  # dotless i would upper-case to an ASCII I
        ("GODE561331GR8", "date"),  # month 13
        ("GODE560230GR8", "date"),  # 30 February
        ("ABC010229AB1", "date"),  # 29 February in a year that has none
        ("PUTO561231GR8", "forbidden_word"),  # a word the SAT replaces ("PUTX")
    ],
)
def test_validate_rfc_rejects_a_bad_rfc(rfc: str, reason: str) -> None:
    """Bad characters, length, format or date are invalid_rfc with the reason."""
    with pytest.raises(Rejected) as caught:
        validate_rfc(rfc)
    assert caught.value.code == "invalid_rfc"
    assert caught.value.details == {"rfc": rfc, "reason": reason}


def test_validate_rfc_echoes_at_most_twenty_characters() -> None:
    """A long rejected value is cut before it goes back in the details."""
    with pytest.raises(Rejected) as caught:
        validate_rfc("A" * 1000)
    assert caught.value.details["rfc"] == "A" * 20


def test_validate_rfc_rejection_message_is_spanish() -> None:
    """The rejection tells the user what is wrong, in Spanish."""
    with pytest.raises(Rejected) as caught:
        validate_rfc("COMG600703")
    assert caught.value.message == (
        "El RFC no es válido: debe tener 12 caracteres (persona moral) o 13 (persona física)."
    )
