"""``verify``: replay every stored event in notification order and check DESIGN §3 from the events.

One streaming pass, page by page, over the stored rows. Each row feeds two checkers:

- the hash chain (§3.7): the rows of each link are hashed as stored and the link recomputed from
  its predecessor; a row outside every link, a link that does not match its rows, or links out of
  order are breaches. This is what catches a row edited, deleted or inserted with SQL.
- the replay: the row is decoded and checked for gap-free versions, its postings move per-holder
  balances (no balance below zero outside the issuance source, §3.2; per-unit zero sum, §3.1) and
  are paired by movement (every transfer's two sides present and equal); its idempotency keys,
  sales and holds go to a disk spill (§3.3, a sale invoiced at most once, a hold closed at most
  once and only after it was opened; a CTI's held book is a holder, so it never goes negative).

Memory holds one page, one transaction's unpaired legs, one balance per holder and one version per
stream, never per-event data: the sets over all keys and movements live in ``Spill`` on disk.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from eventsourcing.persistence import MapperDeserialisationError, Notification

from ledger.aggregates.common import SaleEvent
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.stamping_account import StampingAccount
from ledger.audit.source import AuditSource, Link
from ledger.audit.spill import Spill
from ledger.chain import GENESIS, link, row_digest_parts
from ledger.domain import ISSUANCE, Created, Event, Posting
from ledger.errors import IntegrityBreach
from ledger.json_fields import json_fields

PAGE_SIZE = 5_000
"""Stored rows read per query."""
LINK_PAGE_SIZE = 5_000
"""Chain links read per query."""
BREACHES_KEPT_MAX = 1_000
"""Breaches kept with their details; beyond this only the counts grow."""
PENDING_GROUPS_MAX = 100_000
"""Unpaired movement legs kept in memory before they are spilled to disk."""

# The stable names of the checks (a breach's ``check``).
DECODE = "decode"
VERSION_GAP = "version_gap"
NEGATIVE_BALANCE = "negative_balance"
ZERO_SUM = "zero_sum"
TRANSFER_SIDES = "transfer_sides"
KEY_REUSED = "key_reused"
INVOICED_TWICE = "invoiced_twice"
INVOICED_UNKNOWN_SALE = "invoiced_unknown_sale"
HOLD_CLOSED_TWICE = "hold_closed_twice"
HOLD_NOT_OPENED = "hold_not_opened"
CHAIN_MISMATCH = "chain_mismatch"
CHAIN_UNCOVERED = "chain_uncovered"
CHAIN_ORDER = "chain_order"
ANCHOR = "anchor"
VIEWS = "views"
CREDENTIALS_LOCK = "credentials_lock"
MERKLE_ROOT = "merkle_root"
"""The log's Merkle root at a signed checkpoint's size is not the signed root (DESIGN §9)."""
CHECKPOINT_SIGNATURE = "checkpoint_signature"
CHECKPOINT_CONSISTENCY = "checkpoint_consistency"
MERKLE_TILES = "merkle_tiles"
"""The stored tiles do not give the root of the stored events."""
CHECKS = (
    DECODE,
    VERSION_GAP,
    NEGATIVE_BALANCE,
    ZERO_SUM,
    TRANSFER_SIDES,
    KEY_REUSED,
    INVOICED_TWICE,
    INVOICED_UNKNOWN_SALE,
    HOLD_CLOSED_TWICE,
    HOLD_NOT_OPENED,
    CHAIN_MISMATCH,
    CHAIN_UNCOVERED,
    CHAIN_ORDER,
    ANCHOR,
    VIEWS,
    CREDENTIALS_LOCK,
    MERKLE_ROOT,
    CHECKPOINT_SIGNATURE,
    CHECKPOINT_CONSISTENCY,
    MERKLE_TILES,
)

Progress = Callable[[int, int], None]
"""Called after each page with (position reached, highest position when the run started)."""


@dataclass(frozen=True, slots=True)
class Breach:
    """One broken invariant: which check, where (notification id, aggregate) and what."""

    # Declared in the order of its JSON object; made as Breach(check, message, position=...).
    check: str
    position: int | None = field(default=None, kw_only=True)
    aggregate_id: str | None = field(default=None, kw_only=True)
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The breach as JSON-ready data."""
        return json_fields(self)


