"""Value objects shared by the aggregates."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime
from typing import Any, Protocol

import msgspec

from ledger.domain import POINTS, SINK_SPENT, Event, Posting


class Package(msgspec.Struct, frozen=True, kw_only=True):
    """A package a seller offers: ``quantity`` units of ``unit`` for ``price_centavos``."""

    package_id: str
    unit: str
    quantity: int
    price_centavos: int
    audience: str
    validity_days: int | None = None
    services: tuple[str, ...] = ()
    retired: bool = False


MULTINIVEL = "multinivel"
MKL = "mkl"
SUBSCRIPTION_KINDS = (MULTINIVEL, MKL)


class SubscriptionProduct(msgspec.Struct, frozen=True, kw_only=True):
    """A yearly subscription in the master account's catalogue, at a pre-IVA list price."""

    product: str
    kind: str
    annual_price_centavos: int
    licence_points: int = 0


def product_key(product: str) -> str:
    """How subscriptions and licences are looked up: case, accents and spacing folded."""
    decomposed = unicodedata.normalize("NFKD", product)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def mkl_key(software: str) -> str:
    """The subscription key of the MKL of a software product ("Dóminus" → "mkl dominus")."""
    key = product_key(software)
    return key if key.startswith(f"{MKL} ") else f"{MKL} {key}"


# Where a sale comes from (the billing view's ``source``, DESIGN §6).
TRANSFER = "transfer"
PACKAGE = "package"
CODE = "code"
SEAT = "seat"
SUBSCRIPTION = "subscription"
LICENCE = "licence"
PANEL = "panel"
RECLAIM = "reclaim"
SALE_SOURCES = (TRANSFER, PACKAGE, CODE, SEAT, SUBSCRIPTION, LICENCE, PANEL, RECLAIM)
"""Every ``source`` a sale may have. No command records a ``licence`` sale: a licence is paid
in points, which were billed when they were sold."""


class Sale(msgspec.Struct, frozen=True, kw_only=True):
    """A billable sale recorded for ``seller_id`` (the billing view's row).

    ``buyer_id`` is who is billed: a distributor or a client (a CTI's client, never the CTI);
    "" for a credit code not redeemed yet. ``to_id`` is the account credited (a CTI, a wallet,
    a distributor, a code's book). A reclaim's credit line has a negative quantity and amount
    and names the sale it corrects in ``credit_for``.
    """

    sale_id: str
    seller_id: str
    buyer_id: str
    at: datetime
    unit: str
    quantity: int
    amount_centavos: int
    reference: str
    paid_with: str = "money"
    to_id: str = ""
    source: str = TRANSFER
    code_id: str | None = None
    credit_for: str | None = None


