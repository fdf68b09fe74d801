"""Billing per client (DESIGN §4 billing, §6 billing): every sale names the client it bills and
the account it credits, an invoice has one buyer, codes are sales, a reclaim is a credit line."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.api import Ledger
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.projections.billing import SaleRow
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    MASTER,
    buy,
    buy_seat,
    command,
    grant,
    network_fixture,
    package,
    register_client,
    rejection,
    transfer_points,
    transfer_stamps,
)

C2, C2_CTI = "C2", "C2-cti"

# D1 with stamps and points, its clients C1 and C2 (each with its default CTI), and D1's client
# package G10 (10 stamps for 9.00, valid 30 days).
lg = network_fixture(
    register_client(C2, email="c2@example.com"),
    package("G10", 10, "9.00", seller_id=DISTRIBUTOR, audience="client", validity_days=30),
    points=3000,
)


def sales(lg: Ledger, **filters: Any) -> list[SaleRow]:
    """D1's unbilled sales."""
    return lg.views.unbilled_sales(DISTRIBUTOR, **filters)


def sale(lg: Ledger, sale_id: str) -> SaleRow:
    """One of D1's unbilled sales."""
    (found,) = [s for s in sales(lg) if s.sale_id == sale_id]
    return found


def invoice(ref: str, *sale_ids: str, seller_id: str = DISTRIBUTOR) -> dict[str, Any]:
    """RegisterInvoice by the seller."""
    return command(
        "RegisterInvoice", seller_id, seller_id=seller_id, invoice_ref=ref, sale_ids=list(sale_ids)
    )


def reclaim(quantity: int, transfer_id: str = "R1", **extra: Any) -> dict[str, Any]:
    """D1 takes stamps back from C1's CTI."""
    fields = {"transfer_id": transfer_id, "from_cti_id": CTI, "quantity": quantity}
    return command("ReclaimStamps", DISTRIBUTOR, **fields, reason="falta de pago", **extra)


def issue(code_id: str = "K1", **extra: Any) -> dict[str, Any]:
    """D1 issues a code of 20 stamps for 15.00 (``extra`` overrides)."""
    fields = {"code_id": code_id, "distributor_id": DISTRIBUTOR, "unit": "stamps"}
    return command("IssueCreditCode", DISTRIBUTOR, **fields, quantity=20, amount="15.00") | extra


def redeem(outcome: Outcome, to_id: str = CTI, actor: str = CLIENT) -> dict[str, Any]:
    """The code of ``outcome`` redeemed to ``to_id``."""
    return command("RedeemCreditCode", actor, code=outcome.code, nip=outcome.nip, to_id=to_id)


def set_price(lg: Ledger, price: str = "0.50") -> None:
    """D1's bulk stamp price."""
    lg.execute(
        command("ChangeSettings", DISTRIBUTOR, seller_id=DISTRIBUTOR, bulk_stamp_price=price)
    )


# Buyer and account credited ------------------------------------------------------------------


def test_a_stamps_sale_bills_the_client_and_credits_its_cti(lg: Ledger) -> None:
    """A transfer to C1's CTI: buyer C1, to_id the CTI, source transfer."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    row = sale(lg, "T1")
    assert (row.buyer_id, row.to_id, row.source) == (CLIENT, CTI, "transfer")


def test_a_points_sale_bills_the_client_and_credits_its_wallet(lg: Ledger) -> None:
    """A points transfer: buyer and to_id are the client (its wallet)."""
    lg.execute(transfer_points(100, "P1"))
    row = sale(lg, "P1")
    assert (row.buyer_id, row.to_id, row.source, row.amount) == (
        CLIENT,
        CLIENT,
        "transfer",
        "100.00",
    )


def test_a_package_sale_bills_the_distributor(lg: Ledger) -> None:
    """The master's sale of a package: buyer and to_id D1, source package."""
    (sale_id,) = lg.execute(buy()).sale_ids
    (row,) = [s for s in lg.views.unbilled_sales(MASTER) if s.sale_id == sale_id]
    assert (row.buyer_id, row.to_id, row.source) == (DISTRIBUTOR, DISTRIBUTOR, "package")


