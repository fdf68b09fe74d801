"""The reference pages, generated from the code: docs/COMMANDS.md and docs/VIEWS.md.

``python -m ledger.docs`` rewrites both; a test fails when a page in the repository differs from
what the code says. COMMANDS.md gives, per command, the fields (type, required or optional,
bounds), who may act (``ledger.commands.auth.RULES``, DESIGN §4a), the rejection codes it can
answer and an example JSON line the models accept. VIEWS.md gives the typed queries of
``Ledger.views`` with their row fields, and the view tables a portal can read with SQL.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

from ledger.commands.models import Command
from ledger.commands.reference import command_models
from ledger.write.calls import ATOMIC_SIZE_MAX

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMANDS_MD = DOCS / "COMMANDS.md"
VIEWS_MD = DOCS / "VIEWS.md"

ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""The pattern of caller-chosen ids (``ledger.commands.models.Id``), shown as "id"."""

COMMON_CODES = ("invalid_command", "not_authorised")
"""Codes every command can answer: a malformed command, an actor who may not act."""

KEY_CODE = "idempotency_conflict"
"""What a command answers when its key (a natural one, or its ``idempotency_key``) was used by
a command with other fields: every command that takes a key can answer it."""

NEVER_REPLAYED = frozenset({"VerifyStampingCredentials"})
"""Commands that take no ``idempotency_key`` and have no natural key: never ``KEY_CODE``."""

BATCH_CODES = ("batch_aborted", "batch_too_large")
"""Codes of a command inside an atomic ``execute_many``, besides its own (DESIGN §5)."""

STAMP_TAKING_CODES = (
    "unknown_account",
    "invalid_rfc",
    "insufficient_stamps",
    "account_blocked",
    "unlimited_expired",
    "rfc_not_allowed",
)
"""Codes of a command that takes a stamp for a CFDI: a hold follows a consumption's rules."""

