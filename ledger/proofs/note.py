"""C2SP signed notes (c2sp.org/signed-note) with Ed25519, as Go's ``golang.org/x/mod/sumdb/note``.

A note is UTF-8 text that ends in a newline, then a blank line, then signature lines
``— <key name> <base64(4-byte key ID || signature)>``. The key ID of an Ed25519 key is the first
four bytes of ``SHA-256(name || 0x0A || 0x01 || public key)``. A verifier key is written
``<name>+<8 hex digits of the key ID>+<base64(0x01 || public key)>``; a signer key (the private
key file) ``PRIVATE+KEY+<name>+<8 hex digits>+<base64(0x01 || seed)>``, as Go writes them.

Parsing is strict and refuses what is ambiguous: bytes that are not UTF-8, control characters
other than newline, a missing blank line, a malformed signature line, two signatures of one key,
and more than ``SIGNATURES_MAX`` lines. ``open_note`` returns the text only once a signature of
the given key verifies; signatures of other keys (witnesses, say) are left unchecked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALGORITHM_ED25519 = 0x01
"""The signature type of Ed25519 in a C2SP key."""
SIGNATURES_MAX = 100
"""Signature lines a note may carry (Go's bound)."""
NOTE_BYTES_MAX = 1_000_000
"""Bound on the size of a note this module parses."""
_SIGNATURE_PREFIX = "\u2014 "


class NoteError(ValueError):
    """Raised when a note, a key or a signature is malformed or does not verify."""


def valid_name(name: str) -> bool:
    """A key name: not empty, no whitespace, no ``+``."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public_key: bytes) -> int:
    """The key ID of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALGORITHM_ED25519]) + public_key)
    return int.from_bytes(digest.digest()[:4], "big")


def b64decode_strict(text: str) -> bytes:
    """Standard base64, canonical only (padding required, no stray characters)."""
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("malformed base64") from None
    if base64.b64encode(value).decode() != text:
        raise NoteError("non-canonical base64")
    return value


@dataclass(frozen=True, slots=True)
class Verifier:
    """A verifier key: name, key ID and the Ed25519 public key."""

    name: str
    key_id: int
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Parses ``<name>+<hex id>+<base64(0x01 || key)>`` and checks the ID against the key."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<key id>+<key>")
        name, hex_id, encoded = parts
        if not valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if len(hex_id) != 8 or hex_id != hex_id.lower():
            raise NoteError("the key ID is 8 lower-case hex digits")
        try:
            claimed = int(hex_id, 16)
        except ValueError:
            raise NoteError("the key ID is 8 lower-case hex digits") from None
        key = b64decode_strict(encoded)
        if len(key) != 33 or key[0] != ALGORITHM_ED25519:
            raise NoteError("not an Ed25519 verifier key")
        public_key = key[1:]
        if key_id(name, public_key) != claimed:
            raise NoteError("the key ID does not match the key")
        return cls(name, claimed, public_key)

    def text(self) -> str:
        """The verifier key in its text form."""
        encoded = base64.b64encode(bytes([ALGORITHM_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """A signer key (the private key): never logged, never stored in the database."""

    __slots__ = ("_private", "key_id", "name", "public_key")

    def __init__(self, name: str, seed: bytes) -> None:
        if not valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if len(seed) != 32:
            raise NoteError("an Ed25519 seed has 32 bytes")
        self.name = name
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, self.public_key)

    def __repr__(self) -> str:
        # The seed stays out of every representation (logs, tracebacks).
        return f"Signer({self.name!r}, key_id={self.key_id:08x})"

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key named ``name``."""
        return cls(name, secrets.token_bytes(32))

    @classmethod
    def parse(cls, text: str) -> Signer:
        """Parses ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``."""
        # The base64 key may itself hold a "+": split off the four fields before it only.
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key is PRIVATE+KEY+<name>+<key id>+<key>")
        name, hex_id, encoded = parts[2:]
        key = b64decode_strict(encoded)
        if len(key) != 33 or key[0] != ALGORITHM_ED25519:
            raise NoteError("not an Ed25519 signer key")
        signer = cls(name, key[1:])
        if f"{signer.key_id:08x}" != hex_id:
            raise NoteError("the key ID does not match the key")
        return signer

    def text(self) -> str:
        """The signer key in its text form (goes to a file of mode 0600, nowhere else)."""
        seed = self._private.private_bytes_raw()
        encoded = base64.b64encode(bytes([ALGORITHM_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{encoded}"

    def verifier(self) -> Verifier:
        """The matching verifier key."""
        return Verifier(self.name, self.key_id, self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message``."""
        return self._private.sign(message)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note holds no control character but newline")


def sign_note(text: str, signer: Signer) -> str:
    """The signed note: ``text``, a blank line, and the signer's signature line."""
    _check_text(text)
    if "\n\n" in text:
        raise NoteError("a note's text has no blank line")
    signature = signer.sign(text.encode())
    encoded = base64.b64encode(signer.key_id.to_bytes(4, "big") + signature).decode()
    return f"{text}\n{_SIGNATURE_PREFIX}{signer.name} {encoded}\n"


@dataclass(frozen=True, slots=True)
class SignatureLine:
    """One parsed signature line (not verified)."""

    name: str
    key_id: int
    signature: bytes


def parse_note(note: str | bytes) -> tuple[str, list[SignatureLine]]:
    """Splits a note into its text and signature lines, strictly; verifies nothing."""
    if isinstance(note, bytes):
        if len(note) > NOTE_BYTES_MAX:
            raise NoteError("the note is too long")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note is UTF-8") from None
    if len(note) > NOTE_BYTES_MAX:
        raise NoteError("the note is too long")
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("no signature")
    lines = block[:-1].split("\n")
    if len(lines) > SIGNATURES_MAX:
        raise NoteError("too many signatures")
    parsed: list[SignatureLine] = []
    seen: set[tuple[str, int]] = set()
    for line in lines:
        if not line.startswith(_SIGNATURE_PREFIX):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        if not valid_name(name) or not encoded:
            raise NoteError("malformed signature line")
        blob = b64decode_strict(encoded)
        if len(blob) < 5:
            raise NoteError("a signature is a key ID and at least one byte")
        key = (name, int.from_bytes(blob[:4], "big"))
        if key in seen:
            raise NoteError(f"two signatures by the key {name}")
        seen.add(key)
        parsed.append(SignatureLine(name, key[1], blob[4:]))
    return text, parsed


def open_note(note: str | bytes, verifier: Verifier) -> str:
    """The note's text, once its signature by ``verifier`` verifies; ``NoteError`` otherwise."""
    text, lines = parse_note(note)
    for line in lines:
        if line.name == verifier.name and line.key_id == verifier.key_id:
            if not verifier.verify(text.encode(), line.signature):
                raise NoteError(f"the signature of {verifier.name} does not verify")
            return text
    raise NoteError(f"the note has no signature by {verifier.name}+{verifier.key_id:08x}")
