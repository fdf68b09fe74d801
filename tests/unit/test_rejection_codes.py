"""Docs equal behaviour (DESIGN §5, issue 19 item 5): the codes docs/COMMANDS.md lists for a
command are exactly the codes it answers.

The list of each command comes from the code (``ledger.docs.documented_codes``, from which
COMMANDS.md is generated). ``ROWS`` is a table of situations, each a command that answers one
code; it is checked both ways:

- every row answers its code, records nothing (but for the refusals that leave a trace), and
  that code is listed for its command (raised but not listed fails);
- every code listed for a command has a row (listed but never raised fails).

The common codes get generated rows: ``invalid_command`` (an unknown field), ``not_authorised``
(another distributor acts) and ``idempotency_conflict`` (a used ``idempotency_key``), from the
succeeding commands of the authorisation matrix (``tests/unit/test_authorisation.py``). A new
code, or a new command, needs its rows here and its entry in ``ledger.docs.REJECTIONS``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from adapters.storage.memory import MemoryStore
from ledger.aggregates.distributor import Distributor
from ledger.clock import ManualClock
from ledger.commands.reference import command_models
from ledger.docs import COMMON_CODES, KEY_CODE, NEVER_REPLAYED, documented_codes
from ledger.engine import Engine
from ledger.errors import Rejected
from ledger.outcome import Outcome
from tests.support import CLIENT, CTI, DISTRIBUTOR, MASTER, client_profile, consume
from tests.unit.test_authorisation import (
    ADD_USER,
    CASES,
    CLIENT_PACKAGE,
    ISSUE_CODE,
    NOW,
    OTHER_DISTRIBUTOR,
    PASSWORD,
    REGISTER_X,
    RENEW_SEAT,
    RESERVE,
    SEAT,
    SUB_DISTRIBUTOR,
    SUSPEND_S1,
    UNLIMITED,
    Case,
    by,
    network,
)

NOWHERE = "NOPE"
"""An id no account has."""

Complete = Callable[[list[Outcome | Rejected]], dict[str, Any]]
Step = dict[str, Any] | timedelta | Complete
"""A setup step: a command (with its actor), a move of the ledger clock, or a command made
from the results of the steps before it."""


@dataclass(frozen=True)
class Row:
    """``command`` (by ``actor``), after ``setup``, answers ``code``."""

    code: str
    command: dict[str, Any]
    actor: str | None = DISTRIBUTOR
    setup: tuple[Step, ...] = ()
    # Events the refusal records (a wrong NIP: DESIGN §3.3); otherwise nothing, no key either.
    records: int = 0
    # Fields taken from the setup's results (a credit code and its NIP).
    complete: Complete | None = None
    # Writes history the current commands cannot make (events of older versions) first.
    history: Callable[[MemoryStore], None] | None = None
    note: str = ""

    @property
    def command_type(self) -> str:
        """The type of the command."""
        return str(self.command["type"])

    @property
    def id(self) -> str:
        """The test id."""
        return f"{self.command_type}-{self.code}" + (f"-{self.note}" if self.note else "")


def at(actor: str, command: dict[str, Any]) -> dict[str, Any]:
    """A setup command carrying ``actor``."""
    return by(actor, command)


def code_outcome(results: list[Outcome | Rejected], index: int = 0) -> dict[str, Any]:
    """The code and NIP that the ``index``-th IssueCreditCode of the setup showed."""
    issued = [r for r in results if isinstance(r, Outcome) and r.code is not None][index]
    return {"code": issued.code, "nip": issued.nip}


def wrong_nip(results: list[Outcome | Rejected]) -> dict[str, Any]:
    """The setup's code with a NIP that is not its own."""
    found = code_outcome(results)
    assert found["nip"] is not None
    return {**found, "nip": "000000" if found["nip"] != "000000" else "111111"}


def redeem_step(to_id: str = "C1-cti", *, right: bool = True) -> Complete:
    """A setup step: C1 redeems the setup's code with its NIP (or a wrong one)."""

    def make(results: list[Outcome | Rejected]) -> dict[str, Any]:
        secrets = code_outcome(results) if right else wrong_nip(results)
        return at(CLIENT, {"type": "RedeemCreditCode", "to_id": to_id, **secrets})

    return make


def register_client(client_id: str, distributor_id: str, email: str) -> dict[str, Any]:
    """A client of ``distributor_id`` (by that distributor)."""
    return at(
        distributor_id,
        {
            "type": "RegisterClient",
            "client_id": client_id,
            "distributor_id": distributor_id,
            "profile": client_profile(email=email),
        },
    )


def suspend(distributor_id: str, parent_id: str = MASTER) -> dict[str, Any]:
    """The parent suspends a distributor."""
    return at(parent_id, {"type": "SuspendDistributor", "distributor_id": distributor_id})


PURGE_S1_WITH_CLIENT: tuple[Step, ...] = (
    register_client("C9", SUB_DISTRIBUTOR, "c9@example.com"),
    SUSPEND_S1,
    at(DISTRIBUTOR, {"type": "CancelDistributor", "distributor_id": SUB_DISTRIBUTOR}),
    timedelta(days=31),
    at(DISTRIBUTOR, {"type": "PurgeDistributor", "distributor_id": SUB_DISTRIBUTOR}),
)
"""S1 (a sub-distributor of D1) with a client C9, then cancelled and purged."""
OTHERS_C9 = register_client("C9", OTHER_DISTRIBUTOR, "c9@example.com")
"""The other distributor registers a client C9."""
OTHER_SUSPENDED = suspend(OTHER_DISTRIBUTOR)
"""The master account suspends the other distributor."""


def unreachable_clients(command: dict[str, Any]) -> tuple[Row, Row]:
    """``command`` by the master for a client nobody has (``unknown_account``), then for C9,
    whose distributor is suspended (``distributor_not_active``)."""
    return (
        Row("unknown_account", {**command, "client_id": NOWHERE}, actor=MASTER),
        Row(
            "distributor_not_active",
            {**command, "client_id": "C9"},
            actor=MASTER,
            setup=(OTHERS_C9, OTHER_SUSPENDED),
        ),
    )


