"""Licences under an MKL, extra-user seats and portal users (DESIGN §4)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    CLIENT,
    DISTRIBUTOR,
    MASTER,
    add_portal_user,
    buy_seat,
    client_profile,
    command,
    contract,
    network_fixture,
    rejection,
    transfer_points,
)

DOMINUS_LICENCE_POINTS = 250
"""The seed catalogue's points per Dóminus licence (``ledger.first_steps.SEED_SUBSCRIPTIONS``)."""

# The standard network with the catalogue; D1 holds 3,000 points.
lg = network_fixture(catalogue=True, points=3000)


def licence(product: str = "Dóminus", actor: str = DISTRIBUTOR, **extra: Any) -> dict[str, Any]:
    """D1 generates a licence for its client C1."""
    return command("GenerateLicence", actor, client_id=CLIENT, product=product, **extra)


def give_points(lg: Ledger, quantity: int) -> None:
    """D1 transfers points to C1's wallet."""
    lg.execute(transfer_points(quantity, f"TP-{quantity}"))


# Licences -------------------------------------------------------------------------------------


def test_a_licence_needs_the_distributors_mkl(lg: Ledger) -> None:
    """Without MKL Dóminus, a Dóminus licence is mkl_required."""
    rejected = rejection(lg, licence())
    assert (rejected.code, rejected.details["distributor_id"]) == ("mkl_required", DISTRIBUTOR)


def test_another_products_mkl_does_not_do(lg: Ledger) -> None:
    """MKL NomiCloud gives no Dóminus licences."""
    lg.execute(contract("MKL NomiCloud"))
    assert rejection(lg, licence()).code == "mkl_required"


def test_a_licence_is_paid_from_the_clients_wallet_when_it_covers_it(lg: Ledger) -> None:
    """C1 has 300 points: the licence's 250 leave its wallet; D1's inventory is untouched."""
    lg.execute(contract("MKL Dóminus"))
    give_points(lg, 300)
    outcome = lg.execute(licence())
    assert (outcome.details["paid_by"], outcome.balance_after) == (CLIENT, 50)
    assert lg.balance(DISTRIBUTOR, "points") == 2_700


def test_a_licence_is_paid_by_the_distributor_when_the_wallet_falls_short(lg: Ledger) -> None:
    """C1 has 100 points (< 250): D1 pays it all; the wallet is not split."""
    lg.execute(contract("MKL Dóminus"))
    give_points(lg, 100)
    outcome = lg.execute(licence())
    assert (outcome.details["paid_by"], outcome.balance_after) == (DISTRIBUTOR, 2_650)
    assert lg.balance(CLIENT, "points") == 100


def test_a_licence_nobody_can_pay_is_insufficient_points(lg: Ledger) -> None:
    """Neither the wallet (0) nor D1 (0 after spending) covers 250: insufficient_points."""
    lg.execute(contract("MKL Dóminus"))
    give_points(lg, 3_000)  # D1 gives away all its points
    lg.execute(command("SpendPoints", DISTRIBUTOR, client_id=CLIENT, product="otro", points=3_000))
    rejected = rejection(lg, licence())
    assert (rejected.code, rejected.details["requested"]) == ("insufficient_points", 250)


def test_a_licence_is_valid_one_year_and_listed_with_its_expiry(lg: Ledger) -> None:
    """Generated on 5 Jan 2026, it runs until 5 Jan 2027; the view lists it."""
    lg.execute(contract("MKL Dóminus"))
    outcome = lg.execute(licence(licence_id="LIC-1"))
    assert outcome.details["expires_on"] == "2027-01-05"
    (row,) = lg.views.licences(CLIENT)
    assert (row.licence_id, row.product, row.expires_on, row.active, row.points, row.paid_by) == (
        "LIC-1",
        "Dóminus",
        date(2027, 1, 5),
        True,
        DOMINUS_LICENCE_POINTS,
        DISTRIBUTOR,
    )


def test_a_licence_generated_on_a_leap_day_ends_on_28_february(
    lg: Ledger, clock: ManualClock
) -> None:
    """29 Feb 2028 + one year is 28 Feb 2029."""
    lg.execute(
        command("RenewDistributor", MASTER, distributor_id=DISTRIBUTOR, expires_on="2029-01-31")
    )
    lg.execute(contract("MKL Dóminus"))
    clock.set(datetime(2028, 2, 29, 18, 0, tzinfo=UTC))
    assert lg.execute(licence()).details["expires_on"] == "2029-02-28"


