"""Who may act (DESIGN §4a): every command type against every kind of actor.

The network: the master ``M``; its distributors ``D1`` (Multinivel, stamps and points) and
``D2``; ``S1``, a sub-distributor of ``D1``; ``C1``, a client of ``D1`` with its CTI and points;
``M2``, the master of another network. For each command type, each kind of actor gets the exact
outcome, and a refusal records nothing (no event, no key).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.storage.memory import MemoryStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands.auth import RULES
from ledger.commands.models import AnyCommand
from ledger.engine import Engine
from ledger.errors import Rejected
from ledger.logging import capture_logs
from ledger.outcome import Outcome
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    EXPIRES_ON,
    MASTER,
    build_network,
    client_profile,
    command,
    consume,
    contract,
    distributor_profile,
    ok,
    on_cti,
    onboard,
    transfer_points,
)

OTHER_DISTRIBUTOR = "D2"
SUB_DISTRIBUTOR = "S1"
OTHER_MASTER = "M2"
PASSWORD = "clave-secreta-123"

OK = "ok"
REFUSED = "not_authorised"
MALFORMED = "invalid_command"

NOW = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
"""The clock of the shared test fixture (``tests/conftest.py``)."""
ACTORS = (
    "master",
    "owner",
    "other_distributor",
    "sub_distributor",
    "client",
    "other_master",
    "none",
)


def network(lg: Ledger) -> None:
    """M, D1 (stamps, points, Multinivel, a bulk stamp price), D2, S1 under D1, C1 with points
    and a password, M2."""
    build_network(lg, cti_stamps=10, points=9000)
    products = (
        ("Multinivel", "multinivel", "1999.00", 0),
        ("MKL Dóminus", "mkl", "1850.00", 100),
        ("MKL NomiCloud", "mkl", "1999.00", 100),
    )
    ok(
        lg,
        *[
            command("DefineSubscriptionProduct", MASTER, seller_id=MASTER, product=product,
                    kind=kind, annual_price=price, licence_points=points)
            for product, kind, price, points in products
        ],
        contract("Multinivel"),
        contract("MKL Dóminus"),
        *onboard(OTHER_DISTRIBUTOR),
        *onboard(SUB_DISTRIBUTOR, DISTRIBUTOR),
        # D1's price list prices what its commands leave unpriced (S1 and D2 have none).
        command("ChangeSettings", DISTRIBUTOR, seller_id=DISTRIBUTOR, bulk_stamp_price="0.50"),
        transfer_points(6000, "TP-setup"),
        on_cti("ResetStampingPassword", password=PASSWORD),
        command("OpenMasterAccount", MASTER, master_id=OTHER_MASTER, name="Otra plataforma",
                rfc="SAT970701NN3"),
    )  # fmt: skip


@dataclass(frozen=True)
class Case:
    """A command that succeeds for its owner after ``setup``, and the outcomes that differ."""

    command: dict[str, Any]
    owner: str = DISTRIBUTOR
    setup: tuple[dict[str, Any], ...] = ()
    expected: dict[str, str] = field(default_factory=dict)
    # Fields taken from the outcomes of ``setup`` (a credit code and its NIP).
    complete: Callable[[list[Outcome]], dict[str, Any]] | None = None

    def outcome_for(self, actor_kind: str) -> str:
        """The expected outcome for a kind of actor."""
        default = {"master": OK, "owner": OK, "none": MALFORMED}.get(actor_kind, REFUSED)
        return self.expected.get(actor_kind, default)

    def actor(self, actor_kind: str) -> str | None:
        """The id of that kind of actor for this command."""
        return {
            "master": MASTER,
            "owner": self.owner,
            "other_distributor": OTHER_DISTRIBUTOR,
            "sub_distributor": SUB_DISTRIBUTOR,
            "client": CLIENT,
            "other_master": OTHER_MASTER,
            "none": None,
        }[actor_kind]


def by(actor: str, command: dict[str, Any]) -> dict[str, Any]:
    """``command`` carrying ``actor`` (for setups)."""
    return {**command, "actor": actor}


def transfer(transfer_id: str = "T1") -> dict[str, Any]:
    """Stamps from D1 to C1's CTI."""
    return {
        "type": "TransferStamps",
        "transfer_id": transfer_id,
        "from_id": DISTRIBUTOR,
        "to_id": CTI,
        "quantity": 5,
        "amount": "5.00",
    }


def status_move(command_type: str, distributor_id: str = SUB_DISTRIBUTOR, **extra: Any) -> Case:
    """A status move of a distributor of D1 (its parent, the owner)."""
    return Case({"type": command_type, "distributor_id": distributor_id, **extra})


