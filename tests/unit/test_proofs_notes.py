"""Signed notes and checkpoints: Go's and C2SP's known answers, strict parsing."""

from __future__ import annotations

import base64

import pytest

from ledger.proofs.checkpoint import Checkpoint, open_checkpoint
from ledger.proofs.note import NoteError, Signer, Verifier, key_id, open_note, sign_note

# golang.org/x/mod/sumdb/note's documented example (Ed25519 signatures are deterministic).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2"
    "pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# c2sp.org/signed-note's example.
SPEC_VERIFIER = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6"
    "TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_go_known_answer_keys_and_signature() -> None:
    """The key ID, both key texts and the signed note match Go's byte for byte."""
    signer = Signer.parse(GO_SIGNER)
    assert signer.key_id == 0xC74F20A3
    assert signer.text() == GO_SIGNER
    assert signer.verifier().text() == GO_VERIFIER
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    assert open_note(GO_NOTE, Verifier.parse(GO_VERIFIER)) == GO_TEXT


def test_c2sp_example_verifies() -> None:
    """The spec's example note verifies with the spec's verifier key."""
    verifier = Verifier.parse(SPEC_VERIFIER)
    assert verifier.key_id == key_id("example.com/foo", verifier.public_key) == 0x530D903A
    assert open_note(SPEC_NOTE, verifier) == "This is an example message.\n"


def test_signer_repr_hides_the_key() -> None:
    """A signer printed or logged shows its name and ID, never the seed."""
    signer = Signer.parse(GO_SIGNER)
    assert "AYEK" not in repr(signer)
    assert repr(signer) == "Signer('PeterNeumann', key_id=c74f20a3)"


@pytest.mark.parametrize(
    "note",
    [
        GO_NOTE.replace("problem,", "problem;"),  # text edited
        GO_NOTE.replace("x08go", "x08gp"),  # signature edited
        GO_NOTE.replace("\n\n", "\n"),  # no blank line
        GO_NOTE[:-1],  # no final newline
        GO_NOTE.replace("\u2014 ", "- "),  # not an em dash
        GO_NOTE.replace("\n\n", "\r\n\n"),  # a control character
        GO_NOTE + GO_NOTE.split("\n\n")[1],  # the same key twice
        GO_NOTE.replace("AM=\n", "AM\n"),  # base64 without padding
        GO_TEXT + "\n",  # no signature at all
        GO_TEXT + "\n\u2014 PeterNeumann " + base64.b64encode(b"\xc7O \xa3").decode() + "\n",
    ],
)
def test_malformed_or_forged_notes_are_refused(note: str) -> None:
    """Every ambiguity or change fails with NoteError."""
    with pytest.raises(NoteError):
        open_note(note, Verifier.parse(GO_VERIFIER))


def test_a_note_without_the_expected_key_is_refused() -> None:
    """Another key's signature is not ours: the note is not trusted."""
    with pytest.raises(NoteError, match="no signature by"):
        open_note(SPEC_NOTE, Verifier.parse(GO_VERIFIER))


def test_other_signatures_are_left_aside() -> None:
    """A witness's extra line does not stop our key's signature from verifying."""
    witness = Signer.generate("witness.example")
    extra = sign_note(GO_TEXT, witness).split("\n\n")[1]
    assert open_note(GO_NOTE + extra, Verifier.parse(GO_VERIFIER)) == GO_TEXT


def test_bytes_not_utf8_are_refused() -> None:
    """A note is UTF-8."""
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(GO_NOTE.encode() + b"\xff", Verifier.parse(GO_VERIFIER))


@pytest.mark.parametrize(
    "text",
    [
        "name+c74f20a3",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys_are_refused(text: str) -> None:
    """Three parts, a lower-case ID that matches the key, an Ed25519 key, a name without spaces."""
    with pytest.raises(NoteError):
        Verifier.parse(text)


def test_checkpoint_round_trip_and_strict_body() -> None:
    """The body is origin, size, base64 root; only its key opens it; bad bodies are refused."""
    signer = Signer.generate("ledger.example/log")
    checkpoint = Checkpoint("ledger.example/log", 12, bytes(range(32)))
    note = checkpoint.sign(signer)
    assert note.startswith(
        "ledger.example/log\n12\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n\u2014 "
    )
    assert open_checkpoint(note, signer.verifier()) == checkpoint
    with pytest.raises(NoteError):
        open_checkpoint(note, Signer.generate("ledger.example/log").verifier())
    with pytest.raises(NoteError):
        Checkpoint("other", 1, bytes(32)).sign(signer)
    root = base64.b64encode(bytes(32)).decode()
    for body in [f"o\n012\n{root}\n", f"o\n-1\n{root}\n", f"o\n1\n{root[:-4]}\n", "o\n1\n",
                 f"o\n1\n{root}\n\n", f"\n1\n{root}\n", f"o\n1\n{root}"]:  # fmt: skip
        with pytest.raises(NoteError):
            Checkpoint.parse(body)
    assert Checkpoint.parse(f"o\n0\n{root}\nextension\n") == Checkpoint("o", 0, bytes(32))