def test_a_free_mkl_licence_spends_nothing(lg: Ledger) -> None:
    """MKL NomiCloud's licences cost 0 points: nobody pays, the licence is listed."""
    lg.execute(contract("MKL NomiCloud"))
    outcome = lg.execute(licence("NomiCloud"))
    assert (outcome.details["points"], outcome.details["paid_by"]) == (0, None)
    assert [r.product for r in lg.views.licences(CLIENT)] == ["NomiCloud"]


def test_the_same_licence_id_replays(lg: Ledger) -> None:
    """A retried GenerateLicence with its licence id charges once."""
    lg.execute(contract("MKL Dóminus"))
    lg.execute(licence(licence_id="LIC-9"))
    assert lg.execute(licence(licence_id="LIC-9")).replayed
    assert lg.balance(DISTRIBUTOR, "points") == 3_000 - DOMINUS_LICENCE_POINTS


def test_only_the_clients_distributor_generates_licences(lg: Ledger) -> None:
    """Another distributor acting on D1's client is not_authorised."""
    lg.execute(contract("MKL Dóminus"))
    assert rejection(lg, licence(actor="OTRO")).code == "not_authorised"


def test_a_lapsed_mkl_gives_no_licence(lg: Ledger, clock: ManualClock) -> None:
    """Past D1's expiry (and its MKL's) a licence is refused."""
    lg.execute(contract("MKL Dóminus"))
    clock.set(datetime(2027, 2, 1, 18, 0, tzinfo=UTC))
    assert rejection(lg, licence()).code == "distributor_not_active"


# Seats and portal users -----------------------------------------------------------------------


add_user = add_portal_user
"""A portal user of C1."""


def user_command(kind: str, user_id: str, **extra: Any) -> dict[str, Any]:
    """Deactivate, Change or Delete a portal user, by C1."""
    return command(f"{kind}PortalUser", CLIENT, user_id=user_id, **extra)


def test_a_seat_is_a_billable_sale_of_the_distributor(lg: Ledger) -> None:
    """BuyUserSeat records a sale of D1 to C1 (unit ``seat``) named in ``sale_ids``."""
    outcome = lg.execute(buy_seat())
    (sale,) = lg.views.unbilled_sales(DISTRIBUTOR, unit="seat")
    assert (sale.sale_id, sale.buyer_id, sale.amount, sale.reference) == (
        outcome.sale_ids[0],
        CLIENT,
        "288.84",
        "S1",
    )


def test_adding_a_user_without_a_seat_is_no_free_seat(lg: Ledger) -> None:
    """No seat bought: no_free_seat."""
    assert rejection(lg, add_user("U1")).code == "no_free_seat"


def test_a_user_takes_a_free_seat_and_the_next_finds_none(lg: Ledger) -> None:
    """One seat, one user; the second user is no_free_seat."""
    lg.execute(buy_seat())
    assert lg.execute(add_user("U1")).details == {"seat_id": "S1"}
    assert rejection(lg, add_user("U2")).code == "no_free_seat"


def test_a_deactivated_user_keeps_its_seat(lg: Ledger) -> None:
    """Deactivating frees nothing: another user still finds no seat."""
    lg.execute(buy_seat())
    lg.execute(add_user("U1"))
    lg.execute(user_command("Deactivate", "U1"))
    assert rejection(lg, add_user("U2")).code == "no_free_seat"


def test_a_deactivated_users_seat_is_reassigned_by_changing_it(lg: Ledger) -> None:
    """ChangePortalUser gives the seat to another e-mail, active again."""
    lg.execute(buy_seat())
    lg.execute(add_user("U1"))
    lg.execute(user_command("Deactivate", "U1"))
    lg.execute(user_command("Change", "U1", email="nueva@example.com"))
    (user,) = lg.views.portal_users(CLIENT)
    assert (user.email, user.status, user.seat_id) == ("nueva@example.com", "active", "S1")


