"""Handlers of clients and stamping accounts."""

from __future__ import annotations

import secrets

from pydantic import ValidationError

from ledger.aggregates.admin_profile import AdminProfile, admin_profile_id
from ledger.aggregates.client import Client
from ledger.aggregates.common import add_one_year
from ledger.aggregates.distributor import PURGED, Distributor
from ledger.aggregates.stamping_account import STANDARD, UNLIMITED, AutoTopUp, StampingAccount
from ledger.commands.auth import network_master
from ledger.commands.models import (
    AssignAdminProfile,
    BlockStampingAccount,
    ConfigureAutoTopUp,
    DisableAutoTopUp,
    OpenStampingAccount,
    ReactivateStampingAccount,
    RegisterClient,
    RenewUnlimitedAccount,
    ResetStampingPassword,
    TagClient,
    UpdateClientProfile,
    VerifyStampingCredentials,
)
from ledger.commands.network import claim_admin
from ledger.commands.pricing import client_of, listed_amount, setting
from ledger.commands.profiles import ClientProfile, profile_error_to_rejection
from ledger.domain import STAMPS
from ledger.errors import Rejected
from ledger.money import parse_money
from ledger.outcome import Outcome
from ledger.passwords import PasswordCost, generate_password, hash_password, verify_password
from ledger.rfc import validate_rfc
from ledger.write.decision import Tx, handles


@handles(RegisterClient)
def register_client(command: RegisterClient, tx: Tx) -> Outcome:
    """The client and its default standard CTI, atomically."""
    distributor = tx.get(command.distributor_id, Distributor)
    distributor.require_active(tx.today)
    cti_id = command.default_cti_id()
    for new_id in (command.client_id, cti_id):
        if tx.find(new_id) is not None:
            raise Rejected("already_exists", account_id=new_id)
    profile = command.profile.model_dump(mode="json", exclude_none=True)
    nic = command.nic or command.client_id
    master_id = network_master(tx, distributor)
    # Ready to stamp (the manual: "vinculada y lista para usar"): a password the caller gave,
    # else a generated one, shown once in this outcome and never kept in clear.
    generated = generate_password() if command.cti_password is None else None
    password = command.cti_password or generated
    assert password is not None
    password_hash = hash_password(password, cost=tx.password_cost)
    tx.add(
        Client.register(
            command.client_id, distributor.id, nic, profile, tx.now, cti_id, master_id=master_id
        )
    )
    tx.add(
        StampingAccount.open(
            cti_id,
            client_id=command.client_id,
            distributor_id=distributor.id,
            master_id=master_id,
            kind=STANDARD,
            at=tx.now,
            password_hash=password_hash,
        )
    )
    return Outcome(
        type=command.type,
        cti_id=cti_id,
        cti_password=generated,
        warnings=command.profile.rfc_warnings(),
    )


def require_distributor_not_purged(tx: Tx, client: Client) -> None:
    """``distributor_not_active`` for a client of a purged distributor.

    The purge blanked its clients' personal data in the read side; new personal data of them
    must not come back.
    """
    distributor = tx.get(client.distributor_id, Distributor)
    if distributor.status == PURGED:
        raise Rejected("distributor_not_active", distributor_id=distributor.id, status=PURGED)


@handles(UpdateClientProfile)
def update_client_profile(command: UpdateClientProfile, tx: Tx) -> Outcome:
    """Changes the profile fields the command names; the rest stay as they are."""
    client = tx.get(command.client_id, Client)
    require_distributor_not_purged(tx, client)
    change = command.profile
    if not change.named():
        raise Rejected("invalid_command", field="profile", reason="no field given")
    try:
        # The whole result is checked: a new RFC against the régimen kept, and so on.
        merged = ClientProfile.model_validate(change.apply_to(client.profile))
    except ValidationError as exc:
        raise profile_error_to_rejection(exc, prefix=f"{command.type}.profile") from None
    profile = merged.model_dump(mode="json", exclude_none=True)
    client.trigger(client.ProfileChanged, tx.now, profile=profile, changed=change.named())
    warnings = merged.rfc_warnings() if "rfc" in change.named() else ()
    return Outcome(type=command.type, warnings=warnings)


