"""Invoicing: a sale is invoiced once, by its seller (DESIGN §4 RegisterInvoice)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import CTI, DISTRIBUTOR, MASTER, network_ledger, rejection


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """A ledger on the in-memory store with the standard network."""
    with network_ledger(clock) as ledger:
        yield ledger


def purchase(lg: Ledger) -> str:
    """D1 buys a package from the master; the master's sale id."""
    outcome = lg.execute(
        {
            "type": "BuyPackage",
            "actor": DISTRIBUTOR,
            "buyer_id": DISTRIBUTOR,
            "seller_id": MASTER,
            "package_id": "P1000",
        }
    )
    (sale_id,) = outcome.sale_ids
    return sale_id


def invoice(seller_id: str, ref: str, *sale_ids: str, **extra: Any) -> dict[str, Any]:
    """RegisterInvoice."""
    return {
        "type": "RegisterInvoice",
        "actor": seller_id,
        "seller_id": seller_id,
        "invoice_ref": ref,
        "sale_ids": list(sale_ids),
        **extra,
    }


def test_a_seller_invoices_its_sales(lg: Ledger) -> None:
    """The master invoices two purchase sales under one reference."""
    first, second = purchase(lg), purchase(lg)
    assert lg.execute(invoice(MASTER, "F-1", first, second)).sale_ids == (first, second)


def test_a_transfer_is_a_sale_its_distributor_invoices(lg: Ledger) -> None:
    """A transfer's id is the sale id of the distributor that sent it."""
    lg.execute(
        {
            "type": "TransferStamps",
            "actor": DISTRIBUTOR,
            "transfer_id": "T1",
            "from_id": DISTRIBUTOR,
            "to_id": CTI,
            "quantity": 10,
            "amount": "50.00",
        }
    )
    assert lg.execute(invoice(DISTRIBUTOR, "F-9", "T1")).sale_ids == ("T1",)


def test_a_sale_is_invoiced_once(lg: Ledger) -> None:
    """Invoicing an invoiced sale under another reference is already_invoiced."""
    sale_id = purchase(lg)
    lg.execute(invoice(MASTER, "F-1", sale_id))
    rejected = rejection(lg, invoice(MASTER, "F-2", sale_id))
    assert rejected.code == "already_invoiced"
    assert rejected.details == {"sale_id": sale_id}


def test_a_sale_is_invoiced_once_within_a_batch(lg: Ledger) -> None:
    """Two invoices of one sale in one execute_many: the second is already_invoiced."""
    sale_id = purchase(lg)
    results = lg.execute_many([invoice(MASTER, "F-1", sale_id), invoice(MASTER, "F-2", sale_id)])
    assert [r.code if isinstance(r, Rejected) else "ok" for r in results] == [
        "ok",
        "already_invoiced",
    ]


def test_a_repeated_invoice_replays(lg: Ledger) -> None:
    """The same reference with the same sales is a retry."""
    sale_id = purchase(lg)
    lg.execute(invoice(MASTER, "F-1", sale_id))
    assert lg.execute(invoice(MASTER, "F-1", sale_id)).replayed is True


def test_an_invoice_reference_with_other_sales_is_idempotency_conflict(lg: Ledger) -> None:
    """A reference names one invoice of its seller."""
    first, second = purchase(lg), purchase(lg)
    lg.execute(invoice(MASTER, "F-1", first))
    assert rejection(lg, invoice(MASTER, "F-1", second)).code == "idempotency_conflict"


def test_another_sellers_sale_is_unknown_sale(lg: Ledger) -> None:
    """A distributor cannot invoice the master's sale."""
    sale_id = purchase(lg)
    assert rejection(lg, invoice(DISTRIBUTOR, "F-1", sale_id)).code == "unknown_sale"


def test_a_sale_listed_twice_is_invalid_command(lg: Ledger) -> None:
    """The list of sales has no repeats."""
    sale_id = purchase(lg)
    assert rejection(lg, invoice(MASTER, "F-1", sale_id, sale_id)).code == "invalid_command"


def test_invoicing_for_another_seller_is_not_authorised(lg: Ledger) -> None:
    """The actor must be the seller."""
    sale_id = purchase(lg)
    rejected = rejection(lg, invoice(MASTER, "F-1", sale_id, actor=DISTRIBUTOR))
    assert rejected.code == "not_authorised"
