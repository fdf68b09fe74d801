"""Prices and settings: what a sale costs when the command names no amount (DESIGN §4).

The rule, in one place:

- A stamp sold to a client's CTI costs the client's own ``bulk_stamp_price`` (its profile) if set,
  else the distributor's ``bulk_stamp_price`` setting, else the master account's (the network's
  default). To a sub-distributor: the distributor's price, else the master's. When none is set
  the price is unknown and the command is refused with ``price_unknown``: a sale is never
  silently 0.00 (an explicit "0.00" is a gift, and is kept).
- A point costs 1.00 MXN (1 point = 1 MXN, DESIGN §1).
- A package (client package, panel purchase) costs its price in the seller's catalogue.
- A sale to a client then takes the client's ``discount_pct`` off, rounded half up to centavos.
- An amount the command gives is kept as it is (no discount on top).

Settings are read the same way: a distributor's own setting, else the master account's, else the
ledger's default (``DEFAULTS``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ledger.aggregates.client import Client
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.domain import POINTS, Aggregate
from ledger.errors import Rejected
from ledger.money import parse_money
from ledger.write.decision import Tx

NETWORK_DEPTH_MAX = 50
"""Bound on the levels walked from a distributor up to its master account."""
POINT_PRICE_CENTAVOS = 100
"""1 point = 1 MXN, IVA included."""
UNLIMITED_FEE_POINTS_DEFAULT = 1_500
"""Yearly fee of an unlimited CTI in points when no setting says otherwise."""
DEFAULTS: dict[str, Any] = {
    "bulk_stamp_price_centavos": None,
    "allow_pcc_stamp_purchase": False,
    "allow_pcc_point_purchase": False,
    "unlimited_cti_fee_points": UNLIMITED_FEE_POINTS_DEFAULT,
}
"""Every setting ``ChangeSettings`` knows, with the value that holds when nobody set it."""


def network_of(tx: Tx, distributor_id: str) -> list[Aggregate]:
    """The distributor and its ancestors up to the master account, nearest first."""
    chain: list[Aggregate] = []
    current: str | None = distributor_id
    while current is not None and len(chain) < NETWORK_DEPTH_MAX:
        node = tx.find(current)
        if node is None:
            break
        chain.append(node)
        current = node.parent_id if isinstance(node, Distributor) else None
    return chain


def master_of(tx: Tx, distributor: Distributor) -> MasterAccount | None:
    """The master account at the top of the distributor's network."""
    top = network_of(tx, distributor.id)[-1]
    return top if isinstance(top, MasterAccount) else None


def setting(tx: Tx, distributor: Distributor, name: str) -> Any:
    """A setting as it holds for ``distributor``: its own, else the master's, else the default."""
    value = distributor.settings.get(name)
    if value is not None:
        return value
    master = master_of(tx, distributor)
    if master is not None:
        value = master.settings.get(name)
        if value is not None:
            return value
    return DEFAULTS[name]


def discounted(amount_centavos: int, client: Client | None) -> int:
    """The amount less the client's ``discount_pct``, rounded half up to whole centavos."""
    if client is None:
        return amount_centavos
    pct = client.profile.get("discount_pct")
    if pct is None:
        return amount_centavos
    kept = Decimal(amount_centavos) * (Decimal(100) - Decimal(str(pct))) / Decimal(100)
    return int(kept.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def stamp_price(tx: Tx, distributor: Distributor, client: Client | None) -> int | None:
    """The price of one stamp from ``distributor`` (to ``client``, if any), before discount;
    None when no price list gives one."""
    if client is not None:
        own = client.profile.get("bulk_stamp_price")
        if own is not None:
            return parse_money(own, field="bulk_stamp_price")
    price = setting(tx, distributor, "bulk_stamp_price_centavos")
    return None if price is None else int(price)


def list_amount(
    tx: Tx, distributor: Distributor, unit: str, quantity: int, client: Client | None
) -> int | None:
    """What ``quantity`` units from the distributor cost by its price list (discount applied);
    None when the list gives no price."""
    unit_price = POINT_PRICE_CENTAVOS if unit == POINTS else stamp_price(tx, distributor, client)
    if unit_price is None:
        return None
    return discounted(unit_price * quantity, client)


def price_unknown(distributor: Distributor, unit: str, field: str = "amount") -> Rejected:
    """The rejection of a sale that names no amount when no price list gives one."""
    return Rejected(
        "price_unknown",
        seller_id=distributor.id,
        unit=unit,
        field=field,
        reason="no amount given and no bulk_stamp_price set (client, distributor or master)",
    )


def listed_amount(
    tx: Tx,
    distributor: Distributor,
    unit: str,
    quantity: int,
    client: Client | None,
    field: str = "amount",
) -> int:
    """The price list's amount, or ``price_unknown``."""
    amount = list_amount(tx, distributor, unit, quantity, client)
    if amount is None:
        raise price_unknown(distributor, unit, field)
    return amount


def amount_of(
    given: str | None,
    tx: Tx,
    distributor: Distributor,
    unit: str,
    quantity: int,
    client: Client | None,
) -> int:
    """The command's amount when it gives one, else the price list's (else ``price_unknown``)."""
    if given is not None:
        return parse_money(given)
    return listed_amount(tx, distributor, unit, quantity, client)


def client_of(tx: Tx, target: Aggregate) -> Client | None:
    """The client a sale goes to: the client itself, or a CTI's client; None otherwise."""
    if isinstance(target, Client):
        return target
    client_id = getattr(target, "client_id", None)
    if client_id is None:
        return None
    found = tx.find(client_id)
    return found if isinstance(found, Client) else None