def test_a_deleted_user_loses_its_seat_for_good(lg: Ledger) -> None:
    """After DeletePortalUser the seat is gone: no_free_seat, and the user cannot come back."""
    lg.execute(buy_seat())
    lg.execute(add_user("U1"))
    lg.execute(user_command("Delete", "U1"))
    assert rejection(lg, add_user("U2")).code == "no_free_seat"
    assert rejection(lg, user_command("Change", "U1", email="x@example.com")).code == (
        "invalid_transition"
    )


def test_a_seat_lapses_a_year_after_purchase(lg: Ledger, clock: ManualClock) -> None:
    """Bought on 5 Jan 2026, the seat is free on 5 Jan 2027 and lapsed the day after."""
    lg.execute(buy_seat())
    clock.set(datetime(2027, 1, 5, 18, 0, tzinfo=UTC))
    lg.execute(buy_seat("S2"))  # a second seat so the first can be tested alone
    lg.execute(add_user("U1"))  # takes S2, the seat that lapses last
    clock.advance(timedelta(days=1))
    assert rejection(lg, add_user("U2")).code == "no_free_seat"


def test_a_user_on_a_lapsed_seat_cannot_be_changed(lg: Ledger, clock: ManualClock) -> None:
    """Reassigning a lapsed seat is no_free_seat."""
    lg.execute(buy_seat())
    lg.execute(add_user("U1"))
    lg.execute(user_command("Deactivate", "U1"))
    clock.set(datetime(2027, 1, 6, 18, 0, tzinfo=UTC))
    rejected = rejection(lg, user_command("Change", "U1", email="x@example.com"))
    assert (rejected.code, rejected.details["reason"]) == ("no_free_seat", "seat lapsed")


def test_deactivating_twice_is_invalid_transition(lg: Ledger) -> None:
    """Only an active user is deactivated."""
    lg.execute(buy_seat())
    lg.execute(add_user("U1"))
    lg.execute(user_command("Deactivate", "U1"))
    assert rejection(lg, user_command("Deactivate", "U1")).code == "invalid_transition"


def test_the_distributor_manages_its_clients_users_too(lg: Ledger) -> None:
    """The client's distributor may add users; another distributor may not."""
    lg.execute(buy_seat())
    lg.execute(buy_seat("S2"))
    assert lg.execute(add_user("U1", actor=DISTRIBUTOR)).ok
    assert rejection(lg, add_user("U2", actor="OTRO")).code == "not_authorised"


def test_only_the_distributor_sells_seats(lg: Ledger) -> None:
    """The client buying a seat itself is not_authorised (it is the distributor's sale)."""
    assert rejection(lg, {**buy_seat(), "actor": CLIENT}).code == "not_authorised"


def test_the_seats_view_shows_seats_with_their_users(lg: Ledger, clock: ManualClock) -> None:
    """Each seat with its expiry, price, and the user on it."""
    lg.execute(buy_seat())
    lg.execute(buy_seat("S2", "300.00"))
    lg.execute(add_user("U1"))
    lg.execute(user_command("Deactivate", "U1"))
    clock.set(datetime(2027, 1, 6, 18, 0, tzinfo=UTC))
    rows = [
        (s.seat_id, s.expires_on.isoformat(), s.lapsed, s.price, s.user_id, s.user_status)
        for s in lg.views.seats(CLIENT)
    ]
    assert rows == [
        ("S1", "2027-01-05", True, "288.84", "U1", "deactivated"),
        ("S2", "2027-01-05", True, "300.00", None, None),
    ]


# Renewals and distinct e-mails ---------------------------------------------------------------


def renew_seat(seat_id: str = "S1", price: str = "288.84", **extra: Any) -> dict[str, Any]:
    """D1 renews a seat of its client ahead of time."""
    return command("RenewUserSeat", DISTRIBUTOR, seat_id=seat_id, price=price, **extra)


def test_buying_a_seat_renews_a_lapsed_one(lg: Ledger, clock: ManualClock) -> None:
    """S1 lapsed with its user U1 on it: the next purchase renews S1 for a year from today
    (no new seat), and U1 can be given its seat again."""
    lg.execute(buy_seat())
    lg.execute(add_user("U1"))
    lg.execute(user_command("Deactivate", "U1"))
    clock.set(datetime(2027, 1, 6, 18, 0, tzinfo=UTC))
    outcome = lg.execute(buy_seat("S2", "300.00"))
    assert outcome.details == {"seat_id": "S1", "expires_on": "2028-01-06", "renewed": True}
    rows = [(s.seat_id, s.expires_on, s.lapsed, s.price) for s in lg.views.seats(CLIENT)]
    assert rows == [("S1", date(2028, 1, 6), False, "300.00")]
    assert lg.execute(user_command("Change", "U1", email="u1@example.com")).ok
    (sale_id,) = outcome.sale_ids
    sales = lg.views.unbilled_sales(DISTRIBUTOR, source="seat")
    assert [(s.sale_id, s.buyer_id, s.amount) for s in sales][-1] == (sale_id, CLIENT, "300.00")


