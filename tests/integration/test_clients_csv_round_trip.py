"""Clients CSV with every profile field (issue 19 item 7): export then import gives the same
profiles, field by field, on both backends; spreadsheet files (Windows-1252, ``;``, a BOM) are
read; formulas are guarded; warnings carry their line; purged clients are not exported."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.cli.clients_csv import CSV_COLUMNS
from adapters.cli.main import main
from ledger.aggregates.client import Client
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    DISTRIBUTOR,
    build_network,
    client_profile,
    define_catalogue,
    distributor_profile,
)

PROFILES: dict[str, dict[str, Any]] = {
    "K1": {
        **client_profile(name='=HYPERLINK("http://example.com","clic")'),
        "trade_name": 'Papelería "La Ñ", Peñaloza; sucursal',
        "phone": "+52 55 1234 5678",
        "extra_emails": ["compras@example.com", "pagos@example.com"],
        "person_type": "fisica",
        "address": {
            "state": "Ciudad de México",
            "city": "CDMX",
            "colonia": "Juárez",
            "street": "Av. Reforma 222, piso 3",
            "number_ext": "222",
            "number_int": "B",
            "reference": "-frente al parque",
        },
        "legal_rep": {
            "name": "@Ana Ruiz",
            "position": "Directora",
            "email": "ana@example.com",
            "phone": "55 8765 4321",
        },
        "financial_contact": {"name": "Luis Gómez", "email": "luis@example.com"},
        "technical_contact": {"name": "+cmd|' /C calc'!A0"},
        "bulk_stamp_price": "0.90",
        "discount_pct": "7.5",
        "credit_days": 30,
        "comments": "Paga a 30 días.\n=SUM(1+1)\tsegunda línea",
    },
    "K2": {
        **client_profile(name="Comercial Norte", email="norte@example.com"),
        "rfc": "MAB9307148T4",
        "regimen_fiscal": "601",
    },
}
TAGS: dict[str, dict[str, Any]] = {
    "K1": {"favourite": True, "colour": "rojo"},
    "K2": {"dropped": True},
}


def _network(url: str, clock: ManualClock, *, clients: bool) -> None:
    with Ledger.open(url, clock=clock, password_cost="fast") as lg:
        build_network(lg)
        if not clients:
            return
        for client_id, profile in PROFILES.items():
            lg.execute(
                {
                    "type": "RegisterClient",
                    "actor": DISTRIBUTOR,
                    "client_id": client_id,
                    "distributor_id": DISTRIBUTOR,
                    "profile": profile,
                }
            )
            lg.execute(
                {"type": "TagClient", "actor": DISTRIBUTOR, "client_id": client_id}
                | TAGS[client_id]
            )


def _clients(url: str) -> dict[str, tuple[dict[str, Any], bool, bool, str | None]]:
    """Each client's profile and tags, from the write side."""
    found = {}
    with Ledger.open(url) as lg:
        for row in lg.views.client_profiles():
            client = lg.engine.current(row.client_id)
            assert isinstance(client, Client)
            found[row.client_id] = (
                dict(client.profile),
                client.favourite,
                client.dropped,
                client.colour,
            )
    return found


def _export(url: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["export-clients", "--url", url]) == 0
    return capsys.readouterr().out


def _import(url: str, path: Path, *extra: str) -> int:
    return main(["import-clients", str(path), "--url", url, *extra])


def _without(text: str, client_id: str) -> str:
    """The CSV text without the rows of ``client_id`` (kept: the header and the others)."""
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(r for r in rows if r[0] != client_id)
    return out.getvalue()


@pytest.fixture
def source(tmp_path: Path, clock: ManualClock) -> str:
    """A SQLite ledger with D1's clients C1, K1 (every field, formulas in it) and K2."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    _network(url, clock, clients=True)
    return url


def test_the_export_writes_every_field_with_formulas_guarded(
    source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every column is there; a cell starting with = + - @ is written after a '."""
    rows = list(csv.reader(io.StringIO(_export(source, capsys))))
    assert tuple(rows[0]) == CSV_COLUMNS
    k1 = dict(zip(CSV_COLUMNS, rows[2], strict=True))
    assert k1["name"] == '\'=HYPERLINK("http://example.com","clic")'
    assert k1["phone"] == "'+52 55 1234 5678"
    assert k1["legal_rep_name"] == "'@Ana Ruiz"
    assert k1["technical_contact_name"] == "'+cmd|' /C calc'!A0"
    assert k1["address_reference"] == "'-frente al parque"
    assert k1["extra_email_2"] == "pagos@example.com"
    assert (k1["bulk_stamp_price"], k1["discount_pct"], k1["credit_days"]) == ("0.90", "7.5", "30")
    assert (k1["favourite"], k1["dropped"], k1["colour"]) == ("true", "false", "rojo")
    assert k1["comments"] == "Paga a 30 días.\n=SUM(1+1)\tsegunda línea"
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


