"""The portal's lists (DESIGN §6): a seller's catalogue, a distributor's auto top-up rules, and
the lots of a CTI that will expire.

- ``view_packages``: every package a seller (the master account or a distributor) defined, with
  its price list fields; a retired package stays, marked ``retired``.
- ``view_auto_top_up_rules``: the rule of each CTI that has one (a disabled rule is gone); the
  distributor is the CTI's, from the directory's ``view_stamping_accounts``.
- ``expiring_lots(cti_id)`` reads the balances view's ``view_expiring_lots``: what is left of
  each lot with an expiry date that has not passed, with the stamps of holds past their time
  that came back to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import msgspec

from ledger.aggregates.common import Package
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.aggregates.stamping_account import StampingAccount
from ledger.clock import local_date
from ledger.domain import Event
from ledger.money import format_money
from ledger.projections.base import (
    PAGE_LIMIT_DEFAULT,
    Cursor,
    Dialect,
    Handler,
    Table,
    View,
    check_page,
)

PACKAGES = Table(
    "view_packages",
    (
        ("seller_id", "text"),
        ("package_id", "text"),
        ("unit", "text"),
        ("quantity", "int"),
        ("price_centavos", "int"),
        ("audience", "text"),
        ("validity_days", "int"),
        ("services", "text"),
        ("retired", "bool"),
        ("defined_at", "ts"),
    ),
    key=("seller_id", "package_id"),
)
AUTO_TOP_UP_RULES = Table(
    "view_auto_top_up_rules",
    (
        ("cti_id", "text"),
        ("minimum", "int"),
        ("credit", "int"),
        ("amount_centavos", "int"),
        ("configured_at", "ts"),
    ),
    key=("cti_id",),
)

_SERVICES = msgspec.json.Encoder()
_SERVICES_DECODER = msgspec.json.Decoder(tuple[str, ...])


@dataclass(frozen=True, slots=True)
class PackageRow:
    """A package of a seller's catalogue and price list (``price`` like "500.00")."""

    package_id: str
    unit: str
    quantity: int
    price: str
    audience: str
    validity_days: int | None
    services: tuple[str, ...]
    retired: bool


@dataclass(frozen=True, slots=True)
class AutoTopUpRuleRow:
    """A CTI's automatic top-up: below ``minimum``, ``credit`` stamps at ``amount`` (None: the
    price list's price when it fires)."""

    cti_id: str
    minimum: int
    credit: int
    amount: str | None


@dataclass(frozen=True, slots=True)
class ExpiringLotRow:
    """Stamps of a CTI that leave at the end of ``expires_on`` (a Mexico City date)."""

    lot_id: str
    quantity: int
    expires_on: date


class _Buffer:
    """Packages and rules of one page."""

    __slots__ = ("dialect", "packages", "retired", "rules")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.packages: dict[tuple[str, str], list[Any]] = {}
        # Packages of earlier pages retired in this one.
        self.retired: set[tuple[str, str]] = set()
        # cti_id -> its rule's row, or None once disabled.
        self.rules: dict[str, tuple[Any, ...] | None] = {}

    def package_defined(
        self, event: MasterAccount.PackageDefined | Distributor.PackageDefined
    ) -> None:
        """A package added or replaced."""
        package: Package = event.package
        self.packages[(event.originator_id, package.package_id)] = [
            event.originator_id,
            package.package_id,
            package.unit,
            package.quantity,
            package.price_centavos,
            package.audience,
            package.validity_days,
            _SERVICES.encode(package.services).decode(),
            self.dialect.flag(package.retired),
            self.dialect.ts(event.timestamp),
        ]

    def package_retired(
        self, event: MasterAccount.PackageRetired | Distributor.PackageRetired
    ) -> None:
        """No longer sold."""
        key = (event.originator_id, event.package_id)
        row = self.packages.get(key)
        if row is not None:
            row[8] = self.dialect.flag(True)
        else:
            self.retired.add(key)

    def rule_configured(self, event: StampingAccount.AutoTopUpConfigured) -> None:
        """A CTI's rule, new or replaced."""
        rule = event.rule
        self.rules[event.originator_id] = (
            event.originator_id,
            rule.minimum,
            rule.credit,
            None if rule.priced_by_list else rule.amount_centavos,
            self.dialect.ts(event.timestamp),
        )

    def rule_disabled(self, event: StampingAccount.AutoTopUpDisabled) -> None:
        """The CTI has no rule any more."""
        self.rules[event.originator_id] = None

    def flush(self, cursor: Cursor) -> None:
        """Upserts packages, retires earlier ones, replaces the touched rules."""
        names = PACKAGES.column_names
        cursor.insert(
            PACKAGES,
            list(self.packages.values()),
            "DO UPDATE SET " + ", ".join(f"{name} = excluded.{name}" for name in names[2:]),
        )
        cursor.executemany(
            "UPDATE view_packages SET retired = ? WHERE seller_id = ? AND package_id = ?",
            [(self.dialect.flag(True), seller, package) for seller, package in self.retired],
        )
        cursor.executemany(
            "DELETE FROM view_auto_top_up_rules WHERE cti_id = ?", [(c,) for c in self.rules]
        )
        cursor.insert(AUTO_TOP_UP_RULES, [row for row in self.rules.values() if row is not None])


