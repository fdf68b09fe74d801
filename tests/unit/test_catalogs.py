"""The SAT régimen fiscal and uso CFDI catalogues (ledger.catalogs)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest

from ledger.catalogs import check_regimen, check_regimen_uso, check_uso, regimen, uso
from ledger.errors import Rejected


def test_regimen_returns_the_catalogue_row() -> None:
    """Régimen 601 is General de Ley Personas Morales, for morales only."""
    found = regimen("601")
    assert found.description == "General de Ley Personas Morales"
    assert (found.persona_fisica, found.persona_moral) == (False, True)
    assert found.valid_from == date(2022, 1, 1)
    assert found.valid_to is None


def test_regimen_reads_quoted_descriptions() -> None:
    """A description with commas (quoted in the CSV) is read whole."""
    assert regimen("622").description == (
        "Actividades Agrícolas, Ganaderas, Silvícolas y Pesqueras"
    )


def test_uso_returns_the_admitted_receptor_regimenes() -> None:
    """Uso CN01 (Nómina) admits only régimen 605 and only personas físicas."""
    found = uso("CN01")
    assert found.receptor_regimenes == frozenset({"605"})
    assert (found.persona_fisica, found.persona_moral) == (True, False)


@pytest.mark.parametrize(
    ("look_up", "code", "field"),
    [(regimen, "999", "regimen_fiscal"), (uso, "G99", "uso_cfdi")],
    ids=["regimen", "uso"],
)
def test_an_unknown_code_is_refused(
    look_up: Callable[[str], object], code: str, field: str
) -> None:
    """An unknown régimen or uso is invalid_command on its field."""
    with pytest.raises(Rejected) as caught:
        look_up(code)
    assert caught.value.code == "invalid_command"
    assert caught.value.details == {"field": field, "reason": "unknown"}


def test_uso_codes_are_case_sensitive() -> None:
    """'g03' is not the SAT code G03."""
    with pytest.raises(Rejected) as caught:
        uso("g03")
    assert caught.value.code == "invalid_command"


def test_check_regimen_uso_accepts_a_valid_fisica_pair() -> None:
    """A persona física in 612 may receive invoices for G03 (gastos en general)."""
    found_regimen, found_uso = check_regimen_uso("612", "G03", "fisica")
    assert (found_regimen.code, found_uso.code) == ("612", "G03")


def test_check_regimen_uso_accepts_a_valid_moral_pair() -> None:
    """A persona moral in 601 may receive invoices for I04 (equipo de cómputo)."""
    found_regimen, found_uso = check_regimen_uso("601", "I04", "moral")
    assert (found_regimen.code, found_uso.code) == ("601", "I04")


def test_check_regimen_uso_accepts_the_generic_receptor_pair() -> None:
    """616 (sin obligaciones fiscales) with S01 is what público en general uses."""
    found_regimen, found_uso = check_regimen_uso("616", "S01", "fisica")
    assert (found_regimen.code, found_uso.code) == ("616", "S01")


def test_check_regimen_uso_accepts_a_regimen_for_both_person_types() -> None:
    """626 (RESICO) is valid for personas físicas and morales alike."""
    check_regimen_uso("626", "G01", "fisica")
    check_regimen_uso("626", "G01", "moral")


@pytest.mark.parametrize(
    ("regimen_code", "uso_code", "person_type", "details"),
    [
        # 601 is for personas morales only.
        ("601", "G03", "fisica", {"field": "regimen_fiscal", "reason": "person_type"}),
        # 612 is for personas físicas only.
        ("612", "G03", "moral", {"field": "regimen_fiscal", "reason": "person_type"}),
        # D01 (honorarios médicos) is a personal deduction, for personas físicas only.
        ("601", "D01", "moral", {"field": "uso_cfdi", "reason": "person_type"}),
        # CN01 (nómina) admits only régimen 605, not 612.
        ("612", "CN01", "fisica", {"field": "uso_cfdi", "reason": "regimen_not_admitted"}),
        # An unknown régimen is reported before the uso is looked at.
        ("600", "G03", "moral", {"field": "regimen_fiscal", "reason": "unknown"}),
        # An unknown uso is invalid_command on the uso_cfdi field.
        ("601", "P01", "moral", {"field": "uso_cfdi", "reason": "unknown"}),
    ],
    ids=[
        "a_moral_regimen_for_a_fisica",
        "a_fisica_regimen_for_a_moral",
        "a_fisica_uso_for_a_moral",
        "a_uso_that_does_not_admit_the_regimen",
        "an_unknown_regimen",
        "an_unknown_uso",
    ],
)
def test_check_regimen_uso_rejects(
    regimen_code: str, uso_code: str, person_type: str, details: dict[str, str]
) -> None:
    """A pair the catalogues refuse is invalid_command naming the field and the reason."""
    with pytest.raises(Rejected) as caught:
        check_regimen_uso(regimen_code, uso_code, person_type)
    assert caught.value.code == "invalid_command"
    assert caught.value.details == details


def test_check_regimen_uso_rejects_g03_for_sin_obligaciones() -> None:
    """G03 does not admit 616, which only S01 and CP01 (and G02) do."""
    with pytest.raises(Rejected) as caught:
        check_regimen_uso("616", "G03", "fisica")
    assert caught.value.details["reason"] == "regimen_not_admitted"


def test_check_regimen_rejects_a_code_not_yet_in_force() -> None:
    """A day before a code's valid_from is refused when a day is given."""
    with pytest.raises(Rejected) as caught:
        check_regimen("601", "moral", on=date(2021, 12, 31))
    assert caught.value.details == {"field": "regimen_fiscal", "reason": "not_in_force"}


def test_check_uso_accepts_a_code_in_force() -> None:
    """A day inside the validity window passes."""
    assert check_uso("G03", "moral", on=date(2026, 1, 1)).code == "G03"


def test_catalogues_are_loaded_once() -> None:
    """Two look-ups return the very same record, read from the CSV once."""
    assert regimen("601") is regimen("601")