def test_export_then_import_gives_the_same_clients(
    source: str,
    store_url: str,
    tmp_path: Path,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Imported into a fresh ledger (SQLite, then PostgreSQL), the clients have the same
    profiles and tags, field by field, and export the same file again."""
    exported = _export(source, capsys)
    _network(store_url, clock, clients=False)
    path = tmp_path / "clients.csv"
    path.write_text(_without(exported, "C1"), encoding="utf-8")
    assert _import(store_url, path) == 0
    assert "imported 2 clients (2 registered, 0 updated, 0 unchanged)" in capsys.readouterr().out
    assert _clients(store_url) == _clients(source)
    assert _export(store_url, capsys) == exported


def test_import_update_puts_back_what_the_file_says(
    store_url: str, tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Profiles and tags changed after an export come back to the file's, field by field;
    a second import changes nothing and records nothing."""
    _network(store_url, clock, clients=True)
    before = _clients(store_url)
    path = tmp_path / "clients.csv"
    path.write_text(_export(store_url, capsys), encoding="utf-8")
    with Ledger.open(store_url, clock=clock, password_cost="fast") as lg:
        for command in (
            {"client_id": "K1", "profile": {"address": None, "phone": "33 1111 2222"}},
            {"client_id": "K1", "profile": {"legal_rep": {"position": None}, "credit_days": 60}},
            {"client_id": "K2", "profile": {"trade_name": "Nuevo", "comments": "otro"}},
        ):
            lg.execute({"type": "UpdateClientProfile", "actor": DISTRIBUTOR, **command})
        lg.execute({"type": "TagClient", "actor": DISTRIBUTOR, "client_id": "K1", "colour": ""})
    assert _clients(store_url) != before
    assert _import(store_url, path) == 1
    assert "already_exists: C1 (--update changes existing clients)" in capsys.readouterr().err
    assert _import(store_url, path, "--update") == 0
    assert "(0 registered, 2 updated, 1 unchanged)" in capsys.readouterr().out
    assert _clients(store_url) == before
    assert _import(store_url, path, "--update") == 0
    assert "(0 registered, 0 updated, 3 unchanged)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("encoding", "delimiter", "bom"),
    [("cp1252", ";", False), ("cp1252", ",", False), ("utf-8", ";", True), ("utf-8", ",", True)],
)
def test_spreadsheet_files_are_read(
    source: str,
    sqlite_url: str,
    tmp_path: Path,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
    encoding: str,
    delimiter: str,
    bom: bool,
) -> None:
    """Windows-1252 or UTF-8 with a BOM, cells separated by ; or ,: the same clients."""
    rows = list(csv.reader(io.StringIO(_without(_export(source, capsys), "C1"))))
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path = tmp_path / "excel.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode(encoding))
    _network(sqlite_url, clock, clients=False)
    assert _import(sqlite_url, path) == 0
    assert _clients(sqlite_url) == _clients(source)


def test_every_warning_is_printed_with_its_line(
    sqlite_url: str, tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An RFC whose check digit does not verify imports, with a warning naming its line."""
    _network(sqlite_url, clock, clients=False)
    header = ",".join(CSV_COLUMNS[:11])
    path = tmp_path / "clients.csv"
    path.write_text(
        f"{header}\n"
        "K1,D1,,Ana,,GODE561231GR8,612,G03,ana@example.com,,06600\n"
        "K2,D1,,Eva,,GODE561231GR9,612,G03,eva@example.com,,06600\n"
        "K3,D1,,Luz,,GODE561231GR7,612,G03,luz@example.com,,06600\n",
        encoding="utf-8",
    )
    assert _import(sqlite_url, path) == 0
    err = capsys.readouterr().err
    assert f"{path}:3: warning: rfc_check_digit" in err
    assert f"{path}:4: warning: rfc_check_digit" in err
    assert ":2: warning" not in err


def test_a_cell_spanning_lines_reports_the_line_its_row_starts_on(
    sqlite_url: str, tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Comments over three lines, then a bad row: the bad row's first line is named."""
    _network(sqlite_url, clock, clients=False)
    empty = [""] * (len(CSV_COLUMNS) - 11)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    first = [
        "K1",
        "D1",
        "",
        "Ana",
        "",
        "GODE561231GR8",
        "612",
        "G03",
        "ana@example.com",
        "",
        "06600",
    ]
    second = [*first[:3], "", *first[4:]]
    writer.writerow([*first, *empty[:-7], "uno\ndos\ntres", *empty[-6:]])
    writer.writerow([*second[:0], "K2", *second[1:], *empty])
    path = tmp_path / "clients.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    assert _import(sqlite_url, path) == 1
    assert f"{path}:5: empty name" in capsys.readouterr().err


def test_purged_clients_are_not_exported(
    sqlite_url: str, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The clients of a purged distributor are left out of the export (not blank rows)."""
    sub = "S1"
    with Ledger.open(sqlite_url, clock=clock, password_cost="fast") as lg:
        build_network(lg)
        define_catalogue(lg)
        commands: list[dict[str, Any]] = [
            {
                "type": "ContractSubscription",
                "actor": DISTRIBUTOR,
                "distributor_id": DISTRIBUTOR,
                "product": "Multinivel",
            },
            {
                "type": "RegisterDistributor",
                "actor": DISTRIBUTOR,
                "distributor_id": sub,
                "parent_id": DISTRIBUTOR,
                "profile": distributor_profile("Sub", "s1@example.com"),
            },
            {"type": "ValidateDistributor", "actor": DISTRIBUTOR, "distributor_id": sub},
            {
                "type": "ActivateDistributor",
                "actor": DISTRIBUTOR,
                "distributor_id": sub,
                "expires_on": "2026-12-31",
            },
            {
                "type": "RegisterClient",
                "actor": sub,
                "client_id": "K9",
                "distributor_id": sub,
                "profile": client_profile(email="k9@example.com"),
            },
            {"type": "SuspendDistributor", "actor": DISTRIBUTOR, "distributor_id": sub},
            {"type": "CancelDistributor", "actor": DISTRIBUTOR, "distributor_id": sub},
        ]
        for command in commands:
            lg.execute(command)
        assert [r[0] for r in csv.reader(io.StringIO(_export(sqlite_url, capsys)))][1:] == [
            "C1",
            "K9",
        ]
        clock.advance(timedelta(days=31))
        lg.execute({"type": "PurgeDistributor", "actor": DISTRIBUTOR, "distributor_id": sub})
    rows = list(csv.reader(io.StringIO(_export(sqlite_url, capsys))))
    assert [r[0] for r in rows[1:]] == ["C1"]
