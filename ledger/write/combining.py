"""Writers of a hot aggregate in several processes commit for each other.

On a hot aggregate (one that lost races lately) every writer waits for the aggregate's lock
anyway, and each decision needs the state the last writer left. So instead of queueing with a
decision that will be stale by the time the lock is its, a writer posts its commands for the
aggregate and waits for the lock (``HotWriter.wait``). The first to get it finds either the
answers to its batch (another writer decided and recorded it: done), or its turn: it then
holds the lock, catches up with what was recorded, and decides its own batch together with
every batch posted meanwhile, and writes them all, with their answers, in one transaction.
Several processes' commands then share one commit and one flush of the WAL, as one process's
threads share them through group commit.

Only commands that are safe to hand to another process are posted (``POSTED_TYPES``): every
one has an idempotency key (what its writer recorded is found by it), carries no secret, and
its result survives JSON exactly (the answers are JSON). A batch of others runs as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.write.aggregates import Aggregates
from ledger.write.preparation import Prepared, Result, prepare_many

POSTED_TYPES = frozenset({"ConsumeStamp", "ReserveStamp", "PostReservation", "VoidReservation"})
"""Commands a writer may post for another process to decide (each keyed, none secret)."""

_ENCODER = msgspec.json.Encoder()


def postable(batch: Sequence[Prepared]) -> bool:
    """Whether another process may decide every command of the batch."""
    return all(p.command is not None and p.keys and p.raw_type in POSTED_TYPES for p in batch)


def hot_target(batch: Sequence[Prepared], aggregates: Aggregates) -> str | None:
    """The hot aggregate every command of a postable batch names (its ``cti_id``), if it is
    cached: the batch can be posted for it without being decided first."""
    target: str | None = None
    for p in batch:
        cti_id = getattr(p.command, "cti_id", None)
        if type(cti_id) is not str or (target is not None and cti_id != target):
            return None
        target = cti_id
    if target is None or not postable(batch) or not aggregates.is_hot(target):
        return None
    return target if aggregates.peek(target) is not None else None


def encode_commands(batch: Sequence[Prepared]) -> bytes:
    """A batch's commands as the caller gave them (the fields set, in JSON), to post."""
    fields: list[dict[str, Any]] = []
    for p in batch:
        command = p.command
        assert command is not None
        given = command.model_dump(mode="json", exclude_unset=True)
        given["type"] = p.raw_type
        fields.append(given)
    return _ENCODER.encode(fields)


def decode_commands(posted: bytes, now: datetime) -> list[Prepared] | None:
    """A posted batch prepared again (its keys and fingerprints as its writer had them);
    None if it is not a batch this ledger would post."""
    try:
        commands = msgspec.json.decode(posted, type=list[dict[str, Any]])
    except msgspec.DecodeError:  # a ValidationError too
        return None
    batch = prepare_many(commands, now)
    return batch if postable(batch) else None


class _Answer(msgspec.Struct, frozen=True, omit_defaults=True):
    """One command's result, as a posted batch's writer gets it back."""

    outcome: Outcome | None = None
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = {}


_ANSWERS = msgspec.json.Decoder(list[_Answer])


def encode_answers(results: Sequence[Result]) -> bytes | None:
    """The results of a posted batch, to record with it; None if one would not come back
    exactly as it is (its writer then decides the batch itself)."""
    answers: list[_Answer] = []
    for result in results:
        if isinstance(result, Rejected):
            if (
                type(result) is not Rejected
                or msgspec.to_builtins(result.details) != result.details
            ):
                return None
            answers.append(
                _Answer(code=result.code, message=result.message, details=result.details)
            )
        else:
            if Outcome.decode(result.encode()) != result:
                return None
            answers.append(_Answer(outcome=result))
    return _ENCODER.encode(answers)


def answer_posted(
    posted: Sequence[tuple[int, Sequence[Prepared]]], results: Sequence[Result]
) -> tuple[list[tuple[int, bytes]], set[int]]:
    """The answers to posted batches decided after a writer's own (``results`` holds the
    posted batches' results at its end, in order), and the batches that cannot be answered."""
    answers: list[tuple[int, bytes]] = []
    unanswered: set[int] = set()
    at = len(results) - sum(len(batch) for _, batch in posted)
    for post, batch in posted:
        answer = encode_answers(results[at : at + len(batch)])
        at += len(batch)
        if answer is None:
            unanswered.add(post)
        else:
            answers.append((post, answer))
    return answers, unanswered


def decode_answers(answers: bytes) -> list[Result]:
    """The results another writer recorded for a posted batch."""
    results: list[Result] = []
    for answer in _ANSWERS.decode(answers):
        if answer.outcome is not None:
            results.append(answer.outcome)
        else:
            assert answer.code is not None
            results.append(Rejected(answer.code, answer.message, **answer.details))
    return results
