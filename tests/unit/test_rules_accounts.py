"""Clients and stamping accounts: registration, consumption rules, unlimited CTIs, passwords."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from adapters.storage.memory import MemoryStore
from ledger.aggregates.client import Client
from ledger.aggregates.stamping_account import StampingAccount
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands import accounts
from ledger.logging import capture_logs
from ledger.passwords import verify_password
from tests import support
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    PASSWORD,
    command,
    consume,
    distributor_profile,
    invalid_fields,
    network_fixture,
    network_ledger,
    on_cti,
    open_cti,
    register_distributor,
    rejection,
    transfer_stamps,
    verify_credentials,
)
from tests.support import transfer_points as give_points

# A ledger on the in-memory store: D1 with stamps and points; C1's CTI holds 5 stamps.
lg = network_fixture(cti_stamps=5, points=3000)


def register_client(client_id: str = "C2", **extra: Any) -> dict[str, Any]:
    """RegisterClient under D1 (``extra``: the command's own fields, not the profile's)."""
    return {**support.register_client(client_id, name="Ana", email="ana@example.com"), **extra}


def cti(lg: Ledger, cti_id: str = CTI) -> StampingAccount:
    """The recorded stamping account."""
    account = lg.engine.current(cti_id)
    assert isinstance(account, StampingAccount)
    return account


# RegisterClient --------------------------------------------------------------------------------


def test_register_client_opens_its_default_cti(lg: Ledger) -> None:
    """The client and a standard CTI exist together; the outcome names the CTI."""
    outcome = lg.execute(register_client())
    assert outcome.cti_id == "C2-cti"
    client = lg.engine.current("C2")
    assert isinstance(client, Client)
    assert (cti(lg, "C2-cti").client_id, cti(lg, "C2-cti").kind) == ("C2", "standard")


def test_register_client_takes_a_chosen_cti_id_and_nic(lg: Ledger) -> None:
    """The caller may name the default CTI and the NIC."""
    outcome = lg.execute(register_client(cti_id="CTI-77", nic="NIC-77"))
    assert outcome.cti_id == "CTI-77"
    client = lg.engine.current("C2")
    assert isinstance(client, Client)
    assert (client.nic, cti(lg, "CTI-77").client_id) == ("NIC-77", "C2")


def test_register_client_is_atomic_when_the_cti_id_is_taken(lg: Ledger) -> None:
    """If the default CTI cannot be opened, the client is not registered either."""
    rejected = rejection(lg, register_client(cti_id=CTI))
    assert rejected.code == "already_exists"
    assert lg.engine.current("C2") is None


def test_register_client_with_the_same_id_for_both_is_refused(lg: Ledger) -> None:
    """A client and its CTI cannot share one id; nothing is recorded."""
    assert rejection(lg, register_client(cti_id="C2")).code == "already_exists"
    assert lg.engine.current("C2") is None


def test_register_client_for_another_distributor_is_not_authorised(lg: Ledger) -> None:
    """The actor must be the distributor that registers (or its master)."""
    assert rejection(lg, register_client(actor="D2")).code == "not_authorised"


def test_registering_a_taken_client_id_is_already_exists(lg: Ledger) -> None:
    """A client id is unique."""
    assert rejection(lg, register_client(CLIENT)).code == "already_exists"


def verify(lg: Ledger, cti_id: str, password: str) -> bool | None:
    """The stamping service checks a CTI's credentials."""
    return lg.execute(verify_credentials(password, cti_id)).valid


def test_a_new_clients_cti_is_ready_to_stamp_with_a_generated_password(lg: Ledger) -> None:
    """Without ``cti_password`` the outcome carries a generated one, valid at once."""
    outcome = lg.execute(register_client())
    assert outcome.cti_password is not None
    assert len(outcome.cti_password) >= 20
    assert verify(lg, "C2-cti", outcome.cti_password) is True
    assert verify(lg, "C2-cti", outcome.cti_password + "x") is False