class PortalView(View):
    """Catalogues and auto top-up rules."""

    name = "portal"
    version = 1
    tables = (PACKAGES, AUTO_TOP_UP_RULES)
    buffer = _Buffer

    def handlers(self) -> dict[type[Event], Handler]:
        """Package definitions and retirements of sellers; CTIs' rules."""
        return {
            MasterAccount.PackageDefined: _Buffer.package_defined,
            Distributor.PackageDefined: _Buffer.package_defined,
            MasterAccount.PackageRetired: _Buffer.package_retired,
            Distributor.PackageRetired: _Buffer.package_retired,
            StampingAccount.AutoTopUpConfigured: _Buffer.rule_configured,
            StampingAccount.AutoTopUpDisabled: _Buffer.rule_disabled,
        }


# Queries --------------------------------------------------------------------------------------


def catalogue(
    cursor: Cursor, seller_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
) -> list[PackageRow]:
    """A seller's packages (retired ones too), by audience, unit, quantity and id."""
    check_page(limit, offset)
    cursor.execute(
        "SELECT package_id, unit, quantity, price_centavos, audience, validity_days, services, "
        "retired FROM view_packages WHERE seller_id = ? "
        "ORDER BY audience, unit, quantity, package_id LIMIT ? OFFSET ?",
        [seller_id, limit, offset],
    )
    return [
        PackageRow(
            package_id=str(package_id),
            unit=str(unit),
            quantity=int(quantity),
            price=format_money(int(price)),
            audience=str(audience),
            validity_days=None if validity is None else int(validity),
            services=_SERVICES_DECODER.decode(str(services)),
            retired=bool(retired),
        )
        for package_id, unit, quantity, price, audience, validity, services, retired in (
            cursor.fetchall()
        )
    ]


def auto_top_up_rules(
    cursor: Cursor, distributor_id: str, *, limit: int = PAGE_LIMIT_DEFAULT, offset: int = 0
) -> list[AutoTopUpRuleRow]:
    """The rules of a distributor's CTIs, by CTI id."""
    check_page(limit, offset)
    cursor.execute(
        "SELECT r.cti_id, r.minimum, r.credit, r.amount_centavos FROM view_auto_top_up_rules r "
        "JOIN view_stamping_accounts s ON s.cti_id = r.cti_id WHERE s.distributor_id = ? "
        "ORDER BY r.cti_id LIMIT ? OFFSET ?",
        [distributor_id, limit, offset],
    )
    return [
        AutoTopUpRuleRow(
            cti_id=str(cti_id),
            minimum=int(minimum),
            credit=int(credit),
            amount=None if amount is None else format_money(int(amount)),
        )
        for cti_id, minimum, credit, amount in cursor.fetchall()
    ]


def expiring_lots(
    cursor: Cursor,
    cti_id: str,
    now: datetime,
    *,
    limit: int = PAGE_LIMIT_DEFAULT,
    offset: int = 0,
) -> list[ExpiringLotRow]:
    """A CTI's lots that expire and have not yet, soonest first: their stamps left (with those
    of holds past their time returned to them, as the balance counts them)."""
    check_page(limit, offset)
    dialect = cursor.dialect
    cursor.execute(
        "SELECT l.lot_id, l.remaining + COALESCE((SELECT COUNT(*) FROM view_holds h "
        "WHERE h.cti_id = l.cti_id AND h.lot_id = l.lot_id AND h.expires_at <= ?), 0), "
        "l.expires_on FROM view_expiring_lots l WHERE l.cti_id = ? AND l.expires_on >= ? "
        "ORDER BY l.expires_on, l.lot_id LIMIT ? OFFSET ?",
        [dialect.ts(now), cti_id, dialect.day(local_date(now)), limit, offset],
    )
    rows = []
    for lot_id, quantity, expires in cursor.fetchall():
        expires_on = dialect.to_day(expires)
        assert expires_on is not None
        if int(quantity) > 0:
            rows.append(
                ExpiringLotRow(lot_id=str(lot_id), quantity=int(quantity), expires_on=expires_on)
            )
    return rows
