"""``ledger import-clients`` and ``ledger export-clients``: clients as CSV (DESIGN §7).

The columns are fixed (``CSV_COLUMNS``): every field of a client's profile (DESIGN §4
"Profiles": address, up to three e-mails, the legal representative, the financial and technical
contacts, bulk price, discount, credit days, comments) and its tags and colour. The first eleven
columns alone (``LEGACY_CSV_COLUMNS``, the format before issue 19) are still read.

Files from spreadsheets: the import reads UTF-8 with or without a byte-order mark, else
Windows-1252 (what Excel writes in Mexico), and cells separated by ``,`` or ``;`` (found from the
header). A cell the export writes that starts with ``= + - @``, a tab or a carriage return gets a
leading ``'`` so that a spreadsheet shows it as text instead of running it as a formula (OWASP
"CSV injection"); the import takes that ``'`` off again, so an export imported back gives the
same profiles.

Nothing is half-imported: every row is checked first (a bad one is reported with its line
number, and nothing is written), then all of them are one atomic batch. ``--update`` changes
the clients that exist (by client id) to what their rows say (``UpdateClientProfile`` naming
every column of the file, and ``TagClient``); without it an existing id is ``already_exists``.
Warnings (an RFC whose check digit does not verify) are printed with their line number. A new
client's stamping account gets a generated password (the file holds none): the import prints
each one once, as ``cti_id,cti_password`` lines after the summary, since only its hash is kept.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, TextIO

from pydantic import ValidationError

from adapters.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REJECTED,
    add_command,
    error,
    fail,
    quiet_logs,
    url_option,
)
from ledger.aggregates.client import Client
from ledger.aggregates.distributor import Distributor
from ledger.api import Ledger
from ledger.clock import local_date
from ledger.commands.models import COMMAND_ADAPTER, TagClient, UpdateClientProfile
from ledger.commands.profiles import ClientProfile
from ledger.errors import LedgerError, Rejected
from ledger.outcome import Outcome
from ledger.rfc import validate_rfc
from ledger.write.calls import ATOMIC_SIZE_MAX
from ledger.write.preparation import validation_rejection

_CONTACTS = ("legal_rep", "financial_contact", "technical_contact")
_CONTACT_FIELDS = ("name", "position", "email", "phone")
_ADDRESS_FIELDS = ("state", "city", "colonia", "street", "number_ext", "number_int", "reference")

LEGACY_CSV_COLUMNS = (
    "client_id",
    "distributor_id",
    "nic",
    "name",
    "trade_name",
    "rfc",
    "regimen_fiscal",
    "uso_cfdi",
    "email",
    "phone",
    "postal_code",
)
"""The columns before issue 19 (still imported: the fields they lack are left as they are)."""
CSV_COLUMNS = (
    *LEGACY_CSV_COLUMNS,
    "extra_email_1",
    "extra_email_2",
    "person_type",
    *(f"address_{name}" for name in _ADDRESS_FIELDS),
    *(f"{contact}_{name}" for contact in _CONTACTS for name in _CONTACT_FIELDS),
    "bulk_stamp_price",
    "discount_pct",
    "credit_days",
    "comments",
    "favourite",
    "dropped",
    "colour",
)
"""The fixed column order of ``import-clients`` and ``export-clients``."""
_REQUIRED_COLUMNS = (
    "client_id",
    "distributor_id",
    "name",
    "rfc",
    "regimen_fiscal",
    "uso_cfdi",
    "email",
    "postal_code",
)
_PLAIN_FIELDS = (
    "name",
    "trade_name",
    "rfc",
    "regimen_fiscal",
    "uso_cfdi",
    "email",
    "phone",
    "postal_code",
    "person_type",
    "bulk_stamp_price",
    "discount_pct",
    "comments",
)
_TAG_COLUMNS = ("favourite", "dropped", "colour")
_TRUE = frozenset({"true", "1", "sí", "si", "yes", "x"})
_FALSE = frozenset({"false", "0", "no", ""})

IMPORT_ROWS_MAX = ATOMIC_SIZE_MAX // 2
"""Bound on the rows of one file: each may take two commands (a registration and its tags), and
the whole file is one atomic batch."""
IMPORT_BYTES_MAX = 64 * 1024 * 1024
"""Bound on the size of one file (read whole, to find its encoding)."""
EXPORT_PAGE_ROWS = 500
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters a spreadsheet reads as a formula: such a cell is written after a ``'``."""
_DELIMITERS = (",", ";")


