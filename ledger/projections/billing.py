"""The billing view: every billable sale per seller, and the invoices that cover them.

Sales come from the events that record one (``SaleEvent`` subclasses: package sales, transfers,
subscriptions); ``InvoiceRegistered`` (master account or distributor) marks its sales invoiced.
Amounts are kept in centavos (``amount_centavos``) and shown as "1500.00" strings in rows.
Year and month filters follow the Mexico City calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ledger.aggregates.common import SALE_SOURCES, SaleEvent, code_sale_id
from ledger.aggregates.credit_code import CreditCode
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.stamping_account import StampingAccount
from ledger.clock import MEXICO_CITY
from ledger.domain import Event
from ledger.errors import Rejected
from ledger.money import format_money
from ledger.projections.base import (
    PAGE_LIMIT_DEFAULT,
    Cursor,
    Dialect,
    Handler,
    Table,
    View,
    check_choice,
    check_page,
    chunks,
)

SALES = Table(
    "view_sales",
    (
        ("sale_id", "text"),
        ("seller_id", "text"),
        ("buyer_id", "text"),
        ("at", "ts"),
        ("unit", "text"),
        ("quantity", "int"),
        ("amount_centavos", "int"),
        ("reference", "text"),
        ("invoice_ref", "text"),
        ("paid_with", "text"),
        ("to_id", "text"),
        ("source", "text"),
        ("code_id", "text"),
        ("redeemed_by", "text"),
        ("credit_for", "text"),
    ),
    key=("sale_id",),
    indexes=(("seller_id", "at"), ("seller_id", "invoice_ref"), ("code_id",)),
)
INVOICES = Table(
    "view_invoices",
    (("seller_id", "text"), ("invoice_ref", "text"), ("at", "ts")),
    key=("seller_id", "invoice_ref"),
    indexes=(("seller_id", "at"),),
)

CREDIT_CODES = Table(
    "view_credit_codes",
    (
        ("code_id", "text"),
        ("distributor_id", "text"),
        ("unit", "text"),
        ("quantity", "int"),
        ("amount_centavos", "int"),
        ("state", "text"),
        ("redeemed_by", "text"),
        ("redeemed_at", "ts"),
        ("expires_on", "date"),
        ("issued_at", "ts"),
    ),
    key=("code_id",),
    indexes=(("distributor_id", "issued_at"),),
)

AUTO_TOP_UP_FAILURES = Table(
    "view_auto_top_up_failures",
    (
        ("cti_id", "text"),
        ("cfdi_uuid", "text"),
        ("distributor_id", "text"),
        ("at", "ts"),
        ("available", "int"),
        ("requested", "int"),
        ("reason", "text"),
    ),
    key=("cti_id", "cfdi_uuid"),
    indexes=(("distributor_id", "at"),),
)

SALE_UNITS = ("stamps", "points", "subscription", "seat")


@dataclass(frozen=True, slots=True)
class SaleRow:
    """A billable sale; ``invoice_ref`` None until invoiced, ``amount`` like "1500.00".

    ``buyer_id`` is who is billed: a distributor or a client ("" for a credit code nobody has
    redeemed yet); ``to_id`` the account credited (a CTI, a wallet, a distributor, a code).
    Sales recorded before buyers were kept show the buyer they were recorded with (for a
    stamps transfer, the CTI) and ``to_id`` equal to it. ``source`` is one of transfer,
    package, code, seat, subscription, licence, panel, reclaim; a code's sale names
    ``code_id`` and, once redeemed, ``redeemed_by`` (the CTI or wallet); a reclaim's credit
    line (negative quantity and amount) names the sale it corrects in ``credit_for``.
    """

    sale_id: str
    seller_id: str
    buyer_id: str
    at: datetime
    unit: str
    quantity: int
    amount: str
    invoice_ref: str | None
    reference: str
    paid_with: str = "money"
    to_id: str = ""
    source: str = "transfer"
    code_id: str | None = None
    redeemed_by: str | None = None
    credit_for: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    """An invoice registered by a seller, with the sales it covers."""

    invoice_ref: str
    seller_id: str
    at: datetime
    sales: tuple[SaleRow, ...]


@dataclass(frozen=True, slots=True)
class AutoTopUpFailureRow:
    """An automatic top-up that could not be sold (``reason``: insufficient_inventory,
    distributor_not_active or price_unknown; "" when recorded before reasons were)."""

    cti_id: str
    cfdi_uuid: str
    distributor_id: str
    at: datetime
    available: int
    requested: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CreditCodeRow:
    """A credit code a distributor issued (DESIGN §6 billing); never the code or its NIP.

    ``state`` is active, locked, redeemed, expired (also an active code past ``expires_on``,
    computed at query time) or cancelled; ``redeemed_by`` is the receptor (CTI or client).
    """

    code_id: str
    distributor_id: str
    unit: str
    quantity: int
    amount: str
    state: str
    redeemed_by: str | None
    redeemed_at: datetime | None
    expires_on: date | None
    issued_at: datetime

    @property
    def consumed(self) -> bool:
        """Whether the code was redeemed."""
        return self.state == "redeemed"


class _Buffer:
    """Sales, invoices and credit codes of one page."""

    __slots__ = (
        "code_sales_redeemed",
        "code_updates",
        "codes",
        "dialect",
        "failures",
        "invoiced",
        "invoices",
        "sales",
    )

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.sales: dict[str, list[Any]] = {}
        self.invoices: list[tuple[Any, ...]] = []
        self.invoiced: list[tuple[str, str]] = []
        self.codes: dict[str, list[Any]] = {}
        # (state, redeemed_by, redeemed_at, code_id) of codes issued in earlier pages.
        self.code_updates: dict[str, list[Any]] = {}
        # (buyer_id, redeemed_by, code_id) of code sales recorded in earlier pages.
        self.code_sales_redeemed: dict[str, tuple[str, str, str]] = {}
        self.failures: list[tuple[Any, ...]] = []

    def top_up_failed(self, event: StampingAccount.AutoTopUpFailed) -> None:
        """An automatic top-up the distributor could not cover."""
        self.failures.append(
            (
                event.originator_id,
                event.cfdi_uuid,
                event.distributor_id,
                self.dialect.ts(event.timestamp),
                event.available,
                event.requested,
                event.reason,
            )
        )

    def code_issued(self, event: CreditCode.Issued) -> None:
        """A new active code."""
        self.codes[event.originator_id] = [
            event.originator_id,
            event.distributor_id,
            event.unit,
            event.quantity,
            event.amount_centavos,
            "active",
            None,
            None,
            self.dialect.day(event.expires_on),
            self.dialect.ts(event.timestamp),
        ]

    def _code_state(self, code_id: str, state: str, by: str | None, at: datetime | None) -> None:
        row = self.codes.get(code_id)
        if row is not None:
            row[5], row[6], row[7] = state, by, self.dialect.ts(at)
            return
        update = self.code_updates.get(code_id)
        if update is None or state == "redeemed" or update[1] is None:
            self.code_updates[code_id] = [state, by, self.dialect.ts(at), code_id]

    def code_redeemed(self, event: CreditCode.Redeemed) -> None:
        """Redeemed to a CTI or wallet: its sale's buyer is now the client redeemed for."""
        code_id = event.originator_id
        self._code_state(code_id, "redeemed", event.to_id, event.timestamp)
        sale = self.sales.get(code_sale_id(code_id))
        if sale is not None:
            sale[2], sale[_REDEEMED_BY] = event.client_id, event.to_id
        else:
            self.code_sales_redeemed[code_id] = (event.client_id, event.to_id, code_id)

    def code_locked(self, event: CreditCode.Locked) -> None:
        """Locked by wrong NIPs."""
        self._code_state(event.originator_id, "locked", None, None)

    def code_cancelled(self, event: CreditCode.Cancelled) -> None:
        """Cancelled by its issuer."""
        self._code_state(event.originator_id, "cancelled", None, None)

    def code_expired(self, event: CreditCode.Expired) -> None:
        """Expiry recorded."""
        self._code_state(event.originator_id, "expired", None, None)

    def sale(self, event: SaleEvent) -> None:
        """A billable sale."""
        sale = event.sale()
        self.sales[sale.sale_id] = [
            sale.sale_id,
            sale.seller_id,
            sale.buyer_id,
            self.dialect.ts(sale.at),
            sale.unit,
            sale.quantity,
            sale.amount_centavos,
            sale.reference,
            None,
            sale.paid_with,
            sale.to_id,
            sale.source,
            sale.code_id,
            None,
            sale.credit_for,
        ]

    def invoice(
        self, event: MasterAccount.InvoiceRegistered | Distributor.InvoiceRegistered
    ) -> None:
        """Sales invoiced under a reference (a sale of this page is marked in memory)."""
        self.invoices.append(
            (event.originator_id, event.invoice_ref, self.dialect.ts(event.timestamp))
        )
        for sale_id in event.sale_ids:
            row = self.sales.get(sale_id)
            if row is not None:
                row[8] = event.invoice_ref
            else:
                self.invoiced.append((event.invoice_ref, sale_id))

    def flush(self, cursor: Cursor) -> None:
        """Inserts sales and invoices; marks earlier sales invoiced."""
        cursor.insert(SALES, list(self.sales.values()))
        cursor.insert(INVOICES, self.invoices)
        cursor.executemany("UPDATE view_sales SET invoice_ref = ? WHERE sale_id = ?", self.invoiced)
        cursor.executemany(
            "UPDATE view_sales SET buyer_id = ?, redeemed_by = ? WHERE code_id = ?",
            list(self.code_sales_redeemed.values()),
        )
        cursor.insert(CREDIT_CODES, list(self.codes.values()))
        cursor.insert(AUTO_TOP_UP_FAILURES, self.failures)
        cursor.executemany(
            "UPDATE view_credit_codes SET state = ?, redeemed_by = ?, redeemed_at = ? "
            "WHERE code_id = ?",
            list(self.code_updates.values()),
        )


