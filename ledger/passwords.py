"""Stamping-account passwords: a policy, a slow salted hash (scrypt) and a constant-time check.

A stored hash reads ``scrypt$n$r$p$salt_b64$hash_b64``: it names its own parameters, so hashes
made with older or cheaper settings still verify after the defaults change. The plaintext is
never logged, stored or kept beyond the call that receives it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from typing import Literal

from ledger.errors import Rejected

PASSWORD_LENGTH_MIN = 8
PASSWORD_LENGTH_MAX = 128

_SCHEME = "scrypt"
_SALT_BYTES = 16
_HASH_BYTES = 32

# scrypt work factors. "normal" is the usual interactive setting (16 MiB of memory, tens of
# milliseconds). "fast" is for tests and benchmarks ONLY, where thousands of accounts are opened:
# it is cheap to brute-force and must never protect a real password.
_COSTS: dict[str, tuple[int, int, int]] = {
    "normal": (2**14, 8, 1),
    "fast": (2**4, 8, 1),
}

# A stored hash chooses the work done to verify it; these bounds stop a corrupted or planted
# hash from making one verification eat the machine's memory or CPU.
_N_MAX = 2**20
_R_MAX = 32
_P_MAX = 16
_MEMORY_BYTES_MAX = 256 * 1024 * 1024


def validate_password(plaintext: str) -> None:
    """Raise ``invalid_command`` (field ``password``) unless it has 8 to 128 characters."""
    if not isinstance(plaintext, str):
        raise Rejected(
            "invalid_command", "La contraseña debe ser texto.", field="password", reason="not_text"
        )
    if not PASSWORD_LENGTH_MIN <= len(plaintext) <= PASSWORD_LENGTH_MAX:
        raise Rejected(
            "invalid_command",
            f"La contraseña debe tener entre {PASSWORD_LENGTH_MIN} y {PASSWORD_LENGTH_MAX} "
            "caracteres.",
            field="password",
            reason="length",
            length_min=PASSWORD_LENGTH_MIN,
            length_max=PASSWORD_LENGTH_MAX,
        )


GENERATED_PASSWORD_BYTES = 18
"""Random bytes of a generated CTI password: 144 bits, 24 URL-safe characters."""


def generate_password() -> str:
    """A fresh random password within the policy (shown once to whoever opened the CTI)."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


PasswordCost = Literal["normal", "fast"]
"""scrypt cost levels: ``fast`` only for tests, benchmarks and the demo."""


def hash_password(plaintext: str, *, cost: PasswordCost = "normal") -> str:
    """Return a salted scrypt hash of a valid password; ``cost="fast"`` is for tests only."""
    # Checked here too so that nothing outside the policy can ever be stored.
    validate_password(plaintext)
    return hash_secret(plaintext, cost=cost)


def hash_secret(plaintext: str, *, cost: PasswordCost = "normal") -> str:
    """A salted scrypt hash of any secret (a credit code's NIP), without the password policy."""
    n, r, p = _COSTS[cost]
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(plaintext, salt, n=n, r=r, p=p, length=_HASH_BYTES)
    return "$".join((_SCHEME, str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(plaintext: str, stored: str) -> bool:
    """Whether the password matches a hash made by ``hash_password`` (constant-time comparison).

    It also checks a secret hashed by ``hash_secret`` (the same format).
    """
    n, r, p, salt, expected = _parse(stored)
    # Any text is hashed, even one outside today's policy: a wrong password is simply "no", and
    # a policy change must not lock out passwords set before it.
    if not isinstance(plaintext, str):
        return False
    actual = _scrypt(plaintext, salt, n=n, r=r, p=p, length=len(expected))
    return hmac.compare_digest(actual, expected)


def _scrypt(plaintext: str, salt: bytes, *, n: int, r: int, p: int, length: int) -> bytes:
    # NFC first: the same accented password typed on two systems may arrive as different code
    # points ("é" precomposed or "e" + combining accent) and must hash the same.
    secret = unicodedata.normalize("NFC", plaintext).encode("utf-8")
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_MEMORY_BYTES_MAX, dklen=length)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    # A malformed hash is corrupted data or a caller bug, never a wrong password: say so loudly
    # instead of answering False, which would hide the damage behind "incorrect password".
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError("not a password hash made by ledger.passwords")
    try:
        n, r, p = (int(part) for part in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except ValueError:  # int() and b64decode (its binascii.Error is a ValueError) fail so
        raise ValueError("malformed password hash") from None
    # n must be a power of two above 1 for scrypt.
    if not (1 < n <= _N_MAX and n & (n - 1) == 0 and 1 <= r <= _R_MAX and 1 <= p <= _P_MAX):
        raise ValueError("password hash parameters out of bounds")
    # scrypt needs about 128 * r * n bytes; refuse before OpenSSL tries to allocate them.
    if 128 * r * n > _MEMORY_BYTES_MAX:
        raise ValueError("password hash needs too much memory")
    if len(salt) < _SALT_BYTES or len(expected) < _HASH_BYTES:
        raise ValueError("password hash salt or digest too short")
    return n, r, p, salt, expected


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
