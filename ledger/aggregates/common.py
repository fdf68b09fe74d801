"""Value objects shared by the aggregates."""

from __future__ import annotations

import unicodedata
from datetime import date, datetime

import msgspec

from ledger.domain import Event, Posting


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


class Sale(msgspec.Struct, frozen=True, kw_only=True):
    """A billable sale recorded for ``seller_id`` (the billing view's row)."""

    sale_id: str
    seller_id: str
    buyer_id: str
    at: datetime
    unit: str
    quantity: int
    amount_centavos: int
    reference: str
    paid_with: str = "money"


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
        return Sale(
            sale_id=self.sale_id,
            seller_id=self.originator_id,
            buyer_id=self.buyer_id,
            at=self.timestamp,
            unit=self.unit,
            quantity=self.quantity,
            amount_centavos=self.amount_centavos,
            reference=f"{self.count} x {self.package_id}",
            paid_with=self.pay_with,
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
