"""Credit codes: issue, redeem, wrong NIPs, lock, expiry, cancel (DESIGN §4 codes)."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from typing import Any

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.logging import capture_logs
from ledger.outcome import Outcome
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    command,
    network_fixture,
    ok,
    open_cti,
    rejection,
    rival_distributor,
)

# A ledger on the in-memory store: D1 holds 10,000 stamps and 3,000 points.
lg = network_fixture(points=3000)


def stored(lg: Ledger) -> int:
    """How many events are recorded."""
    return len(lg.store.stored_events())


def issue(
    code_id: str = "K1", unit: str = "stamps", quantity: int = 100, **extra: Any
) -> dict[str, Any]:
    """IssueCreditCode by D1."""
    fields = {"code_id": code_id, "distributor_id": DISTRIBUTOR, "unit": unit}
    return command(
        "IssueCreditCode", DISTRIBUTOR, **fields, quantity=quantity, amount="50.00", **extra
    )


def redeem(outcome: Outcome, to_id: str = CTI, nip: str | None = None, **extra: Any) -> dict:
    """RedeemCreditCode of an issued code, by the client."""
    assert outcome.code is not None
    assert outcome.nip is not None
    nip = outcome.nip if nip is None else nip
    return command("RedeemCreditCode", CLIENT, code=outcome.code, nip=nip, to_id=to_id, **extra)


def cancel(actor: str = DISTRIBUTOR) -> dict[str, Any]:
    """CancelCreditCode of ``K1`` (by its issuer D1 unless ``actor`` says)."""
    return command("CancelCreditCode", actor, code_id="K1")


def wrong(nip: str) -> str:
    """Another 6-digit NIP."""
    return f"{(int(nip) + 1) % 1_000_000:06d}"


def test_issuing_sets_the_credits_aside_in_the_codes_book(lg: Ledger) -> None:
    """The stamps leave D1's inventory for the code's book; code and NIP are shown once."""
    outcome = lg.execute(issue())
    assert outcome.code is not None
    assert outcome.nip is not None
    assert re.fullmatch(r"([0-9A-HJKMNP-TV-Z]{5}-){3}[0-9A-HJKMNP-TV-Z]{5}", outcome.code)
    assert re.fullmatch(r"[0-9]{6}", outcome.nip)
    assert outcome.balance_after == 9_900
    assert lg.balance(DISTRIBUTOR, "stamps") == 9_900
    assert lg.balance("K1", "stamps") == 100
    assert lg.verify().ok


def test_two_codes_differ(lg: Ledger) -> None:
    """Each code is fresh randomness."""
    first, second = lg.execute(issue("K1")), lg.execute(issue("K2"))
    assert first.code != second.code


def test_a_code_cannot_exceed_the_inventory(lg: Ledger) -> None:
    """Stamps beyond the inventory: insufficient_inventory; points: insufficient_points."""
    assert rejection(lg, issue(quantity=10_001)).code == "insufficient_inventory"
    assert rejection(lg, issue(unit="points", quantity=3_001)).code == "insufficient_points"


def test_a_code_id_is_used_once(lg: Ledger) -> None:
    """Another code under the same id is already_exists."""
    lg.execute(issue())
    assert rejection(lg, issue(quantity=5)).code == "already_exists"


def test_the_replay_of_an_issue_shows_no_secret(lg: Ledger) -> None:
    """The code and NIP are shown once: a replay answers everything else."""
    first = lg.execute(issue())
    again = lg.execute(issue())
    assert again.replayed
    assert again.code is None
    assert again.nip is None
    assert again.details == first.details
    assert lg.balance(DISTRIBUTOR, "stamps") == 9_900


def test_stamps_are_redeemed_to_a_cti(lg: Ledger) -> None:
    """Code and NIP right: the stamps go to the CTI, the code's book is empty."""
    code = lg.execute(issue())
    outcome = lg.execute(redeem(code))
    assert outcome.balance_after == 100
    assert outcome.details == {"code_id": "K1", "unit": "stamps", "quantity": 100, "to_id": CTI}
    assert lg.balance(CTI, "stamps") == 100
    assert lg.balance("K1", "stamps") == 0
    assert lg.balance(DISTRIBUTOR, "stamps") == 9_900
    assert lg.verify().ok


def test_points_are_redeemed_to_a_wallet(lg: Ledger) -> None:
    """A points code goes to a client's wallet."""
    code = lg.execute(issue(unit="points", quantity=500))
    assert lg.execute(redeem(code, to_id=CLIENT)).balance_after == 500
    assert lg.balance(CLIENT, "points") == 500
    assert lg.balance(DISTRIBUTOR, "points") == 2_500


