"""C2SP tlog checkpoints (c2sp.org/tlog-checkpoint): ``<origin>\\n<tree size>\\n<base64 root>\\n``.

The body is signed as a C2SP signed note (``ledger.proofs.note``) by the key named like the
origin. ``parse`` is strict: a decimal size without leading zeros, a canonical base64 hash of
32 bytes, and extension lines (allowed by the spec, never written here) not empty.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ledger.proofs.note import NoteError, Signer, Verifier, b64decode_strict, open_note, sign_note

HASH_SIZE = 32


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: the log's origin, its size and its root."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The checkpoint text that is signed."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def sign(self, signer: Signer) -> str:
        """The signed note of this checkpoint (the origin must be the key's name)."""
        if signer.name != self.origin:
            raise NoteError(f"the key {signer.name!r} does not sign the origin {self.origin!r}")
        return sign_note(self.body(), signer)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parses a checkpoint body (the note's text, already verified)."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is origin, size and root, one per line")
        origin, size_text, root_text, *extensions = lines[:-1]
        if not origin:
            raise NoteError("a checkpoint names its origin")
        if any(not line for line in extensions):
            raise NoteError("an empty line in a checkpoint")
        if (
            not size_text.isdigit()
            or not size_text.isascii()
            or (len(size_text) > 1 and size_text[0] == "0")
        ):
            raise NoteError("the tree size is a decimal number without leading zeros")
        if len(size_text) > 20:
            raise NoteError("the tree size is too large")
        root = b64decode_strict(root_text)
        if len(root) != HASH_SIZE:
            raise NoteError("the root hash is 32 bytes")
        return cls(origin, int(size_text), root)


def open_checkpoint(note: str | bytes, verifier: Verifier) -> Checkpoint:
    """The checkpoint of a signed note, once the verifier's signature holds and names its origin."""
    checkpoint = Checkpoint.parse(open_note(note, verifier))
    if checkpoint.origin != verifier.name:
        raise NoteError(f"the checkpoint's origin {checkpoint.origin!r} is not the key's name")
    return checkpoint