@dataclass
class VerifyReport:
    """The outcome of ``verify``: ``ok`` unless some check found a breach."""

    # Declared in the order of its JSON object (after ``ok``).
    events: int = 0
    aggregates: int = 0
    holders: int = 0
    links: int = 0
    keys: int = 0
    postings: int = 0
    last_position: int = 0
    head_hash: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    breach_counts: dict[str, int] = field(default_factory=dict)
    breaches: list[Breach] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check found a breach."""
        return not self.breach_counts

    def add(self, breach: Breach) -> None:
        """Counts a breach and keeps its details up to ``BREACHES_KEPT_MAX``."""
        self.breach_counts[breach.check] = self.breach_counts.get(breach.check, 0) + 1
        if len(self.breaches) < BREACHES_KEPT_MAX:
            self.breaches.append(breach)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        breaches = [b.to_dict() for b in self.breaches]
        return {
            "ok": self.ok,
            **json_fields(self, breaches=breaches, duration_s=round(self.duration_s, 3)),
        }


class ReplayState(Protocol):
    """What a view check compares against: the replay's balances at its last position."""

    @property
    def balances(self) -> dict[tuple[str, str], int]:
        """Booked balance per ``(holder, unit)`` after the last replayed event."""

    @property
    def last_position(self) -> int:
        """The notification id of the last replayed event."""


class HealthCheck(Protocol):
    """Finds views whose last page failed or that are stuck behind the log."""

    def breaches(self, head: int) -> tuple[list[Breach], list[str]]:
        """``VIEWS`` breaches and notes; ``head`` is the log's newest id when verify started."""


class RowCheck(Protocol):
    """A further check fed every stored row in notification order (the Merkle tree's, §9)."""

    def feed(self, rows: Sequence[Notification]) -> None:
        """Takes one page of rows."""

    def finish(self, report: VerifyReport) -> None:
        """Adds its breaches and notes once every row was fed."""


class ViewCheck(Protocol):
    """Compares one read-side view with the replay at the position the view has tracked."""

    name: str

    def position(self) -> int | None:
        """The notification id the view's rows include, or None if the view does not exist."""

    def compare(self, replay: ReplayState) -> list[Breach] | None:
        """``VIEWS`` breaches where the view differs; None if the view moved meanwhile."""


