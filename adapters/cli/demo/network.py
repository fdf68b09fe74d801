"""The demo's network and the commands of its opening day, made without a ledger.

A platform (master account) with a catalogue; three distributors, one of them (with Multinivel)
with two sub-distributors, and one still waiting for validation; a few hundred clients with
their CTIs (some with a second account, a few unlimited), their tags and their first stamps;
licences, a client turned distributor and a distributor closed. ``Network`` is the demo's own
model of who is in it, so that ``scenario`` can plan top-ups without asking the ledger; every
method here only makes commands (dicts, as a real integration would send them) for
``scenario`` to send.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from adapters.cli.demo.people import ascii_letters, client_profile, company_profile, company_rfc
from ledger.first_steps import seed_subscription_commands

MASTER = "PLATAFORMA"
SUBSCRIPTIONS = (
    ("D-CENTRO", "Multinivel"),
    ("D-CENTRO", "MKL Dóminus"),
    ("D-NORTE", "MKL Dóminus"),
    ("D-NORTE", "MKL NomiCloud"),
)
"""Who contracts what: Multinivel lets D-CENTRO have sub-distributors; an MKL lets a
distributor generate licences of that software for its clients."""
LICENSED_BY = "D-NORTE"
CONVERTED_BY = "D-CENTRO"
CONVERTED_DISTRIBUTOR = "D-CENTRO-NUEVO"
CLOSING = "D-BAJA"
"""A distributor cancelled on the demo's first day and purged 30 days later."""
CLOSING_CLIENT = "CL-BAJA"
PURGE_AFTER_DAYS = 30
PASSWORD = "demo-contraseña-1"  # noqa: S105  (a demo account's password, printed nowhere)
_COLOURS = ("rojo", "verde", "azul", "amarillo", "morado")
_TAGS = (("favourite", 0.1), ("colour", 0.2), ("dropped", 0.04))
"""The tags a distributor puts on a client, with the share of clients that get each."""


@dataclass
class Account:
    """The demo's own model of a CTI, to plan top-ups without asking the ledger."""

    cti_id: str
    client_id: str
    distributor_id: str
    rate: float
    starts_on_day: int
    unlimited: bool = False
    balance: int = 0
    blocked: bool = False


@dataclass
class Seller:
    """A distributor of the demo: its parent, its share of the clients and its clients."""

    distributor_id: str
    parent_id: str
    name: str
    weight: float
    multinivel: bool = False
    clients: list[str] = field(default_factory=list)


def opening_day(today: date, days: int) -> date:
    """The network opens the day before the first day of consumption, or earlier in a short
    demo: the distributor cancelled that day must be due for its purge today."""
    return min(today - timedelta(days=days + 1), today - timedelta(days=PURGE_AFTER_DAYS + 1))


def buy_package(buyer_id: str, seller_id: str, package_id: str, count: int) -> dict[str, Any]:
    """A distributor buys ``count`` of its seller's package (every purchase of the demo)."""
    return {
        "type": "BuyPackage",
        "actor": buyer_id,
        "buyer_id": buyer_id,
        "seller_id": seller_id,
        "package_id": package_id,
        "count": count,
    }


def define_package(
    seller_id: str, package_id: str, unit: str, quantity: int, price: str, **more: Any
) -> dict[str, Any]:
    """A package of the seller's catalogue, for distributors unless ``audience`` says so."""
    return {
        "type": "DefinePackage",
        "actor": seller_id,
        "seller_id": seller_id,
        "package_id": package_id,
        "unit": unit,
        "quantity": quantity,
        "price": price,
        "audience": "distributor",
        **more,
    }


def transfer(
    kind: str, transfer_id: str, from_id: str, to_id: str, quantity: int, amount: str
) -> dict[str, Any]:
    """A ``TransferStamps`` or ``TransferPoints`` from a distributor, at the price given."""
    return {
        "type": kind,
        "actor": from_id,
        "transfer_id": transfer_id,
        "from_id": from_id,
        "to_id": to_id,
        "quantity": quantity,
        "amount": amount,
    }