SUSPEND_S1 = by(DISTRIBUTOR, {"type": "SuspendDistributor", "distributor_id": SUB_DISTRIBUTOR})
REGISTER_X = {
    "type": "RegisterDistributor",
    "distributor_id": "X1",
    "parent_id": DISTRIBUTOR,
    "profile": distributor_profile(email="x1@example.com"),
}
UNLIMITED = {
    "type": "OpenStampingAccount",
    "cti_id": "U1",
    "client_id": CLIENT,
    "kind": "unlimited",
    "password": PASSWORD,
}
CLIENT_PACKAGE = {
    "type": "DefinePackage",
    "seller_id": DISTRIBUTOR,
    "package_id": "F100",
    "unit": "stamps",
    "quantity": 100,
    "price": "90.00",
    "audience": "client",
    "validity_days": 365,
}
ISSUE_CODE = {
    "type": "IssueCreditCode",
    "code_id": "K1",
    "distributor_id": DISTRIBUTOR,
    "unit": "stamps",
    "quantity": 5,
}
AUTO_TOP_UP = {"type": "ConfigureAutoTopUp", "cti_id": CTI, "minimum": 2, "credit": 10}
RESERVE = {
    "type": "ReserveStamp",
    "hold_id": "H1",
    "cti_id": CTI,
    "cfdi_uuid": "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F0A",
    "issuer_rfc": "GODE561231GR8",
}
SEAT = {"type": "BuyUserSeat", "seat_id": "SEAT-1", "client_id": CLIENT, "price": "300.00"}
RENEW_SEAT = {"type": "RenewUserSeat", "seat_id": "SEAT-1", "price": "300.00"}
ADD_USER = {
    "type": "AddPortalUser",
    "user_id": "U-1",
    "client_id": CLIENT,
    "email": "usuario@example.com",
}
STAMPING_SERVICE = {"owner": REFUSED}
"""The master alone: the CTI's own distributor may not consume or check credentials."""