@handles(TagClient)
def tag_client(command: TagClient, tx: Tx) -> Outcome:
    """Sets favourite, dropped (baja) and colour tags."""
    client = tx.get(command.client_id, Client)
    if command.favourite is None and command.dropped is None and command.colour is None:
        raise Rejected("invalid_command", reason="no tag given")
    client.trigger(
        client.Tagged,
        tx.now,
        favourite=command.favourite,
        dropped=command.dropped,
        colour=command.colour,
    )
    return Outcome(type=command.type)


@handles(AssignAdminProfile)
def assign_admin_profile(command: AssignAdminProfile, tx: Tx) -> Outcome:
    """Sets a client's admin login; refused for a login of a master account or distributor."""
    client = tx.get(command.client_id, Client)
    require_distributor_not_purged(tx, client)
    index = tx.find(admin_profile_id(command.email))
    if isinstance(index, AdminProfile) and index.administers_platform_or_distributor():
        raise Rejected("admin_profile_not_allowed", client_id=client.id)
    client.trigger(
        client.AdminProfileAssigned, tx.now, email=command.email.lower(), mobile=command.mobile
    )
    claim_admin(tx, command.email, "client", client.id)
    return Outcome(type=command.type)


def _unlimited_fee(tx: Tx, client: Client) -> int:
    """The yearly fee in points: the distributor's setting, else the master's, else 1,500."""
    distributor = tx.get(client.distributor_id, Distributor)
    return int(setting(tx, distributor, "unlimited_cti_fee_points"))


@handles(OpenStampingAccount)
def open_stamping_account(command: OpenStampingAccount, tx: Tx) -> Outcome:
    """A new CTI; an unlimited one is paid a year ahead from the client's points."""
    client = tx.get(command.client_id, Client)
    rfc_lock = validate_rfc(command.rfc_lock).rfc if command.rfc_lock is not None else None
    if tx.find(command.cti_id) is not None:
        raise Rejected("already_exists", account_id=command.cti_id)
    valid_until = None
    if command.kind == UNLIMITED:
        fee = _unlimited_fee(tx, client)
        if client.points < fee:
            raise Rejected(
                "insufficient_points", available=client.points, requested=fee, holder_id=client.id
            )
        valid_until = add_one_year(tx.today)
    generated = generate_password() if command.password is None else None
    password = command.password or generated
    assert password is not None
    password_hash = hash_password(password, cost=tx.password_cost)
    if command.kind == UNLIMITED:
        client.spend_points(f"unlimited.{command.cti_id}.1", "unlimited-cti", fee, tx.now)
    tx.add(
        StampingAccount.open(
            command.cti_id,
            client_id=client.id,
            distributor_id=client.distributor_id,
            master_id=network_master(tx, client),
            kind=command.kind,
            at=tx.now,
            password_hash=password_hash,
            rfc_lock=rfc_lock,
            valid_until=valid_until,
        )
    )
    return Outcome(type=command.type, cti_id=command.cti_id, cti_password=generated)


@handles(BlockStampingAccount)
def block_stamping_account(command: BlockStampingAccount, tx: Tx) -> Outcome:
    """An active CTI stops stamping."""
    return _set_active(command, tx, active=False)


@handles(ReactivateStampingAccount)
def reactivate_stamping_account(command: ReactivateStampingAccount, tx: Tx) -> Outcome:
    """A blocked CTI stamps again."""
    return _set_active(command, tx, active=True)


def _set_active(
    command: BlockStampingAccount | ReactivateStampingAccount, tx: Tx, *, active: bool
) -> Outcome:
    """Blocks or reactivates a CTI; ``invalid_transition`` naming its status if it is so already."""
    cti = tx.get(command.cti_id, StampingAccount)
    if cti.active == active:
        raise Rejected(
            "invalid_transition", cti_id=cti.id, status="active" if active else "blocked"
        )
    cti.trigger(cti.Reactivated if active else cti.Blocked, tx.now)
    return Outcome(type=command.type)


@handles(ResetStampingPassword)
def reset_stamping_password(command: ResetStampingPassword, tx: Tx) -> Outcome:
    """A new password; only its slow salted hash is recorded."""
    cti = tx.get(command.cti_id, StampingAccount)
    password_hash = hash_password(command.password, cost=tx.password_cost)
    cti.trigger(cti.PasswordReset, tx.now, password_hash=password_hash)
    return Outcome(type=command.type)


