"""A credit code: stamps or points a distributor set aside for whoever holds the code and NIP.

The credits leave the issuer's inventory into the code's own book when it is issued (double
entry: the code is a holder like any other), and leave that book once: to the redeemer's CTI or
wallet, or back to the issuer when the code is locked, cancelled or expired. The code itself is
never stored; only its SHA-256 (``code_digest``) and the NIP's slow salted hash are.
"""

from __future__ import annotations

from datetime import date, datetime

from ledger.domain import Aggregate, Created, Event, Posting
from ledger.errors import Rejected

ACTIVE = "active"
LOCKED = "locked"
REDEEMED = "redeemed"
EXPIRED = "expired"
CANCELLED = "cancelled"
STATES = (ACTIVE, LOCKED, REDEEMED, EXPIRED, CANCELLED)
NOT_ACTIVE_CODES = {
    LOCKED: "code_locked",
    REDEEMED: "code_redeemed",
    EXPIRED: "code_expired",
    CANCELLED: "code_cancelled",
}
"""The rejection of a redemption or a cancellation of a code in that state."""

WRONG_NIPS_MAX = 5
"""Consecutive wrong NIPs that lock a code for good."""


def issued_ref(code_id: str) -> str:
    """The movement that set the credits aside (issuer → code)."""
    return f"code:{code_id}:issued"


def redeemed_ref(code_id: str) -> str:
    """The movement of a redemption (code → CTI or wallet)."""
    return f"code:{code_id}:redeemed"


def returned_ref(code_id: str) -> str:
    """The movement that gave the credits back (code → issuer)."""
    return f"code:{code_id}:returned"


