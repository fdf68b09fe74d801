"""The distributor network: registration, the status machine, who may move it (DESIGN §4, §5)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from ledger.aggregates.distributor import Distributor
from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import (
    CTI,
    DISTRIBUTOR,
    MASTER,
    buy,
    command,
    contract,
    distributor_profile,
    network_fixture,
    network_ledger,
    onboard,
    register_client,
    register_distributor,
    rejection,
    transfer_stamps,
)

NEW = "D9"
EXPIRES_ON = "2026-06-30"
ACTIONS = {
    "validate": ("ValidateDistributor", {}),
    "activate": ("ActivateDistributor", {"expires_on": "2030-12-31"}),
    "suspend": ("SuspendDistributor", {}),
    "reactivate": ("ReactivateDistributor", {}),
    "renew": ("RenewDistributor", {"expires_on": "2030-12-31"}),
    "cancel": ("CancelDistributor", {}),
}
STATUSES = ("unvalidated", "unactivated", "active", "suspended", "expired", "cancelled", "purged")
ALLOWED = {
    ("unvalidated", "validate"): "unactivated",
    ("unactivated", "activate"): "active",
    ("active", "suspend"): "suspended",
    ("suspended", "reactivate"): "active",
    ("active", "renew"): "active",
    ("expired", "renew"): "active",
    ("active", "cancel"): "cancelled",
    ("expired", "cancel"): "cancelled",
    ("suspended", "cancel"): "cancelled",
}
ILLEGAL = sorted(set(itertools.product(STATUSES, ACTIONS)) - set(ALLOWED))


# A ledger on the in-memory store with the standard network and the catalogue.
lg = network_fixture(catalogue=True)


def act(action: str, distributor_id: str = NEW, actor: str | None = MASTER) -> dict[str, Any]:
    """The status command of ``action`` on ``distributor_id`` by ``actor``."""
    command_type, extra = ACTIONS[action]
    return command(command_type, actor, distributor_id=distributor_id, **extra)


def status(lg: Ledger, distributor_id: str = NEW) -> str:
    """The distributor's recorded status."""
    distributor = lg.engine.current(distributor_id)
    assert isinstance(distributor, Distributor)
    return distributor.status


def register(lg: Ledger, distributor_id: str = NEW, parent_id: str = MASTER) -> None:
    """Registers an unvalidated distributor."""
    lg.execute(register_distributor(distributor_id, parent_id))


def drive_to(lg: Ledger, clock: ManualClock, target: str) -> None:
    """Registers ``D9`` under the master account and moves it to ``target``."""
    register(lg)
    if target == "unvalidated":
        return
    lg.execute(act("validate"))
    if target == "unactivated":
        return
    lg.execute({**act("activate"), "expires_on": EXPIRES_ON})
    if target == "active":
        return
    if target == "expired":
        clock.advance(timedelta(days=200))  # 2026-07-24, past 30 June
        return
    lg.execute(act("suspend"))
    if target == "suspended":
        return
    lg.execute(act("cancel"))
    if target == "purged":
        clock.advance(timedelta(days=30))
        lg.execute(command("PurgeDistributor", MASTER, distributor_id=NEW))


def transfer_to_cti(transfer_id: str = "T1", from_id: str = DISTRIBUTOR) -> dict[str, Any]:
    """A transfer of one stamp from D1 to its client's CTI."""
    return transfer_stamps(1, transfer_id, from_id=from_id, amount="0.50")


# The status machine ----------------------------------------------------------------------------


def test_a_new_distributor_is_unvalidated(lg: Ledger) -> None:
    """RegisterDistributor starts the status machine at unvalidated."""
    register(lg)
    assert status(lg) == "unvalidated"


@pytest.mark.parametrize(("start", "action"), sorted(ALLOWED))
def test_allowed_moves_reach_their_status(
    lg: Ledger, clock: ManualClock, start: str, action: str
) -> None:
    """Each move of the status machine lands in its status and says so in the outcome."""
    drive_to(lg, clock, start)
    outcome = lg.execute(act(action))
    assert outcome.details == {"status": ALLOWED[(start, action)]}
    assert status(lg) == ALLOWED[(start, action)]