def test_a_new_clients_cti_takes_the_password_given(lg: Ledger) -> None:
    """A ``cti_password`` given is the CTI's password, and the outcome does not echo it."""
    outcome = lg.execute(register_client(cti_password=PASSWORD))
    assert outcome.cti_password is None
    assert PASSWORD not in str(outcome.to_dict())
    assert verify(lg, "C2-cti", PASSWORD) is True


def test_two_registrations_generate_two_passwords(lg: Ledger) -> None:
    """Each generated password is fresh."""
    first = lg.execute(register_client("C2")).cti_password
    second = lg.execute(register_client("C3", cti_id="C3-cti")).cti_password
    assert first is not None
    assert second is not None
    assert first != second


def test_a_replayed_registration_does_not_show_the_password_again(lg: Ledger) -> None:
    """Shown once, like a NIP: the replay answers everything but the password."""
    first = lg.execute(register_client())
    again = lg.execute(register_client())
    assert again.replayed is True
    assert again.cti_password is None
    assert again.cti_id == first.cti_id


def test_a_generated_password_is_kept_nowhere(lg: Ledger) -> None:
    """No event, idempotency key or log line holds the generated password."""
    with capture_logs() as lines:
        outcome = lg.execute(register_client())
    password = outcome.cti_password
    assert password is not None
    stored = b"".join(row.state for row in lg.store.stored_events())
    assert password.encode() not in stored
    assert isinstance(lg.store, MemoryStore)
    kept = lg.store.select_keys(["id:C2", "id:C2-cti"])
    assert kept
    assert all(password.encode() not in record.outcome for record in kept.values())
    assert password not in repr(lines)
    assert all(password not in repr(row) for row in lg.views.stamping_accounts(DISTRIBUTOR))


def test_the_cti_password_is_not_part_of_the_fingerprint(clock: ManualClock) -> None:
    """A retry with another password replays: no fast hash of a password is kept."""
    fingerprints = set()
    for password in (PASSWORD, "otra-clave-99"):
        with network_ledger(clock) as ledger:
            ledger.execute(register_client(cti_password=password))
            assert isinstance(ledger.store, MemoryStore)
            fingerprints.add(ledger.store.select_keys(["id:C2"])["id:C2"].fingerprint)
    assert len(fingerprints) == 1


def test_a_short_cti_password_is_invalid_command(lg: Ledger) -> None:
    """The password policy holds for a password given at registration."""
    assert invalid_fields(lg, register_client(cti_password="corta")) == [
        "RegisterClient.cti_password"
    ]


def test_opening_a_cti_without_a_password_generates_one(lg: Ledger) -> None:
    """OpenStampingAccount's ``password`` may be left out: a generated one is shown once."""
    command = open_cti()
    del command["password"]
    outcome = lg.execute(command)
    assert outcome.cti_password is not None
    assert verify(lg, "X1", outcome.cti_password) is True
    assert lg.execute(command).cti_password is None


def test_opening_a_cti_with_a_password_shows_none(lg: Ledger) -> None:
    """A password given is never echoed."""
    assert lg.execute(open_cti()).cti_password is None
    assert verify(lg, "X1", PASSWORD) is True


# Consumption rules -----------------------------------------------------------------------------


def test_consumption_takes_one_stamp(lg: Ledger) -> None:
    """A stamped CFDI consumes one stamp."""
    assert lg.execute(consume()).balance_after == 4
    assert lg.balance(CTI) == 4


def test_an_empty_cti_is_insufficient_stamps(lg: Ledger) -> None:
    """Without stamps the CFDI is refused with the end user's message."""
    for _ in range(5):
        lg.execute(consume())
    rejected = rejection(lg, consume())
    assert rejected.code == "insufficient_stamps"
    assert rejected.message == "Sin folios disponibles."


def test_a_blocked_cti_cannot_stamp(lg: Ledger) -> None:
    """Blocking stops consumption with account_blocked."""
    lg.execute(on_cti("BlockStampingAccount"))
    assert rejection(lg, consume()).code == "account_blocked"


