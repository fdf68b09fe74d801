"""The proofs' subcommands of the ``ledger`` CLI (DESIGN §9).

``adapters/cli/main.py`` calls ``register(subparsers)``; each subcommand sets
``func(args) -> int`` (the exit code).

- ``keygen --origin NAME --out FILE``: a new Ed25519 signer key in FILE (mode 0600, never
  overwritten); prints the verifier key;
- ``seal [--follow] [--key FILE]``: builds or extends the Merkle tree (progress bar); with
  ``--follow`` it keeps sealing new events and, with ``--key``, signs a checkpoint every
  ``--every`` events or ``--checkpoint-interval`` seconds (``FollowerSigning``, which
  ``project --follow --key`` runs too);
- ``checkpoint --key FILE``: seals, signs the head and stores the signed note (printed);
- ``checkpoints``: the stored checkpoints;
- ``prove inclusion --notification-id N [--size S]`` and ``prove consistency --from --to``:
  JSON proofs, hashes in standard base64.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import threading
import time
from typing import Any

from rich import box
from rich.table import Table

from adapters.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REJECTED,
    FOLLOW_INTERVAL_S_DEFAULT,
    ProgressBar,
    add_command,
    error,
    fail,
    follow,
    output_console,
    seconds,
    stopped_by_signals,
    url_option,
    whole_number,
)
from adapters.storage.bundle import export_log, offline_decoder
from adapters.storage.views import LogWatcher
from ledger.api import Ledger
from ledger.errors import LedgerError
from ledger.logging import get_logger
from ledger.proofs import log as proofs
from ledger.proofs.note import NoteError, Signer, Verifier
from ledger.proofs.statement import StatementCheck, check_statement

log = get_logger()

CHECKPOINT_EVERY_DEFAULT = 10_000
"""Events between two checkpoints signed by ``seal --follow --key``."""
CHECKPOINT_INTERVAL_S_DEFAULT = 60.0
"""Seconds after which ``seal --follow --key`` signs the new events, however few."""
KEY_FILE_BYTES_MAX = 4_096
SEAL_JOBS_DEFAULT = 2
"""Readers of ``ledger seal``: the next page is read and hashed while this one is written."""


class KeyFileError(LedgerError):
    """Raised when a signer key file cannot be read, is shared with others, or is malformed."""


def read_signer(path: str) -> Signer:
    """The signer key in ``path``; refused if others may read it (it must be mode 0600)."""
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(
                    f"{path}: the key file may be read by others (mode {stat.S_IMODE(mode):o});"
                    " run chmod 600"
                )
            text = file.read(KEY_FILE_BYTES_MAX).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read the key file: {exc}") from None
    try:
        return Signer.parse(text)
    except NoteError as exc:
        raise KeyFileError(f"{path}: not a signer key ({exc})") from None


def read_verifier(text: str) -> Verifier:
    """A verifier key given as its text, or as the path of a file that holds it."""
    value = text
    if "+" not in text or os.path.exists(text):
        try:
            with open(text, "rb") as file:
                value = file.read(KEY_FILE_BYTES_MAX).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{text}: cannot read the verifier key: {exc}") from None
    try:
        return Verifier.parse(value)
    except NoteError as exc:
        raise KeyFileError(f"not a verifier key: {exc}") from None


def write_signer(path: str, signer: Signer) -> None:
    """Writes the signer key to a new file of mode 0600 (an existing file is never replaced)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(signer.text() + "\n")


_positive = whole_number("_positive", 1)
_seconds = seconds("_seconds", 86_400)
_jobs = whole_number("_jobs", 1, proofs.SEAL_JOBS_MAX)
_page_size = whole_number("_page_size", 1, proofs.SEAL_PAGE_SIZE_MAX)


def signing_options(parser: argparse.ArgumentParser) -> None:
    """Adds ``--key``, ``--every`` and ``--checkpoint-interval``: a follower that signs
    checkpoints (``seal --follow`` and ``project --follow``, described once, here)."""
    parser.add_argument("--key", metavar="FILE", help="sign checkpoints with this key (--follow)")
    parser.add_argument(
        "--every",
        type=_positive,
        default=CHECKPOINT_EVERY_DEFAULT,
        help="sign a checkpoint after this many new events",
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=_seconds,
        default=CHECKPOINT_INTERVAL_S_DEFAULT,
        help="sign new events after this many seconds, however few",
    )


