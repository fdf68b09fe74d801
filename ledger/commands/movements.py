"""Handlers that move credits: purchases, transfers, reclaims, grants and consumption."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from ledger.aggregates.client import Client
from ledger.aggregates.common import (
    PACKAGE,
    PANEL,
    TRANSFER,
    Package,
    add_days,
    credit_sale_id,
    sale_of_lot,
)
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.stamping_account import StampingAccount
from ledger.clock import date_text, local_date
from ledger.commands.auth import get_seller, require_open
from ledger.commands.models import (
    AssignPackage,
    BuyPackage,
    ClientBuyPackage,
    ConsumeStamp,
    MassAutoTopUp,
    MassTransfer,
    ReclaimStamps,
    SpendPoints,
    TransferPoints,
    TransferStamps,
)
from ledger.commands.pricing import (
    POINT_PRICE_CENTAVOS,
    amount_of,
    client_of,
    discounted,
    list_amount,
    listed_amount,
    setting,
)
from ledger.commands.sales import buyer_of, claim_sale
from ledger.domain import POINTS, SINK_SPENT, STAMPS, Aggregate
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.write.decision import Tx, handles


def _package_for(seller: MasterAccount | Distributor, package_id: str, audience: str) -> Package:
    package = seller.packages.get(package_id)
    if package is None or package.retired or package.audience != audience:
        raise Rejected("unknown_package", package_id=package_id, seller_id=seller.id)
    return package


@handles(BuyPackage)
def buy_package(command: BuyPackage, tx: Tx) -> Outcome:
    """A distributor buys packages from its parent; the master account issues new credits."""
    buyer = tx.get(command.buyer_id, Distributor)
    if command.seller_id != buyer.parent_id:
        raise Rejected("not_authorised", buyer_id=buyer.id, seller_id=command.seller_id)
    buyer.require_active(tx.today)
    seller = get_seller(tx, command.seller_id)
    package = _package_for(seller, command.package_id, "distributor")
    points = _points_price(package, command.count) if command.pay_with == "points" else 0
    if points:
        buyer.require_inventory(POINTS, points)
    if isinstance(seller, Distributor):
        seller.require_active(tx.today)
        seller.require_inventory(package.unit, package.quantity * command.count)
    sale_id = sell_package(tx, seller, buyer, package, command.count, points)
    return Outcome(
        type=command.type, sale_ids=(sale_id,), balance_after=buyer.balance(package.unit)
    )


def _points_price(package: Package, count: int) -> int:
    """The price of ``count`` packages in points (1 point = 1 MXN), or ``invalid_command``."""
    if package.unit == POINTS:
        raise Rejected(
            "invalid_command", field="pay_with", reason="a points package is paid with money"
        )
    centavos = package.price_centavos * count
    if centavos % POINT_PRICE_CENTAVOS:
        raise Rejected(
            "invalid_command", field="pay_with", reason="the price is not a whole number of points"
        )
    return centavos // POINT_PRICE_CENTAVOS


def sell_package(
    tx: Tx,
    seller: MasterAccount | Distributor,
    buyer: Distributor,
    package: Package,
    count: int,
    points: int = 0,
) -> str:
    """The events of a checked package sale to a distributor; returns the sale id.

    ``points`` > 0: paid with that many of the buyer's points (checked to be there), which go to
    a distributor seller or are spent when the master account sells.
    """
    sale_id = f"S:{uuid.uuid4().hex}"
    # Both legs record the same terms: the seller's (the master account issues the credits, a
    # distributor sells from its inventory) and the buyer's.
    terms: dict[str, Any] = {
        "package_id": package.package_id,
        "count": count,
        "unit": package.unit,
        "quantity": package.quantity * count,
        "sale_id": sale_id,
        "amount_centavos": package.price_centavos * count,
        "pay_with": "points" if points else "money",
        "points_paid": points,
    }
    if isinstance(seller, MasterAccount):
        seller.trigger(seller.CreditsIssued, tx.now, buyer_id=buyer.id, **terms)
        points_to = SINK_SPENT
    else:
        seller.trigger(seller.CreditsSold, tx.now, buyer_id=buyer.id, **terms)
        points_to = seller.id
    buyer.trigger(
        buyer.PackageBought,
        tx.now,
        seller_id=seller.id,
        points_to=points_to if points else "",
        **terms,
    )
    claim_sale(tx, sale_id, seller.id, buyer.id)
    return sale_id


@dataclass(frozen=True, slots=True)
class _Line:
    to: Aggregate
    quantity: int
    amount_centavos: int


def _check_target(tx: Tx, source: Distributor, unit: str, to_id: str) -> Aggregate:
    """The receiver of a transfer: checked to belong to ``source`` and to accept ``unit``."""
    target = tx.find(to_id)
    if target is None:
        raise Rejected("unknown_account", account_id=to_id)
    if isinstance(target, Distributor):
        if target.parent_id != source.id:
            raise Rejected("not_authorised", account_id=to_id, from_id=source.id)
        require_open(target, target.status_on(tx.today))
        return target
    if unit == STAMPS and isinstance(target, StampingAccount):
        if target.distributor_id != source.id:
            raise Rejected("not_authorised", account_id=to_id, from_id=source.id)
        target.require_standard()
        return target
    if unit == POINTS and isinstance(target, Client):
        if target.distributor_id != source.id:
            raise Rejected("not_authorised", account_id=to_id, from_id=source.id)
        return target
    raise Rejected("wrong_account_kind", account_id=to_id, kind=type(target).__name__, unit=unit)


def _transfer(
    tx: Tx,
    source: Distributor,
    unit: str,
    transfer_id: str,
    line: _Line,
    sale_source: str = TRANSFER,
    expires_on: date | None = None,
) -> None:
    """The events of one checked transfer line: the debit and sale, then the credit (stamps
    to a CTI as a lot that expires on ``expires_on``, if given)."""
    buyer_id = buyer_of(line.to)
    source.trigger(
        source.CreditsTransferred,
        tx.now,
        transfer_id=transfer_id,
        to_id=line.to.id,
        unit=unit,
        quantity=line.quantity,
        sale_id=transfer_id,
        amount_centavos=line.amount_centavos,
        buyer_id=buyer_id,
        source=sale_source,
    )
    claim_sale(tx, transfer_id, source.id, buyer_id)
    target = line.to
    if isinstance(target, StampingAccount):
        target.credit(transfer_id, source.id, line.quantity, tx.now, expires_on, today=tx.today)
    elif isinstance(target, Client):
        target.trigger(
            target.PointsCredited,
            tx.now,
            transfer_id=transfer_id,
            from_id=source.id,
            quantity=line.quantity,
        )
    else:
        assert isinstance(target, Distributor)
        target.trigger(
            target.CreditsReceived,
            tx.now,
            transfer_id=transfer_id,
            from_id=source.id,
            unit=unit,
            quantity=line.quantity,
        )


def _single_transfer(command: TransferStamps | TransferPoints, unit: str, tx: Tx) -> Outcome:
    source = tx.get(command.from_id, Distributor)
    source.require_active(tx.today)
    target = _check_target(tx, source, unit, command.to_id)
    source.require_inventory(unit, command.quantity)
    amount = amount_of(command.amount, tx, source, unit, command.quantity, client_of(tx, target))
    line = _Line(target, command.quantity, amount)
    _transfer(tx, source, unit, command.transfer_id, line)
    return Outcome(
        type=command.type, sale_ids=(command.transfer_id,), balance_after=source.balance(unit)
    )


@handles(TransferStamps)
def transfer_stamps(command: TransferStamps, tx: Tx) -> Outcome:
    """Stamps from a distributor to its client's standard CTI or a sub-distributor."""
    return _single_transfer(command, STAMPS, tx)


