"""What the benchmark scripts share: a fresh PostgreSQL database, the network they set up.

The scripts import it as ``benchmarks.common`` (each puts the repository first on the path).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ledger.api import Ledger

PG_BASE_DEFAULT = "postgresql://postgres@127.0.0.1:5432"
"""The PostgreSQL server the benchmarks make their databases on, unless told another."""
ISSUER_RFC = "GODE561231GR8"
"""The RFC the benchmarks' CFDIs are issued by (and their clients' RFC)."""
SETUP_PACKAGE_STAMPS = 1000
"""Stamps in the package ``P`` the distributor buys its inventory in."""


def distributor_profile() -> dict[str, Any]:
    """The distributor D's profile."""
    return {
        "name": "Distribuidora",
        "rfc": "MAB9307148T4",
        "email": "d@example.com",
        "postal_code": "06600",
    }


def client_profile(i: int) -> dict[str, Any]:
    """The profile of the ``i``-th client."""
    return {
        "name": f"Cliente {i}",
        "rfc": ISSUER_RFC,
        "email": f"c{i}@example.com",
        "postal_code": "06600",
        "regimen_fiscal": "612",
        "uso_cfdi": "G03",
    }


def build_network(lg: Ledger, ctis: int, stamps_each: int, prefix: str = "C") -> list[str]:
    """A master account, one distributor and ``ctis`` clients whose CTIs hold ``stamps_each``."""
    opening: list[dict[str, Any]] = [
        {
            "type": "OpenMasterAccount",
            "master_id": "M",
            "name": "Plataforma",
            "rfc": "SAT970701NN3",
            "actor": "M",
        },
        {
            "type": "DefinePackage",
            "actor": "M",
            "seller_id": "M",
            "package_id": "P",
            "unit": "stamps",
            "quantity": SETUP_PACKAGE_STAMPS,
            "price": "500.00",
            "audience": "distributor",
        },
        {
            "type": "RegisterDistributor",
            "actor": "M",
            "distributor_id": "D",
            "parent_id": "M",
            "profile": distributor_profile(),
        },
        {"type": "ValidateDistributor", "distributor_id": "D", "actor": "M"},
        {
            "type": "ActivateDistributor",
            "distributor_id": "D",
            "actor": "M",
            "expires_on": (datetime.now(tz=UTC).date() + timedelta(days=365)).isoformat(),
        },
    ]
    return add_clients(lg, ctis, stamps_each, prefix, opening)


def add_clients(
    lg: Ledger,
    ctis: int,
    stamps_each: int,
    prefix: str,
    opening: Sequence[dict[str, Any]] = (),
) -> list[str]:
    """After ``opening`` (the network's first commands, if any), the distributor ``D`` buys the
    stamps and registers ``ctis`` clients ``{prefix}{i}`` whose CTIs get ``stamps_each``; one
    ``execute_many``. The CTI ids."""
    packages = -(-ctis * stamps_each // SETUP_PACKAGE_STAMPS)
    commands = list(opening)
    while packages > 0:
        count = min(packages, 10_000)
        commands.append(
            {
                "type": "BuyPackage",
                "actor": "D",
                "buyer_id": "D",
                "seller_id": "M",
                "package_id": "P",
                "count": count,
            }
        )
        packages -= count
    ids = [f"{prefix}{i}" for i in range(ctis)]
    commands += [
        {
            "type": "RegisterClient",
            "actor": "D",
            "client_id": c,
            "distributor_id": "D",
            "profile": client_profile(i),
        }
        for i, c in enumerate(ids)
    ]
    commands += [
        {
            "type": "TransferStamps",
            "actor": "D",
            "transfer_id": f"T-{c}",
            "from_id": "D",
            "to_id": f"{c}-cti",
            "quantity": stamps_each,
            "amount": "0.00",
        }
        for c in ids
    ]
    for result in lg.execute_many(commands):
        assert getattr(result, "ok", False), result
    return [f"{c}-cti" for c in ids]


@contextlib.contextmanager
def fresh_pg_database(base: str, prefix: str = "bench") -> Iterator[str]:
    """A new PostgreSQL database on the server at ``base``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
