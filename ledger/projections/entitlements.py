"""What distributors and clients hold over time: subscriptions, licences, seats, portal users.

- ``view_subscriptions``: each distributor's Multinivel and MKL subscriptions and their expiry
  (contracted, then moved on by every renewal); shown inside the distributors' rows.
- ``view_licences``: every licence a client was given, with its product, expiry and who paid.
- ``view_seats`` and ``view_portal_users``: a client's extra-user seats (bought, lapsing a year
  later) and the portal users on them (active, deactivated keeping the seat, or deleted).

A purge (``Distributor.Purged``) blanks the e-mails of the portal users of the distributor's
clients, the only personal data these tables hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ledger.aggregates.client import Client
from ledger.aggregates.common import product_key
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.portal_user import PortalUser
from ledger.domain import Event
from ledger.money import format_money
from ledger.projections.base import Cursor, Dialect, Handler, RowChanges, Table, View, chunks

SUBSCRIPTIONS = Table(
    "view_subscriptions",
    (
        ("subscription_id", "text"),
        ("distributor_id", "text"),
        ("product", "text"),
        ("kind", "text"),
        ("expires_on", "date"),
        ("contracted_at", "ts"),
    ),
    key=("subscription_id",),
    indexes=(("distributor_id",),),
)
LICENCES = Table(
    "view_licences",
    (
        ("licence_id", "text"),
        ("client_id", "text"),
        ("product", "text"),
        ("expires_on", "date"),
        ("points", "int"),
        ("paid_by", "text"),
        ("created_at", "ts"),
    ),
    key=("licence_id",),
    indexes=(("client_id",),),
)
SEATS = Table(
    "view_seats",
    (
        ("seat_id", "text"),
        ("client_id", "text"),
        ("distributor_id", "text"),
        ("expires_on", "date"),
        ("amount_centavos", "int"),
        ("user_id", "text"),
        ("bought_at", "ts"),
    ),
    key=("seat_id",),
    indexes=(("client_id",),),
)
PORTAL_USERS = Table(
    "view_portal_users",
    (
        ("user_id", "text"),
        ("client_id", "text"),
        ("distributor_id", "text"),
        ("email", "text"),
        ("seat_id", "text"),
        ("status", "text"),
        ("created_at", "ts"),
    ),
    key=("user_id",),
    indexes=(("client_id",), ("distributor_id",)),
)


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """A distributor's subscription: ``active`` while the ledger's today is not past expiry."""

    product: str
    kind: str
    expires_on: date
    active: bool


@dataclass(frozen=True, slots=True)
class LicenceRow:
    """A client's licence of a software product (``paid_by``: the wallet or distributor)."""

    licence_id: str
    client_id: str
    product: str
    expires_on: date
    active: bool
    points: int
    paid_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SeatRow:
    """A client's extra-user seat and the portal user on it (if any); ``price`` is what its
    last purchase or renewal cost."""

    seat_id: str
    client_id: str
    expires_on: date
    lapsed: bool
    price: str
    user_id: str | None
    email: str | None
    user_status: str | None
    bought_at: datetime


@dataclass(frozen=True, slots=True)
class PortalUserRow:
    """A portal user of a client: ``status`` active, deactivated or deleted."""

    user_id: str
    client_id: str
    email: str
    seat_id: str
    status: str
    created_at: datetime


