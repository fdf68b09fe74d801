"""A distributor: a reseller with a stamp and point inventory, a status and a network position."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from ledger.aggregates import common
from ledger.aggregates.common import (
    CODE,
    RECLAIM,
    SUBSCRIPTION,
    TRANSFER,
    Package,
    PackageSold,
    Sale,
    SaleEvent,
    add_days,
    points_ref,
    product_key,
)
from ledger.domain import POINTS, SINK_SPENT, STAMPS, Aggregate, Created, Event, Posting
from ledger.errors import Rejected

UNVALIDATED = "unvalidated"
UNACTIVATED = "unactivated"
ACTIVE = "active"
SUSPENDED = "suspended"
EXPIRED = "expired"
CANCELLED = "cancelled"
PURGED = "purged"
STATUSES = (UNVALIDATED, UNACTIVATED, ACTIVE, SUSPENDED, EXPIRED, CANCELLED, PURGED)

PURGE_AFTER_DAYS = 30
"""A cancelled distributor may be purged this many days after its cancellation."""

# The status machine of DESIGN §4: command -> {from status: to status}. Expiry is the clock's.
TRANSITIONS: dict[str, dict[str, str]] = {
    "validate": {UNVALIDATED: UNACTIVATED},
    "activate": {UNACTIVATED: ACTIVE},
    "suspend": {ACTIVE: SUSPENDED},
    "reactivate": {SUSPENDED: ACTIVE},
    "renew": {ACTIVE: ACTIVE, EXPIRED: ACTIVE},
    # The manual's Active tab offers "Cancelar" too.
    "cancel": {ACTIVE: CANCELLED, EXPIRED: CANCELLED, SUSPENDED: CANCELLED},
}


def subscription_key(product: str) -> str:
    """Subscriptions are kept by folded product name (``multinivel``, ``mkl dominus``)."""
    return product_key(product)


class Distributor(Aggregate):
    """A reseller. Holds stamps and points; sells to its clients and sub-distributors."""

    parent_id: str
    # The master account at the root of its network; "" when registered before the field existed.
    master_id: str = ""
    profile: dict[str, Any]
    status: str
    expires_on: date | None
    cancelled_on: date | None
    stamps: int
    points: int
    subscriptions: dict[str, date]
    packages: dict[str, Package]
    settings: dict[str, Any]
    converted_from: str | None

    snapshot_defaults: ClassVar[dict[str, Any]] = {"converted_from": lambda: None}

    class Registered(Created, frozen=True, kw_only=True):
        """The distributor was registered under ``parent_id``."""

        parent_id: str
        profile: dict[str, Any]
        converted_from: str | None = None
        master_id: str = ""

        def apply(self, aggregate: Distributor) -> None:
            """Starts unvalidated with empty inventory."""
            aggregate.converted_from = self.converted_from
            aggregate.parent_id = self.parent_id
            aggregate.master_id = self.master_id
            aggregate.profile = self.profile
            aggregate.status = UNVALIDATED
            aggregate.expires_on = None
            aggregate.cancelled_on = None
            aggregate.stamps = 0
            aggregate.points = 0
            aggregate.subscriptions = {}
            aggregate.packages = {}
            # Unset settings fall back to the master account's, then to the ledger's defaults
            # (``ledger.commands.pricing``).
            aggregate.settings = {}

    class StatusChanged(Event, frozen=True, kw_only=True):
        """The distributor's status moved (base of the status events)."""

        new_status: str = ""

        def apply(self, aggregate: Distributor) -> None:
            """Sets the new status."""
            aggregate.status = self.new_status

    class Validated(StatusChanged, frozen=True, kw_only=True):
        """The parent validated the distributor's data."""

        new_status: str = UNACTIVATED

    class Activated(StatusChanged, frozen=True, kw_only=True):
        """The distributor became active until ``expires_on``."""

        new_status: str = ACTIVE
        expires_on: date

        def apply(self, aggregate: Distributor) -> None:
            """Sets status and expiry."""
            aggregate.status = ACTIVE
            aggregate.expires_on = self.expires_on

    class Suspended(StatusChanged, frozen=True, kw_only=True):
        """The parent suspended the distributor."""

        new_status: str = SUSPENDED

    class Reactivated(StatusChanged, frozen=True, kw_only=True):
        """A suspended distributor is active again."""

        new_status: str = ACTIVE

    class Renewed(StatusChanged, frozen=True, kw_only=True):
        """The distributor's expiry moved to ``expires_on``."""

        new_status: str = ACTIVE
        expires_on: date

        def apply(self, aggregate: Distributor) -> None:
            """Active until the new date."""
            aggregate.status = ACTIVE
            aggregate.expires_on = self.expires_on

    class Expired(StatusChanged, frozen=True, kw_only=True):
        """The clock passed ``expires_on``."""

        new_status: str = EXPIRED

    class Cancelled(StatusChanged, frozen=True, kw_only=True):
        """The parent cancelled the distributor; it is purged 30 days later."""

        new_status: str = CANCELLED
        on: date

        def apply(self, aggregate: Distributor) -> None:
            """Remembers when, for the purge."""
            aggregate.status = CANCELLED
            aggregate.cancelled_on = self.on

    class Purged(StatusChanged, frozen=True, kw_only=True):
        """Personal data of the distributor and its clients leaves the read side.

        The events stay (DESIGN §3.5): the read side blanks names, RFCs, e-mails, phones,
        addresses and contacts of the distributor and of its clients in every view table.
        """

        new_status: str = PURGED

    class PackageDefined(common.PackageDefined, frozen=True, kw_only=True):
        """A package was added to the distributor's price list."""

    class PackageRetired(common.PackageRetired, frozen=True, kw_only=True):
        """A package of the price list is no longer sold."""

    class SettingsChanged(common.SettingsChanged, frozen=True, kw_only=True):
        """Global settings changed (only the fields given)."""

    class PackageBought(Event, frozen=True, kw_only=True):
        """Credits bought from ``seller_id`` entered the inventory."""

        seller_id: str
        package_id: str
        count: int
        unit: str
        quantity: int
        sale_id: str
        amount_centavos: int
        pay_with: str
        # Paid with points: they went to ``points_to`` (the seller, or the spent sink when the
        # master account sold).
        points_paid: int = 0
        points_to: str = ""

        def apply(self, aggregate: Distributor) -> None:
            """Adds to the inventory; takes the points paid."""
            aggregate.add(self.unit, self.quantity)
            if self.points_paid:
                aggregate.add(POINTS, -self.points_paid)

        def postings(self) -> tuple[Posting, ...]:
            """The buyer's leg of the purchase, and of its payment in points."""
            legs = [
                Posting(self.originator_id, self.unit, self.quantity, self.sale_id, self.seller_id)
            ]
            if self.points_paid:
                ref = points_ref(self.sale_id)
                legs.append(
                    Posting(self.originator_id, POINTS, -self.points_paid, ref, self.points_to)
                )
                if self.points_to == SINK_SPENT:
                    legs.append(
                        Posting(SINK_SPENT, POINTS, self.points_paid, ref, self.originator_id)
                    )
            return tuple(legs)

    class CreditsSold(PackageSold, frozen=True, kw_only=True):
        """This distributor sold a package to ``buyer_id`` (the seller's leg of a purchase)."""

        def apply(self, aggregate: Distributor) -> None:
            """Takes from the inventory; receives the points paid."""
            aggregate.add(self.unit, -self.quantity)
            if self.points_paid:
                aggregate.add(POINTS, self.points_paid)

        def postings(self) -> tuple[Posting, ...]:
            """The seller's leg of the sale, and of the points it was paid with."""
            legs = super().postings()
            if not self.points_paid:
                return legs
            ref = points_ref(self.sale_id)
            return (
                *legs,
                Posting(self.originator_id, POINTS, self.points_paid, ref, self.buyer_id),
            )

    class CreditsTransferred(SaleEvent, frozen=True, kw_only=True):
        """Credits left the inventory for ``to_id`` (the debit leg of a transfer and a sale).

        ``buyer_id`` is who is billed: the client of a CTI or wallet, or the sub-distributor.
        Transfers recorded before it existed keep their old buyer, ``to_id`` (a CTI for
        stamps). ``source``: ``transfer``, ``package`` (a client package granted) or ``panel``
        (the client's own purchase); ``transfer`` for those recorded before it existed.
        """

        transfer_id: str
        to_id: str
        unit: str
        quantity: int
        buyer_id: str = ""
        source: str = TRANSFER

        def apply(self, aggregate: Distributor) -> None:
            """Takes from the inventory."""
            aggregate.add(self.unit, -self.quantity)

        def postings(self) -> tuple[Posting, ...]:
            """The debit leg."""
            return (
                Posting(
                    self.originator_id, self.unit, -self.quantity, self.transfer_id, self.to_id
                ),
            )

        def sale(self) -> Sale:
            """A transfer is a billable sale to its receiver."""
            return self.sale_between(
                self.originator_id,
                self.buyer_id or self.to_id,
                unit=self.unit,
                quantity=self.quantity,
                reference=self.transfer_id,
                to_id=self.to_id,
                source=self.source,
            )

    class CodeSold(SaleEvent, frozen=True, kw_only=True):
        """Credit code ``code_id`` was issued: a sale whose buyer is whoever redeems it.

        Its credits left the inventory by ``CreditsSetAside`` in the same transaction; this
        event moves nothing, it records the sale (DESIGN §4: issuing a code is a sale).
        """

        code_id: str
        unit: str
        quantity: int

        def sale(self) -> Sale:
            """A sale to nobody known yet (``buyer_id`` ""), credited to the code's book."""
            return self.sale_between(
                self.originator_id,
                "",
                unit=self.unit,
                quantity=self.quantity,
                reference=self.code_id,
                to_id=self.code_id,
                source=CODE,
                code_id=self.code_id,
            )

    class ReclaimCredited(SaleEvent, frozen=True, kw_only=True):
        """A reclaim's credit line: ``quantity`` stamps taken back from ``cti_id`` are credited
        to its client ``buyer_id`` (``amount_centavos`` is negative), correcting ``credit_for``.

        It moves nothing (the stamps moved by ``CreditsReceived``); it is billable, so that an
        invoice (a credit note) can include it.
        """

        transfer_id: str
        cti_id: str
        buyer_id: str
        quantity: int
        credit_for: str

        def sale(self) -> Sale:
            """A negative line: quantity and amount below zero."""
            return self.sale_between(
                self.originator_id,
                self.buyer_id,
                unit=STAMPS,
                quantity=-self.quantity,
                reference=self.transfer_id,
                to_id=self.cti_id,
                source=RECLAIM,
                credit_for=self.credit_for,
            )

    class CreditsReceived(Event, frozen=True, kw_only=True):
        """Credits came in from ``from_id`` (a parent's transfer, a reclaim, a redeemed code)."""

        transfer_id: str
        from_id: str
        unit: str
        quantity: int
        reason: str = "transfer"

        def apply(self, aggregate: Distributor) -> None:
            """Adds to the inventory."""
            aggregate.add(self.unit, self.quantity)

        def postings(self) -> tuple[Posting, ...]:
            """The credit leg."""
            return (
                Posting(
                    self.originator_id, self.unit, self.quantity, self.transfer_id, self.from_id
                ),
            )

    class CreditsSetAside(Event, frozen=True, kw_only=True):
        """Credits left the inventory into credit code ``code_id``'s own book."""

        code_id: str
        unit: str
        quantity: int

        def apply(self, aggregate: Distributor) -> None:
            """Takes from the inventory."""
            aggregate.add(self.unit, -self.quantity)

        def postings(self) -> tuple[Posting, ...]:
            """The issuer's leg of the set-aside (the code's is ``CreditCode.Issued``)."""
            ref = f"code:{self.code_id}:issued"
            return (Posting(self.originator_id, self.unit, -self.quantity, ref, self.code_id),)

    class SubscriptionContracted(SaleEvent, frozen=True, kw_only=True):
        """A Multinivel or MKL subscription runs until ``expires_on``; ``seller_id`` sold it.

        ``seller_id`` is the master account whose catalogue lists the product (events recorded
        before the catalogue existed name the parent). ``months`` were charged, plus IVA.
        """

        product: str
        expires_on: date
        seller_id: str
        kind: str = ""
        months: int = 0

        def apply(self, aggregate: Distributor) -> None:
            """Keeps the subscription's expiry."""
            aggregate.subscriptions[subscription_key(self.product)] = self.expires_on

        def sale(self) -> Sale:
            """Recorded on the buyer's stream; the seller is the parent."""
            return self.sale_of_one(
                seller_id=self.seller_id,
                unit="subscription",
                reference=self.product,
                source=SUBSCRIPTION,
            )

    class SubscriptionRenewed(SubscriptionContracted, frozen=True, kw_only=True):
        """The distributor's renewal extended a subscription to ``expires_on`` and charged it."""

    class PointsSpent(common.PointsSpent, frozen=True, kw_only=True):
        """Points of the inventory left circulation paying for ``product`` (a client's licence)."""

    class InvoiceRegistered(common.InvoiceRegistered, frozen=True, kw_only=True):
        """Sales of this distributor were invoiced under ``invoice_ref``."""

    # State helpers (used by apply: no rules here) -----------------------------------------

    def add(self, unit: str, quantity: int) -> None:
        """Changes the inventory of ``unit`` by ``quantity``."""
        if unit == STAMPS:
            self.stamps += quantity
        else:
            self.points += quantity

    # Queries -------------------------------------------------------------------------------

    def balance(self, unit: str) -> int:
        """The inventory of ``unit``."""
        return self.stamps if unit == STAMPS else self.points

    def status_on(self, today: date) -> str:
        """The status with the clock applied: an active distributor past its expiry is expired.

        A cancelled distributor stays cancelled until its purge is recorded (``purge``).
        """
        if self.status == ACTIVE and self.expires_on is not None and today > self.expires_on:
            return EXPIRED
        return self.status

    def purge_on(self) -> date | None:
        """The first day a cancelled distributor may be purged."""
        if self.cancelled_on is None:
            return None
        return add_days(self.cancelled_on, PURGE_AFTER_DAYS)

    def has_subscription(self, product: str, today: date) -> bool:
        """Whether a subscription to ``product`` runs on ``today``."""
        until = self.subscriptions.get(subscription_key(product))
        return until is not None and today <= until

    # Decisions -----------------------------------------------------------------------------

    @classmethod
    def register(
        cls,
        distributor_id: str,
        parent_id: str,
        profile: dict[str, Any],
        at: datetime,
        *,
        master_id: str,
        converted_from: str | None = None,
    ) -> Distributor:
        """Registers a new, unvalidated distributor in the network of ``master_id``
        (``converted_from``: the client it was)."""
        return cls.create(
            cls.Registered,
            distributor_id,
            at,
            parent_id=parent_id,
            profile=profile,
            master_id=master_id,
            converted_from=converted_from,
        )

    def require_active(self, today: date) -> None:
        """Rejects with ``distributor_not_active`` unless active on ``today``."""
        status = self.status_on(today)
        if status != ACTIVE:
            raise Rejected("distributor_not_active", distributor_id=self.id, status=status)

    def require_inventory(self, unit: str, quantity: int) -> None:
        """Rejects unless the inventory covers ``quantity``."""
        have = self.balance(unit)
        if have < quantity:
            code = "insufficient_inventory" if unit == STAMPS else "insufficient_points"
            raise Rejected(code, available=have, requested=quantity, holder_id=self.id)

    def settle_clock(self, today: date, at: datetime) -> None:
        """Records the clock's status move (expiry) when it is due."""
        if self.status_on(today) == EXPIRED and self.status != EXPIRED:
            self.trigger(self.Expired, at)

    def purge(self, today: date, at: datetime) -> None:
        """Records the purge, or ``invalid_transition`` unless cancelled 30 days ago or more."""
        purge_on = self.purge_on()
        if self.status != CANCELLED or purge_on is None or today < purge_on:
            raise Rejected(
                "invalid_transition",
                action="purge",
                status=self.status_on(today),
                purge_on=None if purge_on is None else purge_on.isoformat(),
            )
        self.trigger(self.Purged, at)

    def spend_points(self, ref: str, product: str, quantity: int, at: datetime) -> None:
        """Pays ``quantity`` points of the inventory or rejects with ``insufficient_points``."""
        self.require_inventory(POINTS, quantity)
        self.trigger(self.PointsSpent, at, ref=ref, product=product, quantity=quantity)

    def move(self, action: str, today: date, at: datetime, expires_on: date | None = None) -> None:
        """Applies a status command (``TRANSITIONS``) or rejects with ``invalid_transition``."""
        current = self.status_on(today)
        target = TRANSITIONS[action].get(current)
        if target is None:
            raise Rejected("invalid_transition", action=action, status=current)
        if action in ("activate", "renew"):
            assert expires_on is not None
            if expires_on < today:
                raise Rejected("invalid_command", field="expires_on", reason="in the past")
            if action == "renew" and self.expires_on is not None and expires_on <= self.expires_on:
                raise Rejected(
                    "invalid_command", field="expires_on", reason="renewal must move expiry later"
                )
        self.settle_clock(today, at)
        fields: dict[str, Any] = {}
        if action in ("activate", "renew"):
            fields["expires_on"] = expires_on
        elif action == "cancel":
            fields["on"] = today
        self.trigger(STATUS_EVENTS[action], at, **fields)


STATUS_EVENTS: dict[str, type[Distributor.StatusChanged]] = {
    "validate": Distributor.Validated,
    "activate": Distributor.Activated,
    "suspend": Distributor.Suspended,
    "reactivate": Distributor.Reactivated,
    "renew": Distributor.Renewed,
    "cancel": Distributor.Cancelled,
}
"""The event each status command of ``TRANSITIONS`` records."""