@pytest.mark.parametrize(("start", "action"), ILLEGAL)
def test_every_other_move_is_invalid_transition(
    lg: Ledger, clock: ManualClock, start: str, action: str
) -> None:
    """A move the status machine does not have is refused and records nothing."""
    drive_to(lg, clock, start)
    rejected = rejection(lg, act(action))
    assert rejected.code == "invalid_transition"
    assert rejected.details == {"action": action, "status": start}


def test_the_clock_expires_an_active_distributor(lg: Ledger, clock: ManualClock) -> None:
    """Past ``expires_on`` an active distributor can no longer sell."""
    lg.execute(transfer_to_cti("T1"))
    clock.advance(timedelta(days=392))  # 2027-02-01, the day after D1's expiry
    rejected = rejection(lg, transfer_to_cti("T2"))
    assert rejected.code == "distributor_not_active"
    assert rejected.details["status"] == "expired"


def test_the_expiry_day_itself_is_still_active(lg: Ledger, clock: ManualClock) -> None:
    """A distributor is active through the whole day of ``expires_on`` (Mexico City)."""
    clock.advance(timedelta(days=391))  # 2027-01-31 12:00 in Mexico City
    assert lg.execute(transfer_to_cti()).balance_after == 9_999


def test_renewing_an_expired_distributor_records_the_expiry_first(
    lg: Ledger, clock: ManualClock
) -> None:
    """Renew after the clock expired a distributor records Expired then Renewed."""
    drive_to(lg, clock, "expired")
    lg.execute(act("renew"))
    kinds = [type(e).__name__ for e in lg.store.events() if e.originator_id == NEW]
    assert kinds[-2:] == ["Expired", "Renewed"]
    distributor = lg.engine.current(NEW)
    assert isinstance(distributor, Distributor)
    assert (distributor.status, distributor.expires_on.isoformat()) == ("active", "2030-12-31")  # type: ignore[union-attr]


def test_renewed_distributor_sells_again(lg: Ledger, clock: ManualClock) -> None:
    """After a renewal the expired distributor transfers again."""
    clock.advance(timedelta(days=400))
    lg.execute({**act("renew", DISTRIBUTOR), "expires_on": "2028-01-31"})
    assert lg.execute(transfer_to_cti()).balance_after == 9_999


def test_renewing_an_active_distributor_moves_expiry_later(lg: Ledger) -> None:
    """Renewing an active distributor keeps it active with the later date."""
    lg.execute({**act("renew", DISTRIBUTOR), "expires_on": "2027-06-30"})
    distributor = lg.engine.current(DISTRIBUTOR)
    assert isinstance(distributor, Distributor)
    assert distributor.expires_on is not None
    assert distributor.expires_on.isoformat() == "2027-06-30"


def test_renewal_to_an_earlier_date_is_refused(lg: Ledger) -> None:
    """A renewal must move the expiry later."""
    rejected = rejection(lg, {**act("renew", DISTRIBUTOR), "expires_on": "2026-12-31"})
    assert rejected.code == "invalid_command"


def test_activation_in_the_past_is_refused(lg: Ledger, clock: ManualClock) -> None:
    """An activation that would already be expired is refused."""
    drive_to(lg, clock, "unactivated")
    rejected = rejection(lg, {**act("activate"), "expires_on": "2026-01-04"})
    assert rejected.code == "invalid_command"


def test_a_suspended_distributor_cannot_sell(lg: Ledger) -> None:
    """Suspension stops transfers with distributor_not_active."""
    lg.execute(act("suspend", DISTRIBUTOR))
    rejected = rejection(lg, transfer_to_cti())
    assert rejected.code == "distributor_not_active"
    assert rejected.details["status"] == "suspended"