REJECTIONS: dict[str, tuple[str, ...]] = {
    "OpenMasterAccount": ("already_exists", "invalid_rfc", "admin_profile_not_allowed"),
    "DefinePackage": ("unknown_account", "already_exists", "unknown_package"),
    "RegisterDistributor": (
        "unknown_account",
        "already_exists",
        "invalid_rfc",
        "multinivel_required",
        "distributor_not_active",
        "admin_profile_not_allowed",
    ),
    "ValidateDistributor": ("unknown_account", "invalid_transition"),
    "ActivateDistributor": ("unknown_account", "invalid_transition"),
    "SuspendDistributor": ("unknown_account", "invalid_transition"),
    "ReactivateDistributor": ("unknown_account", "invalid_transition"),
    "RenewDistributor": ("unknown_account", "invalid_transition", "unknown_product"),
    "CancelDistributor": ("unknown_account", "invalid_transition"),
    "PurgeDistributor": ("unknown_account", "invalid_transition"),
    "DefineSubscriptionProduct": ("unknown_account",),
    "ContractSubscription": (
        "unknown_account",
        "distributor_not_active",
        "unknown_product",
        "already_exists",
    ),
    "ConvertClientToDistributor": (
        "unknown_account",
        "distributor_not_active",
        "multinivel_required",
        "invalid_transition",
        "already_exists",
        "admin_profile_not_allowed",
    ),
    "ChangeSettings": ("unknown_account",),
    "BuyPackage": (
        "unknown_account",
        "unknown_package",
        "distributor_not_active",
        "insufficient_inventory",
        "insufficient_points",
    ),
    # A blocked CTI cannot stamp but may be topped up: a transfer into it is not refused.
    "TransferStamps": (
        "unknown_account",
        "wrong_account_kind",
        "distributor_not_active",
        "insufficient_inventory",
        "price_unknown",
    ),
    "TransferPoints": (
        "unknown_account",
        "wrong_account_kind",
        "distributor_not_active",
        "insufficient_points",
    ),
    "MassTransfer": (
        "unknown_account",
        "wrong_account_kind",
        "distributor_not_active",
        "insufficient_inventory",
        "insufficient_points",
        "price_unknown",
    ),
    "ReclaimStamps": ("unknown_account", "insufficient_stamps", "price_unknown"),
    "RegisterClient": (
        "unknown_account",
        "already_exists",
        "invalid_rfc",
        "distributor_not_active",
    ),
    "UpdateClientProfile": ("unknown_account", "invalid_rfc", "distributor_not_active"),
    "TagClient": ("unknown_account",),
    "AssignAdminProfile": (
        "unknown_account",
        "admin_profile_not_allowed",
        "distributor_not_active",
    ),
    "OpenStampingAccount": (
        "unknown_account",
        "already_exists",
        "invalid_rfc",
        "insufficient_points",
    ),
    "BlockStampingAccount": ("unknown_account", "invalid_transition"),
    "ReactivateStampingAccount": ("unknown_account", "invalid_transition"),
    "ResetStampingPassword": ("unknown_account",),
    "RenewUnlimitedAccount": ("unknown_account", "wrong_account_kind", "insufficient_points"),
    # An unknown id answers ``valid: false`` like a wrong password: no actor learns which exist.
    "VerifyStampingCredentials": ("account_blocked", "credentials_locked"),
    "ConfigureAutoTopUp": ("unknown_account", "wrong_account_kind", "price_unknown"),
    "DisableAutoTopUp": ("unknown_account", "invalid_transition"),
    "ConsumeStamp": STAMP_TAKING_CODES,
    "AssignPackage": (
        "unknown_account",
        "unknown_package",
        "wrong_account_kind",
        "distributor_not_active",
        "insufficient_inventory",
    ),
    "SpendPoints": ("unknown_account", "insufficient_points"),
    "RegisterInvoice": ("unknown_account", "unknown_sale", "already_invoiced", "mixed_buyers"),
    "MassAutoTopUp": (
        "unknown_account",
        "wrong_account_kind",
        "distributor_not_active",
        "invalid_transition",
        "insufficient_inventory",
        "price_unknown",
    ),
    "ReserveStamp": STAMP_TAKING_CODES,
    "PostReservation": ("unknown_hold", "hold_expired", "hold_closed"),
    "VoidReservation": ("unknown_hold", "hold_closed"),
    "ClientBuyPackage": (
        "unknown_account",
        "unknown_package",
        "wrong_account_kind",
        "distributor_not_active",
        "pcc_purchase_not_allowed",
        "insufficient_inventory",
        "insufficient_points",
    ),
    "IssueCreditCode": (
        "unknown_account",
        "already_exists",
        "distributor_not_active",
        "insufficient_inventory",
        "insufficient_points",
        "price_unknown",
    ),
    "RedeemCreditCode": (
        "unknown_account",
        "wrong_account_kind",
        "unknown_code",
        "wrong_nip",
        "code_locked",
        "code_expired",
        "code_redeemed",
        "code_cancelled",
    ),
    # A code that is no longer active says why, as a redemption of it would.
    "CancelCreditCode": (
        "unknown_account",
        "code_redeemed",
        "code_locked",
        "code_expired",
        "code_cancelled",
    ),
    "GenerateLicence": (
        "unknown_account",
        "distributor_not_active",
        "mkl_required",
        "unknown_product",
        "insufficient_points",
    ),
    "BuyUserSeat": ("unknown_account", "distributor_not_active"),
    "RenewUserSeat": ("unknown_account", "distributor_not_active"),
    "AddPortalUser": (
        "unknown_account",
        "distributor_not_active",
        "already_exists",
        "no_free_seat",
    ),
    "DeactivatePortalUser": ("unknown_account", "invalid_transition"),
    "ChangePortalUser": (
        "unknown_account",
        "distributor_not_active",
        "invalid_transition",
        "no_free_seat",
        "already_exists",
    ),
    "DeletePortalUser": ("unknown_account", "invalid_transition"),
}
"""The codes each command type can answer besides ``COMMON_CODES`` and ``KEY_CODE`` (DESIGN
§5). ``tests/unit/test_rejection_codes.py`` triggers every one of them and fails on a code
listed here that no situation raises, or raised but not listed."""


REJECTION_NOTES: dict[str, str] = {
    "TransferStamps": (
        "A blocked CTI cannot stamp but may be topped up: a transfer into it is not refused."
    ),
    "VerifyStampingCredentials": (
        "A wrong password is an outcome `valid: false` (recorded, it counts towards the lock), "
        "not a rejection; an unknown id, or one of another kind of account, answers the same, "
        "so that no actor learns which ids exist."
    ),
    "CancelCreditCode": (
        "A code that is no longer active answers why, as a redemption of it would: "
        "`code_redeemed`, `code_locked`, `code_expired` (its expiry already recorded) or "
        "`code_cancelled`."
    ),
}
"""Choices about a command's codes, shown under its list of rejections."""


