"""Distributor and client profiles as they arrive from outside (DESIGN §4 "Profiles").

Pydantic models, frozen and closed to unknown fields, validate a profile at the boundary: the RFC
through ``ledger.rfc``, régimen fiscal and uso CFDI through ``ledger.catalogs``, money through
``ledger.money``. ``profile_error_to_rejection`` turns pydantic's error into the ledger's
``Rejected`` without echoing any input value, because profiles carry personal data.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from ledger.catalogs import check_regimen, check_uso, regimen, uso
from ledger.commands.fields import CLEAN, CLEAN_MULTILINE, Email, Phone
from ledger.errors import Rejected
from ledger.money import parse_money
from ledger.rfc import GENERIC_RFCS, validate_rfc

EXTRA_EMAILS_MAX = 2
GENERIC_REGIMEN = "616"
GENERIC_USO = "S01"
"""What the SAT's generic RFCs (público en general, extranjeros) take in CFDI 4.0."""

# Bounds on every text so one request cannot carry megabytes of personal data into the events.
_NAME_CHARS_MAX = 254
_TEXT_CHARS_MAX = 254
_COMMENTS_CHARS_MAX = 2000


def _check_rfc(value: str) -> str:
    try:
        return validate_rfc(value).rfc
    except Rejected as rejection:
        raise PydanticCustomError("invalid_rfc", rejection.message) from None


def _check_money(value: str, info: ValidationInfo) -> str:
    try:
        parse_money(value, field=info.field_name or "amount")
    except Rejected as rejection:
        raise PydanticCustomError("money", rejection.message) from None
    return value


# Free text is trimmed, since surrounding blanks from forms and spreadsheets carry no meaning.
# Codes (RFC, postal code, e-mail) are not: a blank inside them is an error to report.
# Every text refuses control characters (``CLEAN``), checked before anything reads the text.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=_NAME_CHARS_MAX),
    CLEAN,
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=_TEXT_CHARS_MAX), CLEAN]
Comments = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=_COMMENTS_CHARS_MAX),
    CLEAN_MULTILINE,
]
RFCText = Annotated[str, StringConstraints(max_length=20), CLEAN, AfterValidator(_check_rfc)]
PostalCode = Annotated[str, StringConstraints(max_length=5, pattern=r"^[0-9]{5}$")]
CatalogueCode = Annotated[str, StringConstraints(min_length=1, max_length=4), CLEAN]
MoneyText = Annotated[str, StringConstraints(max_length=20), CLEAN, AfterValidator(_check_money)]