class _Chain:
    """Recomputes each link from the rows it covers, streaming, one link at a time."""

    def __init__(self, source: AuditSource, report: VerifyReport, anchor: bytes | None) -> None:
        self.source = source
        self.report = report
        self.anchor = anchor
        self.anchor_seen = False
        self.page = 0
        self.buffer: deque[Link] = deque()
        self.fetched_after = 0
        self.exhausted_on_page = -1
        self.current: Link | None = None
        self.hasher = hashlib.sha256()
        self.previous_hash = GENESIS
        self.previous_last = 0

    def _next_link(self) -> Link | None:
        if not self.buffer:
            if self.exhausted_on_page == self.page:
                return None  # asked already for this page: do not query once per forged row
            fetched = self.source.links(self.fetched_after, LINK_PAGE_SIZE)
            if not fetched:
                self.exhausted_on_page = self.page
                return None
            self.buffer.extend(fetched)
            self.fetched_after = fetched[-1].last_id
        return self.buffer.popleft()

    def _open(self, item: Link) -> None:
        if item.first_id > item.last_id or item.first_id <= self.previous_last:
            self.report.add(
                Breach(
                    CHAIN_ORDER,
                    f"chain link {item.first_id}..{item.last_id} overlaps or inverts"
                    f" (previous link ends at {self.previous_last})",
                    position=item.first_id,
                )
            )
        self.current = item
        self.hasher = hashlib.sha256()

    def _close(self) -> None:
        item = self.current
        assert item is not None
        expected = link(self.previous_hash, self.hasher.digest())
        if expected != item.hash:
            self.report.add(
                Breach(
                    CHAIN_MISMATCH,
                    f"chain link {item.first_id}..{item.last_id} does not match the stored"
                    " rows it covers (a row in it was edited, deleted or inserted, or an earlier"
                    " link was rewritten)",
                    position=item.first_id,
                )
            )
        elif self.anchor is not None and item.hash == self.anchor:
            self.anchor_seen = True
        self.previous_hash = item.hash
        self.previous_last = item.last_id
        self.report.links += 1
        self.report.head_hash = item.hash.hex()
        self.current = None

    def feed(self, row: Notification) -> bool:
        """Hashes ``row`` into its link; True if a link (a transaction) closed before it."""
        closed = False
        position = row.id
        while True:
            if self.current is None:
                item = self._next_link()
                if item is None:
                    self._uncovered(row)
                    return closed
                self._open(item)
                continue
            if position > self.current.last_id:
                self._close()
                closed = True
                continue
            break
        if position < self.current.first_id:
            self._uncovered(row)
        else:
            self.hasher.update(row_digest_parts(row))
        return closed

    def _uncovered(self, row: Notification) -> None:
        self.report.add(
            Breach(
                CHAIN_UNCOVERED,
                f"stored event {row.topic} v{row.originator_version} is not covered by any"
                " chain link (inserted outside the ledger)",
                position=row.id,
                aggregate_id=str(row.originator_id),
            )
        )

    def finish(self, head_at_start: int) -> None:
        """Closes the open link and checks links (up to the head seen at start) left unread."""
        if self.current is not None:
            self._close()
        # A link whose rows were all deleted never saw a row: it must still match (it cannot).
        while True:
            item = self._next_link()
            if item is None or item.last_id > head_at_start:
                break
            self._open(item)
            self._close()
        if self.anchor is not None and not self.anchor_seen:
            self.report.add(
                Breach(
                    ANCHOR,
                    f"no verified chain link has the expected hash {self.anchor.hex()}"
                    " (history was truncated or rewritten since it was recorded)",
                )
            )


_HOLD_EVENTS = (
    StampingAccount.StampReserved,
    StampingAccount.ReservationPosted,
    StampingAccount.ReservationVoided,
)
"""The events that open and close holds (each hold opens once, then closes at most once)."""

_Group = list[Any]
"""``[sum of deltas, has debit, has credit, first position, holder of the first leg]``."""