class BillingView(View):
    """Sales and invoices."""

    name = "billing"
    version = 4
    tables = (SALES, INVOICES, CREDIT_CODES, AUTO_TOP_UP_FAILURES)
    buffer = _Buffer

    def handlers(self) -> dict[type[Event], Handler]:
        """Every event that records a sale; invoices."""
        return {
            SaleEvent: _Buffer.sale,
            MasterAccount.InvoiceRegistered: _Buffer.invoice,
            Distributor.InvoiceRegistered: _Buffer.invoice,
            CreditCode.Issued: _Buffer.code_issued,
            CreditCode.Redeemed: _Buffer.code_redeemed,
            CreditCode.Locked: _Buffer.code_locked,
            CreditCode.Cancelled: _Buffer.code_cancelled,
            CreditCode.Expired: _Buffer.code_expired,
            StampingAccount.AutoTopUpFailed: _Buffer.top_up_failed,
        }


_SALE_COLUMNS = (
    "sale_id, seller_id, buyer_id, at, unit, quantity, amount_centavos, invoice_ref, reference, "
    "paid_with, to_id, source, code_id, redeemed_by, credit_for"
)
_REDEEMED_BY = 13
"""The slot of ``redeemed_by`` in a buffered sale row (``SALES`` column order)."""


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _sale_row(dialect: Dialect, row: tuple[Any, ...]) -> SaleRow:
    sale_id, seller, buyer, at, unit, quantity, amount, invoice_ref, reference, paid_with = row[:10]
    to_id, source, code_id, redeemed_by, credit_for = row[10:]
    when = dialect.to_ts(at)
    assert when is not None
    return SaleRow(
        sale_id=str(sale_id),
        seller_id=str(seller),
        buyer_id=str(buyer),
        at=when,
        unit=str(unit),
        quantity=int(quantity),
        amount=format_money(int(amount)),
        invoice_ref=None if invoice_ref is None else str(invoice_ref),
        reference=str(reference),
        paid_with=str(paid_with),
        to_id=str(to_id),
        source=str(source),
        code_id=_text(code_id),
        redeemed_by=_text(redeemed_by),
        credit_for=_text(credit_for),
    )