class _Input(BaseModel):
    """Outside input: immutable once validated, and a misspelt field is an error, not ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Contact(_Input):
    """A person to reach at a client or distributor (legal representative, finance, tech)."""

    name: Name
    position: Text | None = None
    email: Email | None = None
    phone: Phone | None = None


class Address(_Input):
    """A postal address in Mexico; the postal code lives on the profile itself."""

    state: Text | None = None
    city: Text | None = None
    colonia: Text | None = None
    street: Text | None = None
    number_ext: Text | None = None
    number_int: Text | None = None
    reference: Text | None = None


class _Profile(_Input):
    """The fields distributor and client profiles share (DESIGN §4 "Profiles")."""

    name: Name
    # Declared before régimen and uso: their validators read the RFC validated before them.
    rfc: RFCText
    email: Email
    postal_code: PostalCode
    regimen_fiscal: CatalogueCode | None = None
    uso_cfdi: CatalogueCode | None = None
    trade_name: Name | None = None
    phone: Phone | None = None
    extra_emails: tuple[Email, ...] = Field(default=(), max_length=EXTRA_EMAILS_MAX)
    address: Address | None = None
    person_type: Literal["fisica", "moral"] | None = None
    legal_rep: Contact | None = None
    financial_contact: Contact | None = None
    technical_contact: Contact | None = None
    bulk_stamp_price: MoneyText | None = None
    # Decimal, not float: a percentage such as 7.5 applied to centavos must stay exact.
    discount_pct: Decimal | None = Field(default=None, ge=0, le=100, decimal_places=2)
    # strict: "30" or 30.0 in a day count is a sign of a confused caller, not a number to guess.
    credit_days: int | None = Field(default=None, ge=0, le=365, strict=True)
    comments: Comments | None = None

    @field_validator("regimen_fiscal")
    @classmethod
    def _check_regimen_fiscal(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        # The RFC is absent here when it failed its own validation; that error is reported
        # already, and the person type cannot be known without it.
        rfc = info.data.get("rfc")
        try:
            if rfc is None:
                regimen(value)
            else:
                check_regimen(value, validate_rfc(rfc).catalogue_person_type)
        except Rejected as rejection:
            raise PydanticCustomError("catalogue", rejection.message) from None
        if rfc in GENERIC_RFCS and value != GENERIC_REGIMEN:
            # SAT, CFDI 4.0: público en general and extranjeros are receptors in régimen 616.
            raise PydanticCustomError(
                "catalogue",
                "Un RFC genérico solo admite el régimen fiscal 616 (Sin obligaciones fiscales).",
            )
        return value

    @field_validator("uso_cfdi")
    @classmethod
    def _check_uso_cfdi(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        rfc = info.data.get("rfc")
        # Only a régimen that passed its own check is compared with the uso.
        regimen_code = info.data.get("regimen_fiscal")
        try:
            if rfc is None:
                uso(value)
            else:
                check_uso(
                    value,
                    validate_rfc(rfc).catalogue_person_type,
                    regimen_code=regimen_code,
                )
        except Rejected as rejection:
            raise PydanticCustomError("catalogue", rejection.message) from None
        if rfc in GENERIC_RFCS and value != GENERIC_USO:
            # SAT, CFDI 4.0: a CFDI to a generic RFC has uso S01 (Sin efectos fiscales).
            raise PydanticCustomError(
                "catalogue",
                "Un RFC genérico solo admite el uso de CFDI S01 (Sin efectos fiscales).",
            )
        return value

    @field_validator("person_type")
    @classmethod
    def _check_person_type(
        cls, value: Literal["fisica", "moral"] | None, info: ValidationInfo
    ) -> Literal["fisica", "moral"] | None:
        rfc = info.data.get("rfc")
        if value is None or rfc is None:
            return value
        check = validate_rfc(rfc)
        # A generic RFC says nothing about who is behind it, so any person type goes with it.
        if check.person_type not in ("generic", value):
            raise PydanticCustomError(
                "person_type",
                "El tipo de persona no corresponde al RFC (12 caracteres moral, 13 física).",
            )
        return value

    def rfc_warnings(self) -> tuple[str, ...]:
        """The RFC's warnings (e.g. ``rfc_check_digit``), to report alongside a success."""
        return validate_rfc(self.rfc).warnings

    def bulk_stamp_price_centavos(self) -> int | None:
        """The bulk stamp price in centavos, or None when the profile sets none."""
        if self.bulk_stamp_price is None:
            return None
        return parse_money(self.bulk_stamp_price, field="bulk_stamp_price")


class DistributorProfile(_Profile):
    """A distributor's profile; régimen fiscal and uso CFDI are optional but checked if given."""


class ClientProfile(_Profile):
    """A client's profile; régimen fiscal and uso CFDI are required (CFDI 4.0 receptor data)."""

    regimen_fiscal: CatalogueCode
    uso_cfdi: CatalogueCode


# Changes ----------------------------------------------------------------------------------------

REQUIRED_CLIENT_FIELDS = frozenset(
    name for name, info in ClientProfile.model_fields.items() if info.is_required()
)
"""Fields a client's profile always has: a change may set them, never clear them."""
NESTED_FIELDS = ("address", "legal_rep", "financial_contact", "technical_contact")
"""The profile's nested objects: a change merges into them field by field."""


