"""Builders of realistic commands and a small network, shared by the test tiers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.storage.memory import MemoryStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from ledger.first_steps import seed_subscription_commands

MASTER = "M"
DISTRIBUTOR = "D1"
CLIENT = "C1"
CTI = "C1-cti"
ISSUER_RFC = "GODE561231GR8"


def distributor_profile(
    name: str = "Distribuidora Uno", email: str = "uno@example.com"
) -> dict[str, Any]:
    """A valid distributor profile."""
    return {"name": name, "rfc": "MAB9307148T4", "email": email, "postal_code": "06600"}


def client_profile(name: str = "Juan Pérez", email: str = "juan@example.com") -> dict[str, Any]:
    """A valid client profile (persona física, régimen 612, uso G03)."""
    return {
        "name": name,
        "rfc": "GODE561231GR8",
        "email": email,
        "postal_code": "06600",
        "regimen_fiscal": "612",
        "uso_cfdi": "G03",
    }


def consume(cti_id: str = CTI, cfdi_uuid: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ConsumeStamp command with a fresh CFDI UUID unless one is given."""
    return {
        "type": "ConsumeStamp",
        "actor": MASTER,
        "cti_id": cti_id,
        "cfdi_uuid": cfdi_uuid or str(uuid.uuid4()),
        "issuer_rfc": ISSUER_RFC,
        **extra,
    }


@dataclass(frozen=True)
class Network:
    """Ids of the network ``build_network`` made."""

    master: str = MASTER
    distributor: str = DISTRIBUTOR
    client: str = CLIENT
    cti: str = CTI


def build_network(lg: Ledger, *, inventory: int = 10_000, cti_stamps: int = 0) -> Network:
    """Master account, one active distributor with ``inventory`` stamps, one client and its CTI."""
    packages = max(inventory // 1000, 1)
    commands: list[dict[str, Any]] = [
        {
            "type": "OpenMasterAccount",
            "master_id": MASTER,
            "name": "Plataforma",
            "rfc": "SAT970701NN3",
        },
        {
            "type": "DefinePackage",
            "actor": MASTER,
            "seller_id": MASTER,
            "package_id": "P1000",
            "unit": "stamps",
            "quantity": 1000,
            "price": "500.00",
            "audience": "distributor",
        },
        {
            "type": "DefinePackage",
            "actor": MASTER,
            "seller_id": MASTER,
            "package_id": "PTS3000",
            "unit": "points",
            "quantity": 3000,
            "price": "2850.00",
            "audience": "distributor",
        },
        {
            "type": "RegisterDistributor",
            "actor": MASTER,
            "distributor_id": DISTRIBUTOR,
            "parent_id": MASTER,
            "profile": distributor_profile(),
        },
        {"type": "ValidateDistributor", "distributor_id": DISTRIBUTOR, "actor": MASTER},
        {
            "type": "ActivateDistributor",
            "distributor_id": DISTRIBUTOR,
            "actor": MASTER,
            "expires_on": "2027-01-31",
        },
        {
            "type": "BuyPackage",
            "actor": DISTRIBUTOR,
            "buyer_id": DISTRIBUTOR,
            "seller_id": MASTER,
            "package_id": "P1000",
            "count": packages,
        },
        {
            "type": "RegisterClient",
            "actor": DISTRIBUTOR,
            "client_id": CLIENT,
            "distributor_id": DISTRIBUTOR,
            "profile": client_profile(),
        },
    ]
    if cti_stamps:
        commands.append(
            {
                "type": "TransferStamps",
                "actor": DISTRIBUTOR,
                "transfer_id": "T-setup",
                "from_id": DISTRIBUTOR,
                "to_id": CTI,
                "quantity": cti_stamps,
                "amount": "0.00",
            }
        )
    for result in lg.execute_many(commands):
        assert getattr(result, "ok", False), result
    return Network()


def subscription_catalogue(master_id: str = MASTER) -> list[dict[str, Any]]:
    """The ``DefineSubscriptionProduct`` commands of the seed's catalogue."""
    return seed_subscription_commands(master_id)


def define_catalogue(lg: Ledger, master_id: str = MASTER) -> None:
    """The seed's subscription catalogue (Multinivel 1,999.00, MKL Dóminus 1,850.00, ...)."""
    for result in lg.execute_many(subscription_catalogue(master_id)):
        assert getattr(result, "ok", False), result


def contract(product: str, distributor_id: str = DISTRIBUTOR) -> dict[str, Any]:
    """``distributor_id`` contracts a catalogue subscription."""
    return {
        "type": "ContractSubscription",
        "distributor_id": distributor_id,
        "product": product,
        "actor": distributor_id,
    }


@contextmanager
def network_ledger(clock: ManualClock, **network: Any) -> Iterator[Ledger]:
    """A ledger on the in-memory store holding ``build_network(lg, **network)``: the unit
    tiers' fixture."""
    with Ledger.open("memory://", clock=clock, password_cost="fast") as lg:
        build_network(lg, **network)
        yield lg


def recorded(lg: Ledger) -> tuple[int, int]:
    """How many events and idempotency keys an in-memory ledger holds."""
    assert isinstance(lg.store, MemoryStore)
    return len(lg.store.stored_events()), lg.store.key_count()


def rejection(lg: Ledger, command: dict[str, Any], *, records: int = 0) -> Rejected:
    """The rejection of ``command``, checking that it recorded exactly ``records`` events (the
    few refusals that leave a trace, e.g. a wrong NIP) and, when none, no key either."""
    events, keys = recorded(lg)
    with pytest.raises(Rejected) as caught:
        lg.execute(command)
    events_after, keys_after = recorded(lg)
    assert events_after - events == records
    if not records:
        assert keys_after == keys
    return caught.value


def fields(rejected: Rejected) -> list[str]:
    """The field names a schema rejection (``invalid_command``) reports."""
    return [error["field"] for error in rejected.details["errors"]]


def register_client(client_id: str = "C2", **profile: Any) -> dict[str, Any]:
    """A RegisterClient command of D1, its profile with ``profile`` overrides."""
    return {
        "type": "RegisterClient",
        "client_id": client_id,
        "distributor_id": DISTRIBUTOR,
        "actor": DISTRIBUTOR,
        "profile": {**client_profile(), **profile},
    }
