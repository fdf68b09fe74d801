"""A purge takes personal data out of every view table on SQLite and PostgreSQL (issue 10 item 5).

The check reads every row of every view table (``lg.views.dump()`` selects each table whole), not
query results, so a column a query does not show cannot keep a name, an RFC, an e-mail, a phone,
an address or a contact.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from tests.support import (
    CLIENT,
    DISTRIBUTOR,
    MASTER,
    client_profile,
    distributor_profile,
    fragments_in,
    network_ledger,
    view_rows_holding,
)

FULL = "C-FULL"
CONTACT = {
    "name": "Rosa Contadora Ibarra",
    "position": "Contadora",
    "email": "rosa.finanzas@empresa-full.mx",
    "phone": "+52 55 4433 2211",
}
FULL_PROFILE: dict[str, Any] = {
    **client_profile("Fulana Completa Ruiz", "fulana@empresa-full.mx"),
    "trade_name": "Abarrotes La Completa",
    "phone": "(55) 9988-7766",
    "extra_emails": ["compras@empresa-full.mx", "pagos@empresa-full.mx"],
    "address": {
        "state": "Jalisco",
        "city": "Zapopan",
        "colonia": "Colonia Escondida",
        "street": "Calle del Secreto",
        "number_ext": "1234",
        "number_int": "B",
        "reference": "Frente al parque Olvido",
    },
    "legal_rep": {
        **CONTACT,
        "name": "Ramiro Representante Soto",
        "email": "ramiro@empresa-full.mx",
    },
    "financial_contact": CONTACT,
    "technical_contact": {
        **CONTACT,
        "name": "Tomás Técnico Vega",
        "email": "soporte@empresa-full.mx",
        "phone": "33 1122 3344",
    },
    "comments": "Cliente con todos los datos",
}
PERSONAL = (
    distributor_profile()["name"],
    distributor_profile()["rfc"],
    distributor_profile()["email"],
    client_profile()["name"],
    client_profile()["email"],
    client_profile()["rfc"],
    "Fulana",
    "Completa",
    "empresa-full",
    "9988",
    "99887766",
    "Zapopan",
    "Escondida",
    "Secreto",
    "Olvido",
    "Rosa",
    "Ramiro",
    "Tomás",
    "Tomas",
    "4433",
    "1122",
    "usuario@example.com",
    "otra.usuaria@example.com",
)
"""Fragments of personal data of D1, its clients and their portal users (folded or not)."""


def _ok(lg: Ledger, commands: list[dict[str, Any]]) -> None:
    for result in lg.execute_many(commands):
        assert not isinstance(result, Rejected), result


def _personal_rows(lg: Ledger) -> list[tuple[str, tuple[Any, ...]]]:
    """(table, row) of every view row that still holds a fragment of ``PERSONAL``."""
    return view_rows_holding(lg, PERSONAL)


@pytest.fixture
def lg(store_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """D1 with C1 and a client with every profile field, seats and portal users."""
    with network_ledger(clock, url=store_url, cti_stamps=5) as ledger:
        _ok(
            ledger,
            [
                {"type": "RegisterClient", "client_id": FULL, "distributor_id": DISTRIBUTOR,
                 "profile": FULL_PROFILE, "actor": DISTRIBUTOR},
                {"type": "AssignAdminProfile", "client_id": FULL, "actor": DISTRIBUTOR,
                 "email": "admin@empresa-full.mx", "mobile": "5511112222"},
                *[{"type": "BuyUserSeat", "seat_id": seat, "client_id": client_id,
                   "price": "288.84", "actor": DISTRIBUTOR}
                  for seat, client_id in (("S1", CLIENT), ("S2", FULL))],
                {"type": "AddPortalUser", "user_id": "U1", "client_id": CLIENT,
                 "email": "usuario@example.com", "actor": CLIENT},
                {"type": "AddPortalUser", "user_id": "U2", "client_id": FULL,
                 "email": "otra.usuaria@example.com", "actor": FULL},
                {"type": "SuspendDistributor", "distributor_id": DISTRIBUTOR, "actor": MASTER},
                {"type": "CancelDistributor", "distributor_id": DISTRIBUTOR, "actor": MASTER},
            ],
        )  # fmt: skip
        yield ledger


def test_the_purge_blanks_every_view_table(lg: Ledger, clock: ManualClock) -> None:
    """Before: every fragment is in the tables; after the purge, none is, in any table."""
    before = _personal_rows(lg)
    assert {"view_distributors", "view_clients", "view_portal_users"} <= {t for t, _ in before}
    assert set().union(*(fragments_in(row, PERSONAL) for _, row in before)) == set(PERSONAL)
    clock.advance(timedelta(days=30))
    (outcome,) = lg.purge_due()
    assert not isinstance(outcome, Rejected)
    assert _personal_rows(lg) == []


def test_a_rebuild_after_the_purge_keeps_the_tables_blank(lg: Ledger, clock: ManualClock) -> None:
    """Rebuilding the views from the events replays the purge: the same blank rows."""
    clock.advance(timedelta(days=30))
    lg.purge_due()
    lg.views.catch_up()
    before = lg.views.dump()
    lg.views.rebuild()
    assert lg.views.dump() == before
    assert _personal_rows(lg) == []


def test_the_purged_clients_keep_ids_nic_and_balances(lg: Ledger, clock: ManualClock) -> None:
    """Ids, NICs and stamp balances stay: they are no personal data."""
    clock.advance(timedelta(days=30))
    lg.purge_due()
    rows = {row.client_id: (row.nic, row.name, row.rfc, row.email, row.stamps) for row in
            lg.views.clients(DISTRIBUTOR)}  # fmt: skip
    assert rows == {CLIENT: (CLIENT, "", "", "", 5), FULL: (FULL, "", "", "", 0)}