def test_a_reactivated_distributor_sells_again(lg: Ledger) -> None:
    """Reactivation restores transfers."""
    lg.execute(act("suspend", DISTRIBUTOR))
    lg.execute(act("reactivate", DISTRIBUTOR))
    assert lg.execute(transfer_to_cti()).balance_after == 9_999


def test_an_unactivated_distributor_cannot_buy(lg: Ledger, clock: ManualClock) -> None:
    """Buying needs an active buyer."""
    drive_to(lg, clock, "unactivated")
    rejected = rejection(lg, buy(buyer_id=NEW))
    assert rejected.code == "distributor_not_active"


def test_an_expired_distributor_cannot_register_clients(lg: Ledger, clock: ManualClock) -> None:
    """Registering a client needs an active distributor."""
    clock.advance(timedelta(days=400))
    generic = {"rfc": "XAXX010101000", "regimen_fiscal": "616", "uso_cfdi": "S01"}
    rejected = rejection(lg, register_client(name="Ana", email="ana@example.com", **generic))
    assert rejected.code == "distributor_not_active"


# Who may move a status -------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [DISTRIBUTOR, "D2"])
def test_only_the_parent_moves_a_status(lg: Ledger, actor: str) -> None:
    """The distributor itself or a stranger gets not_authorised."""
    register(lg, "D2")
    rejected = rejection(lg, act("suspend", DISTRIBUTOR, actor=actor))
    assert rejected.code == "not_authorised"


def test_a_status_move_without_an_actor_is_invalid_command(lg: Ledger) -> None:
    """The actor is required (DESIGN §4a): its absence is a malformed command."""
    rejected = rejection(lg, act("suspend", DISTRIBUTOR, actor=None))
    assert rejected.code == "invalid_command"
    assert [e["field"] for e in rejected.details["errors"]] == ["SuspendDistributor.actor"]


def test_the_master_moves_a_sub_distributor_of_its_network(lg: Ledger) -> None:
    """The master acts inside its own network; a sibling of the parent does not."""
    lg.execute(contract_multinivel())
    register(lg, "D2", parent_id=DISTRIBUTOR)
    register(lg, "D3")
    assert rejection(lg, act("validate", "D2", actor="D3")).code == "not_authorised"
    assert lg.execute(act("validate", "D2", actor=MASTER)).details == {"status": "unactivated"}


# Registration ----------------------------------------------------------------------------------


def contract_multinivel() -> dict[str, Any]:
    """D1 contracts Multinivel."""
    return contract("Multinivel")


def test_a_distributor_parent_needs_multinivel(lg: Ledger) -> None:
    """Registering a sub-distributor without Multinivel is multinivel_required."""
    rejected = rejection(
        lg,
        {
            "type": "RegisterDistributor",
            "actor": DISTRIBUTOR,
            "distributor_id": "D2",
            "parent_id": DISTRIBUTOR,
            "profile": distributor_profile(email="d2@example.com"),
        },
    )
    assert rejected.code == "multinivel_required"


def test_multinivel_allows_sub_distributors(lg: Ledger) -> None:
    """With Multinivel, D1 registers a sub-distributor under itself."""
    lg.execute(contract_multinivel())
    register(lg, "D2", parent_id=DISTRIBUTOR)
    distributor = lg.engine.current("D2")
    assert isinstance(distributor, Distributor)
    assert (distributor.parent_id, distributor.status) == (DISTRIBUTOR, "unvalidated")


def test_multinivel_is_charged_pro_rata_plus_iva(lg: Ledger) -> None:
    """1,999.00 a year for 12 whole months left (5 Jan 2026 to 31 Jan 2027) plus 16 % IVA."""
    outcome = lg.execute(contract_multinivel())
    assert outcome.details == {"months": 12, "amount": "2318.84", "expires_on": "2027-01-31"}
    (event,) = [e for e in lg.store.events() if type(e).__name__ == "SubscriptionContracted"]
    assert event.amount_centavos == 231_884  # type: ignore[attr-defined]


