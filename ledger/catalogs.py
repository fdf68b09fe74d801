"""The SAT CFDI 4.0 catalogues the ledger checks profiles against: régimen fiscal and uso CFDI.

The CSV files in ``ledger/data`` are read once, on first use, into frozen records. A régimen is
valid for personas físicas, morales or both; a uso CFDI is valid for some person types and admits
only some receptor regímenes (the ``receptor_regimenes`` column, from the SAT catalogue).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from ledger.errors import Rejected

PersonType = Literal["fisica", "moral"]
"""The SAT's two kinds of taxpayer: persona física (13-character RFC) or moral (12)."""

# Next to this module rather than importlib.resources: the package data is installed alongside
# the code (pyproject package-data), and a plain path works for namespace and regular packages.
_DATA_DIR = Path(__file__).resolve().parent / "data"

_REGIMEN_HEADER = (
    "code",
    "description",
    "persona_fisica",
    "persona_moral",
    "valid_from",
    "valid_to",
)
_USO_HEADER = (*_REGIMEN_HEADER, "receptor_regimenes")

_PERSON_TYPE_PLURAL: Mapping[PersonType, str] = {"fisica": "físicas", "moral": "morales"}


@dataclass(frozen=True, slots=True)
class _Entry:
    """What a régimen and a uso CFDI have alike: a code for some person types, in force for a
    span of days."""

    code: str
    description: str
    persona_fisica: bool
    persona_moral: bool
    valid_from: date
    valid_to: date | None

    def allows(self, person_type: PersonType) -> bool:
        """Whether a taxpayer (a receptor) of this person type may use this code."""
        return self.persona_fisica if person_type == "fisica" else self.persona_moral

    def in_force_on(self, day: date) -> bool:
        """Whether the SAT accepts this code on that day."""
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True, slots=True)
class Regimen(_Entry):
    """One régimen fiscal of the SAT catalogue c_RegimenFiscal."""


@dataclass(frozen=True, slots=True)
class Uso(_Entry):
    """One uso CFDI of the SAT catalogue c_UsoCFDI, with the receptor regímenes it admits."""

    receptor_regimenes: frozenset[str]


_Found = TypeVar("_Found", bound=_Entry)

_NAMES = {"regimen_fiscal": "El régimen fiscal", "uso_cfdi": "El uso de CFDI"}
"""How a rejection names each catalogue, by the profile field it checks."""


def _invalid(field: str, message: str, reason: str) -> Rejected:
    return Rejected("invalid_command", message, field=field, reason=reason)


def _find(entries: Mapping[str, _Found], code: str, field: str) -> _Found:
    found = entries.get(code)
    if found is None:
        raise _invalid(field, f"{_NAMES[field]} no existe en el catálogo del SAT.", "unknown")
    return found


def _require_person_type(found: _Found, field: str, person_type: PersonType) -> _Found:
    if not found.allows(person_type):
        plural = _PERSON_TYPE_PLURAL[person_type]
        message = f"{_NAMES[field]} {found.code} no aplica a personas {plural}."
        raise _invalid(field, message, "person_type")
    return found


def _require_in_force(found: _Found, field: str, on: date | None) -> _Found:
    if on is not None and not found.in_force_on(on):
        raise _invalid(field, f"{_NAMES[field]} {found.code} no está vigente.", "not_in_force")
    return found


def regimen(code: str) -> Regimen:
    """Return the régimen fiscal with that code; ``invalid_command`` if the SAT has none."""
    return _find(_regimenes(), code, "regimen_fiscal")


def uso(code: str) -> Uso:
    """Return the uso CFDI with that code; ``invalid_command`` if the SAT has none."""
    return _find(_usos(), code, "uso_cfdi")


def check_regimen(code: str, person_type: PersonType, *, on: date | None = None) -> Regimen:
    """Return the régimen if it exists (and is in force ``on`` that day) for that person type."""
    found = _require_person_type(regimen(code), "regimen_fiscal", person_type)
    return _require_in_force(found, "regimen_fiscal", on)


def check_uso(
    code: str,
    person_type: PersonType,
    *,
    regimen_code: str | None = None,
    on: date | None = None,
) -> Uso:
    """Return the uso if it exists for that person type and admits ``regimen_code`` (if given)."""
    found = _require_person_type(uso(code), "uso_cfdi", person_type)
    if regimen_code is not None and regimen_code not in found.receptor_regimenes:
        raise _invalid(
            "uso_cfdi",
            f"El uso de CFDI {code} no admite el régimen fiscal {regimen_code} del receptor.",
            "regimen_not_admitted",
        )
    return _require_in_force(found, "uso_cfdi", on)


def check_regimen_uso(
    regimen_code: str, uso_code: str, person_type: PersonType, *, on: date | None = None
) -> tuple[Regimen, Uso]:
    """Check a receptor's régimen and uso CFDI against the catalogues and each other."""
    found_regimen = check_regimen(regimen_code, person_type, on=on)
    found_uso = check_uso(uso_code, person_type, regimen_code=regimen_code, on=on)
    return found_regimen, found_uso


# The catalogues are packaged data: read them once per process, on first use, and share the
# read-only mappings (MappingProxyType) so no caller can edit them for everyone else.
@functools.cache
def _regimenes() -> Mapping[str, Regimen]:
    rows = _read_csv("c_RegimenFiscal.csv", _REGIMEN_HEADER)
    return MappingProxyType({row["code"]: Regimen(**_entry_fields(row)) for row in rows})


@functools.cache
def _usos() -> Mapping[str, Uso]:
    rows = _read_csv("c_UsoCFDI.csv", _USO_HEADER)
    return MappingProxyType(
        {
            row["code"]: Uso(
                **_entry_fields(row),
                receptor_regimenes=frozenset(row["receptor_regimenes"].split()),
            )
            for row in rows
        }
    )


def _entry_fields(row: dict[str, str]) -> dict[str, Any]:
    """The columns both catalogues have (``_REGIMEN_HEADER``), parsed."""
    return {
        "code": row["code"],
        "description": row["description"],
        "persona_fisica": _flag(row["persona_fisica"]),
        "persona_moral": _flag(row["persona_moral"]),
        "valid_from": date.fromisoformat(row["valid_from"]),
        "valid_to": _optional_date(row["valid_to"]),
    }


def _read_csv(name: str, header: tuple[str, ...]) -> list[dict[str, str]]:
    with (_DATA_DIR / name).open(encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        # A catalogue update that renames or reorders columns must fail loudly here, not
        # silently turn every flag into "not allowed".
        if tuple(reader.fieldnames or ()) != header:
            raise ValueError(f"{name}: unexpected header {reader.fieldnames!r}, want {header!r}")
        rows = list(reader)
    codes = [row["code"] for row in rows]
    if len(set(codes)) != len(codes):
        raise ValueError(f"{name}: duplicate codes")
    return rows


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"catalogue flag must be 0 or 1, got {text!r}")
    return text == "1"


def _optional_date(text: str) -> date | None:
    return date.fromisoformat(text) if text else None
