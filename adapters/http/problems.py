"""RFC 9457 problem documents, built in one place: from a ``Rejected``, or for what HTTP itself
refuses (no key, no route, a body too large, too many requests).

A problem's ``code`` is the ledger's stable rejection code (DESIGN §5) or one of
``HTTP_CODES``; ``title`` is its Spanish message; ``status`` the HTTP status of ``STATUS``;
``details`` the rejection's structured details. ``type`` is ``urn:ledger:problem:<code>``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from ledger.errors import MESSAGES, Rejected

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ledger:problem:"

BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
CONFLICT = 409
UNPROCESSABLE = 422

STATUS: dict[str, int] = {
    # 400: the request itself is wrong (schema, fields, JSON text, an RFC's form).
    "invalid_command": BAD_REQUEST,
    "invalid_rfc": BAD_REQUEST,
    # 403: the key's actor may not do this.
    "not_authorised": FORBIDDEN,
    # 404: an id that names nothing.
    "unknown_account": NOT_FOUND,
    "unknown_package": NOT_FOUND,
    "unknown_sale": NOT_FOUND,
    "unknown_code": NOT_FOUND,
    "unknown_hold": NOT_FOUND,
    "unknown_product": NOT_FOUND,
    # 409: the state of the ledger conflicts with the request (it exists, it was done).
    "already_exists": CONFLICT,
    "idempotency_conflict": CONFLICT,
    "already_invoiced": CONFLICT,
    "code_redeemed": CONFLICT,
    "hold_closed": CONFLICT,
}
"""HTTP status by rejection code; every other code (a business rule) is 422."""

HTTP_CODES: dict[str, tuple[int, str]] = {
    "unauthorised": (401, "Falta la clave de acceso, o no es válida."),
    "not_found": (404, "La ruta no existe."),
    "method_not_allowed": (405, "El método no se permite en esta ruta."),
    "payload_too_large": (413, "La solicitud es demasiado grande."),
    "rate_limited": (429, "Demasiadas solicitudes; intenta más tarde."),
    "internal_error": (500, "Error interno del servicio."),
    "unavailable": (503, "El servicio no está disponible; intenta más tarde."),
}
"""Problems that come from HTTP itself, not from a command: code -> (status, title)."""

_ENCODER = msgspec.json.Encoder()


def status_of(rejection: Rejected) -> int:
    """The HTTP status of a rejection.

    ``idempotency_conflict`` on a caller's idempotency key (``key:...``: the ``Idempotency-Key``
    header or the body's ``idempotency_key``) is 422, as the idempotency-key draft asks for a
    key reused with another body; on a natural key (a CFDI consumed with other fields, a
    transfer id reused) it is 409.
    """
    if rejection.code == "idempotency_conflict" and str(
        rejection.details.get("key", "")
    ).startswith("key:"):
        return UNPROCESSABLE
    return STATUS.get(rejection.code, UNPROCESSABLE)


def rejection_problem(rejection: Rejected, status: int | None = None) -> dict[str, Any]:
    """The problem document of a rejection (also one item of a batch's results)."""
    problem: dict[str, Any] = {
        "type": TYPE_PREFIX + rejection.code,
        "ok": False,
        "code": rejection.code,
        "title": rejection.message,
        "status": status or status_of(rejection),
    }
    if rejection.details:
        problem["details"] = rejection.details
    return problem


def http_problem(code: str, detail: str | None = None, **details: Any) -> dict[str, Any]:
    """The problem document of one of ``HTTP_CODES``."""
    status, title = HTTP_CODES[code]
    problem: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "ok": False,
        "code": code,
        "title": title,
        "status": status,
    }
    if detail is not None:
        problem["detail"] = detail
    if details:
        problem["details"] = details
    return problem


def problem_response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A problem document as an ``application/problem+json`` response."""
    return Response(
        _ENCODER.encode(problem),
        status_code=int(problem["status"]),
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def rejected_response(rejection: Rejected, status: int | None = None) -> Response:
    """A rejection as a problem response."""
    return problem_response(rejection_problem(rejection, status))


def mapping_rows() -> list[tuple[str, int, str]]:
    """``(code, status, title)`` for every rejection code and HTTP code (for the docs)."""
    rows = [(code, status_of(Rejected(code)), message) for code, message in MESSAGES.items()]
    rows += [(code, status, title) for code, (status, title) in HTTP_CODES.items()]
    return rows


def mapping_markdown() -> str:
    """The code -> status table of docs/HTTP.md (a test keeps the page equal to it)."""
    lines = ["| status | code | title |", "|---|---|---|"]
    for code, status, title in sorted(mapping_rows(), key=lambda row: (row[1], row[0])):
        lines.append(f"| {status} | `{code}` | {title} |")
    return "\n".join(lines) + "\n"
