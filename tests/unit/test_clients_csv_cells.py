"""The cells of the clients CSV: the formula guard and the file's encoding (issue 19 item 7)."""

from __future__ import annotations

import codecs
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from adapters.cli.clients_csv import (
    CSV_COLUMNS,
    FORMULA_STARTS,
    LEGACY_CSV_COLUMNS,
    decode_file,
    guard_cell,
    unguard_cell,
)
from ledger.commands.profiles import ClientProfile

TEXTS = st.text(alphabet=st.sampled_from("=+-@'\t\rab ñ"), max_size=8) | st.text(max_size=20)


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=x", "''=x"),
        ("Juan Pérez", "Juan Pérez"),
        ("'Tis", "'Tis"),
        ("", ""),
    ],
)
def test_a_formula_is_written_after_a_quote(text: str, cell: str) -> None:
    """OWASP's guard: a cell that a spreadsheet would run starts with ``'``."""
    assert guard_cell(text) == cell
    assert unguard_cell(cell) == text


@given(TEXTS)
def test_the_guard_gives_every_text_back(text: str) -> None:
    """Whatever the text, the import reads back exactly what the export wrote."""
    assert unguard_cell(guard_cell(text)) == text


@given(TEXTS)
def test_no_guarded_cell_starts_like_a_formula(text: str) -> None:
    """A written cell never starts with = + - @, tab or CR."""
    assert not guard_cell(text).startswith(FORMULA_STARTS)


@pytest.mark.parametrize(
    "data",
    [
        "Peñaloza,Pérez".encode(),
        codecs.BOM_UTF8 + "Peñaloza,Pérez".encode(),
        "Peñaloza,Pérez".encode("cp1252"),
    ],
    ids=["utf-8", "utf-8 with BOM", "windows-1252"],
)
def test_utf8_with_or_without_bom_and_windows_1252_decode_alike(data: bytes) -> None:
    """What Excel writes in Mexico and what the export writes give the same text."""
    assert decode_file(data) == "Peñaloza,Pérez"


def test_bytes_that_are_neither_are_refused() -> None:
    """0x81 is undefined in Windows-1252 and not UTF-8 alone: the file cannot be read."""
    with pytest.raises(UnicodeDecodeError):
        decode_file(b"Pe\x81aloza")


def test_the_columns_hold_every_profile_field_and_start_with_the_older_format() -> None:
    """Up to three e-mails, the address, three contacts, prices, tags; legacy columns first."""
    assert CSV_COLUMNS[: len(LEGACY_CSV_COLUMNS)] == LEGACY_CSV_COLUMNS
    assert len(set(CSV_COLUMNS)) == len(CSV_COLUMNS)
    for column in (
        "extra_email_1",
        "extra_email_2",
        "address_street",
        "legal_rep_email",
        "financial_contact_phone",
        "technical_contact_name",
        "bulk_stamp_price",
        "discount_pct",
        "credit_days",
        "comments",
        "favourite",
        "dropped",
        "colour",
    ):
        assert column in CSV_COLUMNS


def test_every_field_of_a_client_profile_has_its_columns() -> None:
    """A profile field added later needs its column: the walk over the model says which."""
    columns = set(CSV_COLUMNS)
    for name, info in ClientProfile.model_fields.items():
        nested = [a for a in typing.get_args(info.annotation) if isinstance(a, type)]
        model = next((a for a in nested if issubclass(a, BaseModel)), None)
        if model is not None:
            assert {f"{name}_{inner}" for inner in model.model_fields} <= columns, name
        elif name == "extra_emails":
            assert {"extra_email_1", "extra_email_2"} <= columns
        else:
            assert name in columns, name
