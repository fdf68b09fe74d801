"""What a successful command returns."""

from __future__ import annotations

from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder()


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The result of a successful command: ``ok`` is True and the ids it made are filled in.

    ``replayed`` is True when the command's idempotency key had already been used with the same
    fields: nothing new was recorded and this is the first outcome again.

    Not tracked by the cyclic garbage collector (``gc=False``): a batch's outcomes are what
    outlives it, and the first collection after a call of 2,000 commands scanned all of them
    (0.39 ms here, 0.014 ms untracked). An outcome holds plain values only, so it is never
    part of a reference cycle; reference counting frees it.
    """

    type: str
    ok: bool = True
    replayed: bool = False
    cti_id: str | None = None
    # A generated CTI password, shown once like a credit code's NIP (never kept, see encode).
    cti_password: str | None = None
    sale_ids: tuple[str, ...] = ()
    balance_after: int | None = None
    code: str | None = None
    nip: str | None = None
    valid: bool | None = None
    hold_id: str | None = None
    expires_at: str | None = None
    warnings: tuple[str, ...] = ()
    details: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        """The outcome as the JSON object ``ledger exec`` writes."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["ok"] = True
        return out

    def encode(self) -> bytes:
        """Compact JSON, as kept beside an idempotency key: without the secrets.

        A credit code and its NIP are shown once, in the outcome of ``IssueCreditCode``, and a
        generated CTI password in the outcome of ``RegisterClient`` or ``OpenStampingAccount``;
        the key index keeps that outcome forever, so a replay answers everything but them.
        """
        if self.code is not None or self.nip is not None or self.cti_password is not None:
            return _ENCODER.encode(
                msgspec.structs.replace(self, code=None, nip=None, cti_password=None)
            )
        return _ENCODER.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Outcome:
        """The outcome kept beside an idempotency key."""
        return msgspec.json.decode(data, type=cls)