class Network:
    """Who is in the demo's network, and the commands that set it up on the opening day."""

    def __init__(self, rng: random.Random, *, clients: int, days: int, today: date) -> None:
        self.rng = rng
        self.client_count = clients
        self.days = days
        self.today = today
        self.accounts: dict[str, Account] = {}
        self.sellers = [
            Seller("D-NORTE", MASTER, "Timbres del Norte SA de CV", 0.3),
            Seller("D-CENTRO", MASTER, "Facturación Centro SA de CV", 0.25, multinivel=True),
            Seller("D-SUR", MASTER, "Soluciones Fiscales del Sur SA de CV", 0.2),
            Seller("D-CENTRO-QRO", "D-CENTRO", "Contadores de Querétaro SC", 0.15),
            Seller("D-CENTRO-PUE", "D-CENTRO", "Servicios Digitales Puebla SA de CV", 0.1),
        ]

    def seller(self, distributor_id: str) -> Seller:
        """The seller with this id."""
        return next(s for s in self.sellers if s.distributor_id == distributor_id)

    def children(self, parent_id: str) -> list[Seller]:
        """The sellers registered under ``parent_id``, in the order they were."""
        return [s for s in self.sellers if s.parent_id == parent_id]

    def distributor_of(self, client_id: str) -> str:
        """The distributor that registered ``client_id``."""
        return next(s.distributor_id for s in self.sellers if client_id in s.clients)

    @property
    def expires_on(self) -> str:
        """When the distributors' contracts and licences run out: a year from today."""
        return (self.today + timedelta(days=365)).isoformat()

    def opening(self) -> list[dict[str, Any]]:
        """Master account, catalogue, distributors, subscriptions, sub-distributors."""
        platform = self.children(MASTER)
        commands: list[dict[str, Any]] = [
            {
                "type": "OpenMasterAccount",
                "master_id": MASTER,
                "name": "Plataforma de Timbrado SA de CV",
                "rfc": company_rfc(self.rng, "Plataforma de Timbrado"),
            },
            define_package(MASTER, "TIM-1000", "stamps", 1_000, "450.00"),
            define_package(MASTER, "TIM-10000", "stamps", 10_000, "4000.00"),
            define_package(MASTER, "TIM-50000", "stamps", 50_000, "17500.00"),
            define_package(MASTER, "PTS-3000", "points", 3_000, "2850.00"),
            *seed_subscription_commands(MASTER),
        ]
        for seller in platform:
            commands += self.register_distributor(seller)
        commands.append(
            {
                "type": "RegisterDistributor",
                "actor": MASTER,
                "distributor_id": "D-OESTE",
                "parent_id": MASTER,
                "profile": company_profile(self.rng, "Timbrado de Occidente SA de CV", "occidente"),
            }
        )
        commands += [
            buy_package(seller.distributor_id, MASTER, package_id, count)
            for package_id, count in (("TIM-50000", 2), ("PTS-3000", 10))
            for seller in platform
        ]
        commands += [
            {
                "type": "ContractSubscription",
                "actor": distributor_id,
                "distributor_id": distributor_id,
                "product": product,
            }
            for distributor_id, product in SUBSCRIPTIONS
        ]
        commands.append(define_package("D-CENTRO", "MAYOREO-5000", "stamps", 5_000, "2400.00"))
        for seller in self.children("D-CENTRO"):
            commands += self.register_distributor(seller)
        commands += [
            buy_package("D-CENTRO-QRO", "D-CENTRO", "MAYOREO-5000", 4),
            transfer(
                "TransferStamps", "T-CENTRO-PUE-1", "D-CENTRO", "D-CENTRO-PUE", 15_000, "7200.00"
            ),
            *[
                transfer("TransferPoints", f"TP-{sub}-1", "D-CENTRO", sub, 9_000, "8550.00")
                for sub in ("D-CENTRO-QRO", "D-CENTRO-PUE")
            ],
        ]
        return commands

    def register_distributor(self, seller: Seller) -> list[dict[str, Any]]:
        """``seller`` registered, validated and activated by its parent until ``expires_on``."""
        domain = ascii_letters(seller.name.split()[1]).lower() or "distribuidor"
        return [
            {
                "type": "RegisterDistributor",
                "actor": seller.parent_id,
                "distributor_id": seller.distributor_id,
                "parent_id": seller.parent_id,
                "profile": company_profile(self.rng, seller.name, domain),
            },
            {
                "type": "ValidateDistributor",
                "distributor_id": seller.distributor_id,
                "actor": seller.parent_id,
            },
            {
                "type": "ActivateDistributor",
                "distributor_id": seller.distributor_id,
                "actor": seller.parent_id,
                "expires_on": self.expires_on,
            },
        ]

    def _rate(self) -> float:
        """Stamps a day: most accounts a few, a third up to ten, a few dozens."""
        roll = self.rng.random()
        if roll < 0.6:
            return self.rng.uniform(0.2, 2.0)
        if roll < 0.93:
            return self.rng.uniform(2.0, 10.0)
        return self.rng.uniform(10.0, 40.0)

    def clients(self) -> list[dict[str, Any]]:
        """Clients spread over the active distributors, each with its first CTI; some of them
        start consuming later."""
        rng = self.rng
        weights = [s.weight for s in self.sellers]
        commands: list[dict[str, Any]] = []
        for n in range(1, self.client_count + 1):
            seller = rng.choices(self.sellers, weights)[0]
            client_id = f"CL-{n:05d}"
            commands.append(
                {
                    "type": "RegisterClient",
                    "actor": seller.distributor_id,
                    "client_id": client_id,
                    "distributor_id": seller.distributor_id,
                    "nic": f"{seller.distributor_id[2:5]}{n:05d}",
                    "profile": client_profile(rng),
                }
            )
            seller.clients.append(client_id)
            starts = 0 if rng.random() < 0.75 else rng.randrange(self.days // 3, self.days - 2)
            cti_id = f"{client_id}-cti"
            self.accounts[cti_id] = Account(
                cti_id, client_id, seller.distributor_id, self._rate(), starts
            )
        return commands

    def accounts_and_tags(self) -> list[dict[str, Any]]:
        """A second CTI for some clients, an unlimited one (paid in points) for a few; tags."""
        rng = self.rng
        commands: list[dict[str, Any]] = []
        for seller in self.sellers:
            distributor_id = seller.distributor_id
            for client_id in seller.clients:
                roll = rng.random()
                if roll < 0.1:
                    cti_id = f"{client_id}-cti2"
                    commands.append(self._open_account(distributor_id, client_id, cti_id))
                    self.accounts[cti_id] = Account(
                        cti_id, client_id, distributor_id, self._rate(), rng.randrange(20)
                    )
                elif roll < 0.13:
                    cti_id = f"{client_id}-ilim"
                    commands += [
                        transfer(
                            "TransferPoints",
                            f"TP-{client_id}",
                            distributor_id,
                            client_id,
                            2_000,
                            "1900.00",
                        ),
                        self._open_account(distributor_id, client_id, cti_id, kind="unlimited"),
                    ]
                    self.accounts[cti_id] = Account(
                        cti_id,
                        client_id,
                        distributor_id,
                        rng.uniform(20.0, 60.0),
                        0,
                        unlimited=True,
                    )
                for tag, share in _TAGS:
                    if rng.random() < share:
                        value = rng.choice(_COLOURS) if tag == "colour" else True
                        commands.append(
                            {
                                "type": "TagClient",
                                "actor": distributor_id,
                                "client_id": client_id,
                                tag: value,
                            }
                        )
        return commands

    @staticmethod
    def _open_account(
        distributor_id: str, client_id: str, cti_id: str, **kind: str
    ) -> dict[str, Any]:
        return {
            "type": "OpenStampingAccount",
            "actor": distributor_id,
            "cti_id": cti_id,
            "client_id": client_id,
            **kind,
            "password": PASSWORD,
        }

    def initial_stamps(self) -> list[dict[str, Any]]:
        """One mass transfer per distributor gives every standard CTI its first stamps; a few
        CTIs get an automatic top-up."""
        commands: list[dict[str, Any]] = []
        for seller in self.sellers:
            lines = []
            for account in self.accounts.values():
                if account.distributor_id != seller.distributor_id or account.unlimited:
                    continue
                quantity = max(100, int(round(account.rate * 20, -2)))
                account.balance = quantity
                lines.append(
                    {
                        "to_id": account.cti_id,
                        "quantity": quantity,
                        "amount": f"{quantity * 0.55:.2f}",
                    }
                )
            if lines:
                commands.append(
                    {
                        "type": "MassTransfer",
                        "actor": seller.distributor_id,
                        "batch_id": f"ALTA-{seller.distributor_id}",
                        "from_id": seller.distributor_id,
                        "lines": lines,
                    }
                )
        chosen = self.rng.sample(sorted(self.accounts), k=max(1, len(self.accounts) // 20))
        commands.extend(
            {
                "type": "ConfigureAutoTopUp",
                "actor": self.accounts[account].distributor_id,
                "cti_id": account,
                "minimum": 50,
                "credit": 500,
                "amount": "275.00",
            }
            for account in chosen
            if not self.accounts[account].unlimited
        )
        return commands

    def lifecycle(self) -> list[dict[str, Any]]:
        """Licences, a client turned distributor, a distributor closed (none without clients).

        D-NORTE generates two licences for a client under its MKLs (Dóminus costs points,
        NomiCloud nothing); D-CENTRO turns one of its clients into a sub-distributor; the
        platform registers D-BAJA with a client, then suspends and cancels it (``purge_due``
        purges it at the end, 30 days or more later).
        """
        north, centre = self.seller(LICENSED_BY), self.seller(CONVERTED_BY)
        if not north.clients or not centre.clients:
            return []
        licensed, converted = north.clients[0], centre.clients[-1]
        closing = Seller(CLOSING, MASTER, "Timbres que Cierran SA de CV", 0.0)
        profile = client_profile(self.rng)
        return [
            *[
                {
                    "type": "GenerateLicence",
                    "actor": LICENSED_BY,
                    "client_id": licensed,
                    "product": product,
                    "licence_id": f"LIC-{licensed}-{n}",
                }
                for n, product in enumerate(("Dóminus", "NomiCloud"), start=1)
            ],
            {
                "type": "ConvertClientToDistributor",
                "actor": CONVERTED_BY,
                "client_id": converted,
                "distributor_id": CONVERTED_DISTRIBUTOR,
            },
            *self.register_distributor(closing),
            {
                "type": "RegisterClient",
                "actor": CLOSING,
                "client_id": CLOSING_CLIENT,
                "distributor_id": CLOSING,
                "nic": "BAJ00001",
                "profile": profile,
            },
            {"type": "SuspendDistributor", "distributor_id": CLOSING, "actor": MASTER},
            {"type": "CancelDistributor", "distributor_id": CLOSING, "actor": MASTER},
        ]