def documented_codes(command_type: str) -> tuple[str, ...]:
    """Every code ``command_type`` can answer on its own, in the order COMMANDS.md lists them."""
    keyed = () if command_type in NEVER_REPLAYED else (KEY_CODE,)
    return (*COMMON_CODES, *keyed, *REJECTIONS.get(command_type, ()))


EXAMPLE_VALUES: dict[str, Any] = {
    "actor": "D1",
    "cfdi_uuid": "0b9c3d1e-6f2a-4c4b-9a51-2f1f5c1d7e10",
    "rfc": "GODE561231GR8",
    "issuer_rfc": "GODE561231GR8",
    "rfc_lock": "GODE561231GR8",
    "password": "una-clave-larga",
    "email": "admin@example.com",
    "mobile": "5512345678",
    "postal_code": "06600",
    "regimen_fiscal": "612",
    "uso_cfdi": "G03",
    "invoice_ref": "FAC-0001",
    "nip": "123456",
    "code": "K7Q2M9X4T8W3R6Z5B1N0",
    "reason": "falta de pago",
    "name": "Juan Pérez",
    "product": "Multinivel",
}
"""Example values by field name, where the field's type alone does not make a valid one."""

EXAMPLES: dict[str, dict[str, Any]] = {
    "SpendPoints": {
        "type": "SpendPoints",
        "actor": "C1",
        "client_id": "C1",
        "product": "timbrado",
        "points": 100,
        "spend_id": "SP-1",
    },
    "GenerateLicence": {
        "type": "GenerateLicence",
        "actor": "D1",
        "client_id": "C1",
        "product": "Dóminus",
        "licence_id": "LIC-C1-1",
    },
    "DefineSubscriptionProduct": {
        "type": "DefineSubscriptionProduct",
        "actor": "M",
        "seller_id": "M",
        "product": "MKL Dóminus",
        "kind": "mkl",
        "annual_price": "1850.00",
        "licence_points": 250,
    },
}
"""Whole example commands, for types whose fields the rules above cannot fill validly."""


# Rendering -------------------------------------------------------------------------------------


def _non_null(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    options = spec.get("anyOf")
    if options is None:
        return spec, False
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) == 1:
        return {**{k: v for k, v in spec.items() if k != "anyOf"}, **kept[0]}, True
    return spec, any(o.get("type") == "null" for o in options)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def render_type(spec: dict[str, Any]) -> str:
    """A field's type and bounds in words, from its JSON Schema."""
    spec, _ = _non_null(spec)
    if "$ref" in spec:
        return f"`{_ref_name(spec['$ref'])}`"
    if "const" in spec:
        return f"`{json.dumps(spec['const'], ensure_ascii=False)}`"
    if "enum" in spec:
        return "one of " + ", ".join(f"`{v}`" for v in spec["enum"])
    if "anyOf" in spec:
        return " or ".join(render_type(o) for o in spec["anyOf"] if o.get("type") != "null")
    kind = spec.get("type", "any")
    parts: list[str] = []
    if kind == "string":
        fmt = spec.get("format")
        text = {"date": "date (YYYY-MM-DD)", "date-time": "ISO 8601 time with offset"}.get(
            fmt or "", "string"
        )
        if "minLength" in spec or "maxLength" in spec:
            parts.append(f"{spec.get('minLength', 0)}..{spec.get('maxLength', '')} chars")
        if spec.get("pattern") == ID_PATTERN:
            text = "id"
            parts = [f"1..{spec.get('maxLength', '')} chars: letters, digits, `_ . -`"]
        elif "pattern" in spec:
            parts.append(f"pattern `{spec['pattern']}`")
    elif kind in {"integer", "number"}:
        text = kind
        low = spec.get("minimum", spec.get("exclusiveMinimum"))
        if "exclusiveMinimum" in spec:
            low = spec["exclusiveMinimum"] + 1
        high = spec.get("maximum")
        if low is not None or high is not None:
            parts.append(
                f"{'' if low is None else f'{low:,}'}..{'' if high is None else f'{high:,}'}"
            )
    elif kind == "array":
        text = f"list of {render_type(spec.get('items', {}))}"
        if "maxItems" in spec:
            parts.append(f"{spec.get('minItems', 0)}..{spec['maxItems']:,} items")
    else:
        text = str(kind)
    return f"{text} ({'; '.join(parts)})" if parts else text