ADMIN = at(
    DISTRIBUTOR,
    {
        "type": "AssignAdminProfile",
        "client_id": CLIENT,
        "email": "admin@example.com",
        "mobile": "5512345678",
    },
)
"""C1's admin login: no master or distributor may use it."""
BLOCK = at(DISTRIBUTOR, {"type": "BlockStampingAccount", "cti_id": CTI})
LOCKED_UNLIMITED = at(DISTRIBUTOR, {**UNLIMITED, "rfc_lock": "AAA010101AAA"})
"""U1: an unlimited CTI of C1 that stamps only for the RFC AAA010101AAA (valid a year)."""
A_YEAR_LATER = timedelta(days=367)
OTHER_CFDI = "0B9C3D1E-6F2A-4C4B-9A51-2F1F5C1D7E10"


def issue(code_id: str = "K1", **extra: Any) -> dict[str, Any]:
    """D1 issues a stamps code."""
    return at(DISTRIBUTOR, {**ISSUE_CODE, "code_id": code_id, **extra})


def redeem(to_id: str = CTI) -> dict[str, Any]:
    """A redemption (code and NIP completed from the setup) by the client C1."""
    return {"type": "RedeemCreditCode", "to_id": to_id}


def reserve(hold_id: str = "H1", cti_id: str = CTI) -> dict[str, Any]:
    """A hold on a CTI (by the master account)."""
    return {**RESERVE, "hold_id": hold_id, "cti_id": cti_id}


def legacy_subscription(product: str) -> Callable[[MemoryStore], None]:
    """D1 holds a running subscription to ``product``, recorded before the master's catalogue
    existed (a product the catalogue does not list)."""

    def write(store: MemoryStore) -> None:
        distributor = store.load(DISTRIBUTOR)
        assert isinstance(distributor, Distributor)
        assert distributor.expires_on is not None
        distributor.trigger(
            Distributor.SubscriptionContracted,
            NOW,
            product=product,
            expires_on=distributor.expires_on,
            seller_id=MASTER,
            sale_id=f"legacy:{product}",
            amount_centavos=0,
        )
        store.record(distributor.pending_events, [])

    return write


# The table -----------------------------------------------------------------------------------

ROWS: list[Row] = [
    # Catalogue and network
    Row(
        "already_exists",
        {"type": "OpenMasterAccount", "master_id": "M2", "name": "Otra", "rfc": "SAT970701NN3"},
        actor=MASTER,
    ),
    Row(
        "invalid_rfc",
        {"type": "OpenMasterAccount", "master_id": "M3", "name": "Otra", "rfc": "SAT971301NN3"},
        actor=MASTER,
    ),
    Row(
        "admin_profile_not_allowed",
        {
            "type": "OpenMasterAccount",
            "master_id": "M3",
            "name": "Otra",
            "rfc": "SAT970701NN3",
            "email": "admin@example.com",
        },
        actor=MASTER,
        setup=(ADMIN,),
    ),
    Row("unknown_account", {**CLIENT_PACKAGE, "seller_id": NOWHERE}, actor=MASTER),
    Row(
        "already_exists",
        {**CLIENT_PACKAGE, "price": "1.00"},
        setup=(at(DISTRIBUTOR, CLIENT_PACKAGE),),
    ),
    Row(
        "unknown_package",
        {"type": "DefinePackage", "seller_id": DISTRIBUTOR, "package_id": "F100", "retire": True},
    ),
    Row("unknown_account", {**REGISTER_X, "parent_id": NOWHERE}, actor=MASTER),
    Row("already_exists", {**REGISTER_X, "distributor_id": SUB_DISTRIBUTOR}),
    Row(
        "invalid_rfc",
        {**REGISTER_X, "profile": {**REGISTER_X["profile"], "rfc": "MAB9313148T4"}},
    ),
    Row("multinivel_required", {**REGISTER_X, "parent_id": OTHER_DISTRIBUTOR}, OTHER_DISTRIBUTOR),
    Row(
        "distributor_not_active",
        {**REGISTER_X, "parent_id": SUB_DISTRIBUTOR},
        actor=MASTER,
        setup=(SUSPEND_S1,),
    ),
    Row(
        "admin_profile_not_allowed",
        {**REGISTER_X, "profile": {**REGISTER_X["profile"], "email": "admin@example.com"}},
        setup=(ADMIN,),
    ),
    *[
        Row("unknown_account", {"type": move, "distributor_id": NOWHERE, **extra}, actor=MASTER)
        for move, extra in (
            ("ValidateDistributor", {}),
            ("ActivateDistributor", {"expires_on": "2026-12-31"}),
            ("SuspendDistributor", {}),
            ("ReactivateDistributor", {}),
            ("RenewDistributor", {"expires_on": "2027-12-31"}),
            ("CancelDistributor", {}),
            ("PurgeDistributor", {}),
        )
    ],
    Row("invalid_transition", {"type": "ValidateDistributor", "distributor_id": SUB_DISTRIBUTOR}),
    Row(
        "invalid_transition",
        {
            "type": "ActivateDistributor",
            "distributor_id": SUB_DISTRIBUTOR,
            "expires_on": "2026-12-31",
        },
    ),
    Row(
        "invalid_transition",
        {"type": "SuspendDistributor", "distributor_id": SUB_DISTRIBUTOR},
        setup=(SUSPEND_S1,),
    ),
    Row("invalid_transition", {"type": "ReactivateDistributor", "distributor_id": SUB_DISTRIBUTOR}),
    Row(
        "invalid_transition",
        {"type": "RenewDistributor", "distributor_id": "X1", "expires_on": "2027-12-31"},
        setup=(at(DISTRIBUTOR, REGISTER_X),),
    ),
    Row(
        "unknown_product",
        {"type": "RenewDistributor", "distributor_id": DISTRIBUTOR, "expires_on": "2028-01-31"},
        actor=MASTER,
        history=legacy_subscription("MKL Antiguo"),
    ),
    Row(
        "invalid_transition",
        {"type": "CancelDistributor", "distributor_id": "X1"},
        setup=(at(DISTRIBUTOR, REGISTER_X),),
    ),
    Row("invalid_transition", {"type": "PurgeDistributor", "distributor_id": SUB_DISTRIBUTOR}),
    Row(
        "unknown_account",
        {
            "type": "DefineSubscriptionProduct",
            "seller_id": NOWHERE,
            "product": "MKL Contpaqi",
            "kind": "mkl",
            "annual_price": "1500.00",
        },
        actor=MASTER,
    ),
    Row(
        "unknown_account",
        {"type": "ContractSubscription", "distributor_id": NOWHERE, "product": "Multinivel"},
        actor=MASTER,
    ),
    Row(
        "distributor_not_active",
        {
            "type": "ContractSubscription",
            "distributor_id": SUB_DISTRIBUTOR,
            "product": "Multinivel",
        },
        actor=MASTER,
        setup=(SUSPEND_S1,),
    ),
    Row(
        "unknown_product",
        {"type": "ContractSubscription", "distributor_id": DISTRIBUTOR, "product": "MKL Nada"},
    ),
    Row(
        "already_exists",
        {"type": "ContractSubscription", "distributor_id": DISTRIBUTOR, "product": "Multinivel"},
    ),
    *unreachable_clients({"type": "ConvertClientToDistributor", "distributor_id": "X2"}),
    Row(
        "multinivel_required",
        {"type": "ConvertClientToDistributor", "client_id": "C9", "distributor_id": "X2"},
        actor=OTHER_DISTRIBUTOR,
        setup=(OTHERS_C9,),
    ),
    Row(
        "invalid_transition",
        {"type": "ConvertClientToDistributor", "client_id": CLIENT, "distributor_id": "X3"},
        setup=(
            at(
                DISTRIBUTOR,
                {"type": "ConvertClientToDistributor", "client_id": CLIENT, "distributor_id": "X2"},
            ),
        ),
    ),
    Row(
        "already_exists",
        {
            "type": "ConvertClientToDistributor",
            "client_id": CLIENT,
            "distributor_id": OTHER_DISTRIBUTOR,
        },
    ),
    Row(
        "admin_profile_not_allowed",
        {"type": "ConvertClientToDistributor", "client_id": CLIENT, "distributor_id": "X2"},
        setup=(
            register_client("C9", DISTRIBUTOR, "c9@example.com"),
            at(
                DISTRIBUTOR,
                {
                    "type": "AssignAdminProfile",
                    "client_id": "C9",
                    "email": client_profile()["email"],
                    "mobile": "5512345678",
                },
            ),
        ),
    ),
    Row(
        "unknown_account",
        {"type": "ChangeSettings", "seller_id": NOWHERE, "allow_pcc_stamp_purchase": True},
        actor=MASTER,
    ),
    # Purchases and transfers
    Row(
        "unknown_account",
        {"type": "BuyPackage", "buyer_id": NOWHERE, "seller_id": MASTER, "package_id": "P1000"},
        actor=MASTER,
    ),
    Row(
        "unknown_package",
        {"type": "BuyPackage", "buyer_id": DISTRIBUTOR, "seller_id": MASTER, "package_id": "F1"},
    ),
    Row(
        "distributor_not_active",
        {
            "type": "BuyPackage",
            "buyer_id": SUB_DISTRIBUTOR,
            "seller_id": DISTRIBUTOR,
            "package_id": "P1000",
        },
        actor=MASTER,
        setup=(SUSPEND_S1,),
    ),
    Row(
        "insufficient_inventory",
        {
            "type": "BuyPackage",
            "buyer_id": SUB_DISTRIBUTOR,
            "seller_id": DISTRIBUTOR,
            "package_id": "BIG",
        },
        actor=SUB_DISTRIBUTOR,
        setup=(
            at(
                DISTRIBUTOR,
                {
                    **CLIENT_PACKAGE,
                    "package_id": "BIG",
                    "quantity": 1_000_000,
                    "audience": "distributor",
                },
            ),
        ),
    ),
    Row(
        "insufficient_points",
        {
            "type": "BuyPackage",
            "buyer_id": OTHER_DISTRIBUTOR,
            "seller_id": MASTER,
            "package_id": "P1000",
            "pay_with": "points",
        },
        actor=OTHER_DISTRIBUTOR,
    ),
]


