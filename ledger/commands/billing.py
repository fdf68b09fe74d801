"""Handler of invoicing: a sale is invoiced once."""

from __future__ import annotations

from ledger.commands.auth import get_seller
from ledger.commands.models import RegisterInvoice
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
    for sale_id in sale_ids:
        sale = found.get(f"sale:{sale_id}")
        if sale is None or sale.outcome.decode() != seller.id:
            raise Rejected("unknown_sale", sale_id=sale_id, seller_id=seller.id)
        if f"invoiced:{sale_id}" in found:
            raise Rejected("already_invoiced", sale_id=sale_id)
    seller.trigger(
        seller.InvoiceRegistered, tx.now, invoice_ref=command.invoice_ref, sale_ids=sale_ids
    )
    for sale_id in sale_ids:
        tx.claim(f"invoiced:{sale_id}", command.invoice_ref.encode())
    return Outcome(type=command.type, sale_ids=sale_ids)
