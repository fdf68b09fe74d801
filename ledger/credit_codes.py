"""Credit codes' secrets: the code (100 random bits) and its 6-digit NIP, made and compared here.

The code is the bearer's secret. It is never a stream id, a log field, a view column, an
idempotency fingerprint or an error detail: the ledger keeps only its SHA-256 (``code_digest``),
which finds the code's aggregate through the key index (``code:<digest>``). A fast hash is enough
for 100 random bits (nobody can enumerate 2**100 codes); the 6-digit NIP, which could be
enumerated, is kept only as a slow salted hash (``ledger.passwords.hash_secret``).
"""

from __future__ import annotations

import hashlib
import secrets

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base 32: no I, L, O or U, so a code read aloud or retyped is not misread."""
CODE_SYMBOLS = 20
"""20 symbols of 5 bits: 100 random bits (DESIGN §4 asks for at least 80)."""
CODE_GROUP = 5
NIP_DIGITS = 6

# Crockford's reading of look-alikes, applied to what a person typed.
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_code() -> str:
    """A fresh code, in groups of five: ``7KQ2M-...`` (20 symbols, 100 random bits)."""
    symbols = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_SYMBOLS))
    return "-".join(
        symbols[start : start + CODE_GROUP] for start in range(0, CODE_SYMBOLS, CODE_GROUP)
    )


def new_nip() -> str:
    """A fresh 6-digit NIP (leading zeros kept)."""
    return f"{secrets.randbelow(10**NIP_DIGITS):0{NIP_DIGITS}d}"


def normalise_code(code: str) -> str:
    """The code as issued, whatever the case, dashes or spaces the bearer typed."""
    return code.upper().replace("-", "").replace(" ", "").translate(_READ_AS)


def code_digest(code: str) -> str:
    """The SHA-256 of the normalised code: what the ledger keeps instead of the code."""
    return hashlib.sha256(normalise_code(code).encode("ascii", "replace")).hexdigest()
