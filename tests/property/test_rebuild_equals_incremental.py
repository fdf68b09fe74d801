"""Views maintained page by page equal views rebuilt from scratch, after random histories.

Hypothesis draws command sequences (transfers, consumptions on various local days, expiring
packages, reclaims, points, tags, profile changes, blocks, new clients, unlimited accounts,
invoices, status moves, time passing) interleaved with catch-ups of random page sizes, so page
boundaries fall everywhere: between a lot's credit and its use, inside a mass of consumptions,
between a sale and its invoice. After the last catch-up the views must equal a rebuild, and
every balance must equal the write side's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import (
    buy,
    client_profile,
    command,
    consume,
    contract,
    grant,
    on_cti,
    onboard,
    open_cti,
    package,
    register_client,
    subscription_catalogue,
    transfer_points,
    transfer_stamps,
)

CTIS = 4
NAMES = ("Ana Ruiz", "Óscar Peña", "Zoe Álvarez", "juan pérez")
ROOT = "ROOT"
"""The first master account of every ledger of this module; it opens each example's master."""

op = st.one_of(
    st.tuples(st.just("transfer"), st.integers(0, CTIS - 1), st.integers(1, 40)),
    st.tuples(st.just("consume"), st.integers(0, CTIS - 1), st.integers(-30, 2), st.integers(1, 4)),
    st.tuples(st.just("advance"), st.integers(1, 60)),
    st.tuples(st.just("grant"), st.integers(0, CTIS - 1)),
    st.tuples(st.just("reclaim"), st.integers(0, CTIS - 1), st.integers(1, 15)),
    st.tuples(st.just("points"), st.integers(0, CTIS - 1), st.integers(1, 900)),
    st.tuples(st.just("spend"), st.integers(0, CTIS - 1), st.integers(1, 300)),
    st.tuples(
        st.just("tag"),
        st.integers(0, CTIS - 1),
        st.booleans(),
        st.sampled_from(["", "rojo", "azul"]),
    ),
    st.tuples(st.just("profile"), st.integers(0, CTIS - 1), st.sampled_from(NAMES)),
    st.tuples(st.just("block"), st.integers(0, CTIS - 1)),
    st.tuples(st.just("reactivate"), st.integers(0, CTIS - 1)),
    st.tuples(st.just("unlimited"), st.integers(0, CTIS - 1)),
    st.tuples(st.just("invoice"), st.integers(0, 5)),
    st.tuples(st.just("status"), st.sampled_from(["suspend", "reactivate"])),
    st.tuples(st.just("mass"), st.lists(st.integers(0, CTIS - 1), min_size=1, max_size=3)),
    st.tuples(st.just("catch_up"), st.integers(1, 25)),
)


