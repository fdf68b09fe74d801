"""A stamping account (CTI): the credentials invoicing software uses, and its stamps in lots."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import msgspec

from ledger.clock import MEXICO_CITY
from ledger.domain import (
    SINK_CONSUMED,
    SINK_EXPIRED,
    STAMPS,
    Aggregate,
    Created,
    Event,
    Posting,
    held_book,
)
from ledger.errors import Rejected

STANDARD = "standard"
UNLIMITED = "unlimited"

CREDENTIAL_FAILURES_MAX = 5
"""Consecutive wrong passwords that lock a CTI's credentials (DESIGN §4)."""
CREDENTIALS_LOCK = timedelta(minutes=15)
"""How long, on the ledger clock, the credentials stay locked after the last allowed failure."""


class Lot(msgspec.Struct, kw_only=True):
    """Stamps credited together; ``expires_on`` None means they never expire."""

    lot_id: str
    remaining: int
    expires_on: date | None = None


class AutoTopUp(msgspec.Struct, frozen=True, kw_only=True):
    """When a consumption leaves fewer than ``minimum`` stamps, the distributor sends ``credit``."""

    minimum: int
    credit: int
    amount_centavos: int
    # True when the rule names no amount: each top-up is priced by the price list then.
    priced_by_list: bool = False


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    """An open hold: one stamp set aside for a CFDI until ``expires_at`` (DESIGN §4 Holds).

    ``lot_id`` is the lot the stamp came from ("" on an unlimited account, which sets nothing
    aside); a void puts the stamp back there, ``lot_expires_on`` recreating the lot if it was
    emptied meanwhile.
    """

    hold_id: str
    cfdi_uuid: str
    issuer_rfc: str
    expires_at: datetime
    lot_id: str = ""
    lot_expires_on: date | None = None


def _lot_order(lot: Lot) -> tuple[bool, date]:
    # The lot that expires first goes first; lots that never expire go last. Among equals the
    # list order (oldest first) holds because the sort is stable.
    return (lot.expires_on is None, lot.expires_on or date.max)