def month_range(year: int, month: int | None) -> tuple[datetime, datetime]:
    """The instants a Mexico City month (or whole year) starts and ends, end excluded."""
    if not 2000 <= year <= 2200:
        raise Rejected("invalid_command", field="year", reason="2000 to 2200")
    if month is None:
        start = datetime(year, 1, 1, tzinfo=MEXICO_CITY)
        end = datetime(year + 1, 1, 1, tzinfo=MEXICO_CITY)
    else:
        if not 1 <= month <= 12:
            raise Rejected("invalid_command", field="month", reason="1 to 12")
        start = datetime(year, month, 1, tzinfo=MEXICO_CITY)
        end = (
            datetime(year + 1, 1, 1, tzinfo=MEXICO_CITY)
            if month == 12
            else datetime(year, month + 1, 1, tzinfo=MEXICO_CITY)
        )
    return start, end


def unbilled_sales(
    cursor: Cursor,
    seller_id: str,
    *,
    year: int | None = None,
    month: int | None = None,
    unit: str | None = None,
    buyer_id: str | None = None,
    source: str | None = None,
    limit: int = PAGE_LIMIT_DEFAULT,
    offset: int = 0,
) -> list[SaleRow]:
    """The seller's sales not invoiced yet, oldest first."""
    check_page(limit, offset)
    check_choice("unit", unit, SALE_UNITS)
    check_choice("source", source, SALE_SOURCES)
    dialect = cursor.dialect
    where = ["seller_id = ?", "invoice_ref IS NULL"]
    params: list[Any] = [seller_id]
    if month is not None and year is None:
        raise Rejected("invalid_command", field="month", reason="needs a year")
    if year is not None:
        start, end = month_range(year, month)
        where.append("at >= ? AND at < ?")
        params += [dialect.ts(start), dialect.ts(end)]
    if unit is not None:
        where.append("unit = ?")
        params.append(unit)
    if buyer_id is not None:
        where.append("buyer_id = ?")
        params.append(buyer_id)
    if source is not None:
        where.append("source = ?")
        params.append(source)
    cursor.execute(
        f"SELECT {_SALE_COLUMNS} FROM view_sales WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY at, sale_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [_sale_row(dialect, row) for row in cursor.fetchall()]


def invoices(
    cursor: Cursor, seller_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
) -> list[InvoiceRow]:
    """The seller's invoices, newest first, each with its sales."""
    check_page(limit, offset)
    dialect = cursor.dialect
    cursor.execute(
        "SELECT invoice_ref, at FROM view_invoices WHERE seller_id = ? "
        "ORDER BY at DESC, invoice_ref LIMIT ? OFFSET ?",
        (seller_id, limit, offset),
    )
    found = cursor.fetchall()
    sales: dict[str, list[SaleRow]] = {str(ref): [] for ref, _ in found}
    for chunk in chunks(list(sales), 500):
        marks = ", ".join("?" * len(chunk))
        cursor.execute(
            f"SELECT {_SALE_COLUMNS} FROM view_sales WHERE seller_id = ? "  # noqa: S608
            f"AND invoice_ref IN ({marks}) ORDER BY at, sale_id",
            [seller_id, *chunk],
        )
        for row in cursor.fetchall():
            sale = _sale_row(dialect, row)
            assert sale.invoice_ref is not None
            sales[sale.invoice_ref].append(sale)
    rows = []
    for ref, at in found:
        when = dialect.to_ts(at)
        assert when is not None
        rows.append(
            InvoiceRow(invoice_ref=str(ref), seller_id=seller_id, at=when, sales=tuple(sales[ref]))
        )
    return rows


_CODE_COLUMNS = (
    "code_id, distributor_id, unit, quantity, amount_centavos, state, redeemed_by, redeemed_at, "
    "expires_on, issued_at"
)
CODE_STATES = ("active", "locked", "redeemed", "expired", "cancelled")


def credit_codes(
    cursor: Cursor,
    distributor_id: str,
    today: date,
    *,
    state: str | None = None,
    limit: int = PAGE_LIMIT_DEFAULT,
    offset: int = 0,
) -> list[CreditCodeRow]:
    """The codes a distributor issued, newest first; an active code past its date is expired."""
    check_page(limit, offset)
    check_choice("state", state, CODE_STATES)
    dialect = cursor.dialect
    where = ["distributor_id = ?"]
    params: list[Any] = [distributor_id]
    # An active code past its date is expired from that day on, even before that is recorded.
    if state == "active":
        where.append("state = 'active' AND (expires_on IS NULL OR expires_on >= ?)")
        params.append(dialect.day(today))
    elif state == "expired":
        where.append("(state = 'expired' OR (state = 'active' AND expires_on < ?))")
        params.append(dialect.day(today))
    elif state is not None:
        where.append("state = ?")
        params.append(state)
    cursor.execute(
        f"SELECT {_CODE_COLUMNS} FROM view_credit_codes WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY issued_at DESC, code_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    rows = []
    for (
        code_id,
        issuer,
        unit,
        quantity,
        amount,
        stored,
        by,
        at,
        expires,
        issued,
    ) in cursor.fetchall():
        expires_on = dialect.to_day(expires)
        shown = str(stored)
        if shown == "active" and expires_on is not None and today > expires_on:
            shown = "expired"
        issued_at = dialect.to_ts(issued)
        assert issued_at is not None
        rows.append(
            CreditCodeRow(
                code_id=str(code_id),
                distributor_id=str(issuer),
                unit=str(unit),
                quantity=int(quantity),
                amount=format_money(int(amount)),
                state=shown,
                redeemed_by=None if by is None else str(by),
                redeemed_at=dialect.to_ts(at),
                expires_on=expires_on,
                issued_at=issued_at,
            )
        )
    return rows


def auto_top_up_failures(
    cursor: Cursor, distributor_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
) -> list[AutoTopUpFailureRow]:
    """The distributor's automatic top-ups that failed, newest first."""
    check_page(limit, offset)
    dialect = cursor.dialect
    cursor.execute(
        "SELECT cti_id, cfdi_uuid, distributor_id, at, available, requested, reason "
        "FROM view_auto_top_up_failures WHERE distributor_id = ? "
        "ORDER BY at DESC, cti_id, cfdi_uuid LIMIT ? OFFSET ?",
        (distributor_id, limit, offset),
    )
    rows = []
    for cti_id, cfdi_uuid, distributor, at, available, requested, reason in cursor.fetchall():
        when = dialect.to_ts(at)
        assert when is not None
        rows.append(
            AutoTopUpFailureRow(
                cti_id=str(cti_id),
                cfdi_uuid=str(cfdi_uuid),
                distributor_id=str(distributor),
                at=when,
                available=int(available),
                requested=int(requested),
                reason=str(reason or ""),
            )
        )
    return rows