def test_a_reactivated_cti_stamps_again(lg: Ledger) -> None:
    """Reactivation restores consumption."""
    lg.execute(on_cti("BlockStampingAccount"))
    lg.execute(on_cti("ReactivateStampingAccount"))
    assert lg.execute(consume()).balance_after == 4


def test_blocking_twice_is_invalid_transition(lg: Ledger) -> None:
    """A blocked CTI cannot be blocked again."""
    lg.execute(on_cti("BlockStampingAccount"))
    assert rejection(lg, on_cti("BlockStampingAccount")).code == "invalid_transition"


def test_reactivating_an_active_cti_is_invalid_transition(lg: Ledger) -> None:
    """An active CTI cannot be reactivated."""
    rejected = rejection(lg, on_cti("ReactivateStampingAccount"))
    assert rejected.code == "invalid_transition"


def test_blocking_another_distributors_cti_is_not_authorised(lg: Ledger) -> None:
    """Only the CTI's distributor (or its master) blocks it."""
    rejected = rejection(lg, on_cti("BlockStampingAccount", actor="D2"))
    assert rejected.code == "not_authorised"


def test_consuming_on_an_unknown_cti_is_unknown_account(lg: Ledger) -> None:
    """The CTI must exist."""
    assert rejection(lg, consume("NOBODY")).code == "unknown_account"


def test_an_rfc_lock_refuses_other_issuers(lg: Ledger) -> None:
    """A CTI locked to an RFC stamps only for that issuer."""
    lg.execute(open_cti(rfc_lock="MAB9307148T4"))
    lg.execute(transfer_stamps(3, "T9", to_id="X1", amount="1.50"))
    assert rejection(lg, consume("X1")).code == "rfc_not_allowed"


def test_an_rfc_lock_accepts_its_issuer(lg: Ledger) -> None:
    """The locked RFC stamps."""
    lg.execute(open_cti(rfc_lock="MAB9307148T4"))
    lg.execute(transfer_stamps(3, "T9", to_id="X1", amount="1.50"))
    assert lg.execute(consume("X1", issuer_rfc="MAB9307148T4")).balance_after == 2


def test_an_rfc_lock_ignores_the_case_of_the_issuer_rfc(lg: Ledger) -> None:
    """RFCs are case-insensitive: the lock is stored upper-case and matches a lower-case issuer."""
    lg.execute(open_cti(rfc_lock="mab9307148t4"))
    lg.execute(transfer_stamps(3, "T9", to_id="X1", amount="1.50"))
    assert lg.execute(consume("X1", issuer_rfc="mab9307148t4")).balance_after == 2


# Unlimited accounts ----------------------------------------------------------------------------


def test_an_unlimited_cti_is_paid_in_points_from_the_clients_wallet(lg: Ledger) -> None:
    """Opening an unlimited CTI spends the yearly fee from the client's points."""
    lg.execute(give_points(2_000))
    outcome = lg.execute(open_cti("U1", "unlimited"))
    assert outcome.cti_id == "U1"
    assert lg.balance(CLIENT, "points") == 500
    account = cti(lg, "U1")
    assert (account.kind, str(account.valid_until)) == ("unlimited", "2027-01-05")


def test_an_unlimited_cti_without_points_is_insufficient_points(lg: Ledger) -> None:
    """The fee must be covered by the wallet; nothing opens otherwise."""
    lg.execute(give_points(1_499))
    assert rejection(lg, open_cti("U1", "unlimited")).code == "insufficient_points"
    assert lg.engine.current("U1") is None


def test_an_unlimited_cti_stamps_without_a_balance(lg: Ledger) -> None:
    """Consumptions are recorded but no balance is held or taken."""
    lg.execute(give_points(1_500))
    lg.execute(open_cti("U1", "unlimited"))
    outcome = lg.execute(consume("U1"))
    assert (outcome.balance_after, lg.balance("U1"), cti(lg, "U1").used) == (0, 0, 1)