CASES: dict[str, Case] = {
    "OpenMasterAccount": Case(
        {"type": "OpenMasterAccount", "master_id": "M3", "name": "Tercera", "rfc": "SAT970701NN3"},
        owner="M3",  # not the first master of the ledger: it cannot open itself
        expected={"owner": REFUSED, "other_master": OK},
    ),
    "DefinePackage": Case(CLIENT_PACKAGE),
    "ChangeSettings": Case(
        {"type": "ChangeSettings", "seller_id": DISTRIBUTOR, "allow_pcc_point_purchase": True}
    ),
    "RegisterDistributor": Case(REGISTER_X),
    "ValidateDistributor": Case(
        {"type": "ValidateDistributor", "distributor_id": "X1"},
        setup=(by(DISTRIBUTOR, REGISTER_X),),
    ),
    "ActivateDistributor": Case(
        {"type": "ActivateDistributor", "distributor_id": "X1", "expires_on": EXPIRES_ON},
        setup=(
            by(DISTRIBUTOR, REGISTER_X),
            by(DISTRIBUTOR, {"type": "ValidateDistributor", "distributor_id": "X1"}),
        ),
    ),
    "SuspendDistributor": status_move("SuspendDistributor"),
    "ReactivateDistributor": Case(
        {"type": "ReactivateDistributor", "distributor_id": SUB_DISTRIBUTOR}, setup=(SUSPEND_S1,)
    ),
    "RenewDistributor": status_move("RenewDistributor", expires_on="2027-06-30"),
    "CancelDistributor": Case(
        {"type": "CancelDistributor", "distributor_id": SUB_DISTRIBUTOR}, setup=(SUSPEND_S1,)
    ),
    "ContractSubscription": Case(
        {
            "type": "ContractSubscription",
            "distributor_id": DISTRIBUTOR,
            "product": "MKL NomiCloud",
        }
    ),
    "BuyPackage": Case(
        {"type": "BuyPackage", "buyer_id": DISTRIBUTOR, "seller_id": MASTER, "package_id": "P1000"}
    ),
    "TransferStamps": Case(transfer()),
    "TransferPoints": Case(
        {
            "type": "TransferPoints",
            "transfer_id": "TP1",
            "from_id": DISTRIBUTOR,
            "to_id": CLIENT,
            "quantity": 100,
        }
    ),
    "MassTransfer": Case(
        {
            "type": "MassTransfer",
            "batch_id": "B1",
            "from_id": DISTRIBUTOR,
            "lines": [{"to_id": CTI, "quantity": 2}, {"to_id": SUB_DISTRIBUTOR, "quantity": 3}],
        }
    ),
    "ReclaimStamps": Case(
        {
            "type": "ReclaimStamps",
            "transfer_id": "R1",
            "from_cti_id": CTI,
            "quantity": 2,
            "reason": "falta de pago",
        }
    ),
    "RegisterInvoice": Case(
        {
            "type": "RegisterInvoice",
            "seller_id": DISTRIBUTOR,
            "invoice_ref": "F-1",
            "sale_ids": ["T1"],
        },
        setup=(by(DISTRIBUTOR, transfer("T1")),),
    ),
    "RegisterClient": Case(
        {
            "type": "RegisterClient",
            "client_id": "C2",
            "distributor_id": DISTRIBUTOR,
            "profile": client_profile(email="c2@example.com"),
        }
    ),
    "UpdateClientProfile": Case(
        {"type": "UpdateClientProfile", "client_id": CLIENT, "profile": client_profile("Otro")}
    ),
    "TagClient": Case({"type": "TagClient", "client_id": CLIENT, "favourite": True}),
    "AssignAdminProfile": Case(
        {
            "type": "AssignAdminProfile",
            "client_id": CLIENT,
            "email": "admin@example.com",
            "mobile": "5512345678",
        }
    ),
    "OpenStampingAccount": Case(
        {
            "type": "OpenStampingAccount",
            "cti_id": "X-cti",
            "client_id": CLIENT,
            "password": PASSWORD,
        }
    ),
    "BlockStampingAccount": Case({"type": "BlockStampingAccount", "cti_id": CTI}),
    "ReactivateStampingAccount": Case(
        {"type": "ReactivateStampingAccount", "cti_id": CTI},
        setup=(by(DISTRIBUTOR, {"type": "BlockStampingAccount", "cti_id": CTI}),),
    ),
    "ResetStampingPassword": Case(
        {"type": "ResetStampingPassword", "cti_id": CTI, "password": "otra-clave-456"}
    ),
    "RenewUnlimitedAccount": Case(
        {"type": "RenewUnlimitedAccount", "cti_id": "U1"}, setup=(by(DISTRIBUTOR, UNLIMITED),)
    ),
    "VerifyStampingCredentials": Case(
        {"type": "VerifyStampingCredentials", "cti_id": CTI, "password": PASSWORD},
        expected=STAMPING_SERVICE,
    ),
    "ConfigureAutoTopUp": Case(
        {"type": "ConfigureAutoTopUp", "cti_id": CTI, "minimum": 2, "credit": 10}
    ),
    "DisableAutoTopUp": Case(
        {"type": "DisableAutoTopUp", "cti_id": CTI},
        setup=(
            by(
                DISTRIBUTOR,
                {"type": "ConfigureAutoTopUp", "cti_id": CTI, "minimum": 2, "credit": 10},
            ),
        ),
    ),
    "ReserveStamp": Case(RESERVE, expected=STAMPING_SERVICE),
    "PostReservation": Case(
        {"type": "PostReservation", "hold_id": "H1"},
        setup=(by(MASTER, RESERVE),),
        expected=STAMPING_SERVICE,
    ),
    "VoidReservation": Case(
        {"type": "VoidReservation", "hold_id": "H1"},
        setup=(by(MASTER, RESERVE),),
        expected=STAMPING_SERVICE,
    ),
    "ConsumeStamp": Case(
        {k: v for k, v in consume().items() if k != "actor"}, expected=STAMPING_SERVICE
    ),
    "AssignPackage": Case(
        {
            "type": "AssignPackage",
            "grant_id": "G1",
            "seller_id": DISTRIBUTOR,
            "cti_id": CTI,
            "package_id": "F100",
        },
        setup=(by(DISTRIBUTOR, CLIENT_PACKAGE),),
    ),
    "IssueCreditCode": Case(ISSUE_CODE),
    "CancelCreditCode": Case(
        {"type": "CancelCreditCode", "code_id": "K1"}, setup=(by(DISTRIBUTOR, ISSUE_CODE),)
    ),
    "RedeemCreditCode": Case(
        {"type": "RedeemCreditCode", "to_id": CTI},
        owner=CLIENT,
        setup=(by(DISTRIBUTOR, ISSUE_CODE),),
        expected={"client": OK},
        complete=lambda outcomes: {"code": outcomes[0].code, "nip": outcomes[0].nip},
    ),
    "ClientBuyPackage": Case(
        {"type": "ClientBuyPackage", "client_id": CLIENT, "package_id": "F100"},
        owner=CLIENT,
        setup=(
            by(DISTRIBUTOR, CLIENT_PACKAGE),
            by(
                DISTRIBUTOR,
                {
                    "type": "ChangeSettings",
                    "seller_id": DISTRIBUTOR,
                    "allow_pcc_stamp_purchase": True,
                },
            ),
        ),
        expected={"client": OK},
    ),
    "MassAutoTopUp": Case(
        {
            "type": "MassAutoTopUp",
            "batch_id": "B2",
            "distributor_id": DISTRIBUTOR,
            "cti_ids": [CTI],
        },
        setup=(by(DISTRIBUTOR, AUTO_TOP_UP),),
    ),
    "SpendPoints": Case(
        {"type": "SpendPoints", "client_id": CLIENT, "product": "licencia", "points": 10},
        owner=CLIENT,
        expected={"client": OK},
    ),
    "DefineSubscriptionProduct": Case(
        {
            "type": "DefineSubscriptionProduct",
            "seller_id": MASTER,
            "product": "MKL Contpaqi",
            "kind": "mkl",
            "annual_price": "1500.00",
        },
        owner=MASTER,
    ),
    "PurgeDistributor": Case(
        {"type": "PurgeDistributor", "distributor_id": SUB_DISTRIBUTOR},
        setup=(
            SUSPEND_S1,
            by(DISTRIBUTOR, {"type": "CancelDistributor", "distributor_id": SUB_DISTRIBUTOR}),
        ),
        # Authorised actors reach the rule: a purge comes 30 days after the cancellation.
        expected={"master": "invalid_transition", "owner": "invalid_transition"},
    ),
    "ConvertClientToDistributor": Case(
        {"type": "ConvertClientToDistributor", "client_id": CLIENT, "distributor_id": "X2"}
    ),
    "GenerateLicence": Case(
        {"type": "GenerateLicence", "client_id": CLIENT, "product": "MKL Dóminus"}
    ),
    "BuyUserSeat": Case(SEAT),
    "RenewUserSeat": Case(RENEW_SEAT, setup=(by(DISTRIBUTOR, SEAT),)),
    "AddPortalUser": Case(ADD_USER, setup=(by(DISTRIBUTOR, SEAT),), expected={"client": OK}),
    "DeactivatePortalUser": Case(
        {"type": "DeactivatePortalUser", "user_id": "U-1"},
        setup=(by(DISTRIBUTOR, SEAT), by(DISTRIBUTOR, ADD_USER)),
        expected={"client": OK},
    ),
    "ChangePortalUser": Case(
        {"type": "ChangePortalUser", "user_id": "U-1", "email": "otra@example.com"},
        setup=(by(DISTRIBUTOR, SEAT), by(DISTRIBUTOR, ADD_USER)),
        expected={"client": OK},
    ),
    "DeletePortalUser": Case(
        {"type": "DeletePortalUser", "user_id": "U-1"},
        setup=(by(DISTRIBUTOR, SEAT), by(DISTRIBUTOR, ADD_USER)),
        expected={"client": OK},
    ),
}


