"""Converting a client into a distributor, purging a cancelled one, admin logins (DESIGN §4)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ledger.aggregates.client import Client
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.stamping_account import StampingAccount
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    MASTER,
    add_portal_user,
    assign_admin,
    buy_seat,
    cancel_distributor,
    client_profile,
    command,
    consume,
    contract,
    distributor_profile,
    network_fixture,
    network_ledger,
    ok,
    register_distributor,
    rejection,
    view_rows_holding,
)

NEW = "D-EX-C1"

# The standard network with the catalogue; C1's CTI holds 10 stamps.
lg = network_fixture(cti_stamps=10, catalogue=True)


def convert(actor: str = DISTRIBUTOR, distributor_id: str = NEW) -> dict[str, Any]:
    """D1 converts its client C1 into a sub-distributor."""
    fields = {"client_id": CLIENT, "distributor_id": distributor_id}
    return command("ConvertClientToDistributor", actor, **fields)


def current(lg: Ledger, aggregate_id: str) -> Any:
    """The aggregate as recorded now."""
    return lg.engine.current(aggregate_id)


# Conversion -----------------------------------------------------------------------------------


def test_conversion_needs_the_parents_multinivel(lg: Ledger) -> None:
    """D1 without Multinivel cannot have sub-distributors: multinivel_required."""
    assert rejection(lg, convert()).code == "multinivel_required"


def test_a_converted_client_is_a_new_sub_distributor(lg: Ledger) -> None:
    """The new distributor is unvalidated under D1, with the client's profile and a link back."""
    lg.execute(contract("Multinivel"))
    lg.execute(convert())
    new = current(lg, NEW)
    assert isinstance(new, Distributor)
    assert (new.parent_id, new.status, new.converted_from, new.profile["rfc"]) == (
        DISTRIBUTOR,
        "unvalidated",
        CLIENT,
        client_profile()["rfc"],
    )
    client = current(lg, CLIENT)
    assert isinstance(client, Client)
    assert client.converted_to == NEW


def test_the_clients_ctis_stay_where_they_are(lg: Ledger) -> None:
    """C1's CTI keeps its client, distributor and balance, and keeps stamping."""
    lg.execute(contract("Multinivel"))
    lg.execute(convert())
    cti = current(lg, CTI)
    assert isinstance(cti, StampingAccount)
    assert (cti.client_id, cti.distributor_id) == (CLIENT, DISTRIBUTOR)
    assert lg.execute(consume(actor=MASTER)).balance_after == 9


def test_both_views_show_the_conversion(lg: Ledger) -> None:
    """The client row names the new distributor; the distributor row names the client."""
    lg.execute(contract("Multinivel"))
    lg.execute(convert())
    (client_row,) = lg.views.clients(DISTRIBUTOR)
    (distributor_row,) = lg.views.distributors(DISTRIBUTOR)
    assert (client_row.converted_to, distributor_row.converted_from) == (NEW, CLIENT)
    assert distributor_row.name == client_profile()["name"]


def test_a_client_is_converted_once(lg: Ledger) -> None:
    """A second conversion is invalid_transition."""
    lg.execute(contract("Multinivel"))
    lg.execute(convert())
    assert rejection(lg, convert(distributor_id="D-OTRO")).code == "invalid_transition"


def test_the_new_distributor_id_must_be_free(lg: Ledger) -> None:
    """Converting into an existing account id is already_exists."""
    lg.execute(contract("Multinivel"))
    assert rejection(lg, convert(distributor_id=DISTRIBUTOR)).code == "already_exists"


def test_only_the_clients_distributor_converts_it(lg: Ledger) -> None:
    """Another distributor is not C1's distributor: not_authorised."""
    lg.execute(contract("Multinivel"))
    assert rejection(lg, convert(actor="OTRO")).code == "not_authorised"


# Purge ----------------------------------------------------------------------------------------


def cancel(lg: Ledger) -> None:
    """The master suspends and cancels D1 (cancelled on 5 Jan 2026)."""
    ok(lg, *cancel_distributor())


def purge(actor: str = MASTER) -> dict[str, Any]:
    """The master purges D1."""
    return command("PurgeDistributor", actor, distributor_id=DISTRIBUTOR)


def seat_and_user(lg: Ledger) -> None:
    """D1 sells C1 a seat; C1 adds the portal user ``usuario@example.com``."""
    ok(lg, buy_seat(), add_portal_user("U1", "usuario@example.com"))


def test_purging_before_day_30_is_invalid_transition(lg: Ledger, clock: ManualClock) -> None:
    """Cancelled on 5 Jan, D1 may be purged from 4 Feb; on 3 Feb it is refused."""
    cancel(lg)
    clock.advance(timedelta(days=29))
    rejected = rejection(lg, purge())
    assert (rejected.code, rejected.details["purge_on"]) == ("invalid_transition", "2026-02-04")


def test_purging_an_active_distributor_is_invalid_transition(lg: Ledger) -> None:
    """Only a cancelled distributor is purged."""
    assert rejection(lg, purge()).code == "invalid_transition"


def test_a_purge_on_day_30_records_purged(lg: Ledger, clock: ManualClock) -> None:
    """On day 30 the Purged event is recorded; no event is deleted."""
    cancel(lg)
    clock.advance(timedelta(days=30))
    before = len(lg.store.stored_events())
    assert lg.execute(purge()).details == {"status": "purged"}
    assert len(lg.store.stored_events()) == before + 1
    assert current(lg, DISTRIBUTOR).status == "purged"


def test_only_the_parent_purges(lg: Ledger, clock: ManualClock) -> None:
    """The distributor itself is not_authorised."""
    cancel(lg)
    clock.advance(timedelta(days=30))
    assert rejection(lg, purge(actor=DISTRIBUTOR)).code == "not_authorised"