def test_every_sale_to_a_client_is_listed_under_that_client(lg: Ledger) -> None:
    """Stamps, points, a client package, a panel purchase and a seat: all five under C1."""
    lg.execute(
        command("ChangeSettings", DISTRIBUTOR, seller_id=DISTRIBUTOR, allow_pcc_stamp_purchase=True)
    )
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(transfer_points(100, "P1"))
    lg.execute(grant("GR1", "G10"))
    panel = lg.execute(command("ClientBuyPackage", CLIENT, client_id=CLIENT, package_id="G10"))
    lg.execute(buy_seat())
    lg.execute(transfer_stamps(10, "T2", to_id=C2_CTI, amount="5.00"))
    mine = sales(lg, buyer_id=CLIENT)
    assert {(s.sale_id, s.source) for s in mine} == {
        ("T1", "transfer"),
        ("P1", "transfer"),
        ("GR1", "package"),
        (panel.sale_ids[0], "panel"),
        ("C1:seat:S1", "seat"),
    }
    assert {s.to_id for s in mine} == {CTI, CLIENT}
    assert [s.sale_id for s in sales(lg, buyer_id=C2)] == ["T2"]


def test_sales_are_filtered_by_source(lg: Ledger) -> None:
    """``source`` narrows the list; an unknown source is invalid_command."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(buy_seat())
    assert [s.sale_id for s in sales(lg, source="seat")] == ["C1:seat:S1"]
    assert [s.sale_id for s in sales(lg, source="transfer")] == ["T1"]
    assert sales(lg, source="licence") == []
    with pytest.raises(Rejected) as caught:
        sales(lg, source="gift")
    assert caught.value.code == "invalid_command"


# One buyer per invoice -----------------------------------------------------------------------


def test_an_invoice_of_two_clients_sales_is_mixed_buyers(lg: Ledger) -> None:
    """C1's and C2's sales cannot share an invoice; nothing is recorded."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(transfer_stamps(10, "T2", to_id=C2_CTI, amount="5.00"))
    rejected = rejection(lg, invoice("F-1", "T1", "T2"))
    assert rejected.code == "mixed_buyers"
    assert rejected.details["buyers"] == [CLIENT, C2]
    assert rejected.details["sale_of_each_buyer"] == {CLIENT: "T1", C2: "T2"}
    assert sale(lg, "T1").invoice_ref is None


def test_an_invoice_of_one_clients_stamps_and_points_is_accepted(lg: Ledger) -> None:
    """Sales to C1's CTI and to C1's wallet have one buyer."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(transfer_points(100, "P1"))
    assert lg.execute(invoice("F-1", "T1", "P1")).sale_ids == ("T1", "P1")
    assert [s.sale_id for s in sales(lg, buyer_id=CLIENT)] == []


# Reclaims --------------------------------------------------------------------------------------


def test_a_reclaim_records_a_negative_credit_line_for_the_client(lg: Ledger) -> None:
    """4 of T1's 10 stamps back at 2.00: a line of -4 stamps, -2.00, correcting T1."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    outcome = lg.execute(reclaim(4, amount="2.00"))
    assert outcome.sale_ids == ("R1:credit",)
    row = sale(lg, "R1:credit")
    assert (row.buyer_id, row.to_id, row.source) == (CLIENT, CTI, "reclaim")
    assert (row.quantity, row.amount, row.credit_for) == (-4, "-2.00", "T1")
    assert lg.verify().ok


