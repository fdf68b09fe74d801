"""Holds on a real SQLite file and a real PostgreSQL database: books, views, verify, rebuild."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import (
    CTI,
    DISTRIBUTOR,
    consume,
    grant,
    package,
    post,
    reserve,
    store_network_fixture,
    void,
)

CFDI = "6F9619FF-8B86-D011-B42D-00C04FC964FF"

# C1's CTI with 3 stamps of a lot without expiry.
lg = store_network_fixture(cti_stamps=3)


def cti_row(lg: Ledger) -> tuple[int, int, int, int]:
    """``(balance, held, credited, used)`` of C1's CTI in the balances view."""
    (row,) = lg.views.balances(CTI)
    return row.balance, row.held, row.credited, row.used


def codes(results: list[Any]) -> list[str]:
    """``ok`` or the rejection code of each result."""
    return [r.code if isinstance(r, Rejected) else "ok" for r in results]


def test_the_views_show_held_stamps_apart_and_count_them_back_on_expiry(
    lg: Ledger, clock: ManualClock
) -> None:
    """``held`` and ``balance`` follow the holds; an expired one counts back before any event."""
    lg.execute(reserve("A", expires_in_s=60))
    lg.execute(reserve("B", expires_in_s=600))
    assert cti_row(lg) == (1, 2, 3, 0)
    (account,) = lg.views.stamping_accounts(DISTRIBUTOR)
    assert (account.balance, account.held) == (1, 2)
    assert lg.views.clients(DISTRIBUTOR)[0].stamps == 1
    (held_book,) = lg.views.balances(f"held:{CTI}")
    assert held_book.balance == 2
    clock.advance(timedelta(seconds=60))
    assert cti_row(lg) == (2, 1, 3, 0)
    (account,) = lg.views.stamping_accounts(DISTRIBUTOR)
    assert (account.balance, account.held) == (2, 1)
    assert lg.views.clients(DISTRIBUTOR)[0].stamps == 2
    assert lg.balance(CTI) == 2
    assert lg.verify().ok


def test_a_posted_hold_counts_as_a_consumption_of_its_local_day(
    lg: Ledger, clock: ManualClock
) -> None:
    """Posted: ``used`` grows, the consumption view counts it on ``stamped_at``'s local day."""
    lg.execute(reserve("A", cfdi_uuid=CFDI))
    lg.execute(post("A", stamped_at="2026-01-04T23:30:00-06:00"))
    lg.execute(consume())
    assert cti_row(lg) == (1, 0, 3, 2)
    daily = [(d.local_date.isoformat(), d.count) for d in lg.views.consumption(CTI).daily]
    assert daily == [("2026-01-04", 1), ("2026-01-05", 1)]
    (sink,) = lg.views.balances("sink:consumed")
    assert sink.balance == 2
    report = lg.verify()
    assert report.ok, report.breaches


def test_voids_and_settled_expiries_return_stamps_to_the_books(
    lg: Ledger, clock: ManualClock
) -> None:
    """After a void and a recorded expiry the views equal the write side and verify holds."""
    results = lg.execute_many(
        [reserve("A"), reserve("B", expires_in_s=30), reserve("C"), void("A")]
    )
    assert codes(results) == ["ok", "ok", "ok", "ok"]
    clock.advance(timedelta(seconds=30))
    assert lg.execute(consume()).balance_after == 1  # B's expiry recorded, then a stamp used
    assert cti_row(lg) == (1, 1, 3, 1)
    assert codes(lg.execute_many([post("B"), post("C"), post("C")])) == [
        "hold_expired",
        "ok",
        "ok",
    ]
    assert cti_row(lg) == (1, 0, 3, 2)
    report = lg.verify()
    assert report.ok, report.breaches
    before = lg.views.dump()
    lg.views.rebuild()
    assert lg.views.dump() == before


def test_a_batch_consumes_a_cfdi_once_whichever_way(lg: Ledger) -> None:
    """In one batch: a CFDI held cannot be consumed directly; once posted it stays consumed."""
    results = lg.execute_many(
        [
            reserve("A", cfdi_uuid=CFDI),
            consume(cfdi_uuid=CFDI),
            post("A"),
            consume(cfdi_uuid=CFDI),
            reserve("B", cfdi_uuid=CFDI),
        ]
    )
    assert codes(results) == [
        "ok",
        "idempotency_conflict",
        "ok",
        "idempotency_conflict",
        "idempotency_conflict",
    ]
    assert cti_row(lg) == (2, 0, 3, 1)
    assert lg.verify().ok


def test_a_hold_returned_to_an_emptied_expiring_lot_recreates_it(
    lg: Ledger, clock: ManualClock
) -> None:
    """A client package's last stamp held then voided: the lot is back, and expires on its date."""
    lg.execute(package("G1", 1, "1.00", seller_id=DISTRIBUTOR, audience="client", validity_days=2))
    lg.execute(grant("G-1", "G1"))
    lg.execute(reserve("A"))  # the expiring lot goes first
    assert cti_row(lg)[:2] == (3, 1)
    lg.execute(void("A"))
    assert cti_row(lg)[:2] == (4, 0)
    clock.advance(timedelta(days=3))
    assert cti_row(lg)[:2] == (3, 0)
    assert lg.balance(CTI) == 3
    assert lg.verify().ok