@handles(TransferPoints)
def transfer_points(command: TransferPoints, tx: Tx) -> Outcome:
    """Points from a distributor to its client or a sub-distributor."""
    return _single_transfer(command, POINTS, tx)


@handles(MassTransfer)
def mass_transfer(command: MassTransfer, tx: Tx) -> Outcome:
    """Every line or none: all targets and the total are checked before the first event."""
    source = tx.get(command.from_id, Distributor)
    source.require_active(tx.today)
    lines = []
    for given in command.lines:
        target = _check_target(tx, source, command.unit, given.to_id)
        amount = amount_of(
            given.amount, tx, source, command.unit, given.quantity, client_of(tx, target)
        )
        lines.append(_Line(target, given.quantity, amount))
    source.require_inventory(command.unit, sum(line.quantity for line in lines))
    # Derived ids contain ":", which caller-chosen ids cannot: they never clash with a caller's.
    transfer_ids = tuple(f"{command.batch_id}:{n}" for n in range(1, len(lines) + 1))
    for transfer_id, line in zip(transfer_ids, lines, strict=True):
        _transfer(tx, source, command.unit, transfer_id, line)
    return Outcome(
        type=command.type, sale_ids=transfer_ids, balance_after=source.balance(command.unit)
    )


@handles(ReclaimStamps)
def reclaim_stamps(command: ReclaimStamps, tx: Tx) -> Outcome:
    """A distributor takes unused stamps back from its client's CTI; never below zero."""
    cti = tx.get(command.from_cti_id, StampingAccount)
    distributor = tx.get(cti.distributor_id, Distributor)
    cti.check_reclaim(command.quantity, tx.today, tx.now)
    # The credit line gives back what the command says, else what the list charges for them.
    amount = amount_of(
        command.amount, tx, distributor, STAMPS, command.quantity, client_of(tx, cti)
    )
    taken = cti.reclaim(
        command.transfer_id, distributor.id, command.quantity, command.reason, tx.today, tx.now
    )
    distributor.trigger(
        distributor.CreditsReceived,
        tx.now,
        transfer_id=command.transfer_id,
        from_id=cti.id,
        unit=STAMPS,
        quantity=command.quantity,
        reason="reclaim",
    )
    # One line for the reclaim, correcting the sale of the first lot it took from (the lot
    # that expires first, then the oldest: the order stamps are used in).
    sale_id = credit_sale_id(command.transfer_id)
    distributor.trigger(
        distributor.ReclaimCredited,
        tx.now,
        transfer_id=command.transfer_id,
        cti_id=cti.id,
        buyer_id=cti.client_id,
        quantity=command.quantity,
        credit_for=sale_of_lot(taken[0][0]),
        sale_id=sale_id,
        amount_centavos=-amount,
    )
    claim_sale(tx, sale_id, distributor.id, cti.client_id)
    return Outcome(
        type=command.type,
        sale_ids=(sale_id,),
        balance_after=cti.balance(STAMPS, tx.today),
    )