def _transfer(command_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": command_type,
        "transfer_id": "T9",
        "from_id": DISTRIBUTOR,
        "to_id": CTI,
        "quantity": 1,
        **fields,
    }


def _mass(
    unit: str = "stamps", to_id: str = CTI, quantity: int = 1, **fields: Any
) -> dict[str, Any]:
    return {
        "type": "MassTransfer",
        "batch_id": "B9",
        "from_id": DISTRIBUTOR,
        "unit": unit,
        "lines": [{"to_id": to_id, "quantity": quantity}],
        **fields,
    }


S1_WITH_CLIENT: tuple[Step, ...] = (
    at(
        DISTRIBUTOR,
        _transfer(
            "TransferStamps", transfer_id="T-S1", to_id=SUB_DISTRIBUTOR, quantity=20, amount="9.00"
        ),
    ),
    register_client("C9", SUB_DISTRIBUTOR, "c9@example.com"),
)
"""S1 (no price list of its own, nor a master's) with 20 stamps and a client C9."""
C9_PROFILE = client_profile(email="c9@example.com")
C9_PRICED_RULE: tuple[Step, ...] = (
    *S1_WITH_CLIENT,
    at(
        SUB_DISTRIBUTOR,
        {
            "type": "UpdateClientProfile",
            "client_id": "C9",
            "profile": {**C9_PROFILE, "bulk_stamp_price": "0.90"},
        },
    ),
    at(
        SUB_DISTRIBUTOR,
        {"type": "ConfigureAutoTopUp", "cti_id": "C9-cti", "minimum": 2, "credit": 5},
    ),
    at(
        SUB_DISTRIBUTOR,
        {"type": "UpdateClientProfile", "client_id": "C9", "profile": {"bulk_stamp_price": None}},
    ),
)
"""C9-cti's rule was priced by C9's own bulk price, which C9's profile no longer has."""