def test_an_unlimited_cti_expires_after_a_year(lg: Ledger, clock: ManualClock) -> None:
    """The day after its validity the unlimited CTI refuses with unlimited_expired."""
    lg.execute(give_points(1_500))
    lg.execute(open_cti("U1", "unlimited"))
    clock.advance(timedelta(days=366))
    assert rejection(lg, consume("U1")).code == "unlimited_expired"


def test_renewing_an_unlimited_cti_charges_another_year(lg: Ledger, clock: ManualClock) -> None:
    """A renewal spends the fee again and extends validity by a year from its end."""
    lg.execute(give_points(3_000))
    lg.execute(open_cti("U1", "unlimited"))
    outcome = lg.execute(on_cti("RenewUnlimitedAccount", "U1"))
    assert outcome.details == {"valid_until": "2028-01-05"}
    assert lg.balance(CLIENT, "points") == 0


def test_renewing_a_standard_cti_is_wrong_account_kind(lg: Ledger) -> None:
    """Only unlimited CTIs renew."""
    assert rejection(lg, on_cti("RenewUnlimitedAccount")).code == "wrong_account_kind"


def test_opening_a_cti_for_another_distributors_client_is_not_authorised(lg: Ledger) -> None:
    """The actor must be the client's distributor (or its master)."""
    assert rejection(lg, open_cti(actor="D2")).code == "not_authorised"


def test_opening_a_taken_cti_id_is_already_exists(lg: Ledger) -> None:
    """A CTI id is unique."""
    assert rejection(lg, open_cti(CTI)).code == "already_exists"


# Passwords -------------------------------------------------------------------------------------


def test_passwords_are_never_stored_in_plaintext(lg: Ledger) -> None:
    """Neither the events nor the idempotency index hold the password or its UTF-8 bytes."""
    lg.execute(open_cti())
    lg.execute(on_cti("ResetStampingPassword", "X1", password=PASSWORD + "!"))
    stored = b"".join(row.state for row in lg.store.stored_events())
    assert PASSWORD.encode() not in stored
    assert PASSWORD.encode("unicode_escape") not in stored
    assert b"Tr0mb" not in stored


def test_the_idempotency_index_keeps_no_fast_hash_of_a_password(clock: ManualClock) -> None:
    """The fingerprint of a command with a password does not depend on it (no offline guessing)."""
    fingerprints = set()
    for password in (PASSWORD, "otra-clave-99"):
        with network_ledger(clock) as ledger:
            ledger.execute({**open_cti(), "password": password})
            assert isinstance(ledger.store, MemoryStore)
            fingerprints.add(ledger.store.select_keys(["id:X1"])["id:X1"].fingerprint)
    assert len(fingerprints) == 1


def test_the_stored_hash_verifies_the_password(lg: Ledger) -> None:
    """Only a salted hash is kept, and it verifies the password."""
    lg.execute(open_cti())
    stored_hash = cti(lg, "X1").password_hash
    assert stored_hash is not None
    assert stored_hash.startswith("scrypt$")
    assert verify_password(PASSWORD, stored_hash)


def test_verify_credentials_accepts_the_right_password(lg: Ledger) -> None:
    """The right password is valid, and checking it records nothing."""
    lg.execute(open_cti())
    before = len(lg.store.stored_events())
    outcome = lg.execute(verify_credentials(PASSWORD, "X1"))
    assert outcome.valid is True
    assert len(lg.store.stored_events()) == before


def test_verify_credentials_answers_a_wrong_password_with_valid_false(lg: Ledger) -> None:
    """A wrong password is an outcome with valid false, recorded as one failed check."""
    lg.execute(open_cti())
    before = len(lg.store.stored_events())
    outcome = lg.execute(verify_credentials("nope-nope", "X1"))
    assert outcome.valid is False
    topics = [e.topic for e in lg.store.stored_events()[before:]]
    assert topics == ["StampingAccount.CredentialsCheckFailed"]


