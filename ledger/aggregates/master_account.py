"""The master account: the platform that issues credits and sells packages to distributors."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from ledger.aggregates import common
from ledger.aggregates.common import Package, PackageSold, SubscriptionProduct, product_key
from ledger.domain import POINTS, STAMPS, Aggregate, Created, Event
from ledger.errors import Rejected


class MasterAccount(Aggregate):
    """The platform. It is the issuance source: its balance per unit is minus what it issued."""

    name: str
    rfc: str
    packages: dict[str, Package]
    issued: dict[str, int]
    settings: dict[str, Any]
    subscription_products: dict[str, SubscriptionProduct]
    admin_email: str | None

    snapshot_defaults: ClassVar[dict[str, Any]] = {
        "settings": dict,
        "subscription_products": dict,
        "admin_email": lambda: None,
    }

    class Opened(Created, frozen=True, kw_only=True):
        """The platform's master account was opened."""

        name: str
        rfc: str
        admin_email: str | None = None

        def apply(self, aggregate: MasterAccount) -> None:
            """Starts with no packages and nothing issued."""
            aggregate.name = self.name
            aggregate.rfc = self.rfc
            aggregate.packages = {}
            aggregate.issued = {STAMPS: 0, POINTS: 0}
            aggregate.settings = {}
            aggregate.subscription_products = {}
            aggregate.admin_email = self.admin_email

    class PackageDefined(common.PackageDefined, frozen=True, kw_only=True):
        """A package was added to (or replaced in) the catalogue."""

    class PackageRetired(common.PackageRetired, frozen=True, kw_only=True):
        """A package is no longer sold."""

    class SubscriptionProductDefined(Event, frozen=True, kw_only=True):
        """A yearly subscription was added to (or repriced in) the catalogue."""

        product: SubscriptionProduct

        def apply(self, aggregate: MasterAccount) -> None:
            """Keeps the product by its folded name."""
            aggregate.subscription_products[product_key(self.product.product)] = self.product

    class CreditsIssued(PackageSold, frozen=True, kw_only=True):
        """New credits were created and sold to ``buyer_id`` (the source side of a purchase)."""

        def apply(self, aggregate: MasterAccount) -> None:
            """Counts what was issued."""
            aggregate.issued[self.unit] += self.quantity

    class SettingsChanged(common.SettingsChanged, frozen=True, kw_only=True):
        """The network's default settings changed (only the fields given)."""

    class InvoiceRegistered(common.InvoiceRegistered, frozen=True, kw_only=True):
        """Sales were invoiced under ``invoice_ref``."""

    # Decisions -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls, master_id: str, name: str, rfc: str, at: datetime, admin_email: str | None = None
    ) -> MasterAccount:
        """Opens the master account."""
        return cls.create(cls.Opened, master_id, at, name=name, rfc=rfc, admin_email=admin_email)

    def define_package(self, package: Package, at: datetime) -> None:
        """Adds a package to the catalogue."""
        self.trigger(self.PackageDefined, at, package=package)

    def package(self, package_id: str) -> Package:
        """A package on sale, or ``unknown_package``."""
        found = self.packages.get(package_id)
        if found is None or found.retired:
            raise Rejected("unknown_package", package_id=package_id)
        return found

    def subscription_product(self, product: str) -> SubscriptionProduct:
        """A product of the subscription catalogue, or ``unknown_product``."""
        found = self.subscription_products.get(product_key(product))
        if found is None:
            raise Rejected("unknown_product", product=product, master_id=self.id)
        return found

    def balance(self, unit: str) -> int:
        """The issuance source's balance: minus everything issued."""
        return -self.issued[unit]

    def register_invoice(self, invoice_ref: str, sale_ids: tuple[str, ...], at: datetime) -> None:
        """Marks sales invoiced (the handler checked each exists, is ours and is not invoiced)."""
        self.trigger(self.InvoiceRegistered, at, invoice_ref=invoice_ref, sale_ids=sale_ids)