def test_a_renewal_picks_the_lapsed_seat_that_has_a_user(lg: Ledger, clock: ManualClock) -> None:
    """Two lapsed seats: the one whose user is stranded is renewed first."""
    lg.execute(buy_seat())
    lg.execute(buy_seat("S2"))
    lg.execute(add_user("U1"))  # takes S1 or S2 (both lapse together): the smallest id, S1
    taken = lg.views.portal_users(CLIENT)[0].seat_id
    clock.set(datetime(2027, 1, 6, 18, 0, tzinfo=UTC))
    assert lg.execute(buy_seat("S3")).details["seat_id"] == taken


def test_a_running_seat_is_renewed_ahead_of_time(lg: Ledger) -> None:
    """RenewUserSeat adds a year to the seat's expiry, and is a sale of D1 to C1."""
    lg.execute(buy_seat())
    outcome = lg.execute(renew_seat(price="250.00"))
    assert outcome.details == {"seat_id": "S1", "expires_on": "2028-01-05", "renewed": True}
    ((seat_id, expires_on),) = [(s.seat_id, s.expires_on) for s in lg.views.seats(CLIENT)]
    assert (seat_id, expires_on) == ("S1", date(2028, 1, 5))
    (sale,) = [s for s in lg.views.unbilled_sales(DISTRIBUTOR) if s.sale_id in outcome.sale_ids]
    assert (sale.buyer_id, sale.source, sale.amount) == (CLIENT, "seat", "250.00")
    assert lg.verify().ok


def test_renewing_an_unknown_seat_is_unknown_account(lg: Ledger) -> None:
    """No seat of that id: unknown_account, nothing recorded."""
    assert rejection(lg, renew_seat("S9")).code == "unknown_account"


def test_another_distributor_cannot_renew_a_seat(lg: Ledger) -> None:
    """Only the client's distributor (or the master) renews its seats."""
    lg.execute(buy_seat())
    assert rejection(lg, renew_seat(actor="OTRO")).code == "not_authorised"


def test_a_clients_users_have_distinct_emails(lg: Ledger) -> None:
    """A second user with the same e-mail (any case) is already_exists; so is a change to it."""
    lg.execute(buy_seat())
    lg.execute(buy_seat("S2"))
    lg.execute(buy_seat("S3"))
    lg.execute(add_user("U1", email="ana@example.com"))
    rejected = rejection(lg, add_user("U2", email="ANA@example.com"))
    assert (rejected.code, rejected.details["user_id"]) == ("already_exists", "U1")
    lg.execute(add_user("U2", email="beto@example.com"))
    assert rejection(lg, user_command("Change", "U2", email="ana@example.com")).code == (
        "already_exists"
    )
    assert lg.execute(user_command("Change", "U2", email="beto@example.com")).ok


def test_a_deleted_users_email_may_be_used_again(lg: Ledger) -> None:
    """A deleted user is gone: its e-mail is free for another user."""
    lg.execute(buy_seat())
    lg.execute(buy_seat("S2"))
    lg.execute(add_user("U1", email="ana@example.com"))
    lg.execute(user_command("Delete", "U1"))
    assert lg.execute(add_user("U2", email="ana@example.com")).ok


def test_two_clients_may_share_a_users_email(lg: Ledger) -> None:
    """Distinct per client: another client's user may have the same e-mail."""
    lg.execute(buy_seat())
    lg.execute(add_user("U1", email="ana@example.com"))
    lg.execute(command("RegisterClient", DISTRIBUTOR, client_id="C2", distributor_id=DISTRIBUTOR,
                       profile=client_profile(email="c2@example.com")))  # fmt: skip
    lg.execute(buy_seat("S2", client_id="C2"))
    assert lg.execute(add_user("U2", email="ana@example.com", client_id="C2")).ok