def key_without_follow(command: str, args: argparse.Namespace) -> int | None:
    """The refusal of ``--key`` without ``--follow`` (its exit code), or None when fine."""
    if args.key and not args.follow:
        return error(command, "--key signs while following: use it with --follow")
    return None


class FollowerSigning:
    """A follower's sealing and signing: seals what arrived, and signs a checkpoint once
    ``--every`` events or ``--checkpoint-interval`` seconds have passed since the last one
    (when something new was sealed). The key stays in this process: never a row or a log line.
    """

    def __init__(
        self,
        lg: Ledger,
        args: argparse.Namespace,
        signer: Signer | None,
        *,
        page_size: int = proofs.SEAL_PAGE_SIZE_DEFAULT,
        jobs: int = 1,
    ) -> None:
        self.lg = lg
        self.signer = signer
        self.every = args.every
        self.interval_s = args.checkpoint_interval
        self.page_size = page_size
        self.jobs = jobs
        self.store = lg.tree_store()
        latest = self.store.checkpoint(latest=True)
        self.signed_size = latest.size if latest is not None else 0
        self.signed_at = time.monotonic()

    def __call__(self, stop: threading.Event) -> None:
        """Seals the new events, then signs the head if a checkpoint is due."""
        state = self.lg.seal(page_size=self.page_size, stop=stop.is_set, jobs=self.jobs)
        due = state.size - self.signed_size >= self.every or (
            state.size > self.signed_size and time.monotonic() - self.signed_at >= self.interval_s
        )
        if self.signer is not None and due:
            stored = proofs.sign_checkpoint(self.store, self.signer)
            self.signed_size, self.signed_at = stored.size, time.monotonic()
            log.info("checkpoint_signed", tree_size=stored.size, origin=self.signer.name)


def register(subparsers: Any) -> None:
    """Adds ``keygen``, ``seal``, ``checkpoint``, ``checkpoints``, ``prove``, ``statement``,
    ``check-statement`` and ``export-log``."""
    keygen = add_command(
        subparsers,
        "keygen",
        "make an Ed25519 key that signs checkpoints, and print its verifier key",
        "Writes the signer key (C2SP signed-note form, as Go's sumdb/note) to a new file of mode\n"
        "0600 and prints the verifier key <origin>+<key id>+<public key> for auditors. The\n"
        "origin names the log in every checkpoint. The key never enters the database or a log.",
        ["ledger keygen --origin ledger.example.com/prod --out ledger.key"],
    )
    keygen.add_argument("--origin", required=True, help="the log's name (the key's name)")
    keygen.add_argument("--out", required=True, metavar="FILE", help="the new key file")
    keygen.set_defaults(func=run_keygen)

    seal = add_command(
        subparsers,
        "seal",
        "build or extend the Merkle tree over the log",
        "Hashes every event recorded since the tree's last leaf into tiles stored beside the\n"
        "events, a page per transaction (resumable; a progress bar on stderr). With --follow it\n"
        "keeps sealing new events until SIGINT or SIGTERM, and with --key it signs a checkpoint\n"
        "every --every events or --checkpoint-interval seconds (when something was sealed).",
        [
            "ledger seal",
            "ledger seal --follow --key ledger.key --every 10000 --checkpoint-interval 60",
        ],
    )
    url_option(seal)
    seal.add_argument("--follow", action="store_true", help="keep sealing new events")
    signing_options(seal)
    seal.add_argument(
        "--interval",
        type=_seconds,
        default=FOLLOW_INTERVAL_S_DEFAULT,
        help="seconds between seals when following: at most one an interval, and a poll at"
        " least every interval (PostgreSQL also wakes on NOTIFY)",
    )
    seal.add_argument(
        "--page-size",
        type=_page_size,
        default=proofs.SEAL_PAGE_SIZE_DEFAULT,
        help="events hashed per transaction",
    )
    seal.add_argument(
        "--jobs",
        type=_jobs,
        default=SEAL_JOBS_DEFAULT,
        help="PostgreSQL: threads that read and hash pages ahead (each with its own"
        " connection); SQLite hashes in Python and reads with one",
    )
    seal.set_defaults(func=run_seal)

    checkpoint = add_command(
        subparsers,
        "checkpoint",
        "seal the log and sign its head as a checkpoint",
        "Seals the tree up to the newest event, signs <origin>\\n<size>\\n<root> as a C2SP\n"
        "signed note with the key, stores it and prints it.",
        ["ledger checkpoint --key ledger.key"],
    )
    url_option(checkpoint)
    checkpoint.add_argument("--key", required=True, metavar="FILE", help="the signer key file")
    checkpoint.set_defaults(func=run_checkpoint)

    listing = add_command(
        subparsers,
        "checkpoints",
        "list the stored signed checkpoints",
        "Size, root (base64) and signing time of each stored checkpoint; --json prints the\n"
        "signed notes too.",
        ["ledger checkpoints", "ledger checkpoints --json"],
    )
    url_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    listing.set_defaults(func=run_checkpoints)

    prove = add_command(
        subparsers,
        "prove",
        "print an inclusion or consistency proof as JSON",
        "inclusion: the event's leaf input and audit path against a signed checkpoint (the\n"
        "latest, or the smallest stored one of at least --size leaves). consistency: the\n"
        "proof that the checkpoint of --from leaves is a prefix of the one of --to leaves.\n"
        "Both verify with RFC 9162 §2.1.3.2 / §2.1.4.2 and the verifier key alone.",
        [
            "ledger prove inclusion --notification-id 1234",
            "ledger prove consistency --from 1000 --to 5000",
        ],
    )
    kinds = prove.add_subparsers(
        dest="kind", required=True, metavar="KIND", help="inclusion or consistency"
    )
    inclusion = kinds.add_parser("inclusion", help="an event's inclusion proof")
    url_option(inclusion)
    inclusion.add_argument(
        "--notification-id", type=int, required=True, metavar="N", help="the event"
    )
    inclusion.add_argument("--size", type=_positive, metavar="S", help="the checkpoint's size")
    inclusion.set_defaults(func=run_prove)
    consistency = kinds.add_parser("consistency", help="a consistency proof")
    url_option(consistency)
    consistency.add_argument(
        "--from", dest="size1", type=_positive, required=True, metavar="S1", help="first size"
    )
    consistency.add_argument(
        "--to", dest="size2", type=_positive, required=True, metavar="S2", help="second size"
    )
    consistency.set_defaults(func=run_prove)
    _register_statements(subparsers)


