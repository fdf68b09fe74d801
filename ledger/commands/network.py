"""Handlers of the catalogue and the distributor network."""

from __future__ import annotations

from datetime import date

from ledger.aggregates.admin_profile import AdminProfile, admin_profile_id
from ledger.aggregates.common import Package
from ledger.aggregates.distributor import MULTINIVEL, Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.commands.auth import FIRST_MASTER_KEY, get_seller, is_first_master, network_master
from ledger.commands.models import (
    ActivateDistributor,
    CancelDistributor,
    ChangeSettings,
    ContractSubscription,
    DefinePackage,
    OpenMasterAccount,
    ReactivateDistributor,
    RegisterDistributor,
    RenewDistributor,
    SuspendDistributor,
    ValidateDistributor,
)
from ledger.engine import Tx, handles
from ledger.errors import Rejected
from ledger.money import add_iva, parse_money
from ledger.outcome import Outcome
from ledger.rfc import validate_rfc


def claim_admin(tx: Tx, email: str, role: str, account_id: str) -> None:
    """Indexes ``email`` as an administrator login of ``account_id`` (after all checks)."""
    profile = tx.find(admin_profile_id(email))
    if profile is None:
        profile = AdminProfile.claim(email, tx.now)
        tx.add(profile)
    assert isinstance(profile, AdminProfile)
    profile.add(role, account_id, tx.now)


@handles(OpenMasterAccount)
def open_master_account(command: OpenMasterAccount, tx: Tx) -> Outcome:
    """Opens the platform's master account."""
    check = validate_rfc(command.rfc)
    if tx.find(command.master_id) is not None:
        raise Rejected("already_exists", account_id=command.master_id)
    if is_first_master(tx):
        # A racing first opening loses at commit on this key and is then decided again.
        tx.claim(FIRST_MASTER_KEY, command.master_id.encode())
    tx.add(MasterAccount.open(command.master_id, command.name, check.rfc, tx.now))
    return Outcome(type=command.type, warnings=check.warnings)


@handles(DefinePackage)
def define_package(command: DefinePackage, tx: Tx) -> Outcome:
    """Adds a package to a seller's catalogue, replaces one on purpose, or retires one."""
    seller = get_seller(tx, command.seller_id)
    existing = seller.packages.get(command.package_id)
    if command.retire:
        if existing is None or existing.retired:
            raise Rejected("unknown_package", package_id=command.package_id, seller_id=seller.id)
        seller.trigger(seller.PackageRetired, tx.now, package_id=command.package_id)
        return Outcome(type=command.type, details={"retired": True})
    for name in ("unit", "quantity", "price", "audience"):
        if getattr(command, name) is None:
            raise Rejected("invalid_command", field=name, reason="required")
    assert command.unit is not None
    assert command.quantity is not None
    assert command.price is not None
    assert command.audience is not None
    if isinstance(seller, MasterAccount) and command.audience != "distributor":
        raise Rejected(
            "invalid_command", field="audience", reason="the master sells to distributors"
        )
    if existing is not None and not command.replaces:
        raise Rejected("already_exists", package_id=command.package_id, seller_id=seller.id)
    package = Package(
        package_id=command.package_id,
        unit=command.unit,
        quantity=command.quantity,
        price_centavos=parse_money(command.price, field="price"),
        audience=command.audience,
        validity_days=command.validity_days,
        services=command.services,
    )
    seller.trigger(seller.PackageDefined, tx.now, package=package)
    return Outcome(type=command.type)


@handles(RegisterDistributor)
def register_distributor(command: RegisterDistributor, tx: Tx) -> Outcome:
    """Registers an unvalidated distributor; a distributor parent needs Multinivel."""
    parent = get_seller(tx, command.parent_id)
    if isinstance(parent, Distributor):
        parent.require_active(tx.today)
        if not parent.has_subscription(MULTINIVEL, tx.today):
            raise Rejected("multinivel_required", distributor_id=parent.id)
    if tx.find(command.distributor_id) is not None:
        raise Rejected("already_exists", account_id=command.distributor_id)
    profile = command.profile.model_dump(mode="json", exclude_none=True)
    distributor = Distributor.register(
        command.distributor_id, parent.id, profile, tx.now, master_id=network_master(tx, parent)
    )
    tx.add(distributor)
    claim_admin(tx, command.profile.email, "distributor", distributor.id)
    return Outcome(type=command.type, warnings=command.profile.rfc_warnings())


