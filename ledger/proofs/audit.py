"""``verify``'s check of the Merkle tree (DESIGN §9): history rewritten below a checkpoint.

Fed every stored row in notification order, it recomputes each leaf hash from the stored
columns and keeps the tree's compact range (O(log n) hashes), so it knows the log's root at
every checkpoint's size. At the end:

- each checkpoint's signature verifies with the verifier key, when one is given
  (``checkpoint_signature``); without a key the note's body is read unverified and a note says so;
- its root is the root of the log's first ``size`` events (``merkle_root``): an event edited,
  deleted or inserted below a signed checkpoint changes that root, even when the attacker
  recomputed the hash chain, and a log shorter than a checkpoint lost events;
- each checkpoint is consistent with the next (RFC 9162 §2.1.4.2) by the proof the store or
  the bundle gives (``checkpoint_consistency``);
- the stored tiles give the log's root at the sealed size (``merkle_tiles``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventsourcing.persistence import Notification

from ledger.audit.verify import (
    CHECKPOINT_CONSISTENCY,
    CHECKPOINT_SIGNATURE,
    MERKLE_ROOT,
    MERKLE_TILES,
    Breach,
    VerifyReport,
)
from ledger.errors import LedgerError
from ledger.proofs.checkpoint import Checkpoint, open_checkpoint
from ledger.proofs.note import NoteError, Verifier, parse_note
from ledger.proofs.tree import CompactRange, leaf_hash, leaf_input
from ledger.proofs.verify import ProofError, verify_consistency

ConsistencyProof = Callable[[int, int], Sequence[bytes]]
"""Gives the consistency proof between two tree sizes."""


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A checkpoint to check: its size and its signed note."""

    size: int
    note: str


class MerkleCheck:
    """A ``RowCheck`` of ``verify``: the log against its signed checkpoints and stored tree."""

    def __init__(
        self,
        checkpoints: Sequence[SignedHead],
        *,
        verifier: Verifier | None = None,
        consistency: ConsistencyProof | None = None,
        sealed: tuple[int, Callable[[], bytes]] | None = None,
    ) -> None:
        self.checkpoints = sorted(checkpoints, key=lambda item: item.size)
        self.verifier = verifier
        self.consistency = consistency
        self.sealed = sealed
        self.compact = CompactRange()
        self.roots: dict[int, bytes] = {}
        self._targets = {item.size for item in self.checkpoints}
        if sealed is not None:
            self._targets.add(sealed[0])
        if 0 in self._targets:
            self.roots[0] = self.compact.root()

    def feed(self, rows: Sequence[Notification]) -> None:
        """Hashes each row's leaf input into the compact range; keeps the roots it will need."""
        compact = self.compact
        targets = self._targets
        for row in rows:
            compact.append(
                leaf_hash(
                    leaf_input(
                        row.id,
                        str(row.originator_id),
                        row.originator_version,
                        row.topic,
                        bytes(row.state),
                    )
                )
            )
            if compact.size in targets:
                self.roots[compact.size] = compact.root()

    def _head(self, item: SignedHead, report: VerifyReport) -> Checkpoint | None:
        try:
            if self.verifier is not None:
                return open_checkpoint(item.note, self.verifier)
            text, _ = parse_note(item.note)
            return Checkpoint.parse(text)
        except NoteError as exc:
            report.add(Breach(CHECKPOINT_SIGNATURE, f"checkpoint of size {item.size:,}: {exc}"))
            return None

    def finish(self, report: VerifyReport) -> None:
        """Adds the breaches found and a note of what was checked."""
        size = self.compact.size
        previous: Checkpoint | None = None
        for item in self.checkpoints:
            head = self._head(item, report)
            if head is None:
                continue
            if head.size != item.size:
                report.add(
                    Breach(
                        CHECKPOINT_SIGNATURE, f"a note of size {head.size} stored as {item.size}"
                    )
                )
                continue
            root = self.roots.get(head.size)
            if root is None:
                report.add(
                    Breach(
                        MERKLE_ROOT,
                        f"the signed checkpoint of size {head.size:,} is beyond the log's"
                        f" {size:,} events: events were deleted",
                    )
                )
            elif root != head.root:
                report.add(
                    Breach(
                        MERKLE_ROOT,
                        f"the first {head.size:,} events do not have the root of their signed"
                        " checkpoint: history was rewritten below it",
                        position=None,
                    )
                )
            if previous is not None and self.consistency is not None:
                try:
                    proof = self.consistency(previous.size, head.size)
                    verify_consistency(previous.size, head.size, proof, previous.root, head.root)
                except (ProofError, LookupError, ValueError, LedgerError) as exc:
                    report.add(
                        Breach(
                            CHECKPOINT_CONSISTENCY,
                            f"checkpoint {previous.size:,} -> {head.size:,}: {exc}",
                        )
                    )
            previous = head
        if self.sealed is not None:
            sealed_size, sealed_root = self.sealed
            try:
                stored = sealed_root()
            except (LookupError, ValueError, LedgerError) as exc:
                stored = None
                report.add(Breach(MERKLE_TILES, f"the stored tiles cannot give a root: {exc}"))
            replayed = self.roots.get(sealed_size)
            if stored is not None and stored != replayed:
                report.add(
                    Breach(
                        MERKLE_TILES,
                        f"the stored tree of {sealed_size:,} leaves does not match the events",
                    )
                )
        signatures = (
            f"signatures verified with {self.verifier.name}+{self.verifier.key_id:08x}"
            if self.verifier is not None
            else "signatures NOT verified (no verifier key given)"
        )
        report.notes.append(
            f"merkle: {len(self.checkpoints):,} checkpoints against the log's {size:,} events,"
            f" {signatures}"
        )
