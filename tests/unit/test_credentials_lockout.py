"""Credentials lockout (DESIGN §3.3, §4): failed checks are recorded and lock a CTI after five."""

from __future__ import annotations

import importlib
from datetime import datetime, timedelta

import msgspec
import pytest
from eventsourcing.persistence import Notification

from adapters.storage.codec import MsgspecMapper
from ledger.aggregates.stamping_account import CREDENTIALS_LOCK, StampingAccount
from ledger.api import Ledger
from ledger.audit.source import RowsSource
from ledger.clock import ManualClock
from ledger.commands import accounts
from ledger.domain import Snapshot
from ledger.errors import Rejected
from ledger.passwords import verify_password
from tests.support import (
    CLIENT,
    DISTRIBUTOR,
    MASTER,
    PASSWORD,
    credentials_answer,
    forged,
    network_fixture,
    on_cti,
    open_cti,
    rows_of,
    verify_credentials,
)

WRONG = "no-es-la-clave"
CTI_ID = "X1"
FAILED = "StampingAccount.CredentialsCheckFailed"
PASSED = "StampingAccount.CredentialsCheckPassed"
verify_module = importlib.import_module("ledger.audit.verify")


# A ledger on the in-memory store with C1's CTI ``X1`` and its password.
lg = network_fixture(open_cti(CTI_ID))


def answer(lg: Ledger, password: str, cti_id: str = CTI_ID) -> bool | str:
    """``valid`` of the outcome, or the code of the rejection."""
    return credentials_answer(lg, password, cti_id)


def topics(lg: Ledger) -> list[str]:
    """The stored topics, in order."""
    return [e.topic for e in lg.store.stored_events()]


def lock(lg: Ledger) -> None:
    """Five wrong passwords in a row."""
    assert [answer(lg, WRONG) for _ in range(5)] == [False] * 5


def test_five_wrong_passwords_lock_even_the_right_one(lg: Ledger) -> None:
    """After five failures in a row every check is credentials_locked, the right password too."""
    before = len(topics(lg))
    answers = [answer(lg, WRONG) for _ in range(5)]
    answers += [answer(lg, PASSWORD), answer(lg, WRONG)]
    assert answers == [*[False] * 5, "credentials_locked", "credentials_locked"]
    assert topics(lg)[before:] == [FAILED] * 5


def test_a_locked_cti_records_nothing_however_often_it_is_guessed(lg: Ledger) -> None:
    """Guessing on a locked CTI cannot grow the log."""
    lock(lg)
    before = len(topics(lg))
    assert {answer(lg, f"guess-{n:04d}") for n in range(40)} == {"credentials_locked"}
    assert len(topics(lg)) == before


def test_the_lock_names_its_end_on_the_ledger_clock(lg: Ledger, clock: ManualClock) -> None:
    """The rejection says until when: 15 minutes after the fifth failure."""
    lock(lg)
    fifth_at = clock()
    clock.advance(timedelta(minutes=3))
    with pytest.raises(Rejected) as caught:
        lg.execute(verify_credentials(PASSWORD, CTI_ID))
    assert caught.value.code == "credentials_locked"
    assert caught.value.details == {
        "cti_id": CTI_ID,
        "locked_until": (fifth_at + timedelta(minutes=15)).isoformat(),
    }
    assert timedelta(minutes=15) == CREDENTIALS_LOCK


def test_the_lock_ends_after_fifteen_minutes(lg: Ledger, clock: ManualClock) -> None:
    """One microsecond before 15 minutes it holds; at 15 minutes the right password is valid."""
    lock(lg)
    clock.advance(CREDENTIALS_LOCK - timedelta(microseconds=1))
    assert answer(lg, PASSWORD) == "credentials_locked"
    clock.advance(timedelta(microseconds=1))
    before = len(topics(lg))
    assert answer(lg, PASSWORD) is True
    assert topics(lg)[before:] == [PASSED]


