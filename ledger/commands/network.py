"""Handlers of the catalogue and the distributor network."""

from __future__ import annotations

from datetime import date

import msgspec

from ledger.aggregates.admin_profile import AdminProfile, admin_profile_id
from ledger.aggregates.client import Client
from ledger.aggregates.common import (
    MKL,
    MULTINIVEL,
    Package,
    SubscriptionProduct,
    product_key,
)
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.commands.auth import (
    FIRST_MASTER_KEY,
    get_seller,
    is_first_master,
    network_master,
)
from ledger.commands.models import (
    ActivateDistributor,
    CancelDistributor,
    ChangeSettings,
    ContractSubscription,
    ConvertClientToDistributor,
    DefinePackage,
    DefineSubscriptionProduct,
    OpenMasterAccount,
    PurgeDistributor,
    ReactivateDistributor,
    RegisterDistributor,
    RenewDistributor,
    SuspendDistributor,
    ValidateDistributor,
)
from ledger.commands.sales import claim_sale
from ledger.domain import STAMPS
from ledger.errors import Rejected
from ledger.money import format_money, parse_money, subscription_charge
from ledger.outcome import Outcome
from ledger.rfc import validate_rfc
from ledger.write.decision import Tx, handles

NETWORK_DEPTH_MAX = 100
"""Bound on the levels between a distributor and its master account."""


def require_not_client_admin(tx: Tx, email: str, account_id: str, allowed: str = "") -> None:
    """``admin_profile_not_allowed`` if ``email`` administers a client (other than ``allowed``).

    The platform's and distributors' logins and clients' admin logins are kept apart both ways.
    """
    index = tx.find(admin_profile_id(email))
    if isinstance(index, AdminProfile) and [c for c in index.clients if c != allowed]:
        raise Rejected("admin_profile_not_allowed", account_id=account_id, role="client")


def _digits(phone: object) -> str:
    return "".join(c for c in str(phone or "") if c.isdigit())


def require_not_parents_login(
    parent: MasterAccount | Distributor, profile: dict[str, object], account_id: str
) -> None:
    """``admin_profile_not_allowed`` when a sub-distributor would log in with its parent's
    e-mail or phone (the manual: the new distributor's data must not be those of the
    distributor that registers it)."""
    if isinstance(parent, Distributor):
        email, phone = parent.profile.get("email"), parent.profile.get("phone")
    else:
        email, phone = parent.admin_email, None
    same_email = email is not None and (
        str(profile.get("email", "")).strip().lower() == str(email).strip().lower()
    )
    same_phone = bool(_digits(phone)) and _digits(profile.get("phone")) == _digits(phone)
    if same_email or same_phone:
        raise Rejected(
            "admin_profile_not_allowed",
            account_id=account_id,
            parent_id=parent.id,
            field="profile.email" if same_email else "profile.phone",
            reason="the parent's own login",
        )


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
    email = None if command.email is None else command.email.strip().lower()
    if email is not None:
        require_not_client_admin(tx, email, command.master_id)
    if is_first_master(tx):
        # A racing first opening loses at commit on this key and is then decided again.
        tx.claim(FIRST_MASTER_KEY, command.master_id.encode())
    tx.add(MasterAccount.open(command.master_id, command.name, check.rfc, tx.now, email))
    if email is not None:
        claim_admin(tx, email, "master", command.master_id)
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
    require_not_client_admin(tx, command.profile.email, command.distributor_id)
    profile = command.profile.model_dump(mode="json", exclude_none=True)
    require_not_parents_login(parent, profile, command.distributor_id)
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
    """active or expired → active until a later ``expires_on``; every subscription follows.

    Each subscription is charged from the old expiry (or today, if that passed) until the new
    one, by whole months plus IVA at the catalogue's current price: a one-year renewal charges
    each subscription's full year. Every charge is a billable sale of the master account.
    """
    distributor = tx.get(command.distributor_id, Distributor)
    # Priced before the first event, so a product missing from the catalogue rejects cleanly.
    charges: list[tuple[SubscriptionProduct, int, int]] = []
    master = master_of(tx, distributor) if distributor.subscriptions else None
    start = max(distributor.expires_on or tx.today, tx.today)
    for key in sorted(distributor.subscriptions):
        assert master is not None
        product = master.subscription_product(key)
        months, amount = subscription_charge(
            product.annual_price_centavos, start, command.expires_on
        )
        charges.append((product, months, amount))
    outcome = _move(command, tx, command.expires_on)
    if master is None:  # no subscription to renew
        return outcome
    sale_ids = tuple(
        _charge_subscription(
            tx, distributor, distributor.SubscriptionRenewed, product, months, amount, master
        )
        for product, months, amount in charges
    )
    return msgspec.structs.replace(outcome, sale_ids=sale_ids)