def test_a_reclaim_and_the_sale_it_corrects_go_on_one_invoice(lg: Ledger) -> None:
    """The sale and its credit line: one buyer, one invoice."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(reclaim(4, amount="2.00"))
    assert lg.execute(invoice("F-1", "T1", "R1:credit")).sale_ids == ("T1", "R1:credit")


def test_a_reclaim_without_amount_takes_the_price_list_and_the_discount(lg: Ledger) -> None:
    """4 stamps at D1's 0.50, less C1's 10 %: -1.80."""
    set_price(lg)
    lg.execute(
        command(
            "UpdateClientProfile",
            DISTRIBUTOR,
            client_id=CLIENT,
            profile={**register_client(CLIENT)["profile"], "discount_pct": "10"},
        )
    )
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(reclaim(4))
    assert sale(lg, "R1:credit").amount == "-1.80"


def test_a_reclaim_without_amount_nor_price_list_is_price_unknown(lg: Ledger) -> None:
    """Nothing says what to give back: refused, nothing recorded, the stamps stay."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    assert rejection(lg, reclaim(4)).code == "price_unknown"
    assert lg.balance(CTI) == 10


def test_a_reclaim_corrects_the_sale_of_the_first_lot_it_takes_from(lg: Ledger) -> None:
    """A client package's lot expires first, so it is used (and reclaimed) first."""
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(grant("GR1", "G10"))
    lg.execute(reclaim(12, amount="6.00"))
    assert sale(lg, "R1:credit").credit_for == "GR1"


# Credit codes ----------------------------------------------------------------------------------


def test_issuing_a_code_records_a_sale(lg: Ledger) -> None:
    """The outcome names the sale; the row: source code, its code, no buyer yet."""
    outcome = lg.execute(issue())
    assert outcome.sale_ids == ("code:K1",)
    (row,) = sales(lg, source="code")
    assert (row.sale_id, row.code_id, row.buyer_id, row.redeemed_by) == ("code:K1", "K1", "", None)
    assert (row.unit, row.quantity, row.amount, row.to_id) == ("stamps", 20, "15.00", "K1")


def test_a_redeemed_codes_sale_is_billed_to_the_client_redeemed_for(lg: Ledger) -> None:
    """Redeemed to C1's CTI: the sale's buyer is C1 and it names the CTI."""
    outcome = lg.execute(issue())
    lg.execute(redeem(outcome))
    row = sale(lg, "code:K1")
    assert (row.buyer_id, row.redeemed_by) == (CLIENT, CTI)
    assert [s.sale_id for s in sales(lg, buyer_id=CLIENT)] == ["code:K1"]


def test_a_codes_sale_is_invoiced_with_its_redeemers_other_sales(lg: Ledger) -> None:
    """After redemption by C1 the code's sale goes on C1's invoice; a second invoice of it is
    already_invoiced."""
    outcome = lg.execute(issue())
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    lg.execute(redeem(outcome))
    assert lg.execute(invoice("F-1", "T1", "code:K1")).sale_ids == ("T1", "code:K1")
    assert rejection(lg, invoice("F-2", "code:K1")).code == "already_invoiced"


def test_a_code_not_redeemed_has_no_buyer_to_share_an_invoice_with(lg: Ledger) -> None:
    """Before redemption the code's sale goes on an invoice of its own (público en general),
    with other unredeemed codes, never with a client's sales."""
    lg.execute(issue("K1"))
    lg.execute(issue("K2"))
    lg.execute(transfer_stamps(10, "T1", amount="5.00"))
    assert rejection(lg, invoice("F-1", "T1", "code:K1")).code == "mixed_buyers"
    assert lg.execute(invoice("F-1", "code:K1", "code:K2")).sale_ids == ("code:K1", "code:K2")


def test_a_code_redeemed_to_a_wallet_bills_that_client(lg: Ledger) -> None:
    """A points code redeemed into C2's wallet: buyer C2, redeemed_by C2."""
    outcome = lg.execute(issue(unit="points", amount="20.00"))
    lg.execute(redeem(outcome, to_id=C2, actor=C2))
    row = sale(lg, "code:K1")
    assert (row.buyer_id, row.redeemed_by, row.unit) == (C2, C2, "points")


def test_a_reclaim_of_a_codes_stamps_corrects_the_codes_sale(lg: Ledger) -> None:
    """Stamps that came in by a code come back against the code's sale."""
    outcome = lg.execute(issue())
    lg.execute(redeem(outcome))
    lg.execute(reclaim(5, amount="3.75"))
    assert sale(lg, "R1:credit").credit_for == "code:K1"
