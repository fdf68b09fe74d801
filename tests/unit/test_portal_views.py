"""The portal's lists (DESIGN §6): catalogue, auto top-up rules, expiring lots, the CTI rows'
validity and RFC lock, and the directory's search by postal code (in-memory store)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.projections.portal import AutoTopUpRuleRow, ExpiringLotRow, PackageRow
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    MASTER,
    command,
    grant,
    network_fixture,
    on_cti,
    open_cti,
    package,
    register_client,
    reserve,
    transfer_points,
)

# The standard network with 10 stamps on C1's CTI and 3,000 points for D1; D1 sells two client
# packages: 20 stamps valid 7 days, 50 valid 30 days with a service.
lg = network_fixture(
    package("G20", 20, "18.00", seller_id=DISTRIBUTOR, audience="client", validity_days=7),
    package(
        "G50",
        50,
        "40.00",
        seller_id=DISTRIBUTOR,
        audience="client",
        validity_days=30,
        services=["soporte"],
    ),
    cti_stamps=10,
    points=3000,
)


def test_the_catalogue_lists_a_sellers_packages(lg: Ledger) -> None:
    """The master's two packages and D1's two client packages, with their price list fields."""
    assert lg.views.catalogue(MASTER) == [
        PackageRow("PTS3000", "points", 3000, "2850.00", "distributor", None, (), False),
        PackageRow("P1000", "stamps", 1000, "500.00", "distributor", None, (), False),
    ]
    assert [
        (p.package_id, p.validity_days, p.services) for p in lg.views.catalogue(DISTRIBUTOR)
    ] == [
        ("G20", 7, ()),
        ("G50", 30, ("soporte",)),
    ]


def test_a_retired_or_replaced_package_shows_as_it_is_now(lg: Ledger) -> None:
    """A replacement changes the row; a retirement marks it."""
    lg.execute(package("G20", 25, "20.00", seller_id=DISTRIBUTOR, audience="client", replaces=True))
    lg.execute(command("DefinePackage", DISTRIBUTOR, seller_id=DISTRIBUTOR, package_id="G50",
                       retire=True))  # fmt: skip
    rows = {p.package_id: p for p in lg.views.catalogue(DISTRIBUTOR)}
    assert (rows["G20"].quantity, rows["G20"].price, rows["G20"].validity_days) == (
        25,
        "20.00",
        None,
    )
    assert (rows["G20"].retired, rows["G50"].retired) == (False, True)


def test_the_auto_top_up_rules_of_a_distributors_ctis(lg: Ledger) -> None:
    """Rules with and without an amount; a disabled rule is gone; another's CTI is not listed."""
    lg.execute(on_cti("ConfigureAutoTopUp", minimum=5, credit=50, amount="25.00"))
    lg.execute(open_cti())
    lg.execute(
        command("ChangeSettings", DISTRIBUTOR, seller_id=DISTRIBUTOR, bulk_stamp_price="0.50")
    )
    lg.execute(on_cti("ConfigureAutoTopUp", "X1", minimum=2, credit=10))
    assert lg.views.auto_top_up_rules(DISTRIBUTOR) == [
        AutoTopUpRuleRow(CTI, 5, 50, "25.00"),
        AutoTopUpRuleRow("X1", 2, 10, None),
    ]
    lg.execute(on_cti("DisableAutoTopUp"))
    assert [r.cti_id for r in lg.views.auto_top_up_rules(DISTRIBUTOR)] == ["X1"]
    assert lg.views.auto_top_up_rules("D9") == []


def test_expiring_lots_list_what_leaves_and_when(lg: Ledger, clock: ManualClock) -> None:
    """Two client packages: soonest first; bought stamps never expire and are not listed; a lot
    past its date is gone; the stamps used come off their lot."""
    lg.execute(grant("GR50", "G50"))
    lg.execute(grant("GR20", "G20"))
    lg.execute(command("ConsumeStamp", MASTER, cti_id=CTI, issuer_rfc="GODE561231GR8",
                       cfdi_uuid="6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F0A"))  # fmt: skip
    assert lg.views.expiring_lots(CTI) == [
        ExpiringLotRow("GR20", 19, date(2026, 1, 12)),
        ExpiringLotRow("GR50", 50, date(2026, 2, 4)),
    ]
    clock.set(datetime(2026, 1, 13, 18, 0, tzinfo=UTC))
    assert [lot.lot_id for lot in lg.views.expiring_lots(CTI)] == ["GR50"]


def test_a_held_stamp_is_out_of_its_lot_until_the_hold_runs_out(
    lg: Ledger, clock: ManualClock
) -> None:
    """A hold takes a stamp of the lot that expires first; past its time, the stamp is back."""
    lg.execute(grant("GR20", "G20"))
    lg.execute(reserve("H1", expires_in_s=60))
    assert lg.views.expiring_lots(CTI)[0].quantity == 19
    clock.advance(timedelta(minutes=2))
    assert lg.views.expiring_lots(CTI)[0].quantity == 20


def test_stamping_account_rows_show_validity_and_rfc_lock(lg: Ledger) -> None:
    """An unlimited CTI locked to an RFC: its last day and the RFC; a standard CTI: neither."""
    lg.execute(transfer_points(2000, "P1"))
    lg.execute(open_cti("U1", "unlimited", rfc_lock="mab9307148t4"))
    rows = {row.cti_id: row for row in lg.views.stamping_accounts(DISTRIBUTOR)}
    assert (rows["U1"].kind, rows["U1"].valid_until, rows["U1"].rfc_lock) == (
        "unlimited",
        date(2027, 1, 5),
        "MAB9307148T4",
    )
    assert (rows[CTI].valid_until, rows[CTI].rfc_lock) == (None, None)


def test_the_directory_is_searched_by_postal_code(lg: Ledger) -> None:
    """Clients (and their CTIs) are found by their postal code."""
    lg.execute(register_client("C2", name="Ana", email="ana@example.com", postal_code="44100"))
    assert [c.client_id for c in lg.views.clients(DISTRIBUTOR, search="44100")] == ["C2"]
    assert [c.client_id for c in lg.views.clients(DISTRIBUTOR, search="06600")] == [CLIENT]
    assert [s.cti_id for s in lg.views.stamping_accounts(DISTRIBUTOR, search="441")] == ["C2-cti"]
