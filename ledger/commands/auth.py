"""Who may act (DESIGN §4a): one rule per command type, checked before its handler runs.

Fail closed. Every command carries ``actor`` (the model requires it; only the first
``OpenMasterAccount`` of a ledger may leave it out). ``RULES`` names, for each command type, the
account the command acts on (by field) and who besides the master account of that account's
network may act on it. A command type without a rule is refused (``not_authorised``) and a test
fails. The check compares ids the account already holds (``master_id``, ``parent_id``,
``distributor_id``, ``client_id``): it loads nothing but the account the handler loads anyway,
except for accounts recorded before ``master_id`` existed, whose network is found once through
their parents and remembered by the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.aggregates.client import Client
from ledger.aggregates.credit_code import CreditCode
from ledger.aggregates.distributor import CANCELLED, PURGED, Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.portal_user import PortalUser
from ledger.aggregates.stamping_account import StampingAccount
from ledger.commands.models import (
    ActivateDistributor,
    AddPortalUser,
    AssignAdminProfile,
    AssignPackage,
    BlockStampingAccount,
    BuyPackage,
    BuyUserSeat,
    CancelCreditCode,
    CancelDistributor,
    ChangePortalUser,
    ChangeSettings,
    ClientBuyPackage,
    Command,
    ConfigureAutoTopUp,
    ConsumeStamp,
    ContractSubscription,
    ConvertClientToDistributor,
    DeactivatePortalUser,
    DefinePackage,
    DefineSubscriptionProduct,
    DeletePortalUser,
    DisableAutoTopUp,
    GenerateLicence,
    IssueCreditCode,
    MassAutoTopUp,
    MassTransfer,
    OpenMasterAccount,
    OpenStampingAccount,
    PostReservation,
    PurgeDistributor,
    ReactivateDistributor,
    ReactivateStampingAccount,
    ReclaimStamps,
    RedeemCreditCode,
    RegisterClient,
    RegisterDistributor,
    RegisterInvoice,
    RenewDistributor,
    RenewUnlimitedAccount,
    RenewUserSeat,
    ReserveStamp,
    ResetStampingPassword,
    SpendPoints,
    SuspendDistributor,
    TagClient,
    TransferPoints,
    TransferStamps,
    UpdateClientProfile,
    ValidateDistributor,
    VerifyStampingCredentials,
    VoidReservation,
)
from ledger.domain import Aggregate
from ledger.errors import Rejected
from ledger.outcome import Outcome

if TYPE_CHECKING:
    from ledger.write.decision import Tx

Seller = MasterAccount | Distributor
Account = type[Aggregate] | tuple[type[Aggregate], ...]

CTI = StampingAccount
SELLER = (MasterAccount, Distributor)
ANY_ACCOUNT = Aggregate
"""The handler checks the kind (a redemption goes to a CTI or a client's wallet)."""

# Who, besides the master account of the network, may act on the account a command names.
ITSELF = "the account itself"
PARENT = "the account's parent"
DISTRIBUTOR = "the client's distributor"
CLIENT = "the client itself"
NOBODY_ELSE = "the master alone"

FIRST_MASTER_KEY = "ledger:first-master"
"""Claimed by the first ``OpenMasterAccount`` of a ledger: the one that needs no actor."""
NETWORK_DEPTH_MAX = 1_000
"""Bound on the parents walked to find the network of an account recorded without it."""


Locate = Callable[[Any, "Tx"], Aggregate | None]


@dataclass(frozen=True, slots=True)
class Rule:
    """The account a command acts on (``field`` names its id, ``kind`` its class) and who acts.

    ``locate`` finds the account when the command names it only through something else (a hold
    names its CTI through the key index).
    """

    field: str
    kind: Account
    who: tuple[str, ...]
    locate: Locate | None = None


def rule(field: str, kind: Account, *who: str, locate: Locate | None = None) -> Rule:
    """A rule: the master of the account's network, and ``who``, may act on it."""
    return Rule(field, kind, who, locate)


def hold_account(tx: Tx, hold_id: str) -> tuple[StampingAccount, Outcome]:
    """The CTI of a hold and the hold's first outcome (its reserve's), or ``unknown_hold``.

    PostReservation and VoidReservation name no account: this is how who may act on a hold is
    decided (the hold's CTI), in the handler or in a rule table.
    """
    key = f"hold:{hold_id}"
    found = tx.lookup([key]).get(key)
    if found is None:
        raise Rejected("unknown_hold", hold_id=hold_id)
    reserved = Outcome.decode(found.outcome)
    assert reserved.cti_id is not None, key
    return tx.get(reserved.cti_id, StampingAccount), reserved


def _hold_cti(command: Any, tx: Tx) -> Aggregate | None:
    """The CTI a hold was reserved on (``unknown_hold`` if there is no such hold)."""
    cti, _ = hold_account(tx, command.hold_id)
    return cti


def _seat_client(command: Any, tx: Tx) -> Aggregate | None:
    """The client a seat was sold to (``unknown_account`` if there is no such seat)."""
    return seat_client(tx, command.seat_id)


def seat_client(tx: Tx, seat_id: str) -> Client | None:
    """The client whose seat ``seat_id`` is, found through the key of the seat's purchase."""
    found = tx.lookup([f"seat:{seat_id}"]).get(f"seat:{seat_id}")
    if found is None:
        return None
    bought = Outcome.decode(found.outcome)
    # The purchase's sale id is ``<client_id>:seat:...``; caller ids never hold ":".
    client_id = bought.sale_ids[0].split(":seat:", 1)[0] if bought.sale_ids else ""
    client = tx.find(client_id) if client_id else None
    return client if isinstance(client, Client) else None


RULES: dict[type[Command], Rule] = {
    # A master account alone: the stamping service.
    ConsumeStamp: rule("cti_id", CTI, NOBODY_ELSE),
    VerifyStampingCredentials: rule("cti_id", CTI, NOBODY_ELSE),
    ReserveStamp: rule("cti_id", CTI, NOBODY_ELSE),
    PostReservation: rule("hold_id", CTI, NOBODY_ELSE, locate=_hold_cti),
    VoidReservation: rule("hold_id", CTI, NOBODY_ELSE, locate=_hold_cti),
    # A master account (or, for itself, a distributor): its own catalogue and settings.
    DefinePackage: rule("seller_id", SELLER, ITSELF),
    ChangeSettings: rule("seller_id", SELLER, ITSELF),
    # A parent: registering its sub-distributors and every status move of them.
    RegisterDistributor: rule("parent_id", SELLER, ITSELF),
    ValidateDistributor: rule("distributor_id", Distributor, PARENT),
    ActivateDistributor: rule("distributor_id", Distributor, PARENT),
    SuspendDistributor: rule("distributor_id", Distributor, PARENT),
    ReactivateDistributor: rule("distributor_id", Distributor, PARENT),
    RenewDistributor: rule("distributor_id", Distributor, PARENT),
    CancelDistributor: rule("distributor_id", Distributor, PARENT),
    # A distributor itself: buying, subscriptions, transfers from its own inventory, invoices
    # of its own sales.
    BuyPackage: rule("buyer_id", Distributor, ITSELF),
    ContractSubscription: rule("distributor_id", Distributor, ITSELF),
    TransferStamps: rule("from_id", Distributor, ITSELF),
    TransferPoints: rule("from_id", Distributor, ITSELF),
    MassTransfer: rule("from_id", Distributor, ITSELF),
    RegisterInvoice: rule("seller_id", SELLER, ITSELF),
    # A client's distributor: everything about that client and its CTIs.
    RegisterClient: rule("distributor_id", Distributor, ITSELF),
    UpdateClientProfile: rule("client_id", Client, DISTRIBUTOR),
    TagClient: rule("client_id", Client, DISTRIBUTOR),
    AssignAdminProfile: rule("client_id", Client, DISTRIBUTOR),
    OpenStampingAccount: rule("client_id", Client, DISTRIBUTOR),
    BlockStampingAccount: rule("cti_id", CTI, DISTRIBUTOR),
    ReactivateStampingAccount: rule("cti_id", CTI, DISTRIBUTOR),
    ResetStampingPassword: rule("cti_id", CTI, DISTRIBUTOR),
    RenewUnlimitedAccount: rule("cti_id", CTI, DISTRIBUTOR),
    ConfigureAutoTopUp: rule("cti_id", CTI, DISTRIBUTOR),
    DisableAutoTopUp: rule("cti_id", CTI, DISTRIBUTOR),
    AssignPackage: rule("cti_id", CTI, DISTRIBUTOR),
    ReclaimStamps: rule("from_cti_id", CTI, DISTRIBUTOR),
    IssueCreditCode: rule("distributor_id", Distributor, ITSELF),
    CancelCreditCode: rule("code_id", CreditCode, DISTRIBUTOR),
    MassAutoTopUp: rule("distributor_id", Distributor, ITSELF),
    # A client itself (or its distributor): spending its own points, redeeming a credit code to
    # its own CTI or wallet (the handler checks the code belongs to the network).
    SpendPoints: rule("holder_id", (Client, Distributor), ITSELF, CLIENT, DISTRIBUTOR),
    RedeemCreditCode: rule("to_id", ANY_ACCOUNT, CLIENT, DISTRIBUTOR),
    # A client itself: buying through its own panel (PCC).
    ClientBuyPackage: rule("client_id", Client, CLIENT),
    # Lifecycle (issue 10): the master's subscription catalogue; a parent purges; a client's
    # distributor licenses, sells seats to and converts its client; portal users are managed
    # by the client's distributor or the client itself.
    DefineSubscriptionProduct: rule("seller_id", SELLER, ITSELF),
    PurgeDistributor: rule("distributor_id", Distributor, PARENT),
    ConvertClientToDistributor: rule("client_id", Client, DISTRIBUTOR),
    GenerateLicence: rule("client_id", Client, DISTRIBUTOR),
    BuyUserSeat: rule("client_id", Client, DISTRIBUTOR),
    RenewUserSeat: rule("seat_id", Client, DISTRIBUTOR, locate=_seat_client),
    AddPortalUser: rule("client_id", Client, DISTRIBUTOR, CLIENT),
    DeactivatePortalUser: rule("user_id", PortalUser, DISTRIBUTOR, CLIENT),
    ChangePortalUser: rule("user_id", PortalUser, DISTRIBUTOR, CLIENT),
    DeletePortalUser: rule("user_id", PortalUser, DISTRIBUTOR, CLIENT),
    # The first master account of a ledger opens itself; later ones, an existing master
    # (decided by ``_authorise_master_opening``: the account does not exist yet).
    OpenMasterAccount: rule("master_id", MasterAccount, NOBODY_ELSE),
}
"""Who may act, by command type (DESIGN §4a). Every rule admits the master of the network."""


def authorise(command: Command, tx: Tx) -> str:
    """The actor of ``command`` if it may act, else ``not_authorised`` or ``invalid_command``.

    Loads the account the command acts on (the handler then finds it in ``tx``); an unknown
    account is ``unknown_account``, as its handler would say.
    """
    # ``type(...) is``: a command model's ``isinstance`` goes through pydantic's metaclass.
    command_type = type(command)
    if command_type is OpenMasterAccount:
        return _authorise_master_opening(command, tx)  # type: ignore[arg-type]
    actor = command.actor
    if actor is None:  # the models require it; a model built without validation must not pass
        raise Rejected("invalid_command", errors=[{"field": "actor", "message": "required"}])
    found = RULES.get(command_type)
    if found is None:
        raise Rejected("not_authorised", actor=actor, reason=f"no rule for {command_type.__name__}")
    account_id = getattr(command, found.field)
    account = found.locate(command, tx) if found.locate is not None else tx.find(account_id)
    if command_type is VerifyStampingCredentials and not isinstance(account, CTI):
        # An unknown CTI (or the id of another kind of account) answers like a wrong password
        # (the handler spends the same hash), so that no actor learns which ids exist; only a
        # master account gets that far.
        if isinstance(tx.find(actor), MasterAccount):
            return actor
        raise Rejected("not_authorised", actor=actor, account_id=account_id)
    if not isinstance(account, found.kind):
        kind = found.kind.__name__ if isinstance(found.kind, type) else "seller"
        raise Rejected("unknown_account", account_id=account_id, kind=kind)
    # The master's own id first: most accounts carry it (``network_master`` finds the others).
    if (
        actor == getattr(account, "master_id", None)
        or actor == network_master(tx, account)
        or any(_relation_holds(relation, actor, account) for relation in found.who)
    ):
        return actor
    raise Rejected("not_authorised", actor=actor, account_id=account_id)


def _relation_holds(relation: str, actor: str, account: Aggregate) -> bool:
    # By attribute, so that a new kind of account (a seat, a hold, a credit code) that holds
    # ``distributor_id`` or ``client_id`` fits the same rules.
    if relation == ITSELF:
        return actor == account.id
    if relation == PARENT:
        return actor == getattr(account, "parent_id", None)
    if relation == DISTRIBUTOR:
        return actor == getattr(account, "distributor_id", None)
    if relation == CLIENT:
        client_id = account.id if isinstance(account, Client) else None
        return actor == (client_id or getattr(account, "client_id", None))
    assert relation == NOBODY_ELSE, relation
    return False


def _authorise_master_opening(command: OpenMasterAccount, tx: Tx) -> str:
    """The first master account of a ledger needs no actor; later ones are opened by a master."""
    actor = command.actor
    if actor is not None and isinstance(tx.find(actor), MasterAccount):
        return actor
    if actor in (None, command.master_id) and (
        # A retry of the opening itself: the key index replays it or says ``already_exists``.
        isinstance(tx.find(command.master_id), MasterAccount) or is_first_master(tx)
    ):
        return command.master_id
    if actor is None:
        raise Rejected("invalid_command", errors=[{"field": "actor", "message": "required"}])
    raise Rejected("not_authorised", actor=actor, account_id=command.master_id)


def is_first_master(tx: Tx) -> bool:
    """Whether no master account was opened in this ledger yet (see ``FIRST_MASTER_KEY``)."""
    if tx.lookup([FIRST_MASTER_KEY]):
        return False
    # A ledger written before the key existed has masters without it.
    return not tx.has_events_of(MasterAccount.Opened.topic)


def network_master(tx: Tx, account: Aggregate) -> str:
    """The id of the master account at the root of ``account``'s network."""
    if isinstance(account, MasterAccount):
        return account.id
    master_id: str | None = getattr(account, "master_id", None)
    if master_id:
        return master_id
    # Recorded before ``master_id`` existed: found through the parents once, then remembered
    # (the network of an account never changes).
    known = tx.network_masters
    master_id = known.get(account.id)
    if master_id is None:
        master_id = _walk_to_master(tx, account)
        if len(known) >= tx.aggregates.cache_size_max:
            known.clear()
        known[account.id] = master_id
    return master_id


def _walk_to_master(tx: Tx, account: Aggregate) -> str:
    """Up through ``distributor_id`` and ``parent_id`` to the master account."""
    current: Aggregate | None = account
    for _ in range(NETWORK_DEPTH_MAX):
        if current is None:
            break
        if isinstance(current, MasterAccount):
            return current.id
        master_id = getattr(current, "master_id", None)
        if master_id:
            return str(master_id)
        above = getattr(current, "distributor_id", None) or getattr(current, "parent_id", None)
        current = tx.find(above) if above else None
    raise AssertionError(f"no master account above {account.id}")


def get_seller(tx: Tx, seller_id: str) -> Seller:
    """The master account or distributor that sells, or ``unknown_account``."""
    seller = tx.find(seller_id)
    if not isinstance(seller, MasterAccount | Distributor):
        raise Rejected("unknown_account", account_id=seller_id, kind="seller")
    return seller


def require_open(distributor: Distributor, today_status: str) -> None:
    """A cancelled or purged distributor receives nothing."""
    if today_status in (CANCELLED, PURGED):
        raise Rejected("distributor_not_active", distributor_id=distributor.id, status=today_status)
