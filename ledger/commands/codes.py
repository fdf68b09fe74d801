"""Handlers of credit codes: issue (code + NIP shown once), redeem, cancel.

The secret code never leaves this module's local variables: rejections name the ``code_id``
(the issuer's key) at most, and the code is found through its digest (``ledger.credit_codes``).
"""

from __future__ import annotations

import secrets

from ledger.aggregates.client import Client
from ledger.aggregates.common import code_sale_id
from ledger.aggregates.credit_code import (
    WRONG_NIPS_MAX,
    CreditCode,
    redeemed_ref,
    returned_ref,
)
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.stamping_account import StampingAccount
from ledger.commands.models import CancelCreditCode, IssueCreditCode, RedeemCreditCode
from ledger.commands.pricing import amount_of, network_of
from ledger.commands.sales import buyer_of, claim_sale
from ledger.credit_codes import code_digest, new_code, new_nip
from ledger.errors import RecordedRejection, Rejected
from ledger.outcome import Outcome
from ledger.passwords import PasswordCost, hash_secret, verify_password
from ledger.write.decision import Tx, handles


@handles(IssueCreditCode)
def issue_credit_code(command: IssueCreditCode, tx: Tx) -> Outcome:
    """The credits leave the issuer's inventory for the code's book; code and NIP shown once."""
    distributor = tx.get(command.distributor_id, Distributor)
    distributor.require_active(tx.today)
    if command.expires_on is not None and command.expires_on < tx.today:
        raise Rejected("invalid_command", field="expires_on", reason="in the past")
    if tx.find(command.code_id) is not None:
        raise Rejected("already_exists", account_id=command.code_id)
    distributor.require_inventory(command.unit, command.quantity)
    amount = amount_of(command.amount, tx, distributor, command.unit, command.quantity, None)
    code, nip = new_code(), new_nip()
    digest = code_digest(code)
    tx.add(
        CreditCode.issue(
            command.code_id,
            distributor_id=distributor.id,
            unit=command.unit,
            quantity=command.quantity,
            amount_centavos=amount,
            expires_on=command.expires_on,
            code_digest=digest,
            nip_hash=hash_secret(nip, cost=tx.password_cost),
            at=tx.now,
        )
    )
    # Issuing a code is a sale (DESIGN §4) of the credits set aside; its buyer is whoever
    # redeems it.
    set_aside = {"code_id": command.code_id, "unit": command.unit, "quantity": command.quantity}
    distributor.trigger(distributor.CreditsSetAside, tx.now, **set_aside)
    sale_id = code_sale_id(command.code_id)
    distributor.trigger(
        distributor.CodeSold, tx.now, sale_id=sale_id, amount_centavos=amount, **set_aside
    )
    claim_sale(tx, sale_id, distributor.id, "", code_id=command.code_id)
    # 100 random bits: a clash is practically impossible, but the key index would refuse it.
    tx.claim(f"code:{digest}", command.code_id.encode())
    return Outcome(
        type=command.type,
        sale_ids=(sale_id,),
        code=code,
        nip=nip,
        balance_after=distributor.balance(command.unit),
        details={
            "code_id": command.code_id,
            "unit": command.unit,
            "quantity": command.quantity,
            "expires_on": None if command.expires_on is None else command.expires_on.isoformat(),
        },
    )


_THROWAWAY_HASHES: dict[str, str] = {}


def _throwaway_hash(cost: PasswordCost) -> str:
    """A hash of a random NIP at ``cost``, checked when no code matches (same work, same time)."""
    if cost not in _THROWAWAY_HASHES:
        _THROWAWAY_HASHES[cost] = hash_secret(new_nip() + secrets.token_hex(4), cost=cost)
    return _THROWAWAY_HASHES[cost]


def _redemption_target(
    tx: Tx, command: RedeemCreditCode, code: CreditCode
) -> StampingAccount | Client:
    """The CTI (stamps) or wallet (points) of the issuer's network the credits go to."""
    target = tx.find(command.to_id)
    if target is None:
        raise Rejected("unknown_account", account_id=command.to_id)
    if isinstance(target, StampingAccount) and code.unit == "stamps":
        target.require_standard()
    elif not (isinstance(target, Client) and code.unit == "points"):
        raise Rejected(
            "wrong_account_kind",
            account_id=command.to_id,
            kind=type(target).__name__,
            unit=code.unit,
        )
    chain = network_of(tx, target.distributor_id)
    if code.distributor_id not in {node.id for node in chain}:
        raise Rejected("not_authorised", account_id=command.to_id, code_id=code.id)
    # Who may redeem (the client itself, its distributor, the master) is in ``auth.RULES``.
    return target


@handles(RedeemCreditCode)
def redeem_credit_code(command: RedeemCreditCode, tx: Tx) -> Outcome:
    """Code and NIP right: the credits move to the target. A wrong NIP is recorded."""
    digest = command.code_digest()
    found = tx.lookup([f"code:{digest}"]).get(f"code:{digest}")
    if found is None:
        # The same slow hash as for a real code, so timing does not tell which codes exist.
        verify_password(command.nip, _throwaway_hash(tx.password_cost))
        raise Rejected("unknown_code")
    code = tx.get(found.outcome.decode(), CreditCode)
    code.require_redeemable(tx.today)
    target = _redemption_target(tx, command, code)
    if not verify_password(command.nip, code.nip_hash):
        if code.wrong_nip(tx.now):
            _return_to_issuer(tx, code)
            raise RecordedRejection("code_locked", code_id=code.id)
        raise RecordedRejection(
            "wrong_nip", code_id=code.id, attempts_left=WRONG_NIPS_MAX - code.wrong_nips
        )
    ref = redeemed_ref(code.id)
    quantity = code.held
    code.redeem(target.id, buyer_of(target), tx.now)
    if isinstance(target, StampingAccount):
        target.credit(ref, code.id, quantity, tx.now, today=tx.today)
        balance_after = target.balance("stamps", tx.today)
    else:
        target.trigger(
            target.PointsCredited, tx.now, transfer_id=ref, from_id=code.id, quantity=quantity
        )
        balance_after = target.points
    return Outcome(
        type=command.type,
        balance_after=balance_after,
        details={"code_id": code.id, "unit": code.unit, "quantity": quantity, "to_id": target.id},
    )


def _return_to_issuer(tx: Tx, code: CreditCode) -> None:
    """The issuer's leg of a return (the code recorded ``CreditsReturned``)."""
    issuer = tx.get(code.distributor_id, Distributor)
    issuer.trigger(
        issuer.CreditsReceived,
        tx.now,
        transfer_id=returned_ref(code.id),
        from_id=code.id,
        unit=code.unit,
        quantity=code.quantity,
        reason="code_returned",
    )


@handles(CancelCreditCode)
def cancel_credit_code(command: CancelCreditCode, tx: Tx) -> Outcome:
    """The issuer cancels an active code, or closes an expired one; the credits come back."""
    code = tx.get(command.code_id, CreditCode)
    code.close(tx.today, tx.now)
    _return_to_issuer(tx, code)
    issuer = tx.get(code.distributor_id, Distributor)
    return Outcome(
        type=command.type,
        balance_after=issuer.balance(code.unit),
        details={"code_id": code.id, "state": code.state},
    )
