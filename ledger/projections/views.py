"""``Ledger.views``: typed queries over the read side, and how it is kept up to date.

Modes (``Ledger.open(projections=...)``):

- ``inline``: the views catch up right after each commit of this process, and again before each
  query, so a caller reads its own writes (and other processes' writes) at once;
- ``background``: a thread catches up, woken by this process's commits and polling for others';
- ``off``: another process runs them (``ledger project --follow``); queries read what is there.

"Today" for CPD, days remaining, lot expiry and distributor expiry is the ledger clock's local
date in Mexico City.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Literal, TypeVar

from ledger.clock import Clock, local_date
from ledger.errors import Rejected
from ledger.logging import get_logger
from ledger.projections import balances as balances_view
from ledger.projections import billing, consumption, directory, entitlements, portal
from ledger.projections.balances import BalanceRow, BalancesView
from ledger.projections.base import PAGE_LIMIT_DEFAULT, Cursor, View, ViewDatabase, check_page
from ledger.projections.billing import (
    AutoTopUpFailureRow,
    BillingView,
    CreditCodeRow,
    InvoiceRow,
    SaleRow,
)
from ledger.projections.consumption import DAILY_DAYS_DEFAULT, ConsumptionRow, ConsumptionView
from ledger.projections.directory import (
    ClientProfileRow,
    ClientRow,
    DirectoryView,
    DistributorRow,
    StampingAccountRow,
)
from ledger.projections.entitlements import (
    EntitlementsView,
    LicenceRow,
    PortalUserRow,
    SeatRow,
)
from ledger.projections.own import OwnView
from ledger.projections.portal import AutoTopUpRuleRow, ExpiringLotRow, PackageRow, PortalView
from ledger.projections.runner import (
    BackgroundProjector,
    ProgressCallback,
    ProjectionFailed,
    Projector,
)

log = get_logger("ledger.projections")

Mode = Literal["inline", "background", "off"]
T = TypeVar("T")


def default_views() -> list[View]:
    """Every view of DESIGN §6."""
    return [
        BalancesView(),
        ConsumptionView(),
        BillingView(),
        DirectoryView(),
        EntitlementsView(),
        PortalView(),
    ]


class Views:
    """The read side of one ledger: typed queries and the projector behind them."""

    def __init__(
        self, database: ViewDatabase, projector: Projector, clock: Clock, mode: Mode
    ) -> None:
        self.database = database
        self.projector = projector
        self.mode = mode
        self._clock = clock
        self._background: BackgroundProjector | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    # Running ------------------------------------------------------------------------------

    def start_background(self, poll_interval_s: float = 0.5) -> BackgroundProjector:
        """Starts the background thread (``projections="background"``)."""
        assert self._background is None
        self._background = BackgroundProjector(self.projector, poll_interval_s=poll_interval_s)
        self._background.start()
        return self._background

    def after_commit(self, _notification_ids: object) -> None:
        """``Engine.on_commit`` callback: inline catch-up, or a nudge to the background thread."""
        if self.mode == "background" and self._background is not None:
            self._background.wake()
        elif self.mode == "inline":
            try:
                self.projector.catch_up()
            except ProjectionFailed:
                return  # logged and recorded by the projector already; see ``_query``
            except Exception as exc:
                # The command is recorded and its outcome is true; failing it now would invite
                # a retry of something done. The views lag instead, and the next query catches
                # up again in the caller's thread, where this failure is raised if it persists.
                log.exception("inline_projection_failed", error=str(exc))

    def catch_up(self, *, progress: ProgressCallback | None = None) -> int:
        """Projects everything recorded so far; returns how many notifications it took."""
        return self.projector.catch_up(progress=progress)

    def rebuild(self, *, progress: ProgressCallback | None = None) -> int:
        """Drops the views and projects the whole history again."""
        return self.projector.rebuild(progress=progress)

    def position(self) -> int:
        """The notification id every view includes."""
        return self.projector.position()

    def lag(self) -> int:
        """Notifications recorded but not yet in every view."""
        return self.projector.lag()

    def own(self, name: str) -> OwnQueries:
        """The ``@query`` methods of the view ``name`` given to ``Ledger.open(views=...)``."""
        for view in self.projector.views:
            if view.name == name and isinstance(view, OwnView):
                return OwnQueries(self, view)
        raise Rejected("invalid_command", field="view", reason=f"no own view {name}")

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every view row in key order (two dumps are equal iff the views are)."""
        return self.projector.dump()

    def status(self) -> dict[str, Any]:
        """Mode, position, lag, the background thread's last error, and each view's status."""
        error = self._background.last_error if self._background is not None else None
        views = self.projector.status(self._clock())
        return {
            "mode": self.mode,
            "background_alive": self._background is not None and self._background.alive,
            "position": min((view.position for view in views), default=0),
            "lag": max((view.lag_events for view in views), default=0),
            "last_error": None if error is None else str(error),
            "views": [view.to_dict() for view in views],
        }

    def close(self) -> None:
        """Stops the background thread and closes the view connections (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._background is not None:
            self._background.stop()
        self.projector.close()
        self.database.close()

    # Queries ------------------------------------------------------------------------------

    def _query(self, run: Callable[[Cursor, date], T]) -> T:
        return self._query_at(lambda cursor, now: run(cursor, local_date(now)))

    def _query_at(self, run: Callable[[Cursor, datetime], T]) -> T:
        """Runs a query at the clock's now (holds expire to the second, not to the day)."""
        if self.mode == "inline":
            # One event the views cannot take must not stop every tenant's reads: they answer
            # as of the event before it. The failure is logged and recorded where ``status()``
            # and ``verify`` report it, and retried on later catch-ups.
            with contextlib.suppress(ProjectionFailed):
                self.projector.catch_up()
        now = self._clock()
        with self.database.read() as cursor:
            return run(cursor, now)

    def stamping_accounts(
        self,
        distributor_id: str,
        *,
        search: str | None = None,
        sort: str = "name",
        tag: str | None = None,
        colour: str | None = None,
        status: str | None = None,
        limit: int = PAGE_LIMIT_DEFAULT,
        offset: int = 0,
    ) -> list[StampingAccountRow]:
        """A distributor's CTIs (``tag``: favourite|dropped, ``status``: active|blocked)."""
        return self._query_at(
            lambda cursor, now: directory.stamping_accounts(
                cursor,
                distributor_id,
                now,
                search=search,
                sort=sort,
                tag=tag,
                colour=colour,
                status=status,
                limit=limit,
                offset=offset,
            )
        )

    def clients(
        self,
        distributor_id: str,
        *,
        search: str | None = None,
        sort: str = "name",
        tag: str | None = None,
        colour: str | None = None,
        limit: int = PAGE_LIMIT_DEFAULT,
        offset: int = 0,
    ) -> list[ClientRow]:
        """A distributor's clients."""
        return self._query_at(
            lambda cursor, now: directory.clients(
                cursor,
                distributor_id,
                now,
                search=search,
                sort=sort,
                tag=tag,
                colour=colour,
                limit=limit,
                offset=offset,
            )
        )

    def distributors(
        self,
        parent_id: str,
        *,
        status: str | None = None,
        limit: int = PAGE_LIMIT_DEFAULT,
        offset: int = 0,
    ) -> list[DistributorRow]:
        """The distributors under a master account or distributor, by status then name."""
        return self._query(
            lambda cursor, today: directory.distributors(
                cursor, parent_id, today, status=status, limit=limit, offset=offset
            )
        )

    def licences(self, client_id: str) -> list[LicenceRow]:
        """A client's licences with their expiry, newest first."""
        return self._query(lambda cursor, today: entitlements.licences(cursor, client_id, today))

    def seats(self, client_id: str) -> list[SeatRow]:
        """A client's extra-user seats with the portal user on each."""
        return self._query(lambda cursor, today: entitlements.seats(cursor, client_id, today))

    def portal_users(self, client_id: str) -> list[PortalUserRow]:
        """A client's portal users (active, deactivated, deleted)."""
        return self._query(lambda cursor, _today: entitlements.portal_users(cursor, client_id))

    def consumption(self, cti_id: str, *, days: int = DAILY_DAYS_DEFAULT) -> ConsumptionRow:
        """CPD, days remaining and the last ``days`` local days of a CTI."""
        return self._query_at(
            lambda cursor, now: consumption.consumption(cursor, cti_id, now, days)
        )

    def balances(self, holder_id: str) -> list[BalanceRow]:
        """A holder's books, one row per unit."""
        return self._query_at(lambda cursor, now: balances_view.balances(cursor, holder_id, now))

    def unbilled_sales(
        self,
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
        """The seller's sales not invoiced yet, oldest first (Mexico City year and month;
        ``source``: transfer, package, code, seat, subscription, licence, panel, reclaim)."""
        return self._query(
            lambda cursor, _today: billing.unbilled_sales(
                cursor,
                seller_id,
                year=year,
                month=month,
                unit=unit,
                buyer_id=buyer_id,
                source=source,
                limit=limit,
                offset=offset,
            )
        )

    def invoices(
        self, seller_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
    ) -> list[InvoiceRow]:
        """The seller's invoices, newest first, with their sales."""
        return self._query(
            lambda cursor, _today: billing.invoices(cursor, seller_id, limit=limit, offset=offset)
        )

    def credit_codes(
        self,
        distributor_id: str,
        *,
        state: str | None = None,
        limit: int = PAGE_LIMIT_DEFAULT,
        offset: int = 0,
    ) -> list[CreditCodeRow]:
        """Credit codes a distributor issued, newest first (never a code or a NIP)."""
        return self._query(
            lambda cursor, today: billing.credit_codes(
                cursor, distributor_id, today, state=state, limit=limit, offset=offset
            )
        )

    def auto_top_up_failures(
        self, distributor_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
    ) -> list[AutoTopUpFailureRow]:
        """Automatic top-ups of the distributor's CTIs that its inventory could not cover."""
        return self._query(
            lambda cursor, _today: billing.auto_top_up_failures(
                cursor, distributor_id, limit=limit, offset=offset
            )
        )

    def catalogue(
        self, seller_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
    ) -> list[PackageRow]:
        """A seller's packages and their prices (retired ones marked), the portal's catalogue."""
        return self._query(
            lambda cursor, _today: portal.catalogue(cursor, seller_id, limit=limit, offset=offset)
        )

    def auto_top_up_rules(
        self, distributor_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
    ) -> list[AutoTopUpRuleRow]:
        """The automatic top-up rules of a distributor's CTIs."""
        return self._query(
            lambda cursor, _today: portal.auto_top_up_rules(
                cursor, distributor_id, limit=limit, offset=offset
            )
        )

    def expiring_lots(
        self, cti_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
    ) -> list[ExpiringLotRow]:
        """A CTI's stamps that will expire, lot by lot, soonest first."""
        return self._query_at(
            lambda cursor, now: portal.expiring_lots(
                cursor, cti_id, now, limit=limit, offset=offset
            )
        )

    def purge_due(self, *, limit: int = PAGE_LIMIT_DEFAULT) -> list[tuple[str, str]]:
        """``(distributor_id, parent_id)`` of cancelled distributors due for their purge."""
        check_page(limit, 0)
        return self._query(lambda cursor, today: directory.purge_due(cursor, today, limit))

    def client_profiles(
        self, distributor_id: str | None = None, *, after_id: str = "", limit: int = 500
    ) -> list[ClientProfileRow]:
        """Clients' exportable fields in id order, a page after ``after_id``."""
        return self._query(
            lambda cursor, _today: directory.client_profiles(
                cursor, distributor_id, after_id, limit
            )
        )


class OwnQueries:
    """An own view's queries, each run like the built-in ones (caught up first when inline,
    in a read transaction): ``lg.views.own("monthly_stamps_by_rfc").months()``."""

    def __init__(self, views: Views, view: OwnView) -> None:
        self._views = views
        self._queries = view.queries()
        self.view = view

    def __getattr__(self, name: str) -> Callable[..., Any]:
        found = self._queries.get(name)
        if found is None:
            raise AttributeError(f"view {self.view.name} has no query {name}")
        views = self._views

        def run(*args: Any, **kwargs: Any) -> Any:
            return views._query_at(lambda cursor, _now: found(cursor, *args, **kwargs))

        return run
