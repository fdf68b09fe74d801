"""The smallest network a first stamp needs, built with the same public commands a portal sends.

``quickstart(lg)`` opens a master account, defines a package, registers, validates and
activates a distributor, buys stamps for it, registers a client (with its stamping account) and
transfers stamps to that account: the commands before a first ``ConsumeStamp``, in one
atomic batch. On a ledger whose master account ``M`` already exists it records nothing and
returns the same ids (a second run of the README's example).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ledger.clock import local_date
from ledger.errors import Rejected

if TYPE_CHECKING:
    from ledger.api import Ledger


@dataclass(frozen=True, slots=True)
class QuickstartNetwork:
    """The ids ``quickstart`` made."""

    master_id: str = "M"
    distributor_id: str = "D1"
    client_id: str = "C1"
    cti_id: str = "C1-cti"


def quickstart_commands(lg: Ledger, *, stamps: int = 100) -> list[dict[str, Any]]:
    """The commands of ``quickstart``, in order, each with its actor (DESIGN §4a)."""
    ids = QuickstartNetwork()
    master, distributor = ids.master_id, ids.distributor_id
    expires_on = local_date(lg.engine.clock()) + timedelta(days=365)
    packages = max(1, -(-stamps // 1000))
    return [
        {"type": "OpenMasterAccount", "master_id": master, "name": "Plataforma",
         "rfc": "SAT970701NN3", "actor": master},
        {"type": "DefinePackage", "seller_id": master, "package_id": "P1000", "unit": "stamps",
         "quantity": 1000, "price": "500.00", "audience": "distributor", "actor": master},
        {"type": "RegisterDistributor", "distributor_id": distributor, "parent_id": master,
         "profile": {"name": "Distribuidora Uno", "rfc": "MAB9307148T4",
                     "email": "uno@example.com", "postal_code": "06600"},
         "actor": master},
        {"type": "ValidateDistributor", "distributor_id": distributor, "actor": master},
        {"type": "ActivateDistributor", "distributor_id": distributor,
         "expires_on": expires_on.isoformat(), "actor": master},
        {"type": "BuyPackage", "buyer_id": distributor, "seller_id": master,
         "package_id": "P1000", "count": packages, "actor": distributor},
        {"type": "RegisterClient", "client_id": ids.client_id, "distributor_id": distributor,
         "profile": {"name": "Juan Pérez", "rfc": "GODE561231GR8", "email": "juan@example.com",
                     "postal_code": "06600", "regimen_fiscal": "612", "uso_cfdi": "G03"},
         "actor": distributor},
        {"type": "TransferStamps", "transfer_id": "quickstart-transfer", "from_id": distributor,
         "to_id": ids.cti_id, "quantity": stamps, "amount": "0.00", "actor": distributor},
    ]  # fmt: skip


def quickstart(lg: Ledger, *, stamps: int = 100) -> QuickstartNetwork:
    """Builds the smallest network with ``stamps`` on one CTI (all or nothing); its ids."""
    ids = QuickstartNetwork()
    if lg.engine.current(ids.master_id) is not None:
        return ids
    results = lg.execute_many(quickstart_commands(lg, stamps=stamps), atomic=True)
    for result in results:
        if isinstance(result, Rejected) and result.code != "batch_aborted":
            raise result
    return ids


SEED_SUBSCRIPTIONS: tuple[tuple[str, str, str, int], ...] = (
    ("Multinivel", "multinivel", "1999.00", 0),
    ("MKL NomiCloud", "mkl", "1999.00", 0),
    ("MKL Dóminus", "mkl", "1850.00", 250),
    ("MKL MaxiComercio ERP 2014", "mkl", "15000.00", 0),
    ("MKL Contablink", "mkl", "0.00", 0),
    ("MKL FactuDesk 2014", "mkl", "0.00", 0),
    ("MKL Maxicomercio Pequeños Negocios", "mkl", "0.00", 0),
    ("MKL CFDI Explorer", "mkl", "0.00", 0),
)
"""The seed's subscription list (004, "Contratar MKL"): product, kind, yearly price before IVA,
points per licence. The seed gives no licence price: 250 points for Dóminus is our example's."""


def seed_subscription_commands(master_id: str) -> list[dict[str, Any]]:
    """The ``DefineSubscriptionProduct`` commands that list ``SEED_SUBSCRIPTIONS`` in the
    catalogue of ``master_id`` (the demo's and the tests' catalogue)."""
    return [
        {
            "type": "DefineSubscriptionProduct",
            "seller_id": master_id,
            "actor": master_id,
            "product": product,
            "kind": kind,
            "annual_price": price,
            "licence_points": licence_points,
        }
        for product, kind, price, licence_points in SEED_SUBSCRIPTIONS
    ]