def _fields_table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", ()))
    lines = ["| field | type | required |", "|---|---|---|"]
    for name, spec in schema.get("properties", {}).items():
        if name == "type":
            continue
        _, nullable = _non_null(spec)
        if name in required:
            need = "required"
        elif name == "actor":
            need = "required (DESIGN §4a)"
        else:
            default = spec.get("default")
            need = "optional" if default is None else f"optional, default `{json.dumps(default)}`"
            if nullable and default is None:
                need = "optional"
        cell = render_type(spec).replace("|", "\\|")
        lines.append(f"| `{name}` | {cell} | {need} |")
    return lines


def _example_value(name: str, spec: dict[str, Any], defs: dict[str, Any]) -> Any:
    if name in EXAMPLE_VALUES:
        return EXAMPLE_VALUES[name]
    spec, _ = _non_null(spec)
    if "$ref" in spec:
        return _example_object(defs[_ref_name(spec["$ref"])], defs)
    if "const" in spec:
        return spec["const"]
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec.get("type")
    fmt = spec.get("format")
    if kind == "string":
        if fmt == "date":
            return "2027-01-31"
        if fmt == "date-time":
            return "2026-11-26T12:00:00-06:00"
        pattern = spec.get("pattern", "")
        if pattern.endswith(("\\.[0-9]{2}$", "\\.\\d{2}$")):
            return "1500.00"
        return f"{name.upper().replace('_', '-')[:20]}-1" if name.endswith("id") else "texto"
    if kind == "integer":
        return max(1, spec.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example_value(name, spec.get("items", {}), defs)]
    return None


