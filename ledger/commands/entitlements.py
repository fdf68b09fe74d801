"""Handlers of what a client holds under its distributor: licences, seats and portal users."""

from __future__ import annotations

from datetime import date

from ledger.aggregates.client import Client, SeatSold
from ledger.aggregates.common import add_one_year, mkl_key
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.portal_user import DELETED, PortalUser
from ledger.commands.accounts import require_distributor_not_purged
from ledger.commands.auth import seat_client
from ledger.commands.models import (
    AddPortalUser,
    BuyUserSeat,
    ChangePortalUser,
    DeactivatePortalUser,
    DeletePortalUser,
    GenerateLicence,
    RenewUserSeat,
)
from ledger.commands.network import master_of
from ledger.commands.sales import claim_sale
from ledger.domain import POINTS
from ledger.errors import Rejected
from ledger.money import parse_money
from ledger.outcome import Outcome
from ledger.write.decision import Tx, handles


@handles(GenerateLicence)
def generate_licence(command: GenerateLicence, tx: Tx) -> Outcome:
    """A licence valid one year, under the distributor's MKL of the software product.

    Its price in points (the MKL's ``licence_points`` in the catalogue) leaves the client's
    wallet when the wallet covers it, else the distributor's inventory; never split between
    them. Neither covering it is ``insufficient_points``.
    """
    client = tx.get(command.client_id, Client)
    distributor = tx.get(client.distributor_id, Distributor)
    distributor.require_active(tx.today)
    mkl = mkl_key(command.product)
    if not distributor.has_subscription(mkl, tx.today):
        raise Rejected("mkl_required", distributor_id=distributor.id, product=command.product)
    product = master_of(tx, distributor).subscription_product(mkl)
    software = product.product[len("MKL ") :].strip() if mkl.startswith("mkl ") else product.product
    licence_id = command.licence_id or f"{client.id}:lic:{client.version + 1}"
    price = product.licence_points
    payer: Client | Distributor = client
    if price > client.points:
        if price > distributor.points:
            raise Rejected(
                "insufficient_points",
                requested=price,
                client_points=client.points,
                distributor_points=distributor.points,
                holder_id=client.id,
            )
        payer = distributor
    ref = f"licence:{licence_id}"
    if price:
        payer.spend_points(ref, f"licence {software}", price, tx.now)
    expires_on = add_one_year(tx.today)
    client.trigger(
        client.LicenceGenerated,
        tx.now,
        product=software,
        expires_on=expires_on,
        licence_id=licence_id,
        points=price,
        paid_by=payer.id if price else "",
    )
    return Outcome(
        type=command.type,
        balance_after=payer.balance(POINTS) if price else None,
        details={
            "licence_id": licence_id,
            "product": software,
            "expires_on": expires_on.isoformat(),
            "points": price,
            "paid_by": payer.id if price else None,
        },
    )


@handles(BuyUserSeat)
def buy_user_seat(command: BuyUserSeat, tx: Tx) -> Outcome:
    """A yearly extra-user seat: a billable sale of the client's distributor.

    A client with a lapsed seat gets that seat renewed for a year from today instead (its
    user, if any, logs in again), as the manual's purchase of a user does.
    """
    client = tx.get(command.client_id, Client)
    distributor = tx.get(client.distributor_id, Distributor)
    distributor.require_active(tx.today)
    if command.seat_id in client.seats:
        raise Rejected("already_exists", seat_id=command.seat_id)
    amount = parse_money(command.price, field="price")
    lapsed = client.lapsed_seat(tx.today)
    if lapsed is not None:
        return _renew_seat(command.type, tx, client, distributor, lapsed, amount)
    sale_id = f"{client.id}:seat:{command.seat_id}"
    expires_on = add_one_year(tx.today)
    _sell_seat(
        tx, client.SeatBought, client, distributor, command.seat_id, expires_on, sale_id, amount
    )
    return Outcome(
        type=command.type, sale_ids=(sale_id,), details={"expires_on": expires_on.isoformat()}
    )


def _renew_seat(
    command_type: str,
    tx: Tx,
    client: Client,
    distributor: Distributor,
    seat_id: str,
    amount: int,
) -> Outcome:
    """Another year of ``seat_id``: from its expiry if it runs, else from today."""
    seat = client.seats[seat_id]
    start = seat.expires_on if seat.expires_on >= tx.today else tx.today
    expires_on = add_one_year(start)
    # Each renewal moves the expiry later, so the new expiry makes the sale id unique.
    sale_id = f"{client.id}:seat:{seat_id}:{expires_on.isoformat()}"
    _sell_seat(tx, client.SeatRenewed, client, distributor, seat_id, expires_on, sale_id, amount)
    return Outcome(
        type=command_type,
        sale_ids=(sale_id,),
        details={"seat_id": seat_id, "expires_on": expires_on.isoformat(), "renewed": True},
    )