def _register_statements(subparsers: Any) -> None:
    """``statement``, ``check-statement`` and ``export-log``."""
    statement = add_command(
        subparsers,
        "statement",
        "write a holder's statement with its proofs, and print it as a table",
        "The holder's movements of one unit over a period of Mexico City dates (inclusive),\n"
        "with the opening and closing balances, and for every event of the holder's stream in\n"
        "the period (and the one before and after it) its leaf input and inclusion proof\n"
        "against the latest signed checkpoint. The holder checks it with check-statement and\n"
        "the verifier key alone (docs/PROOFS.md).",
        [
            "ledger statement D1 --unit stamps --from 2026-11-01 --to 2026-11-30",
            "ledger statement C1-cti --from 2026-11-01 --to 2026-11-30 --out nov.json",
        ],
    )
    url_option(statement)
    statement.add_argument("holder", metavar="HOLDER", help="the account id")
    statement.add_argument(
        "--unit", choices=("stamps", "points"), default="stamps", help="which book"
    )
    statement.add_argument("--from", dest="start", required=True, metavar="DATE", help="first day")
    statement.add_argument("--to", dest="end", required=True, metavar="DATE", help="last day")
    statement.add_argument(
        "--out",
        metavar="FILE",
        help="where the JSON goes (default statement-HOLDER-FROM-TO.json; - for stdout, no table)",
    )
    statement.set_defaults(func=run_statement)

    check = add_command(
        subparsers,
        "check-statement",
        "check a statement with the verifier key alone (no database)",
        "Checks the checkpoint's signature, every inclusion proof, that the stream's versions\n"
        "run without a gap over the period, that each movement is what its event says and that\n"
        "the balances add up. With --previous (the statement before it) the opening balance is\n"
        "proven too. Exit 0 when it holds, 1 otherwise.",
        ["ledger check-statement nov.json --verifier-key ledger.example.com/prod+1a2b3c4d+AX..."],
    )
    check.add_argument("file", metavar="FILE", help="the statement's JSON")
    check.add_argument(
        "--verifier-key", required=True, metavar="VKEY", help="the key text, or a file holding it"
    )
    check.add_argument("--previous", metavar="FILE", help="the previous statement's JSON")
    check.set_defaults(func=run_check_statement)

    export = add_command(
        subparsers,
        "export-log",
        "export the events, chain links and checkpoints for an offline audit",
        "Writes every stored event (all its columns, notification ids included), the hash\n"
        "chain and the signed checkpoints to DIR in the portable format of docs/PROOFS.md.\n"
        "Incremental: run again to add what was recorded since. Check it anywhere with\n"
        "`ledger verify --bundle DIR --verifier-key VKEY`.",
        ["ledger export-log audit-2026/", "ledger verify --bundle audit-2026/ --verifier-key k"],
    )
    url_option(export)
    export.add_argument("directory", metavar="DIR", help="the bundle directory")
    export.set_defaults(func=run_export_log)


