"""A distributor's client: profile, classification, points wallet and licences."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

import msgspec

from ledger.aggregates import common
from ledger.aggregates.common import SEAT, Sale, SaleEvent
from ledger.domain import POINTS, Aggregate, Created, Event, Posting
from ledger.errors import Rejected


class Seat(msgspec.Struct, kw_only=True):
    """An extra-user seat: valid until ``expires_on``, held by ``user_id`` (kept if deleted)."""

    expires_on: date
    user_id: str | None = None


class SeatSold(SaleEvent, frozen=True, kw_only=True):
    """A year of seat ``seat_id``, until ``expires_on``, sold to the client by its distributor
    ``seller_id`` (the shared half of ``Client.SeatBought`` and ``Client.SeatRenewed``)."""

    seat_id: str
    seller_id: str
    expires_on: date

    def sale(self) -> Sale:
        """A billable sale of the distributor to this client."""
        return self.sale_of_one(
            seller_id=self.seller_id, unit="seat", reference=self.seat_id, source=SEAT
        )


class Client(Aggregate):
    """A customer of a distributor. Its stamps live in its stamping accounts; points live here."""

    distributor_id: str
    # The master account of its network; "" when registered before the field existed.
    master_id: str = ""
    nic: str
    profile: dict[str, Any]
    favourite: bool
    dropped: bool
    colour: str | None
    admin_email: str | None
    admin_mobile: str | None
    points: int
    licences: dict[str, date]
    converted_to: str | None
    default_cti_id: str
    seats: dict[str, Seat]

    snapshot_defaults: ClassVar[dict[str, Any]] = {"default_cti_id": str, "seats": dict}

    class Registered(Created, frozen=True, kw_only=True):
        """The client was registered by ``distributor_id``."""

        distributor_id: str
        nic: str
        profile: dict[str, Any]
        # The default CTI opened with the client (events before this field: the derived id).
        cti_id: str = ""
        master_id: str = ""

        def apply(self, aggregate: Client) -> None:
            """Starts with an empty wallet and no tags."""
            aggregate.default_cti_id = self.cti_id or f"{self.originator_id}-cti"
            aggregate.distributor_id = self.distributor_id
            aggregate.master_id = self.master_id
            aggregate.nic = self.nic
            aggregate.profile = self.profile
            aggregate.favourite = False
            aggregate.dropped = False
            aggregate.colour = None
            aggregate.admin_email = None
            aggregate.admin_mobile = None
            aggregate.points = 0
            aggregate.licences = {}
            aggregate.converted_to = None
            aggregate.seats = {}

    class ProfileChanged(Event, frozen=True, kw_only=True):
        """The client's profile is now ``profile`` (whole, as it results from the change).

        ``changed`` names the fields the command named (set or cleared); events recorded before
        partial changes existed have none: their command replaced the whole profile.
        """

        profile: dict[str, Any]
        changed: tuple[str, ...] = ()

        def apply(self, aggregate: Client) -> None:
            """Keeps the new profile."""
            aggregate.profile = self.profile

    class Tagged(Event, frozen=True, kw_only=True):
        """Classification changed (only the fields given; ``colour`` ``""`` clears it)."""

        favourite: bool | None = None
        dropped: bool | None = None
        colour: str | None = None

        def apply(self, aggregate: Client) -> None:
            """Merges the given tags."""
            if self.favourite is not None:
                aggregate.favourite = self.favourite
            if self.dropped is not None:
                aggregate.dropped = self.dropped
            if self.colour is not None:
                aggregate.colour = self.colour or None

    class AdminProfileAssigned(Event, frozen=True, kw_only=True):
        """The client's administrator login was set."""

        email: str
        mobile: str

        def apply(self, aggregate: Client) -> None:
            """Keeps the admin profile."""
            aggregate.admin_email = self.email
            aggregate.admin_mobile = self.mobile

    class PointsCredited(Event, frozen=True, kw_only=True):
        """Points came into the wallet from ``from_id``."""

        transfer_id: str
        from_id: str
        quantity: int

        def apply(self, aggregate: Client) -> None:
            """Adds to the wallet."""
            aggregate.points += self.quantity

        def postings(self) -> tuple[Posting, ...]:
            """The credit leg."""
            return (
                Posting(self.originator_id, POINTS, self.quantity, self.transfer_id, self.from_id),
            )

    class PointsSpent(common.PointsSpent, frozen=True, kw_only=True):
        """Points left circulation paying for ``product``."""

    class LicenceGenerated(Event, frozen=True, kw_only=True):
        """A licence ``licence_id`` of ``product`` runs until ``expires_on``.

        ``points`` paid for it left ``paid_by`` (this client's wallet or its distributor's
        inventory: the ``PointsSpent`` event of the same ``ref``).
        """

        product: str
        expires_on: date
        licence_id: str = ""
        points: int = 0
        paid_by: str = ""

        def apply(self, aggregate: Client) -> None:
            """Keeps the latest expiry per product."""
            current = aggregate.licences.get(self.product)
            if current is None or current < self.expires_on:
                aggregate.licences[self.product] = self.expires_on

    class SeatBought(SeatSold, frozen=True, kw_only=True):
        """The distributor ``seller_id`` sold the client an extra-user seat for a year."""

        def apply(self, aggregate: Client) -> None:
            """A free seat."""
            aggregate.seats[self.seat_id] = Seat(expires_on=self.expires_on)

    class SeatRenewed(SeatSold, frozen=True, kw_only=True):
        """The distributor ``seller_id`` sold the client another year of seat ``seat_id``: a
        lapsed seat runs again from the day of the renewal, a running one from its expiry."""

        def apply(self, aggregate: Client) -> None:
            """The seat (and its user, if any) runs until the new date."""
            aggregate.seats[self.seat_id].expires_on = self.expires_on

    class SeatTaken(Event, frozen=True, kw_only=True):
        """The portal user ``user_id`` took the seat (for good: a deleted user keeps it)."""

        seat_id: str
        user_id: str

        def apply(self, aggregate: Client) -> None:
            """The seat is no longer free."""
            aggregate.seats[self.seat_id].user_id = self.user_id

    class ConvertedToDistributor(Event, frozen=True, kw_only=True):
        """The client became the distributor ``distributor_id``."""

        distributor_id: str

        def apply(self, aggregate: Client) -> None:
            """Remembers the new distributor."""
            aggregate.converted_to = self.distributor_id

    # Decisions -----------------------------------------------------------------------------

    @classmethod
    def register(
        cls,
        client_id: str,
        distributor_id: str,
        nic: str,
        profile: dict[str, Any],
        at: datetime,
        cti_id: str = "",
        *,
        master_id: str,
    ) -> Client:
        """Registers a client of ``distributor_id`` in the network of ``master_id``
        (``cti_id``: its default stamping account)."""
        return cls.create(
            cls.Registered,
            client_id,
            at,
            distributor_id=distributor_id,
            nic=nic,
            profile=profile,
            cti_id=cti_id,
            master_id=master_id,
        )

    def free_seat(self, today: date) -> str:
        """The free seat that lapses last (then the smallest id), or ``no_free_seat``."""
        free = [
            (seat.expires_on, seat_id)
            for seat_id, seat in self.seats.items()
            if seat.user_id is None and today <= seat.expires_on
        ]
        if not free:
            raise Rejected("no_free_seat", client_id=self.id, seats=len(self.seats))
        return min(free, key=lambda seat: (-seat[0].toordinal(), seat[1]))[1]

    def lapsed_seat(self, today: date) -> str | None:
        """The lapsed seat a purchase renews: one with a user first (that user is stranded),
        then the one that lapsed first, then the smallest id; None if none lapsed."""
        lapsed = [
            (seat.user_id is None, seat.expires_on, seat_id)
            for seat_id, seat in self.seats.items()
            if today > seat.expires_on
        ]
        return min(lapsed)[2] if lapsed else None

    def require_seat_valid(self, seat_id: str, today: date) -> None:
        """``no_free_seat`` when the seat has lapsed (a user cannot come back on it)."""
        seat = self.seats[seat_id]
        if today > seat.expires_on:
            raise Rejected(
                "no_free_seat",
                client_id=self.id,
                seat_id=seat_id,
                reason="seat lapsed",
                expires_on=seat.expires_on.isoformat(),
            )

    def balance(self, unit: str) -> int:
        """Points in the wallet (a client holds no stamps itself)."""
        return self.points if unit == POINTS else 0

    def spend_points(self, ref: str, product: str, quantity: int, at: datetime) -> None:
        """Pays ``quantity`` points for ``product`` or rejects with ``insufficient_points``."""
        if self.points < quantity:
            raise Rejected(
                "insufficient_points", available=self.points, requested=quantity, holder_id=self.id
            )
        self.trigger(self.PointsSpent, at, ref=ref, product=product, quantity=quantity)
