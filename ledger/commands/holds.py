"""Holds (DESIGN §4): a stamp set aside for a CFDI, then posted as its consumption or voided.

Where a hold lives: its open state (CFDI, lot, ``expires_at``) in its CTI's aggregate, so the
CTI's decisions see held stamps; its existence in the key index (``hold:<id>``, whose first
outcome names the CTI), so posting or voiding finds the CTI from the hold id alone. Closed holds
leave the CTI's state (it stays bounded); their closing commands are keyed ``hold-post:<id>`` and
``hold-void:<id>``, so the same post or void again replays its first outcome.

One CFDI is consumed at most once, whichever way: the consumption key ``cfdi:<UUID>`` is claimed
by ``ConsumeStamp`` or by posting a hold, whichever comes first, and the other is refused with
``idempotency_conflict`` (details: the key). ``ReserveStamp`` refuses a CFDI already consumed,
and ``ConsumeStamp`` a CFDI held open on the same CTI, early, with the same code; a CFDI held
on one CTI and consumed on another is caught when the hold is posted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ledger.aggregates.stamping_account import Hold, StampingAccount
from ledger.clock import local_date
from ledger.commands.auth import hold_account
from ledger.commands.models import Command, PostReservation, ReserveStamp, VoidReservation
from ledger.commands.movements import auto_top_up
from ledger.domain import STAMPS
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.write.decision import Tx, handles


def _outcome(
    command: Command, cti: StampingAccount, hold_id: str, tx: Tx, **details: object
) -> Outcome:
    """A post's or void's outcome: the available balance after it."""
    return Outcome(
        type=command.type,  # type: ignore[attr-defined]
        cti_id=cti.id,
        hold_id=hold_id,
        balance_after=cti.balance(STAMPS, tx.today, tx.now),
        details=dict(details),
    )


@handles(ReserveStamp)
def reserve_stamp(command: ReserveStamp, tx: Tx) -> Outcome:
    """Sets one stamp aside for a CFDI, from the lot a consumption would take."""
    cti = tx.get(command.cti_id, StampingAccount)
    cfdi_key = f"cfdi:{command.cfdi_uuid}"
    if tx.lookup([cfdi_key]):
        raise Rejected("idempotency_conflict", key=cfdi_key, reason="consumed")
    expires_at = tx.now + timedelta(seconds=command.expires_in_s)
    cti.reserve(
        command.hold_id, command.cfdi_uuid, command.issuer_rfc, expires_at, tx.today, tx.now
    )
    # Setting a stamp aside lowers the available balance as a consumption does: the same
    # top-up rule applies (its own transfer id: the CFDI may yet be consumed directly).
    sale_ids: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    rule = cti.auto_top_up
    if rule is not None and cti.top_up_armed and cti.balance(STAMPS, tx.today) < rule.minimum:
        sale_id = auto_top_up(tx, cti, f"auto:hold:{command.hold_id}", command.cfdi_uuid)
        if sale_id is None:
            warnings = ("auto_top_up_failed",)
        else:
            sale_ids = (sale_id,)
    return Outcome(
        type=command.type,
        cti_id=cti.id,
        hold_id=command.hold_id,
        balance_after=cti.balance(STAMPS, tx.today, tx.now),
        expires_at=expires_at.isoformat(),
        sale_ids=sale_ids,
        warnings=warnings,
    )


def _closed(tx: Tx, hold_id: str, other_key: str, reserved: Outcome) -> Rejected:
    """Why a hold no longer open cannot be posted or voided.

    When the command's own key is stored (the same post or void again), the engine replaces this
    rejection with the first outcome (same fields) or ``idempotency_conflict`` (other fields).
    """
    assert reserved.expires_at is not None
    expired = Rejected("hold_expired", hold_id=hold_id, expires_at=reserved.expires_at)
    other = tx.lookup([other_key]).get(other_key)
    if other is not None:
        # A void of a hold already past its time says so: posting that hold is still too late.
        voided_expired = Outcome.decode(other.outcome).details.get("expired") is True
        return expired if voided_expired else Rejected("hold_closed", hold_id=hold_id)
    if tx.now >= datetime.fromisoformat(reserved.expires_at):
        return expired
    return Rejected("hold_closed", hold_id=hold_id)


@handles(PostReservation)
def post_reservation(command: PostReservation, tx: Tx) -> Outcome:
    """The hold's stamp is consumed for its CFDI, under the CFDI's consumption key."""
    cti, reserved = hold_account(tx, command.hold_id)
    hold: Hold | None = cti.holds.get(command.hold_id)
    if hold is None:
        raise _closed(tx, command.hold_id, f"hold-void:{command.hold_id}", reserved)
    if hold.expires_at <= tx.now:
        raise Rejected("hold_expired", hold_id=hold.hold_id, expires_at=hold.expires_at.isoformat())
    cfdi_key = f"cfdi:{hold.cfdi_uuid}"
    if tx.lookup([cfdi_key]):
        raise Rejected("idempotency_conflict", key=cfdi_key, hold_id=hold.hold_id)
    stamped_at = command.stamped_at or tx.now
    cti.post_hold(hold, stamped_at, tx.today, tx.now)
    tx.claim(cfdi_key, hold.hold_id.encode())
    return _outcome(command, cti, hold.hold_id, tx, local_date=local_date(stamped_at).isoformat())


@handles(VoidReservation)
def void_reservation(command: VoidReservation, tx: Tx) -> Outcome:
    """The hold's stamp goes back to its lot; a hold past its time is void already."""
    cti, reserved = hold_account(tx, command.hold_id)
    hold = cti.holds.get(command.hold_id)
    if hold is None:
        rejection = _closed(tx, command.hold_id, f"hold-post:{command.hold_id}", reserved)
        if rejection.code == "hold_closed":
            raise rejection
        # It expired and its expiry was recorded: it is void, as asked.
        return _outcome(command, cti, command.hold_id, tx, expired=True)
    expired = hold.expires_at <= tx.now
    cti.void_hold(hold, tx.today, tx.now)
    return _outcome(command, cti, hold.hold_id, tx, expired=expired)
