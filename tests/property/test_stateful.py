"""Random command sequences against the ledger and an in-memory model (Hypothesis stateful).

The machine drives a small network (master, distributor D1 with a price list, its
sub-distributor D2 without one, three clients with a CTI each, ready to stamp with the password
their registration generated) through purchases, transfers of stamps and points (priced, given
as gifts, or unpriced: price_unknown for D2), mass transfers, reclaims with their credit lines,
client packages that expire, consumptions with repeated CFDI UUIDs, holds (reserved, posted,
voided, and expired by the clock, with CFDIs shared with consumptions), blocking, suspension,
credentials checks (right and wrong passwords, lockout, resets), renewals (which charge each
subscription the amount the model computes apart, and extend them), licences under D1's MKL
paid in points, extra-user seats (bought, renewed ahead, lapsed ones renewed by a purchase) and
portal users with e-mails distinct per client, credit codes (each a sale billed to whoever
redeems it), and the clock. The model predicts each command's outcome (success, replay or the
exact rejection code) and every balance. After every step it checks, from the stored events
alone, that each unit's postings sum to zero and that no holder but the issuance source is
negative, that ``lg.balance`` (held books included) equals the model for every holder, and
that the billing view bills clients and distributors (never a CTI) as the model says.
"""

from __future__ import annotations

import calendar
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from adapters.storage.memory import MemoryStore
from ledger.aggregates.common import add_one_year, sale_of_lot
from ledger.api import Ledger
from ledger.clock import ManualClock, local_date
from ledger.errors import Rejected
from ledger.outcome import Outcome
from tests.support import ISSUER_RFC, MASTER, client_profile, distributor_profile

D1, D2 = "D1", "D2"
DISTRIBUTORS = (D1, D2)
PARENT = {D1: MASTER, D2: D1}
CLIENT_OF = {"C1": D1, "C2": D1, "C3": D2}
CTI_OF = {"C1-cti": "C1", "C2-cti": "C2", "C3-cti": "C3"}
DISTRIBUTOR_OF_CTI = {cti: CLIENT_OF[client] for cti, client in CTI_OF.items()}
CTIS = tuple(CTI_OF)
CLIENTS = tuple(CLIENT_OF)
PACKAGES = {  # seller's package id -> (seller, unit, quantity)
    "P100": (MASTER, "stamps", 100),
    "PTS300": (MASTER, "points", 300),
    "D50": (D1, "stamps", 50),
    "DP30": (D1, "points", 30),
}
CLIENT_PACKAGES = {"CS10": ("stamps", 10), "CP40": ("points", 40)}  # D1's panel packages
GRANT_QUANTITY = 20
GRANT_VALIDITY_DAYS = 7
EXPIRES_ON = {D1: date(2026, 2, 15), D2: date(2026, 1, 20)}
SUBSCRIPTIONS = {D1: ("Multinivel", "MKL Dóminus"), D2: ()}
ANNUAL_PRICES = {"Multinivel": Decimal("1200.00"), "MKL Dóminus": Decimal("1850.00")}
"""Pre-IVA yearly prices in the machine's catalogue."""
LICENCE_POINTS = 40
"""Points per Dóminus licence in the machine's catalogue."""
UUID_POOL = tuple(f"abcdef00-0000-4000-8000-{n:012d}" for n in range(8))


def charge_centavos(product: str, start: date, end: date) -> int:
    """What a subscription costs from ``start`` to ``end``, computed apart from ``ledger.money``:
    whole calendar months (a month on from the 31st ends on the month's last day), at least
    one, of the yearly price, rounded half up to centavos, plus 16 % IVA rounded the same way."""
    months = 0
    while True:
        year, month = divmod(start.month + months, 12)  # the month after ``months`` more
        year, month = start.year + year, month + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        if date(year, month, day) > end:
            break
        months += 1
    cent = Decimal("0.01")
    base = (ANNUAL_PRICES[product] * max(months, 1) / 12).quantize(cent, ROUND_HALF_UP)
    total = base + (base * Decimal("0.16")).quantize(cent, ROUND_HALF_UP)
    return int(total * 100)


@dataclass
class Lot:
    """A lot as the model sees it."""

    lot_id: str
    remaining: int
    expires_on: date | None


@dataclass
class Code:
    """A credit code as the model sees it."""

    code: str
    nip: str
    issuer: str
    unit: str
    quantity: int
    expires_on: date | None
    state: str = "active"
    wrong_nips: int = 0
    redeemed_to: str | None = None

    def state_on(self, today: date) -> str:
        """The state with the clock applied."""
        if self.state == "active" and self.expires_on is not None and today > self.expires_on:
            return "expired"
        return self.state


@dataclass
class ModelHold:
    """A hold as the model sees it; ``open`` until an event closes it (expired ones included)."""

    hold_id: str
    cti_id: str
    cfdi_uuid: str
    expires_at: datetime
    lot_id: str
    lot_expires_on: date | None
    open: bool = True
    closed_by: str = ""  # "post", "void", "void-expired" or "expiry"


@dataclass
class ModelSale:
    """A sale the model follows in the billing view (codes and reclaim credit lines)."""

    seller: str
    buyer: str
    quantity: int
    amount: Decimal
    source: str
    code_id: str | None = None
    redeemed_by: str | None = None
    credit_for: str | None = None


def _lot_key(lot: Lot) -> tuple[bool, date]:
    return (lot.expires_on is None, lot.expires_on or date.max)