def test_after_a_lock_ends_the_count_starts_again(lg: Ledger, clock: ManualClock) -> None:
    """Once unlocked, it takes five new failures to lock again, not one."""
    lock(lg)
    clock.advance(CREDENTIALS_LOCK)
    assert [answer(lg, WRONG) for _ in range(4)] == [False] * 4
    assert answer(lg, PASSWORD) is True
    lock(lg)
    assert answer(lg, PASSWORD) == "credentials_locked"


def test_a_success_resets_the_count(lg: Ledger) -> None:
    """Four failures, a success, four failures: not locked; the fifth in a row locks."""
    assert [answer(lg, WRONG) for _ in range(4)] == [False] * 4
    assert answer(lg, PASSWORD) is True
    assert [answer(lg, WRONG) for _ in range(4)] == [False] * 4
    assert answer(lg, PASSWORD) is True
    lock(lg)
    assert answer(lg, PASSWORD) == "credentials_locked"


def test_a_success_without_failures_records_nothing(lg: Ledger) -> None:
    """The usual check (the right password, no failures) adds nothing to the log."""
    before = len(topics(lg))
    assert [answer(lg, PASSWORD) for _ in range(3)] == [True, True, True]
    assert len(topics(lg)) == before


def test_a_password_reset_unlocks(lg: Ledger) -> None:
    """ResetStampingPassword ends the lock; the old password is then a fresh first failure."""
    lock(lg)
    lg.execute(on_cti("ResetStampingPassword", CTI_ID, password="otra-clave-99"))
    assert answer(lg, "otra-clave-99") is True
    assert [answer(lg, PASSWORD) for _ in range(4)] == [False] * 4
    assert answer(lg, "otra-clave-99") is True
    account = lg.engine.current(CTI_ID)
    assert isinstance(account, StampingAccount)
    assert (account.failed_checks, account.locked_until) == (0, None)


