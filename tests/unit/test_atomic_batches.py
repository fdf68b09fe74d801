"""``execute_many(atomic=True)``: every command or none (imports, all-or-nothing tools)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.errors import Rejected
from ledger.logging import capture_logs
from ledger.write import calls
from ledger.write.calls import ATOMIC_SIZE_MAX
from tests.support import (
    CLIENT,
    CTI,
    consume,
    network_fixture,
    recorded,
    register_client,
    transfer_stamps,
)

# A memory ledger with a network and 10 stamps in C1's CTI.
lg = network_fixture(cti_stamps=10)


def register(client_id: str) -> dict[str, Any]:
    """A RegisterClient of D1."""
    return register_client(client_id, name=f"Cliente {client_id}")


def test_an_atomic_batch_with_a_rejection_records_nothing(lg: Ledger) -> None:
    """One rejected command aborts the batch: the others are not recorded either."""
    results = lg.execute_many([register("C7"), register(CLIENT), register("C8")], atomic=True)
    assert [r.code for r in results if isinstance(r, Rejected)] == [
        "batch_aborted",
        "already_exists",
        "batch_aborted",
    ]
    assert results[0].details == {"rejected_index": 1}  # type: ignore[union-attr]
    for absent in ("C7", "C8"):
        with pytest.raises(Rejected) as e:
            lg.balance(absent, "points")
        assert e.value.code == "unknown_account"


def test_an_atomic_batch_without_rejections_records_everything(lg: Ledger) -> None:
    """All commands succeed together."""
    results = lg.execute_many([register("C7"), register("C8")], atomic=True)
    assert [r.ok for r in results] == [True, True]
    assert lg.balance("C8", "points") == 0


def test_an_aborted_atomic_batch_leaves_the_cache_clean(lg: Ledger) -> None:
    """State changed in memory by an aborted batch is not seen afterwards."""
    transfer = transfer_stamps(5, "T9", amount="2.50")
    lg.execute_many([transfer, register(CLIENT)], atomic=True)
    assert lg.balance(CTI) == 10
    assert lg.execute(transfer).replayed is False
    assert lg.balance(CTI) == 15


# The bound and any iterable (issue 19 item 11) --------------------------------------------------


def stamps(count: int) -> Iterator[dict[str, object]]:
    """``count`` consumptions of C1's CTI, made one at a time (a generator)."""
    return (consume(CTI) for _ in range(count))


def test_an_atomic_batch_over_its_bound_answers_every_command_batch_too_large(
    lg: Ledger,
) -> None:
    """50,001 commands in one atomic batch: each gets ``batch_too_large``; none runs."""
    before = recorded(lg)
    results = lg.execute_many(list(stamps(ATOMIC_SIZE_MAX + 1)), atomic=True)
    assert len(results) == ATOMIC_SIZE_MAX + 1
    assert {r.code for r in results if isinstance(r, Rejected)} == {"batch_too_large"}
    assert all(isinstance(r, Rejected) for r in results)
    assert results[0].details == {"commands": ATOMIC_SIZE_MAX + 1, "limit": ATOMIC_SIZE_MAX}  # type: ignore[union-attr]
    assert recorded(lg) == before
    assert lg.balance(CTI) == 10


@pytest.fixture
def small_bound(monkeypatch: pytest.MonkeyPatch) -> int:
    """The atomic bound lowered to 3, so that a test can count log lines."""
    monkeypatch.setattr(calls, "ATOMIC_SIZE_MAX", 3)
    return 3


def test_each_command_over_the_bound_gets_its_log_line(lg: Ledger, small_bound: int) -> None:
    """One log line per command, the batch too large included, even from a generator."""
    with capture_logs() as logs:
        results = lg.execute_many(stamps(small_bound + 2), atomic=True)
    assert [r.code for r in results if isinstance(r, Rejected)] == ["batch_too_large"] * 5
    assert [(line["type"], line["code"]) for line in logs] == [
        ("ConsumeStamp", "batch_too_large")
    ] * 5


def test_an_atomic_batch_of_exactly_the_bound_runs(lg: Ledger, small_bound: int) -> None:
    """The bound itself is allowed."""
    results = lg.execute_many(stamps(small_bound), atomic=True)
    assert [r.ok for r in results if not isinstance(r, Rejected)] == [True] * 3
    assert lg.balance(CTI) == 7


@pytest.mark.parametrize("atomic", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        stamps,
        lambda n: tuple(stamps(n)),
        lambda n: map(dict, list(stamps(n))),
        lambda n: dict(enumerate(stamps(n))).values(),
    ],
    ids=["generator", "tuple", "map", "dict values"],
)
def test_execute_many_takes_any_iterable(
    lg: Ledger,
    make: Callable[[int], Iterable[dict[str, object]]],
    atomic: bool,
) -> None:
    """A generator, a tuple, a map or a view: one result per command, in order."""
    results = lg.execute_many(make(3), atomic=atomic)
    assert [r.ok for r in results if not isinstance(r, Rejected)] == [True] * 3
    assert lg.balance(CTI) == 7


def test_a_long_generator_is_run_in_parts(lg: Ledger) -> None:
    """More than one transaction's worth from a generator: every command answered in order."""
    results = lg.execute_many(
        ({**consume(CTI), "stamped_at": "bad"} if i % 2 else consume(CTI) for i in range(12)),
    )
    assert [r.ok if not isinstance(r, Rejected) else r.code for r in results] == [
        True,
        "invalid_command",
    ] * 6
    assert lg.balance(CTI) == 4


@pytest.mark.parametrize("atomic", [False, True])
def test_aexecute_many_takes_a_generator(lg: Ledger, atomic: bool) -> None:
    """The asyncio entry takes any iterable too."""
    results = asyncio.run(lg.aexecute_many(stamps(2), atomic=atomic))
    assert [r.ok for r in results if not isinstance(r, Rejected)] == [True, True]


def test_aexecute_many_over_the_bound_answers_batch_too_large(lg: Ledger, small_bound: int) -> None:
    """The asyncio entry answers an atomic batch over the bound the same way."""
    results = asyncio.run(lg.aexecute_many(stamps(small_bound + 1), atomic=True))
    assert [r.code for r in results if isinstance(r, Rejected)] == ["batch_too_large"] * 4