class _Buffer:
    """Entitlement changes of one page."""

    __slots__ = ("dialect", "licences", "purged", "seats", "subscriptions", "users")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.subscriptions: dict[str, list[Any]] = {}
        self.licences: list[tuple[Any, ...]] = []
        self.seats = RowChanges(SEATS)
        self.users = RowChanges(PORTAL_USERS)
        self.purged: list[str] = []

    def subscription(self, event: Distributor.SubscriptionContracted) -> None:
        """Contracted or renewed: the row (distributor, product) takes the new expiry."""
        subscription_id = f"{event.originator_id}|{product_key(event.product)}"
        row = self.subscriptions.get(subscription_id)
        if row is not None and isinstance(event, Distributor.SubscriptionRenewed):
            row[4] = self.dialect.day(event.expires_on)
            return
        self.subscriptions[subscription_id] = [
            subscription_id,
            event.originator_id,
            event.product,
            event.kind,
            self.dialect.day(event.expires_on),
            self.dialect.ts(event.timestamp),
        ]

    def licence(self, event: Client.LicenceGenerated) -> None:
        """A new licence."""
        self.licences.append(
            (
                event.licence_id or f"{event.originator_id}:{event.originator_version}",
                event.originator_id,
                event.product,
                self.dialect.day(event.expires_on),
                event.points,
                event.paid_by or None,
                self.dialect.ts(event.timestamp),
            )
        )

    def seat_bought(self, event: Client.SeatBought) -> None:
        """A free seat."""
        self.seats.create(
            event.seat_id,
            {
                "seat_id": event.seat_id,
                "client_id": event.originator_id,
                "distributor_id": event.seller_id,
                "expires_on": self.dialect.day(event.expires_on),
                "amount_centavos": event.amount_centavos,
                "user_id": None,
                "bought_at": self.dialect.ts(event.timestamp),
            },
        )

    def seat_renewed(self, event: Client.SeatRenewed) -> None:
        """Another year of the seat, at the renewal's price."""
        self.seats.change(
            event.seat_id,
            {
                "expires_on": self.dialect.day(event.expires_on),
                "amount_centavos": event.amount_centavos,
            },
        )

    def seat_taken(self, event: Client.SeatTaken) -> None:
        """A user on the seat."""
        self.seats.change(event.seat_id, {"user_id": event.user_id})

    def user_added(self, event: PortalUser.Added) -> None:
        """A new active user."""
        self.users.create(
            event.originator_id,
            {
                "user_id": event.originator_id,
                "client_id": event.client_id,
                "distributor_id": event.distributor_id,
                "email": event.email,
                "seat_id": event.seat_id,
                "status": "active",
                "created_at": self.dialect.ts(event.timestamp),
            },
        )

    def user_deactivated(self, event: PortalUser.Deactivated) -> None:
        """Keeps its seat."""
        self.users.change(event.originator_id, {"status": "deactivated"})

    def user_changed(self, event: PortalUser.Changed) -> None:
        """Another e-mail on the seat, active."""
        self.users.change(event.originator_id, {"email": event.email, "status": "active"})

    def user_deleted(self, event: PortalUser.Deleted) -> None:
        """Gone, with its seat."""
        self.users.change(event.originator_id, {"status": "deleted"})

    def purge(self, event: Distributor.Purged) -> None:
        """The distributor's clients' portal users lose their e-mails in the view."""
        self.purged.append(event.originator_id)

    def flush(self, cursor: Cursor) -> None:
        """Upserts subscriptions, inserts licences, applies seat and user changes, then purges."""
        cursor.insert(
            SUBSCRIPTIONS,
            list(self.subscriptions.values()),
            "DO UPDATE SET expires_on = excluded.expires_on",
        )
        cursor.insert(LICENCES, self.licences)
        self.seats.flush(cursor)
        self.users.flush(cursor)
        if self.purged:
            cursor.executemany(
                "UPDATE view_portal_users SET email = '' WHERE distributor_id = ?",
                [(d,) for d in self.purged],
            )


class EntitlementsView(View):
    """Subscriptions, licences, seats and portal users."""

    name = "entitlements"
    version = 1
    tables = (SUBSCRIPTIONS, LICENCES, SEATS, PORTAL_USERS)
    buffer = _Buffer

    def handlers(self) -> dict[type[Event], Handler]:
        """Subscriptions, licences, seats, users and purges."""
        return {
            Distributor.SubscriptionContracted: _Buffer.subscription,
            Distributor.Purged: _Buffer.purge,
            Client.LicenceGenerated: _Buffer.licence,
            Client.SeatBought: _Buffer.seat_bought,
            Client.SeatRenewed: _Buffer.seat_renewed,
            Client.SeatTaken: _Buffer.seat_taken,
            PortalUser.Added: _Buffer.user_added,
            PortalUser.Deactivated: _Buffer.user_deactivated,
            PortalUser.Changed: _Buffer.user_changed,
            PortalUser.Deleted: _Buffer.user_deleted,
        }