def test_a_locked_check_costs_one_hash_of_the_account(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Locked, unknown and wrong each cost exactly one slow hash (the same time)."""
    lock(lg)
    calls: list[str] = []

    def spy(plaintext: str, stored: str) -> bool:
        calls.append(stored)
        return verify_password(plaintext, stored)

    monkeypatch.setattr(accounts, "verify_password", spy)
    account = lg.engine.current(CTI_ID)
    assert isinstance(account, StampingAccount)
    assert answer(lg, PASSWORD) == "credentials_locked"
    assert calls == [account.password_hash]
    assert answer(lg, PASSWORD, cti_id="NOBODY") is False
    assert len(calls) == 2


def test_a_blocked_cti_counts_wrong_passwords_but_not_the_right_one(lg: Ledger) -> None:
    """Blocked: a wrong password is a recorded failure, the right one account_blocked (nothing)."""
    lg.execute(on_cti("BlockStampingAccount", CTI_ID))
    before = len(topics(lg))
    assert answer(lg, WRONG) is False
    assert answer(lg, PASSWORD) == "account_blocked"
    assert topics(lg)[before:] == [FAILED]


def test_an_unknown_cti_never_locks_and_records_nothing(lg: Ledger) -> None:
    """No account, nothing to lock: ten guesses are ten valid-false answers and no event."""
    before = len(topics(lg))
    assert {answer(lg, WRONG, cti_id="NOBODY") for _ in range(10)} == {False}
    assert len(topics(lg)) == before


def test_a_cti_without_a_password_is_valid_false(lg: Ledger, clock: ManualClock) -> None:
    """A CTI opened without a password (before every CTI got one at its opening): no
    password is right, and nothing is recorded."""
    old = StampingAccount.open(
        "OLD-cti",
        client_id=CLIENT,
        distributor_id=DISTRIBUTOR,
        master_id=MASTER,
        kind="standard",
        at=clock(),
    )
    lg.store.record(old.collect_events(), [])
    before = len(topics(lg))
    assert answer(lg, PASSWORD, cti_id="OLD-cti") is False
    assert len(topics(lg)) == before


def test_a_check_with_an_idempotency_key_is_invalid(lg: Ledger) -> None:
    """A check is never replayed (the password is not fingerprinted): a key is refused."""
    with pytest.raises(Rejected) as caught:
        lg.execute({**verify_credentials(PASSWORD, CTI_ID), "idempotency_key": "k-1"})
    assert caught.value.code == "invalid_command"
    fields = [e["field"] for e in caught.value.details["errors"]]
    assert fields == ["VerifyStampingCredentials.idempotency_key"]


def test_failed_checks_are_not_movements_and_verify(lg: Ledger) -> None:
    """Failed checks leave the CTI's history and balance alone; the history verifies."""
    history_before = lg.history(CTI_ID)
    lock(lg)
    assert answer(lg, PASSWORD) == "credentials_locked"
    assert lg.history(CTI_ID) == history_before
    assert lg.balance(CTI_ID, "stamps") == 0
    report = lg.verify()
    assert report.ok, report.breaches


# verify: the credentials_lock check on forged histories ------------------------------------


def rows_with(lg: Ledger, *events: StampingAccount.CredentialsCheckFailed) -> list[Notification]:
    """The ledger's stored rows followed by ``events`` as if recorded."""
    return forged(rows_of(lg), *events)


def failure(
    version: int, at: datetime, failures: int, locked_until: datetime | None = None
) -> StampingAccount.CredentialsCheckFailed:
    """A failed check of X1 as its ``version``-th event."""
    return StampingAccount.CredentialsCheckFailed(
        originator_id=CTI_ID,
        originator_version=version,
        timestamp=at,
        failures=failures,
        locked_until=locked_until,
    )


def test_verify_reports_a_failure_recorded_while_locked(lg: Ledger) -> None:
    """A sixth failure inside the lock is a credentials_lock breach at its position."""
    lock(lg)
    account = lg.engine.current(CTI_ID)
    assert isinstance(account, StampingAccount)
    assert account.locked_until is not None
    at = account.locked_until - timedelta(minutes=1)
    rows = rows_with(lg, failure(account.version + 1, at, 6))
    report = verify_module.verify(RowsSource.one_link_per_row(rows, MsgspecMapper()))
    assert report.breach_counts == {"credentials_lock": 1}
    assert report.breaches[0].position == len(rows)
    assert report.breaches[0].aggregate_id == CTI_ID


def test_verify_reports_a_failure_count_that_skips(lg: Ledger) -> None:
    """A failure numbered 3 right after failure 1 is a credentials_lock breach."""
    assert answer(lg, WRONG) is False
    account = lg.engine.current(CTI_ID)
    assert isinstance(account, StampingAccount)
    at = datetime(2026, 1, 5, 19, 0, tzinfo=account.created_on.tzinfo)
    rows = rows_with(lg, failure(account.version + 1, at, 3))
    report = verify_module.verify(RowsSource.one_link_per_row(rows, MsgspecMapper()))
    assert report.breach_counts == {"credentials_lock": 1}


def test_a_snapshot_stored_before_the_lockout_still_loads(lg: Ledger, clock: ManualClock) -> None:
    """A CTI snapshot without ``failed_checks``/``locked_until`` loads with no failures."""
    account = lg.engine.current(CTI_ID)
    assert isinstance(account, StampingAccount)
    snapshot = Snapshot.take(account, clock())
    state = msgspec.json.decode(snapshot.state)
    del state["failed_checks"], state["locked_until"]
    old = msgspec.structs.replace(snapshot, state=msgspec.Raw(msgspec.json.encode(state)))
    restored = old.mutate(None)
    assert isinstance(restored, StampingAccount)
    assert (restored.failed_checks, restored.locked_until) == (0, None)
    assert restored.password_hash == account.password_hash