def tree_line(tree: dict[str, Any]) -> str:
    """``ledger status``'s line on the Merkle tree (``Ledger.status()["tree"]``)."""
    checkpoint = tree["checkpoint"]
    signed = (
        "no signed checkpoint yet"
        if checkpoint is None
        else f"latest checkpoint {checkpoint['size']:,} leaves, signed {checkpoint['signed_at']}"
    )
    return f"merkle tree: {tree['size']:,} leaves sealed; {signed}"


def run_keygen(args: argparse.Namespace) -> int:
    """``ledger keygen``."""
    try:
        signer = Signer.generate(args.origin)
    except NoteError as exc:
        return error("keygen", f"--origin: {exc}")
    try:
        write_signer(args.out, signer)
    except FileExistsError:
        return error("keygen", f"{args.out} exists: a key is never overwritten")
    except OSError as exc:
        return error("keygen", f"cannot write {args.out}: {exc}", EXIT_ERROR)
    sys.stdout.write(signer.verifier().text() + "\n")
    return EXIT_OK


def _open(args: argparse.Namespace) -> Ledger:
    return Ledger.open(getattr(args, "url", None), projections="off")


def run_checkpoint(args: argparse.Namespace) -> int:
    """``ledger checkpoint --key FILE``."""
    try:
        signer = read_signer(args.key)
        with _open(args) as lg:
            note = lg.checkpoint(signer)
    except LedgerError as exc:
        return fail("checkpoint", exc)
    sys.stdout.write(note or "")
    return EXIT_OK


def run_checkpoints(args: argparse.Namespace) -> int:
    """``ledger checkpoints``."""
    try:
        with _open(args) as lg:
            stored = lg.checkpoints()
    except LedgerError as exc:
        return fail("checkpoints", exc)
    if args.json:
        for item in stored:
            sys.stdout.write(
                json.dumps(
                    {
                        "tree_size": item.size,
                        "root": proofs.b64(item.root),
                        "signed_at": item.signed_at,
                        "note": item.note,
                    }
                )
                + "\n"
            )
        return EXIT_OK
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("tree size", "root", "signed at"):
        table.add_column(name, justify="right" if name == "tree size" else "left", no_wrap=True)
    for item in stored:
        table.add_row(f"{item.size:,}", proofs.b64(item.root), item.signed_at)
    output_console(sys.stdout).print(table)
    return EXIT_OK


def run_prove(args: argparse.Namespace) -> int:
    """``ledger prove inclusion|consistency``."""
    try:
        with _open(args) as lg:
            if args.kind == "inclusion":
                proof = lg.prove_inclusion(args.notification_id, args.size)
            else:
                proof = lg.prove_consistency(args.size1, args.size2)
    except LedgerError as exc:
        return fail("prove", exc)
    sys.stdout.write(json.dumps(proof, indent=2) + "\n")
    return EXIT_OK


def run_statement(args: argparse.Namespace) -> int:
    """``ledger statement HOLDER``."""
    try:
        with _open(args) as lg:
            document = lg.statement(args.holder, args.unit, args.start, args.end)
    except LedgerError as exc:
        return fail("statement", exc)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = args.out or f"statement-{args.holder}-{document['from']}-{document['to']}.json"
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        return error("statement", f"cannot write {path}: {exc}", EXIT_ERROR)
    print_statement(document, path)
    return EXIT_OK