class _Replay:
    """Folds decoded events into per-holder balances and spills what needs global grouping."""

    def __init__(self, source: AuditSource, report: VerifyReport, spill: Spill) -> None:
        self.source = source
        self.to_event = source.decode
        self.report = report
        self.spill = spill
        self.versions: dict[str, int] = {}
        self.masters: set[str] = {ISSUANCE}
        self.balances: dict[tuple[str, str], int] = {}
        self.totals: dict[str, int] = {}
        self.groups: dict[tuple[str, str, str, str], _Group] = {}
        self.decoded = 0
        self.last_position = 0
        # Per CTI with failed credentials checks in a row: their count and the lock they set.
        # Only CTIs with failures are kept (a success or a reset drops the entry).
        self.credential_failures: dict[str, tuple[int, datetime | None]] = {}

    def feed(self, row: Notification) -> None:
        """Checks one stored row and folds its event."""
        report = self.report
        position = row.id
        stream = str(row.originator_id)
        version = row.originator_version
        last = self.versions.get(stream, 0)
        if version != last + 1:
            report.add(
                Breach(
                    VERSION_GAP,
                    f"{row.topic} is version {version} after version {last} of its stream",
                    position=position,
                    aggregate_id=stream,
                )
            )
        if version > last:
            self.versions[stream] = version
        try:
            event: Event = self.to_event(row)
        except MapperDeserialisationError as exc:
            report.add(Breach(DECODE, str(exc), position=position, aggregate_id=stream))
            return
        self.decoded += 1
        if version == 1:
            if not isinstance(event, Created):
                report.add(
                    Breach(
                        VERSION_GAP,
                        f"stream starts with {row.topic}, not with a creation event",
                        position=position,
                        aggregate_id=stream,
                    )
                )
            elif isinstance(event, MasterAccount.Opened):
                self.masters.add(stream)
        postings = event.postings()
        if postings:
            self._post(postings, position, stream)
        keys = event.keys()
        if keys:
            spill_keys = self.spill.keys
            for key in keys:
                spill_keys.append((hash(key), position))
                if key.startswith("invoiced:"):
                    self.spill.invoiced.append((key[9:], stream, position))
            report.keys += len(keys)
        if isinstance(event, SaleEvent):
            sale = event.sale()
            self.spill.sales.append((sale.sale_id, sale.seller_id, position))
        elif isinstance(event, _CREDENTIAL_EVENTS):
            self._credentials(event, position, stream)
        elif isinstance(event, _HOLD_EVENTS):
            opened = int(isinstance(event, StampingAccount.StampReserved))
            self.spill.holds.append((event.hold_id, opened, position, stream))

    def _credentials(self, event: Event, position: int, stream: str) -> None:
        """A failed check counts on from the previous one and is never recorded while locked."""
        if not isinstance(event, StampingAccount.CredentialsCheckFailed):
            self.credential_failures.pop(stream, None)  # a success or a reset clears the count
            return
        count, locked_until = self.credential_failures.get(stream, (0, None))
        if locked_until is not None and event.timestamp < locked_until:
            self.report.add(
                Breach(
                    CREDENTIALS_LOCK,
                    f"a failed credentials check recorded at {event.timestamp.isoformat()}"
                    f" while locked until {locked_until.isoformat()}",
                    position=position,
                    aggregate_id=stream,
                )
            )
        elif event.failures != (expected := 1 if locked_until is not None else count + 1):
            self.report.add(
                Breach(
                    CREDENTIALS_LOCK,
                    f"failed credentials check number {event.failures}, expected {expected}",
                    position=position,
                    aggregate_id=stream,
                )
            )
        self.credential_failures[stream] = (event.failures, event.locked_until)

    def _post(self, postings: tuple[Posting, ...], position: int, stream: str) -> None:
        balances = self.balances
        self.report.postings += len(postings)
        for p in postings:
            key = (p.holder, p.unit)
            before = balances.get(key, 0)
            after = before + p.delta
            balances[key] = after
            if after < 0 <= before and p.holder not in self.masters:
                self.report.add(
                    Breach(
                        NEGATIVE_BALANCE,
                        f"{p.holder} goes to {after} {p.unit} (ref {p.ref})",
                        position=position,
                        aggregate_id=stream,
                    )
                )
        if len(postings) == 2:
            a, b = postings
            if (
                a.delta == -b.delta
                and a.delta != 0
                and a.holder == b.counterpart
                and a.counterpart == b.holder
                and a.ref == b.ref
                and a.unit == b.unit
            ):
                # Both legs of one movement in one event (a consumption, an expiry): they cancel
                # here, so neither the unit's total nor the pairing of legs needs them.
                return
        totals = self.totals
        groups = self.groups
        for p in postings:
            totals[p.unit] = totals.get(p.unit, 0) + p.delta
            low, high = sorted((p.holder, p.counterpart))
            group_key = (p.ref, p.unit, low, high)
            group = groups.get(group_key)
            if group is None:
                groups[group_key] = [p.delta, p.delta < 0, p.delta > 0, position, p.holder]
            else:
                group[0] += p.delta
                group[1] = group[1] or p.delta < 0
                group[2] = group[2] or p.delta > 0
        if len(groups) > PENDING_GROUPS_MAX:
            self.end_transaction()

    def end_transaction(self) -> None:
        """Spills the movements left unpaired when a transaction ends (legit ones pair inside)."""
        legs = self.spill.legs
        for (ref, unit, low, high), (total, debit, credit, position, holder) in self.groups.items():
            if total != 0 or not debit or not credit:
                legs.append((ref, unit, low, high, total, debit, credit, position, holder))
        self.groups.clear()

    def finish(self) -> None:
        """The checks that need the whole history: zero sum, paired legs, keys, invoices."""
        report = self.report
        self.end_transaction()
        for unit, total in sorted(self.totals.items()):
            if total != 0:
                report.add(Breach(ZERO_SUM, f"the {unit} of all holders sum to {total}, not to 0"))
        for (
            ref,
            unit,
            low,
            high,
            total,
            debit,
            credit,
            position,
            holder,
        ) in self.spill.unmatched_legs():
            missing = "no debit" if not debit else "no credit" if not credit else f"sum {total}"
            report.add(
                Breach(
                    TRANSFER_SIDES,
                    f"movement {ref!r} of {unit} between {low} and {high}: {missing}"
                    f" (legs sum to {total})",
                    position=position,
                    aggregate_id=holder,
                )
            )
        for positions in self.spill.repeated_keys():
            self._confirm_repeats(positions)
        for sale_id, seller, position, actual in self.spill.invoices_of_unknown_sales():
            whose = "no such sale" if actual is None else f"the sale is {actual}'s"
            report.add(
                Breach(
                    INVOICED_UNKNOWN_SALE,
                    f"{seller} invoiced sale {sale_id!r}: {whose}",
                    position=position,
                    aggregate_id=seller,
                )
            )
        for hold_id, position, holder in self.spill.holds_closed_unopened():
            report.add(
                Breach(
                    HOLD_NOT_OPENED,
                    f"hold {hold_id!r} was closed without having been opened before",
                    position=position,
                    aggregate_id=holder,
                )
            )
        report.aggregates = len(self.versions)
        report.holders = len({holder for holder, _ in self.balances})
        report.totals = dict(sorted(self.totals.items()))
        report.last_position = self.last_position

    def _confirm_repeats(self, positions: list[int]) -> None:
        """Re-reads the rows sharing a key hash and reports the keys really used twice."""
        first_use: dict[str, int] = {}
        for position in positions:
            rows = self.source.notifications(position - 1, 1)
            if not rows or rows[0].id != position:
                continue  # the row vanished since it was read: the chain check reports that
            event: Event = self.to_event(rows[0])
            for key in event.keys():  # noqa: SIM118  (an event's keys, not a dict)
                if key not in first_use:
                    first_use[key] = position
                    continue
                check = (
                    INVOICED_TWICE
                    if key.startswith("invoiced:")
                    else HOLD_CLOSED_TWICE
                    if key.startswith("hold-closed:")
                    else KEY_REUSED
                )
                self.report.add(
                    Breach(
                        check,
                        f"{key!r} used again (first at position {first_use[key]})",
                        position=position,
                        aggregate_id=str(rows[0].originator_id),
                    )
                )