def test_a_cancelled_distributor_is_not_purged_by_the_clock_alone(
    lg: Ledger, clock: ManualClock
) -> None:
    """Without the purge it stays cancelled, with its name, whatever the date."""
    cancel(lg)
    clock.advance(timedelta(days=90))
    (row,) = lg.views.distributors(MASTER)
    assert (row.status, row.name) == ("cancelled", distributor_profile()["name"])


PERSONAL = (
    distributor_profile()["name"],
    distributor_profile()["rfc"],
    distributor_profile()["email"],
    client_profile()["name"],
    client_profile()["rfc"],
    client_profile()["email"],
    "usuario@example.com",
)
"""D1's and C1's name, RFC and e-mail, and C1's portal user's e-mail."""


def personal_rows(lg: Ledger) -> list[tuple[str, tuple[Any, ...]]]:
    """(table, row) of every view row that still holds a fragment of ``PERSONAL``."""
    return view_rows_holding(lg, PERSONAL)


def test_the_purge_removes_personal_data_from_every_view_table(
    lg: Ledger, clock: ManualClock
) -> None:
    """Names, RFCs and e-mails of D1, its client and its client's portal users leave the views."""
    seat_and_user(lg)
    assert personal_rows(lg)  # the test sees them before the purge
    cancel(lg)
    clock.advance(timedelta(days=30))
    lg.execute(purge())
    assert personal_rows(lg) == []


def test_the_purge_keeps_ids_and_balances(lg: Ledger, clock: ManualClock) -> None:
    """The client row keeps its id and NIC; its CTI keeps its balance."""
    cancel(lg)
    clock.advance(timedelta(days=30))
    lg.execute(purge())
    (client_row,) = lg.views.clients(DISTRIBUTOR)
    assert (client_row.client_id, client_row.nic, client_row.name, client_row.stamps) == (
        CLIENT,
        CLIENT,
        "",
        10,
    )


def test_a_purged_distributors_client_takes_no_new_profile(lg: Ledger, clock: ManualClock) -> None:
    """Personal data must not come back: distributor_not_active."""
    cancel(lg)
    clock.advance(timedelta(days=30))
    lg.execute(purge())
    update = command("UpdateClientProfile", DISTRIBUTOR, client_id=CLIENT, profile=client_profile())
    rejected = rejection(lg, update)
    assert rejected.code == "distributor_not_active"


def test_purge_due_purges_every_due_distributor_once(lg: Ledger, clock: ManualClock) -> None:
    """The first run purges D1; the second finds nothing to do."""
    cancel(lg)
    assert lg.purge_due() == []  # not due yet
    clock.advance(timedelta(days=30))
    (first,) = lg.purge_due()
    assert not isinstance(first, Rejected)
    assert first.details == {"status": "purged"}
    assert lg.purge_due() == []
    assert current(lg, DISTRIBUTOR).status == "purged"


def test_a_repeated_purge_command_replays(lg: Ledger, clock: ManualClock) -> None:
    """PurgeDistributor is keyed by the distributor: a second one returns the first outcome."""
    cancel(lg)
    clock.advance(timedelta(days=30))
    lg.execute(purge())
    assert lg.execute(purge()).replayed


# Admin logins ---------------------------------------------------------------------------------


def test_the_masters_admin_login_is_not_allowed_for_a_client(clock: ManualClock) -> None:
    """A master account opened with an admin e-mail: a client admin with it is refused."""
    with network_ledger(clock) as lg:
        lg.execute({"type": "OpenMasterAccount", "master_id": "M2", "name": "Plataforma 2",
                    "rfc": "SAT970701NN3", "email": "Admin@Plataforma.mx",
                    "actor": MASTER})  # fmt: skip
        assert rejection(lg, assign_admin("admin@plataforma.mx")).code == (
            "admin_profile_not_allowed"
        )
        assert lg.execute(assign_admin("otro@plataforma.mx")).ok


def test_a_distributors_login_is_not_allowed_for_a_client(lg: Ledger) -> None:
    """D1's profile e-mail administers a distributor: refused as a client's admin login."""
    assert rejection(lg, assign_admin(distributor_profile()["email"])).code == (
        "admin_profile_not_allowed"
    )


def test_a_client_admin_login_cannot_open_a_master_account(lg: Ledger) -> None:
    """The other way round: a client's admin login is refused for a master account."""
    lg.execute(assign_admin("cliente@example.com"))
    rejected = rejection(
        lg,
        {"type": "OpenMasterAccount", "master_id": "M3", "name": "Otra", "rfc": "SAT970701NN3",
         "email": "cliente@example.com", "actor": MASTER},
    )  # fmt: skip
    assert rejected.code == "admin_profile_not_allowed"


def test_a_client_admin_login_cannot_register_a_distributor(lg: Ledger) -> None:
    """A client's admin login is refused as a new distributor's login."""
    lg.execute(assign_admin("cliente@example.com"))
    profile = distributor_profile(email="cliente@example.com")
    rejected = rejection(lg, register_distributor("D5", profile=profile))
    assert rejected.code == "admin_profile_not_allowed"


def test_a_rebuild_after_a_purge_gives_the_same_blank_rows(lg: Ledger, clock: ManualClock) -> None:
    """Replaying the Purged event blanks the same rows: rebuilt views equal the incremental."""
    seat_and_user(lg)
    cancel(lg)
    clock.advance(timedelta(days=30))
    lg.execute(purge())
    lg.views.catch_up()
    before = lg.views.dump()
    lg.views.rebuild()
    assert lg.views.dump() == before
    assert personal_rows(lg) == []
