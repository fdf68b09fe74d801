"""Credentials lockout on real databases: the lock holds across processes (two ``Ledger``s)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from ledger.aggregates.stamping_account import CREDENTIALS_LOCK
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    PASSWORD,
    credentials_answer,
    network_ledger,
    on_cti,
    open_cti,
)

WRONG = "no-es-la-clave"
CTI_ID = "X1"


def open_ledger(url: str, clock: ManualClock) -> Ledger:
    """A ledger as one process would open it."""
    return Ledger.open(url, clock=clock, password_cost="fast")


@pytest.fixture
def two(store_url: str, clock: ManualClock) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers (two processes' views) on one database holding C1's CTI ``X1``."""
    with (
        network_ledger(clock, open_cti(CTI_ID), url=store_url) as first,
        open_ledger(store_url, clock) as second,
    ):
        yield first, second


def answer(lg: Ledger, password: str) -> bool | str:
    """``valid`` of a check of X1, or the code of the rejection."""
    return credentials_answer(lg, password, CTI_ID)


def test_failures_in_two_processes_count_together(two: tuple[Ledger, Ledger]) -> None:
    """Failures alternate between the processes; the fifth locks both, right password too."""
    first, second = two
    # Both have X1 cached and valid before the failures.
    assert (answer(first, PASSWORD), answer(second, PASSWORD)) == (True, True)
    answers = [answer(lg, WRONG) for lg in (first, second, first, second, first)]
    assert answers == [False] * 5
    assert (answer(second, PASSWORD), answer(first, PASSWORD)) == (
        "credentials_locked",
        "credentials_locked",
    )


def test_a_lock_recorded_by_one_process_holds_in_the_other(
    two: tuple[Ledger, Ledger], clock: ManualClock
) -> None:
    """The second process, which cached X1 before, refuses the right password until the end."""
    first, second = two
    assert answer(second, PASSWORD) is True
    assert [answer(first, WRONG) for _ in range(5)] == [False] * 5
    assert answer(second, PASSWORD) == "credentials_locked"
    clock.advance(CREDENTIALS_LOCK - timedelta(seconds=1))
    assert answer(second, PASSWORD) == "credentials_locked"
    clock.advance(timedelta(seconds=1))
    assert answer(second, PASSWORD) is True
    # The success in the second process cleared the count for the first one as well.
    assert [answer(first, WRONG) for _ in range(4)] == [False] * 4
    assert answer(first, PASSWORD) is True


def test_a_reset_in_one_process_unlocks_the_other(two: tuple[Ledger, Ledger]) -> None:
    """A reset recorded by the second process lets the first one verify the new password."""
    first, second = two
    assert [answer(first, WRONG) for _ in range(5)] == [False] * 5
    assert answer(first, PASSWORD) == "credentials_locked"
    second.execute(on_cti("ResetStampingPassword", CTI_ID, password="otra-clave-99"))
    assert answer(first, "otra-clave-99") is True
    assert answer(first, PASSWORD) is False


def test_guessing_a_locked_cti_records_nothing_and_verifies(two: tuple[Ledger, Ledger]) -> None:
    """Locked: 20 guesses from both processes store nothing; the history verifies."""
    first, second = two
    assert [answer(first, WRONG) for _ in range(5)] == [False] * 5
    events_locked = first.verify().events
    for n in range(10):
        assert answer(first, f"guess-a-{n}") == "credentials_locked"
        assert answer(second, f"guess-b-{n}") == "credentials_locked"
    report = second.verify()
    assert report.ok, report.breaches
    assert report.events == events_locked
    assert second.history(CTI_ID) == []
    assert second.balance(CTI_ID, "stamps") == 0