@dataclass
class Model:
    """What the ledger should hold."""

    stamps: Counter[str] = field(default_factory=Counter)
    points: Counter[str] = field(default_factory=Counter)
    lots: dict[str, list[Lot]] = field(default_factory=lambda: {c: [] for c in CTIS})
    blocked: set[str] = field(default_factory=set)
    suspended: set[str] = field(default_factory=set)
    password: dict[str, str] = field(default_factory=dict)  # CTI -> its password
    failures: Counter[str] = field(default_factory=Counter)  # CTI -> failed checks in a row
    locked_until: dict[str, datetime] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    consumed: dict[str, str] = field(default_factory=dict)  # CFDI UUID -> CTI, or "hold"
    hold_of: dict[str, ModelHold] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)  # holds whose VoidReservation is recorded
    expires: dict[str, date] = field(default_factory=lambda: dict(EXPIRES_ON))
    seats: dict[str, dict[str, tuple[date, str | None]]] = field(
        default_factory=lambda: {c: {} for c in CLIENTS}
    )  # client -> seat id -> (expires on, user id)
    # user id -> (client, seat, status)
    users: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    sales: dict[str, ModelSale] = field(default_factory=dict)  # sale id -> what the view shows
    emails: dict[str, str] = field(default_factory=dict)  # portal user id -> its e-mail

    def open_holds(self, cti_id: str) -> list[ModelHold]:
        """Holds the CTI's state keeps (closed by no event yet), oldest first."""
        return [h for h in self.hold_of.values() if h.open and h.cti_id == cti_id]

    def held(self, cti_id: str, now: datetime | None = None) -> int:
        """Stamps set aside (with ``now``: by holds not past their time)."""
        return sum(
            1 for h in self.open_holds(cti_id) if h.lot_id and (now is None or h.expires_at > now)
        )

    def returning(self, cti_id: str, today: date, now: datetime) -> int:
        """Stamps of holds past their time whose lot has not expired: available again."""
        return sum(
            1
            for h in self.open_holds(cti_id)
            if h.lot_id
            and h.expires_at <= now
            and (h.lot_expires_on is None or h.lot_expires_on >= today)
        )

    def return_stamp(self, hold: ModelHold) -> None:
        """The hold's stamp back to its lot; an emptied lot comes back first among its equals."""
        lots = self.lots[hold.cti_id]
        for lot in lots:
            if lot.lot_id == hold.lot_id:
                lot.remaining += 1
                return
        new = Lot(hold.lot_id, 1, hold.lot_expires_on)
        index = next((i for i, x in enumerate(lots) if _lot_key(x) >= _lot_key(new)), len(lots))
        lots.insert(index, new)

    def status(self, distributor_id: str, today: date) -> str:
        """The distributor's status with the clock applied."""
        if distributor_id in self.suspended:
            return "suspended"
        return "expired" if today > self.expires[distributor_id] else "active"

    def free_seat(self, client_id: str, today: date) -> str | None:
        """The free seat that lapses last (then the smallest id), as the ledger picks it."""
        free = [
            (expires_on, seat_id)
            for seat_id, (expires_on, user) in self.seats[client_id].items()
            if user is None and today <= expires_on
        ]
        if not free:
            return None
        return min(free, key=lambda seat: (-seat[0].toordinal(), seat[1]))[1]

    def usable(self, cti_id: str, today: date) -> int:
        """Stamps the CTI may use today (what ``lg.balance`` reports)."""
        return sum(
            lot.remaining
            for lot in self.lots[cti_id]
            if lot.expires_on is None or lot.expires_on >= today
        )

    def booked(self, cti_id: str) -> int:
        """Stamps the CTI's postings hold (expired lots count until their expiry is recorded)."""
        return sum(lot.remaining for lot in self.lots[cti_id])

    def settle(self, cti_id: str, today: date, now: datetime | None = None) -> None:
        """Closes holds past their time (with ``now``), then drops expired lots, as recorded."""
        if now is not None:
            for hold in self.open_holds(cti_id):
                if hold.expires_at <= now:
                    hold.open = False
                    hold.closed_by = "expiry"
                    if hold.lot_id:
                        self.return_stamp(hold)
        self.lots[cti_id] = [
            lot for lot in self.lots[cti_id] if lot.expires_on is None or lot.expires_on >= today
        ]

    def credit(self, cti_id: str, lot: Lot, today: date, now: datetime) -> None:
        """A new lot, after recording expired ones; lots stay in consumption order."""
        self.settle(cti_id, today, now)
        self.lots[cti_id].append(lot)
        # Stable sort: expiring first by date, never-expiring last, ties oldest first.
        self.lots[cti_id].sort(key=lambda x: (x.expires_on is None, x.expires_on or date.max))

    def take(self, cti_id: str, quantity: int) -> None:
        """Takes stamps from the lots in order, dropping empty lots."""
        for lot in self.lots[cti_id]:
            taken = min(quantity, lot.remaining)
            lot.remaining -= taken
            quantity -= taken
        assert quantity == 0
        self.lots[cti_id] = [lot for lot in self.lots[cti_id] if lot.remaining > 0]

    def holds(self, unit: str) -> Counter[str]:
        """The book of ``unit``."""
        return self.stamps if unit == "stamps" else self.points


def setup_commands() -> list[dict[str, Any]]:
    """The network, with empty inventories."""
    commands: list[dict[str, Any]] = [
        {"type": "OpenMasterAccount", "master_id": MASTER, "name": "P", "rfc": "SAT970701NN3"},
        {"type": "RegisterDistributor", "actor": MASTER, "distributor_id": D1, "parent_id": MASTER,
         "profile": distributor_profile("Uno", "uno@example.com")},
        {"type": "ValidateDistributor", "distributor_id": D1, "actor": MASTER},
        {"type": "ActivateDistributor", "distributor_id": D1, "actor": MASTER,
         "expires_on": EXPIRES_ON[D1].isoformat()},
        {"type": "DefineSubscriptionProduct", "seller_id": MASTER, "actor": MASTER,
         "product": "Multinivel", "kind": "multinivel", "annual_price": "1200.00"},
        {"type": "DefineSubscriptionProduct", "seller_id": MASTER, "actor": MASTER,
         "product": "MKL Dóminus", "kind": "mkl", "annual_price": "1850.00",
         "licence_points": LICENCE_POINTS},
        *[{"type": "ContractSubscription", "distributor_id": D1, "product": product, "actor": D1}
          for product in SUBSCRIPTIONS[D1]],
        {"type": "RegisterDistributor", "actor": D1, "distributor_id": D2, "parent_id": D1,
         "profile": distributor_profile("Dos", "dos@example.com")},
        {"type": "ValidateDistributor", "distributor_id": D2, "actor": D1},
        {"type": "ActivateDistributor", "distributor_id": D2, "actor": D1,
         "expires_on": EXPIRES_ON[D2].isoformat()},
        {"type": "DefinePackage", "actor": D1,
         "seller_id": D1, "package_id": "G20", "unit": "stamps",
         "quantity": GRANT_QUANTITY, "price": "40.00", "audience": "client",
         "validity_days": GRANT_VALIDITY_DAYS},
        {"type": "ChangeSettings", "actor": D1, "seller_id": D1,
         "allow_pcc_stamp_purchase": True, "allow_pcc_point_purchase": True},
        # D1 prices what its commands leave unpriced; D2 (and the master) have no price list.
        {"type": "ChangeSettings", "actor": D1, "seller_id": D1, "bulk_stamp_price": "0.80"},
    ]  # fmt: skip
    for package_id, (unit, quantity) in CLIENT_PACKAGES.items():
        commands.append(
            {"type": "DefinePackage", "actor": D1, "seller_id": D1, "package_id": package_id,
             "unit": unit, "quantity": quantity, "price": f"{quantity}.00", "audience": "client"}
        )  # fmt: skip
    for package_id, (seller, unit, quantity) in PACKAGES.items():
        commands.append(
            {"type": "DefinePackage", "actor": seller,
             "seller_id": seller, "package_id": package_id,
             "unit": unit, "quantity": quantity, "price": "10.00", "audience": "distributor"}
        )  # fmt: skip
    for client_id, distributor_id in CLIENT_OF.items():
        commands.append(
            {"type": "RegisterClient", "actor": distributor_id,
             "client_id": client_id, "distributor_id": distributor_id,
             "profile": client_profile(client_id, f"{client_id.lower()}@example.com")}
        )  # fmt: skip
    return commands