@handles(CancelDistributor)
def cancel_distributor(command: CancelDistributor, tx: Tx) -> Outcome:
    """active, expired or suspended → cancelled (it may be purged 30 days later)."""
    return _move(command, tx)


@handles(PurgeDistributor)
def purge_distributor(command: PurgeDistributor, tx: Tx) -> Outcome:
    """cancelled 30 days ago or more → purged: the read side drops its clients' personal data."""
    distributor = tx.get(command.distributor_id, Distributor)
    distributor.purge(tx.today, tx.now)
    return Outcome(type=command.type, details={"status": distributor.status})


def _charge_subscription(
    tx: Tx,
    distributor: Distributor,
    event: type[Distributor.SubscriptionContracted],
    product: SubscriptionProduct,
    months: int,
    amount: int,
    master: MasterAccount,
) -> str:
    """Records a subscription's charge (contracted or renewed) until the distributor's expiry
    as a billable sale of the master account; its sale id."""
    assert distributor.expires_on is not None  # active (or just renewed) implies an expiry
    sale_id = f"{distributor.id}:sub:{distributor.version + 1}"
    distributor.trigger(
        event,
        tx.now,
        product=product.product,
        kind=product.kind,
        months=months,
        expires_on=distributor.expires_on,
        seller_id=master.id,
        sale_id=sale_id,
        amount_centavos=amount,
    )
    claim_sale(tx, sale_id, master.id, distributor.id)
    return sale_id


def master_of(tx: Tx, distributor: Distributor) -> MasterAccount:
    """The master account at the root of a distributor's network."""
    return tx.get(network_master(tx, distributor), MasterAccount)


@handles(DefineSubscriptionProduct)
def define_subscription_product(command: DefineSubscriptionProduct, tx: Tx) -> Outcome:
    """The master account lists (or reprices) a yearly subscription."""
    seller = get_seller(tx, command.seller_id)
    if not isinstance(seller, MasterAccount):
        raise Rejected("not_authorised", account_id=seller.id, reason="only a master account")
    key = product_key(command.product)
    # The kind shows in the name, so a distributor's subscriptions say what they are: one
    # "Multinivel", and "MKL <software>" per software product its clients get licences of.
    if (command.kind == MULTINIVEL) != (key == MULTINIVEL):
        raise Rejected(
            "invalid_command", field="product", reason='kind multinivel is the product "Multinivel"'
        )
    if command.kind == MKL and (not key.startswith(f"{MKL} ") or key == f"{MKL} "):
        raise Rejected(
            "invalid_command", field="product", reason='an MKL is named "MKL <software>"'
        )
    if command.kind == MULTINIVEL and command.licence_points:
        raise Rejected("invalid_command", field="licence_points", reason="only an MKL has licences")
    product = SubscriptionProduct(
        product=" ".join(command.product.split()),
        kind=command.kind,
        annual_price_centavos=parse_money(command.annual_price, field="annual_price"),
        licence_points=command.licence_points,
    )
    seller.trigger(seller.SubscriptionProductDefined, tx.now, product=product)
    return Outcome(type=command.type)