# Cells ---------------------------------------------------------------------------------------


def guard_cell(value: str) -> str:
    """The cell as written: a ``'`` before a text a spreadsheet would run as a formula.

    Texts that already start with ``'`` before such a character get one more, so that
    ``unguard_cell`` gives every text back exactly.
    """
    return "'" + value if value.lstrip("'").startswith(FORMULA_STARTS) else value


def unguard_cell(cell: str) -> str:
    """The text of a cell ``guard_cell`` wrote (a cell without the guard is kept as it is)."""
    if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def decode_file(data: bytes) -> str:
    """The text of a CSV file: UTF-8 (a byte-order mark dropped), else Windows-1252.

    Raises ``UnicodeDecodeError`` for bytes that are neither (Windows-1252 leaves five bytes
    undefined).
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252")


# Reading -------------------------------------------------------------------------------------


class CsvImportError(LedgerError):
    """Raised when a clients CSV has a wrong header or bad rows; nothing was imported."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s); nothing imported")


class RowProblem(Exception):
    """Raised when a row cannot be imported; the text names the column or the fact."""


@dataclass(frozen=True, slots=True)
class Row:
    """A data row of the file: its first line, and its cells by column (unguarded, trimmed)."""

    line: int
    cells: dict[str, str]

    @property
    def client_id(self) -> str:
        """The client the row is about."""
        return self.cells["client_id"]


def _header(text: str, name: str) -> tuple[str, tuple[str, ...]]:
    """The delimiter and the columns of the file, or ``CsvImportError`` (line 1)."""
    first = text.split("\n", 1)[0].rstrip("\r")
    for delimiter in _DELIMITERS:
        cells = next(csv.reader([first], delimiter=delimiter), [])
        header = tuple(cell.strip() for cell in cells)
        if header in (CSV_COLUMNS, LEGACY_CSV_COLUMNS):
            return delimiter, header
    raise CsvImportError(
        [f"{name}:1: the header must be: {','.join(CSV_COLUMNS)} (or its first 11 columns)"]
    )


def read_rows(text: str, name: str) -> tuple[tuple[str, ...], list[Row]]:
    """The file's columns and its data rows; ``CsvImportError`` for bad shapes and repeats."""
    delimiter, header = _header(text, name)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    next(reader)
    problems: list[str] = []
    rows: list[Row] = []
    seen: dict[str, int] = {}
    while True:
        line = reader.line_num + 1  # where the record starts (a quoted cell may span lines)
        values = next(reader, None)
        if values is None:
            break
        if not any(v.strip() for v in values):
            continue
        if len(rows) + len(problems) >= IMPORT_ROWS_MAX:
            problems.append(f"{name}:{line}: more than {IMPORT_ROWS_MAX} rows")
            break
        if len(values) != len(header):
            problems.append(f"{name}:{line}: {len(values)} columns, expected {len(header)}")
            continue
        cells = {c: unguard_cell(v).strip() for c, v in zip(header, values, strict=True)}
        missing = [c for c in _REQUIRED_COLUMNS if not cells[c]]
        if missing:
            problems.append(f"{name}:{line}: empty {', '.join(missing)}")
            continue
        client_id = cells["client_id"]
        if client_id in seen:
            problems.append(f"{name}:{line}: {client_id} repeats line {seen[client_id]}")
            continue
        seen[client_id] = line
        rows.append(Row(line, cells))
    if problems:
        raise CsvImportError(problems)
    return header, rows