def test_registering_a_taken_distributor_id_is_already_exists(lg: Ledger) -> None:
    """A distributor id is unique; a second registration with other data is refused."""
    rejected = rejection(lg, register_distributor(DISTRIBUTOR, profile=distributor_profile("Otra")))
    assert rejected.code == "already_exists"


def test_an_id_taken_by_another_kind_is_already_exists(lg: Ledger) -> None:
    """Ids are unique across kinds: a distributor cannot take a CTI's id."""
    profile = distributor_profile(email="otro@example.com")
    rejected = rejection(lg, register_distributor(CTI, profile=profile))
    assert rejected.code == "already_exists"


def test_opening_a_second_master_with_a_taken_id_is_already_exists(lg: Ledger) -> None:
    """The master account id is unique."""
    rejected = rejection(
        lg,
        {"type": "OpenMasterAccount", "master_id": MASTER, "name": "Otra", "rfc": "SAT970701NN3"},
    )
    assert rejected.code == "already_exists"


def test_registering_under_an_unknown_parent_is_unknown_account(lg: Ledger) -> None:
    """The parent must exist."""
    rejected = rejection(lg, register_distributor("D2", "NOBODY"))
    assert rejected.code == "unknown_account"


def test_status_command_on_unknown_distributor_is_unknown_account(lg: Ledger) -> None:
    """Moving a distributor that does not exist is unknown_account."""
    assert rejection(lg, act("validate", "NOBODY")).code == "unknown_account"


def test_an_active_distributor_can_be_cancelled(lg: Ledger) -> None:
    """The manual's Active tab offers Cancelar: active → cancelled, purged 30 days later."""
    outcome = lg.execute(command("CancelDistributor", MASTER, distributor_id=DISTRIBUTOR))
    assert outcome.details == {"status": "cancelled"}
    distributor = lg.engine.current(DISTRIBUTOR)
    assert isinstance(distributor, Distributor)
    assert distributor.cancelled_on is not None


def test_a_sub_distributor_cannot_use_its_parents_email(lg: Ledger) -> None:
    """D1's own e-mail (any case) for its sub-distributor: admin_profile_not_allowed."""
    lg.execute(contract_multinivel())
    profile = distributor_profile("Sub", "UNO@example.com")
    rejected = rejection(lg, register_distributor("D1a", DISTRIBUTOR, profile=profile))
    assert (rejected.code, rejected.details["field"]) == (
        "admin_profile_not_allowed",
        "profile.email",
    )


def test_a_sub_distributor_cannot_use_its_parents_phone(lg: Ledger) -> None:
    """A phone equal to its parent's, written otherwise, is refused too."""
    parent = {**distributor_profile("Cinco", "cinco@example.com"), "phone": "55 1234 5678"}
    lg.execute_many([*onboard("D5", profile=parent), contract("Multinivel", "D5")])
    profile = {**distributor_profile("Sub", "sub@example.com"), "phone": "5512345678"}
    rejected = rejection(lg, register_distributor("D5a", "D5", profile=profile))
    assert (rejected.code, rejected.details["field"]) == (
        "admin_profile_not_allowed",
        "profile.phone",
    )
    other = {**profile, "phone": "5512345679"}
    assert lg.execute(register_distributor("D5a", "D5", profile=other)).ok


def test_a_distributor_cannot_use_the_masters_admin_email(clock: ManualClock) -> None:
    """The master account's administrator login is not a new distributor's."""
    with network_ledger(clock) as ledger:
        ledger.execute(
            command("OpenMasterAccount", MASTER, master_id="M2", name="Dos", rfc="SAT970701NN3",
                    email="admin@plataforma.mx")
        )  # fmt: skip
        profile = distributor_profile("Otra", "Admin@Plataforma.mx")
        rejected = rejection(ledger, register_distributor("D9", "M2", profile=profile))
        assert rejected.code == "admin_profile_not_allowed"