def test_the_code_is_read_as_typed_by_a_person(lg: Ledger) -> None:
    """Lower case, spaces and no dashes still find the code."""
    code = lg.execute(issue())
    assert code.code is not None
    typed = code.code.replace("-", " ").lower()
    assert lg.execute({**redeem(code), "code": typed}).balance_after == 100


def test_the_same_redemption_again_is_a_replay(lg: Ledger) -> None:
    """Same code, NIP and target: the first outcome, nothing recorded."""
    code = lg.execute(issue())
    first = lg.execute(redeem(code))
    before = stored(lg)
    again = lg.execute(redeem(code))
    assert again.replayed
    assert again.balance_after == first.balance_after
    assert stored(lg) == before
    assert lg.balance(CTI, "stamps") == 100


def test_a_redeemed_code_cannot_go_elsewhere(lg: Ledger) -> None:
    """Another target after the redemption is code_redeemed."""
    code = lg.execute(issue())
    lg.execute(redeem(code))
    lg.execute(open_cti("C1-cti2", password="secreto-123"))
    assert rejection(lg, redeem(code, to_id="C1-cti2")).code == "code_redeemed"
    assert lg.balance("C1-cti2", "stamps") == 0


def test_a_wrong_nip_is_recorded_and_counted(lg: Ledger) -> None:
    """A wrong NIP is rejected, recorded (one event) and says how many attempts are left."""
    code = lg.execute(issue())
    assert code.nip is not None
    rejected = rejection(lg, redeem(code, nip=wrong(code.nip)), records=1)
    assert rejected.code == "wrong_nip"
    assert rejected.details == {"code_id": "K1", "attempts_left": 4}
    assert lg.balance("K1", "stamps") == 100


def test_five_wrong_nips_lock_the_code_for_good(lg: Ledger) -> None:
    """The fifth wrong NIP locks the code and returns its credits; the right NIP is too late."""
    code = lg.execute(issue())
    assert code.nip is not None
    bad = redeem(code, nip=wrong(code.nip))
    for left in (4, 3, 2, 1):
        assert rejection(lg, bad, records=1).details["attempts_left"] == left
    # The fifth: the wrong NIP, the lock, the return from the code and into the issuer.
    assert rejection(lg, bad, records=4).code == "code_locked"
    assert lg.balance("K1", "stamps") == 0
    assert lg.balance(DISTRIBUTOR, "stamps") == 10_000
    assert rejection(lg, redeem(code)).code == "code_locked"
    assert lg.balance(CTI, "stamps") == 0
    (row,) = lg.views.credit_codes(DISTRIBUTOR)
    assert row.state == "locked"
    assert lg.verify().ok


def test_a_wrong_nip_in_an_aborted_atomic_batch_still_counts(lg: Ledger) -> None:
    """Wrapping a guess in an atomic batch that fails does not make it free."""
    code = lg.execute(issue())
    assert code.nip is not None
    before = stored(lg)
    results = lg.execute_many([redeem(code, nip=wrong(code.nip))], atomic=True)
    assert [getattr(r, "code", None) for r in results] == ["wrong_nip"]
    assert stored(lg) == before + 1
    follow = rejection(lg, redeem(code, nip=wrong(code.nip)), records=1)
    assert follow.details["attempts_left"] == 3


def test_an_unknown_code_records_nothing(lg: Ledger) -> None:
    """A code that was never issued is unknown_code."""
    unknown = command(
        "RedeemCreditCode", CLIENT, code="00000-00000-00000-00000", nip="123456", to_id=CTI
    )
    assert rejection(lg, unknown).code == "unknown_code"


def test_an_expired_code_is_refused_and_its_expiry_returns_the_credits(
    lg: Ledger, clock: ManualClock
) -> None:
    """Past expires_on: code_expired (nothing recorded); the issuer closes it and gets them back."""
    code = lg.execute(issue(expires_on="2026-01-10"))
    clock.advance(timedelta(days=5))
    assert [r.state for r in lg.views.credit_codes(DISTRIBUTOR)] == ["active"]  # valid all the 10th
    clock.advance(timedelta(days=1))
    assert rejection(lg, redeem(code)).code == "code_expired"
    (row,) = lg.views.credit_codes(DISTRIBUTOR)
    assert row.state == "expired"
    closed = lg.execute(cancel())
    assert closed.details == {"code_id": "K1", "state": "expired"}
    assert lg.balance(DISTRIBUTOR, "stamps") == 10_000
    assert lg.verify().ok


