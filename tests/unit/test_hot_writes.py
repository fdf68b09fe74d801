"""Writes of a hot aggregate, on the in-memory store: guarded writes, and what writers in
several processes hand each other when they commit for each other (``ledger.write.combining``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from adapters.storage.memory import MemoryStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.engine import Engine
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.write import combining
from ledger.write.ports import Overtaken
from ledger.write.preparation import prepare, prepare_many
from tests.support import CTI, consume, network_ledger, transfer_stamps


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """A ledger whose CTI holds 10 stamps."""
    with network_ledger(clock, cti_stamps=10) as ledger:
        yield ledger


def test_a_guarded_write_overtaken_records_nothing_and_answers_what_overtook_it(
    lg: Ledger, clock: ManualClock
) -> None:
    """A write decided on a CTI that moved on since, or with a key used since, raises
    ``Overtaken`` with the events after the version it was decided on and the used keys."""
    store = lg.store
    assert isinstance(store, MemoryStore)
    stale = Engine(store, clock)  # another process's engine, with the CTI cached at 10
    assert stale.current(CTI) is not None
    command = consume()
    assert lg.execute(command).balance_after == 9
    events_before, keys_before = len(store.stored_events()), store.key_count()
    stale.mark_hot([CTI])
    # Decided again on the event that overtook it, the replay of the same CFDI is found.
    assert stale.execute_many([command])[0] == Outcome(
        type="ConsumeStamp", replayed=True, balance_after=9, details={"local_date": "2026-01-05"}
    )
    assert (len(store.stored_events()), store.key_count()) == (events_before, keys_before)
    with store.guarded() as record, pytest.raises(Overtaken) as caught:
        record(store.events()[-1:], [])
    assert [e.originator_version for e in caught.value.events] == [
        store.events()[-1].originator_version
    ]
    assert caught.value.keys == {}


def test_a_hot_write_decides_again_on_the_events_that_overtook_it(
    lg: Ledger, clock: ManualClock
) -> None:
    """The stale engine's guarded write is overtaken once, then written on the caught-up CTI
    (its balance is right), without loading the CTI again."""
    store = lg.store
    assert isinstance(store, MemoryStore)
    stale = Engine(store, clock)
    assert stale.current(CTI) is not None
    assert lg.execute(consume()).balance_after == 9
    stale.mark_hot([CTI])
    loads: list[str] = []
    load = store.load
    store.load = lambda i: loads.append(i) or load(i)  # type: ignore[method-assign]
    results = stale.execute_many([consume(), transfer_stamps(5, "T-hot", amount="2.50")])
    assert [r.balance_after for r in results if isinstance(r, Outcome)][:1] == [8]
    assert CTI not in loads
    assert lg.balance(CTI) == 13


def test_a_posted_batch_is_prepared_again_with_the_same_keys_and_fingerprints(
    clock: ManualClock,
) -> None:
    """What another process decides is the command as its caller gave it."""
    batch = prepare_many([consume(), consume(stamped_at="2026-01-05T10:00:00-06:00")], clock())
    again = combining.decode_commands(combining.encode_commands(batch), clock())
    assert again is not None
    assert [(p.keys, p.fingerprint) for p in again] == [(p.keys, p.fingerprint) for p in batch]


def test_only_keyed_commands_without_secrets_are_posted(clock: ManualClock) -> None:
    """A transfer (not one of the posted types), or a posted text that does not parse into
    such commands, is not posted or is refused."""
    assert combining.postable([prepare(consume(), clock())])
    assert not combining.postable([prepare(transfer_stamps(5), clock())])
    assert not combining.postable([prepare({"type": "ConsumeStamp"}, clock())])
    transfer = combining.encode_commands([prepare(consume(), clock())]).replace(
        b"ConsumeStamp", b"TransferStamps"
    )
    assert combining.decode_commands(transfer, clock()) is None
    assert combining.decode_commands(b"not json", clock()) is None


def test_answers_come_back_exactly_or_are_not_given() -> None:
    """Outcomes and rejections survive the answer's JSON as they are; a result that JSON would
    change is not answered (its writer then decides the batch itself)."""
    outcome = Outcome(type="ConsumeStamp", balance_after=4, details={"local_date": "2026-01-05"})
    rejection = Rejected("insufficient_stamps", available=0, requested=1)
    answer = combining.encode_answers([outcome, rejection])
    assert answer is not None
    back = combining.decode_answers(answer)
    assert back[0] == outcome
    assert isinstance(back[1], Rejected)
    assert (back[1].code, back[1].message, back[1].details) == (
        rejection.code,
        rejection.message,
        rejection.details,
    )
    assert combining.encode_answers([Rejected("insufficient_stamps", on=date(2026, 1, 5))]) is None
    dated = Outcome(type="ConsumeStamp", details={"local_date": date(2026, 1, 5)})
    assert combining.encode_answers([dated]) is None


def test_a_batch_is_posted_for_the_hot_cti_all_its_commands_name(
    lg: Ledger, clock: ManualClock
) -> None:
    """Posted without a decision: only a batch of postable commands that all name one CTI,
    hot and cached."""
    aggregates = lg.engine.aggregates
    batch = prepare_many([consume(), consume()], clock())
    assert combining.hot_target(batch, aggregates) is None  # not hot
    lg.engine.mark_hot([CTI])
    assert combining.hot_target(batch, aggregates) == CTI
    assert combining.hot_target([*batch, prepare(consume("C2-cti"), clock())], aggregates) is None
    aggregates.evict([CTI])
    assert combining.hot_target(batch, aggregates) is None  # not cached