# Rows to commands ----------------------------------------------------------------------------


def _optional(value: str) -> str | None:
    return value or None


def _profile_change(cells: dict[str, str], header: tuple[str, ...]) -> dict[str, Any]:
    """Every profile field of the file's columns: its value, or None when the cell is empty."""
    change: dict[str, Any] = {f: _optional(cells[f]) for f in _PLAIN_FIELDS if f in header}
    if "credit_days" in header:
        days = cells["credit_days"]
        change["credit_days"] = int(days) if days.isdigit() else (days or None)
    if "extra_email_1" in header:
        change["extra_emails"] = [e for e in (cells["extra_email_1"], cells["extra_email_2"]) if e]
    if "address_state" in header:
        address = {f: _optional(cells[f"address_{f}"]) for f in _ADDRESS_FIELDS}
        change["address"] = address if any(address.values()) else None
    for contact in _CONTACTS:
        if f"{contact}_name" in header:
            person = {f: _optional(cells[f"{contact}_{f}"]) for f in _CONTACT_FIELDS}
            change[contact] = person if any(person.values()) else None
    return change


def _without_empties(change: dict[str, Any]) -> dict[str, Any]:
    """A whole profile from a change: the fields and nested fields that have a value."""
    profile: dict[str, Any] = {}
    for field, given in change.items():
        value = given
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None} or None
        if value is not None:
            profile[field] = value
    return profile


def _flag(value: str, column: str) -> bool:
    folded = value.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise RowProblem(f"{column}: expected true or false")


def _tags(cells: dict[str, str], header: tuple[str, ...]) -> dict[str, Any] | None:
    """The tag fields of the row (``colour`` "" clears), or None for a file without them."""
    if "favourite" not in header:
        return None
    return {
        "favourite": _flag(cells["favourite"], "favourite"),
        "dropped": _flag(cells["dropped"], "dropped"),
        "colour": cells["colour"],
    }


def _column(field: str) -> str:
    """The CSV column of a command field path (``RegisterClient.profile.address.city`` is
    ``address_city``, ``...profile.extra_emails.0`` is ``extra_email_1``)."""
    parts = field.split(".")
    for prefix in ("RegisterClient", "UpdateClientProfile", "TagClient", "profile"):
        if parts and parts[0] == prefix:
            parts = parts[1:]
    if len(parts) == 2 and parts[0] == "extra_emails" and parts[1].isdigit():
        return f"extra_email_{int(parts[1]) + 1}"
    return "_".join(parts)


@dataclass(frozen=True, slots=True)
class Planned:
    """The commands of one row (none when the row changes nothing) and its warnings."""

    row: Row
    commands: tuple[dict[str, Any], ...]
    registers: bool
    warnings: tuple[str, ...]


def _validate(command: dict[str, Any]) -> None:
    """Raises ``Rejected`` as the engine would for a malformed command."""
    try:
        COMMAND_ADAPTER.validate_python(command)
    except ValidationError as exc:
        raise validation_rejection(exc) from None