def command_types() -> list[str]:
    """The name of every command type the ledger accepts."""
    union = typing.get_args(AnyCommand)[0]
    return sorted(model.__name__ for model in typing.get_args(union))


def test_every_command_type_has_a_rule() -> None:
    """A command type without a rule of who may act would be refused: the table is complete."""
    assert sorted(cls.__name__ for cls in RULES) == command_types()


def test_every_command_type_is_in_the_matrix() -> None:
    """The matrix below tries every command type."""
    assert sorted(CASES) == command_types()


@pytest.fixture
def lg(clock: ManualClock) -> Iterator[Ledger]:
    """The network of this module on an in-memory store."""
    with Ledger.open("memory://", clock=clock, password_cost="fast", projections="off") as ledger:
        network(ledger)
        yield ledger


def store_of(lg: Ledger) -> MemoryStore:
    """The in-memory store behind ``lg``."""
    store = lg.engine.store
    assert isinstance(store, MemoryStore)
    return store


@pytest.fixture(scope="module")
def template() -> MemoryStore:
    """The network recorded once; each case runs on a copy of it."""
    clock = ManualClock(NOW)
    with Ledger.open("memory://", clock=clock, password_cost="fast", projections="off") as ledger:
        network(ledger)
        return store_of(ledger)


def code_of(result: Outcome | Rejected) -> str:
    """``ok`` or the rejection's code."""
    return result.code if isinstance(result, Rejected) else OK


def run(lg: Ledger, command: dict[str, Any]) -> str:
    """The outcome code of ``command``."""
    (result,) = lg.execute_many([command])
    return code_of(result)