@handles(AssignPackage)
def assign_package(command: AssignPackage, tx: Tx) -> Outcome:
    """A client package: its stamps land in the CTI as a lot that expires with the package."""
    seller = tx.get(command.seller_id, Distributor)
    seller.require_active(tx.today)
    package = _package_for(seller, command.package_id, "client")
    if package.unit != STAMPS:
        raise Rejected("wrong_account_kind", package_id=package.package_id, unit=package.unit)
    cti = tx.get(command.cti_id, StampingAccount)
    if cti.distributor_id != seller.id:
        raise Rejected("not_authorised", account_id=cti.id, from_id=seller.id)
    cti.require_standard()
    seller.require_inventory(STAMPS, package.quantity)
    expires_on = add_days(tx.today, package.validity_days) if package.validity_days else None
    line = _Line(cti, package.quantity, discounted(package.price_centavos, client_of(tx, cti)))
    _transfer(tx, seller, STAMPS, command.grant_id, line, PACKAGE, expires_on)
    return Outcome(
        type=command.type,
        sale_ids=(command.grant_id,),
        balance_after=cti.balance(STAMPS, tx.today),
        details={"expires_on": expires_on.isoformat() if expires_on else None},
    )


@handles(ConsumeStamp)
def consume_stamp(command: ConsumeStamp, tx: Tx) -> Outcome:
    """One CFDI stamped: one stamp from the lot that expires first (the hot path)."""
    # The fields read from the model's dict: each attribute read of a pydantic model costs
    # about 400 instructions (its ``__getattr__`` keeps Python's attribute cache away).
    fields = command.__dict__
    command_type: str = fields["type"]
    cti = tx.get(fields["cti_id"], StampingAccount)
    stamped_at = fields["stamped_at"]
    # The local day of the stamp (today's, unless the invoice was stamped at another time).
    if stamped_at is None:
        stamped_at, stamped_on = tx.now, tx.today
    else:
        stamped_on = local_date(stamped_at)
    cfdi_uuid: str = fields["cfdi_uuid"]  # upper-case (``CfdiUuid``)
    cti.consume(cfdi_uuid, fields["issuer_rfc"], stamped_at, stamped_on, tx.today, tx.now)
    rule = cti.auto_top_up
    if rule is not None and cti.top_up_armed and cti.balance(STAMPS, tx.today) < rule.minimum:
        sale_id = auto_top_up(tx, cti, f"auto:{cfdi_uuid}", cfdi_uuid)
        if sale_id is None:
            return Outcome(
                type=command_type,
                balance_after=cti.balance(STAMPS, tx.today),
                warnings=("auto_top_up_failed",),
                details={"local_date": date_text(stamped_on)},
            )
        return Outcome(
            type=command_type,
            sale_ids=(sale_id,),
            balance_after=cti.balance(STAMPS, tx.today),
            details={"local_date": date_text(stamped_on)},
        )
    return Outcome(
        type=command_type,
        balance_after=cti.balance(STAMPS, tx.today),
        details={"local_date": date_text(stamped_on)},
    )