def _plan_row(
    lg: Ledger, row: Row, header: tuple[str, ...], *, update: bool, today: date
) -> Planned:
    """The commands that make the ledger say what ``row`` says; ``Rejected`` or ``RowProblem``
    naming the column when the row is wrong."""
    cells = row.cells
    client_id = cells["client_id"]
    distributor_id = cells["distributor_id"]
    change = _profile_change(cells, header)
    tags = _tags(cells, header)
    warnings = _rfc_warnings(cells["rfc"])
    existing = lg.engine.current(client_id)
    if existing is not None and not update:
        raise RowProblem(f"already_exists: {client_id} (--update changes existing clients)")
    if existing is not None:
        if not isinstance(existing, Client):
            raise RowProblem(f"already_exists: {client_id} is not a client")
        if existing.distributor_id != distributor_id:
            raise RowProblem(
                f"distributor_id: {client_id} is a client of {existing.distributor_id}"
            )
        if cells["nic"] and cells["nic"] != existing.nic:
            raise RowProblem(f"nic: {client_id} has the NIC {existing.nic} (it cannot change)")
        commands: list[dict[str, Any]] = []
        command = {
            "type": UpdateClientProfile.model_fields["type"].default,
            "actor": distributor_id,
            "client_id": client_id,
            "profile": change,
        }
        _validate(command)
        parsed = UpdateClientProfile.model_validate(command)
        try:
            merged = ClientProfile.model_validate(parsed.profile.apply_to(existing.profile))
        except ValidationError as exc:
            raise validation_rejection(exc) from None
        if merged.model_dump(mode="json", exclude_none=True) != existing.profile:
            commands.append(command)
        if tags is not None and (
            tags["favourite"] != existing.favourite
            or tags["dropped"] != existing.dropped
            or (tags["colour"] or None) != existing.colour
        ):
            commands.append(_tag_command(client_id, distributor_id, tags))
        return Planned(row, tuple(commands), registers=False, warnings=warnings)
    cti_id = f"{client_id}-cti"
    if lg.engine.current(cti_id) is not None:
        raise RowProblem(f"already_exists: {cti_id}")
    found = lg.engine.current(distributor_id)
    if not isinstance(found, Distributor):
        raise RowProblem(f"unknown_account: no distributor {distributor_id}")
    status = found.status_on(today)
    if status != "active":
        raise RowProblem(f"distributor_not_active: {distributor_id} is {status}")
    register: dict[str, Any] = {
        "type": "RegisterClient",
        "actor": distributor_id,
        "client_id": client_id,
        "distributor_id": distributor_id,
        "profile": _without_empties(change),
    }
    if cells["nic"]:
        register["nic"] = cells["nic"]
    _validate(register)
    commands = [register]
    if tags is not None and (tags["favourite"] or tags["dropped"] or tags["colour"]):
        commands.append(_tag_command(client_id, distributor_id, tags))
    return Planned(row, tuple(commands), registers=True, warnings=warnings)


def _rfc_warnings(rfc: str) -> tuple[str, ...]:
    """The RFC's warnings (a bad one is reported as an error by the command's validation)."""
    try:
        return validate_rfc(rfc).warnings
    except Rejected:
        return ()


def _tag_command(client_id: str, distributor_id: str, tags: dict[str, Any]) -> dict[str, Any]:
    command = {
        "type": TagClient.model_fields["type"].default,
        "actor": distributor_id,
        "client_id": client_id,
        **tags,
    }
    _validate(command)
    return command


def plan_import(
    lg: Ledger, header: tuple[str, ...], rows: list[Row], name: str, *, update: bool
) -> list[Planned]:
    """Every row's commands, checked against the ledger; ``CsvImportError`` listing every bad
    row by line, before anything is written."""
    problems: list[str] = []
    planned: list[Planned] = []
    today = local_date(lg.engine.clock())
    for row in rows:
        try:
            planned.append(_plan_row(lg, row, header, update=update, today=today))
        except Rejected as exc:
            errors = exc.details.get("errors")
            if errors:
                problems.extend(
                    f"{name}:{row.line}: {_column(e['field'])}: {e['message']}" for e in errors
                )
            else:
                problems.append(f"{name}:{row.line}: {exc.message}")
        except RowProblem as exc:
            problems.append(f"{name}:{row.line}: {exc}")
    if problems:
        raise CsvImportError(problems)
    return planned


# import-clients ------------------------------------------------------------------------------


def _read_file(path: str) -> str:
    size = os.path.getsize(path)
    if size > IMPORT_BYTES_MAX:
        raise CsvImportError([f"{path}: {size:,} bytes, more than {IMPORT_BYTES_MAX:,}"])
    with open(path, "rb") as stream:
        return decode_file(stream.read())