def _example_object(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", ()))
    return {
        name: _example_value(name, spec, defs)
        for name, spec in schema.get("properties", {}).items()
        if name in required
    }


def example(command_type: str) -> dict[str, Any]:
    """An example command of ``command_type`` that the models accept (required fields only)."""
    if command_type in EXAMPLES:
        return EXAMPLES[command_type]
    model = command_models()[command_type]
    schema = model.model_json_schema()
    body = _example_object(schema, schema.get("$defs", {}))
    body.pop("actor", None)
    return {"type": command_type, "actor": _example_actor(model), **body}


def _example_actor(model: type[Command]) -> str:
    from ledger.commands.auth import NOBODY_ELSE, RULES  # noqa: PLC0415

    rule = RULES.get(model)
    if rule is not None and NOBODY_ELSE in rule.who:
        return "M"
    return str(EXAMPLE_VALUES["actor"])


def _who(model: type[Command]) -> str:
    from ledger.commands.auth import NOBODY_ELSE, RULES  # noqa: PLC0415  (auth imports the engine)

    rule = RULES.get(model)
    if rule is None:
        return "nobody (no rule: refused)"
    if NOBODY_ELSE in rule.who:
        return "the master account of the network alone"
    return "; ".join(["the master account of the network", *rule.who])


def render_commands() -> str:
    """The whole of docs/COMMANDS.md."""
    out = [
        "# Commands",
        "",
        "Generated from the command models by `python -m ledger.commands.reference`; do not edit",
        "by hand (a test fails when this file is stale). `ledger schema [TYPE]` prints the same",
        "models as JSON Schema.",
        "",
        "Every command is a JSON object with a `type`; it may carry `idempotency_key` and must",
        "carry `actor`, the id of who acts (the first `OpenMasterAccount` of a ledger may leave",
        "it out). Each command lists every rejection code it can answer (a test triggers each",
        "one): " + ", ".join(f"`{c}`" for c in COMMON_CODES) + " for all, `" + KEY_CODE + "` for",
        "all that take a key (a used key with other fields). Inside an atomic `execute_many`",
        "every command may also answer `batch_aborted` (another command of the batch was",
        "rejected: nothing was recorded) or `batch_too_large` (the batch holds more than",
        f"{ATOMIC_SIZE_MAX:,} commands: none is run).",
        "Text fields hold no control characters; times carry an offset.",
        "",
    ]
    models = command_models()
    out.append("| command | what it does |")
    out.append("|---|---|")
    out.extend(
        f"| [{name}](#{name.lower()}) | {(model.__doc__ or '').strip().splitlines()[0]} |"
        for name, model in models.items()
    )
    out.append("")
    nested: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        schema = model.model_json_schema()
        nested.update(schema.get("$defs", {}))
        codes = documented_codes(name)
        out += [
            f"## {name}",
            "",
            (model.__doc__ or "").strip(),
            "",
            f"Who may act: {_who(model)}.",
            "",
            *_fields_table(schema),
            "",
            "Rejections: " + ", ".join(f"`{c}`" for c in codes) + ".",
            *(["", REJECTION_NOTES[name]] if name in REJECTION_NOTES else []),
            "",
            "```json",
            json.dumps(example(name), ensure_ascii=False),
            "```",
            "",
        ]
    if nested:
        out += ["# Nested objects", ""]
        for def_name in sorted(nested):
            schema = nested[def_name]
            out += [
                f"## {def_name}",
                "",
                (schema.get("description") or "").strip(),
                "",
                *_fields_table(schema),
                "",
            ]
    return "\n".join(line.rstrip() for line in out).rstrip() + "\n"


# Views -------------------------------------------------------------------------------------


def _row_class(method: Any) -> type[Any] | None:
    hints = typing.get_type_hints(method)
    returned = hints.get("return")
    for candidate in (returned, *typing.get_args(returned)):
        if dataclasses.is_dataclass(candidate):
            return candidate  # type: ignore[return-value]
    return None


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("datetime.", "")
    return text.removeprefix("<class '").removesuffix("'>")


def render_views() -> str:
    """The whole of docs/VIEWS.md."""
    from ledger.projections.views import Views, default_views  # noqa: PLC0415

    out = [
        "# Views",
        "",
        "Generated from the read side's code by `python -m ledger.docs`; do not edit by hand (a",
        "test fails when this file is stale). What each view answers is DESIGN §6; how they are",
        "kept is docs/ARCHITECTURE.md (read side).",
        "",
        "Views follow the event log with tracked positions (exactly once, resumable) and live in",
        "the events' database, or in `views_url` when one is given. Clock-dependent answers (CPD,",
        "days remaining, expired lots, a distributor's status) are computed at query time from",
        "the ledger's clock. Reads are scoped by the distributor id the caller passes; checking",
        "that the caller may see it is the portal's job.",
        "",
        "## Queries (`lg.views.…`)",
        "",
    ]
    rows: dict[str, type[Any]] = {}
    for name, method in inspect.getmembers(Views, inspect.isfunction):
        if name.startswith("_") or method.__qualname__.split(".")[0] != "Views":
            continue
        row = _row_class(method)
        if row is None:
            continue
        rows[row.__name__] = row
        signature = str(inspect.signature(method, eval_str=True))
        signature = re.sub(r"\b(?:[a-z_]+\.)+(?=[A-Z])", "", signature)
        signature = signature.replace("(self, ", "(").replace("(self)", "()")
        doc = (method.__doc__ or "").strip().splitlines()[0]
        link = f"[`{row.__name__}`](#{row.__name__.lower()})"
        out += [f"### `{name}{signature}`", "", doc, "", f"Rows: {link}.", ""]
    out += ["## Rows", ""]
    for row_name in sorted(rows):
        row = rows[row_name]
        out += [f"### {row_name}", "", (row.__doc__ or "").strip().splitlines()[0], ""]
        out += ["| field | type |", "|---|---|"]
        hints = typing.get_type_hints(row)
        out += [f"| `{f.name}` | `{_type_name(hints[f.name])}` |" for f in dataclasses.fields(row)]
        out.append("")
    out += ["## Tables (SQL)", ""]
    for view in default_views():
        for table in view.tables:
            columns = ", ".join(f"`{c}` {kind}" for c, kind in table.columns)
            out += [f"- `{table.name}` ({view.name}): {columns}"]
    out += ["", "`view_tracking` holds each view's position, version and last projection error."]
    out += ["", *OWN_VIEWS_TEXT.strip().splitlines(), ""]
    out += ["```python", *EXAMPLE_VIEW.read_text(encoding="utf-8").rstrip().splitlines(), "```"]
    out += ["", *OWN_VIEWS_USE.strip().splitlines(), ""]
    out += _events_section()
    return "\n".join(line.rstrip() for line in out).rstrip() + "\n"


EXAMPLE_VIEW = DOCS.parent / "examples" / "monthly_stamps_by_rfc.py"
"""The own view VIEWS.md shows whole (``tests/integration/test_own_views.py`` runs it)."""

OWN_VIEWS_TEXT = """
## Your own views

A view the project does not have is written outside it, against `ledger.projections.own`, and
kept exactly like the built-in ones: the same runner hands each page of events to every view,
and one transaction writes all their rows and moves each view's position in `view_tracking`.
A crash leaves rows and position together; a view added later, or whose `version` changed, is
built from the first event on its own; `ledger rebuild` rebuilds it aside with the others.

- `class MyView(OwnView)` with `name` (lower case), `version` and `tables`: each a
  `Table(name, columns, key)`, named `view_*`, columns `(name, kind)` with kind `text`, `int`
  (64-bit), `bool`, `ts` (aware instant) or `date`.
- Handlers: methods marked `@on(EventClass, ...)` (a base class covers its subclasses) taking
  `(self, rows, event)`. They say what the event changes, never write SQL:
  `rows.set(table, key, **fields)`, `rows.add(table, key, **amounts)` (integers, from 0),
  `rows.delete(table, key)`, `key` a mapping of the key columns. A page's changes are merged
  in event order and written in bulk. Handlers are pure (no clock, no I/O): a rebuild must give
  the same rows. The events and their fields are listed below.
- Queries: methods marked `@query` taking `(self, cursor, ...)`; `cursor.execute(sql,
  params)` with `?` placeholders (SQLite and PostgreSQL alike), `cursor.fetchall()`, and
  `cursor.dialect.to_ts(value)` / `to_day(value)` to read instants and dates back.
- Register: `Ledger.open(url, views=[MyView()])`, then `lg.views.own("my_view").my_query(...)`;
  or, from an installed package, an entry point that `ledger project`, `rebuild`, `status`
  and `export` load:

  ```toml
  [project.entry-points."ledger.views"]
  monthly = "my_reports.monthly:MonthlyStampsByRfc"
  ```

  `ledger project --view NAME` and `ledger rebuild --view NAME` run one view alone.

### Example: monthly stamps consumed per issuer RFC

The report a PAC reconciles with SAT, written from scratch (`examples/monthly_stamps_by_rfc.py`,
run by `tests/integration/test_own_views.py`):
"""

OWN_VIEWS_USE = """
```python
with Ledger.open("postgresql://ledger@db/books", views=[MonthlyStampsByRfc()]) as lg:
    for row in lg.views.own("monthly_stamps_by_rfc").month("2026-01"):
        print(row.issuer_rfc, row.stamps)
```
"""


def _plain_type(annotation: Any) -> str:
    """A type as a table cell shows it: no module paths, no ``|`` (a column separator)."""
    text = re.sub(r"\b(?:[a-z_]+\.)+(?=[A-Za-z])", "", _type_name(annotation))
    return text.replace(" | ", " or ")


def _events_section() -> list[str]:
    """Every event an own view can handle, with its fields (also the ``data`` of a message)."""
    import importlib  # noqa: PLC0415
    import pkgutil  # noqa: PLC0415

    import ledger.aggregates  # noqa: PLC0415
    from ledger.domain import TOPICS  # noqa: PLC0415
    from ledger.outbound.message import BASE_FIELDS, SECRET_FIELDS  # noqa: PLC0415

    # Every aggregate module, whatever the process imported so far; and only their events
    # (a test may register event classes of its own).
    for module in pkgutil.iter_modules(ledger.aggregates.__path__):
        importlib.import_module(f"ledger.aggregates.{module.name}")

    out = [
        "## Events",
        "",
        "What handlers receive (`ledger.aggregates`), and the `data` of each message of",
        "`ledger publish` and row of `ledger export`. Every event also has `originator_id`,",
        "`originator_version`, `timestamp` and `actor`. Fields marked secret never leave the",
        "ledger.",
        "",
        "| event | fields |",
        "|---|---|",
    ]
    for topic in sorted(TOPICS):
        event_class = TOPICS[topic]
        if not event_class.__module__.startswith("ledger.aggregates."):
            continue
        hints = typing.get_type_hints(event_class)
        fields = [
            f"`{name}` {_plain_type(hint)}" + (" (secret)" if name in SECRET_FIELDS else "")
            for name, hint in hints.items()
            if name not in BASE_FIELDS
            and typing.get_origin(hint) is not typing.ClassVar
            and name not in ("topic", "class_version", "aggregate_class")
        ]
        type_name = topic.partition("#")[0]
        out.append(f"| `{type_name}` | {', '.join(fields) or '-'} |")
    return out


PAGES = {COMMANDS_MD: render_commands, VIEWS_MD: render_views}


def main() -> int:
    """Rewrites docs/COMMANDS.md and docs/VIEWS.md."""
    for path, render in PAGES.items():
        path.write_text(render(), encoding="utf-8")
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