class CreditCode(Aggregate):
    """A code and NIP worth ``quantity`` units of ``unit``, redeemable once."""

    distributor_id: str
    unit: str
    quantity: int
    amount_centavos: int
    expires_on: date | None
    code_digest: str
    nip_hash: str
    state: str
    wrong_nips: int
    held: int
    redeemed_by: str | None
    redeemed_at: datetime | None

    class Issued(Created, frozen=True, kw_only=True):
        """The issuer set ``quantity`` units aside into the code's book."""

        distributor_id: str
        unit: str
        quantity: int
        amount_centavos: int
        expires_on: date | None = None
        code_digest: str
        nip_hash: str

        def apply(self, aggregate: CreditCode) -> None:
            """An active code holding the credits."""
            aggregate.distributor_id = self.distributor_id
            aggregate.unit = self.unit
            aggregate.quantity = self.quantity
            aggregate.amount_centavos = self.amount_centavos
            aggregate.expires_on = self.expires_on
            aggregate.code_digest = self.code_digest
            aggregate.nip_hash = self.nip_hash
            aggregate.state = ACTIVE
            aggregate.wrong_nips = 0
            aggregate.held = self.quantity
            aggregate.redeemed_by = None
            aggregate.redeemed_at = None

        def postings(self) -> tuple[Posting, ...]:
            """The code's leg of the set-aside (the issuer's is ``Distributor.CreditsSetAside``)."""
            ref = issued_ref(self.originator_id)
            return (
                Posting(self.originator_id, self.unit, self.quantity, ref, self.distributor_id),
            )

        def keys(self) -> tuple[str, ...]:
            """A code (by its digest) exists once."""
            return (f"code:{self.code_digest}",)

    class WrongNipEntered(Event, frozen=True, kw_only=True):
        """A redemption gave a wrong NIP (recorded: DESIGN §3.3's exception)."""

        wrong_nips: int

        def apply(self, aggregate: CreditCode) -> None:
            """Counts consecutive failures."""
            aggregate.wrong_nips = self.wrong_nips

    class Locked(Event, frozen=True, kw_only=True):
        """Too many wrong NIPs: the code is locked for good."""

        def apply(self, aggregate: CreditCode) -> None:
            """Locked."""
            aggregate.state = LOCKED

    class Cancelled(Event, frozen=True, kw_only=True):
        """The issuer cancelled an active code."""

        def apply(self, aggregate: CreditCode) -> None:
            """Cancelled."""
            aggregate.state = CANCELLED

    class Expired(Event, frozen=True, kw_only=True):
        """The code passed its expiry date unredeemed (recorded when its credits went back)."""

        def apply(self, aggregate: CreditCode) -> None:
            """Expired."""
            aggregate.state = EXPIRED

    class Redeemed(Event, frozen=True, kw_only=True):
        """The credits went to ``to_id`` (a CTI for stamps, a client's wallet for points).

        ``client_id``: the client of ``to_id``, who bought the code's sale ("" for codes
        redeemed before codes were sales).
        """

        to_id: str
        quantity: int
        unit: str
        client_id: str = ""

        def apply(self, aggregate: CreditCode) -> None:
            """Empties the book."""
            aggregate.state = REDEEMED
            aggregate.held = 0
            aggregate.redeemed_by = self.to_id
            aggregate.redeemed_at = self.timestamp

        def postings(self) -> tuple[Posting, ...]:
            """The code's leg of the redemption."""
            ref = redeemed_ref(self.originator_id)
            return (Posting(self.originator_id, self.unit, -self.quantity, ref, self.to_id),)

    class CreditsReturned(Event, frozen=True, kw_only=True):
        """The credits went back to the issuer (locked, cancelled or expired code)."""

        to_id: str
        quantity: int
        unit: str

        def apply(self, aggregate: CreditCode) -> None:
            """Empties the book."""
            aggregate.held = 0

        def postings(self) -> tuple[Posting, ...]:
            """The code's leg of the return (the issuer's is ``CreditsReceived``)."""
            ref = returned_ref(self.originator_id)
            return (Posting(self.originator_id, self.unit, -self.quantity, ref, self.to_id),)

    # Queries -------------------------------------------------------------------------------

    def balance(self, unit: str) -> int:
        """The credits the code's book holds."""
        return self.held if unit == self.unit else 0

    def state_on(self, today: date) -> str:
        """The state with the clock applied: an active code past its expiry date is expired."""
        if self.state == ACTIVE and self.expires_on is not None and today > self.expires_on:
            return EXPIRED
        return self.state

    # Decisions -----------------------------------------------------------------------------

    @classmethod
    def issue(
        cls,
        code_id: str,
        *,
        distributor_id: str,
        unit: str,
        quantity: int,
        amount_centavos: int,
        expires_on: date | None,
        code_digest: str,
        nip_hash: str,
        at: datetime,
    ) -> CreditCode:
        """A new active code holding ``quantity`` units."""
        return cls.create(
            cls.Issued,
            code_id,
            at,
            distributor_id=distributor_id,
            unit=unit,
            quantity=quantity,
            amount_centavos=amount_centavos,
            expires_on=expires_on,
            code_digest=code_digest,
            nip_hash=nip_hash,
        )

    def require_redeemable(self, today: date) -> None:
        """Rejects a code that is not active today (never naming the code itself)."""
        state = self.state_on(today)
        if state != ACTIVE:
            raise Rejected(NOT_ACTIVE_CODES[state], code_id=self.id)

    def wrong_nip(self, at: datetime) -> bool:
        """Records a wrong NIP; returns True when it locked the code (credits go back)."""
        count = self.wrong_nips + 1
        self.trigger(self.WrongNipEntered, at, wrong_nips=count)
        if count < WRONG_NIPS_MAX:
            return False
        self.trigger(self.Locked, at)
        self.give_back(at)
        return True

    def give_back(self, at: datetime) -> None:
        """The code's credits go back to the issuer (the handler records the issuer's leg)."""
        self.trigger(
            self.CreditsReturned, at, to_id=self.distributor_id, quantity=self.held, unit=self.unit
        )

    def redeem(self, to_id: str, client_id: str, at: datetime) -> None:
        """The credits leave for ``to_id`` of ``client_id`` (the handler checked the NIP and
        the target)."""
        self.trigger(
            self.Redeemed,
            at,
            to_id=to_id,
            quantity=self.held,
            unit=self.unit,
            client_id=client_id,
        )

    def close(self, today: date, at: datetime) -> None:
        """Cancels an active code, or records the expiry of an expired one; credits go back."""
        state = self.state_on(today)
        if state == ACTIVE:
            self.trigger(self.Cancelled, at)
        elif state == EXPIRED and self.state == ACTIVE:
            self.trigger(self.Expired, at)
        else:
            # The same answer a redemption of it gets: why the code is no longer active.
            raise Rejected(NOT_ACTIVE_CODES[state], code_id=self.id)
        self.give_back(at)