ROWS += [
    Row(
        "price_unknown",
        _transfer("TransferStamps", from_id=SUB_DISTRIBUTOR, to_id="C9-cti"),
        actor=SUB_DISTRIBUTOR,
        setup=S1_WITH_CLIENT,
    ),
    Row(
        "price_unknown",
        _mass(from_id=SUB_DISTRIBUTOR, to_id="C9-cti"),
        actor=SUB_DISTRIBUTOR,
        setup=S1_WITH_CLIENT,
    ),
    Row(
        "price_unknown",
        {**ISSUE_CODE, "distributor_id": SUB_DISTRIBUTOR},
        actor=SUB_DISTRIBUTOR,
        setup=S1_WITH_CLIENT,
    ),
    Row(
        "price_unknown",
        {"type": "ConfigureAutoTopUp", "cti_id": "C9-cti", "minimum": 2, "credit": 5},
        actor=SUB_DISTRIBUTOR,
        setup=S1_WITH_CLIENT,
    ),
    Row(
        "price_unknown",
        {
            "type": "MassAutoTopUp",
            "batch_id": "B9",
            "distributor_id": SUB_DISTRIBUTOR,
            "cti_ids": ["C9-cti"],
        },
        actor=SUB_DISTRIBUTOR,
        setup=C9_PRICED_RULE,
    ),
    Row("unknown_account", _transfer("TransferStamps", to_id=NOWHERE)),
    Row("wrong_account_kind", _transfer("TransferStamps", to_id=CLIENT)),
    Row(
        "distributor_not_active",
        _transfer("TransferStamps", from_id=SUB_DISTRIBUTOR),
        actor=MASTER,
        setup=(SUSPEND_S1,),
    ),
    Row("insufficient_inventory", _transfer("TransferStamps", quantity=1_000_000)),
    Row("unknown_account", _transfer("TransferPoints", to_id=NOWHERE)),
    Row("wrong_account_kind", _transfer("TransferPoints", to_id=CTI)),
    Row(
        "distributor_not_active",
        _transfer("TransferPoints", to_id=SUB_DISTRIBUTOR),
        setup=(
            SUSPEND_S1,
            at(DISTRIBUTOR, {"type": "CancelDistributor", "distributor_id": SUB_DISTRIBUTOR}),
        ),
        note="cancelled-receiver",
    ),
    Row("insufficient_points", _transfer("TransferPoints", to_id=CLIENT, quantity=1_000_000)),
    Row("unknown_account", _mass(to_id=NOWHERE)),
    Row("wrong_account_kind", _mass(to_id=CLIENT)),
    Row(
        "distributor_not_active",
        _mass(from_id=SUB_DISTRIBUTOR),
        actor=MASTER,
        setup=(SUSPEND_S1,),
    ),
    Row("insufficient_inventory", _mass(quantity=1_000_000)),
    Row("insufficient_points", _mass("points", to_id=CLIENT, quantity=1_000_000)),
    Row(
        "unknown_account",
        {
            "type": "ReclaimStamps",
            "transfer_id": "R9",
            "from_cti_id": NOWHERE,
            "quantity": 1,
            "reason": "falta de pago",
        },
    ),
    Row(
        "insufficient_stamps",
        {
            "type": "ReclaimStamps",
            "transfer_id": "R9",
            "from_cti_id": CTI,
            "quantity": 11,
            "reason": "falta de pago",
        },
    ),
    Row(
        "price_unknown",
        {
            "type": "ReclaimStamps",
            "transfer_id": "R9",
            "from_cti_id": "C9-cti",
            "quantity": 1,
            "reason": "falta de pago",
        },
        actor=SUB_DISTRIBUTOR,
        setup=(
            *S1_WITH_CLIENT,
            at(
                SUB_DISTRIBUTOR,
                _transfer(
                    "TransferStamps",
                    from_id=SUB_DISTRIBUTOR,
                    to_id="C9-cti",
                    quantity=5,
                    amount="2.50",
                ),
            ),
        ),
    ),
    # Clients and stamping accounts
    Row(
        "unknown_account",
        {**register_client("C9", NOWHERE, "c9@example.com"), "actor": MASTER},
        actor=MASTER,
    ),
    Row(
        "already_exists",
        {**register_client(CLIENT, DISTRIBUTOR, "otro@example.com")},
    ),
    Row(
        "invalid_rfc",
        {
            **register_client("C9", DISTRIBUTOR, "c9@example.com"),
            "profile": {**client_profile(email="c9@example.com"), "rfc": "GODE561331GR8"},
        },
    ),
    Row(
        "distributor_not_active",
        OTHERS_C9,
        actor=MASTER,
        setup=(OTHER_SUSPENDED,),
    ),
    Row(
        "unknown_account",
        {"type": "UpdateClientProfile", "client_id": NOWHERE, "profile": client_profile()},
        actor=MASTER,
    ),
    Row(
        "invalid_rfc",
        {
            "type": "UpdateClientProfile",
            "client_id": CLIENT,
            "profile": {**client_profile(), "rfc": "GODE561331GR8"},
        },
    ),
    Row(
        "distributor_not_active",
        {"type": "UpdateClientProfile", "client_id": "C9", "profile": client_profile("Otro")},
        actor=MASTER,
        setup=PURGE_S1_WITH_CLIENT,
    ),
    Row("unknown_account", {"type": "TagClient", "client_id": NOWHERE, "favourite": True}, MASTER),
    Row(
        "unknown_account",
        {**ADMIN, "client_id": NOWHERE},
        actor=MASTER,
    ),
    Row("admin_profile_not_allowed", {**ADMIN, "email": "uno@example.com"}),
    Row(
        "distributor_not_active",
        {**ADMIN, "client_id": "C9"},
        actor=MASTER,
        setup=PURGE_S1_WITH_CLIENT,
    ),
    Row("unknown_account", {**UNLIMITED, "client_id": NOWHERE}, actor=MASTER),
    Row("already_exists", {**UNLIMITED, "cti_id": CTI}),
    Row("invalid_rfc", {**UNLIMITED, "rfc_lock": "GODE561331GR8"}),
    Row(
        "insufficient_points",
        {**UNLIMITED, "client_id": "C9"},
        setup=(register_client("C9", DISTRIBUTOR, "c9@example.com"),),
    ),
    *[
        Row("unknown_account", {"type": command_type, "cti_id": NOWHERE, **extra}, actor=MASTER)
        for command_type, extra in (
            ("BlockStampingAccount", {}),
            ("ReactivateStampingAccount", {}),
            ("ResetStampingPassword", {"password": PASSWORD}),
            ("RenewUnlimitedAccount", {}),
            ("ConfigureAutoTopUp", {"minimum": 2, "credit": 10}),
            ("DisableAutoTopUp", {}),
            ("ConsumeStamp", {k: v for k, v in consume().items() if k not in ("type", "cti_id")}),
            ("ReserveStamp", {k: v for k, v in reserve().items() if k not in ("type", "cti_id")}),
        )
    ],
    Row("invalid_transition", {"type": "BlockStampingAccount", "cti_id": CTI}, setup=(BLOCK,)),
    Row("invalid_transition", {"type": "ReactivateStampingAccount", "cti_id": CTI}),
    Row("wrong_account_kind", {"type": "RenewUnlimitedAccount", "cti_id": CTI}),
    Row(
        "insufficient_points",
        {"type": "RenewUnlimitedAccount", "cti_id": "U1"},
        setup=(
            at(DISTRIBUTOR, UNLIMITED),
            at(
                CLIENT,
                {"type": "SpendPoints", "client_id": CLIENT, "product": "todo", "points": 4500},
            ),
        ),
    ),
    Row(
        "account_blocked",
        {"type": "VerifyStampingCredentials", "cti_id": CTI, "password": PASSWORD},
        actor=MASTER,
        setup=(BLOCK,),
    ),
    Row(
        "credentials_locked",
        {"type": "VerifyStampingCredentials", "cti_id": CTI, "password": PASSWORD},
        actor=MASTER,
        setup=tuple(
            at(
                MASTER,
                {"type": "VerifyStampingCredentials", "cti_id": CTI, "password": "no-es-la-clave"},
            )
            for _ in range(5)
        ),
    ),
    Row(
        "wrong_account_kind",
        {"type": "ConfigureAutoTopUp", "cti_id": "U1", "minimum": 2, "credit": 10},
        setup=(at(DISTRIBUTOR, UNLIMITED),),
    ),
    Row("invalid_transition", {"type": "DisableAutoTopUp", "cti_id": CTI}),
    Row(
        "insufficient_stamps",
        consume("C9-cti"),
        actor=MASTER,
        setup=(register_client("C9", DISTRIBUTOR, "c9@example.com"),),
    ),
    Row("account_blocked", consume(), actor=MASTER, setup=(BLOCK,)),
    Row("invalid_rfc", consume(issuer_rfc="GODE-561231"), actor=MASTER, note="not-an-rfc"),
    Row(
        "unlimited_expired",
        consume("U1", issuer_rfc="AAA010101AAA"),
        actor=MASTER,
        setup=(LOCKED_UNLIMITED, A_YEAR_LATER),
    ),
    Row("rfc_not_allowed", consume("U1"), actor=MASTER, setup=(LOCKED_UNLIMITED,)),
    Row(
        "insufficient_stamps",
        reserve(cti_id="C9-cti"),
        actor=MASTER,
        setup=(register_client("C9", DISTRIBUTOR, "c9@example.com"),),
    ),
    Row("account_blocked", reserve(), actor=MASTER, setup=(BLOCK,)),
    Row(
        "invalid_rfc",
        {**reserve(), "issuer_rfc": "GODE-561231"},
        actor=MASTER,
        note="not-an-rfc",
    ),
    Row(
        "unlimited_expired",
        {**reserve(cti_id="U1"), "issuer_rfc": "AAA010101AAA"},
        actor=MASTER,
        setup=(LOCKED_UNLIMITED, A_YEAR_LATER),
    ),
    Row("rfc_not_allowed", reserve(cti_id="U1"), actor=MASTER, setup=(LOCKED_UNLIMITED,)),
    Row("unknown_hold", {"type": "PostReservation", "hold_id": NOWHERE}, actor=MASTER),
    Row(
        "hold_expired",
        {"type": "PostReservation", "hold_id": "H1"},
        actor=MASTER,
        setup=(at(MASTER, reserve()), timedelta(seconds=301)),
    ),
    Row(
        "hold_closed",
        {"type": "PostReservation", "hold_id": "H1"},
        actor=MASTER,
        setup=(at(MASTER, reserve()), at(MASTER, {"type": "VoidReservation", "hold_id": "H1"})),
    ),
    Row("unknown_hold", {"type": "VoidReservation", "hold_id": NOWHERE}, actor=MASTER),
    Row(
        "hold_closed",
        {"type": "VoidReservation", "hold_id": "H1"},
        actor=MASTER,
        setup=(at(MASTER, reserve()), at(MASTER, {"type": "PostReservation", "hold_id": "H1"})),
    ),
]