@pytest.mark.parametrize("actor_kind", ACTORS)
@pytest.mark.parametrize("command_type", sorted(CASES))
def test_authorisation_matrix(template: MemoryStore, command_type: str, actor_kind: str) -> None:
    """Each kind of actor gets the exact outcome; a refusal records no event and no key."""
    case = CASES[command_type]
    store = template.copy()
    engine = Engine(store=store, clock=ManualClock(NOW), password_cost="fast")
    prepared = engine.execute_many(list(case.setup))
    assert all(isinstance(result, Outcome) for result in prepared), prepared
    actor = case.actor(actor_kind)
    sent = dict(case.command) if actor is None else by(actor, case.command)
    if case.complete is not None:
        sent.update(case.complete(typing.cast(list[Outcome], prepared)))
    before = (len(store.stored_events()), store.key_count())
    (result,) = engine.execute_many([sent])
    assert code_of(result) == case.outcome_for(actor_kind)
    if isinstance(result, Rejected):
        assert (len(store.stored_events()), store.key_count()) == before
    else:
        made = store.events()[before[0] :]
        assert {e.actor for e in made} == ({actor} if made else set())
        # Only a credentials check records nothing when it succeeds.
        assert made or command_type == "VerifyStampingCredentials"


def test_a_missing_actor_names_the_field(lg: Ledger) -> None:
    """A command without ``actor`` is invalid_command naming the field ``actor``."""
    with pytest.raises(Rejected) as raised:
        lg.execute(transfer())
    assert raised.value.code == MALFORMED
    assert raised.value.details["errors"] == [
        {"field": "TransferStamps.actor", "message": "Field required"}
    ]


# The first master account of a ledger ----------------------------------------------------------


@pytest.fixture
def empty(clock: ManualClock) -> Iterator[Ledger]:
    """A ledger with nothing in it."""
    with Ledger.open("memory://", clock=clock, password_cost="fast", projections="off") as ledger:
        yield ledger


def open_master(master_id: str, actor: str | None = None) -> dict[str, Any]:
    """An OpenMasterAccount, with ``actor`` when given."""
    opening = {
        "type": "OpenMasterAccount",
        "master_id": master_id,
        "name": "P",
        "rfc": "SAT970701NN3",
    }
    return opening if actor is None else by(actor, opening)


@pytest.mark.parametrize("actor", [None, "M"])
def test_the_first_master_opens_itself(empty: Ledger, actor: str | None) -> None:
    """The first master account needs no actor, or names itself; its events record it."""
    assert run(empty, open_master("M", actor)) == OK
    assert [e.actor for e in store_of(empty).events()] == ["M"]


def test_the_first_master_cannot_be_opened_by_a_stranger(empty: Ledger) -> None:
    """An actor other than the new master itself is refused, and nothing is recorded."""
    assert run(empty, open_master("M", "X")) == REFUSED
    assert store_of(empty).stored_events() == []


def test_after_the_first_master_an_actor_is_required(empty: Ledger) -> None:
    """Only the first opening goes without an actor; later ones need an existing master."""
    run(empty, open_master("M"))
    assert run(empty, open_master("M2")) == MALFORMED
    assert run(empty, open_master("M2", "M2")) == REFUSED
    assert run(empty, open_master("M2", "M")) == OK


def test_a_retried_first_opening_replays(empty: Ledger) -> None:
    """The first opening retried without an actor gets its first outcome."""
    first = empty.execute(open_master("M"))
    again = empty.execute(open_master("M"))
    assert again.replayed
    assert again.type == first.type


# What is recorded --------------------------------------------------------------------------------


def test_history_shows_the_actor_of_each_movement(lg: Ledger) -> None:
    """Each movement of ``history`` carries who acted."""
    lg.execute(by(MASTER, {k: v for k, v in consume().items() if k != "actor"}))
    movements = [m.to_dict() for m in lg.history(CTI)]
    assert [(m["topic"], m["actor"]) for m in movements] == [
        ("StampingAccount.StampsCredited", DISTRIBUTOR),
        ("StampingAccount.StampConsumed", MASTER),
    ]


def test_the_log_line_names_the_actor(lg: Ledger) -> None:
    """The per-command log line carries the actor, refused or not."""
    with capture_logs() as logs:
        lg.execute_many(
            [transfer(), by(OTHER_DISTRIBUTOR, transfer()), by(DISTRIBUTOR, transfer())]
        )
    assert [(line["actor"], line["outcome"], line["code"]) for line in logs] == [
        (None, "rejected", MALFORMED),
        (OTHER_DISTRIBUTOR, "rejected", REFUSED),
        (DISTRIBUTOR, "ok", None),
    ]