_CREDENTIAL_EVENTS = (
    StampingAccount.CredentialsCheckFailed,
    StampingAccount.CredentialsCheckPassed,
    StampingAccount.PasswordReset,
)


@dataclass(frozen=True, slots=True)
class _ReplayView:
    balances: dict[tuple[str, str], int]
    last_position: int


def verify(
    source: AuditSource,
    *,
    views: Sequence[ViewCheck] = (),
    health: HealthCheck | None = None,
    progress: Progress | None = None,
    expected_head: str | None = None,
    page_size: int = PAGE_SIZE,
    spill_dir: str | None = None,
    row_checks: Sequence[RowCheck] = (),
) -> VerifyReport:
    """Replays every stored event and checks DESIGN §3; see the module docstring."""
    started = time.perf_counter()
    report = VerifyReport()
    anchor = bytes.fromhex(expected_head) if expected_head else None
    # Links up to this head were committed, with their rows, before the first page is read.
    head_at_start = source.chain_head()
    total = source.max_position()
    pending = _ViewQueue(views, report)
    with Spill(spill_dir) as spill:
        chain = _Chain(source, report, anchor) if source.chained else None
        replay = _Replay(source, report, spill)
        after = 0
        page = 0
        while True:
            rows = source.notifications(after, page_size)
            if not rows:
                break
            report.events += len(rows)
            replay.last_position = rows[-1].id
            for row in rows:
                if row.id > pending.next_at:
                    pending.compare_due(replay, row.id)
                if chain is not None and chain.feed(row):
                    replay.end_transaction()
                replay.feed(row)
            if page == 0 and replay.decoded == 0:
                raise IntegrityBreach(
                    f"none of the first {len(rows)} stored events can be decoded: wrong or"
                    " missing LEDGER_CIPHER_KEY, or the events were overwritten"
                )
            for check in row_checks:
                check.feed(rows)
            page += 1
            if chain is not None:
                chain.page = page
            else:
                replay.end_transaction()  # no links to mark transactions: a page stands in
            spill.flush()
            after = rows[-1].id
            if progress is not None:
                progress(after, max(total, after))
        if chain is not None:
            chain.finish(head_at_start)
        else:
            report.notes.append("chain: skipped, this store keeps no hash chain")
        replay.finish()
        pending.compare_rest(replay)
        for check in row_checks:
            check.finish(report)
    if health is not None:
        breaches, notes = health.breaches(total)
        for breach in breaches:
            report.add(breach)
        report.notes.extend(notes)
    report.duration_s = time.perf_counter() - started
    return report


