"""The OpenAPI 3.1 document of the service (``GET /openapi.json``).

Request bodies are the JSON Schema of the command models (``COMMAND_ADAPTER``, the models that
validate every command, as ``ledger schema`` prints them), with one change that is the service's
own: ``actor`` may be left out, since the API key says who acts. Outcomes and view rows come
from their msgspec structs and dataclasses; problems are RFC 9457 documents (``problems.py``).
"""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Any

import msgspec

from adapters.http.problems import PROBLEM_MEDIA_TYPE, mapping_rows
from adapters.http.views import ViewQuery
from ledger.audit.history import Movement
from ledger.commands.models import COMMAND_ADAPTER
from ledger.outcome import Outcome

REF = "#/components/schemas/{name}"
VERSION = "1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _command_schemas() -> dict[str, Any]:
    schema = copy.deepcopy(COMMAND_ADAPTER.json_schema(ref_template=REF.replace("name", "model")))
    schemas: dict[str, Any] = schema.pop("$defs", {})
    for model in schemas.values():
        properties = model.get("properties", {})
        if "type" in properties and "actor" in properties:
            # The service fills in the key's actor; another one is 403 not_authorised.
            model["required"] = [name for name in model.get("required", []) if name != "actor"]
            properties["actor"]["description"] = (
                "Who acts: the API key's actor (the default); any other is 403 not_authorised."
            )
    schemas["Command"] = schema
    return schemas


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An RFC 9457 problem: `code` is the stable code, `title` its Spanish "
        "message, `details` what it is about.",
        "required": ["type", "code", "title", "status"],
        "properties": {
            "type": {"type": "string", "description": "urn:ledger:problem:<code>"},
            "ok": {"const": False},
            "code": {"type": "string", "enum": sorted({code for code, _, _ in mapping_rows()})},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "details": {"type": "object"},
        },
    }