_THROWAWAY_HASHES: dict[str, str] = {}


def _throwaway_hash(cost: PasswordCost) -> str:
    """A hash of a random password at ``cost``, checked when no account matches."""
    if cost not in _THROWAWAY_HASHES:
        _THROWAWAY_HASHES[cost] = hash_password(secrets.token_urlsafe(16), cost=cost)
    return _THROWAWAY_HASHES[cost]


@handles(VerifyStampingCredentials)
def verify_stamping_credentials(command: VerifyStampingCredentials, tx: Tx) -> Outcome:
    """Checks a password in constant time; a wrong one is recorded and counts towards a lock.

    Every path costs one slow hash, so the time taken does not tell an unknown id, a locked
    account and a wrong password apart. An unknown id (or a CTI without a password) answers
    ``valid: false`` like a wrong password but records nothing: there is no account to lock.
    """
    # Caught up with the store: a lock another process recorded must hold here, even if this
    # process cached the account before it (a valid answer records nothing to conflict on).
    cti = tx.find_current(command.cti_id)
    if not isinstance(cti, StampingAccount) or cti.password_hash is None:
        verify_password(command.password, _throwaway_hash(tx.password_cost))
        return Outcome(type=command.type, valid=False)
    locked_until = cti.credentials_locked_until(tx.now)
    if locked_until is not None:
        # The same hash as an unlocked check, its answer unused; nothing is recorded, so
        # guessing on a locked account cannot grow the log.
        verify_password(command.password, cti.password_hash)
        raise Rejected("credentials_locked", cti_id=cti.id, locked_until=locked_until.isoformat())
    valid = verify_password(command.password, cti.password_hash)
    if valid and not cti.active:
        raise Rejected("account_blocked", cti_id=cti.id)
    cti.record_credentials_check(valid, tx.now)
    return Outcome(type=command.type, valid=valid)


@handles(RenewUnlimitedAccount)
def renew_unlimited_account(command: RenewUnlimitedAccount, tx: Tx) -> Outcome:
    """Another year of an unlimited CTI, paid from the client's points."""
    cti = tx.get(command.cti_id, StampingAccount)
    if cti.kind != UNLIMITED:
        raise Rejected("wrong_account_kind", cti_id=cti.id, kind=cti.kind)
    client = tx.get(cti.client_id, Client)
    fee = _unlimited_fee(tx, client)
    start = max(cti.valid_until or tx.today, tx.today)
    valid_until = add_one_year(start)
    client.spend_points(f"unlimited.{cti.id}.{cti.version + 1}", "unlimited-cti", fee, tx.now)
    cti.trigger(cti.UnlimitedRenewed, tx.now, valid_until=valid_until, points=fee)
    return Outcome(type=command.type, details={"valid_until": valid_until.isoformat()})


@handles(ConfigureAutoTopUp)
def configure_auto_top_up(command: ConfigureAutoTopUp, tx: Tx) -> Outcome:
    """Automatic top-up for a standard CTI."""
    cti = tx.get(command.cti_id, StampingAccount)
    cti.require_standard()
    if command.amount is None:
        # Priced by the list each time it fires: a list must give a price now.
        distributor = tx.get(cti.distributor_id, Distributor)
        listed_amount(tx, distributor, STAMPS, command.credit, client_of(tx, cti))
    rule = AutoTopUp(
        minimum=command.minimum,
        credit=command.credit,
        amount_centavos=0 if command.amount is None else parse_money(command.amount),
        priced_by_list=command.amount is None,
    )
    cti.trigger(cti.AutoTopUpConfigured, tx.now, rule=rule)
    return Outcome(type=command.type)


@handles(DisableAutoTopUp)
def disable_auto_top_up(command: DisableAutoTopUp, tx: Tx) -> Outcome:
    """Turns automatic top-up off."""
    cti = tx.get(command.cti_id, StampingAccount)
    if cti.auto_top_up is None:
        raise Rejected("invalid_transition", cti_id=cti.id, status="auto_top_up_off")
    cti.trigger(cti.AutoTopUpDisabled, tx.now)
    return Outcome(type=command.type)