def print_statement(document: dict[str, Any], path: str) -> None:
    """The statement as a table for a person."""
    console = output_console(sys.stdout)
    console.print(
        f"statement of {document['holder_id']} ({document['unit']}),"
        f" {document['from']} to {document['to']}",
        highlight=False,
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name, justify in (("time", "left"), ("amount", "right"), ("balance", "right"),
                          ("ref", "left"), ("counterpart", "left"), ("actor", "left")):  # fmt: skip
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    table.add_row("", "", f"{document['opening_balance']:,}", "opening balance", "", "")
    for m in document["movements"]:
        table.add_row(
            m["at"], f"{m['delta']:+,}", f"{m['balance']:,}", m["ref"], m["counterpart"],
            m["actor"] or "-",
        )  # fmt: skip
    table.add_row("", "", f"{document['closing_balance']:,}", "closing balance", "", "")
    console.print(table)
    console.print(
        f"{len(document['movements']):,} movements, {len(document['events']):,} events proven"
        f" against the checkpoint of {document['tree_size']:,} leaves; written to {path}",
        highlight=False,
    )
    if document["events_after_checkpoint"]:
        console.print(
            "note: events of the period recorded after the latest checkpoint are not shown"
            " (run `ledger checkpoint`)",
            highlight=False,
        )


def run_check_statement(args: argparse.Namespace) -> int:
    """``ledger check-statement FILE --verifier-key VKEY``: no database."""
    try:
        verifier = read_verifier(args.verifier_key)
        document = _read_json(args.file)
        previous = _read_json(args.previous) if args.previous else None
        result: StatementCheck = check_statement(
            document, verifier, offline_decoder(), previous=previous
        )
    except LedgerError as exc:
        return fail("check-statement", exc)
    if not result.ok:
        for problem in result.problems:
            sys.stdout.write(f"FAILED: {problem}\n")
        return EXIT_REJECTED
    opening = "proven" if result.opening_proven else "not proven"
    sys.stdout.write(
        f"statement OK: {document['holder_id']} {document['unit']} {document['from']} to"
        f" {document['to']}: {result.movements:,} movements, opening"
        f" {document['opening_balance']:,} ({opening}: {result.opening_basis}), closing"
        f" {document['closing_balance']:,}, against the checkpoint of {result.tree_size:,}"
        f" leaves signed by {verifier.name}\n"
    )
    return EXIT_OK


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except (OSError, ValueError) as exc:
        raise LedgerError(f"{path}: cannot read the JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LedgerError(f"{path}: not a JSON object")
    return value


def run_export_log(args: argparse.Namespace) -> int:
    """``ledger export-log DIR``."""
    try:
        with _open(args) as lg, ProgressBar("export-log") as bar:
            manifest = export_log(lg.tree_store().store, args.directory, progress=bar)
    except LedgerError as exc:
        return fail("export-log", exc)
    except OSError as exc:
        return error("export-log", f"cannot write {args.directory}: {exc}", EXIT_ERROR)
    sys.stdout.write(
        f"exported {manifest['events']:,} events (up to notification"
        f" {manifest['last_notification_id']:,}) to {args.directory}\n"
    )
    return EXIT_OK


def run_seal(args: argparse.Namespace) -> int:
    """``ledger seal [--follow] [--key FILE]``."""
    refused = key_without_follow("seal", args)
    if refused is not None:
        return refused
    try:
        signer = read_signer(args.key) if args.key else None
        with _open(args) as lg:
            if args.follow:
                _follow(lg, args, signer)
            else:
                with ProgressBar("seal") as bar:
                    state = lg.seal(page_size=args.page_size, progress=bar, jobs=args.jobs)
                sys.stdout.write(f"tree sealed at {state.size:,} leaves\n")
    except LedgerError as exc:
        return fail("seal", exc)
    return EXIT_OK


def _follow(lg: Ledger, args: argparse.Namespace, signer: Signer | None) -> None:
    """Seals new events as they arrive; signs checkpoints as asked; until SIGINT or SIGTERM."""
    stop = threading.Event()
    watcher = LogWatcher(getattr(args, "url", None), interval_s=min(args.interval, 60.0))
    signing = FollowerSigning(lg, args, signer, page_size=args.page_size, jobs=args.jobs)

    def seal() -> None:
        started = time.monotonic()
        signing(stop)
        # At most one seal an interval: under a stream of commits (a NOTIFY each) the
        # follower takes an interval's events at a time, not one small page each.
        stop.wait(max(0.0, args.interval - (time.monotonic() - started)))

    with stopped_by_signals(stop):
        sys.stderr.write("seal: following new events\n")
        sys.stderr.flush()
        follow(
            watcher,
            stop,
            seal,
            interval_s=args.interval,
            failed="seal: failed",
            detail=str,
            first=True,
        )
