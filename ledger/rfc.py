"""RFC (Registro Federal de Contribuyentes) validation for profiles (DESIGN §4 RegisterClient).

12 characters is a persona moral, 13 a persona física; the SAT's generic RFCs (público en general,
extranjeros) are allowed. A bad format, length or impossible date is an error. A bad check digit
is only a warning: the SAT has issued RFCs whose check digits do not verify (python-stdnum
estimates about 1.5 % of those in use), and refusing a taxpayer's real RFC helps nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from stdnum.exceptions import InvalidComponent as StdnumInvalidComponent
from stdnum.exceptions import ValidationError as StdnumValidationError
from stdnum.mx import rfc as stdnum_rfc

from ledger.catalogs import PersonType
from ledger.errors import Rejected

GENERIC_RFCS = frozenset({"XAXX010101000", "XEXX010101000"})
"""The SAT's generic RFCs: público en general (XAXX) and foreign residents (XEXX)."""

CHECK_DIGIT_WARNING = "rfc_check_digit"
"""Warning code for an RFC whose homoclave or check digit does not verify."""

RFC_LENGTH_MORAL = 12
RFC_LENGTH_FISICA = 13

# Checked on the text as given, before upper-casing, because str.upper() maps some non-ASCII
# letters onto ASCII ones (the Turkish dotless i becomes "I") and would let them through. No
# spaces or hyphens: DESIGN wants the RFC written plainly, and stdnum would strip them silently.
_RFC_CHARACTERS = re.compile(r"[A-Za-z0-9&Ññ]+")

# A rejected RFC is echoed back to help the user, but never an unbounded string.
_ECHO_CHARS_MAX = 20

_REASON_MESSAGES = {
    "characters": "solo admite letras, dígitos, & y Ñ, sin espacios ni guiones",
    "length": "debe tener 12 caracteres (persona moral) o 13 (persona física)",
    "format": "no tiene el formato de un RFC",
    "date": "contiene una fecha imposible",
    "forbidden_word": "empieza con una palabra que el SAT no asigna",
}


@dataclass(frozen=True, slots=True)
class RFCCheck:
    """A valid RFC: its normalized (upper-case) text, person type and any warnings."""

    rfc: str
    person_type: Literal["fisica", "moral", "generic"]
    warnings: tuple[str, ...] = ()

    @property
    def catalogue_person_type(self) -> PersonType:
        """The person type the SAT catalogues apply: generic RFCs count as personas físicas."""
        # XAXX010101000 / XEXX010101000 have 13 characters and the SAT pairs them with régimen
        # 616 (Sin obligaciones fiscales), which only personas físicas may have.
        return "moral" if self.person_type == "moral" else "fisica"


def validate_rfc(rfc: str) -> RFCCheck:
    """Return the checked RFC; raise ``invalid_rfc`` for a bad format, length or date."""
    if _RFC_CHARACTERS.fullmatch(rfc) is None:
        raise _invalid(rfc, "characters")
    normalized = rfc.upper()
    if normalized in GENERIC_RFCS:
        # Their homoclave "000" is not one the SAT derives from a name, so stdnum's check-digit
        # pass would flag them; they are valid by definition.
        return RFCCheck(rfc=normalized, person_type="generic")
    # stdnum also accepts 10 characters (a persona física without homoclave); CFDI does not.
    if len(normalized) not in (RFC_LENGTH_MORAL, RFC_LENGTH_FISICA):
        raise _invalid(rfc, "length")
    try:
        stdnum_rfc.validate(normalized)
    except StdnumInvalidComponent:
        raise _invalid(rfc, _component_reason(normalized)) from None
    except StdnumValidationError:
        raise _invalid(rfc, "format") from None
    person_type: PersonType = "moral" if len(normalized) == RFC_LENGTH_MORAL else "fisica"
    # The second pass adds only the homoclave and check-digit rules, so a failure here is
    # about those and nothing else: a warning, not an error.
    warnings: tuple[str, ...] = ()
    if not stdnum_rfc.is_valid(normalized, validate_check_digits=True):
        warnings = (CHECK_DIGIT_WARNING,)
    return RFCCheck(rfc=normalized, person_type=person_type, warnings=warnings)


def _component_reason(normalized: str) -> str:
    # stdnum reports an impossible date and a forbidden name prefix with the same exception, once
    # the format matched; tell them apart for a useful message. The century is unknown: stdnum
    # reads "00".."99" as 2000..2099, which accepts 29 February wherever some century has one.
    date_start = 3 if len(normalized) == RFC_LENGTH_MORAL else 4
    digits = normalized[date_start : date_start + 6]
    try:
        date(2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
    except ValueError:
        return "date"
    return "forbidden_word"


def _invalid(rfc: str, reason: str) -> Rejected:
    return Rejected(
        "invalid_rfc",
        f"El RFC no es válido: {_REASON_MESSAGES[reason]}.",
        rfc=rfc[:_ECHO_CHARS_MAX],
        reason=reason,
    )