_ASSIGN = {
    "type": "AssignPackage",
    "grant_id": "G9",
    "seller_id": DISTRIBUTOR,
    "cti_id": CTI,
    "package_id": "F100",
}
_ALLOW_PCC = at(
    DISTRIBUTOR,
    {
        "type": "ChangeSettings",
        "seller_id": DISTRIBUTOR,
        "allow_pcc_stamp_purchase": True,
        "allow_pcc_point_purchase": True,
    },
)
_BUY = {"type": "ClientBuyPackage", "client_id": CLIENT, "package_id": "F100"}

ROWS += [
    Row("unknown_account", {**_ASSIGN, "cti_id": NOWHERE}, actor=MASTER),
    Row("unknown_package", _ASSIGN),
    Row(
        "wrong_account_kind",
        {**_ASSIGN, "cti_id": "U1"},
        setup=(at(DISTRIBUTOR, CLIENT_PACKAGE), at(DISTRIBUTOR, UNLIMITED)),
    ),
    Row(
        "distributor_not_active",
        {**_ASSIGN, "seller_id": OTHER_DISTRIBUTOR, "cti_id": "C9-cti"},
        actor=MASTER,
        setup=(
            OTHERS_C9,
            at(OTHER_DISTRIBUTOR, {**CLIENT_PACKAGE, "seller_id": OTHER_DISTRIBUTOR}),
            OTHER_SUSPENDED,
        ),
    ),
    Row(
        "insufficient_inventory",
        {**_ASSIGN, "package_id": "BIG"},
        setup=(at(DISTRIBUTOR, {**CLIENT_PACKAGE, "package_id": "BIG", "quantity": 1_000_000}),),
    ),
    Row(
        "unknown_account",
        {"type": "SpendPoints", "client_id": NOWHERE, "product": "x", "points": 1},
        actor=MASTER,
    ),
    Row(
        "insufficient_points",
        {"type": "SpendPoints", "client_id": CLIENT, "product": "x", "points": 1_000_000},
        actor=CLIENT,
    ),
    Row(
        "unknown_account",
        {"type": "RegisterInvoice", "seller_id": NOWHERE, "invoice_ref": "F-9", "sale_ids": ["T1"]},
        actor=MASTER,
    ),
    Row(
        "unknown_sale",
        {
            "type": "RegisterInvoice",
            "seller_id": DISTRIBUTOR,
            "invoice_ref": "F-9",
            "sale_ids": ["T1"],
        },
    ),
    Row(
        "already_invoiced",
        {
            "type": "RegisterInvoice",
            "seller_id": DISTRIBUTOR,
            "invoice_ref": "F-9",
            "sale_ids": ["T1"],
        },
        setup=(
            at(DISTRIBUTOR, _transfer("TransferStamps", transfer_id="T1", amount="1.00")),
            at(
                DISTRIBUTOR,
                {
                    "type": "RegisterInvoice",
                    "seller_id": DISTRIBUTOR,
                    "invoice_ref": "F-1",
                    "sale_ids": ["T1"],
                },
            ),
        ),
    ),
    Row(
        "mixed_buyers",
        {
            "type": "RegisterInvoice",
            "seller_id": DISTRIBUTOR,
            "invoice_ref": "F-9",
            "sale_ids": ["T1", "P9"],
        },
        setup=(
            at(DISTRIBUTOR, _transfer("TransferStamps", transfer_id="T1", amount="1.00")),
            at(DISTRIBUTOR, _transfer("TransferPoints", transfer_id="P9", to_id=SUB_DISTRIBUTOR)),
        ),
    ),
    Row(
        "unknown_account",
        {
            "type": "MassAutoTopUp",
            "batch_id": "B9",
            "distributor_id": DISTRIBUTOR,
            "cti_ids": [NOWHERE],
        },
    ),
    Row(
        "wrong_account_kind",
        {
            "type": "MassAutoTopUp",
            "batch_id": "B9",
            "distributor_id": DISTRIBUTOR,
            "cti_ids": [SUB_DISTRIBUTOR],
        },
    ),
    Row(
        "distributor_not_active",
        {
            "type": "MassAutoTopUp",
            "batch_id": "B9",
            "distributor_id": SUB_DISTRIBUTOR,
            "cti_ids": [CTI],
        },
        actor=MASTER,
        setup=(SUSPEND_S1,),
    ),
    Row(
        "invalid_transition",
        {
            "type": "MassAutoTopUp",
            "batch_id": "B9",
            "distributor_id": DISTRIBUTOR,
            "cti_ids": [CTI],
        },
    ),
    Row(
        "insufficient_inventory",
        {
            "type": "MassAutoTopUp",
            "batch_id": "B9",
            "distributor_id": DISTRIBUTOR,
            "cti_ids": [CTI],
        },
        setup=(
            at(
                DISTRIBUTOR,
                {"type": "ConfigureAutoTopUp", "cti_id": CTI, "minimum": 2, "credit": 1_000_000},
            ),
        ),
    ),
    Row("unknown_account", {**_BUY, "client_id": NOWHERE}, actor=MASTER),
    Row("unknown_package", _BUY, actor=CLIENT),
    Row(
        "wrong_account_kind",
        {**_BUY, "cti_id": "U1"},
        actor=CLIENT,
        setup=(at(DISTRIBUTOR, CLIENT_PACKAGE), _ALLOW_PCC, at(DISTRIBUTOR, UNLIMITED)),
    ),
    Row(
        "distributor_not_active",
        {**_BUY, "client_id": "C9"},
        actor="C9",
        setup=(
            OTHERS_C9,
            at(OTHER_DISTRIBUTOR, {**CLIENT_PACKAGE, "seller_id": OTHER_DISTRIBUTOR}),
            OTHER_SUSPENDED,
        ),
    ),
    Row("pcc_purchase_not_allowed", _BUY, actor=CLIENT, setup=(at(DISTRIBUTOR, CLIENT_PACKAGE),)),
    Row(
        "insufficient_inventory",
        {**_BUY, "client_id": "C9"},
        actor="C9",
        setup=(
            register_client("C9", SUB_DISTRIBUTOR, "c9@example.com"),
            at(SUB_DISTRIBUTOR, {**CLIENT_PACKAGE, "seller_id": SUB_DISTRIBUTOR}),
            at(SUB_DISTRIBUTOR, {**_ALLOW_PCC, "seller_id": SUB_DISTRIBUTOR}),
        ),
        note="seller-has-no-stamps-package",
    ),
    Row(
        "insufficient_points",
        {**_BUY, "client_id": "C9", "package_id": "PTS"},
        actor="C9",
        setup=(
            register_client("C9", SUB_DISTRIBUTOR, "c9@example.com"),
            at(
                SUB_DISTRIBUTOR,
                {
                    **CLIENT_PACKAGE,
                    "seller_id": SUB_DISTRIBUTOR,
                    "package_id": "PTS",
                    "unit": "points",
                },
            ),
            at(
                SUB_DISTRIBUTOR,
                {**_ALLOW_PCC, "seller_id": SUB_DISTRIBUTOR, "allow_pcc_stamp_purchase": None},
            ),
        ),
        note="seller-has-no-points-package",
    ),
    # Credit codes
    Row("unknown_account", {**ISSUE_CODE, "distributor_id": NOWHERE}, actor=MASTER),
    Row("already_exists", {**ISSUE_CODE, "code_id": CLIENT}),
    Row(
        "distributor_not_active",
        {**ISSUE_CODE, "distributor_id": SUB_DISTRIBUTOR},
        actor=MASTER,
        setup=(SUSPEND_S1,),
    ),
    Row("insufficient_inventory", {**ISSUE_CODE, "quantity": 1_000_000}),
    Row("insufficient_points", {**ISSUE_CODE, "unit": "points", "quantity": 1_000_000}),
    Row("unknown_account", redeem(NOWHERE), actor=MASTER, setup=(issue(),), complete=code_outcome),
    Row(
        "wrong_account_kind", redeem(CLIENT), actor=CLIENT, setup=(issue(),), complete=code_outcome
    ),
    Row(
        "unknown_code",
        {**redeem(), "code": "K7Q2M9X4T8W3R6Z5B1N0", "nip": "123456"},
        actor=CLIENT,
    ),
    Row("wrong_nip", redeem(), actor=CLIENT, setup=(issue(),), complete=wrong_nip, records=1),
    Row(
        "code_locked",
        redeem(),
        actor=CLIENT,
        setup=(issue(), *[redeem_step(right=False) for _ in range(5)]),
        complete=code_outcome,
    ),
    Row(
        "code_expired",
        redeem(),
        actor=CLIENT,
        setup=(issue(expires_on="2026-01-06"), timedelta(days=2)),
        complete=code_outcome,
    ),
    Row(
        "code_redeemed",
        redeem("U1"),
        actor=CLIENT,
        setup=(issue(), at(DISTRIBUTOR, UNLIMITED), redeem_step()),
        complete=code_outcome,
    ),
    Row(
        "code_cancelled",
        redeem(),
        actor=CLIENT,
        setup=(issue(), at(DISTRIBUTOR, {"type": "CancelCreditCode", "code_id": "K1"})),
        complete=code_outcome,
    ),
    Row("unknown_account", {"type": "CancelCreditCode", "code_id": NOWHERE}, actor=MASTER),
    Row(
        "code_redeemed",
        {"type": "CancelCreditCode", "code_id": "K1"},
        setup=(issue(), redeem_step()),
    ),
    Row(
        "code_locked",
        {"type": "CancelCreditCode", "code_id": "K1"},
        setup=(issue(), *[redeem_step(right=False) for _ in range(5)]),
    ),
    Row(
        "code_expired",
        {"type": "CancelCreditCode", "code_id": "K1"},
        setup=(
            issue(expires_on="2026-01-06"),
            timedelta(days=2),
            at(DISTRIBUTOR, {"type": "CancelCreditCode", "code_id": "K1"}),
        ),
    ),
    Row(
        "code_cancelled",
        {"type": "CancelCreditCode", "code_id": "K1"},
        setup=(issue(), at(DISTRIBUTOR, {"type": "CancelCreditCode", "code_id": "K1"})),
    ),
    # Licences, seats, portal users
    *unreachable_clients({"type": "GenerateLicence", "product": "Dóminus"}),
    Row("mkl_required", {"type": "GenerateLicence", "client_id": CLIENT, "product": "NomiCloud"}),
    Row(
        "unknown_product",
        {"type": "GenerateLicence", "client_id": CLIENT, "product": "Antiguo"},
        history=legacy_subscription("MKL Antiguo"),
    ),
    Row(
        "insufficient_points",
        {"type": "GenerateLicence", "client_id": CLIENT, "product": "Dóminus"},
        setup=(
            at(
                MASTER,
                {
                    "type": "DefineSubscriptionProduct",
                    "seller_id": MASTER,
                    "product": "MKL Dóminus",
                    "kind": "mkl",
                    "annual_price": "1850.00",
                    "licence_points": 1_000_000,
                },
            ),
        ),
    ),
    *unreachable_clients(SEAT),
    Row("unknown_account", {**ADD_USER, "client_id": NOWHERE}, actor=MASTER),
    Row(
        "distributor_not_active",
        {**ADD_USER, "client_id": "C9"},
        actor=MASTER,
        setup=PURGE_S1_WITH_CLIENT,
    ),
    Row(
        "already_exists",
        {**ADD_USER, "email": "otro@example.com"},
        setup=(at(DISTRIBUTOR, SEAT), at(DISTRIBUTOR, ADD_USER)),
    ),
    Row("no_free_seat", ADD_USER),
    Row(
        "already_exists",
        {**ADD_USER, "user_id": "U-2"},
        setup=(
            at(DISTRIBUTOR, SEAT),
            at(DISTRIBUTOR, {**SEAT, "seat_id": "SEAT-2"}),
            at(DISTRIBUTOR, ADD_USER),
        ),
        note="email",
    ),
    Row("unknown_account", {**RENEW_SEAT, "seat_id": NOWHERE}, actor=MASTER),
    Row(
        "distributor_not_active",
        {**RENEW_SEAT, "seat_id": "SEAT-9"},
        actor=MASTER,
        setup=(
            OTHERS_C9,
            at(OTHER_DISTRIBUTOR, {**SEAT, "seat_id": "SEAT-9", "client_id": "C9"}),
            OTHER_SUSPENDED,
        ),
    ),
]

