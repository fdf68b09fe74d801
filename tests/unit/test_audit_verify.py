"""``verify`` on histories held in memory: each invariant's breach, found where it happens.

Real histories come from the in-memory store; breaches are made by appending forged events
(encoded by the real mapper) and re-chaining, so only the invariant under test is broken.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import Notification

from ledger.aggregates.distributor import Distributor
from ledger.aggregates.stamping_account import StampingAccount
from ledger.api import Ledger
from ledger.audit.source import RowsSource
from ledger.audit.verify import Breach, ReplayState, VerifyReport, row_digest_parts, verify
from ledger.chain import events_digest
from ledger.clock import ManualClock
from ledger.domain import Event
from ledger.errors import IntegrityBreach
from tests.support import (
    CTI,
    DISTRIBUTOR,
    ISSUER_RFC,
    MAPPER,
    MASTER,
    consume,
    forged,
    network_ledger,
    rows_of,
)

# The package exports the function ``verify``, which hides the module of the same name.
verify_module = importlib.import_module("ledger.audit.verify")
NEW_UUID = "0A1B2C3D-0B4D-4C55-9A1E-3D2B7C8E9F99"


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """Master, D1 with 10,000 stamps, C1 and its CTI with 1 stamp, consumed; one invoice."""
    with network_ledger(clock, cti_stamps=1) as ledger:
        ledger.execute(consume(cfdi_uuid="6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01"))
        ledger.execute(
            {
                "type": "RegisterInvoice",
                "actor": DISTRIBUTOR,
                "seller_id": DISTRIBUTOR,
                "invoice_ref": "F-1",
                "sale_ids": ["T-setup"],
            }
        )
        yield ledger


def next_version(rows: list[Notification], stream: str) -> int:
    """The version the next event of ``stream`` takes."""
    return max(r.originator_version for r in rows if r.originator_id == stream) + 1


def consumption(rows: list[Notification], cfdi_uuid: str, lot_id: str = "T-setup") -> Event:
    """A consumption of one stamp from C1's CTI as the next event of its stream."""
    at = datetime.fromisoformat("2026-01-05T18:30:00+00:00")
    return StampingAccount.StampConsumed(
        originator_id=CTI,
        originator_version=next_version(rows, CTI),
        timestamp=at,
        cfdi_uuid=cfdi_uuid,
        issuer_rfc=ISSUER_RFC,
        stamped_at=at,
        lot_id=lot_id,
        local_date=date(2026, 1, 5),
    )


def invoice(rows: list[Notification], seller: str, *sale_ids: str) -> Event:
    """An invoice of ``sale_ids`` as the next event of ``seller``'s stream."""
    cls = Distributor.InvoiceRegistered
    return cls(
        originator_id=seller,
        originator_version=next_version(rows, seller),
        timestamp=datetime.fromisoformat("2026-01-05T18:30:00+00:00"),
        invoice_ref="F-forged",
        sale_ids=sale_ids,
    )


def check(rows: list[Notification], **options: Any) -> VerifyReport:
    """``verify`` over ``rows``, one chain link per row (so the chain itself holds)."""
    return verify(RowsSource.one_link_per_row(rows, MAPPER), **options)


def only(report: VerifyReport, name: str) -> list[Breach]:
    """The breaches of one check, asserting no other check found any."""
    assert set(report.breach_counts) == {name}, report.breaches
    return [b for b in report.breaches if b.check == name]


def test_memory_history_verifies_without_chain(lg: Ledger) -> None:
    """A history written through the ledger verifies; the memory store has no chain to check."""
    report = lg.verify()
    assert report.ok, report.breaches
    assert report.totals == {"stamps": 0}
    assert "chain: skipped, this store keeps no hash chain" in report.notes


def test_transfer_legs_in_separate_transactions_still_pair(lg: Ledger) -> None:
    """Legs of one movement committed in different transactions are paired on disk."""
    report = check(rows_of(lg))
    assert report.ok, report.breaches
    assert report.links == report.events == len(rows_of(lg))