def _sell_seat(
    tx: Tx,
    event: type[SeatSold],
    client: Client,
    distributor: Distributor,
    seat_id: str,
    expires_on: date,
    sale_id: str,
    amount: int,
) -> None:
    """Records a year of ``seat_id`` sold (bought or renewed) to the client by its distributor,
    and claims the sale."""
    client.trigger(
        event,
        tx.now,
        seat_id=seat_id,
        seller_id=distributor.id,
        expires_on=expires_on,
        sale_id=sale_id,
        amount_centavos=amount,
    )
    claim_sale(tx, sale_id, distributor.id, client.id)


@handles(RenewUserSeat)
def renew_user_seat(command: RenewUserSeat, tx: Tx) -> Outcome:
    """Another year of a client's seat, ahead of its lapse (or from today, once lapsed)."""
    client = seat_client(tx, command.seat_id)
    if client is None or command.seat_id not in client.seats:
        raise Rejected("unknown_account", account_id=command.seat_id, kind="seat")
    distributor = tx.get(client.distributor_id, Distributor)
    distributor.require_active(tx.today)
    amount = parse_money(command.price, field="price")
    return _renew_seat(command.type, tx, client, distributor, command.seat_id, amount)


def _require_email_free(tx: Tx, client: Client, email: str, user_id: str) -> None:
    """``already_exists`` when another portal user of the client (not deleted) has ``email``."""
    for seat in client.seats.values():
        if seat.user_id is None or seat.user_id == user_id:
            continue
        other = tx.find(seat.user_id)
        if isinstance(other, PortalUser) and other.status != DELETED and other.email == email:
            raise Rejected("already_exists", client_id=client.id, field="email", user_id=other.id)


def _client_for_users(tx: Tx, client_id: str) -> Client:
    """The client whose portal users the command manages (who may act: ``auth.RULES``)."""
    return tx.get(client_id, Client)


def _user(tx: Tx, user_id: str) -> tuple[PortalUser, Client]:
    user = tx.get(user_id, PortalUser)
    return user, _client_for_users(tx, user.client_id)


@handles(AddPortalUser)
def add_portal_user(command: AddPortalUser, tx: Tx) -> Outcome:
    """A new portal user on a free seat of the client (``no_free_seat`` otherwise)."""
    client = _client_for_users(tx, command.client_id)
    require_distributor_not_purged(tx, client)
    if tx.find(command.user_id) is not None:
        raise Rejected("already_exists", account_id=command.user_id)
    email = command.email.strip().lower()
    _require_email_free(tx, client, email, command.user_id)
    seat_id = client.free_seat(tx.today)
    tx.add(
        PortalUser.add(
            command.user_id,
            client_id=client.id,
            distributor_id=client.distributor_id,
            email=email,
            seat_id=seat_id,
            at=tx.now,
        )
    )
    client.trigger(client.SeatTaken, tx.now, seat_id=seat_id, user_id=command.user_id)
    return Outcome(type=command.type, details={"seat_id": seat_id})


@handles(DeactivatePortalUser)
def deactivate_portal_user(command: DeactivatePortalUser, tx: Tx) -> Outcome:
    """The user stops logging in and keeps its seat."""
    user, _client = _user(tx, command.user_id)
    user.deactivate(tx.now)
    return Outcome(type=command.type, details={"seat_id": user.seat_id})


@handles(ChangePortalUser)
def change_portal_user(command: ChangePortalUser, tx: Tx) -> Outcome:
    """The user's seat goes to another e-mail, active again; a lapsed seat is ``no_free_seat``."""
    user, client = _user(tx, command.user_id)
    require_distributor_not_purged(tx, client)
    user.require_not_deleted("change")
    email = command.email.strip().lower()
    _require_email_free(tx, client, email, user.id)
    client.require_seat_valid(user.seat_id, tx.today)
    user.change(email, tx.now)
    return Outcome(type=command.type, details={"seat_id": user.seat_id})


@handles(DeletePortalUser)
def delete_portal_user(command: DeletePortalUser, tx: Tx) -> Outcome:
    """The user is gone and its seat with it."""
    user, _client = _user(tx, command.user_id)
    user.delete(tx.now)
    return Outcome(type=command.type, details={"seat_id": user.seat_id})
