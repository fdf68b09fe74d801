"""``ledger import-clients`` / ``export-clients``: fixed columns, all rows or none.

Most rows here use the eleven columns of the format before issue 19 (``LEGACY_CSV_COLUMNS``),
which the import still reads; ``test_clients_csv_round_trip.py`` covers every column.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from adapters.cli.clients_csv import CSV_COLUMNS, LEGACY_CSV_COLUMNS
from adapters.cli.main import main
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import seed_network

HEADER = ",".join(LEGACY_CSV_COLUMNS)
GOOD_ROWS = [
    "K1,D1,NIC-1,María López,Papelería Lupita,GODE561231GR8,612,G03,maria@example.com,"
    "55 1234 5678,06600",
    "K2,D1,,Comercial Norte SA de CV,,MAB9307148T4,601,G03,norte@example.com,,64000",
]


@pytest.fixture
def url(sqlite_url: str, clock: ManualClock) -> str:
    """A ledger with distributor D1 active."""
    seed_network(sqlite_url, clock)
    return sqlite_url


def _file(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "clients.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _client_ids(url: str) -> list[str]:
    with Ledger.open(url) as lg:
        return [row.client_id for row in lg.views.client_profiles()]


def test_import_registers_every_row(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both rows become clients with their default CTI."""
    assert main(["import-clients", _file(tmp_path, [HEADER, *GOOD_ROWS]), "--url", url]) == 0
    assert "imported 2 clients" in capsys.readouterr().out
    assert _client_ids(url) == ["C1", "K1", "K2"]
    with Ledger.open(url) as lg:
        (row,) = lg.views.stamping_accounts("D1", search="NIC-1")
        assert (row.cti_id, row.name) == ("K1-cti", "María López")


def test_import_shows_each_new_ctis_generated_password_once(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registered client's CTI gets a generated password (the CSV holds none): the import
    prints each one, once, as ``cti_id,cti_password`` lines after a header, and each opens its
    CTI; an update registers nothing and prints no password."""
    assert main(["import-clients", _file(tmp_path, [HEADER, *GOOD_ROWS]), "--url", url]) == 0
    out = capsys.readouterr().out
    table = out[out.index("cti_id,cti_password") :].splitlines()
    passwords = dict(line.split(",") for line in table[1:])
    assert sorted(passwords) == ["K1-cti", "K2-cti"]
    with Ledger.open(url, password_cost="fast") as lg:
        for cti_id, password in passwords.items():
            check = {"type": "VerifyStampingCredentials", "actor": "M", "cti_id": cti_id}
            assert lg.execute({**check, "password": password}).valid is True
    again = _file(tmp_path, [HEADER, *GOOD_ROWS])
    assert main(["import-clients", again, "--update", "--url", url]) == 0
    assert "cti_password" not in capsys.readouterr().out


def test_a_wrong_header_is_line_1_and_imports_nothing(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Columns in another order are refused."""
    swapped = HEADER.replace("name,trade_name", "trade_name,name")
    assert main(["import-clients", _file(tmp_path, [swapped, *GOOD_ROWS]), "--url", url]) == 1
    assert "clients.csv:1: the header must be" in capsys.readouterr().err
    assert _client_ids(url) == ["C1"]


def test_a_bad_row_is_reported_by_line_and_nothing_is_imported(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad RFC on line 3 stops the whole file, the good line 2 included."""
    bad = GOOD_ROWS[1].replace("MAB9307148T4", "MAB93")
    assert main(["import-clients", _file(tmp_path, [HEADER, GOOD_ROWS[0], bad]), "--url", url]) == 1
    err = capsys.readouterr().err
    assert "clients.csv:3: rfc: El RFC no es válido" in err
    assert "nothing imported" in err
    assert _client_ids(url) == ["C1"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "K3,D1,,Ana,,GODE561231GR8,612,G03,ana@example.com,,066",
            "postal_code: String should match",
        ),
        ("K3,D1,,Ana,,GODE561231GR8,612,G03,ana@example.com", "9 columns, expected 11"),
        ("K3,D1,,,,GODE561231GR8,612,G03,ana@example.com,,06600", "empty name"),
        ("K3,D9,,Ana,,GODE561231GR8,612,G03,ana@example.com,,06600", "no distributor D9"),
        ("C1,D1,,Ana,,GODE561231GR8,612,G03,ana@example.com,,06600", "already_exists: C1"),
        (GOOD_ROWS[0], "K1 repeats line 2"),
    ],
)
def test_each_kind_of_bad_row_names_its_line(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, message: str
) -> None:
    """Format, missing fields, unknown distributor, existing ids and repeats: line 3."""
    assert main(["import-clients", _file(tmp_path, [HEADER, GOOD_ROWS[0], row]), "--url", url]) == 1
    err = capsys.readouterr().err
    assert "clients.csv:3: " in err
    assert message in err
    assert _client_ids(url) == ["C1"]


def test_export_writes_the_fixed_columns_and_imports_back(
    url: str, tmp_path: Path, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export imported into another ledger exports the same again."""
    main(["import-clients", _file(tmp_path, [HEADER, *GOOD_ROWS]), "--url", url])
    exported = tmp_path / "export.csv"
    assert main(["export-clients", "--url", url, "--output", str(exported)]) == 0
    rows = list(csv.reader(io.StringIO(exported.read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[0] for r in rows[1:]] == ["C1", "K1", "K2"]
    other = f"sqlite:///{tmp_path / 'other.db'}"
    seed_network(other, clock)
    only_new = [",".join(CSV_COLUMNS), *[",".join(r) for r in rows[2:]]]
    assert main(["import-clients", _file(tmp_path, only_new), "--url", other]) == 0
    capsys.readouterr()
    assert main(["export-clients", "--url", other]) == 0
    assert capsys.readouterr().out == exported.read_text(encoding="utf-8")
