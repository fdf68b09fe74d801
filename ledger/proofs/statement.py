"""Statements a holder checks without the database (DESIGN §9, docs/PROOFS.md).

A statement lists a holder's movements of one unit over a period of Mexico City dates, and
carries what proves them: every event of the holder's stream recorded in the period (movement
or not), plus the stream's last event before the period and its first after it, each with its
leaf input and its inclusion proof against one signed checkpoint.

``check_statement`` needs the verifier key and the event codec only. It checks the signature,
every inclusion proof, that the stream's versions run without a gap from the event before the
period to the event after it (so no event of the stream was left out), that each event's date
falls where it must, that each listed movement is exactly what its event posts to the holder,
and that the running balances add up from the opening balance to the closing one. The opening
balance is proven when the period starts at the stream's first event (it is then 0) or by the
previous statement (its closing balance, its last version just before this one's first);
otherwise it is stated, not proven.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from eventsourcing.persistence import MapperDeserialisationError, Notification

from ledger.clock import local_date
from ledger.domain import HELD_PREFIX, UNITS, Event
from ledger.errors import LedgerError, Rejected
from ledger.proofs.checkpoint import open_checkpoint
from ledger.proofs.log import Tree, TreeStore, b64
from ledger.proofs.note import NoteError, Verifier
from ledger.proofs.tiles import TiledTree
from ledger.proofs.tree import inclusion_proof, leaf_hash, leaf_input, parse_leaf_input
from ledger.proofs.verify import ProofError, verify_inclusion

FORMAT = "cfdi-ledger-statement/1"
STREAM_PAGE_SIZE = 2_000
STATEMENT_EVENTS_MAX = 200_000
"""Bound on the events one statement carries (a longer period is split)."""

Decode = Callable[[Notification], Event]


def _movements(event: Event, holder_id: str, unit: str) -> Iterator[tuple[int, str, str]]:
    for posting in event.postings():
        if posting.holder == holder_id and posting.unit == unit:
            yield posting.delta, posting.ref, posting.counterpart


def _listed(
    event: Event, notification_id: int, delta: int, balance: int, ref: str, counterpart: str
) -> dict[str, Any]:
    """A movement as a statement lists it: ``build_statement`` writes it, ``check_statement``
    recomputes it from the proven event and compares."""
    return {
        "at": event.timestamp.isoformat(),
        "delta": delta,
        "balance": balance,
        "ref": ref,
        "counterpart": counterpart,
        "actor": event.actor,
        "notification_id": notification_id,
        "version": event.originator_version,
        "topic": event.topic.partition("#")[0],
    }


def _parse_period(start: date | str, end: date | str) -> tuple[date, date]:
    try:
        first = start if isinstance(start, date) else date.fromisoformat(start)
        last = end if isinstance(end, date) else date.fromisoformat(end)
    except ValueError:
        raise Rejected("invalid_command", field="from", reason="dates as YYYY-MM-DD") from None
    if last < first:
        raise Rejected("invalid_command", field="to", reason="on or after --from")
    return first, last


def build_statement(  # noqa: PLR0915  (one pass over the stream, in order)
    store: TreeStore,
    decode: Decode,
    holder_id: str,
    unit: str,
    start: date | str,
    end: date | str,
) -> dict[str, Any]:
    """The statement of ``holder_id``'s ``unit`` over ``start``..``end`` (inclusive dates).

    It is proven against the latest stored checkpoint: events sealed after it are left out
    (``events_after_checkpoint`` counts those of the period).
    """
    if unit not in UNITS:
        raise Rejected("invalid_command", field="unit", reason="stamps or points")
    first_day, last_day = _parse_period(start, end)
    checkpoint = store.checkpoint(latest=True)
    if checkpoint is None:
        raise Rejected(
            "invalid_command", field="checkpoint", reason="no signed checkpoint (ledger checkpoint)"
        )
    stream_id = holder_id.removeprefix(HELD_PREFIX)
    tree = Tree(store)
    tiled = TiledTree(tree.state.size, store.read_tiles)

    def proven(row: Notification) -> dict[str, Any] | None:
        index = store.leaf_index(row.id)
        if index is None or index >= checkpoint.size:
            return None
        tiled.prefetch(lambda sub: inclusion_proof(index, checkpoint.size, sub))
        path = inclusion_proof(index, checkpoint.size, tiled.subtree)
        leaf = leaf_input(
            row.id, str(row.originator_id), row.originator_version, row.topic, bytes(row.state)
        )
        return {
            "notification_id": row.id,
            "leaf_index": index,
            "leaf_input": b64(leaf),
            "audit_path": [b64(p) for p in path],
        }

    opening = 0
    before: Notification | None = None
    opening_event: dict[str, Any] | None = None
    closing_event: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    movements: list[dict[str, Any]] = []
    balance = 0
    after_checkpoint = 0
    seen = False
    done = False
    after = 0
    while not done:
        rows = store.stream_rows(stream_id, after, STREAM_PAGE_SIZE)
        for row in rows:
            seen = True
            event = decode(row)
            day = local_date(event.timestamp)
            if day < first_day:
                for delta, _, _ in _movements(event, holder_id, unit):
                    opening += delta
                before = row
                continue
            entry = proven(row)
            if entry is None:
                if day <= last_day:
                    after_checkpoint += 1
                done = True
                break
            if day > last_day:
                closing_event = entry
                done = True
                break
            if len(events) >= STATEMENT_EVENTS_MAX:
                raise Rejected(
                    "invalid_command", field="to", reason="too many events: shorten the period"
                )
            events.append(entry)
            for delta, ref, counterpart in _movements(event, holder_id, unit):
                balance = (opening if not movements else balance) + delta
                movements.append(_listed(event, row.id, delta, balance, ref, counterpart))
        if len(rows) < STREAM_PAGE_SIZE:
            break
        after = rows[-1].originator_version
    if not seen:
        raise Rejected("unknown_account", account_id=holder_id)
    if before is not None:
        opening_event = proven(before)
    if before is not None and opening_event is None:
        raise Rejected(
            "invalid_command",
            field="checkpoint",
            reason="the period starts after the latest checkpoint (ledger checkpoint)",
        )
    first_version = 1 if opening_event is None else _version(opening_event) + 1
    return {
        "format": FORMAT,
        "holder_id": holder_id,
        "unit": unit,
        "stream_id": stream_id,
        "from": first_day.isoformat(),
        "to": last_day.isoformat(),
        "checkpoint": checkpoint.note,
        "tree_size": checkpoint.size,
        "opening_balance": opening,
        "closing_balance": movements[-1]["balance"] if movements else opening,
        "first_version": first_version,
        "last_version": first_version + len(events) - 1,
        "movements": movements,
        "events": events,
        "opening_event": opening_event,
        "closing_event": closing_event,
        "events_after_checkpoint": after_checkpoint,
    }


def _version(entry: dict[str, Any]) -> int:
    return parse_leaf_input(base64.b64decode(entry["leaf_input"]))[2]


@dataclass
class StatementCheck:
    """What ``check_statement`` found: ``ok`` when no problem; whether the opening is proven."""

    problems: list[str] = field(default_factory=list)
    opening_proven: bool = False
    opening_basis: str = ""
    movements: int = 0
    tree_size: int = 0

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return not self.problems


def check_statement(
    document: dict[str, Any],
    verifier: Verifier,
    decode: Decode,
    *,
    previous: dict[str, Any] | None = None,
) -> StatementCheck:
    """Checks a statement offline; see the module docstring for what it establishes."""
    result = StatementCheck()
    try:
        _check(document, verifier, decode, result)
    except (KeyError, TypeError, ValueError, binascii.Error, LedgerError) as exc:
        result.problems.append(f"malformed statement: {exc!r}")
        return result
    if result.problems:
        return result
    if document["first_version"] == 1:
        result.opening_proven = document["opening_balance"] == 0
        result.opening_basis = "the period starts at the stream's first event"
        if not result.opening_proven:
            result.problems.append("the stream starts in the period but the opening is not 0")
    elif previous is not None:
        earlier = check_statement(previous, verifier, decode)
        if not earlier.ok:
            result.problems.extend(f"previous statement: {p}" for p in earlier.problems)
        elif (previous["holder_id"], previous["unit"]) != (
            document["holder_id"],
            document["unit"],
        ):
            result.problems.append("the previous statement is of another holder or unit")
        elif previous["last_version"] + 1 != document["first_version"]:
            result.problems.append(
                f"the previous statement ends at version {previous['last_version']}, this one"
                f" starts at {document['first_version']}: events in between are not shown"
            )
        elif previous["closing_balance"] != document["opening_balance"]:
            result.problems.append("the opening balance is not the previous closing balance")
        else:
            result.opening_proven = earlier.opening_proven
            result.opening_basis = "the previous statement's closing balance"
    else:
        result.opening_basis = "stated: pass the previous statement to prove it"
    return result


def _check(  # noqa: PLR0915  (one pass over the events, in order)
    document: dict[str, Any], verifier: Verifier, decode: Decode, result: StatementCheck
) -> None:
    problems = result.problems
    if document.get("format") != FORMAT:
        problems.append(f"not a statement of format {FORMAT}")
        return
    try:
        checkpoint = open_checkpoint(document["checkpoint"], verifier)
    except NoteError as exc:
        problems.append(f"checkpoint: {exc}")
        return
    if checkpoint.size != document["tree_size"]:
        problems.append("the tree size is not the checkpoint's")
        return
    result.tree_size = checkpoint.size
    holder, unit, stream_id = document["holder_id"], document["unit"], document["stream_id"]
    if stream_id != holder.removeprefix(HELD_PREFIX):
        problems.append("the stream is not the holder's")
        return
    first_day = date.fromisoformat(document["from"])
    last_day = date.fromisoformat(document["to"])

    def opened(entry: dict[str, Any], what: str) -> Event | None:
        leaf = base64.b64decode(entry["leaf_input"], validate=True)
        notification_id, originator, version, topic, state = parse_leaf_input(leaf)
        if notification_id != entry["notification_id"]:
            problems.append(f"{what}: the leaf input is of another notification id")
            return None
        if originator != stream_id:
            problems.append(f"{what}: an event of another stream ({originator})")
            return None
        try:
            verify_inclusion(
                entry["leaf_index"],
                checkpoint.size,
                leaf_hash(leaf),
                [base64.b64decode(p, validate=True) for p in entry["audit_path"]],
                checkpoint.root,
            )
        except ProofError as exc:
            problems.append(f"{what}: the inclusion proof fails: {exc}")
            return None
        try:
            return decode(
                Notification(
                    id=notification_id,
                    originator_id=originator,
                    originator_version=version,
                    topic=topic,
                    state=state,
                )
            )
        except (MapperDeserialisationError, LedgerError) as exc:
            problems.append(f"{what}: cannot decode the event: {exc}")
            return None

    expected_version = 1
    last_index = -1
    if document["opening_event"] is not None:
        event = opened(document["opening_event"], "the event before the period")
        if event is None:
            return
        if local_date(event.timestamp) >= first_day:
            problems.append("the event before the period is not before it")
        expected_version = event.originator_version + 1
        last_index = document["opening_event"]["leaf_index"]
    if document["first_version"] != expected_version:
        problems.append("the first version does not follow the event before the period")
        return
    listed = iter(document["movements"])
    balance = document["opening_balance"]
    for entry in document["events"]:
        event = opened(entry, f"notification {entry.get('notification_id')}")
        if event is None:
            return
        if event.originator_version != expected_version:
            problems.append(
                f"version {expected_version} of {stream_id} is missing: an event was left out"
            )
            return
        if entry["leaf_index"] <= last_index:
            problems.append("the events are not in the log's order")
            return
        last_index = entry["leaf_index"]
        expected_version += 1
        day = local_date(event.timestamp)
        if not first_day <= day <= last_day:
            problems.append(f"notification {entry['notification_id']} is outside the period")
        for delta, ref, counterpart in _movements(event, holder, unit):
            balance += delta
            want = _listed(event, entry["notification_id"], delta, balance, ref, counterpart)
            got = next(listed, None)
            if got != want:
                problems.append(
                    f"movement of notification {entry['notification_id']}: listed {got},"
                    f" its event says {want}"
                )
                return
            result.movements += 1
    if next(listed, None) is not None:
        problems.append("a listed movement has no event")
    if document["last_version"] != expected_version - 1:
        problems.append("the last version is not the last event's")
    if document["closing_balance"] != balance:
        problems.append(
            f"the closing balance {document['closing_balance']} is not the sum {balance}"
        )
    if document["closing_event"] is not None:
        event = opened(document["closing_event"], "the event after the period")
        if event is not None:
            if event.originator_version != expected_version:
                problems.append("the event after the period does not follow the last one")
            if local_date(event.timestamp) <= last_day:
                problems.append("the event after the period is not after it")