class SaleFact(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the key index keeps beside a sale id (``sale:<id>``): whose sale it is, to whom.

    ``buyer_id`` None: a sale recorded before buyers were kept there (its payload is the
    seller's id alone). ``code_id``: a credit code's sale, whose buyer is the client it is
    redeemed for (unknown, "", until then).
    """

    seller_id: str
    buyer_id: str | None = None
    code_id: str = ""


_FACT_ENCODER = msgspec.json.Encoder()
_FACT_DECODER = msgspec.json.Decoder(SaleFact)


def sale_fact(seller_id: str, buyer_id: str, code_id: str = "") -> bytes:
    """The key index's payload of a new sale."""
    return _FACT_ENCODER.encode(SaleFact(seller_id=seller_id, buyer_id=buyer_id, code_id=code_id))


def read_sale_fact(payload: bytes) -> SaleFact:
    """A sale's payload, new (JSON) or recorded before buyers were kept (the seller's id)."""
    if payload.startswith(b"{"):
        return _FACT_DECODER.decode(payload)
    return SaleFact(seller_id=payload.decode())


def code_sale_id(code_id: str) -> str:
    """The sale recorded when credit code ``code_id`` was issued."""
    return f"code:{code_id}"


def credit_sale_id(transfer_id: str) -> str:
    """The credit line a reclaim records."""
    return f"{transfer_id}:credit"


def sale_of_lot(lot_id: str) -> str:
    """The sale that brought a CTI's lot: a lot is named by its transfer, grant or purchase id
    (the sale id), or by a code's redemption (``code:<id>:redeemed``)."""
    if lot_id.startswith("code:") and lot_id.endswith(":redeemed"):
        return code_sale_id(lot_id.removeprefix("code:").removesuffix(":redeemed"))
    return lot_id


class SaleEvent(Event, frozen=True, kw_only=True):
    """An event that also records a billable sale for its aggregate (the seller)."""

    sale_id: str
    amount_centavos: int

    def sale(self) -> Sale:
        """The sale this event records."""
        raise NotImplementedError

    def keys(self) -> tuple[str, ...]:
        """A sale id is unique."""
        return (f"sale:{self.sale_id}",)

    def sale_between(
        self,
        seller_id: str,
        buyer_id: str,
        *,
        unit: str,
        quantity: int,
        reference: str,
        to_id: str,
        source: str,
        paid_with: str = "money",
        code_id: str | None = None,
        credit_for: str | None = None,
    ) -> Sale:
        """The sale this event records, under its sale id, at its time, for its amount."""
        return Sale(
            sale_id=self.sale_id,
            seller_id=seller_id,
            buyer_id=buyer_id,
            at=self.timestamp,
            unit=unit,
            quantity=quantity,
            amount_centavos=self.amount_centavos,
            reference=reference,
            paid_with=paid_with,
            to_id=to_id,
            source=source,
            code_id=code_id,
            credit_for=credit_for,
        )

    def sale_of_one(self, *, seller_id: str, unit: str, reference: str, source: str) -> Sale:
        """The sale of one ``unit`` (a seat's year, a subscription) by ``seller_id`` to the
        aggregate that records this event, which is billed and credited."""
        buyer_id = self.originator_id
        return self.sale_between(
            seller_id,
            buyer_id,
            unit=unit,
            quantity=1,
            reference=reference,
            to_id=buyer_id,
            source=source,
        )


class PackageSold(SaleEvent, frozen=True, kw_only=True):
    """The seller's leg of a package purchase: ``count`` packages to ``buyer_id``."""

    buyer_id: str
    unit: str
    quantity: int
    package_id: str
    count: int
    # Paid with points: the buyer's points went to the seller (a distributor) or were spent
    # (the master account); ``amount_centavos`` is still the price, 1 point = 1 MXN.
    pay_with: str = "money"
    points_paid: int = 0

    def postings(self) -> tuple[Posting, ...]:
        """The credits leave the seller (the master account: they are issued)."""
        return (
            Posting(self.originator_id, self.unit, -self.quantity, self.sale_id, self.buyer_id),
        )

    def sale(self) -> Sale:
        """The package sale to the buyer."""
        return self.sale_between(
            self.originator_id,
            self.buyer_id,
            unit=self.unit,
            quantity=self.quantity,
            reference=f"{self.count} x {self.package_id}",
            paid_with=self.pay_with,
            to_id=self.buyer_id,
            source=PACKAGE,
        )


class _Seller(Protocol):
    """An aggregate with a price list and settings (the master account, a distributor)."""

    packages: dict[str, Package]
    settings: dict[str, Any]


class _PointsHolder(Protocol):
    """An aggregate holding points (a client's wallet, a distributor's inventory)."""

    points: int


# The events below are the shared half of events that two aggregates record alike; each
# aggregate subclasses them under its own topic (``Client.PointsSpent``, ...), so the stored
# names and fields stay each aggregate's own.


class PackageDefined(Event, frozen=True, kw_only=True):
    """A package was added to (or replaced in) a seller's price list."""

    package: Package

    def apply(self, aggregate: _Seller) -> None:
        """Keeps the package by id."""
        aggregate.packages[self.package.package_id] = self.package


class PackageRetired(Event, frozen=True, kw_only=True):
    """A package of a seller's price list is no longer sold."""

    package_id: str

    def apply(self, aggregate: _Seller) -> None:
        """Marks the package retired."""
        old = aggregate.packages[self.package_id]
        aggregate.packages[self.package_id] = Package(
            **{**{f: getattr(old, f) for f in old.__struct_fields__}, "retired": True}
        )


class SettingsChanged(Event, frozen=True, kw_only=True):
    """A seller's settings changed (only the fields given)."""

    changes: dict[str, Any]

    def apply(self, aggregate: _Seller) -> None:
        """Merges the changes."""
        aggregate.settings.update(self.changes)


class InvoiceRegistered(Event, frozen=True, kw_only=True):
    """Sales of a seller were invoiced under ``invoice_ref``."""

    invoice_ref: str
    sale_ids: tuple[str, ...]

    def keys(self) -> tuple[str, ...]:
        """Each sale is invoiced once."""
        return tuple(f"invoiced:{s}" for s in self.sale_ids)


class PointsSpent(Event, frozen=True, kw_only=True):
    """Points of a holder left circulation paying for ``product``."""

    ref: str
    product: str
    quantity: int

    def apply(self, aggregate: _PointsHolder) -> None:
        """Takes from the holder's points."""
        aggregate.points -= self.quantity

    def postings(self) -> tuple[Posting, ...]:
        """Both legs: the holder to the spent sink."""
        return (
            Posting(self.originator_id, POINTS, -self.quantity, self.ref, SINK_SPENT),
            Posting(SINK_SPENT, POINTS, self.quantity, self.ref, self.originator_id),
        )


def points_ref(sale_id: str) -> str:
    """The movement of the points that paid for sale ``sale_id``."""
    return f"{sale_id}:points"


def add_days(day: date, days: int) -> date:
    """``day`` plus ``days`` calendar days."""
    return date.fromordinal(day.toordinal() + days)


def add_one_year(day: date) -> date:
    """The same calendar day next year (28 February for 29 February)."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return day.replace(year=day.year + 1, day=28)