def _parameter_schema(kind: type[Any]) -> dict[str, Any]:
    if kind is bool:
        return {"type": "boolean"}
    if kind is int:
        return {"type": "integer"}
    if kind is date:
        return {"type": "string", "format": "date"}
    if kind is datetime:
        return {"type": "string", "format": "date-time"}
    return {"type": "string"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_PROBLEM_RESPONSE = {
    "description": "A problem (RFC 9457): 400 invalid input, 401 no valid key, 403 "
    "not_authorised, 404 unknown id or route, 405, 409 conflict, 413 too large, 422 a "
    "business rule or idempotency_conflict, 429 rate (Retry-After), 503 database away",
    "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}},
}


def _operation(
    summary: str,
    response: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    secured: bool = True,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK", "content": _json_content(response)}
    if headers:
        ok["headers"] = headers
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, "default": _PROBLEM_RESPONSE},
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    if not secured:
        operation["security"] = []
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


UNIT = _query("unit", {"enum": ["stamps", "points"], "default": "stamps"}, "which book")


def openapi_document(views: tuple[ViewQuery, ...]) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    rows = sorted({query.row for query in views}, key=lambda row: row.__name__)
    _, struct_schemas = msgspec.json.schema_components((Outcome, Movement, *rows), ref_template=REF)
    schemas: dict[str, Any] = {
        **_command_schemas(),
        **struct_schemas,
        "Problem": _problem_schema(),
    }
    result = {"anyOf": [_ref("Outcome"), _ref("Problem")]}
    paths: dict[str, Any] = {
        "/v1/commands": {
            "post": _operation(
                "Run one command as the key's actor; its outcome, or a problem",
                _ref("Outcome"),
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 200},
                        "description": "Becomes the command's idempotency_key when it has no "
                        "natural key; a repeat answers the first outcome (Idempotency-Replayed: "
                        "true), another body with it is 422, the same key in flight 409",
                    }
                ],
                body=_json_content(_ref("Command")),
                headers={
                    "Idempotency-Replayed": {
                        "description": "true when this is the first outcome again",
                        "schema": {"type": "string"},
                    }
                },
            )
        },
        "/v1/commands/batch": {
            "post": _operation(
                "Run up to 10,000 commands; one result each, in order",
                {
                    "type": "object",
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": result}},
                },
                parameters=[
                    _query(
                        "atomic",
                        {"type": "boolean", "default": False},
                        "all or nothing in one transaction",
                    )
                ],
                body={
                    "application/json": {
                        "schema": {"type": "array", "items": _ref("Command"), "maxItems": 10_000}
                    },
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            )
        },
        "/v1/balances/{holder}": {
            "get": _operation(
                "A holder's balance now (write side), or at an instant (from its events)",
                {
                    "type": "object",
                    "properties": {
                        "holder_id": {"type": "string"},
                        "unit": {"type": "string"},
                        "balance": {"type": "integer"},
                        "at": {"type": ["string", "null"]},
                    },
                },
                parameters=[
                    _path("holder", "a CTI, client, distributor or master id"),
                    UNIT,
                    _query("at", {"type": "string", "format": "date-time"}, "ISO 8601 with offset"),
                ],
            )
        },
        "/v1/history/{holder}": {
            "get": _operation(
                "A holder's movements with running balance, oldest first, a page at a time",
                {
                    "type": "object",
                    "properties": {
                        "movements": {"type": "array", "items": _ref("Movement")},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
                parameters=[
                    _path("holder", "a CTI, client, distributor or master id"),
                    UNIT,
                    _query("cursor", {"type": "string"}, "next_cursor of the page before"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page"),
                ],
            )
        },
        "/v1/checkpoint": {
            "get": _operation(
                "The latest signed checkpoint (C2SP signed note text; null before the first)",
                {"type": "object", "properties": {"checkpoint": {"type": ["string", "null"]}}},
            )
        },
        "/v1/proofs/inclusion/{notification_id}": {
            "get": _operation(
                "An event's inclusion proof against a signed checkpoint (RFC 9162; DESIGN §9)",
                {"type": "object"},
                parameters=[
                    {
                        "name": "notification_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                        "description": "the event, readable by the key's actor",
                    },
                    _query("size", {"type": "integer", "minimum": 1}, "the checkpoint's size"),
                ],
            )
        },
        "/v1/proofs/consistency": {
            "get": _operation(
                "The consistency proof between two signed checkpoints",
                {"type": "object"},
                parameters=[
                    {**_query("from", {"type": "integer", "minimum": 1}, "size"), "required": True},
                    {**_query("to", {"type": "integer", "minimum": 1}, "size"), "required": True},
                ],
            )
        },
        "/v1/statements/{holder}": {
            "get": _operation(
                "A holder's statement over dates, with its proofs (ledger statement)",
                {"type": "object"},
                parameters=[
                    _path("holder", "a CTI, client, distributor or master id"),
                    UNIT,
                    {
                        **_query("from", {"type": "string", "format": "date"}, "first day"),
                        "required": True,
                    },
                    {
                        **_query("to", {"type": "string", "format": "date"}, "last day"),
                        "required": True,
                    },
                ],
            )
        },
        "/v1/status": {
            "get": _operation(
                "The read side: each view's position, lag and last error", {"type": "object"}
            )
        },
    }
    for query in views:
        row = _ref(query.row.__name__)
        paths[query.path] = {
            "get": _operation(
                query.summary,
                {"type": "object", "properties": {"rows": {"type": "array", "items": row}}}
                if query.many
                else row,
                parameters=[
                    _path(query.subject, "the account read: the key's actor or one below it"),
                    *(
                        _query(p.name, _parameter_schema(p.kind), "required" if p.required else "")
                        for p in query.parameters
                    ),
                ],
            )
        }
    status_object = {"type": "object", "properties": {"status": {"type": "string"}}}
    paths["/healthz"] = {"get": _operation("The process is up", status_object, secured=False)}
    paths["/readyz"] = {
        "get": _operation("The ledger's database answers", status_object, secured=False)
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CFDI credits ledger",
            "version": VERSION,
            "description": "The ledger's commands and reads over HTTP (DESIGN §11). Every /v1 "
            "request carries `Authorization: Bearer <key>` (`ledger api-key create`).",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