_USER_SETUP: tuple[Step, ...] = (at(DISTRIBUTOR, SEAT), at(DISTRIBUTOR, ADD_USER))
_DELETE_USER = at(DISTRIBUTOR, {"type": "DeletePortalUser", "user_id": "U-1"})

ROWS += [
    *[
        Row("unknown_account", {"type": command_type, "user_id": NOWHERE, **extra}, actor=MASTER)
        for command_type, extra in (
            ("DeactivatePortalUser", {}),
            ("ChangePortalUser", {"email": "otra@example.com"}),
            ("DeletePortalUser", {}),
        )
    ],
    Row(
        "invalid_transition",
        {"type": "DeactivatePortalUser", "user_id": "U-1"},
        setup=(*_USER_SETUP, _DELETE_USER),
    ),
    Row(
        "distributor_not_active",
        {"type": "ChangePortalUser", "user_id": "U-9", "email": "otra@example.com"},
        actor=MASTER,
        setup=(
            register_client("C9", SUB_DISTRIBUTOR, "c9@example.com"),
            at(SUB_DISTRIBUTOR, {**SEAT, "client_id": "C9"}),
            at(SUB_DISTRIBUTOR, {**ADD_USER, "user_id": "U-9", "client_id": "C9"}),
            *PURGE_S1_WITH_CLIENT[1:],
        ),
    ),
    Row(
        "invalid_transition",
        {"type": "ChangePortalUser", "user_id": "U-1", "email": "otra@example.com"},
        setup=(*_USER_SETUP, _DELETE_USER),
    ),
    Row(
        "no_free_seat",
        {"type": "ChangePortalUser", "user_id": "U-1", "email": "otra@example.com"},
        setup=(*_USER_SETUP, A_YEAR_LATER),
    ),
    Row(
        "already_exists",
        {"type": "ChangePortalUser", "user_id": "U-2", "email": ADD_USER["email"]},
        setup=(
            *_USER_SETUP,
            at(DISTRIBUTOR, {**SEAT, "seat_id": "SEAT-2"}),
            at(DISTRIBUTOR, {**ADD_USER, "user_id": "U-2", "email": "otra@example.com"}),
        ),
    ),
    Row(
        "invalid_transition",
        {"type": "DeletePortalUser", "user_id": "U-1"},
        setup=(*_USER_SETUP, _DELETE_USER),
    ),
]


