"""Offline audit bundles: the log exported to files, and read back with no database (DESIGN §9).

Format ``cfdi-ledger-log/1`` (docs/PROOFS.md), a directory of:

- ``manifest.json``: the format, the number of events, the last notification id, the chain head
  covered, and the segments in order, each with its files' SHA-256;
- ``events-<first id>-<last id>.jsonl``: one stored event per line, every stored column:
  ``{"notification_id", "originator_id", "originator_version", "topic", "state"}`` (``state``
  in standard base64, exactly the stored bytes);
- ``links-<first id>-<last id>.jsonl``: the hash-chain links of those events,
  ``{"first_id", "last_id", "hash"}`` (base64);
- ``checkpoints.jsonl``: the signed checkpoints the bundle's events cover, smallest first,
  ``{"tree_size", "note", "consistency"}``, where ``consistency`` is the RFC 9162 proof from the
  previous line's checkpoint (base64 hashes; empty on the first line).

An export is incremental: it appends segments after the manifest's last notification id, cut on
the chain's transaction boundaries, rewrites the checkpoints, and replaces the manifest last, so
an interrupted export leaves the previous bundle whole. ``BundleSource`` is the audit port over a
bundle, for ``ledger verify --bundle``.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import MapperDeserialisationError, Notification
from eventsourcing.utils import Environment

from adapters.storage.codec import MsgspecMapper
from adapters.storage.config import _checked_cipher_key
from adapters.storage.merkle import MerkleStore
from adapters.storage.store import EventStore
from ledger import audit
from ledger.audit.source import Link, undecodable
from ledger.domain import Event
from ledger.errors import LedgerError
from ledger.proofs import log as proofs
from ledger.proofs.audit import MerkleCheck, SignedHead
from ledger.proofs.note import Verifier

FORMAT = "cfdi-ledger-log/1"
SEGMENT_EVENTS_MAX = 50_000
"""Events per segment file (a segment ends on a transaction boundary after this many)."""
PAGE_SIZE = 5_000


class BundleError(LedgerError):
    """Raised when a bundle directory is missing, malformed or altered in transit."""


def offline_decoder() -> Callable[[Notification], Event]:
    """Decodes stored rows without a database (``$LEDGER_CIPHER_KEY`` for encrypted states)."""
    key = os.environ.get("LEDGER_CIPHER_KEY")
    cipher = AESCipher(Environment(env={"CIPHER_KEY": _checked_cipher_key(key)})) if key else None
    # An undecodable row raises eventsourcing's MapperDeserialisationError, as the audit port
    # says: verify reports it as a breach of that event.
    return cast(Callable[[Notification], Event], MsgspecMapper(cipher=cipher).to_domain_event)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The bundle's manifest (a new one for an empty or missing directory)."""
    path = directory / "manifest.json"
    if not path.exists():
        return {
            "format": FORMAT,
            "events": 0,
            "last_notification_id": 0,
            "chain_head": 0,
            "segments": [],
            "checkpoints": "checkpoints.jsonl",
            "checkpoints_sha256": None,
        }
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read the manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a bundle of format {FORMAT}")
    return manifest


