"""Who may act on what (DESIGN §5 ``not_authorised``) and lookups shared by the handlers."""

from __future__ import annotations

from ledger.aggregates.client import Client
from ledger.aggregates.distributor import CANCELLED, PURGED, Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.stamping_account import StampingAccount
from ledger.commands.models import Command
from ledger.engine import Tx
from ledger.errors import Rejected

Seller = MasterAccount | Distributor


def require_actor(command: Command, owner_id: str, account_id: str) -> None:
    """An actor, when given, must be the owner of the account it acts on."""
    if command.actor is not None and command.actor != owner_id:
        raise Rejected("not_authorised", actor=command.actor, account_id=account_id)


def require_parent_actor(command: Command, distributor: Distributor) -> None:
    """Only a distributor's parent moves its status; the actor is required."""
    if command.actor != distributor.parent_id:
        raise Rejected("not_authorised", actor=command.actor, account_id=distributor.id)


def get_seller(tx: Tx, seller_id: str) -> Seller:
    """The master account or distributor that sells, or ``unknown_account``."""
    seller = tx.find(seller_id)
    if not isinstance(seller, MasterAccount | Distributor):
        raise Rejected("unknown_account", account_id=seller_id, kind="seller")
    return seller


def get_client_of(tx: Tx, command: Command, client_id: str) -> Client:
    """A client the actor (its distributor) may act on."""
    client = tx.get(client_id, Client)
    require_actor(command, client.distributor_id, client_id)
    return client


def get_cti_of(tx: Tx, command: Command, cti_id: str) -> StampingAccount:
    """A stamping account the actor (its client's distributor) may act on."""
    cti = tx.get(cti_id, StampingAccount)
    require_actor(command, cti.distributor_id, cti_id)
    return cti


def require_open(distributor: Distributor, today_status: str) -> None:
    """A cancelled or purged distributor receives nothing."""
    if today_status in (CANCELLED, PURGED):
        raise Rejected("distributor_not_active", distributor_id=distributor.id, status=today_status)