class StampingAccount(Aggregate):
    """A CTI: standard (a stamp balance in lots) or unlimited (valid until a date)."""

    client_id: str
    distributor_id: str
    # The master account of its network, which alone runs the stamping service (DESIGN §4a);
    # "" when opened before the field existed.
    master_id: str = ""
    kind: str
    active: bool
    password_hash: str | None
    rfc_lock: str | None
    valid_until: date | None
    lots: list[Lot]
    credited: int
    used: int
    auto_top_up: AutoTopUp | None
    top_up_armed: bool
    # Added after the first snapshots were stored: the defaults let those load.
    failed_checks: int = 0
    locked_until: datetime | None = None
    holds: dict[str, Hold]
    held_cfdis: dict[str, str]

    # Added with holds: snapshots stored before them restore no open hold.
    snapshot_defaults: ClassVar[dict[str, Callable[[], Any]]] = {
        "holds": dict,
        "held_cfdis": dict,
    }

    class Opened(Created, frozen=True, kw_only=True):
        """The account was opened for ``client_id``."""

        client_id: str
        distributor_id: str
        kind: str
        password_hash: str | None = None
        rfc_lock: str | None = None
        valid_until: date | None = None
        master_id: str = ""

        def apply(self, aggregate: StampingAccount) -> None:
            """Starts active and empty."""
            aggregate.client_id = self.client_id
            aggregate.distributor_id = self.distributor_id
            aggregate.master_id = self.master_id
            aggregate.kind = self.kind
            aggregate.active = True
            aggregate.password_hash = self.password_hash
            aggregate.rfc_lock = self.rfc_lock
            aggregate.valid_until = self.valid_until
            aggregate.lots = []
            aggregate.credited = 0
            aggregate.used = 0
            aggregate.auto_top_up = None
            aggregate.top_up_armed = False
            aggregate.failed_checks = 0
            aggregate.locked_until = None
            aggregate.holds = {}
            aggregate.held_cfdis = {}

    class StampsCredited(Event, frozen=True, kw_only=True):
        """Stamps came in from ``from_id`` as a new lot."""

        transfer_id: str
        from_id: str
        quantity: int
        expires_on: date | None = None

        def apply(self, aggregate: StampingAccount) -> None:
            """Adds a lot, keeping lots in consumption order."""
            # Lots are always in consumption order, so the new one is inserted after its equals
            # (as a stable sort of the appended list would place it) without re-sorting: many
            # small credits to one CTI made every credit O(n log n) in its lots.
            bisect.insort_right(
                aggregate.lots,
                Lot(lot_id=self.transfer_id, remaining=self.quantity, expires_on=self.expires_on),
                key=_lot_order,
            )
            aggregate.credited += self.quantity
            aggregate.rearm_top_up()

        def postings(self) -> tuple[Posting, ...]:
            """The credit leg."""
            return (
                Posting(self.originator_id, STAMPS, self.quantity, self.transfer_id, self.from_id),
            )

    class StampConsumed(Event, frozen=True, kw_only=True):
        """A CFDI was stamped (``lot_id`` empty for an unlimited account).

        Version 2 records ``local_date``, the Mexico City calendar day of ``stamped_at``, the day
        the consumption counts for. It is decided once, when the stamp is consumed, so a later
        change of the time-zone rules (Mexico dropped daylight saving time in 2022) never moves a
        recorded consumption to another day. Version 1 events get it computed from
        ``stamped_at`` when read (``upcast_v1_v2``).
        """

        class_version: ClassVar[int] = 2

        cfdi_uuid: str
        issuer_rfc: str
        stamped_at: datetime
        lot_id: str = ""
        local_date: date

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """A v1 consumption's local day, from its ``stamped_at`` (today's zone rules)."""
            stamped_at = datetime.fromisoformat(state["stamped_at"])
            state["local_date"] = stamped_at.astimezone(MEXICO_CITY).date().isoformat()

        def apply(self, aggregate: StampingAccount) -> None:
            """Takes one stamp from its lot."""
            aggregate.used += 1
            if self.lot_id:
                aggregate.take_from_lot(self.lot_id, 1)

        def postings(self) -> tuple[Posting, ...]:
            """Both legs: the account to the consumed sink (none for unlimited accounts)."""
            if not self.lot_id:
                return ()
            return (
                Posting(self.originator_id, STAMPS, -1, self.cfdi_uuid, SINK_CONSUMED),
                Posting(SINK_CONSUMED, STAMPS, 1, self.cfdi_uuid, self.originator_id),
            )

        def keys(self) -> tuple[str, ...]:
            """A CFDI is stamped once, forever."""
            return (f"cfdi:{self.cfdi_uuid}",)

    class StampsExpired(Event, frozen=True, kw_only=True):
        """A lot passed its expiry date with stamps left."""

        lot_id: str
        quantity: int

        def apply(self, aggregate: StampingAccount) -> None:
            """Drops the lot."""
            aggregate.take_from_lot(self.lot_id, self.quantity)

        def postings(self) -> tuple[Posting, ...]:
            """Both legs: the account to the expired sink."""
            ref = f"expiry:{self.originator_id}:{self.lot_id}"
            return (
                Posting(self.originator_id, STAMPS, -self.quantity, ref, SINK_EXPIRED),
                Posting(SINK_EXPIRED, STAMPS, self.quantity, ref, self.originator_id),
            )

    class StampsReclaimed(Event, frozen=True, kw_only=True):
        """The distributor took unused stamps back (``taken`` per lot)."""

        transfer_id: str
        to_id: str
        quantity: int
        reason: str
        taken: tuple[tuple[str, int], ...]

        def apply(self, aggregate: StampingAccount) -> None:
            """Takes the stamps from their lots."""
            for lot_id, quantity in self.taken:
                aggregate.take_from_lot(lot_id, quantity)

        def postings(self) -> tuple[Posting, ...]:
            """The debit leg."""
            return (
                Posting(self.originator_id, STAMPS, -self.quantity, self.transfer_id, self.to_id),
            )

    class Blocked(Event, frozen=True, kw_only=True):
        """The account was blocked: it cannot stamp."""

        def apply(self, aggregate: StampingAccount) -> None:
            """Deactivates."""
            aggregate.active = False

    class Reactivated(Event, frozen=True, kw_only=True):
        """The account can stamp again."""

        def apply(self, aggregate: StampingAccount) -> None:
            """Activates."""
            aggregate.active = True

    class PasswordReset(Event, frozen=True, kw_only=True):
        """A new password was set (only its slow salted hash is stored)."""

        password_hash: str

        def apply(self, aggregate: StampingAccount) -> None:
            """Keeps the hash; the count of failed checks starts again (a reset unlocks)."""
            aggregate.password_hash = self.password_hash
            aggregate.failed_checks = 0
            aggregate.locked_until = None

    class CredentialsCheckFailed(Event, frozen=True, kw_only=True):
        """A credentials check gave a wrong password: the ``failures``-th in a row.

        The one kind of event a refused attempt records (DESIGN §3.3), so that the lock holds in
        every process. The failure that reaches ``CREDENTIAL_FAILURES_MAX`` carries
        ``locked_until``; while that lasts, checks are refused and record nothing.
        """

        failures: int
        locked_until: datetime | None = None

        def apply(self, aggregate: StampingAccount) -> None:
            """Counts the failure and keeps the lock it decided, if any."""
            aggregate.failed_checks = self.failures
            aggregate.locked_until = self.locked_until

    class CredentialsCheckPassed(Event, frozen=True, kw_only=True):
        """The right password after failed checks: the count of failures starts again.

        Recorded only when there were failures to forget, so a check of an account without
        failures records nothing.
        """

        def apply(self, aggregate: StampingAccount) -> None:
            """Forgets the failures."""
            aggregate.failed_checks = 0
            aggregate.locked_until = None

    class AutoTopUpConfigured(Event, frozen=True, kw_only=True):
        """Automatic top-up was configured."""

        rule: AutoTopUp

        def apply(self, aggregate: StampingAccount) -> None:
            """Keeps the rule, armed if the balance is at or above the minimum."""
            aggregate.auto_top_up = self.rule
            aggregate.top_up_armed = False
            aggregate.rearm_top_up()

    class AutoTopUpDisabled(Event, frozen=True, kw_only=True):
        """Automatic top-up was turned off."""

        def apply(self, aggregate: StampingAccount) -> None:
            """Drops the rule."""
            aggregate.auto_top_up = None
            aggregate.top_up_armed = False

    class AutoTopUpFailed(Event, frozen=True, kw_only=True):
        """The balance crossed the minimum but the top-up could not be sold.

        ``reason``: ``insufficient_inventory`` (the distributor's stamps were short),
        ``distributor_not_active`` or ``price_unknown`` (a rule priced by the price list, and
        no list gives a price any more); "" for failures recorded before reasons were.
        """

        cfdi_uuid: str
        available: int
        distributor_id: str = ""
        requested: int = 0
        reason: str = ""

        def apply(self, aggregate: StampingAccount) -> None:
            """Disarms until the balance is back at the minimum (once per crossing)."""
            aggregate.top_up_armed = False

    class AutoTopUpTriggered(Event, frozen=True, kw_only=True):
        """The balance crossed the minimum; a top-up transfer follows in the same transaction."""

        cfdi_uuid: str
        transfer_id: str

        def apply(self, aggregate: StampingAccount) -> None:
            """Disarms until the balance is back at the minimum (once per crossing)."""
            aggregate.top_up_armed = False

    class UnlimitedRenewed(Event, frozen=True, kw_only=True):
        """An unlimited account was paid for another period, until ``valid_until``."""

        valid_until: date
        points: int

        def apply(self, aggregate: StampingAccount) -> None:
            """Extends validity."""
            aggregate.valid_until = self.valid_until

    class StampReserved(Event, frozen=True, kw_only=True):
        """One stamp was set aside for a CFDI until ``expires_at`` (a hold was opened).

        ``lot_id`` is empty on an unlimited account: the hold is recorded but sets no stamp aside.
        """

        hold_id: str
        cfdi_uuid: str
        issuer_rfc: str
        expires_at: datetime
        lot_id: str = ""
        lot_expires_on: date | None = None

        def apply(self, aggregate: StampingAccount) -> None:
            """Takes the stamp from its lot and keeps the hold open."""
            if self.lot_id:
                aggregate.take_from_lot(self.lot_id, 1)
            aggregate.holds[self.hold_id] = Hold(
                hold_id=self.hold_id,
                cfdi_uuid=self.cfdi_uuid,
                issuer_rfc=self.issuer_rfc,
                expires_at=self.expires_at,
                lot_id=self.lot_id,
                lot_expires_on=self.lot_expires_on,
            )
            aggregate.held_cfdis[self.cfdi_uuid] = self.hold_id

        def postings(self) -> tuple[Posting, ...]:
            """Both legs: the account to its held book (none for unlimited accounts)."""
            if not self.lot_id:
                return ()
            ref = f"hold:{self.hold_id}"
            held = held_book(self.originator_id)
            return (
                Posting(self.originator_id, STAMPS, -1, ref, held),
                Posting(held, STAMPS, 1, ref, self.originator_id),
            )

        def keys(self) -> tuple[str, ...]:
            """A hold id is opened once."""
            return (f"hold:{self.hold_id}",)

    class ReservationPosted(Event, frozen=True, kw_only=True):
        """A hold became the consumption of its CFDI, counted on ``local_date`` like one."""

        hold_id: str
        cfdi_uuid: str
        issuer_rfc: str
        stamped_at: datetime
        local_date: date
        lot_id: str = ""

        def apply(self, aggregate: StampingAccount) -> None:
            """The held stamp is used; the hold closes."""
            aggregate.used += 1
            aggregate.close_hold(self.hold_id)

        def postings(self) -> tuple[Posting, ...]:
            """Both legs: the held book to the consumed sink (none for unlimited accounts)."""
            if not self.lot_id:
                return ()
            held = held_book(self.originator_id)
            return (
                Posting(held, STAMPS, -1, self.cfdi_uuid, SINK_CONSUMED),
                Posting(SINK_CONSUMED, STAMPS, 1, self.cfdi_uuid, held),
            )

        def keys(self) -> tuple[str, ...]:
            """A hold closes once, and a CFDI is consumed once whichever way."""
            return (f"hold-closed:{self.hold_id}", f"cfdi:{self.cfdi_uuid}")

    class ReservationVoided(Event, frozen=True, kw_only=True):
        """A hold closed without a consumption: voided, or ``expired`` (settled after its time)."""

        hold_id: str
        expired: bool
        lot_id: str = ""
        lot_expires_on: date | None = None

        def apply(self, aggregate: StampingAccount) -> None:
            """The stamp goes back to its lot; the hold closes."""
            if self.lot_id:
                aggregate.return_to_lot(self.lot_id, self.lot_expires_on)
            aggregate.close_hold(self.hold_id)
            aggregate.rearm_top_up()

        def postings(self) -> tuple[Posting, ...]:
            """Both legs: the held book back to the account (none for unlimited accounts)."""
            if not self.lot_id:
                return ()
            ref = f"hold:{self.hold_id}"
            held = held_book(self.originator_id)
            return (
                Posting(held, STAMPS, -1, ref, self.originator_id),
                Posting(self.originator_id, STAMPS, 1, ref, held),
            )

        def keys(self) -> tuple[str, ...]:
            """A hold closes once."""
            return (f"hold-closed:{self.hold_id}",)

    # State helpers (used by apply: no rules here) -----------------------------------------

    def take_from_lot(self, lot_id: str, quantity: int) -> None:
        """Takes ``quantity`` from lot ``lot_id``, dropping it when empty."""
        lots = self.lots
        if lots and lots[0].lot_id == lot_id:  # the usual case: the first lot
            lot = lots[0]
            lot.remaining -= quantity
            if lot.remaining <= 0:
                del lots[0]
            return
        for index, lot in enumerate(lots):
            if lot.lot_id == lot_id:
                lot.remaining -= quantity
                if lot.remaining <= 0:
                    del self.lots[index]
                return

    def return_to_lot(self, lot_id: str, expires_on: date | None) -> None:
        """Puts one stamp back into lot ``lot_id``, recreating the lot if it was emptied."""
        for lot in self.lots:
            if lot.lot_id == lot_id:
                lot.remaining += 1
                return
        # The hold took from the first lot, so every lot now in the list with the same expiry
        # date is younger: the recreated lot goes first among them (oldest first).
        bisect.insort_left(
            self.lots, Lot(lot_id=lot_id, remaining=1, expires_on=expires_on), key=_lot_order
        )

    def close_hold(self, hold_id: str) -> None:
        """Forgets an open hold (posted, voided or expired)."""
        hold = self.holds.pop(hold_id, None)
        if hold is not None and self.held_cfdis.get(hold.cfdi_uuid) == hold_id:
            del self.held_cfdis[hold.cfdi_uuid]

    def rearm_top_up(self) -> None:
        """Arms the top-up rule once the balance is back at or above its minimum."""
        rule = self.auto_top_up
        if (
            rule is not None
            and not self.top_up_armed
            and sum(lot.remaining for lot in self.lots) >= rule.minimum
        ):
            self.top_up_armed = True

    # Queries -------------------------------------------------------------------------------

    def balance(
        self, unit: str = STAMPS, today: date | None = None, now: datetime | None = None
    ) -> int:
        """Stamps available on ``today`` (expired lots excluded); all lots when no date given.

        Held stamps are not available. With ``now``, the stamp of a hold past its
        ``expires_at`` counts again at once (unless its lot has expired), as it will once the
        expiry is recorded.
        """
        if unit != STAMPS:
            return 0
        available = 0
        for lot in self.lots:  # a loop: read per command, and cheaper than a generator
            if today is None or lot.expires_on is None or lot.expires_on >= today:
                available += lot.remaining
        if today is None:
            return available
        if now is not None and self.holds:
            available += sum(
                1
                for hold in self.holds.values()
                if hold.lot_id
                and hold.expires_at <= now
                and (hold.lot_expires_on is None or hold.lot_expires_on >= today)
            )
        return available

    def held(self, now: datetime | None = None) -> int:
        """Stamps set aside by open holds; with ``now``, those past their time no longer count."""
        return sum(
            1
            for hold in self.holds.values()
            if hold.lot_id and (now is None or hold.expires_at > now)
        )

    def open_hold(self, hold_id: str, now: datetime) -> Hold | None:
        """The hold if it is open and not past its time."""
        hold = self.holds.get(hold_id)
        if hold is None or hold.expires_at <= now:
            return None
        return hold

    def expired_lots(self, today: date) -> list[Lot]:
        """Lots whose expiry date has passed."""
        # Lots are in expiry order (dated first, earliest first): the expired ones are a prefix,
        # so a CTI with thousands of lots is not scanned whole on every credit.
        expired = []
        for lot in self.lots:
            if lot.expires_on is None or lot.expires_on >= today:
                break
            expired.append(lot)
        return expired

    def credentials_locked_until(self, now: datetime) -> datetime | None:
        """The end of the credentials lock if it holds at ``now``, else None."""
        locked_until = self.locked_until
        if locked_until is not None and now < locked_until:
            return locked_until
        return None

    # Decisions -----------------------------------------------------------------------------

    def record_credentials_check(self, valid: bool, now: datetime) -> None:
        """Records a check's result: a failure always, a success only if it clears failures.

        The caller refuses checks while the credentials are locked. Once a lock has ended, the
        count starts again from the next failure.
        """
        assert self.credentials_locked_until(now) is None, "checked while locked"
        if valid:
            if self.failed_checks:
                self.trigger(self.CredentialsCheckPassed, now)
            return
        previous = 0 if self.locked_until is not None else self.failed_checks
        failures = previous + 1
        locked_until = now + CREDENTIALS_LOCK if failures >= CREDENTIAL_FAILURES_MAX else None
        self.trigger(self.CredentialsCheckFailed, now, failures=failures, locked_until=locked_until)

    @classmethod
    def open(
        cls,
        cti_id: str,
        *,
        client_id: str,
        distributor_id: str,
        master_id: str,
        kind: str,
        at: datetime,
        password_hash: str | None = None,
        rfc_lock: str | None = None,
        valid_until: date | None = None,
    ) -> StampingAccount:
        """Opens a stamping account."""
        return cls.create(
            cls.Opened,
            cti_id,
            at,
            client_id=client_id,
            distributor_id=distributor_id,
            master_id=master_id,
            kind=kind,
            password_hash=password_hash,
            rfc_lock=rfc_lock,
            valid_until=valid_until,
        )

    def require_standard(self) -> None:
        """Rejects with ``wrong_account_kind`` unless the account holds a stamp balance."""
        if self.kind != STANDARD:
            raise Rejected("wrong_account_kind", cti_id=self.id, kind=self.kind)

    def settle_expiry(self, today: date, at: datetime) -> None:
        """Records the expiry of holds past their time, then of lots past their date.

        Called on successful commands only. Holds go first: a returned stamp may land in a lot
        that has expired meanwhile, and then leaves with it.
        """
        if self.holds:
            for hold in [h for h in self.holds.values() if h.expires_at <= at]:
                self.trigger(
                    self.ReservationVoided,
                    at,
                    hold_id=hold.hold_id,
                    expired=True,
                    lot_id=hold.lot_id,
                    lot_expires_on=hold.lot_expires_on,
                )
        for lot in self.expired_lots(today):
            self.trigger(self.StampsExpired, at, lot_id=lot.lot_id, quantity=lot.remaining)

    def check_rules(self, issuer_rfc: str, today: date) -> None:
        """Checks the account may stamp for ``issuer_rfc`` today (not its balance)."""
        if not self.active:
            raise Rejected("account_blocked", cti_id=self.id)
        if self.rfc_lock is not None and issuer_rfc.upper() != self.rfc_lock:
            raise Rejected("rfc_not_allowed", cti_id=self.id)
        if self.kind == UNLIMITED and (self.valid_until is None or today > self.valid_until):
            raise Rejected("unlimited_expired", cti_id=self.id, valid_until=self.valid_until)

    def check_consume(self, issuer_rfc: str, today: date) -> str:
        """Checks a consumption may happen; returns the lot to take from ("" if unlimited)."""
        if not self.active:
            raise Rejected("account_blocked", cti_id=self.id)
        # The lock is stored upper-case (validated RFC); RFCs compare without case.
        if self.rfc_lock is not None and issuer_rfc.upper() != self.rfc_lock:
            raise Rejected("rfc_not_allowed", cti_id=self.id)
        if self.kind == UNLIMITED:
            if self.valid_until is None or today > self.valid_until:
                raise Rejected("unlimited_expired", cti_id=self.id, valid_until=self.valid_until)
            return ""
        for lot in self.lots:
            if lot.expires_on is None or lot.expires_on >= today:
                return lot.lot_id
        raise Rejected("insufficient_stamps", cti_id=self.id, available=0)

    def consume(
        self,
        cfdi_uuid: str,
        issuer_rfc: str,
        stamped_at: datetime,
        stamped_on: date,
        today: date,
        at: datetime,
    ) -> None:
        """Consumes one stamp for a CFDI stamped at ``stamped_at`` (local day ``stamped_on``):
        rules checked first, then the events."""
        if self.holds:
            lot_id = self.take_with_holds(cfdi_uuid, issuer_rfc, today, at)
        else:
            lot_id = self.check_consume(issuer_rfc, today)
            if lot_id and self.lots[0].lot_id != lot_id:
                # Lots are in expiry order, so the lots before the usable one are the expired ones.
                self.settle_expiry(today, at)
        self.record(
            self.StampConsumed(
                originator_id=self.id,
                originator_version=self.version + 1,
                timestamp=at,
                cfdi_uuid=cfdi_uuid,
                issuer_rfc=issuer_rfc,
                stamped_at=stamped_at,
                lot_id=lot_id,
                local_date=stamped_on,
            )
        )

    def take_with_holds(self, cfdi_uuid: str, issuer_rfc: str, today: date, at: datetime) -> str:
        """Checks a stamp may be taken from an account with open holds; settles; the lot.

        A CFDI held open here is refused (its hold will consume it). The stamps of holds past
        their time count as available; they are returned (recorded) before the lot is chosen,
        so the lot order is the same as if they had never been held.
        """
        hold_id = self.held_cfdis.get(cfdi_uuid)
        if hold_id is not None and self.holds[hold_id].expires_at > at:
            raise Rejected("idempotency_conflict", key=f"cfdi:{cfdi_uuid}", hold_id=hold_id)
        self.check_rules(issuer_rfc, today)
        if self.kind == STANDARD and self.balance(STAMPS, today, at) < 1:
            raise Rejected("insufficient_stamps", cti_id=self.id, available=0)
        self.settle_expiry(today, at)
        return self.check_consume(issuer_rfc, today)

    def reserve(
        self,
        hold_id: str,
        cfdi_uuid: str,
        issuer_rfc: str,
        expires_at: datetime,
        today: date,
        at: datetime,
    ) -> None:
        """Sets one stamp aside for a CFDI (same rules and lot order as a consumption)."""
        if self.holds:
            lot_id = self.take_with_holds(cfdi_uuid, issuer_rfc, today, at)
        else:
            lot_id = self.check_consume(issuer_rfc, today)
            self.settle_expiry(today, at)
        lot_expires_on = self.lots[0].expires_on if lot_id else None
        assert not lot_id or self.lots[0].lot_id == lot_id
        self.trigger(
            self.StampReserved,
            at,
            hold_id=hold_id,
            cfdi_uuid=cfdi_uuid,
            issuer_rfc=issuer_rfc,
            expires_at=expires_at,
            lot_id=lot_id,
            lot_expires_on=lot_expires_on,
        )

    def post_hold(self, hold: Hold, stamped_at: datetime, today: date, at: datetime) -> None:
        """Consumes the held stamp for the hold's CFDI (the handler checked it is open)."""
        assert self.holds.get(hold.hold_id) is hold
        assert hold.expires_at > at
        self.trigger(
            self.ReservationPosted,
            at,
            hold_id=hold.hold_id,
            cfdi_uuid=hold.cfdi_uuid,
            issuer_rfc=hold.issuer_rfc,
            stamped_at=stamped_at,
            local_date=stamped_at.astimezone(MEXICO_CITY).date(),
            lot_id=hold.lot_id,
        )
        self.settle_expiry(today, at)

    def void_hold(self, hold: Hold, today: date, at: datetime) -> None:
        """Gives the held stamp back to its lot (an open hold, or one past its time)."""
        assert self.holds.get(hold.hold_id) is hold
        self.trigger(
            self.ReservationVoided,
            at,
            hold_id=hold.hold_id,
            expired=hold.expires_at <= at,
            lot_id=hold.lot_id,
            lot_expires_on=hold.lot_expires_on,
        )
        self.settle_expiry(today, at)

    def credit(
        self,
        transfer_id: str,
        from_id: str,
        quantity: int,
        at: datetime,
        expires_on: date | None = None,
        *,
        today: date,
    ) -> None:
        """Adds a lot of stamps (the handler checked the kind and the sender)."""
        # A successful command on the account records the expiry of lots past their date, so
        # the postings (what an auditor sums) catch up with the balance that already excludes them.
        self.settle_expiry(today, at)
        self.trigger(
            self.StampsCredited,
            at,
            transfer_id=transfer_id,
            from_id=from_id,
            quantity=quantity,
            expires_on=expires_on,
        )

    def check_reclaim(self, quantity: int, today: date, at: datetime) -> None:
        """Rejects a reclaim of a kind of account without a balance, or beyond the balance."""
        self.require_standard()
        available = self.balance(STAMPS, today, at)
        if available < quantity:
            raise Rejected(
                "insufficient_stamps", cti_id=self.id, available=available, requested=quantity
            )

    def reclaim(
        self, transfer_id: str, to_id: str, quantity: int, reason: str, today: date, at: datetime
    ) -> tuple[tuple[str, int], ...]:
        """Gives ``quantity`` unused stamps back to the distributor, never below zero; returns
        what it took from each lot, in lot order."""
        self.check_reclaim(quantity, today, at)
        self.settle_expiry(today, at)
        taken: list[tuple[str, int]] = []
        left = quantity
        for lot in self.lots:
            if left == 0:
                break
            take = min(left, lot.remaining)
            taken.append((lot.lot_id, take))
            left -= take
        self.trigger(
            self.StampsReclaimed,
            at,
            transfer_id=transfer_id,
            to_id=to_id,
            quantity=quantity,
            reason=reason,
            taken=tuple(taken),
        )
        return tuple(taken)