def test_a_cancelled_code_returns_its_credits(lg: Ledger) -> None:
    """CancelCreditCode on an active code gives the credits back; it can no longer be redeemed."""
    code = lg.execute(issue())
    outcome = lg.execute(cancel())
    assert outcome.balance_after == 10_000
    assert rejection(lg, redeem(code)).code == "code_cancelled"
    again = rejection(lg, cancel())
    assert again.code == "code_cancelled"
    (row,) = lg.views.credit_codes(DISTRIBUTOR)
    assert row.state == "cancelled"
    assert lg.verify().ok


def test_only_the_issuer_cancels(lg: Ledger) -> None:
    """Another actor cancelling is not_authorised."""
    lg.execute(issue())
    assert rejection(lg, cancel(CLIENT)).code == "not_authorised"


def other_network(lg: Ledger) -> None:
    """D2 with client C2 (and C2-cti) under the same master."""
    ok(lg, *rival_distributor())


def test_a_code_stays_in_its_issuers_network(lg: Ledger) -> None:
    """Redeeming to another distributor's CTI is not_authorised; nothing is recorded."""
    other_network(lg)
    code = lg.execute(issue())
    refused = rejection(lg, redeem(code, to_id="C2-cti", actor="C2"))
    assert refused.code == "not_authorised"


def test_a_stamps_code_goes_to_a_cti_only(lg: Ledger) -> None:
    """Stamps to a wallet (or points to a CTI) is wrong_account_kind."""
    code = lg.execute(issue())
    assert rejection(lg, redeem(code, to_id=CLIENT)).code == "wrong_account_kind"


def test_a_stranger_cannot_redeem_for_a_client(lg: Ledger) -> None:
    """An actor that is neither the client, its distributor nor the platform: not_authorised."""
    other_network(lg)
    code = lg.execute(issue())
    assert rejection(lg, redeem(code, actor="D2")).code == "not_authorised"


def test_the_view_lists_codes_without_secrets(lg: Ledger) -> None:
    """The billing view's row: id, issuer, unit, quantity, amount, state, receptor, expiry."""
    code = lg.execute(issue(expires_on="2026-03-01"))
    lg.execute(redeem(code))
    (row,) = lg.views.credit_codes(DISTRIBUTOR)
    assert (row.code_id, row.distributor_id, row.unit, row.quantity, row.amount) == (
        "K1",
        DISTRIBUTOR,
        "stamps",
        100,
        "50.00",
    )
    assert (row.state, row.redeemed_by, str(row.expires_on)) == ("redeemed", CTI, "2026-03-01")
    assert row.consumed
    assert lg.views.credit_codes(DISTRIBUTOR, state="active") == []


def test_an_idempotency_key_reused_with_another_code_conflicts(lg: Ledger) -> None:
    """The fingerprint covers the code (by its digest): another code is idempotency_conflict."""
    first, second = lg.execute(issue("K1")), lg.execute(issue("K2"))
    lg.execute(redeem(first, idempotency_key="r-1"))
    refused = rejection(lg, redeem(second, idempotency_key="r-1"))
    assert refused.code == "idempotency_conflict"


def test_no_secret_is_logged_stored_or_detailed(lg: Ledger) -> None:
    """The code and NIP appear in no log line, stored event, key, view row or rejection."""
    with capture_logs() as logs:
        code = lg.execute(issue())
        assert code.code is not None
        assert code.nip is not None
        failures = [
            rejection(lg, redeem(code, nip=wrong(code.nip)), records=1),
            rejection(lg, redeem(code, to_id=CLIENT)),
        ]
        lg.execute(redeem(code))
        failures.append(rejection(lg, redeem(code, to_id=CLIENT)))
    secrets = {code.code, code.code.replace("-", ""), code.nip}
    assert logs
    for line in logs:
        assert not secrets & {str(v) for v in line.values()}, line
    for failure in failures:
        assert not secrets & {str(v) for v in failure.details.values()}
        assert code.code not in str(failure)
        assert code.code.replace("-", "") not in str(failure)
    for row in lg.store.stored_events():
        state = bytes(row.state).decode()
        assert code.code not in state
        assert code.code.replace("-", "") not in state
        assert f'"{code.nip}"' not in state
    for key in lg.store._keys.values():
        assert code.code.replace("-", "") not in key.key
        assert code.code not in key.outcome.decode()
        assert code.nip not in key.outcome.decode()
    row = dataclasses.asdict(lg.views.credit_codes(DISTRIBUTOR)[0])
    assert not secrets & {str(v) for v in row.values()}