# Rows of the common codes, from the authorisation matrix's succeeding commands ------------------

_UNUSED_KEY_HOLDER = at(
    DISTRIBUTOR,
    {"type": "TagClient", "client_id": CLIENT, "dropped": True, "idempotency_key": "K-19"},
)
"""Uses the idempotency key ``K-19`` for a tag of C1 (no matrix command drops a client)."""


def _succeeding_actor(case: Case) -> str:
    kind = "owner" if case.outcome_for("owner") == "ok" else "master"
    actor = case.actor(kind)
    assert actor is not None
    return actor


def _common_rows(command_type: str, case: Case) -> list[Row]:
    actor = _succeeding_actor(case)
    setup = tuple(case.setup)
    rows = [
        Row(
            "invalid_command",
            {**case.command, "unexpected_field": 1},
            actor=actor,
            setup=setup,
            complete=case.complete,  # type: ignore[arg-type]
        ),
        Row(
            "not_authorised",
            case.command,
            actor=OTHER_DISTRIBUTOR,
            setup=setup,
            complete=case.complete,  # type: ignore[arg-type]
        ),
    ]
    if command_type not in NEVER_REPLAYED:
        rows.append(
            Row(
                KEY_CODE,
                {**case.command, "idempotency_key": "K-19"},
                actor=actor,
                setup=(*setup, _UNUSED_KEY_HOLDER),
                complete=case.complete,  # type: ignore[arg-type]
            )
        )
    return rows