def export_log(  # noqa: PLR0915  (one ordered pass over events and links)
    store: EventStore, directory: str | Path, progress: proofs.Progress | None = None
) -> dict[str, Any]:
    """Appends the events recorded since the last export (and rewrites the checkpoints)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(root)
    source = store.audit_source()
    head = source.chain_head()
    after = int(manifest["last_notification_id"])
    total = source.max_position()
    link_after = after
    pending_links: list[Link] = []
    segment: dict[str, Any] | None = None
    events_file: Any = None
    links_file: Any = None
    count = int(manifest["events"])

    def close_segment() -> None:
        nonlocal segment, events_file, links_file
        if segment is None:
            return
        events_file.close()
        links_file.close()
        first, last = segment["first_id"], segment["last_id"]
        events_name = f"events-{first:012d}-{last:012d}.jsonl"
        links_name = f"links-{first:012d}-{last:012d}.jsonl"
        os.replace(root / "events.partial", root / events_name)
        os.replace(root / "links.partial", root / links_name)
        segment.update(
            events=events_name,
            links=links_name,
            events_sha256=_sha256(root / events_name),
            links_sha256=_sha256(root / links_name),
        )
        manifest["segments"].append(segment)
        segment = None

    try:
        while after < head:
            rows = [r for r in source.notifications(after, PAGE_SIZE) if r.id <= head]
            if not rows:
                break
            for row in rows:
                if segment is None:
                    segment = {"first_id": row.id, "last_id": row.id, "count": 0}
                    events_file = (root / "events.partial").open("w", encoding="utf-8")
                    links_file = (root / "links.partial").open("w", encoding="utf-8")
                record = {
                    "notification_id": row.id,
                    "originator_id": str(row.originator_id),
                    "originator_version": row.originator_version,
                    "topic": row.topic,
                    "state": base64.b64encode(bytes(row.state)).decode(),
                }
                events_file.write(json.dumps(record, separators=(",", ":")) + "\n")
                segment["last_id"] = row.id
                segment["count"] += 1
                count += 1
                while not pending_links or pending_links[-1].last_id < row.id:
                    fetched = source.links(link_after, PAGE_SIZE)
                    if not fetched:
                        break
                    pending_links.extend(fetched)
                    link_after = fetched[-1].last_id
                boundary = False
                while pending_links and pending_links[0].last_id <= row.id:
                    item = pending_links.pop(0)
                    links_file.write(
                        json.dumps(
                            {
                                "first_id": item.first_id,
                                "last_id": item.last_id,
                                "hash": base64.b64encode(item.hash).decode(),
                            }
                        )
                        + "\n"
                    )
                    boundary = item.last_id == row.id
                if boundary and segment["count"] >= SEGMENT_EVENTS_MAX:
                    close_segment()
            after = rows[-1].id
            if progress is not None:
                progress(after, max(total, after))
        close_segment()
    finally:
        for file in (events_file, links_file):
            if file is not None and not file.closed:
                file.close()
    manifest["events"] = count
    manifest["last_notification_id"] = after
    manifest["chain_head"] = head
    _write_checkpoints(store, root, manifest, count)
    _write_atomic(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_checkpoints(
    store: EventStore, root: Path, manifest: dict[str, Any], events: int
) -> None:
    tree_store = MerkleStore(store)
    tree = proofs.Tree(tree_store)
    lines: list[str] = []
    previous: int | None = None
    for item in proofs.all_checkpoints(tree_store):
        if item.size > events:
            break
        proof = [] if previous is None else tree.consistency_proof(previous, item.size)
        lines.append(
            json.dumps(
                {
                    "tree_size": item.size,
                    "note": item.note,
                    "consistency": [proofs.b64(p) for p in proof],
                }
            )
        )
        previous = item.size
    path = root / "checkpoints.jsonl"
    _write_atomic(path, "".join(line + "\n" for line in lines))
    manifest["checkpoints"] = path.name
    manifest["checkpoints_sha256"] = _sha256(path)


def verify_bundle(
    directory: str | Path,
    verifier: Verifier,
    progress: audit.Progress | None = None,
) -> audit.VerifyReport:
    """``verify`` over a bundle, with no database: every check of the live ``verify`` but the
    views', plus each checkpoint's signature, root and consistency with the next."""
    source = BundleSource(directory, offline_decoder())
    return audit.verify(source, progress=progress, row_checks=[source.merkle_check(verifier)])


class BundleSource:
    """An ``AuditSource`` over a bundle directory (``ledger verify --bundle``)."""

    chained = True

    def __init__(self, directory: str | Path, decode: Callable[[Notification], Event]) -> None:
        self.root = Path(directory)
        if not (self.root / "manifest.json").exists():
            raise BundleError(f"{self.root}: no manifest.json (not a bundle)")
        self.manifest = read_manifest(self.root)
        self.decode = decode
        self.segments: list[dict[str, Any]] = self.manifest["segments"]
        self._lasts = [int(s["last_id"]) for s in self.segments]
        self._cache: dict[str, list[Any]] = {}

    def _load(self, segment: dict[str, Any], kind: str) -> list[Any]:
        name = segment[kind]
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = self.root / name
        if not path.exists() or _sha256(path) != segment[f"{kind}_sha256"]:
            raise BundleError(f"{path}: missing, or not the file the manifest lists")
        rows: list[Any] = []
        with path.open(encoding="utf-8") as file:
            for line in file:
                item = json.loads(line)
                if kind == "events":
                    rows.append(
                        Notification(
                            id=int(item["notification_id"]),
                            originator_id=item["originator_id"],
                            originator_version=int(item["originator_version"]),
                            topic=item["topic"],
                            state=base64.b64decode(item["state"], validate=True),
                        )
                    )
                else:
                    rows.append(
                        Link(
                            int(item["first_id"]),
                            int(item["last_id"]),
                            base64.b64decode(item["hash"], validate=True),
                        )
                    )
        self._cache = {name: rows}  # one file held at a time
        return rows

    def _after(self, after: int, limit: int, kind: str, key: Callable[[Any], int]) -> list[Any]:
        found: list[Any] = []
        index = bisect.bisect_right(self._lasts, after)
        while index < len(self.segments) and len(found) < limit:
            rows = self._load(self.segments[index], kind)
            start = bisect.bisect_right([key(r) for r in rows], after) if not found else 0
            found.extend(rows[start : start + limit - len(found)])
            index += 1
        return found

    def notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Rows after ``after``, in id order."""
        return cast(Sequence[Notification], self._after(after, limit, "events", lambda r: r.id))

    def links(self, after: int, limit: int) -> Sequence[Link]:
        """Links after ``after``."""
        return cast(Sequence[Link], self._after(after, limit, "links", lambda r: r.last_id))

    def max_position(self) -> int:
        """The last exported notification id."""
        return int(self.manifest["last_notification_id"])

    def chain_head(self) -> int:
        """The chain head the export covered."""
        return int(self.manifest["chain_head"])

    def stream(self, originator_id: str, after: int, limit: int) -> Sequence[Event]:
        """One page of a stream, decoded (a scan of the bundle)."""
        found: list[Event] = []
        for segment in self.segments:
            for row in self._load(segment, "events"):
                if row.originator_id == originator_id and row.originator_version > after:
                    try:
                        found.append(self.decode(row))
                    except MapperDeserialisationError as exc:
                        raise undecodable(originator_id, exc) from None
                    if len(found) >= limit:
                        return found
        return found

    def checkpoints(self) -> Iterator[tuple[SignedHead, list[bytes]]]:
        """The bundle's checkpoints with the consistency proof from the one before."""
        name = self.manifest.get("checkpoints")
        if not name:
            return
        path = self.root / name
        if not path.exists() or _sha256(path) != self.manifest.get("checkpoints_sha256"):
            raise BundleError(f"{path}: missing, or not the file the manifest lists")
        with path.open(encoding="utf-8") as file:
            for line in file:
                item = json.loads(line)
                yield (
                    SignedHead(int(item["tree_size"]), str(item["note"])),
                    [base64.b64decode(p, validate=True) for p in item["consistency"]],
                )

    def merkle_check(self, verifier: Verifier | None) -> MerkleCheck:
        """``verify``'s Merkle check of this bundle: its checkpoints and consistency proofs."""
        heads: list[SignedHead] = []
        proofs_by_sizes: dict[tuple[int, int], list[bytes]] = {}
        previous: int | None = None
        for head, proof in self.checkpoints():
            if previous is not None:
                proofs_by_sizes[(previous, head.size)] = proof
            heads.append(head)
            previous = head.size

        def consistency(size1: int, size2: int) -> Sequence[bytes]:
            try:
                return proofs_by_sizes[(size1, size2)]
            except KeyError:
                raise LookupError(f"no consistency proof from {size1} to {size2}") from None

        return MerkleCheck(heads, verifier=verifier, consistency=consistency)