def test_verify_credentials_answers_the_same_for_an_unknown_cti(lg: Ledger) -> None:
    """An unknown id is indistinguishable from a wrong password, and records nothing."""
    before = len(lg.store.stored_events())
    outcome = lg.execute(verify_credentials(PASSWORD, "NOBODY"))
    assert outcome.to_dict() == {"type": "VerifyStampingCredentials", "ok": True, "valid": False}
    assert len(lg.store.stored_events()) == before


def test_verify_credentials_uses_the_constant_time_check(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check goes through ``verify_password`` (hmac.compare_digest), never ``==`` on hashes."""
    lg.execute(open_cti())
    calls: list[str] = []

    def spy(plaintext: str, stored: str) -> bool:
        calls.append(stored)
        return verify_password(plaintext, stored)

    monkeypatch.setattr(accounts, "verify_password", spy)
    lg.execute(verify_credentials(PASSWORD, "X1"))
    assert calls == [cti(lg, "X1").password_hash]


def test_verify_credentials_of_an_unknown_cti_costs_a_hash_too(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown id is checked against a throwaway hash: timing does not reveal which ids exist."""
    calls: list[str] = []

    def spy(plaintext: str, stored: str) -> bool:
        calls.append(stored)
        return verify_password(plaintext, stored)

    monkeypatch.setattr(accounts, "verify_password", spy)
    outcome = lg.execute(verify_credentials(PASSWORD, "NOBODY"))
    assert outcome.valid is False
    assert len(calls) == 1
    assert calls[0].startswith("scrypt$")


def test_a_reset_password_replaces_the_old_one(lg: Ledger) -> None:
    """After a reset the new password verifies and the old one does not."""
    lg.execute(open_cti())
    lg.execute(on_cti("ResetStampingPassword", "X1", password="otra-clave-99"))
    assert lg.execute(verify_credentials("otra-clave-99", "X1")).valid is True
    assert lg.execute(verify_credentials(PASSWORD, "X1")).valid is False


def test_verify_credentials_of_a_blocked_cti_is_account_blocked(lg: Ledger) -> None:
    """A blocked account does not log in, even with the right password."""
    lg.execute(open_cti())
    lg.execute(on_cti("BlockStampingAccount", "X1"))
    rejected = rejection(lg, verify_credentials(PASSWORD, "X1"))
    assert rejected.code == "account_blocked"


# Admin profiles --------------------------------------------------------------------------------


def admin(email: str, client_id: str = CLIENT) -> dict[str, Any]:
    """AssignAdminProfile for a client."""
    fields = {"client_id": client_id, "email": email, "mobile": "5512345678"}
    return command("AssignAdminProfile", DISTRIBUTOR, **fields)


def test_a_fresh_email_becomes_the_clients_admin(lg: Ledger) -> None:
    """An address that administers nothing else is assigned."""
    lg.execute(admin("admin@cliente.mx"))
    client = lg.engine.current(CLIENT)
    assert isinstance(client, Client)
    assert client.admin_email == "admin@cliente.mx"


def test_a_distributors_login_cannot_administer_a_client(lg: Ledger) -> None:
    """The e-mail of a distributor's profile is admin_profile_not_allowed, in any case."""
    assert rejection(lg, admin("UNO@example.com")).code == "admin_profile_not_allowed"


def test_a_sub_distributors_login_cannot_administer_a_client(lg: Ledger) -> None:
    """Any distributor's login is refused, not only the client's own distributor."""
    lg.execute(register_distributor("D2", profile=distributor_profile("Dos", "dos@example.com")))
    assert rejection(lg, admin("dos@example.com")).code == "admin_profile_not_allowed"


def test_one_email_may_administer_two_clients(lg: Ledger) -> None:
    """A client login may serve several clients."""
    lg.execute(register_client())
    lg.execute(admin("admin@cliente.mx"))
    assert lg.execute(admin("admin@cliente.mx", "C2")).ok


def test_assigning_an_admin_for_another_distributors_client_is_not_authorised(lg: Ledger) -> None:
    """The actor must be the client's distributor (or its master)."""
    assert rejection(lg, {**admin("a@b.mx"), "actor": "D2"}).code == "not_authorised"