ROWS += [row for name, case in CASES.items() for row in _common_rows(name, case)]


# The tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> MemoryStore:
    """The authorisation matrix's network, recorded once; each row runs on a copy."""
    engine = Engine(store=MemoryStore(), clock=ManualClock(NOW), password_cost="fast")
    store = engine.store
    assert isinstance(store, MemoryStore)
    network_on(engine)
    return store


def network_on(engine: Engine) -> None:
    """``network`` through an engine (it takes anything with ``execute_many``)."""
    network(typing.cast(Any, engine))


def _run_setup(
    engine: Engine, clock: ManualClock, steps: Sequence[Step]
) -> list[Outcome | Rejected]:
    results: list[Outcome | Rejected] = []
    for step in steps:
        if isinstance(step, timedelta):
            clock.set(clock() + step)
            continue
        command = step(results) if callable(step) else step
        (result,) = engine.execute_many([command])
        results.append(result)
    return results


def _counts(store: MemoryStore) -> tuple[int, int]:
    return len(store.stored_events()), store.key_count()


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_each_situation_answers_its_listed_code(template: MemoryStore, row: Row) -> None:
    """The row's command answers its code, which docs/COMMANDS.md lists for that command, and
    records nothing (a wrong NIP records its attempt)."""
    assert row.code in documented_codes(row.command_type), (
        f"{row.command_type} answers {row.code}, which COMMANDS.md does not list"
    )
    store = template.copy()
    if row.history is not None:
        row.history(store)
    clock = ManualClock(NOW)
    engine = Engine(store=store, clock=clock, password_cost="fast")
    results = _run_setup(engine, clock, row.setup)
    command = dict(row.command)
    if row.actor is not None:
        command["actor"] = row.actor
    if row.complete is not None:
        command.update(row.complete(results))
        command = {k: v for k, v in command.items() if v is not None}
    before = _counts(store)
    (result,) = engine.execute_many([command])
    assert isinstance(result, Rejected), f"{row.id}: {result}"
    assert result.code == row.code, f"{row.id}: {result.code} {result.details}"
    events, keys = _counts(store)
    assert events - before[0] == row.records
    if not row.records:
        assert keys == before[1]


@pytest.mark.parametrize("command_type", sorted(command_models()))
def test_the_listed_codes_are_exactly_those_the_situations_raise(command_type: str) -> None:
    """Every code listed for a command has a situation that raises it, and no other."""
    listed = set(documented_codes(command_type))
    raised = {row.code for row in ROWS if row.command_type == command_type}
    assert sorted(listed - raised) == [], "listed in COMMANDS.md but no situation raises it"
    assert sorted(raised - listed) == [], "raised but not listed in COMMANDS.md"


def test_the_common_codes_are_listed_for_every_command() -> None:
    """``invalid_command`` and ``not_authorised`` are listed for every command."""
    assert all(set(COMMON_CODES) <= set(documented_codes(name)) for name in command_models())


@pytest.mark.parametrize("cti_id", [NOWHERE, CLIENT, DISTRIBUTOR])
def test_a_credentials_check_of_no_cti_answers_valid_false(
    template: MemoryStore, cti_id: str
) -> None:
    """An unknown id, or the id of an account that is no CTI, is ``valid: false`` like a wrong
    password (never ``unknown_account``, which would tell that the id exists)."""
    store = template.copy()
    engine = Engine(store=store, clock=ManualClock(NOW), password_cost="fast")
    before = _counts(store)
    (result,) = engine.execute_many(
        [
            {
                "type": "VerifyStampingCredentials",
                "cti_id": cti_id,
                "password": PASSWORD,
                "actor": MASTER,
            }
        ]
    )
    assert isinstance(result, Outcome)
    assert result.valid is False
    assert _counts(store) == before


def test_a_transfer_into_a_blocked_cti_is_allowed(template: MemoryStore) -> None:
    """A blocked CTI cannot stamp but may be topped up (so ``account_blocked`` is not listed
    for TransferStamps)."""
    engine = Engine(store=template.copy(), clock=ManualClock(NOW), password_cost="fast")
    results = engine.execute_many([BLOCK, at(DISTRIBUTOR, _transfer("TransferStamps", quantity=5))])
    assert all(isinstance(result, Outcome) for result in results), results
    assert engine.current(CTI).balance("stamps", NOW.date()) == 15  # type: ignore[union-attr]