def _not_null(value: object, info: ValidationInfo) -> object:
    if value is None:
        # Type "missing", as for an absent required field: a malformed command, not a bad RFC.
        raise PydanticCustomError(
            "missing",
            "El campo {field} es obligatorio: no se puede borrar.",
            {"field": info.field_name},
        )
    return value


class ContactChange(_Input):
    """The fields of a contact to change (``null`` clears one; the name cannot be cleared)."""

    name: Name | None = None
    position: Text | None = None
    email: Email | None = None
    phone: Phone | None = None

    @field_validator("name")
    @classmethod
    def _name_stays(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _not_null(value, info)  # type: ignore[return-value]


class ClientProfileChange(_Input):
    """The fields of a client's profile to change: only those named change.

    A field given as ``null`` is cleared (an optional one; ``name``, ``rfc``, ``email``,
    ``postal_code``, ``regimen_fiscal`` and ``uso_cfdi`` cannot be). A nested object (address,
    a contact) given is merged the same way, field by field; given as ``null`` it is cleared
    whole. The profile that results is checked as a whole (the RFC against the régimen, ...).
    """

    name: Name | None = None
    rfc: RFCText | None = None
    email: Email | None = None
    postal_code: PostalCode | None = None
    regimen_fiscal: CatalogueCode | None = None
    uso_cfdi: CatalogueCode | None = None
    trade_name: Name | None = None
    phone: Phone | None = None
    extra_emails: tuple[Email, ...] | None = Field(default=None, max_length=EXTRA_EMAILS_MAX)
    address: Address | None = None
    person_type: Literal["fisica", "moral"] | None = None
    legal_rep: ContactChange | None = None
    financial_contact: ContactChange | None = None
    technical_contact: ContactChange | None = None
    bulk_stamp_price: MoneyText | None = None
    discount_pct: Decimal | None = Field(default=None, ge=0, le=100, decimal_places=2)
    credit_days: int | None = Field(default=None, ge=0, le=365, strict=True)
    comments: Comments | None = None

    @field_validator(*sorted(REQUIRED_CLIENT_FIELDS))
    @classmethod
    def _required_stay(cls, value: object, info: ValidationInfo) -> object:
        return _not_null(value, info)

    def named(self) -> tuple[str, ...]:
        """The fields the change names, in the profile's order."""
        return tuple(name for name in type(self).model_fields if name in self.model_fields_set)

    def apply_to(self, profile: dict[str, Any]) -> dict[str, Any]:
        """``profile`` (as stored: JSON values) with this change merged in."""
        merged = dict(profile)
        for name in self.named():
            value = getattr(self, name)
            if value is None:
                merged.pop(name, None)
            elif name in NESTED_FIELDS:
                assert isinstance(value, BaseModel)
                inner = dict(merged.get(name) or {})
                for key in value.model_fields_set:
                    given = getattr(value, key)
                    if given is None:
                        inner.pop(key, None)
                    else:
                        inner[key] = value.model_dump(mode="json", include={key})[key]
                if inner:
                    merged[name] = inner
                else:
                    merged.pop(name, None)
            else:
                merged[name] = self.model_dump(mode="json", include={name})[name]
        return merged


def profile_error_to_rejection(exc: ValidationError, *, prefix: str = "profile") -> Rejected:
    """Translate a profile's ``ValidationError`` into ``invalid_rfc`` or ``invalid_command``."""
    errors: list[dict[str, Any]] = []
    rfc_failed = False
    # include_input=False: the errors go back to callers and into logs, and a profile is
    # personal data; pydantic's messages themselves name types and limits, not values.
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        location = [str(part) for part in error["loc"]]
        if location[:1] == ["rfc"]:
            rfc_failed = True
        errors.append(
            {
                "field": ".".join([prefix, *location]),
                "type": error["type"],
                "message": error["msg"],
            }
        )
    return Rejected("invalid_rfc" if rfc_failed else "invalid_command", errors=errors)