class _ViewQueue:
    """The view checks still to run, by the position each view has tracked."""

    def __init__(self, views: Sequence[ViewCheck], report: VerifyReport) -> None:
        self.report = report
        self.queue: list[tuple[int, ViewCheck]] = []
        for view in views:
            position = view.position()
            if position is None:
                report.notes.append(f"views: {view.name} skipped, it does not exist here")
            else:
                self.queue.append((position, view))
        if not views:
            report.notes.append("views: skipped, no read-side views found in this database")
        self.queue.sort(key=lambda item: item[0])
        self.next_at = self.queue[0][0] if self.queue else _NEVER

    def compare_due(self, replay: _Replay, next_position: int) -> None:
        """Compares the views whose position the replay has reached (before ``next_position``)."""
        while self.queue and self.queue[0][0] < next_position:
            position, view = self.queue.pop(0)
            self._compare(view, replay, position)
        self.next_at = self.queue[0][0] if self.queue else _NEVER

    def compare_rest(self, replay: _Replay) -> None:
        """Compares the views at or past the last event."""
        for position, view in self.queue:
            if position > replay.last_position:
                self.report.add(
                    Breach(
                        VIEWS,
                        f"view {view.name} has tracked position {position}, past the last"
                        f" stored event {replay.last_position}",
                    )
                )
            else:
                self._compare(view, replay, position)
        self.queue.clear()

    def _compare(self, view: ViewCheck, replay: _Replay, position: int) -> None:
        breaches = view.compare(_ReplayView(replay.balances, position))
        if breaches is None:
            self.report.notes.append(f"views: {view.name} moved during verify, not compared")
            return
        for breach in breaches:
            self.report.add(breach)
        if position == 0:
            self.report.notes.append(f"views: {view.name} has projected nothing yet, it is empty")
        else:
            self.report.notes.append(f"views: {view.name} compared at position {position}")


_NEVER = 1 << 62