@handles(ContractSubscription)
def contract_subscription(command: ContractSubscription, tx: Tx) -> Outcome:
    """A catalogue subscription until the distributor's expiry, charged pro rata plus IVA."""
    distributor = tx.get(command.distributor_id, Distributor)
    distributor.require_active(tx.today)
    assert distributor.expires_on is not None  # active implies an expiry date
    master = master_of(tx, distributor)
    product = master.subscription_product(command.product)
    if distributor.has_subscription(product.product, tx.today):
        raise Rejected(
            "already_exists",
            product=product.product,
            expires_on=distributor.subscriptions[product_key(product.product)].isoformat(),
        )
    months, amount = subscription_charge(
        product.annual_price_centavos, tx.today, distributor.expires_on
    )
    sale_id = _charge_subscription(
        tx, distributor, distributor.SubscriptionContracted, product, months, amount, master
    )
    return Outcome(
        type=command.type,
        sale_ids=(sale_id,),
        details={
            "months": months,
            "amount": format_money(amount),
            "expires_on": distributor.expires_on.isoformat(),
        },
    )


@handles(ConvertClientToDistributor)
def convert_client_to_distributor(command: ConvertClientToDistributor, tx: Tx) -> Outcome:
    """The client's profile becomes a new, unvalidated sub-distributor of its distributor.

    The client stays (with its CTIs and history) and points to the new distributor; the new
    distributor points back to it (``converted_from``).
    """
    client = tx.get(command.client_id, Client)
    parent = tx.get(client.distributor_id, Distributor)
    parent.require_active(tx.today)
    if not parent.has_subscription(MULTINIVEL, tx.today):
        raise Rejected("multinivel_required", distributor_id=parent.id)
    if client.converted_to is not None:
        raise Rejected("invalid_transition", client_id=client.id, converted_to=client.converted_to)
    if tx.find(command.distributor_id) is not None:
        raise Rejected("already_exists", account_id=command.distributor_id)
    email = str(client.profile["email"])
    require_not_client_admin(tx, email, command.distributor_id, allowed=client.id)
    require_not_parents_login(parent, client.profile, command.distributor_id)
    # A distributor's profile has every field a client's has (régimen and uso optional).
    distributor = Distributor.register(
        command.distributor_id,
        parent.id,
        dict(client.profile),
        tx.now,
        master_id=network_master(tx, parent),
        converted_from=client.id,
    )
    tx.add(distributor)
    client.trigger(Client.ConvertedToDistributor, tx.now, distributor_id=distributor.id)
    claim_admin(tx, email, "distributor", distributor.id)
    return Outcome(type=command.type, details={"distributor_id": distributor.id})


def _require_client_stamps_package(seller: Distributor) -> None:
    """The manual: selling stamps through the client's panel needs a package defined (what the
    client orders), bought for the order when the inventory is short."""
    if not any(
        p.audience == "client" and p.unit == STAMPS and not p.retired
        for p in seller.packages.values()
    ):
        raise Rejected(
            "invalid_command",
            field="allow_pcc_stamp_purchase",
            reason="define a client package of stamps first",
            seller_id=seller.id,
        )


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
        if command.allow_pcc_stamp_purchase and isinstance(seller, Distributor):
            _require_client_stamps_package(seller)
        changes["allow_pcc_stamp_purchase"] = command.allow_pcc_stamp_purchase
    if command.allow_pcc_point_purchase is not None:
        changes["allow_pcc_point_purchase"] = command.allow_pcc_point_purchase
    if command.unlimited_cti_fee_points is not None:
        changes["unlimited_cti_fee_points"] = command.unlimited_cti_fee_points
    if not changes:
        raise Rejected("invalid_command", reason="no setting given")
    seller.trigger(seller.SettingsChanged, tx.now, changes=changes)
    return Outcome(type=command.type)