def test_unpaired_legs_spilled_mid_transaction_pair(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one unpaired movement in memory, the rest pair through the spill."""
    monkeypatch.setattr(verify_module, "PENDING_GROUPS_MAX", 0)
    assert check(rows_of(lg)).ok


def test_consumption_beyond_the_balance_is_a_negative_balance(lg: Ledger) -> None:
    """A consumption from an empty CTI takes it below zero, at that event."""
    rows = rows_of(lg)
    rows = forged(rows, consumption(rows, NEW_UUID))
    (breach,) = only(check(rows), "negative_balance")
    assert (breach.position, breach.aggregate_id) == (rows[-1].id, CTI)
    assert breach.message.startswith(f"{CTI} goes to -1 stamps")


def test_the_issuance_source_may_be_negative(lg: Ledger) -> None:
    """The master account issued 10,000 stamps: its balance is -10,000 and that is no breach."""
    report = check(rows_of(lg))
    assert report.ok
    assert lg.balance(MASTER) == -10_000


def test_a_cfdi_consumed_twice_is_a_reused_key(lg: Ledger) -> None:
    """A second consumption of the same CFDI (a new lot so no balance breaks) is reported."""
    rows = rows_of(lg)
    first = next(r.id for r in rows if b"6F1C2A9E" in r.state)
    rows = forged(rows, consumption(rows, "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01", lot_id=""))
    (breach,) = only(check(rows), "key_reused")
    assert breach.position == rows[-1].id
    assert breach.message == (
        f"'cfdi:6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01' used again (first at position {first})"
    )


def test_a_sale_invoiced_twice_is_reported(lg: Ledger) -> None:
    """A second invoice of an invoiced sale is ``invoiced_twice`` at the second invoice."""
    rows = rows_of(lg)
    rows = forged(rows, invoice(rows, DISTRIBUTOR, "T-setup"))
    (breach,) = only(check(rows), "invoiced_twice")
    assert (breach.position, breach.aggregate_id) == (rows[-1].id, DISTRIBUTOR)


def test_an_invoice_of_an_unknown_sale_is_reported(lg: Ledger) -> None:
    """Invoicing a sale that was never recorded is reported."""
    rows = rows_of(lg)
    rows = forged(rows, invoice(rows, DISTRIBUTOR, "S-nowhere"))
    (breach,) = only(check(rows), "invoiced_unknown_sale")
    assert breach.message == f"{DISTRIBUTOR} invoiced sale 'S-nowhere': no such sale"


def test_an_invoice_of_another_sellers_sale_is_reported(lg: Ledger) -> None:
    """D1 invoicing the master's sale to D1 is reported with the real seller."""
    rows = rows_of(lg)
    sale_id = next(e.sale_id for e in lg.store.events() if type(e).__name__ == "CreditsIssued")  # type: ignore[attr-defined]
    rows = forged(rows, invoice(rows, DISTRIBUTOR, sale_id))
    (breach,) = only(check(rows), "invoiced_unknown_sale")
    assert breach.message == f"{DISTRIBUTOR} invoiced sale {sale_id!r}: the sale is {MASTER}'s"


def test_a_transfer_without_its_credit_leg_is_reported(lg: Ledger) -> None:
    """A debit of D1 towards the CTI with no matching credit: one side missing, books unbalanced."""
    rows = rows_of(lg)
    debit = Distributor.CreditsTransferred(
        originator_id=DISTRIBUTOR,
        originator_version=next_version(rows, DISTRIBUTOR),
        timestamp=datetime.fromisoformat("2026-01-05T18:30:00+00:00"),
        sale_id="T-half",
        amount_centavos=0,
        transfer_id="T-half",
        to_id=CTI,
        unit="stamps",
        quantity=7,
    )
    rows = forged(rows, debit)
    report = check(rows)
    assert set(report.breach_counts) == {"transfer_sides", "zero_sum"}
    (sides,) = [b for b in report.breaches if b.check == "transfer_sides"]
    assert (sides.position, sides.aggregate_id) == (rows[-1].id, DISTRIBUTOR)
    assert sides.message == (
        f"movement 'T-half' of stamps between {CTI} and {DISTRIBUTOR}: no credit (legs sum to -7)"
    )
    (total,) = [b for b in report.breaches if b.check == "zero_sum"]
    assert total.message == "the stamps of all holders sum to -7, not to 0"


def test_a_missing_event_is_a_version_gap(lg: Ledger) -> None:
    """Removing an event from the middle of a stream leaves a gap at the next version."""
    rows = rows_of(lg)
    dropped = next(r for r in rows if r.originator_id == DISTRIBUTOR and r.originator_version == 2)
    following = next(
        r for r in rows if r.originator_id == DISTRIBUTOR and r.originator_version == 3
    )
    report = check([r for r in rows if r is not dropped])
    (gap,) = only(report, "version_gap")
    assert (gap.position, gap.aggregate_id) == (following.id, DISTRIBUTOR)
    assert gap.message == f"{following.topic} is version 3 after version 1 of its stream"


def test_a_stream_must_start_with_its_creation(lg: Ledger) -> None:
    """A stream whose first event is not a creation event is reported."""
    rows = rows_of(lg)
    rows = forged(
        rows,
        StampingAccount.Blocked(
            originator_id="ghost",
            originator_version=1,
            timestamp=datetime.fromisoformat("2026-01-05T18:30:00+00:00"),
        ),
    )
    (breach,) = only(check(rows), "version_gap")
    assert breach.message == "stream starts with StampingAccount.Blocked, not with a creation event"


def test_history_nothing_can_decode_fails_loudly(lg: Ledger) -> None:
    """If no event of the first page decodes (wrong cipher key), verify raises, not reports."""
    rows = [
        Notification(
            id=r.id,
            originator_id=r.originator_id,
            originator_version=r.originator_version,
            topic=r.topic,
            state=b"\x00" + r.state,
        )
        for r in rows_of(lg)
    ]
    with pytest.raises(IntegrityBreach, match="LEDGER_CIPHER_KEY"):
        check(rows)


def test_row_hash_parts_are_the_chains_digest(lg: Ledger) -> None:
    """verify hashes a row exactly as ``ledger.chain.events_digest`` does."""
    rows = rows_of(lg)[:3]
    streamed = hashlib.sha256(b"".join(row_digest_parts(r) for r in rows)).digest()
    assert streamed == events_digest(rows)


def test_a_holder_below_zero_is_reported_once(lg: Ledger) -> None:
    """Three consumptions from an empty CTI: one breach when it crosses zero, not one each."""
    rows = rows_of(lg)
    for n in range(3):
        rows = forged(rows, consumption(rows, f"0A1B2C3D-0B4D-4C55-9A1E-3D2B7C8E9F{n:02d}"))
    assert check(rows).breach_counts == {"negative_balance": 1}


def test_breaches_past_the_kept_maximum_are_counted(
    lg: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``BREACHES_KEPT_MAX`` a breach is counted but its details are not kept."""
    monkeypatch.setattr(verify_module, "BREACHES_KEPT_MAX", 2)
    rows = rows_of(lg)
    for n in range(3):
        rows = forged(rows, invoice(rows, DISTRIBUTOR, f"S-none-{n}"))
    report = check(rows)
    assert report.breach_counts == {"invoiced_unknown_sale": 3}
    assert len(report.breaches) == 2


def test_progress_is_reported_after_each_page(lg: Ledger) -> None:
    """The progress callback sees each page's last position and the total."""
    rows = rows_of(lg)
    seen: list[tuple[int, int]] = []
    check(rows, page_size=5, progress=lambda done, total: seen.append((done, total)))
    last = rows[-1].id
    assert seen == [(min(n, last), last) for n in range(5, last + 5, 5)]


class FakeView:
    """A view check that records what it was compared with."""

    name = "fake"

    def __init__(self, position: int | None, moved: bool = False) -> None:
        self.at = position
        self.moved = moved
        self.seen: list[tuple[int, dict[tuple[str, str], int]]] = []

    def position(self) -> int | None:
        """The fake's tracked position."""
        return self.at

    def compare(self, replay: ReplayState) -> list[Breach] | None:
        """Records the replay's state; None when it pretends to have moved."""
        self.seen.append((replay.last_position, dict(replay.balances)))
        return None if self.moved else []


def test_a_view_behind_is_compared_at_its_own_position(lg: Ledger) -> None:
    """A view that tracked position 12 is compared with the replay of events 1..12 only."""
    rows = rows_of(lg)
    view = FakeView(12)
    report = check(rows, views=[view])
    ((position, balances),) = view.seen
    assert position == 12
    expected: dict[tuple[str, str], int] = {}
    for row in rows[:12]:
        for p in MAPPER.to_domain_event(row).postings():
            expected[(p.holder, p.unit)] = expected.get((p.holder, p.unit), 0) + p.delta
    assert balances == expected
    assert "views: fake compared at position 12" in report.notes


def test_a_view_that_moves_during_verify_is_noted(lg: Ledger) -> None:
    """A view whose position changed before the comparison is noted, not compared."""
    report = check(rows_of(lg), views=[FakeView(3, moved=True)])
    assert report.ok
    assert "views: fake moved during verify, not compared" in report.notes


def test_a_view_ahead_of_the_events_is_a_breach(lg: Ledger) -> None:
    """A view that has tracked a position past the last event cannot equal the replay."""
    rows = rows_of(lg)
    (breach,) = only(check(rows, views=[FakeView(rows[-1].id + 5)]), "views")
    assert breach.message == (
        f"view fake has tracked position {rows[-1].id + 5}, past the last stored event"
        f" {rows[-1].id}"
    )


def test_an_absent_view_is_skipped_with_a_note(lg: Ledger) -> None:
    """A view that does not exist in this database is skipped with a note."""
    report = check(rows_of(lg), views=[FakeView(None)])
    assert report.ok
    assert "views: fake skipped, it does not exist here" in report.notes


def test_verify_of_an_empty_history_is_ok() -> None:
    """Nothing recorded yet: nothing to breach."""
    report = verify(RowsSource([], [], MAPPER))
    assert report.ok
    assert (report.events, report.head_hash) == (0, None)


def test_time_between_events_does_not_matter(lg: Ledger, clock: ManualClock) -> None:
    """Events written days apart verify the same."""
    clock.advance(timedelta(days=3))
    lg.execute(
        {
            "type": "TransferStamps",
            "actor": DISTRIBUTOR,
            "transfer_id": "T-later",
            "from_id": DISTRIBUTOR,
            "to_id": CTI,
            "quantity": 2,
            "amount": "1.00",
        }
    )
    assert lg.verify().ok
