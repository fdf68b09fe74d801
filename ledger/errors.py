"""The ledger's errors: one root, typed rejections with stable codes (DESIGN §5)."""

from __future__ import annotations

from typing import Any

# Stable rejection codes (DESIGN §5) with the Spanish message an end user sees. Codes are a
# contract with portals: never rename one; add new ones at the end.
MESSAGES: dict[str, str] = {
    "invalid_command": "La solicitud no es válida.",
    "invalid_rfc": "El RFC no es válido.",
    "unknown_account": "La cuenta no existe.",
    "not_authorised": "No tienes permiso para operar sobre esta cuenta.",
    "insufficient_stamps": "Sin folios disponibles.",
    "insufficient_inventory": "No tienes suficientes créditos en tu inventario.",
    "insufficient_points": "No tienes suficientes puntos.",
    "account_blocked": "La cuenta de timbrado está bloqueada.",
    "distributor_not_active": "El distribuidor no está activo.",
    "unlimited_expired": "La cuenta ilimitada ha vencido.",
    "rfc_not_allowed": "El RFC emisor no está permitido en esta cuenta.",
    "wrong_account_kind": "La operación no aplica a este tipo de cuenta.",
    "invalid_transition": "El cambio de estatus no está permitido.",
    "multinivel_required": "Se requiere una suscripción Multinivel activa.",
    "mkl_required": "Se requiere una suscripción MKL activa para este producto.",
    "idempotency_conflict": "La clave ya se usó con datos distintos.",
    "already_invoiced": "La venta ya fue facturada.",
    "wrong_nip": "El NIP es incorrecto.",
    "code_locked": "El código está bloqueado por intentos fallidos.",
    "code_expired": "El código ha vencido.",
    "code_redeemed": "El código ya fue canjeado.",
    "admin_profile_not_allowed": "Ese perfil ya administra una cuenta maestra o de distribuidor.",
    "pcc_purchase_not_allowed": "Tu distribuidor no permite compras desde el panel.",
    "already_exists": "Ya existe una cuenta con ese identificador.",
    "unknown_package": "El paquete no existe.",
    "unknown_sale": "La venta no existe.",
    # No command answers it any more (a wrong password is ``valid: false``); kept registered,
    # since codes are never renamed or reused.
    "invalid_credentials": "Usuario o contraseña incorrectos.",
    "batch_aborted": "No se registró nada del lote porque una de sus operaciones fue rechazada.",
    "credentials_locked": (
        "La cuenta de timbrado está bloqueada temporalmente por intentos fallidos; "
        "intenta más tarde o restablece la contraseña."
    ),
    "unknown_code": "El código no existe.",
    "code_cancelled": "El código fue cancelado.",
    "unknown_hold": "La reservación no existe.",
    "hold_expired": "La reservación ha vencido.",
    "hold_closed": "La reservación ya fue cerrada.",
    "unknown_product": "El producto no está en el catálogo de suscripciones.",
    "no_free_seat": "No hay un usuario extra disponible; compra uno para agregar el usuario.",
    "batch_too_large": (
        "El lote tiene demasiadas operaciones para registrarse de una vez; divídelo en lotes "
        "más pequeños."
    ),
    "price_unknown": (
        "No se indicó el importe y no hay un precio de lista que lo dé; indica el importe "
        '(o "0.00" si es un obsequio).'
    ),
    "mixed_buyers": "Una factura solo puede incluir ventas a un mismo comprador.",
}


def one_line(text: str) -> str:
    """``text`` on one line (DESIGN §7: a failure is one line).

    PostgreSQL's messages carry DETAIL, HINT and CONTEXT on lines of their own (and CONTEXT may
    span several, a PL/pgSQL call stack): each line is kept, its spaces collapsed, and the lines
    are joined with `` | ``, so nothing the server said is lost.
    """
    if "\n" not in text and "\r" not in text:
        return text
    lines = (" ".join(line.split()) for line in text.splitlines())
    return " | ".join(line for line in lines if line)


class LedgerError(Exception):
    """Raised when the ledger cannot do what was asked; the root of every ledger error.

    Its message is one line: a message given with line breaks (a database error's DETAIL and
    CONTEXT) is folded by ``one_line``.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (one_line(args[0]), *args[1:])
        super().__init__(*args)


class Rejected(LedgerError):
    """Raised when a command breaks a rule; nothing was recorded.

    ``code`` is one of the stable strings of ``MESSAGES``, ``message`` is Spanish for end users and
    ``details`` carries structured facts (field errors, balances) for programs.
    """

    def __init__(self, code: str, message: str | None = None, **details: Any) -> None:
        assert code in MESSAGES, f"unregistered rejection code {code!r}"
        self.code = code
        self.message = message or MESSAGES[code]
        self.details = details
        super().__init__(f"{code}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        """The rejection as the JSON outcome `ledger exec` writes."""
        out: dict[str, Any] = {"ok": False, "code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword details do not survive the default pickling of exceptions (multiprocessing).
        return (_rebuild_rejected, (self.code, self.message, self.details))


def _rebuild_rejected(code: str, message: str, details: dict[str, Any]) -> Rejected:
    return Rejected(code, message, **details)


class RecordedRejection(Rejected):
    """Raised when a failed secret check (a wrong NIP) is rejected AND recorded.

    DESIGN §3.3's one exception: the events the handler triggered before raising (the failed
    attempt, a lock) are recorded, so that the lock they count towards holds in every process.
    Nothing else of the command is: its idempotency keys stay unused, so a retry is judged afresh.
    """


class ConcurrencyError(LedgerError):
    """Raised when optimistic-concurrency conflicts persisted after the bounded retries."""


class InfrastructureError(LedgerError):
    """Raised when the database could not be reached or used in time; nothing half-done.

    The message says what failed and what to check (the host and port, that the server runs,
    the timeouts of the URL). The command may be retried once the database is back.
    """


class DatabaseUnreachable(InfrastructureError):
    """Raised when no connection to the database could be had within the URL's waits
    (``connect_timeout``, ``pool_timeout``): the server is down or unreachable, or none of the
    URL's hosts is of the kind asked for (a failover under way). Nothing was recorded.

    Calls queued behind one that met it get it too, so that none waits more than its bound.
    """


class CommitOutcomeUnknown(InfrastructureError):
    """Raised when the connection broke while a commit was under way: recorded or not, unknown.

    Retrying the same commands with the same keys (ids, CFDI UUIDs, ``idempotency_key``) is
    safe: one that was recorded answers its first outcome again and records nothing new. A
    command without any key may be recorded twice by a retry; check its history first.
    """


class IntegrityBreach(LedgerError):
    """Raised when stored history contradicts itself (a tampered or corrupted event store)."""