def run_import_clients(args: argparse.Namespace) -> int:
    """``ledger import-clients FILE [--update]``: every row checked first, then one batch."""
    quiet_logs()
    name = args.file
    try:
        header, rows = read_rows(_read_file(name), name)
        with Ledger.open(args.url) as lg:
            planned = plan_import(lg, header, rows, name, update=args.update)
            for plan in planned:
                for warning in plan.warnings:
                    sys.stderr.write(f"{name}:{plan.row.line}: warning: {warning}\n")
            batch = [(plan, command) for plan in planned for command in plan.commands]
            results = lg.execute_many([command for _, command in batch], atomic=True)
    except CsvImportError as exc:
        for problem in exc.problems:
            sys.stderr.write(problem + "\n")
        sys.stderr.write(f"import-clients: {exc}\n")
        return EXIT_REJECTED
    except (OSError, UnicodeDecodeError) as exc:
        return error("import-clients", f"cannot read {name}: {exc}", EXIT_ERROR)
    except LedgerError as exc:
        return fail("import-clients", exc)
    failed = [
        (plan.row.line, result)
        for (plan, _), result in zip(batch, results, strict=True)
        if isinstance(result, Rejected) and result.code != "batch_aborted"
    ]
    for line, result in failed:
        sys.stderr.write(f"{name}:{line}: {result.code}: {result.message}\n")
    if failed:
        # Only a concurrent writer can cause this after the checks above; the batch is atomic,
        # so nothing was imported.
        sys.stderr.write(
            f"import-clients: {len(failed)} row(s) rejected by a concurrent change; "
            "nothing imported\n"
        )
        return EXIT_REJECTED
    registered = sum(1 for plan in planned if plan.registers)
    updated = sum(1 for plan in planned if plan.commands and not plan.registers)
    unchanged = len(planned) - registered - updated
    sys.stdout.write(
        f"imported {len(planned)} clients ({registered} registered, {updated} updated, "
        f"{unchanged} unchanged)\n"
    )
    generated = [
        (result.cti_id, result.cti_password)
        for result in results
        if isinstance(result, Outcome) and result.cti_password and not result.replayed
    ]
    if generated:
        # Shown once, as RegisterClient's outcome shows it: nothing keeps it but a hash.
        sys.stderr.write(
            "import-clients: each new CTI's password follows, shown this once; keep them now\n"
        )
        sys.stdout.write("cti_id,cti_password\n")
        sys.stdout.writelines(f"{cti_id},{password}\n" for cti_id, password in generated)
    return EXIT_OK


# export-clients ------------------------------------------------------------------------------


def _flag_cell(value: bool) -> str:
    return "true" if value else "false"


def export_cells(
    profile: dict[str, Any], *, favourite: bool, dropped: bool, colour: str | None
) -> dict[str, str]:
    """The cells of a client's row, by column (before the formula guard)."""
    cells = {f: "" if profile.get(f) is None else str(profile[f]) for f in _PLAIN_FIELDS}
    extra = list(profile.get("extra_emails") or ())
    cells["extra_email_1"] = extra[0] if extra else ""
    cells["extra_email_2"] = extra[1] if len(extra) > 1 else ""
    address = profile.get("address") or {}
    for f in _ADDRESS_FIELDS:
        cells[f"address_{f}"] = str(address.get(f) or "")
    for contact in _CONTACTS:
        person = profile.get(contact) or {}
        for f in _CONTACT_FIELDS:
            cells[f"{contact}_{f}"] = str(person.get(f) or "")
    days = profile.get("credit_days")
    cells["credit_days"] = "" if days is None else str(days)
    cells["favourite"] = _flag_cell(favourite)
    cells["dropped"] = _flag_cell(dropped)
    cells["colour"] = colour or ""
    return cells


