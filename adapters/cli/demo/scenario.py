"""The demo's scenario: what happens on each simulated day, sent to a ``Ledger``.

The opening day sets up the network of ``network``; then come ``days`` days of consumption up
to yesterday with daily patterns (busy weekdays, quiet Sundays, a month-end rush, accounts that
started recently), driven by a ``ManualClock``; top-ups as accounts run low, some automatic;
weekly orders; two accounts blocked half-way; invoices for the first weeks' sales (later sales
stay unbilled); at the end credit codes and purchases through the clients' panel, and the purge
of the distributor closed on the opening day.

Everything goes through ``Ledger.execute_many`` in daily batches, as a real integration would.
What happened comes back as plain data (``ScenarioReport``); what it left is in the views.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from adapters.cli.demo.network import (
    MASTER,
    Network,
    buy_package,
    define_package,
    opening_day,
    transfer,
)
from ledger.api import Ledger
from ledger.clock import MEXICO_CITY, ManualClock
from ledger.errors import Rejected
from ledger.outcome import Outcome
from ledger.projections.billing import SaleRow

REJECTIONS_KEPT = 5
"""Rejections the report quotes (all of them are counted)."""


@dataclass
class ScenarioReport:
    """What the scenario did: the commands it sent and the rejections (a demo should have none)."""

    commands: int = 0
    rejected: int = 0
    stamping_accounts: int = 0
    first_rejections: list[str] = field(default_factory=list)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """``hour:minute`` of ``day`` in Mexico City."""
    return datetime.combine(day, clock_time(hour, minute), tzinfo=MEXICO_CITY)


class Scenario:
    """Drives an open ledger and its ``ManualClock`` through the demo's days."""

    def __init__(
        self, lg: Ledger, clock: ManualClock, *, clients: int, days: int, seed: int, today: date
    ) -> None:
        self.lg = lg
        self.clock = clock
        rng = random.Random(seed)  # noqa: S311  (a reproducible demo, not secrets)
        self.rng = rng
        self.network = Network(rng, clients=clients, days=days, today=today)
        self.days = days
        self.today = today
        self.first_day = today - timedelta(days=days)
        self.report = ScenarioReport()
        self.sales: dict[str, list[tuple[date, str]]] = {}

    def play(self, now: datetime, progress: Callable[[int, int], None] | None = None) -> None:
        """The opening day, the days, codes and panel; then the clock is set to ``now`` (or
        later, if the last day went past it). ``progress(done, total)`` is called each day."""
        network = self.network
        self.clock.set(at(opening_day(self.today, self.days), 9))
        self._run(network.opening())
        self._run(network.clients())
        self._run(network.accounts_and_tags())
        self._run(network.initial_stamps())
        self._run(network.lifecycle())
        self.simulate(progress)
        self.codes_and_panel()
        self.finish(max(now, self.clock()))
        self.report.stamping_accounts = len(network.accounts)

    # Plumbing -------------------------------------------------------------------------------

    def _run(self, commands: Sequence[dict[str, Any]]) -> list[Outcome | None]:
        """Runs a batch; a rejection is counted (a demo should have none) and kept as None."""
        if not commands:
            return []
        results = self.lg.execute_many(commands)
        self.report.commands += len(commands)
        outcomes: list[Outcome | None] = []
        for command, result in zip(commands, results, strict=True):
            if isinstance(result, Rejected):
                self._rejected(f"{command['type']}: {result}")
                outcomes.append(None)
            else:
                sale_ids = () if command["type"] == "RegisterInvoice" else result.sale_ids
                if sale_ids:
                    sales = self.sales.setdefault(self._seller_of(command), [])
                    sales.extend((self.clock().date(), sale_id) for sale_id in sale_ids)
                outcomes.append(result)
        return outcomes

    def _rejected(self, line: str) -> None:
        self.report.rejected += 1
        if len(self.report.first_rejections) < REJECTIONS_KEPT:
            self.report.first_rejections.append(line)

    def _seller_of(self, command: dict[str, Any]) -> str:
        """Who sold what a command's outcome lists in ``sale_ids`` (the seller invoices it)."""
        kind = command["type"]
        if kind == "ContractSubscription":  # the network's catalogue: the master sells it
            return MASTER
        if kind == "ConsumeStamp":  # an automatic top-up, sold by the CTI's distributor
            return self.network.accounts[command["cti_id"]].distributor_id
        if kind == "ClientBuyPackage":  # a panel purchase, sold by the client's distributor
            return self.network.distributor_of(command["client_id"])
        seller: str = command.get("from_id") or command.get("seller_id") or MASTER
        return seller

    # The days -------------------------------------------------------------------------------

    def simulate(self, progress: Callable[[int, int], None] | None = None) -> None:
        """``days`` days of consumption, top-ups and a few events worth seeing.

        ``progress(done, total)`` is called after each day.
        """
        blocked_day = self.days // 2
        for day_number in range(self.days):
            day = self.first_day + timedelta(days=day_number)
            self.clock.set(at(day, 7))
            self._restock()
            self._run(self._weekly_orders(day_number) + self._top_ups(day_number))
            if day_number == blocked_day:
                self._block_some()
            if day_number == self.invoice_day:
                self._invoice_first_month()
            self.clock.set(at(day, 21))
            consumptions = self._consumptions(day, day_number)
            for outcome, command in zip(self._run(consumptions), consumptions, strict=True):
                if outcome is not None and outcome.balance_after is not None:
                    self.network.accounts[command["cti_id"]].balance = outcome.balance_after
            if progress is not None:
                progress(day_number + 1, self.days)

    def _restock(self) -> None:
        """Distributors low on stamps buy from their parent (parents first, so they can sell)."""
        for parents_first in (True, False):
            commands: list[dict[str, Any]] = []
            for seller in self.network.sellers:
                if (seller.parent_id == MASTER) != parents_first:
                    continue
                # A parent keeps enough to serve its sub-distributors' purchases the same day.
                floor = 100_000 if seller.multinivel else (40_000 if parents_first else 20_000)
                if self.lg.balance(seller.distributor_id, "stamps") >= floor:
                    continue
                package, count = ("TIM-50000", 3) if parents_first else ("MAYOREO-5000", 4)
                commands.append(
                    buy_package(seller.distributor_id, seller.parent_id, package, count)
                )
            self._run(commands)

    def _weekly_orders(self, day_number: int) -> list[dict[str, Any]]:
        """Every seventh day each distributor of the platform orders a pack of 10,000 stamps."""
        if day_number % 7 != 6:
            return []
        return [
            buy_package(seller.distributor_id, MASTER, "TIM-10000", 1)
            for seller in self.network.children(MASTER)
        ]

    def _top_ups(self, day_number: int) -> list[dict[str, Any]]:
        """Stamps for every standard CTI that would not last four more days."""
        commands = []
        for account in self.network.accounts.values():
            if account.unlimited or account.blocked:
                continue
            if account.balance < account.rate * 4 + 10:
                quantity = int(max(200, round(account.rate * 25, -2)))
                account.balance += quantity
                commands.append(
                    transfer(
                        "TransferStamps",
                        f"RECARGA-{account.cti_id}-{day_number}",
                        account.distributor_id,
                        account.cti_id,
                        quantity,
                        f"{quantity * 0.55:.2f}",
                    )
                )
        return commands

    def _consumptions(self, day: date, day_number: int) -> list[dict[str, Any]]:
        """The day's stamps of every CTI that has started, at its rate times the day's mood."""
        rng = self.rng
        weekday = day.weekday()
        factor = (1.0, 1.05, 1.0, 1.1, 1.15, 0.45, 0.2)[weekday]
        if day.day >= 26:
            factor *= 1.4  # month-end invoicing rush
        commands = []
        for account in self.network.accounts.values():
            if account.blocked or day_number < account.starts_on_day:
                continue
            expected = account.rate * factor * rng.uniform(0.6, 1.4)
            count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
            if not account.unlimited:
                count = min(count, account.balance)
                account.balance -= count
            for _ in range(count):
                stamped = at(day, 8) + timedelta(seconds=rng.randrange(13 * 3600))
                commands.append(
                    {
                        "type": "ConsumeStamp",
                        "actor": MASTER,
                        "cti_id": account.cti_id,
                        "cfdi_uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        "issuer_rfc": "GODE561231GR8",
                        "stamped_at": stamped.isoformat(),
                    }
                )
        return commands

    def _block_some(self) -> None:
        """Two standard CTIs are blocked: they consume and top up no more."""
        candidates = [a for a in self.network.accounts.values() if not a.unlimited][:2]
        for account in candidates:
            account.blocked = True
        self._run(
            [
                {"type": "BlockStampingAccount", "actor": a.distributor_id, "cti_id": a.cti_id}
                for a in candidates
            ]
        )

    @property
    def invoice_day(self) -> int:
        """The day the sellers invoice what they sold before it: day 31, or half-way if sooner.

        What was sold from then on stays unbilled, so the billing views show both kinds.
        """
        return min(31, self.days // 2 + 1)

    def _invoice_first_month(self) -> None:
        """The platform and D-CENTRO invoice (up to 500 of) their sales before today to the
        buyer of their oldest one (an invoice has one buyer)."""
        commands = []
        cutoff = self.first_day + timedelta(days=self.invoice_day - 1)
        self.lg.views.catch_up()  # the views tell each sale's buyer
        for seller_id in (MASTER, "D-CENTRO"):
            wanted = {sale_id for when, sale_id in self.sales.get(seller_id, []) if when < cutoff}
            rows = [s for s in self._unbilled(seller_id) if s.sale_id in wanted]
            buyer = rows[0].buyer_id if rows else None
            sale_ids = [s.sale_id for s in rows if s.buyer_id == buyer][:500]
            if sale_ids:
                commands.append(
                    {
                        "type": "RegisterInvoice",
                        "actor": seller_id,
                        "seller_id": seller_id,
                        "invoice_ref": f"FAC-{seller_id}-0001",
                        "sale_ids": sale_ids,
                    }
                )
        self._run(commands)

    def _unbilled(self, seller_id: str) -> list[SaleRow]:
        """Every unbilled sale of ``seller_id``, oldest first (page by page)."""
        rows: list[SaleRow] = []
        while page := self.lg.views.unbilled_sales(seller_id, limit=500, offset=len(rows)):
            rows.extend(page)
        return rows

    # The last day ---------------------------------------------------------------------------

    def codes_and_panel(self) -> None:
        """D-NORTE sells credit codes and lets its clients buy through their panel (PCC)."""
        north = "D-NORTE"
        accounts = self.network.accounts
        buyers = [c for c in self.network.seller(north).clients if f"{c}-cti" in accounts][:3]
        if len(buyers) < 2:
            return
        self._run(
            [
                # The packages first: selling stamps through the panel needs one defined.
                define_package(north, "PANEL-100", "stamps", 100, "95.00", audience="client",
                               validity_days=365),
                define_package(north, "PANEL-PTS-500", "points", 500, "500.00",
                               audience="client"),
                {"type": "ChangeSettings", "seller_id": north, "bulk_stamp_price": "0.85",
                 "allow_pcc_stamp_purchase": True, "allow_pcc_point_purchase": True,
                 "actor": north},
                {"type": "ClientBuyPackage", "client_id": buyers[0], "package_id": "PANEL-100",
                 "actor": buyers[0]},
                {"type": "ClientBuyPackage", "client_id": buyers[1],
                 "package_id": "PANEL-PTS-500", "actor": buyers[1]},
            ]
        )  # fmt: skip
        expires = (self.clock().date() + timedelta(days=90)).isoformat()
        issued = self._run(
            [
                {"type": "IssueCreditCode", "code_id": f"CODIGO-{n}", "distributor_id": north,
                 "unit": unit, "quantity": quantity, "expires_on": expires, "actor": north}
                for n, unit, quantity in (
                    (1, "stamps", 200), (2, "points", 1_000), (3, "stamps", 50), (4, "stamps", 500)
                )
            ]
        )  # fmt: skip
        if any(outcome is None or outcome.code is None for outcome in issued):
            return
        first, second, _third, _fourth = issued
        assert first is not None
        assert second is not None
        self._run(
            [
                {"type": "RedeemCreditCode", "code": first.code, "nip": first.nip,
                 "to_id": f"{buyers[2 % len(buyers)]}-cti", "actor": buyers[2 % len(buyers)]},
                {"type": "CancelCreditCode", "code_id": "CODIGO-4", "actor": north},
            ]
        )  # fmt: skip
        # Someone guesses the second code's NIP five times: the code locks for good and its
        # points go back to D-NORTE. These rejections are the point, so they are not counted.
        assert second.nip is not None
        wrong = f"{(int(second.nip) + 1) % 1_000_000:06d}"
        guesses = self.lg.execute_many(
            [
                {"type": "RedeemCreditCode", "code": second.code, "nip": wrong,
                 "to_id": buyers[0], "actor": buyers[0]}
            ]
            * 5
        )  # fmt: skip
        self.report.commands += len(guesses)

    def finish(self, now: datetime) -> None:
        """The clock back to the real present; a sub-distributor suspended for the views."""
        self.clock.set(now)
        self._run(
            [{"type": "SuspendDistributor", "distributor_id": "D-CENTRO-PUE", "actor": "D-CENTRO"}]
        )

    def purge_due(self) -> ScenarioReport:
        """What ``ledger purge-due`` does: every distributor cancelled 30 days ago is purged.

        It reads the views: call it once they have caught up. Returns the whole report.
        """
        for result in self.lg.purge_due():
            self.report.commands += 1
            if isinstance(result, Rejected):
                self._rejected(f"PurgeDistributor: {result}")
        return self.report
