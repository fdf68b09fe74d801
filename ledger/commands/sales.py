"""Sales in the key index: who sold to whom, claimed beside the events that record a sale.

``sale:<id>`` is claimed once per sale (a racing duplicate loses at commit). Its payload
(``ledger.aggregates.common.SaleFact``) names the seller, which ``RegisterInvoice`` checks, and
the buyer, so that an invoice covers the sales of one buyer (``mixed_buyers`` otherwise).
"""

from __future__ import annotations

from ledger.aggregates.common import SaleFact, sale_fact
from ledger.aggregates.credit_code import CreditCode
from ledger.domain import Aggregate
from ledger.write.decision import Tx


def claim_sale(tx: Tx, sale_id: str, seller_id: str, buyer_id: str, code_id: str = "") -> None:
    """Claims ``sale:<sale_id>`` for ``seller_id``'s sale to ``buyer_id``."""
    tx.claim(f"sale:{sale_id}", sale_fact(seller_id, buyer_id, code_id))


def buyer_of(target: Aggregate) -> str:
    """Who buys what is credited to ``target``: a CTI's client, else the account itself."""
    client_id = getattr(target, "client_id", None)
    return str(client_id) if client_id else target.id


def current_buyer(tx: Tx, fact: SaleFact) -> str | None:
    """The buyer of a sale now: a code's sale is bought by the client it was redeemed for ("" if
    not redeemed yet); None for a sale recorded before buyers were kept (no buyer to compare)."""
    if fact.code_id:
        code = tx.get(fact.code_id, CreditCode)
        if code.redeemed_by is None:
            return ""
        target = tx.find(code.redeemed_by)
        return "" if target is None else buyer_of(target)
    return fact.buyer_id