def _move(
    command: ValidateDistributor
    | ActivateDistributor
    | SuspendDistributor
    | ReactivateDistributor
    | RenewDistributor
    | CancelDistributor,
    tx: Tx,
    expires_on: date | None = None,
) -> Outcome:
    distributor = tx.get(command.distributor_id, Distributor)
    distributor.move(command.action, tx.today, tx.now, expires_on)
    return Outcome(type=command.type, details={"status": distributor.status_on(tx.today)})


@handles(ValidateDistributor)
def validate_distributor(command: ValidateDistributor, tx: Tx) -> Outcome:
    """unvalidated → unactivated."""
    return _move(command, tx)


@handles(ActivateDistributor)
def activate_distributor(command: ActivateDistributor, tx: Tx) -> Outcome:
    """unactivated → active until ``expires_on``."""
    return _move(command, tx, command.expires_on)


@handles(SuspendDistributor)
def suspend_distributor(command: SuspendDistributor, tx: Tx) -> Outcome:
    """active → suspended."""
    return _move(command, tx)


@handles(ReactivateDistributor)
def reactivate_distributor(command: ReactivateDistributor, tx: Tx) -> Outcome:
    """suspended → active."""
    return _move(command, tx)


@handles(RenewDistributor)
def renew_distributor(command: RenewDistributor, tx: Tx) -> Outcome:
    """active or expired → active until a later ``expires_on``."""
    return _move(command, tx, command.expires_on)


@handles(CancelDistributor)
def cancel_distributor(command: CancelDistributor, tx: Tx) -> Outcome:
    """expired or suspended → cancelled (purged 30 days later)."""
    return _move(command, tx)


def whole_months_between(start: date, end: date) -> int:
    """Whole calendar months from ``start`` until ``end`` (0 if ``end`` is not later)."""
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if end.day < start.day:
        months -= 1
    return max(months, 0)


@handles(ContractSubscription)
def contract_subscription(command: ContractSubscription, tx: Tx) -> Outcome:
    """Multinivel or an MKL until the distributor's expiry, charged pro rata plus IVA."""
    distributor = tx.get(command.distributor_id, Distributor)
    distributor.require_active(tx.today)
    assert distributor.expires_on is not None  # active implies an expiry date
    months = max(whole_months_between(tx.today, distributor.expires_on), 1)
    base = parse_money(command.annual_price, field="annual_price") * months // 12
    amount = add_iva(base)
    sale_id = f"{distributor.id}:sub:{distributor.version + 1}"
    distributor.trigger(
        distributor.SubscriptionContracted,
        tx.now,
        product=command.product,
        expires_on=distributor.expires_on,
        seller_id=distributor.parent_id,
        sale_id=sale_id,
        amount_centavos=amount,
    )
    tx.claim(f"sale:{sale_id}", distributor.parent_id.encode())
    return Outcome(type=command.type, sale_ids=(sale_id,), details={"months": months})


@handles(ChangeSettings)
def change_settings(command: ChangeSettings, tx: Tx) -> Outcome:
    """Changes a seller's settings (only the fields given); the master's are network defaults."""
    seller = get_seller(tx, command.seller_id)
    changes: dict[str, object] = {}
    if command.bulk_stamp_price is not None:
        changes["bulk_stamp_price_centavos"] = parse_money(
            command.bulk_stamp_price, field="bulk_stamp_price"
        )
    if command.allow_pcc_stamp_purchase is not None:
        changes["allow_pcc_stamp_purchase"] = command.allow_pcc_stamp_purchase
    if command.allow_pcc_point_purchase is not None:
        changes["allow_pcc_point_purchase"] = command.allow_pcc_point_purchase
    if command.unlimited_cti_fee_points is not None:
        changes["unlimited_cti_fee_points"] = command.unlimited_cti_fee_points
    if not changes:
        raise Rejected("invalid_command", reason="no setting given")
    seller.trigger(seller.SettingsChanged, tx.now, changes=changes)
    return Outcome(type=command.type)
