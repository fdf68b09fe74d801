"""A client's portal user (an extra user of its invoicing portal), holding one of its seats."""

from __future__ import annotations

from datetime import datetime

from ledger.domain import Aggregate, Created, Event
from ledger.errors import Rejected

ACTIVE = "active"
DEACTIVATED = "deactivated"
DELETED = "deleted"
USER_STATUSES = (ACTIVE, DEACTIVATED, DELETED)


class PortalUser(Aggregate):
    """A login of a client's portal: active, deactivated (keeps its seat) or deleted (loses it)."""

    client_id: str
    distributor_id: str
    email: str
    seat_id: str
    status: str

    class Added(Created, frozen=True, kw_only=True):
        """The user took ``seat_id`` of ``client_id``."""

        client_id: str
        distributor_id: str
        email: str
        seat_id: str

        def apply(self, aggregate: PortalUser) -> None:
            """Active on its seat."""
            aggregate.client_id = self.client_id
            aggregate.distributor_id = self.distributor_id
            aggregate.email = self.email
            aggregate.seat_id = self.seat_id
            aggregate.status = ACTIVE

    class Deactivated(Event, frozen=True, kw_only=True):
        """The user cannot log in; the seat stays its own, ready for ``Changed``."""

        def apply(self, aggregate: PortalUser) -> None:
            """Deactivated."""
            aggregate.status = DEACTIVATED

    class Changed(Event, frozen=True, kw_only=True):
        """The seat went to ``email``; the user is active again."""

        email: str

        def apply(self, aggregate: PortalUser) -> None:
            """New e-mail, active."""
            aggregate.email = self.email
            aggregate.status = ACTIVE

    class Deleted(Event, frozen=True, kw_only=True):
        """The user is gone and its seat with it (DESIGN §4: deleting loses the seat)."""

        def apply(self, aggregate: PortalUser) -> None:
            """Deleted."""
            aggregate.status = DELETED

    @classmethod
    def add(
        cls,
        user_id: str,
        *,
        client_id: str,
        distributor_id: str,
        email: str,
        seat_id: str,
        at: datetime,
    ) -> PortalUser:
        """A new active user on ``seat_id``."""
        return cls.create(
            cls.Added,
            user_id,
            at,
            client_id=client_id,
            distributor_id=distributor_id,
            email=email,
            seat_id=seat_id,
        )

    def require_not_deleted(self, action: str) -> None:
        """A deleted user is gone: ``invalid_transition``."""
        if self.status == DELETED:
            raise Rejected("invalid_transition", user_id=self.id, action=action, status=DELETED)

    def deactivate(self, at: datetime) -> None:
        """active → deactivated."""
        self.require_not_deleted("deactivate")
        if self.status != ACTIVE:
            raise Rejected(
                "invalid_transition", user_id=self.id, action="deactivate", status=self.status
            )
        self.trigger(self.Deactivated, at)

    def change(self, email: str, at: datetime) -> None:
        """The seat to ``email`` (the handler checked the seat is still valid)."""
        self.require_not_deleted("change")
        self.trigger(self.Changed, at, email=email)

    def delete(self, at: datetime) -> None:
        """Gone for good, with its seat."""
        self.require_not_deleted("delete")
        self.trigger(self.Deleted, at)