class LedgerMachine(RuleBasedStateMachine):
    """The ledger on the in-memory store beside its model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
        self.lg = Ledger.open("memory://", clock=self.clock, password_cost="fast")
        commands = setup_commands()
        results = self.lg.execute_many(commands)
        assert all(isinstance(r, Outcome) for r in results), results
        self.model = Model()
        # Every client's CTI is ready to stamp: its generated password is in the outcome.
        for command, result in zip(commands, results, strict=True):
            if command["type"] == "RegisterClient":
                assert isinstance(result, Outcome)
                assert result.cti_id is not None
                assert result.cti_password is not None
                self.model.password[result.cti_id] = result.cti_password
        self.counter = 0
        self.last_transfer: dict[str, Any] | None = None
        # Postings already summed, so each step reads only the new events.
        self.seen = 0
        self.sums: Counter[str] = Counter()
        self.posted: Counter[tuple[str, str]] = Counter()
        # Stock to work with, through the rules themselves so the model follows.
        self.buy("P100", 3)
        self.buy("P100", 3)
        self.buy("PTS300", 2)
        self.buy("D50", 3)
        self.buy("DP30", 2)
        for cti_id in CTIS:
            self.transfer_stamps(DISTRIBUTOR_OF_CTI[cti_id], cti_id, 30, "15.00")
        for cti_id in CTIS[:2]:
            self.reset_password(cti_id)

    def teardown(self) -> None:
        """Closes the ledger."""
        self.lg.close()

    # Helpers --------------------------------------------------------------------------------

    @property
    def today(self) -> date:
        """The ledger's business day."""
        return local_date(self.clock())

    def next_id(self, prefix: str) -> str:
        """A fresh id."""
        self.counter += 1
        return f"{prefix}{self.counter}"

    def run(self, command: dict[str, Any], expected: str) -> Outcome | None:
        """Executes ``command``; checks it ends as ``expected`` (``ok``, ``replayed``, a code)."""
        (result,) = self.lg.execute_many([command])
        if isinstance(result, Rejected):
            assert result.code == expected, (command, result.to_dict())
            return None
        actual = "replayed" if result.replayed else "ok"
        assert actual == expected, (command, result)
        return result

    def target_check(self, source: str, unit: str, to_id: str) -> str | None:
        """The rejection code of a transfer's receiver, or None when it may receive."""
        if to_id in DISTRIBUTORS:
            return None if PARENT[to_id] == source else "not_authorised"
        if unit == "stamps" and to_id in CTIS:
            return None if DISTRIBUTOR_OF_CTI[to_id] == source else "not_authorised"
        if unit == "points" and to_id in CLIENTS:
            return None if CLIENT_OF[to_id] == source else "not_authorised"
        return "wrong_account_kind"

    def receive(self, unit: str, to_id: str, transfer_id: str, quantity: int) -> None:
        """The model's side of a transfer's credit."""
        if to_id in CTIS:
            self.model.credit(to_id, Lot(transfer_id, quantity, None), self.today, self.clock())
        else:
            self.model.holds(unit)[to_id] += quantity

    # Rules ----------------------------------------------------------------------------------

    @rule(package_id=st.sampled_from(sorted(PACKAGES)), count=st.integers(1, 3))
    def buy(self, package_id: str, count: int) -> None:
        """A distributor buys packages from its parent."""
        seller, unit, quantity = PACKAGES[package_id]
        buyer = D1 if seller == MASTER else D2
        total = quantity * count
        book = self.model.holds(unit)
        expected = "ok"
        seller_status = "active" if seller == MASTER else self.model.status(seller, self.today)
        if self.model.status(buyer, self.today) != "active" or seller_status != "active":
            expected = "distributor_not_active"
        elif seller != MASTER and book[seller] < total:
            expected = "insufficient_inventory" if unit == "stamps" else "insufficient_points"
        command = {"type": "BuyPackage", "actor": buyer, "buyer_id": buyer, "seller_id": seller,
                   "package_id": package_id, "count": count}  # fmt: skip
        if self.run(command, expected):
            book[seller] -= total
            book[buyer] += total

    def do_transfer(
        self, unit: str, source: str, to_id: str, quantity: int, amount: str | None = None
    ) -> None:
        """A transfer of stamps or points, predicted by the model."""
        transfer_id = self.next_id("T")
        book = self.model.holds(unit)
        expected = "ok"
        if self.model.status(source, self.today) != "active":
            expected = "distributor_not_active"
        elif (code := self.target_check(source, unit, to_id)) is not None:
            expected = code
        elif book[source] < quantity:
            expected = "insufficient_inventory" if unit == "stamps" else "insufficient_points"
        elif not self.priced(source, unit, amount):
            expected = "price_unknown"
        kind = "TransferStamps" if unit == "stamps" else "TransferPoints"
        command = {"type": kind, "actor": source, "transfer_id": transfer_id, "from_id": source,
                   "to_id": to_id, "quantity": quantity}  # fmt: skip
        if amount is not None:
            command["amount"] = amount
        if self.run(command, expected):
            book[source] -= quantity
            self.receive(unit, to_id, transfer_id, quantity)
            self.last_transfer = command

    @staticmethod
    def priced(seller: str, unit: str, amount: str | None) -> bool:
        """Whether a sale has a price: given, points (1.00 each), or D1's bulk price."""
        return amount is not None or unit == "points" or seller == D1

    @rule(
        source=st.sampled_from(DISTRIBUTORS),
        to_id=st.sampled_from((*CTIS, D2)),
        quantity=st.integers(1, 60),
        amount=st.sampled_from((None, "0.00", "12.50")),
    )
    def transfer_stamps(self, source: str, to_id: str, quantity: int, amount: str | None) -> None:
        """Stamps to a CTI or the sub-distributor (another distributor's ones included); D2 has
        no price list, so its unpriced transfers are price_unknown."""
        self.do_transfer("stamps", source, to_id, quantity, amount)

    @rule(
        source=st.sampled_from(DISTRIBUTORS),
        to_id=st.sampled_from((*CLIENTS, D2)),
        quantity=st.integers(1, 60),
    )
    def transfer_points(self, source: str, to_id: str, quantity: int) -> None:
        """Points to a client or the sub-distributor (another distributor's ones included)."""
        self.do_transfer("points", source, to_id, quantity)

    @rule(
        unit=st.sampled_from(["stamps", "points"]),
        to_id=st.sampled_from((*CTIS, *CLIENTS, D1)),
    )
    def transfer_to_the_wrong_kind(self, unit: str, to_id: str) -> None:
        """Transfers to accounts that cannot take that unit from D1 (or at all)."""
        self.do_transfer(unit, D1, to_id, 1)

    @rule(other_quantity=st.booleans())
    def repeat_transfer(self, other_quantity: bool) -> None:
        """The last successful transfer again: replayed, or a conflict with another quantity."""
        if self.last_transfer is None:
            return
        if other_quantity:
            command = {**self.last_transfer, "quantity": self.last_transfer["quantity"] + 1}
            self.run(command, "idempotency_conflict")
        else:
            self.run(self.last_transfer, "replayed")

    @rule(
        lines=st.lists(
            st.tuples(st.sampled_from(("C1-cti", "C2-cti", D2, "C3-cti")), st.integers(1, 40)),
            min_size=1,
            max_size=4,
        )
    )
    def mass_transfer(self, lines: list[tuple[str, int]]) -> None:
        """D1 sends stamps to several accounts: all lines or none."""
        batch_id = self.next_id("B")
        total = sum(quantity for _, quantity in lines)
        expected = "ok"
        if self.model.status(D1, self.today) != "active":
            expected = "distributor_not_active"
        elif any(self.target_check(D1, "stamps", to_id) for to_id, _ in lines):
            expected = "not_authorised"
        elif self.model.stamps[D1] < total:
            expected = "insufficient_inventory"
        command = {
            "type": "MassTransfer",
            "actor": D1,
            "batch_id": batch_id,
            "from_id": D1,
            "lines": [{"to_id": to_id, "quantity": quantity} for to_id, quantity in lines],
        }
        if self.run(command, expected):
            self.model.stamps[D1] -= total
            for number, (to_id, quantity) in enumerate(lines, start=1):
                self.receive("stamps", to_id, f"{batch_id}:{number}", quantity)

    @rule(cti_id=st.sampled_from(("C1-cti", "C2-cti")))
    def grant(self, cti_id: str) -> None:
        """D1 assigns a client package that expires in a week."""
        grant_id = self.next_id("G")
        expected = "ok"
        if self.model.status(D1, self.today) != "active":
            expected = "distributor_not_active"
        elif self.model.stamps[D1] < GRANT_QUANTITY:
            expected = "insufficient_inventory"
        command = {"type": "AssignPackage", "actor": D1, "grant_id": grant_id, "seller_id": D1,
                   "cti_id": cti_id, "package_id": "G20"}  # fmt: skip
        if self.run(command, expected):
            self.model.stamps[D1] -= GRANT_QUANTITY
            expires_on = self.today + timedelta(days=GRANT_VALIDITY_DAYS)
            self.model.credit(
                cti_id, Lot(grant_id, GRANT_QUANTITY, expires_on), self.today, self.clock()
            )

    @rule(
        cti_id=st.sampled_from(CTIS),
        quantity=st.integers(1, 10),
        amount=st.sampled_from((None, "0.00", "3.00")),
    )
    def reclaim(self, cti_id: str, quantity: int, amount: str | None) -> None:
        """The CTI's distributor takes unused stamps back; the client gets a credit line (the
        amount given, else the list's: D1's 0.80 a stamp; D2 has no list)."""
        distributor_id = DISTRIBUTOR_OF_CTI[cti_id]
        expected = "ok"
        if self.available(cti_id) < quantity:
            expected = "insufficient_stamps"
        elif not self.priced(distributor_id, "stamps", amount):
            expected = "price_unknown"
        transfer_id = self.next_id("R")
        command = {"type": "ReclaimStamps", "actor": distributor_id,
                   "transfer_id": transfer_id, "from_cti_id": cti_id, "quantity": quantity,
                   "reason": "impago"}  # fmt: skip
        if amount is not None:
            command["amount"] = amount
        outcome = self.run(command, expected)
        if outcome is not None:
            self.model.settle(cti_id, self.today, self.clock())
            first_lot = self.model.lots[cti_id][0].lot_id
            self.model.take(cti_id, quantity)
            self.model.stamps[distributor_id] += quantity
            credit = Decimal(amount) if amount is not None else Decimal("0.80") * quantity
            (sale_id,) = outcome.sale_ids
            self.model.sales[sale_id] = ModelSale(
                distributor_id, CTI_OF[cti_id], -quantity, -credit, "reclaim",
                credit_for=sale_of_lot(first_lot),
            )  # fmt: skip

    def available(self, cti_id: str) -> int:
        """What ``lg.balance`` reports now: usable lots and the stamps of holds past their time."""
        now = self.clock()
        return self.model.usable(cti_id, self.today) + self.model.returning(cti_id, self.today, now)

    def predict_take(self, cti_id: str, cfdi_uuid: str) -> tuple[str, str]:
        """Whether one stamp may be taken for a CFDI now (a consumption or a hold): the end,
        and the lot it comes from; the model settles as the ledger records, but takes nothing."""
        now = self.clock()
        open_holds = self.model.open_holds(cti_id)
        if open_holds:
            if any(h.cfdi_uuid == cfdi_uuid and h.expires_at > now for h in open_holds):
                return "idempotency_conflict", ""
            if cti_id in self.model.blocked:
                return "account_blocked", ""
            if self.available(cti_id) < 1:
                return "insufficient_stamps", ""
            self.model.settle(cti_id, self.today, now)
            return "ok", self.model.lots[cti_id][0].lot_id
        usable = [
            lot
            for lot in self.model.lots[cti_id]
            if lot.expires_on is None or lot.expires_on >= self.today
        ]
        if cti_id in self.model.blocked:
            return "account_blocked", ""
        if not usable:
            return "insufficient_stamps", ""
        if usable[0] is not self.model.lots[cti_id][0]:
            self.model.settle(cti_id, self.today)
        return "ok", usable[0].lot_id

    def predict_consume(self, cti_id: str, cfdi: str | None) -> tuple[dict[str, Any], str]:
        """A ConsumeStamp command and its predicted end; the model takes its effect."""
        self.counter += 1
        cfdi_uuid = cfdi or f"00000000-0000-4000-9000-{self.counter:012d}"
        first_cti = self.model.consumed.get(cfdi_uuid.upper())
        if first_cti is not None:
            expected = "replayed" if first_cti == cti_id else "idempotency_conflict"
        else:
            expected, _ = self.predict_take(cti_id, cfdi_uuid.upper())
            if expected == "ok":
                self.model.take(cti_id, 1)
                self.model.consumed[cfdi_uuid.upper()] = cti_id
        command = {"type": "ConsumeStamp", "actor": MASTER,
                   "cti_id": cti_id, "cfdi_uuid": cfdi_uuid,
                   "issuer_rfc": ISSUER_RFC}  # fmt: skip
        return command, expected

    @rule(
        cti_id=st.sampled_from(CTIS),
        cfdi=st.one_of(st.sampled_from(UUID_POOL), st.none()),
        lower_case=st.booleans(),
    )
    def consume(self, cti_id: str, cfdi: str | None, lower_case: bool) -> None:
        """One CFDI stamped; pool UUIDs repeat, on the same or another CTI, in either case."""
        if cfdi is not None and not lower_case:
            cfdi = cfdi.upper()
        command, expected = self.predict_consume(cti_id, cfdi)
        self.run(command, expected)

    @rule(
        stamps=st.lists(
            st.tuples(st.sampled_from(CTIS), st.one_of(st.sampled_from(UUID_POOL), st.none())),
            min_size=1,
            max_size=12,
        )
    )
    def consume_batch(self, stamps: list[tuple[str, str | None]]) -> None:
        """Many consumptions in one execute_many, each with its own outcome."""
        predicted = [self.predict_consume(cti_id, cfdi) for cti_id, cfdi in stamps]
        results = self.lg.execute_many([command for command, _ in predicted])
        actual = [
            r.code if isinstance(r, Rejected) else ("replayed" if r.replayed else "ok")
            for r in results
        ]
        assert actual == [expected for _, expected in predicted], predicted

    @rule(cti_id=st.sampled_from(CTIS), block=st.booleans())
    def block_or_reactivate(self, cti_id: str, block: bool) -> None:
        """Blocks or reactivates a CTI; the same state again is invalid_transition."""
        already = (cti_id in self.model.blocked) == block
        kind = "BlockStampingAccount" if block else "ReactivateStampingAccount"
        command = {"type": kind, "actor": DISTRIBUTOR_OF_CTI[cti_id], "cti_id": cti_id}
        if self.run(command, "invalid_transition" if already else "ok"):
            if block:
                self.model.blocked.add(cti_id)
            else:
                self.model.blocked.discard(cti_id)

    @rule(suspend=st.booleans())
    def suspend_or_reactivate_sub_distributor(self, suspend: bool) -> None:
        """D1 suspends or reactivates D2 (the clock may have expired it meanwhile)."""
        status = self.model.status(D2, self.today)
        allowed = status == ("active" if suspend else "suspended")
        kind = "SuspendDistributor" if suspend else "ReactivateDistributor"
        command = {"type": kind, "distributor_id": D2, "actor": D1}
        if self.run(command, "ok" if allowed else "invalid_transition"):
            if suspend:
                self.model.suspended.add(D2)
            else:
                self.model.suspended.discard(D2)

    @rule(
        cti_id=st.sampled_from(CTIS),
        cfdi=st.one_of(st.sampled_from(UUID_POOL), st.none()),
        expires_in_s=st.sampled_from((60, 300, 7200)),
    )
    def reserve(self, cti_id: str, cfdi: str | None, expires_in_s: int) -> None:
        """The stamping service sets a stamp aside; pool CFDIs may be held or consumed already."""
        hold_id = self.next_id("H")
        cfdi_uuid = (cfdi or f"00000000-0000-4000-a000-{self.counter:012d}").upper()
        now = self.clock()
        if cfdi_uuid in self.model.consumed:
            expected, lot_id = "idempotency_conflict", ""
        else:
            expected, lot_id = self.predict_take(cti_id, cfdi_uuid)
        command = {"type": "ReserveStamp", "hold_id": hold_id, "cti_id": cti_id,
                   "cfdi_uuid": cfdi_uuid, "issuer_rfc": ISSUER_RFC,
                   "expires_in_s": expires_in_s, "actor": MASTER}  # fmt: skip
        if self.run(command, expected):
            lot = self.model.lots[cti_id][0]
            assert lot.lot_id == lot_id
            self.model.take(cti_id, 1)
            self.model.hold_of[hold_id] = ModelHold(
                hold_id, cti_id, cfdi_uuid, now + timedelta(seconds=expires_in_s),
                lot_id, lot.expires_on,
            )  # fmt: skip

    def pick_hold(self, index: int) -> str:
        """A hold id the model knows (or an unknown one when there is none)."""
        known = sorted(self.model.hold_of)
        return known[index % len(known)] if known else "H-unknown"

    @rule(index=st.integers(0, 50))
    def post(self, index: int) -> None:
        """The stamping service posts a hold: its CFDI's consumption, unless too late or taken."""
        hold_id = self.pick_hold(index)
        hold = self.model.hold_of.get(hold_id)
        now = self.clock()
        if hold is None:
            expected = "unknown_hold"
        elif hold.closed_by == "post":
            expected = "replayed"
        elif hold.closed_by == "void":
            expected = "hold_closed"
        elif hold.closed_by in ("void-expired", "expiry") or hold.expires_at <= now:
            expected = "hold_expired"
        elif hold.cfdi_uuid in self.model.consumed:
            expected = "idempotency_conflict"
        else:
            expected = "ok"
        command = {"type": "PostReservation", "hold_id": hold_id, "actor": MASTER}
        # A replay records nothing (DESIGN §3.3): no expiry of the CTI's other holds either.
        if self.run(command, expected) and expected == "ok":
            assert hold is not None
            hold.open = False
            hold.closed_by = "post"
            self.model.consumed[hold.cfdi_uuid] = "hold"
            self.model.settle(hold.cti_id, self.today, now)

    @rule(index=st.integers(0, 50))
    def void(self, index: int) -> None:
        """The stamping service voids a hold; a hold past its time is void already."""
        hold_id = self.pick_hold(index)
        hold = self.model.hold_of.get(hold_id)
        now = self.clock()
        if hold is None:
            expected = "unknown_hold"
        elif hold.closed_by == "post":
            expected = "hold_closed"
        elif hold_id in self.model.voided:
            expected = "replayed"
        else:
            expected = "ok"
        command = {"type": "VoidReservation", "hold_id": hold_id, "actor": MASTER}
        if self.run(command, expected):
            assert hold is not None
            self.model.voided.add(hold_id)
            if hold.open:
                hold.open = False
                hold.closed_by = "void-expired" if hold.expires_at <= now else "void"
                if hold.lot_id:
                    self.model.return_stamp(hold)
                self.model.settle(hold.cti_id, self.today, now)

    @rule(seconds=st.sampled_from((30, 60, 240, 3600)))
    def advance_seconds(self, seconds: int) -> None:
        """A few seconds or minutes pass: holds may expire."""
        self.clock.advance(timedelta(seconds=seconds))

    @rule(distributor_id=st.sampled_from(DISTRIBUTORS), days=st.integers(-1, 60))
    def renew(self, distributor_id: str, days: int) -> None:
        """The parent renews; every subscription is charged (one sale each) and follows."""
        status = self.model.status(distributor_id, self.today)
        current = self.model.expires[distributor_id]
        new_expiry = max(current, self.today) + timedelta(days=days)
        if status not in ("active", "expired"):
            expected = "invalid_transition"
        elif new_expiry <= current or new_expiry < self.today:
            expected = "invalid_command"
        else:
            expected = "ok"
        command = {
            "type": "RenewDistributor",
            "distributor_id": distributor_id,
            "actor": PARENT[distributor_id],
            "expires_on": new_expiry.isoformat(),
        }
        outcome = self.run(command, expected)
        if outcome is not None:
            self.model.expires[distributor_id] = new_expiry
            assert len(outcome.sale_ids) == len(SUBSCRIPTIONS[distributor_id])
            # Each subscription is charged from the old expiry (today, if that passed).
            start = max(current, self.today)
            charged = {
                event.product: event.amount_centavos
                for event in self.lg.store.events()
                if type(event).__name__ == "SubscriptionRenewed"
                and event.sale_id in outcome.sale_ids  # type: ignore[attr-defined]
            }
            assert charged == {
                product: charge_centavos(product, start, new_expiry)
                for product in SUBSCRIPTIONS[distributor_id]
            }
            distributor = self.lg.engine.current(distributor_id)
            assert set(distributor.subscriptions.values()) <= {new_expiry}  # type: ignore[union-attr]

    @rule(client_id=st.sampled_from(CLIENTS))
    def generate_licence(self, client_id: str) -> None:
        """A Dóminus licence: D1's MKL; the wallet pays if it covers the price, else D1."""
        distributor_id = CLIENT_OF[client_id]
        payer = client_id if self.model.points[client_id] >= LICENCE_POINTS else distributor_id
        if self.model.status(distributor_id, self.today) != "active":
            expected = "distributor_not_active"
        elif "MKL Dóminus" not in SUBSCRIPTIONS[distributor_id]:
            expected = "mkl_required"
        elif self.model.points[payer] < LICENCE_POINTS:
            expected = "insufficient_points"
        else:
            expected = "ok"
        command = {"type": "GenerateLicence", "client_id": client_id, "product": "Dóminus",
                   "actor": distributor_id}  # fmt: skip
        outcome = self.run(command, expected)
        if outcome is not None:
            self.model.points[payer] -= LICENCE_POINTS
            assert outcome.details["paid_by"] == payer
            assert outcome.details["expires_on"] == add_one_year(self.today).isoformat()

    @rule(client_id=st.sampled_from(CLIENTS))
    def buy_seat(self, client_id: str) -> None:
        """The client's distributor sells it a seat for a year; a lapsed seat (one with a user
        first) is renewed from today instead."""
        distributor_id = CLIENT_OF[client_id]
        active = self.model.status(distributor_id, self.today) == "active"
        seat_id = self.next_id("SEAT")
        command = {"type": "BuyUserSeat", "seat_id": seat_id, "client_id": client_id,
                   "price": "288.84", "actor": distributor_id}  # fmt: skip
        outcome = self.run(command, "ok" if active else "distributor_not_active")
        if outcome is None:
            return
        seats = self.model.seats[client_id]
        lapsed = sorted(
            (user is None, expires_on, lapsed_id)
            for lapsed_id, (expires_on, user) in seats.items()
            if self.today > expires_on
        )
        if lapsed:
            renewed = lapsed[0][2]
            assert outcome.details["seat_id"] == renewed
            seats[renewed] = (add_one_year(self.today), seats[renewed][1])
        else:
            seats[seat_id] = (add_one_year(self.today), None)

    @rule(data=st.data())
    def renew_seat(self, data: st.DataObject) -> None:
        """The distributor renews a seat ahead of time: a year from its expiry (from today once
        it lapsed)."""
        owned = sorted((c, s) for c, seats in self.model.seats.items() for s in seats)
        if not owned:
            return
        client_id, seat_id = data.draw(st.sampled_from(owned))
        distributor_id = CLIENT_OF[client_id]
        active = self.model.status(distributor_id, self.today) == "active"
        command = {"type": "RenewUserSeat", "seat_id": seat_id, "price": "250.00",
                   "actor": distributor_id}  # fmt: skip
        if self.run(command, "ok" if active else "distributor_not_active"):
            expires_on, user = self.model.seats[client_id][seat_id]
            self.model.seats[client_id][seat_id] = (
                add_one_year(max(expires_on, self.today)),
                user,
            )

    def email_taken(self, client_id: str, email: str, user_id: str) -> bool:
        """Whether another user of the client, not deleted, has ``email``."""
        return any(
            other != user_id and client == client_id and status != "deleted" and mail == email
            for other, (client, _seat, status) in self.model.users.items()
            for mail in (self.model.emails[other],)
        )

    @rule(client_id=st.sampled_from(CLIENTS), shared=st.sampled_from((None, "ana", "beto")))
    def add_portal_user(self, client_id: str, shared: str | None) -> None:
        """A user takes the free seat that lapses last, or no_free_seat; an e-mail another
        user of the client has is already_exists."""
        seat_id = self.model.free_seat(client_id, self.today)
        user_id = self.next_id("U")
        email = f"{shared or user_id.lower()}@example.com"
        if self.email_taken(client_id, email, user_id):
            expected = "already_exists"
        else:
            expected = "no_free_seat" if seat_id is None else "ok"
        command = {"type": "AddPortalUser", "user_id": user_id, "client_id": client_id,
                   "email": email, "actor": client_id}  # fmt: skip
        outcome = self.run(command, expected)
        if outcome is not None:
            self.model.emails[user_id] = email
            assert seat_id is not None
            assert outcome.details["seat_id"] == seat_id
            expires_on, _ = self.model.seats[client_id][seat_id]
            self.model.seats[client_id][seat_id] = (expires_on, user_id)
            self.model.users[user_id] = (client_id, seat_id, "active")

    @rule(
        data=st.data(),
        action=st.sampled_from(("Deactivate", "Change", "Delete")),
        shared=st.sampled_from((None, "ana", "beto")),
    )
    def change_portal_user(self, data: st.DataObject, action: str, shared: str | None) -> None:
        """Deactivate keeps the seat, Change reassigns a valid one (to an e-mail no other user
        of the client has), Delete loses it."""
        if not self.model.users:
            return
        user_id = data.draw(st.sampled_from(sorted(self.model.users)))
        client_id, seat_id, status = self.model.users[user_id]
        expires_on, _ = self.model.seats[client_id][seat_id]
        email = f"{shared or 'otro.' + user_id.lower()}@example.com"
        if status == "deleted" or (action == "Deactivate" and status != "active"):
            expected = "invalid_transition"
        elif action == "Change" and self.email_taken(client_id, email, user_id):
            expected = "already_exists"
        elif action == "Change" and self.today > expires_on:
            expected = "no_free_seat"
        else:
            expected = "ok"
        command = {"type": f"{action}PortalUser", "user_id": user_id, "actor": client_id}
        if action == "Change":
            command["email"] = email
        if self.run(command, expected):
            new_status = {"Deactivate": "deactivated", "Change": "active", "Delete": "deleted"}
            self.model.users[user_id] = (client_id, seat_id, new_status[action])
            if action == "Change":
                self.model.emails[user_id] = email

    @rule(days=st.integers(0, 4), hours=st.integers(0, 23))
    def advance_clock(self, days: int, hours: int) -> None:
        """Time passes: lots and distributors may expire."""
        self.clock.advance(timedelta(days=days, hours=hours))

    @rule(minutes=st.integers(1, 20))
    def advance_clock_minutes(self, minutes: int) -> None:
        """A few minutes pass: credentials locks may end."""
        self.clock.advance(timedelta(minutes=minutes))

    @rule(cti_id=st.sampled_from(CTIS[:2]))
    def reset_password(self, cti_id: str) -> None:
        """The distributor sets a new password: the count of failures and any lock end."""
        password = f"clave-{self.next_id('p')}"
        command = {"type": "ResetStampingPassword", "cti_id": cti_id, "password": password,
                   "actor": DISTRIBUTOR_OF_CTI[cti_id]}  # fmt: skip
        self.run(command, "ok")
        self.model.password[cti_id] = password
        self.model.failures[cti_id] = 0
        self.model.locked_until.pop(cti_id, None)

    @rule(cti_id=st.sampled_from(CTIS), right=st.booleans(), times=st.integers(1, 6))
    def check_credentials(self, cti_id: str, right: bool, times: int) -> None:
        """The same check ``times`` in a row (so that locks happen)."""
        for _ in range(times):
            self.check_credentials_once(cti_id, right)

    def check_credentials_once(self, cti_id: str, right: bool) -> None:
        """Valid true or false, credentials_locked after 5 failures, account_blocked if so."""
        model = self.model
        password = model.password[cti_id] if right else "incorrecta"
        command = {"type": "VerifyStampingCredentials", "cti_id": cti_id,
                   "password": password, "actor": MASTER}  # fmt: skip
        store = self.lg.store
        assert isinstance(store, MemoryStore)
        before = len(store.stored_events())
        now = self.clock()
        locked_until = model.locked_until.get(cti_id)
        valid = right
        (result,) = self.lg.execute_many([command])
        recorded = len(store.stored_events()) - before
        if locked_until is not None and now < locked_until:
            assert isinstance(result, Rejected)
            assert (result.code, recorded) == ("credentials_locked", 0)
        elif valid and cti_id in model.blocked:
            assert isinstance(result, Rejected)
            assert (result.code, recorded) == ("account_blocked", 0)
        elif valid:
            assert isinstance(result, Outcome)
            assert (result.valid, recorded) == (True, 1 if model.failures[cti_id] else 0)
            model.failures[cti_id] = 0
            model.locked_until.pop(cti_id, None)
        else:
            assert isinstance(result, Outcome)
            assert (result.valid, recorded) == (False, 1)
            failures = 1 if locked_until is not None else model.failures[cti_id] + 1
            model.failures[cti_id] = failures
            model.locked_until.pop(cti_id, None)
            if failures >= 5:
                model.locked_until[cti_id] = now + timedelta(minutes=15)

    # Credit codes, points purchases, panel purchases ----------------------------------------

    @rule(
        issuer=st.sampled_from(DISTRIBUTORS),
        unit=st.sampled_from(["stamps", "points"]),
        quantity=st.integers(1, 80),
        days=st.one_of(st.none(), st.integers(0, 3)),
        amount=st.sampled_from((None, "0.00", "40.00")),
    )
    def issue_code(
        self, issuer: str, unit: str, quantity: int, days: int | None, amount: str | None
    ) -> None:
        """A distributor sets credits aside behind a code and NIP."""
        code_id = self.next_id("K")
        book = self.model.holds(unit)
        expected = "ok"
        if self.model.status(issuer, self.today) != "active":
            expected = "distributor_not_active"
        elif book[issuer] < quantity:
            expected = "insufficient_inventory" if unit == "stamps" else "insufficient_points"
        elif not self.priced(issuer, unit, amount):
            expected = "price_unknown"
        expires_on = None if days is None else self.today + timedelta(days=days)
        command: dict[str, Any] = {
            "type": "IssueCreditCode",
            "actor": issuer,
            "code_id": code_id,
            "distributor_id": issuer,
            "unit": unit,
            "quantity": quantity,
        }
        if expires_on is not None:
            command["expires_on"] = expires_on.isoformat()  # fmt: skip
        if amount is not None:
            command["amount"] = amount
        outcome = self.run(command, expected)
        if outcome is not None:
            assert outcome.code is not None
            assert outcome.nip is not None
            book[issuer] -= quantity
            book[code_id] += quantity
            self.model.codes[code_id] = Code(
                outcome.code, outcome.nip, issuer, unit, quantity, expires_on
            )
            # Issuing is a sale to whoever redeems it (nobody yet).
            assert outcome.sale_ids == (f"code:{code_id}",)
            price = Decimal("1.00") if unit == "points" else Decimal("0.80")
            self.model.sales[f"code:{code_id}"] = ModelSale(
                issuer,
                "",
                quantity,
                Decimal(amount) if amount is not None else price * quantity,
                "code",
                code_id=code_id,
            )

    def redemption_target_check(self, code: Code, to_id: str) -> str | None:
        """The rejection code of a redemption's target, or None."""
        if code.unit == "stamps" and to_id in CTIS:
            owner = DISTRIBUTOR_OF_CTI[to_id]
        elif code.unit == "points" and to_id in CLIENTS:
            owner = CLIENT_OF[to_id]
        else:
            return "wrong_account_kind"
        # The issuer's network: its own clients and those of its sub-distributors.
        return None if code.issuer in (owner, PARENT.get(owner)) else "not_authorised"

    @rule(
        pick=st.integers(0, 1_000),
        right_nip=st.booleans(),
        to_id=st.sampled_from((*CTIS, *CLIENTS)),
    )
    def redeem_code(self, pick: int, right_nip: bool, to_id: str) -> None:
        """Redeems a code: right or wrong NIP, to a CTI or wallet, inside the network or not."""
        if not self.model.codes:
            return
        code_id = sorted(self.model.codes)[pick % len(self.model.codes)]
        code = self.model.codes[code_id]
        nip = code.nip if right_nip else f"{(int(code.nip) + 1) % 1_000_000:06d}"
        state = code.state_on(self.today)
        actor = to_id if to_id in CLIENTS else CTI_OF[to_id]
        command = {"type": "RedeemCreditCode", "code": code.code, "nip": nip, "to_id": to_id,
                   "actor": actor}  # fmt: skip
        target_code = self.redemption_target_check(code, to_id)
        if state == "redeemed":
            self.run(command, "replayed" if code.redeemed_to == to_id else "code_redeemed")
            return
        if state != "active":
            self.run(command, f"code_{state}")
            return
        if target_code is not None:
            self.run(command, target_code)
            return
        book = self.model.holds(code.unit)
        if not right_nip:
            code.wrong_nips += 1
            if code.wrong_nips < 5:
                self.run(command, "wrong_nip")
                return
            self.run(command, "code_locked")
            code.state = "locked"
            book[code_id] -= code.quantity
            book[code.issuer] += code.quantity
            return
        self.run(command, "ok")
        code.state, code.redeemed_to = "redeemed", to_id
        sale = self.model.sales[f"code:{code_id}"]
        sale.buyer, sale.redeemed_by = CTI_OF.get(to_id, to_id), to_id
        book[code_id] -= code.quantity
        self.receive(code.unit, to_id, f"code:{code_id}:redeemed", code.quantity)

    @rule(pick=st.integers(0, 1_000))
    def cancel_code(self, pick: int) -> None:
        """The issuer cancels a code (or closes an expired one); its credits come back."""
        if not self.model.codes:
            return
        code_id = sorted(self.model.codes)[pick % len(self.model.codes)]
        code = self.model.codes[code_id]
        command = {"type": "CancelCreditCode", "code_id": code_id, "actor": code.issuer}
        state = code.state_on(self.today)
        if code.state != "active":
            self.run(command, f"code_{code.state}")
            return
        self.run(command, "ok")
        code.state = "cancelled" if state == "active" else "expired"
        book = self.model.holds(code.unit)
        book[code_id] -= code.quantity
        book[code.issuer] += code.quantity

    @rule(package_id=st.sampled_from(["P100", "D50"]), count=st.integers(1, 3))
    def buy_with_points(self, package_id: str, count: int) -> None:
        """D1 pays the master, or D2 pays D1, in points (10.00 a package: 10 points)."""
        seller, _unit, quantity = PACKAGES[package_id]
        buyer = D1 if seller == MASTER else D2
        points = 10 * count
        seller_status = "active" if seller == MASTER else self.model.status(seller, self.today)
        expected = "ok"
        if self.model.status(buyer, self.today) != "active":
            expected = "distributor_not_active"
        elif self.model.points[buyer] < points:
            expected = "insufficient_points"
        elif seller_status != "active":
            expected = "distributor_not_active"
        elif seller != MASTER and self.model.stamps[seller] < quantity * count:
            expected = "insufficient_inventory"
        command = {"type": "BuyPackage", "actor": buyer, "buyer_id": buyer, "seller_id": seller,
                   "package_id": package_id, "count": count, "pay_with": "points"}  # fmt: skip
        if self.run(command, expected):
            self.model.stamps[seller] -= quantity * count
            self.model.stamps[buyer] += quantity * count
            self.model.points[buyer] -= points
            if seller != MASTER:
                self.model.points[seller] += points

    @rule(
        client_id=st.sampled_from(("C1", "C2")), package_id=st.sampled_from(sorted(CLIENT_PACKAGES))
    )
    def client_buys(self, client_id: str, package_id: str) -> None:
        """A client of D1 buys through its panel; D1 restocks from the master if short (its
        smallest covering package: P100 for stamps, PTS300 for points)."""
        unit, quantity = CLIENT_PACKAGES[package_id]
        expected = "ok"
        if self.model.status(D1, self.today) != "active":
            expected = "distributor_not_active"
        command = {"type": "ClientBuyPackage", "client_id": client_id, "package_id": package_id,
                   "actor": client_id}  # fmt: skip
        outcome = self.run(command, expected)
        if outcome is None:
            return
        book = self.model.holds(unit)
        if book[D1] < quantity:
            restock = 100 if unit == "stamps" else 300
            book[D1] += restock
            book[MASTER] -= restock
            assert len(outcome.sale_ids) == 2
        self.model.holds(unit)[D1] -= quantity
        if unit == "stamps":
            cti_id = f"{client_id}-cti"
            self.receive("stamps", cti_id, outcome.sale_ids[0], quantity)
        else:
            self.model.points[client_id] += quantity

    @rule(holder=st.sampled_from((*DISTRIBUTORS, *CLIENTS)), points=st.integers(1, 80))
    def spend_points(self, holder: str, points: int) -> None:
        """A client spends points of its wallet, a distributor of its own inventory."""
        field_name = "distributor_id" if holder in DISTRIBUTORS else "client_id"
        command = {"type": "SpendPoints", field_name: holder, "product": "licencia",
                   "points": points, "actor": holder}  # fmt: skip
        enough = self.model.points[holder] >= points
        if self.run(command, "ok" if enough else "insufficient_points"):
            self.model.points[holder] -= points

    # Invariants -----------------------------------------------------------------------------

    def read_postings(self) -> None:
        """Adds the postings of events recorded since the last step."""
        store = self.lg.store
        assert isinstance(store, MemoryStore)
        rows = store.stored_events()[self.seen :]
        for row in rows:
            for posting in store.mapper.to_domain_event(row).postings():
                self.sums[posting.unit] += posting.delta
                self.posted[(posting.holder, posting.unit)] += posting.delta
        self.seen += len(rows)

    @invariant()
    def every_unit_sums_to_zero(self) -> None:
        """Double entry: per unit, all postings (source and sinks included) sum to zero."""
        self.read_postings()
        assert all(total == 0 for total in self.sums.values()), self.sums

    @invariant()
    def only_the_issuance_source_is_negative(self) -> None:
        """No holder's posted balance is below zero, except the master account's."""
        self.read_postings()
        negative = {k: v for k, v in self.posted.items() if v < 0 and k[0] != MASTER}
        assert negative == {}

    @invariant()
    def postings_match_the_model(self) -> None:
        """Each holder's posted balance is the model's (expired lots count until recorded)."""
        self.read_postings()
        for unit in ("stamps", "points"):
            for holder in (MASTER, *DISTRIBUTORS):
                assert self.posted[(holder, unit)] == self.model.holds(unit)[holder]
        for client_id in CLIENTS:
            assert self.posted[(client_id, "points")] == self.model.points[client_id]
        for cti_id in CTIS:
            assert self.posted[(cti_id, "stamps")] == self.model.booked(cti_id)
            assert self.posted[(f"held:{cti_id}", "stamps")] == self.model.held(cti_id)
        for code_id, code in self.model.codes.items():
            assert self.posted[(code_id, code.unit)] == self.model.holds(code.unit)[code_id]

    @invariant()
    def sales_bill_clients_and_distributors(self) -> None:
        """Every unbilled sale names a client or distributor as buyer (never a CTI; "" only for
        a code nobody redeemed), and the sales the model follows are shown as it says."""
        rows = {}
        for seller in (MASTER, *DISTRIBUTORS):
            offset = 0
            while page := self.lg.views.unbilled_sales(seller, limit=500, offset=offset):
                rows.update((row.sale_id, row) for row in page)
                offset += len(page)
        for row in rows.values():
            if row.buyer_id == "":
                assert (row.source, row.redeemed_by) == ("code", None), row
            else:
                assert row.buyer_id in (*DISTRIBUTORS, *CLIENTS), row
        for sale_id, sale in self.model.sales.items():
            row = rows[sale_id]
            shown = (row.seller_id, row.buyer_id, row.quantity, Decimal(row.amount), row.source)
            assert shown == (sale.seller, sale.buyer, sale.quantity, sale.amount, sale.source)
            assert (row.code_id, row.redeemed_by, row.credit_for) == (
                sale.code_id,
                sale.redeemed_by,
                sale.credit_for,
            )

    @invariant()
    def history_ends_at_the_balance(self) -> None:
        """A CTI's (and its held book's) last running balance in ``history`` is ``balance``:
        lots and holds that expired appear as movements at their instants, recorded or not."""
        for cti_id in CTIS:
            for holder in (cti_id, f"held:{cti_id}"):
                history = self.lg.history(holder)
                last = history[-1].balance if history else 0
                assert last == self.lg.balance(holder), (holder, history[-3:])

    @invariant()
    def balances_match_the_model(self) -> None:
        """``lg.balance`` equals the model for every holder and unit."""
        for unit in ("stamps", "points"):
            for holder in (MASTER, *DISTRIBUTORS):
                assert self.lg.balance(holder, unit) == self.model.holds(unit)[holder], holder
        for client_id in CLIENTS:
            assert self.lg.balance(client_id, "points") == self.model.points[client_id]
        now = self.clock()
        for cti_id in CTIS:
            assert self.lg.balance(cti_id) == self.available(cti_id), cti_id
            assert self.lg.balance(f"held:{cti_id}") == self.model.held(cti_id, now), cti_id
        for code_id, code in self.model.codes.items():
            assert self.lg.balance(code_id, code.unit) == self.model.holds(code.unit)[code_id]


LedgerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Tens of seconds (150 sequences of 50 steps, each checked against the events, the views and
# every CTI's history): marked slow, and still run by CI.
TestLedgerMachine = pytest.mark.slow(LedgerMachine.TestCase)
