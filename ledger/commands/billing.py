"""Handler of invoicing: a sale is invoiced once, and an invoice has one buyer."""

from __future__ import annotations

from ledger.aggregates.common import read_sale_fact
from ledger.commands.auth import get_seller
from ledger.commands.models import RegisterInvoice
from ledger.commands.sales import current_buyer
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.write.decision import Tx, handles


@handles(RegisterInvoice)
def register_invoice(command: RegisterInvoice, tx: Tx) -> Outcome:
    """Marks sales of the seller invoiced under ``invoice_ref``."""
    seller = get_seller(tx, command.seller_id)
    sale_ids = tuple(dict.fromkeys(command.sale_ids))
    if len(sale_ids) != len(command.sale_ids):
        raise Rejected("invalid_command", field="sale_ids", reason="a sale is listed twice")
    wanted = [f"sale:{s}" for s in sale_ids] + [f"invoiced:{s}" for s in sale_ids]
    found = tx.lookup(wanted)
    buyers: dict[str, str] = {}
    for sale_id in sale_ids:
        sale = found.get(f"sale:{sale_id}")
        fact = None if sale is None else read_sale_fact(sale.outcome)
        if fact is None or fact.seller_id != seller.id:
            raise Rejected("unknown_sale", sale_id=sale_id, seller_id=seller.id)
        if f"invoiced:{sale_id}" in found:
            raise Rejected("already_invoiced", sale_id=sale_id)
        buyer = current_buyer(tx, fact)
        if buyer is not None:  # a sale recorded before buyers were kept is not compared
            buyers[sale_id] = buyer
    if len(set(buyers.values())) > 1:
        # An invoice (a CFDI) has one receptor. A code not redeemed yet has no buyer (""),
        # so it goes on an invoice of its own kind (público en general).
        first_sale: dict[str, str] = {}
        for sale_id, buyer in buyers.items():
            first_sale.setdefault(buyer, sale_id)
        raise Rejected(
            "mixed_buyers",
            seller_id=seller.id,
            buyers=sorted(first_sale),
            # One sale of each buyer, not the whole list (an invoice may name 10,000).
            sale_of_each_buyer=first_sale,
        )
    seller.trigger(
        seller.InvoiceRegistered, tx.now, invoice_ref=command.invoice_ref, sale_ids=sale_ids
    )
    for sale_id in sale_ids:
        tx.claim(f"invoiced:{sale_id}", command.invoice_ref.encode())
    return Outcome(type=command.type, sale_ids=sale_ids)