def _export_rows(lg: Ledger, distributor_id: str | None) -> Iterator[list[str]]:
    after = ""
    while True:
        page = lg.views.client_profiles(distributor_id, after_id=after, limit=EXPORT_PAGE_ROWS)
        for row in page:
            cells = export_cells(
                row.profile, favourite=row.favourite, dropped=row.dropped, colour=row.colour
            )
            cells.update(client_id=row.client_id, distributor_id=row.distributor_id, nic=row.nic)
            yield [guard_cell(cells[column]) for column in CSV_COLUMNS]
        if len(page) < EXPORT_PAGE_ROWS:
            return
        after = page[-1].client_id


def write_clients_csv(lg: Ledger, distributor_id: str | None, out: TextIO) -> int:
    """Writes the clients (from the views; a purged distributor's are left out) as CSV;
    returns how many."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for cells in _export_rows(lg, distributor_id):
        writer.writerow(cells)
        count += 1
    return count


def run_export_clients(args: argparse.Namespace) -> int:
    """``ledger export-clients [--distributor] [--output]``."""
    quiet_logs()
    try:
        with Ledger.open(args.url) as lg, contextlib.ExitStack() as stack:
            if args.distributor is not None and not isinstance(
                lg.engine.current(args.distributor), Distributor
            ):
                return error(
                    "export-clients", f"--distributor: no distributor {args.distributor!r}"
                )
            out: TextIO = sys.stdout
            if args.output:
                out = stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            count = write_clients_csv(lg, args.distributor, out)
    except BrokenPipeError:
        raise  # the reader stopped reading: main() ends quietly
    except OSError as exc:
        return error("export-clients", f"cannot write {args.output}: {exc}", EXIT_ERROR)
    except LedgerError as exc:
        return fail("export-clients", exc)
    sys.stderr.write(f"export-clients: {count} clients\n")
    return EXIT_OK


# Registration --------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Adds ``import-clients`` and ``export-clients`` to the ``ledger`` subcommands."""
    imports = add_command(
        commands,
        "import-clients",
        "register (or with --update, change) clients from a CSV file",
        f"The header must be exactly: {','.join(CSV_COLUMNS)}\n"
        f"(or its first {len(LEGACY_CSV_COLUMNS)} columns, the older format).\n"
        "UTF-8 (with or without BOM) or Windows-1252; cells separated by , or ;.\n"
        "Every row is checked first; a bad row is reported with its line number and nothing\n"
        "is imported. Then all rows are written in one transaction: a new client with its\n"
        "default stamping account, or (--update) an existing one changed to what its row says.\n"
        "The actor of each row is its distributor. Warnings are printed with their line.\n"
        "Each new client's stamping account gets a generated password, printed once after\n"
        "the summary as cti_id,cti_password lines: keep them (only a hash is stored).",
        ["ledger import-clients clients.csv", "ledger import-clients --update clients.csv"],
    )
    imports.add_argument("file", metavar="FILE", help="the CSV file (header row first)")
    imports.add_argument(
        "--update",
        action="store_true",
        help="change the clients that exist (by client id) instead of refusing them",
    )
    url_option(imports)
    imports.set_defaults(func=run_import_clients)

    exports = add_command(
        commands,
        "export-clients",
        "write clients as CSV",
        f"Columns, in order: {','.join(CSV_COLUMNS)}\n"
        "(the format import-clients reads). A cell that a spreadsheet would run as a formula\n"
        "(starting with = + - @, tab or CR) is written after a ' (import-clients removes it).\n"
        "Clients of a purged distributor are left out.",
        ["ledger export-clients > clients.csv", "ledger export-clients --distributor D1"],
    )
    url_option(exports)
    exports.add_argument(
        "--distributor", metavar="ID", help="only this distributor's clients (default: all)"
    )
    exports.add_argument(
        "--output", metavar="FILE", help="write here instead of stdout (default: stdout)"
    )
    exports.set_defaults(func=run_export_clients)