# Queries --------------------------------------------------------------------------------------


def subscriptions_of(
    cursor: Cursor, distributor_ids: Sequence[str], today: date
) -> dict[str, tuple[SubscriptionRow, ...]]:
    """The subscriptions of each distributor of a page, by product name."""
    found: dict[str, list[SubscriptionRow]] = {}
    dialect = cursor.dialect
    for part in chunks(list(distributor_ids), cursor.in_list_max):
        match, params = cursor.any_of(part)
        cursor.execute(
            "SELECT distributor_id, product, kind, expires_on FROM view_subscriptions "  # noqa: S608  (constant SQL; values are bound parameters)
            f"WHERE distributor_id {match} ORDER BY distributor_id, subscription_id",
            params,
        )
        for distributor_id, product, kind, expires in cursor.fetchall():
            expires_on = dialect.to_day(expires)
            assert expires_on is not None
            found.setdefault(str(distributor_id), []).append(
                SubscriptionRow(
                    product=str(product),
                    kind=str(kind),
                    expires_on=expires_on,
                    active=today <= expires_on,
                )
            )
    return {k: tuple(v) for k, v in found.items()}


def licences(cursor: Cursor, client_id: str, today: date) -> list[LicenceRow]:
    """A client's licences, newest first."""
    dialect = cursor.dialect
    cursor.execute(
        "SELECT licence_id, product, expires_on, points, paid_by, created_at "
        "FROM view_licences WHERE client_id = ? ORDER BY created_at DESC, licence_id",
        [client_id],
    )
    rows = []
    for licence_id, product, expires, points, paid_by, created in cursor.fetchall():
        expires_on = dialect.to_day(expires)
        created_at = dialect.to_ts(created)
        assert expires_on is not None
        assert created_at is not None
        rows.append(
            LicenceRow(
                licence_id=str(licence_id),
                client_id=client_id,
                product=str(product),
                expires_on=expires_on,
                active=today <= expires_on,
                points=int(points),
                paid_by=None if paid_by is None else str(paid_by),
                created_at=created_at,
            )
        )
    return rows


def seats(cursor: Cursor, client_id: str, today: date) -> list[SeatRow]:
    """A client's seats (oldest first) with the user on each."""
    dialect = cursor.dialect
    cursor.execute(
        "SELECT s.seat_id, s.expires_on, s.amount_centavos, s.user_id, u.email, u.status, "
        "s.bought_at FROM view_seats s LEFT JOIN view_portal_users u ON u.user_id = s.user_id "
        "WHERE s.client_id = ? ORDER BY s.bought_at, s.seat_id",
        [client_id],
    )
    rows = []
    for seat_id, expires, amount, user_id, email, status, bought in cursor.fetchall():
        expires_on = dialect.to_day(expires)
        bought_at = dialect.to_ts(bought)
        assert expires_on is not None
        assert bought_at is not None
        rows.append(
            SeatRow(
                seat_id=str(seat_id),
                client_id=client_id,
                expires_on=expires_on,
                lapsed=today > expires_on,
                price=format_money(int(amount)),
                user_id=None if user_id is None else str(user_id),
                email=None if email is None else str(email),
                user_status=None if status is None else str(status),
                bought_at=bought_at,
            )
        )
    return rows


def portal_users(cursor: Cursor, client_id: str) -> list[PortalUserRow]:
    """A client's portal users (deleted ones too), oldest first."""
    dialect = cursor.dialect
    cursor.execute(
        "SELECT user_id, email, seat_id, status, created_at FROM view_portal_users "
        "WHERE client_id = ? ORDER BY created_at, user_id",
        [client_id],
    )
    rows = []
    for user_id, email, seat_id, status, created in cursor.fetchall():
        created_at = dialect.to_ts(created)
        assert created_at is not None
        rows.append(
            PortalUserRow(
                user_id=str(user_id),
                client_id=client_id,
                email=str(email),
                seat_id=str(seat_id),
                status=str(status),
                created_at=created_at,
            )
        )
    return rows