def auto_top_up(tx: Tx, cti: StampingAccount, transfer_id: str, cfdi_uuid: str) -> str | None:
    """The CTI's rule fires: the distributor sends stamps (the sale id), or the failure is kept."""
    rule = cti.auto_top_up
    assert rule is not None
    distributor = tx.get(cti.distributor_id, Distributor)
    amount: int | None = rule.amount_centavos
    if rule.priced_by_list:
        amount = list_amount(tx, distributor, STAMPS, rule.credit, client_of(tx, cti))
    if distributor.status_on(tx.today) != "active":
        reason = "distributor_not_active"
    elif distributor.stamps < rule.credit:
        reason = "insufficient_inventory"
    elif amount is None:
        # Never a silent 0.00 sale: the consumption stands, the top-up is not sold.
        reason = "price_unknown"
    else:
        reason = ""
    if reason:
        cti.trigger(
            cti.AutoTopUpFailed,
            tx.now,
            cfdi_uuid=cfdi_uuid,
            available=distributor.stamps,
            distributor_id=distributor.id,
            requested=rule.credit,
            reason=reason,
        )
        return None
    assert amount is not None
    cti.trigger(cti.AutoTopUpTriggered, tx.now, cfdi_uuid=cfdi_uuid, transfer_id=transfer_id)
    _transfer(tx, distributor, STAMPS, transfer_id, _Line(cti, rule.credit, amount))
    return transfer_id


@handles(SpendPoints)
def spend_points(command: SpendPoints, tx: Tx) -> Outcome:
    """A client pays points of its wallet, or a distributor of its inventory, for a product;
    the points leave circulation."""
    holder: Client | Distributor
    if command.client_id is not None:
        holder = tx.get(command.client_id, Client)
    else:
        holder = tx.get(command.holder_id, Distributor)
    ref = command.spend_id or f"spend.{holder.id}.{holder.version + 1}"
    holder.spend_points(ref, command.product, command.points, tx.now)
    return Outcome(type=command.type, balance_after=holder.balance(POINTS))


