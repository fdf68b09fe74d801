"""``ledger demo``: a realistic reseller network, built in seconds, and its views printed.

A platform (master account) with a catalogue; three distributors, one of them (with Multinivel)
with two sub-distributors, and one still waiting for validation; a few hundred clients with
their CTIs (some with a second account, a few unlimited); purchases, transfers and mass
transfers; then ``days`` days of consumption up to yesterday with daily patterns (busy weekdays,
quiet Sundays, a month-end rush, accounts that started recently), driven by a ``ManualClock``;
top-ups as accounts run low, some automatic; invoices for the first month's sales.

Everything goes through ``Ledger.execute_many`` in daily batches, as a real integration would.
The sellers invoice what they sold in the first weeks; later sales stay unbilled.

The views are printed with ``rich`` (a table per view, a bar per day for the last 14 days of one
CTI), each abbreviation explained where it first appears, and three ``ledger`` commands to try
next on the same database. Off a terminal (a pipe, CI) the same text comes without colours, with
a table row per line.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from stdnum.mx import rfc as stdnum_rfc

from adapters.cli.common import ProgressBar, output_console
from ledger.api import Ledger
from ledger.clock import MEXICO_CITY, ManualClock, local_date
from ledger.errors import Rejected
from ledger.first_steps import SEED_SUBSCRIPTIONS, seed_subscription_commands
from ledger.outcome import Outcome
from ledger.projections.billing import SaleRow
from ledger.projections.consumption import ConsumptionRow
from ledger.rfc import validate_rfc

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

_FIRST_NAMES = (
    "José", "María", "Juan", "Guadalupe", "Luis", "Ana", "Carlos", "Verónica", "Jorge", "Rosa",
    "Miguel", "Laura", "Alejandro", "Patricia", "Fernando", "Claudia", "Ricardo", "Adriana",
    "Héctor", "Gabriela", "Raúl", "Mónica", "Sergio", "Leticia", "Arturo", "Silvia", "Eduardo",
    "Norma", "Roberto", "Alejandra", "Víctor", "Araceli", "Óscar", "Elena", "Javier", "Sofía",
)  # fmt: skip
_SURNAMES = (
    "Hernández", "García", "Martínez", "López", "González", "Pérez", "Rodríguez", "Sánchez",
    "Ramírez", "Cruz", "Flores", "Gómez", "Morales", "Vázquez", "Reyes", "Jiménez", "Torres",
    "Díaz", "Gutiérrez", "Ruiz", "Mendoza", "Aguilar", "Ortiz", "Moreno", "Castillo", "Romero",
    "Álvarez", "Méndez", "Chávez", "Rivera", "Juárez", "Ramos", "Domínguez", "Herrera", "Medina",
)  # fmt: skip
_TRADES = (
    "Abarrotes", "Ferretería", "Papelería", "Farmacia", "Refaccionaria", "Taller Mecánico",
    "Consultorio Dental", "Despacho Contable", "Tortillería", "Panadería", "Carnicería",
    "Estética", "Materiales para Construcción", "Transportes", "Distribuidora de Alimentos",
    "Agencia de Viajes", "Muebles", "Cafetería", "Lavandería", "Imprenta", "Óptica",
)  # fmt: skip
_PLACES = (
    "del Centro", "La Esperanza", "San Miguel", "El Progreso", "Guadalupe", "del Norte",
    "Santa Fe", "Las Palmas", "La Joya", "Juárez", "Reforma", "del Valle", "Hidalgo", "Morelos",
)  # fmt: skip
_COLOURS = ("rojo", "verde", "azul", "amarillo", "morado")


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum())


def _with_check_digit(stem: str) -> str:
    return stem + str(stdnum_rfc.calc_check_digit(stem))


def person_rfc(rng: random.Random, first: str, paternal: str, maternal: str) -> str:
    """A valid persona física RFC (name letters, birth date, homoclave, check digit)."""
    letters = (_ascii(paternal)[:2] + _ascii(maternal)[:1] + _ascii(first)[:1]).upper()
    for _ in range(50):
        born = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 50))
        homoclave = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ123456789") for _ in range(2))
        candidate = _with_check_digit(f"{letters}{born:%y%m%d}{homoclave}")
        try:
            if not validate_rfc(candidate).warnings:
                return candidate
        except Rejected:
            letters = letters[:3] + "X"  # a forbidden word: the SAT replaces the last letter
    raise AssertionError("no valid RFC generated")


def company_rfc(rng: random.Random, name: str) -> str:
    """A valid persona moral RFC."""
    words = [w for w in _ascii_words(name) if len(w) > 2] or ["XXX"]
    letters = "".join(w[0] for w in words)[:3].upper().ljust(3, "X")
    for _ in range(50):
        founded = date(1980, 1, 1) + timedelta(days=rng.randrange(365 * 40))
        homoclave = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ123456789") for _ in range(2))
        candidate = _with_check_digit(f"{letters}{founded:%y%m%d}{homoclave}")
        try:
            if not validate_rfc(candidate).warnings:
                return candidate
        except Rejected:
            letters = letters[:2] + "X"
    raise AssertionError("no valid RFC generated")


def _ascii_words(text: str) -> list[str]:
    return [_ascii(word) for word in text.split()]


def _phone(rng: random.Random) -> str:
    area = rng.choice(("55", "33", "81", "222", "442", "999"))
    rest = "".join(rng.choice("0123456789") for _ in range(10 - len(area)))
    return f"{area} {rest[:4]} {rest[4:]}"


@dataclass
class _Account:
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
class _Seller:
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


@dataclass
class DemoReport:
    """What the demo did: counts and the ids worth showing."""

    commands: int = 0
    rejected: int = 0
    events: int = 0
    seconds: float = 0.0
    first_rejections: list[str] = field(default_factory=list)


class DemoBuilder:
    """Builds the network and its history on an open ledger driven by a ``ManualClock``."""

    def __init__(
        self, lg: Ledger, clock: ManualClock, *, clients: int, days: int, seed: int, today: date
    ) -> None:
        self.lg = lg
        self.clock = clock
        self.rng = random.Random(seed)  # noqa: S311  (a reproducible demo, not secrets)
        self.client_count = clients
        self.days = days
        self.today = today
        self.first_day = today - timedelta(days=days)
        self.opening_day = opening_day(today, days)
        self.report = DemoReport()
        self.accounts: dict[str, _Account] = {}
        self.sales: dict[str, list[tuple[date, str]]] = {}
        self.sellers = [
            _Seller("D-NORTE", MASTER, "Timbres del Norte SA de CV", 0.3),
            _Seller("D-CENTRO", MASTER, "Facturación Centro SA de CV", 0.25, multinivel=True),
            _Seller("D-SUR", MASTER, "Soluciones Fiscales del Sur SA de CV", 0.2),
            _Seller("D-CENTRO-QRO", "D-CENTRO", "Contadores de Querétaro SC", 0.15),
            _Seller("D-CENTRO-PUE", "D-CENTRO", "Servicios Digitales Puebla SA de CV", 0.1),
        ]

    # Plumbing -------------------------------------------------------------------------------

    def _at(self, day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, clock_time(hour, minute), tzinfo=MEXICO_CITY)

    def _run(self, commands: Sequence[dict[str, Any]]) -> list[Outcome | None]:
        """Runs a batch; a rejection is counted (a demo should have none) and kept as None."""
        results = self.lg.execute_many(commands)
        self.report.commands += len(commands)
        outcomes: list[Outcome | None] = []
        for command, result in zip(commands, results, strict=True):
            if isinstance(result, Rejected):
                self.report.rejected += 1
                if len(self.report.first_rejections) < 5:
                    self.report.first_rejections.append(f"{command['type']}: {result}")
                outcomes.append(None)
            else:
                sale_ids = () if command["type"] == "RegisterInvoice" else result.sale_ids
                if sale_ids:
                    sales = self.sales.setdefault(self._seller_of(command), [])
                    sales.extend((self.clock().date(), sale_id) for sale_id in sale_ids)
                outcomes.append(result)
        return outcomes

    def _seller_of(self, command: dict[str, Any]) -> str:
        """Who sold what a command's outcome lists in ``sale_ids`` (the seller invoices it)."""
        kind = command["type"]
        if kind == "ContractSubscription":  # the network's catalogue: the master sells it
            return MASTER
        if kind == "ConsumeStamp":  # an automatic top-up, sold by the CTI's distributor
            return self.accounts[command["cti_id"]].distributor_id
        if kind == "ClientBuyPackage":  # a panel purchase, sold by the client's distributor
            return next(s.distributor_id for s in self.sellers if command["client_id"] in s.clients)
        seller: str = command.get("from_id") or command.get("seller_id") or MASTER
        return seller

    # Network --------------------------------------------------------------------------------

    def _company_profile(self, name: str, email_domain: str) -> dict[str, Any]:
        return {
            "name": name,
            "rfc": company_rfc(self.rng, name),
            "email": f"contacto@{email_domain}.mx",
            "postal_code": f"{self.rng.randrange(1000, 99999):05d}",
            "phone": _phone(self.rng),
        }

    def build_network(self) -> None:
        """Master account, catalogue, distributors, subscriptions, sub-distributors."""
        self.clock.set(self._at(self.opening_day, 9))
        expires = (self.today + timedelta(days=365)).isoformat()
        commands: list[dict[str, Any]] = [
            {
                "type": "OpenMasterAccount",
                "master_id": MASTER,
                "name": "Plataforma de Timbrado SA de CV",
                "rfc": company_rfc(self.rng, "Plataforma de Timbrado"),
            },
            *[
                {
                    "type": "DefinePackage",
                    "actor": MASTER,
                    "seller_id": MASTER,
                    "package_id": package_id,
                    "unit": unit,
                    "quantity": quantity,
                    "price": price,
                    "audience": "distributor",
                }
                for package_id, unit, quantity, price in (
                    ("TIM-1000", "stamps", 1_000, "450.00"),
                    ("TIM-10000", "stamps", 10_000, "4000.00"),
                    ("TIM-50000", "stamps", 50_000, "17500.00"),
                    ("PTS-3000", "points", 3_000, "2850.00"),
                )
            ],
            *seed_subscription_commands(MASTER),
        ]
        for seller in self.sellers:
            if seller.parent_id != MASTER:
                continue
            commands += self._register_distributor(seller, expires)
        commands.append(
            {
                "type": "RegisterDistributor",
                "actor": MASTER,
                "distributor_id": "D-OESTE",
                "parent_id": MASTER,
                "profile": self._company_profile("Timbrado de Occidente SA de CV", "occidente"),
            }
        )
        commands += [
            {
                "type": "BuyPackage",
                "actor": seller.distributor_id,
                "buyer_id": seller.distributor_id,
                "seller_id": MASTER,
                "package_id": "TIM-50000",
                "count": 2,
            }
            for seller in self.sellers
            if seller.parent_id == MASTER
        ]
        commands += [
            {
                "type": "BuyPackage",
                "actor": seller.distributor_id,
                "buyer_id": seller.distributor_id,
                "seller_id": MASTER,
                "package_id": "PTS-3000",
                "count": 10,
            }
            for seller in self.sellers
            if seller.parent_id == MASTER
        ]
        commands += [
            *[
                {
                    "type": "ContractSubscription",
                    "actor": distributor_id,
                    "distributor_id": distributor_id,
                    "product": product,
                }
                for distributor_id, product in SUBSCRIPTIONS
            ],
            {
                "type": "DefinePackage",
                "actor": "D-CENTRO",
                "seller_id": "D-CENTRO",
                "package_id": "MAYOREO-5000",
                "unit": "stamps",
                "quantity": 5_000,
                "price": "2400.00",
                "audience": "distributor",
            },
        ]
        for seller in self.sellers:
            if seller.parent_id == "D-CENTRO":
                commands += self._register_distributor(seller, expires)
        commands += [
            {
                "type": "BuyPackage",
                "actor": "D-CENTRO-QRO",
                "buyer_id": "D-CENTRO-QRO",
                "seller_id": "D-CENTRO",
                "package_id": "MAYOREO-5000",
                "count": 4,
            },
            {
                "type": "TransferStamps",
                "actor": "D-CENTRO",
                "transfer_id": "T-CENTRO-PUE-1",
                "from_id": "D-CENTRO",
                "to_id": "D-CENTRO-PUE",
                "quantity": 15_000,
                "amount": "7200.00",
            },
            *[
                {
                    "type": "TransferPoints",
                    "actor": "D-CENTRO",
                    "transfer_id": f"TP-{sub}-1",
                    "from_id": "D-CENTRO",
                    "to_id": sub,
                    "quantity": 9_000,
                    "amount": "8550.00",
                }
                for sub in ("D-CENTRO-QRO", "D-CENTRO-PUE")
            ],
        ]
        self._run(commands)

    def _register_distributor(self, seller: _Seller, expires: str) -> list[dict[str, Any]]:
        domain = _ascii(seller.name.split()[1]).lower() or "distribuidor"
        return [
            {
                "type": "RegisterDistributor",
                "actor": seller.parent_id,
                "distributor_id": seller.distributor_id,
                "parent_id": seller.parent_id,
                "profile": self._company_profile(seller.name, domain),
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
                "expires_on": expires,
            },
        ]

    # Clients --------------------------------------------------------------------------------

    def _client_profile(self) -> tuple[dict[str, Any], str]:
        rng = self.rng
        first, paternal, maternal = (
            rng.choice(_FIRST_NAMES),
            rng.choice(_SURNAMES),
            rng.choice(_SURNAMES),
        )
        person = f"{first} {paternal} {maternal}"
        email_user = _ascii(first).lower() + "." + _ascii(paternal).lower()
        if rng.random() < 0.35:
            name = f"{rng.choice(_TRADES)} {rng.choice(_PLACES)} SA de CV"
            profile: dict[str, Any] = {
                "name": name,
                "rfc": company_rfc(rng, name),
                "regimen_fiscal": "601",
                "legal_rep": {"name": person, "phone": _phone(rng)},
            }
        else:
            profile = {
                "name": person,
                "rfc": person_rfc(rng, first, paternal, maternal),
                "regimen_fiscal": "612",
                "trade_name": f"{rng.choice(_TRADES)} {rng.choice(_PLACES)}",
            }
        profile.update(
            email=f"{email_user}{rng.randrange(100)}@example.com",
            postal_code=f"{rng.randrange(1000, 99999):05d}",
            uso_cfdi="G03",
            phone=_phone(rng),
        )
        if rng.random() < 0.3:
            profile["financial_contact"] = {
                "name": f"{rng.choice(_FIRST_NAMES)} {rng.choice(_SURNAMES)}",
                "email": f"pagos{rng.randrange(1000)}@example.com",
                "phone": _phone(rng),
            }
        return profile, person

    def _rate(self) -> float:
        roll = self.rng.random()
        if roll < 0.6:
            return self.rng.uniform(0.2, 2.0)
        if roll < 0.93:
            return self.rng.uniform(2.0, 10.0)
        return self.rng.uniform(10.0, 40.0)

    def register_clients(self) -> None:
        """Clients spread over the active distributors; a second CTI for some; unlimited few."""
        rng = self.rng
        weights = [s.weight for s in self.sellers]
        commands: list[dict[str, Any]] = []
        for n in range(1, self.client_count + 1):
            seller = rng.choices(self.sellers, weights)[0]
            client_id = f"CL-{n:05d}"
            profile, _ = self._client_profile()
            commands.append(
                {
                    "type": "RegisterClient",
                    "actor": seller.distributor_id,
                    "client_id": client_id,
                    "distributor_id": seller.distributor_id,
                    "nic": f"{seller.distributor_id[2:5]}{n:05d}",
                    "profile": profile,
                }
            )
            seller.clients.append(client_id)
            starts = 0 if rng.random() < 0.75 else rng.randrange(self.days // 3, self.days - 2)
            cti_id = f"{client_id}-cti"
            self.accounts[cti_id] = _Account(
                cti_id, client_id, seller.distributor_id, self._rate(), starts
            )
        self._run(commands)
        commands = []
        for seller in self.sellers:
            for client_id in seller.clients:
                roll = rng.random()
                if roll < 0.1:
                    cti_id = f"{client_id}-cti2"
                    commands.append(
                        {
                            "type": "OpenStampingAccount",
                            "actor": seller.distributor_id,
                            "cti_id": cti_id,
                            "client_id": client_id,
                            "password": PASSWORD,
                        }
                    )
                    self.accounts[cti_id] = _Account(
                        cti_id, client_id, seller.distributor_id, self._rate(), rng.randrange(20)
                    )
                elif roll < 0.13:
                    cti_id = f"{client_id}-ilim"
                    commands += [
                        {
                            "type": "TransferPoints",
                            "actor": seller.distributor_id,
                            "transfer_id": f"TP-{client_id}",
                            "from_id": seller.distributor_id,
                            "to_id": client_id,
                            "quantity": 2_000,
                            "amount": "1900.00",
                        },
                        {
                            "type": "OpenStampingAccount",
                            "actor": seller.distributor_id,
                            "cti_id": cti_id,
                            "client_id": client_id,
                            "kind": "unlimited",
                            "password": PASSWORD,
                        },
                    ]
                    self.accounts[cti_id] = _Account(
                        cti_id,
                        client_id,
                        seller.distributor_id,
                        rng.uniform(20.0, 60.0),
                        0,
                        unlimited=True,
                    )
                if rng.random() < 0.1:
                    commands.append(
                        {
                            "type": "TagClient",
                            "actor": seller.distributor_id,
                            "client_id": client_id,
                            "favourite": True,
                        }
                    )
                if rng.random() < 0.2:
                    commands.append(
                        {
                            "type": "TagClient",
                            "actor": seller.distributor_id,
                            "client_id": client_id,
                            "colour": rng.choice(_COLOURS),
                        }
                    )
                if rng.random() < 0.04:
                    commands.append(
                        {
                            "type": "TagClient",
                            "actor": seller.distributor_id,
                            "client_id": client_id,
                            "dropped": True,
                        }
                    )
        self._run(commands)

    def initial_stamps(self) -> None:
        """One mass transfer per distributor gives every standard CTI its first stamps."""
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
        self._run(commands)

    # History --------------------------------------------------------------------------------

    def _restock(self) -> None:
        """Distributors low on stamps buy from their parent (parents first, so they can sell)."""
        for parents_first in (True, False):
            commands: list[dict[str, Any]] = []
            for seller in self.sellers:
                if (seller.parent_id == MASTER) != parents_first:
                    continue
                # A parent keeps enough to serve its sub-distributors' purchases the same day.
                floor = 100_000 if seller.multinivel else (40_000 if parents_first else 20_000)
                if self.lg.balance(seller.distributor_id, "stamps") >= floor:
                    continue
                package, count = ("TIM-50000", 3) if parents_first else ("MAYOREO-5000", 4)
                commands.append(
                    {
                        "type": "BuyPackage",
                        "actor": seller.distributor_id,
                        "buyer_id": seller.distributor_id,
                        "seller_id": seller.parent_id,
                        "package_id": package,
                        "count": count,
                    }
                )
            if commands:
                self._run(commands)

    def _top_ups(self, day_number: int) -> list[dict[str, Any]]:
        commands = []
        for account in self.accounts.values():
            if account.unlimited or account.blocked:
                continue
            if account.balance < account.rate * 4 + 10:
                quantity = int(max(200, round(account.rate * 25, -2)))
                account.balance += quantity
                commands.append(
                    {
                        "type": "TransferStamps",
                        "actor": account.distributor_id,
                        "transfer_id": f"RECARGA-{account.cti_id}-{day_number}",
                        "from_id": account.distributor_id,
                        "to_id": account.cti_id,
                        "quantity": quantity,
                        "amount": f"{quantity * 0.55:.2f}",
                    }
                )
        return commands

    def _consumptions(self, day: date, day_number: int) -> list[dict[str, Any]]:
        rng = self.rng
        weekday = day.weekday()
        factor = (1.0, 1.05, 1.0, 1.1, 1.15, 0.45, 0.2)[weekday]
        if day.day >= 26:
            factor *= 1.4  # month-end invoicing rush
        commands = []
        for account in self.accounts.values():
            if account.blocked or day_number < account.starts_on_day:
                continue
            expected = account.rate * factor * rng.uniform(0.6, 1.4)
            count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
            if not account.unlimited:
                count = min(count, account.balance)
                account.balance -= count
            for _ in range(count):
                stamped = self._at(day, 8) + timedelta(seconds=rng.randrange(13 * 3600))
                commands.append(
                    {
                        "type": "ConsumeStamp",
                        "actor": MASTER,
                        "cti_id": account.cti_id,
                        "cfdi_uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        "issuer_rfc": "GODE561231GR8",
                        "stamped_at": stamped.isoformat(),
                    }
                )
        return commands

    def simulate(self, progress: Callable[[int, int], None] | None = None) -> None:
        """``days`` days of consumption, top-ups and a few events worth seeing.

        ``progress(done, total)`` is called after each day.
        """
        blocked_day = self.days // 2
        for day_number in range(self.days):
            day = self.first_day + timedelta(days=day_number)
            self.clock.set(self._at(day, 7))
            self._restock()
            morning = self._weekly_orders(day_number) + self._top_ups(day_number)
            if morning:
                self._run(morning)
            if day_number == blocked_day:
                self._block_some()
            if day_number == self.invoice_day:
                self._invoice_first_month()
            self.clock.set(self._at(day, 21))
            consumptions = self._consumptions(day, day_number)
            for outcome, command in zip(self._run(consumptions), consumptions, strict=True):
                if outcome is not None and outcome.balance_after is not None:
                    self.accounts[command["cti_id"]].balance = outcome.balance_after
            if progress is not None:
                progress(day_number + 1, self.days)

    def _block_some(self) -> None:
        candidates = [a for a in self.accounts.values() if not a.unlimited][:2]
        for account in candidates:
            account.blocked = True
        self._run(
            [
                {"type": "BlockStampingAccount", "actor": a.distributor_id, "cti_id": a.cti_id}
                for a in candidates
            ]
        )

    @property
    def invoice_day(self) -> int:
        """The day the sellers invoice what they sold before it: day 31, or half-way if sooner.

        What was sold from then on stays unbilled, so the billing views show both kinds.
        """
        return min(31, self.days // 2 + 1)

    def _weekly_orders(self, day_number: int) -> list[dict[str, Any]]:
        """Every seventh day each distributor of the platform orders a pack of 10,000 stamps."""
        if day_number % 7 != 6:
            return []
        return [
            {
                "type": "BuyPackage",
                "actor": seller.distributor_id,
                "buyer_id": seller.distributor_id,
                "seller_id": MASTER,
                "package_id": "TIM-10000",
                "count": 1,
            }
            for seller in self.sellers
            if seller.parent_id == MASTER
        ]

    def _invoice_first_month(self) -> None:
        commands = []
        cutoff = self.first_day + timedelta(days=self.invoice_day - 1)
        for seller_id in (MASTER, "D-CENTRO"):
            sale_ids = [
                sale_id for when, sale_id in self.sales.get(seller_id, []) if when < cutoff
            ][:500]
            if sale_ids:
                commands.append(
                    {
                        "type": "RegisterInvoice",
                        "actor": seller_id,
                        "seller_id": seller_id,
                        "invoice_ref": f"FAC-{seller_id}-0001",
                        "sale_ids": sale_ids,
                    }
                )
        self._run(commands)

    def codes_and_panel(self) -> None:
        """D-NORTE sells credit codes and lets its clients buy through their panel (PCC)."""
        seller = next(s for s in self.sellers if s.distributor_id == "D-NORTE")
        buyers = [c for c in seller.clients if f"{c}-cti" in self.accounts][:3]
        if len(buyers) < 2:
            return
        north = "D-NORTE"
        self._run(
            [
                {"type": "ChangeSettings", "seller_id": north, "bulk_stamp_price": "0.85",
                 "allow_pcc_stamp_purchase": True, "allow_pcc_point_purchase": True,
                 "actor": north},
                {"type": "DefinePackage", "seller_id": north, "package_id": "PANEL-100",
                 "unit": "stamps", "quantity": 100, "price": "95.00", "audience": "client",
                 "validity_days": 365, "actor": north},
                {"type": "DefinePackage", "seller_id": north, "package_id": "PANEL-PTS-500",
                 "unit": "points", "quantity": 500, "price": "500.00", "audience": "client",
                 "actor": north},
                {"type": "ClientBuyPackage", "client_id": buyers[0], "package_id": "PANEL-100",
                 "actor": buyers[0]},
                {"type": "ClientBuyPackage", "client_id": buyers[1],
                 "package_id": "PANEL-PTS-500", "actor": buyers[1]},
            ]
        )  # fmt: skip
        expires = (self.clock().date() + timedelta(days=90)).isoformat()
        issued = self._run(
            [
                {"type": "IssueCreditCode", "code_id": f"CODIGO-{n}", "distributor_id": north,
                 "unit": unit, "quantity": quantity, "expires_on": expires, "actor": north}
                for n, unit, quantity in (
                    (1, "stamps", 200), (2, "points", 1_000), (3, "stamps", 50), (4, "stamps", 500)
                )
            ]
        )  # fmt: skip
        if any(outcome is None or outcome.code is None for outcome in issued):
            return
        first, second, _third, _fourth = issued
        assert first is not None
        assert second is not None
        self._run(
            [
                {"type": "RedeemCreditCode", "code": first.code, "nip": first.nip,
                 "to_id": f"{buyers[2 % len(buyers)]}-cti", "actor": buyers[2 % len(buyers)]},
                {"type": "CancelCreditCode", "code_id": "CODIGO-4", "actor": north},
            ]
        )  # fmt: skip
        # Someone guesses the second code's NIP five times: the code locks for good and its
        # points go back to D-NORTE. These rejections are the point, so they are not counted.
        assert second.nip is not None
        wrong = f"{(int(second.nip) + 1) % 1_000_000:06d}"
        guesses = self.lg.execute_many(
            [
                {"type": "RedeemCreditCode", "code": second.code, "nip": wrong,
                 "to_id": buyers[0], "actor": buyers[0]}
            ]
            * 5
        )  # fmt: skip
        self.report.commands += len(guesses)

    def lifecycle(self) -> None:
        """On the opening day: licences, a client turned distributor, a distributor closed.

        D-NORTE generates two licences for a client under its MKLs (Dóminus costs points,
        NomiCloud nothing); D-CENTRO turns one of its clients into a sub-distributor; the
        platform registers D-BAJA with a client, then suspends and cancels it (``purge_due``
        purges it at the end, 30 days or more later).
        """
        north = next(s for s in self.sellers if s.distributor_id == LICENSED_BY)
        centre = next(s for s in self.sellers if s.distributor_id == CONVERTED_BY)
        if not north.clients or not centre.clients:
            return
        licensed, converted = north.clients[0], centre.clients[-1]
        expires = (self.today + timedelta(days=365)).isoformat()
        closing = _Seller(CLOSING, MASTER, "Timbres que Cierran SA de CV", 0.0)
        profile, _ = self._client_profile()
        self._run(
            [
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
                *self._register_distributor(closing, expires),
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
        )

    def purge_due(self) -> None:
        """What ``ledger purge-due`` does: every distributor cancelled 30 days ago is purged."""
        for result in self.lg.purge_due():
            self.report.commands += 1
            if isinstance(result, Rejected):
                self.report.rejected += 1
                self.report.first_rejections.append(f"PurgeDistributor: {result}")

    def finish(self, now: datetime) -> None:
        """The clock back to the real present; a sub-distributor suspended for the views."""
        self.clock.set(now)
        self._run(
            [{"type": "SuspendDistributor", "distributor_id": "D-CENTRO-PUE", "actor": "D-CENTRO"}]
        )


# Printing -------------------------------------------------------------------------------------

CHART_DAYS = 14
"""Days in the consumption chart: the last complete ones, up to yesterday."""
CHART_BAR_WIDTH = 50
"""Characters of the chart's longest bar."""
NOTE_WIDTH = 100
"""Explanations wrap at this width (or the terminal's, if narrower)."""
UNBILLED_SHOWN = 10
"""Unbilled sales listed (all of them are counted and summed in the title)."""


def _text(value: Any) -> str:
    """A cell: ``-`` for nothing, thousands separators, local times to the minute."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.astimezone(MEXICO_CITY).strftime("%Y-%m-%d %H:%M")
    return str(value)


def _money(amount: str | Decimal) -> str:
    """``16240.00`` as ``16,240.00``."""
    return f"{Decimal(amount):,.2f}"


def _table(headers: Sequence[str], numeric: Sequence[str] = ()) -> Table:
    """A table with a rule under its header; the ``numeric`` columns right-aligned."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, justify="right" if header in numeric else "left", no_wrap=True)
    return table


def _section(console: Console, title: str, note: str | None = None) -> None:
    """A blank line, the title in bold and, below it, what the reader needs to read the table."""
    console.print()
    console.print(Text(title, style="bold"))
    if note is not None:
        console.print(Text(note, style="dim"), width=min(console.width, NOTE_WIDTH))


def _show(console: Console, table: Table) -> None:
    console.print(table if table.row_count else Text("(none)", style="dim"))


def print_introduction(console: Console) -> None:
    """What the network is and what a CTI is: the words every table below uses."""
    console.print(
        Text(
            f"{MASTER}, the master account, sells stamps (one is consumed per CFDI, the Mexican "
            "e-invoice) and points to its distributors, which resell them to sub-distributors "
            "and to their clients. A client invoices from a CTI (cuenta de timbrado): the "
            "client's stamping account, where its stamps are credited and consumed. Some clients "
            "have a second CTI; a few have an unlimited one, with no stamp balance to run out."
        ),
        width=min(console.width, NOTE_WIDTH),
    )


def _distributors(
    console: Console, lg: Ledger, parent_id: str, title: str, note: str | None = None
) -> None:
    table = _table(
        ("distributor", "name", "status", "expires", "stamps", "points", "was client"),
        ("stamps", "points"),
    )
    for d in lg.views.distributors(parent_id):
        table.add_row(*map(_text, (d.distributor_id, d.name, d.status, d.expires_on, d.stamps,
                                   d.points, d.converted_from)))  # fmt: skip
    _section(console, title, note)
    _show(console, table)


def print_subscriptions(console: Console, lg: Ledger) -> None:
    """The subscriptions the distributors contracted from the master account's catalogue."""
    views = lg.views
    prices = {product: price for product, _, price, _ in SEED_SUBSCRIPTIONS}
    table = _table(
        ("distributor", "product", "kind", "yearly price", "expires", "running"),
        ("yearly price",),
    )
    for d in views.distributors(MASTER):
        for sub in d.subscriptions:
            price = prices.get(sub.product)
            table.add_row(d.distributor_id, sub.product, sub.kind,
                          "-" if price is None else _money(price), _text(sub.expires_on),
                          _text(sub.active))  # fmt: skip
    _section(
        console,
        f"Subscriptions from {MASTER}'s catalogue",
        f"The catalogue lists {len(SEED_SUBSCRIPTIONS)} yearly subscriptions, priced before "
        "IVA (the 16 % value-added tax). A distributor pays pro rata up to its own expiry, plus "
        "IVA. Multinivel lets it have sub-distributors; an MKL (a reseller's licence of one "
        "software product) lets it generate licences of that product for its clients.",
    )
    _show(console, table)


def print_licences_and_purge(console: Console, lg: Ledger) -> None:
    """A client's licences under its distributor's MKLs; the purged distributor's clients."""
    views = lg.views
    first = views.clients(LICENSED_BY, sort="nic", limit=1)
    if first:
        client = first[0]
        table = _table(("licence", "product", "expires", "points", "paid by"), ("points",))
        for lic in views.licences(client.client_id):
            table.add_row(lic.licence_id, lic.product, _text(lic.expires_on), _text(lic.points),
                          _text(lic.paid_by or None))  # fmt: skip
        _section(
            console,
            f"Licences of {client.client_id} ({client.name}), under {LICENSED_BY}'s MKLs",
            "A licence lasts a year. Its price in points comes from the client's wallet when it "
            f"covers it, else from {LICENSED_BY}'s points; NomiCloud's costs nothing.",
        )
        _show(console, table)

    table = _table(("client", "NIC", "name", "RFC", "e-mail"))
    for c in views.clients(CLOSING):
        table.add_row(*map(_text, (c.client_id, c.nic, c.name or None, c.rfc or None,
                                   c.email or None)))  # fmt: skip
    _section(
        console,
        f"Clients of {CLOSING}, after its purge",
        f"{CLOSING} was cancelled more than {PURGE_AFTER_DAYS} days ago, then purged "
        "(Ledger.purge_due, `ledger purge-due`): its and its clients' personal data left the "
        "views; ids and NIC stay, and so do the events, so every balance still adds up.",
    )
    _show(console, table)


def _chart_days(usage: ConsumptionRow, today: date) -> list[tuple[date, int]]:
    """The ``CHART_DAYS`` complete days up to yesterday, a day without consumption as 0."""
    counts = {d.local_date: d.count for d in usage.daily}
    first = today - timedelta(days=CHART_DAYS)
    days = [first + timedelta(days=n) for n in range(CHART_DAYS)]
    return [(day, counts.get(day, 0)) for day in days]


def print_consumption_chart(console: Console, lg: Ledger, cti_id: str) -> list[tuple[date, int]]:
    """A bar per day for the last ``CHART_DAYS`` complete days of one CTI; returns the days."""
    usage = lg.views.consumption(cti_id, days=CHART_DAYS + 1)
    days = _chart_days(usage, local_date(lg.engine.clock()))
    peak = max((count for _, count in days), default=0)
    block = "#" if console.options.ascii_only else "\u2588"
    table = _table(("day", "", "stamps", ""), ("stamps",))
    for day, count in days:
        width = round(count / peak * CHART_BAR_WIDTH) if peak else 0
        table.add_row(
            day.isoformat(), f"{day:%a}", _text(count), Text(block * width, style="green")
        )
    cpd = "-" if usage.cpd is None else f"{usage.cpd:.2f}"
    left = "-" if usage.days_remaining is None else str(usage.days_remaining)
    _section(
        console,
        f"Consumption of {cti_id}, the last {CHART_DAYS} days up to yesterday "
        f"(CPD {cpd}, days left {left})",
        "Busy weekdays, quiet weekends, and more at the end of a month, when everyone invoices.",
    )
    _show(console, table)
    return days


def print_billing(console: Console, lg: Ledger) -> None:
    """Invoices registered, and the sales of the platform still waiting for one."""
    views = lg.views
    invoices = views.invoices(MASTER) + views.invoices("D-CENTRO")
    table = _table(("invoice", "seller", "date", "sales", "amount"), ("sales", "amount"))
    for invoice in invoices:
        total = sum((Decimal(s.amount) for s in invoice.sales), Decimal(0))
        table.add_row(invoice.invoice_ref, invoice.seller_id, _text(invoice.at),
                      _text(len(invoice.sales)), _money(total))  # fmt: skip
    _section(
        console,
        "Invoices registered",
        "A sale is billable until its seller registers an invoice for it (RegisterInvoice). "
        f"{MASTER} and D-CENTRO invoiced what they had sold in the first weeks; the rest waits.",
    )
    _show(console, table)
    unbilled: list[SaleRow] = []
    while len(page := views.unbilled_sales(MASTER, limit=500, offset=len(unbilled))) > 0:
        unbilled += page
        if len(page) < 500:
            break
    total = sum((Decimal(s.amount) for s in unbilled), Decimal(0))
    table = _table(
        ("sale", "date", "buyer", "unit", "quantity", "amount", "reference"),
        ("quantity", "amount"),
    )
    for sale in unbilled[:UNBILLED_SHOWN]:
        table.add_row(sale.sale_id[:14], _text(sale.at), sale.buyer_id, sale.unit,
                      _text(sale.quantity), _money(sale.amount), sale.reference)  # fmt: skip
    shown = min(len(unbilled), UNBILLED_SHOWN)
    _section(
        console,
        f"Sales of {MASTER} not invoiced yet: {len(unbilled):,}, {_money(total)} "
        f"(the oldest {shown} shown)",
    )
    _show(console, table)


def print_views(lg: Ledger, console: Console) -> list[tuple[date, int]]:
    """The main views of the demo network; returns the days of the consumption chart."""
    views = lg.views
    print_introduction(console)
    _distributors(console, lg, MASTER, f"Distributors of {MASTER}")
    _distributors(
        console,
        lg,
        CONVERTED_BY,
        f"Sub-distributors of {CONVERTED_BY}",
        f"{CONVERTED_DISTRIBUTOR} was a client of {CONVERTED_BY}: ConvertClientToDistributor "
        "opened it, unvalidated, with the client's profile; the client keeps its CTIs and "
        "history.",
    )
    print_subscriptions(console, lg)

    table = _table(
        ("CTI", "NIC", "client", "kind", "active", "balance", "used", "CPD", "days left"),
        ("balance", "used", "CPD", "days left"),
    )
    for c in views.stamping_accounts("D-NORTE", sort="balance_desc", limit=12):
        table.add_row(*map(_text, (c.cti_id, c.nic, c.name[:34], c.kind, c.active, c.balance,
                                   c.used, c.cpd, c.days_remaining)))  # fmt: skip
    _section(
        console,
        "Stamping accounts of D-NORTE, most stamps first",
        "NIC: the client's number in its distributor's own records (número de identificación "
        "del cliente). CPD (consumo promedio diario): the daily consumption average, the stamps "
        "consumed in the last 30 complete days / 30 (fewer days, at least 7, for a newer "
        "account). days left (días restantes): how long the balance lasts at that pace, "
        "balance / CPD rounded down; '-' for an unlimited account or one without a CPD yet.",
    )
    _show(console, table)

    table = _table(
        ("CTI", "client", "balance", "last purchase", "last emission", "CPD", "days left"),
        ("balance", "CPD", "days left"),
    )
    for c in views.stamping_accounts("D-SUR", sort="last_emission_desc", status="active", limit=8):
        table.add_row(*map(_text, (c.cti_id, c.name[:34], c.balance, c.last_purchase_at,
                                   c.last_emission_at, c.cpd, c.days_remaining)))  # fmt: skip
    _section(console, "Stamping accounts of D-SUR, latest emission first")
    _show(console, table)

    table = _table(
        ("client", "NIC", "name", "RFC", "colour", "stamps", "points"), ("stamps", "points")
    )
    for f in views.clients("D-CENTRO", tag="favourite", sort="balance_desc", limit=10):
        table.add_row(*map(_text, (f.client_id, f.nic, f.name[:34], f.rfc, f.colour, f.stamps,
                                   f.points)))  # fmt: skip
    _section(console, "Favourite clients of D-CENTRO")
    _show(console, table)

    days: list[tuple[date, int]] = []
    busiest = views.stamping_accounts("D-NORTE", sort="balance_desc", limit=1)
    if busiest:
        days = print_consumption_chart(console, lg, busiest[0].cti_id)

    print_billing(console, lg)

    table = _table(
        ("code id", "unit", "quantity", "amount", "state", "redeemed by", "expires"),
        ("quantity", "amount"),
    )
    for code in views.credit_codes("D-NORTE"):
        table.add_row(code.code_id, code.unit, _text(code.quantity), _money(code.amount),
                      code.state, _text(code.redeemed_by), _text(code.expires_on))  # fmt: skip
    _section(
        console,
        "Credit codes of D-NORTE",
        "A code and its NIP (a 6-digit PIN) are shown once, when issued; five wrong NIPs lock "
        "a code for good and its credits go back to the distributor.",
    )
    _show(console, table)

    table = _table(("sale", "date", "buyer", "unit", "quantity", "amount"), ("quantity", "amount"))
    for sale in views.unbilled_sales("D-NORTE", limit=500):
        if sale.sale_id.startswith("PCC:"):
            table.add_row(sale.sale_id[:14], _text(sale.at), sale.buyer_id, sale.unit,
                          _text(sale.quantity), _money(sale.amount))  # fmt: skip
    _section(console, "Panel purchases from D-NORTE (clients buying through their own panel)")
    _show(console, table)

    print_licences_and_purge(console, lg)
    return days


def _program() -> str:
    """How to run ``ledger`` from the current folder: ``ledger`` if it is on the PATH."""
    candidates = [Path(sys.argv[0]), Path(sys.executable).with_name("ledger")]
    program = next((p for p in candidates if p.name == "ledger" and p.is_file()), None)
    if program is None:
        return f"{_relative(Path(sys.executable))} -m ledger"
    on_path = shutil.which("ledger")
    if on_path is not None and Path(on_path).resolve() == program.resolve():
        return "ledger"
    return _relative(program)


def _relative(path: Path) -> str:
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path.absolute())


def next_commands(lg: Ledger, url: str | None, chart: list[tuple[date, int]]) -> list[str]:
    """Three ``ledger`` commands worth trying on the demo's database, ready to paste."""
    program = _program()
    where = ""
    if url is not None or not os.environ.get("LEDGER_URL"):
        where = " --url " + shlex.quote(url or "sqlite:///ledger.db")
    commands = []
    busiest = lg.views.stamping_accounts("D-NORTE", sort="balance_desc", limit=1)
    if busiest and chart:
        then = datetime.combine(chart[0][0], clock_time(12), tzinfo=MEXICO_CITY)
        commands.append(f"{program} balance {busiest[0].cti_id} --at {then.isoformat()}{where}")
    panel = lg.views.unbilled_sales("D-NORTE", limit=500, unit="points")
    buyer = next((s.buyer_id for s in panel if s.sale_id.startswith("PCC:")), None)
    if buyer is not None:
        commands.append(f"{program} history {buyer} --unit points{where}")
    commands.append(f"{program} verify{where}")
    return commands


def print_next_commands(console: Console, commands: list[str], folder: Path) -> None:
    """The commands to try next, with what each shows."""
    what = {
        "balance": "a CTI's stamps at noon on the chart's first day, replayed from its events",
        "history": "where a client's points came from, with the running balance",
        "verify": "replays every event and checks the books: hash chain, zero sums, views",
    }
    _section(console, f"Try next (in {folder}):")
    for command in commands:
        subcommand = next(word for word in command.split() if word in what)
        console.print(Text(f"  # {what[subcommand]}", style="dim"), soft_wrap=True)
        console.print(Text(f"  {command}", style="cyan"), soft_wrap=True)


def run(url: str | None, *, clients: int, days: int, seed: int, out: TextIO) -> int:
    """Builds the demo on ``url`` and prints its views (only prints them if it is there already)."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.astimezone(MEXICO_CITY).date()
    console = output_console(out)
    clock = ManualClock(
        datetime.combine(opening_day(today, days), clock_time(8), tzinfo=MEXICO_CITY)
    )
    # The views catch up once at the end: one pass over the history beats one per batch.
    with Ledger.open(url, clock=clock, password_cost="fast", projections="off") as lg:  # noqa: S106  (a cost level)
        if lg.engine.current(MASTER) is not None:
            # Running the demo twice is the most natural thing to do: show what is there and
            # record nothing (the clock has moved, so a second network would not be the same).
            clock.set(now)
            console.print(
                f"demo: this database already holds the demo ({MASTER}); showing its views "
                "(use another --url for a new one)",
                soft_wrap=True,
            )
            lg.views.catch_up()
        else:
            builder = DemoBuilder(lg, clock, clients=clients, days=days, seed=seed, today=today)
            with ProgressBar("demo", unit="days") as bar:
                builder.build_network()
                builder.register_clients()
                builder.initial_stamps()
                builder.lifecycle()
                builder.simulate(progress=bar)
                builder.codes_and_panel()
                builder.finish(max(now, clock()))
            with ProgressBar("views", unit="events") as bar:
                lg.views.catch_up(progress=lambda p: bar(p.done, p.total))
            builder.purge_due()  # it reads the views: after them
            report = builder.report
            report.seconds = time.perf_counter() - started
            report.events = lg.views.position()
            console.print(
                f"demo: {report.commands:,} commands, {report.events:,} events, "
                f"{len(builder.accounts):,} stamping accounts, {clients:,} clients, "
                f"{days} days, in {report.seconds:.1f} s on {lg.url or 'sqlite:///ledger.db'}",
                soft_wrap=True,
            )
            if report.rejected:
                console.print(f"demo: {report.rejected} commands were rejected, e.g.:")
                for rejection in report.first_rejections:
                    console.print(f"  {rejection}", soft_wrap=True)
        console.print()
        chart = print_views(lg, console)
        if not (url or os.environ.get("LEDGER_URL") or "").startswith("memory:"):
            print_next_commands(console, next_commands(lg, url, chart), Path.cwd())
    return 0