class History:
    """Turns drawn operations into commands on one ledger (ids prefixed per example)."""

    def __init__(self, lg: Ledger, clock: ManualClock, prefix: str) -> None:
        self.lg = lg
        self.clock = clock
        self.p = prefix
        self.sales: list[str] = []
        self.counter = 0
        self.pending: list[dict[str, Any]] = []

    def ids(self, kind: str, n: int) -> str:
        return f"{self.p}{kind}{n}"

    def setup(self) -> None:
        master, distributor, sub = self.ids("M", 0), self.ids("D", 1), self.ids("D", 2)
        commands: list[dict[str, Any]] = [
            # The ledger's first master (a replay after the first example) opens each
            # example's network: only the first master of a ledger goes without an actor.
            {"type": "OpenMasterAccount", "master_id": ROOT, "name": "R", "rfc": "SAT970701NN3"},
            command("OpenMasterAccount", ROOT, master_id=master, name="P", rfc="SAT970701NN3"),
            package("S", 5_000, "100.00", seller_id=master),
            package("P", 5_000, "100.00", seller_id=master, unit="points"),
            *subscription_catalogue(master),
            *onboard(distributor, master, expires_on="2030-12-31"),
            buy("S", buyer_id=distributor, seller_id=master),
            buy("P", buyer_id=distributor, seller_id=master),
            contract("Multinivel", distributor),
            package("G", 7, "10.00", seller_id=distributor, audience="client", validity_days=2),
            *onboard(sub, distributor, expires_on="2030-12-31"),
        ]
        commands += [self._client(n) for n in range(CTIS)]
        self.run(commands)

    def _client(self, n: int) -> dict[str, Any]:
        name, email = NAMES[n % len(NAMES)], f"{self.p.lower()}c{n}@example.com"
        return register_client(
            self.ids("C", n), distributor_id=self.ids("D", 1), name=name, email=email
        )

    def cti(self, n: int) -> str:
        return f"{self.ids('C', n)}-cti"

    def client(self, n: int) -> str:
        return self.ids("C", n)

    def unique(self) -> str:
        self.counter += 1
        return f"{self.p}X{self.counter}"

    def run(self, commands: list[dict[str, Any]]) -> None:
        for sent, result in zip(commands, self.lg.execute_many(commands), strict=True):
            if not isinstance(result, Rejected) and sent["type"] != "RegisterInvoice":
                self.sales.extend(result.sale_ids)

    def flush(self) -> None:
        if self.pending:
            self.run(self.pending)
            self.pending = []

    def apply(self, operation: tuple[Any, ...]) -> None:
        kind, *args = operation
        master, distributor = self.ids("M", 0), self.ids("D", 1)
        by_distributor = {"from_id": distributor}
        sent: dict[str, Any] | None = None
        if kind == "catch_up":
            self.flush()
            self.lg.views.projector.page_size = args[0]
            self.lg.views.catch_up()
        elif kind == "advance":
            self.flush()
            self.clock.advance(timedelta(hours=args[0]))
        elif kind == "transfer":
            cti, quantity = self.cti(args[0]), args[1]
            sent = transfer_stamps(
                quantity, self.unique(), **by_distributor, to_id=cti, amount=f"{quantity}.00"
            )
        elif kind == "consume":
            stamped = (self.clock() + timedelta(hours=args[1])).isoformat()
            for _ in range(args[2]):
                self.pending.append(consume(self.cti(args[0]), actor=master, stamped_at=stamped))
        elif kind == "grant":
            sent = grant(self.unique(), "G", cti_id=self.cti(args[0]), seller_id=distributor)
        elif kind == "reclaim":
            sent = command(
                "ReclaimStamps",
                distributor,
                transfer_id=self.unique(),
                from_cti_id=self.cti(args[0]),
                quantity=args[1],
                reason="impago",
            )
        elif kind == "points":
            sent = transfer_points(
                args[1], self.unique(), **by_distributor, to_id=self.client(args[0])
            )
        elif kind == "spend":
            sent = command(
                "SpendPoints",
                distributor,
                client_id=self.client(args[0]),
                product="timbrado",
                points=args[1],
            )
        elif kind == "tag":
            sent = command(
                "TagClient",
                distributor,
                client_id=self.client(args[0]),
                favourite=args[1],
                colour=args[2],
            )
        elif kind == "profile":
            profile = client_profile(name=args[1], email=f"{self.unique().lower()}@x.mx")
            sent = command(
                "UpdateClientProfile", distributor, client_id=self.client(args[0]), profile=profile
            )
        elif kind in ("block", "reactivate"):
            move = "BlockStampingAccount" if kind == "block" else "ReactivateStampingAccount"
            sent = on_cti(move, self.cti(args[0]), actor=distributor)
        elif kind == "unlimited":
            sent = open_cti(
                self.unique(),
                "unlimited",
                password="contraseña-larga",
                client_id=self.client(args[0]),
                actor=distributor,
            )
        elif kind == "invoice" and self.sales:
            sale_ids = [self.sales[args[0] % len(self.sales)]]
            sent = command(
                "RegisterInvoice",
                distributor,
                seller_id=distributor,
                invoice_ref=self.unique(),
                sale_ids=sale_ids,
            )
        elif kind == "status":
            status = f"{args[0].capitalize()}Distributor"
            sent = command(status, distributor, distributor_id=self.ids("D", 2))
        elif kind == "mass":
            lines = [{"to_id": self.cti(n), "quantity": 3} for n in args[0]]
            sent = command(
                "MassTransfer",
                distributor,
                batch_id=self.unique(),
                from_id=distributor,
                lines=lines,
            )
        if sent is not None:
            self.pending.append(sent)

    def check(self) -> None:
        """Incremental views equal a rebuild; CTI balances equal the write side."""
        self.flush()
        views = self.lg.views
        views.catch_up()
        incremental = views.dump()
        views.projector.page_size = 20_000
        views.rebuild()
        assert views.dump() == incremental
        for n in range(CTIS):
            (row,) = views.balances(self.cti(n))
            assert row.balance == self.lg.balance(self.cti(n))
            points = [r for r in views.balances(self.ids("C", n)) if r.unit == "points"]
            assert [r.balance for r in points] == [self.lg.balance(self.ids("C", n), "points")]


def _history(lg: Ledger, clock: ManualClock, operations: list[tuple[Any, ...]]) -> None:
    history = History(lg, clock, prefix=f"h{uuid.uuid4().hex[:6]}")
    history.setup()
    for operation in operations:
        history.apply(operation)
    history.check()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(op, min_size=1, max_size=40), overlap=st.booleans())
def test_rebuild_equals_incremental_in_memory(
    operations: list[tuple[Any, ...]], overlap: bool
) -> None:
    """In-process store, views in a private SQLite: many histories, pages overlapped or not."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    with Ledger.open("memory://", clock=clock, password_cost="fast", projections="off") as lg:
        lg.views.projector.overlap = overlap
        _history(lg, clock, operations)


@pytest.fixture
def shared_ledger(store_url: str) -> Iterator[tuple[Ledger, ManualClock]]:
    """One real database for every example (each example uses its own ids)."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    with Ledger.open(store_url, clock=clock, password_cost="fast", projections="off") as lg:
        yield lg, clock


@pytest.mark.slow
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(op, min_size=1, max_size=30))
def test_rebuild_equals_incremental_on_real_databases(
    shared_ledger: tuple[Ledger, ManualClock], operations: list[tuple[Any, ...]]
) -> None:
    """The same property on a SQLite file and on PostgreSQL."""
    lg, clock = shared_ledger
    _history(lg, clock, operations)