@handles(ClientBuyPackage)
def client_buy_package(command: ClientBuyPackage, tx: Tx) -> Outcome:
    """A client's own purchase (PCC): stamps to its CTI, points to its wallet; a billable sale.

    An order the distributor cannot cover first buys the smallest covering package of that unit
    from the distributor's own seller, in the same transaction.
    """
    client = tx.get(command.client_id, Client)
    distributor = tx.get(client.distributor_id, Distributor)
    distributor.require_active(tx.today)
    package = _package_for(distributor, command.package_id, "client")
    permission = (
        "allow_pcc_stamp_purchase" if package.unit == STAMPS else "allow_pcc_point_purchase"
    )
    if not setting(tx, distributor, permission):
        raise Rejected("pcc_purchase_not_allowed", distributor_id=distributor.id, unit=package.unit)
    amount = discounted(package.price_centavos, client)
    sale_id = command.purchase_id or f"PCC:{uuid.uuid4().hex}"
    if package.unit == STAMPS:
        cti = tx.get(command.cti_id or client.default_cti_id, StampingAccount)
        if cti.client_id != client.id:
            raise Rejected("not_authorised", account_id=cti.id, client_id=client.id)
        cti.require_standard()
        # An order the distributor cannot cover buys the covering stamps package from its
        # seller first (the manual: PCC stamp purchases need automatic stamp purchase).
        supply = _supply(tx, distributor, STAMPS, package.quantity - distributor.stamps)
        supply_sale_ids = tuple(
            sell_package(tx, seller, distributor, top, count) for seller, top, count in supply
        )
        expires_on = add_days(tx.today, package.validity_days) if package.validity_days else None
        line = _Line(cti, package.quantity, amount)
        _transfer(tx, distributor, STAMPS, sale_id, line, PANEL, expires_on)
        return Outcome(
            type=command.type,
            sale_ids=(sale_id, *supply_sale_ids),
            balance_after=cti.balance(STAMPS, tx.today),
            details={
                "cti_id": cti.id,
                "expires_on": expires_on.isoformat() if expires_on else None,
                "supply_sale_ids": list(supply_sale_ids),
            },
        )
    if command.cti_id is not None:
        raise Rejected("invalid_command", field="cti_id", reason="points go to the wallet")
    supply = _supply(tx, distributor, POINTS, package.quantity - distributor.points)
    supply_sale_ids = tuple(
        sell_package(tx, seller, distributor, top, count) for seller, top, count in supply
    )
    _transfer(tx, distributor, POINTS, sale_id, _Line(client, package.quantity, amount), PANEL)
    return Outcome(
        type=command.type,
        sale_ids=(sale_id, *supply_sale_ids),
        balance_after=client.points,
        details={"supply_sale_ids": list(supply_sale_ids)},
    )


def _supply(
    tx: Tx, distributor: Distributor, unit: str, short: int
) -> list[tuple[MasterAccount | Distributor, Package, int]]:
    """The purchase that covers ``short`` units: the smallest covering package of that unit of
    the distributor's seller (or its largest, as many times as needed); nothing when not short.

    With none on sale, ``insufficient_inventory`` (stamps) or ``insufficient_points``.
    """
    if short <= 0:
        return []
    seller = get_seller(tx, distributor.parent_id)
    offers = sorted(
        (
            p
            for p in seller.packages.values()
            if p.unit == unit and p.audience == "distributor" and not p.retired
        ),
        key=lambda p: (p.quantity, p.price_centavos, p.package_id),
    )
    if not offers:
        raise Rejected(
            "insufficient_inventory" if unit == STAMPS else "insufficient_points",
            available=distributor.balance(unit),
            requested=distributor.balance(unit) + short,
            holder_id=distributor.id,
        )
    covering = [p for p in offers if p.quantity >= short]
    top = covering[0] if covering else offers[-1]
    count = 1 if covering else -(-short // top.quantity)
    if isinstance(seller, Distributor):
        seller.require_active(tx.today)
        seller.require_inventory(unit, top.quantity * count)
    return [(seller, top, count)]


@handles(MassAutoTopUp)
def mass_auto_top_up(command: MassAutoTopUp, tx: Tx) -> Outcome:
    """Each selected CTI gets its rule's ``credit`` at the rule's amount; all lines or none."""
    source = tx.get(command.distributor_id, Distributor)
    source.require_active(tx.today)
    if len(set(command.cti_ids)) != len(command.cti_ids):
        raise Rejected("invalid_command", field="cti_ids", reason="a CTI is listed twice")
    lines = []
    for cti_id in command.cti_ids:
        cti = _check_target(tx, source, STAMPS, cti_id)
        if not isinstance(cti, StampingAccount):
            raise Rejected("wrong_account_kind", account_id=cti_id, kind=type(cti).__name__)
        rule = cti.auto_top_up
        if rule is None:
            raise Rejected("invalid_transition", cti_id=cti.id, status="auto_top_up_off")
        amount = (
            listed_amount(tx, source, STAMPS, rule.credit, client_of(tx, cti))
            if rule.priced_by_list
            else rule.amount_centavos
        )
        lines.append(_Line(cti, rule.credit, amount))
    source.require_inventory(STAMPS, sum(line.quantity for line in lines))
    transfer_ids = tuple(f"{command.batch_id}:{n}" for n in range(1, len(lines) + 1))
    for transfer_id, line in zip(transfer_ids, lines, strict=True):
        _transfer(tx, source, STAMPS, transfer_id, line)
    return Outcome(type=command.type, sale_ids=transfer_ids, balance_after=source.stamps)
