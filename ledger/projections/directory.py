"""The directory view: a distributor's clients, stamping accounts and sub-distributors.

Rows hold what portals list and search (names, NIC, RFC, tags, kind, status); the numbers
(stamps, points, dates of purchase and emission, CPD) are joined from the balances and
consumption views when asked. Search is case- and accent-insensitive over the NIC, name, trade
name, RFC, postal code, company phone, e-mails and the legal, financial and technical contacts'
names, e-mails and phones (a phone also matches by its digits alone); every word of a search must
match.

A distributor's status is stored as its events left it; queries apply the ledger's clock as the
write side does (an active distributor past ``expires_on`` is expired). A purge (``Purged``,
recorded 30 days or more after the cancellation) blanks the personal data of the distributor and
of its clients in these tables; ids, NICs, balances and sales stay (DESIGN §3.5).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ledger.aggregates.client import Client
from ledger.aggregates.common import add_days
from ledger.aggregates.distributor import PURGE_AFTER_DAYS, STATUSES, Distributor
from ledger.aggregates.stamping_account import UNLIMITED, StampingAccount
from ledger.clock import local_date
from ledger.domain import Event
from ledger.projections.balances import (
    AVAILABLE_STAMPS_SQL,
    HELD_STAMPS_SQL,
    available_params,
)
from ledger.projections.base import (
    PAGE_LIMIT_DEFAULT,
    Cursor,
    Dialect,
    Handler,
    RowChanges,
    Table,
    View,
    check_choice,
    check_page,
    digits,
    like_pattern,
    normalise,
    search_terms,
)
from ledger.projections.consumption import cpd_and_days_remaining, window
from ledger.projections.entitlements import SubscriptionRow, subscriptions_of

DISTRIBUTORS = Table(
    "view_distributors",
    (
        ("distributor_id", "text"),
        ("parent_id", "text"),
        ("name", "text"),
        ("sort_name", "text"),
        ("rfc", "text"),
        ("email", "text"),
        ("status", "text"),
        ("expires_on", "date"),
        ("purge_on", "date"),
        ("created_at", "ts"),
        ("converted_from", "text"),
    ),
    key=("distributor_id",),
    indexes=(("parent_id",),),
)
CLIENTS = Table(
    "view_clients",
    (
        ("client_id", "text"),
        ("distributor_id", "text"),
        ("nic", "text"),
        ("nic_sort", "text"),
        ("name", "text"),
        ("sort_name", "text"),
        ("trade_name", "text"),
        ("rfc", "text"),
        ("email", "text"),
        ("phone", "text"),
        ("postal_code", "text"),
        ("regimen_fiscal", "text"),
        ("uso_cfdi", "text"),
        ("favourite", "bool"),
        ("dropped", "bool"),
        ("colour", "text"),
        ("converted_to", "text"),
        ("created_at", "ts"),
        ("search_text", "text"),
        ("profile", "text"),
    ),
    key=("client_id",),
    indexes=(("distributor_id", "sort_name"),),
)
STAMPING_ACCOUNTS = Table(
    "view_stamping_accounts",
    (
        ("cti_id", "text"),
        ("client_id", "text"),
        ("distributor_id", "text"),
        ("kind", "text"),
        ("active", "bool"),
        ("valid_until", "date"),
        ("created_at", "ts"),
        ("rfc_lock", "text"),
    ),
    key=("cti_id",),
    indexes=(("distributor_id",), ("client_id",)),
)

SORTS = (
    "name",
    "nic",
    "balance_desc",
    "balance_asc",
    "points_desc",
    "points_asc",
    "last_purchase_desc",
    "last_purchase_asc",
    "created_desc",
    "created_asc",
    "last_emission_desc",
    "last_emission_asc",
)
"""The twelve sort orders of DESIGN §6."""
TAGS = ("favourite", "dropped")
CTI_STATUSES = ("active", "blocked")

_CONTACTS = ("legal_rep", "financial_contact", "technical_contact")
_SEPARATOR = " | "


@dataclass(frozen=True, slots=True)
class StampingAccountRow:
    """A CTI as a distributor's portal lists it (``points``: its client's wallet)."""

    cti_id: str
    client_id: str
    nic: str
    name: str
    kind: str
    active: bool
    credited: int
    used: int
    balance: int
    points: int
    created_at: datetime
    last_purchase_at: datetime | None
    last_emission_at: datetime | None
    cpd: float | None
    days_remaining: int | None
    held: int = 0
    valid_until: date | None = None
    """An unlimited CTI's last day (None for a standard one)."""
    rfc_lock: str | None = None
    """The only issuer RFC the CTI stamps for, if locked."""


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A client of a distributor (``stamps``: the sum over its CTIs)."""

    client_id: str
    nic: str
    name: str
    trade_name: str | None
    rfc: str
    email: str
    favourite: bool
    dropped: bool
    colour: str | None
    stamps: int
    points: int
    created_at: datetime
    converted_to: str | None = None
    """The distributor this client became (``ConvertClientToDistributor``), if any."""


@dataclass(frozen=True, slots=True)
class DistributorRow:
    """A distributor under a parent, with its status on the ledger's clock."""

    distributor_id: str
    parent_id: str
    name: str
    status: str
    expires_on: date | None
    stamps: int
    points: int
    created_at: datetime
    converted_from: str | None = None
    """The client this distributor was before its conversion, if any."""
    subscriptions: tuple[SubscriptionRow, ...] = ()
    """Its Multinivel and MKL subscriptions with their expiry."""


@dataclass(frozen=True, slots=True)
class ClientProfileRow:
    """A client's exportable fields (the CSV of ``ledger export-clients``)."""

    client_id: str
    distributor_id: str
    nic: str
    name: str
    trade_name: str | None
    rfc: str
    regimen_fiscal: str | None
    uso_cfdi: str | None
    email: str
    phone: str | None
    postal_code: str | None
    profile: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The whole profile, as the client's events left it (DESIGN §4 "Profiles")."""
    favourite: bool = False
    dropped: bool = False
    colour: str | None = None


def client_search_text(profile: Mapping[str, Any]) -> str:
    """The folded text a client's search runs over (NIC apart: it is not in the profile)."""
    parts: list[str] = [
        str(profile[field])
        for field in ("name", "trade_name", "rfc", "email", "phone")
        if profile.get(field)
    ]
    parts += [str(e) for e in profile.get("extra_emails") or ()]
    phones = [str(profile["phone"])] if profile.get("phone") else []
    for field in _CONTACTS:
        contact = profile.get(field) or {}
        parts += [str(contact[k]) for k in ("name", "email", "phone") if contact.get(k)]
        if contact.get("phone"):
            phones.append(str(contact["phone"]))
    parts += [digits(phone) for phone in phones]
    return _SEPARATOR.join(normalise(part) for part in parts)


def _client_fields(profile: Mapping[str, Any]) -> dict[str, Any]:
    name = str(profile.get("name", ""))
    return {
        "name": name,
        "sort_name": normalise(name),
        "trade_name": profile.get("trade_name"),
        "rfc": profile.get("rfc", ""),
        "email": profile.get("email", ""),
        "phone": profile.get("phone"),
        "postal_code": profile.get("postal_code"),
        "regimen_fiscal": profile.get("regimen_fiscal"),
        "uso_cfdi": profile.get("uso_cfdi"),
        "search_text": client_search_text(profile),
        "profile": json.dumps(profile, ensure_ascii=False, separators=(",", ":")),
    }


PURGED_DISTRIBUTOR_FIELDS: dict[str, Any] = {"name": "", "sort_name": "", "rfc": "", "email": ""}
"""What a purge leaves of a distributor's personal data in ``view_distributors``."""
PURGED_CLIENT_FIELDS: dict[str, Any] = {
    "name": "",
    "sort_name": "",
    "trade_name": None,
    "rfc": "",
    "email": "",
    "phone": None,
    "postal_code": None,
    "regimen_fiscal": None,
    "uso_cfdi": None,
    "search_text": "",
    "profile": None,
}
"""What a purge leaves of a client's personal data in ``view_clients`` (ids and NIC stay)."""


class _Buffer:
    """Directory changes of one page."""

    __slots__ = ("clients", "ctis", "dialect", "distributors", "purged")

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.distributors = RowChanges(DISTRIBUTORS)
        self.clients = RowChanges(CLIENTS)
        self.ctis = RowChanges(STAMPING_ACCOUNTS)
        self.purged: list[str] = []

    # Distributors

    def distributor_registered(self, event: Distributor.Registered) -> None:
        """A new distributor, unvalidated."""
        name = str(event.profile.get("name", ""))
        self.distributors.create(
            event.originator_id,
            {
                "distributor_id": event.originator_id,
                "parent_id": event.parent_id,
                "name": name,
                "sort_name": normalise(name),
                "rfc": event.profile.get("rfc", ""),
                "email": event.profile.get("email", ""),
                "status": "unvalidated",
                "created_at": self.dialect.ts(event.timestamp),
                "converted_from": event.converted_from,
            },
        )

    def distributor_status(self, event: Distributor.StatusChanged) -> None:
        """A status move; activation and renewal set the expiry, cancellation the purge date."""
        fields: dict[str, Any] = {"status": event.new_status}
        if isinstance(event, Distributor.Activated | Distributor.Renewed):
            fields["expires_on"] = self.dialect.day(event.expires_on)
        elif isinstance(event, Distributor.Cancelled):
            fields["purge_on"] = self.dialect.day(add_days(event.on, PURGE_AFTER_DAYS))
        elif isinstance(event, Distributor.Purged):
            fields.update(PURGED_DISTRIBUTOR_FIELDS)
            self.purged.append(event.originator_id)
        self.distributors.change(event.originator_id, fields)

    # Clients

    def client_registered(self, event: Client.Registered) -> None:
        """A new client with its profile."""
        self.clients.create(
            event.originator_id,
            {
                "client_id": event.originator_id,
                "distributor_id": event.distributor_id,
                "nic": event.nic,
                "nic_sort": normalise(event.nic),
                "favourite": self.dialect.flag(False),
                "dropped": self.dialect.flag(False),
                "created_at": self.dialect.ts(event.timestamp),
                **_client_fields(event.profile),
            },
        )

    def client_profile_changed(self, event: Client.ProfileChanged) -> None:
        """The profile replaced."""
        self.clients.change(event.originator_id, _client_fields(event.profile))

    def client_tagged(self, event: Client.Tagged) -> None:
        """Only the tags given change; colour "" clears it."""
        fields: dict[str, Any] = {}
        if event.favourite is not None:
            fields["favourite"] = self.dialect.flag(event.favourite)
        if event.dropped is not None:
            fields["dropped"] = self.dialect.flag(event.dropped)
        if event.colour is not None:
            fields["colour"] = event.colour or None
        self.clients.change(event.originator_id, fields)

    def client_converted(self, event: Client.ConvertedToDistributor) -> None:
        """The client became a distributor."""
        self.clients.change(event.originator_id, {"converted_to": event.distributor_id})

    # Stamping accounts

    def cti_opened(self, event: StampingAccount.Opened) -> None:
        """A new CTI, active."""
        self.ctis.create(
            event.originator_id,
            {
                "cti_id": event.originator_id,
                "client_id": event.client_id,
                "distributor_id": event.distributor_id,
                "kind": event.kind,
                "active": self.dialect.flag(True),
                "valid_until": self.dialect.day(event.valid_until),
                "created_at": self.dialect.ts(event.timestamp),
                "rfc_lock": event.rfc_lock,
            },
        )

    def cti_blocked(self, event: StampingAccount.Blocked) -> None:
        """Cannot stamp."""
        self.ctis.change(event.originator_id, {"active": self.dialect.flag(False)})

    def cti_reactivated(self, event: StampingAccount.Reactivated) -> None:
        """Stamps again."""
        self.ctis.change(event.originator_id, {"active": self.dialect.flag(True)})

    def cti_renewed(self, event: StampingAccount.UnlimitedRenewed) -> None:
        """An unlimited CTI paid for longer."""
        self.ctis.change(event.originator_id, {"valid_until": self.dialect.day(event.valid_until)})

    def flush(self, cursor: Cursor) -> None:
        """Inserts new rows, updates changed ones, then blanks the purged networks' clients."""
        self.distributors.flush(cursor)
        self.clients.flush(cursor)
        self.ctis.flush(cursor)
        if self.purged:
            # After the page's own rows, so a client registered earlier in the page is blanked
            # too; the write side refuses new personal data of a purged distributor's clients.
            columns = sorted(PURGED_CLIENT_FIELDS)
            assignments = ", ".join(f"{c} = ?" for c in columns)
            cursor.executemany(
                f"UPDATE view_clients SET {assignments} WHERE distributor_id = ?",  # noqa: S608
                [(*(PURGED_CLIENT_FIELDS[c] for c in columns), d) for d in self.purged],
            )
            # An RFC lock is a taxpayer's RFC: personal data too.
            cursor.executemany(
                "UPDATE view_stamping_accounts SET rfc_lock = NULL WHERE distributor_id = ?",
                [(d,) for d in self.purged],
            )


class DirectoryView(View):
    """Distributors, clients and stamping accounts."""

    name = "directory"
    # 3: view_clients.profile, the whole profile for export-clients; 4:
    # view_stamping_accounts.rfc_lock
    version = 4
    tables = (DISTRIBUTORS, CLIENTS, STAMPING_ACCOUNTS)
    buffer = _Buffer

    def handlers(self) -> dict[type[Event], Handler]:
        """Registrations, profile and tag changes, status moves."""
        return {
            Distributor.Registered: _Buffer.distributor_registered,
            Distributor.StatusChanged: _Buffer.distributor_status,
            Client.Registered: _Buffer.client_registered,
            Client.ProfileChanged: _Buffer.client_profile_changed,
            Client.Tagged: _Buffer.client_tagged,
            Client.ConvertedToDistributor: _Buffer.client_converted,
            StampingAccount.Opened: _Buffer.cti_opened,
            StampingAccount.Blocked: _Buffer.cti_blocked,
            StampingAccount.Reactivated: _Buffer.cti_reactivated,
            StampingAccount.UnlimitedRenewed: _Buffer.cti_renewed,
        }


# Queries --------------------------------------------------------------------------------------


def _order(sort: str) -> str:
    """ORDER BY of a sort key over the query's columns (``q.*``); NULLs always last."""
    if sort == "name":
        return "q.sort_name ASC"
    if sort == "nic":
        return "q.nic_sort ASC"
    field, _, direction = sort.rpartition("_")
    column = {
        "balance": "q.balance",
        "points": "q.points",
        "last_purchase": "q.last_purchase_at",
        "created": "q.created_at",
        "last_emission": "q.last_emission_at",
    }[field]
    return f"{column} {direction.upper()} NULLS LAST"


def _search_clause(terms: Sequence[str], columns: Sequence[str]) -> tuple[str, list[Any]]:
    """Every term must match one of ``columns`` (folded text)."""
    clauses: list[str] = []
    params: list[Any] = []
    for term in terms:
        patterns = [like_pattern(term)]
        term_digits = digits(term)
        if len(term_digits) >= 4 and term_digits != term:
            patterns.append(like_pattern(term_digits))
        alternatives = []
        for pattern in patterns:
            for column in columns:
                alternatives.append(f"{column} LIKE ? ESCAPE '\\'")
                params.append(pattern)
        clauses.append("(" + " OR ".join(alternatives) + ")")
    return " AND ".join(clauses), params


def _client_filters(
    dialect: Dialect, tag: str | None, colour: str | None
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if tag is not None:
        where.append(f"c.{tag} = ?")
        params.append(dialect.flag(True))
    if colour is not None:
        where.append("c.colour = ?")
        params.append(colour)
    return where, params


def stamping_accounts(
    cursor: Cursor,
    distributor_id: str,
    now: datetime,
    *,
    search: str | None = None,
    sort: str = "name",
    tag: str | None = None,
    colour: str | None = None,
    status: str | None = None,
    limit: int = PAGE_LIMIT_DEFAULT,
    offset: int = 0,
) -> list[StampingAccountRow]:
    """A distributor's CTIs: searched, filtered, sorted and paginated."""
    today = local_date(now)
    check_page(limit, offset)
    check_choice("sort", sort, SORTS)
    check_choice("tag", tag, TAGS)
    check_choice("status", status, CTI_STATUSES)
    dialect = cursor.dialect
    where, params = _client_filters(dialect, tag, colour)
    where.insert(0, "s.distributor_id = ?")
    params.insert(0, distributor_id)
    if status is not None:
        where.append("s.active = ?")
        params.append(dialect.flag(status == "active"))
    clause, search_params = _search_clause(
        search_terms(search), ("c.search_text", "c.nic_sort", "c.postal_code", "lower(s.cti_id)")
    )
    if clause:
        where.append(clause)
        params += search_params
    inner = (
        "SELECT s.cti_id, s.client_id, c.nic, c.name, s.kind, s.active, "
        "COALESCE(b.credited, 0) AS credited, COALESCE(b.used, 0) AS used, "
        + AVAILABLE_STAMPS_SQL.format(balance="b.balance", cti="s.cti_id")
        + " AS balance, COALESCE(p.balance, 0) AS points, s.created_at, "
        "b.last_purchase_at, b.last_emission_at, c.sort_name, c.nic_sort, "
        + HELD_STAMPS_SQL.format(cti="s.cti_id")
        + " AS held, s.valid_until, s.rfc_lock "
        "FROM view_stamping_accounts s JOIN view_clients c ON c.client_id = s.client_id "
        "LEFT JOIN view_balances b ON b.holder_id = s.cti_id AND b.unit = 'stamps' "
        "LEFT JOIN view_balances p ON p.holder_id = s.client_id AND p.unit = 'points' "
        f"WHERE {' AND '.join(where)}"
    )
    cursor.execute(
        f"SELECT * FROM ({inner}) q ORDER BY {_order(sort)}, q.cti_id LIMIT ? OFFSET ?",  # noqa: S608
        [*available_params(dialect, now), dialect.ts(now), *params, limit, offset],
    )
    found = cursor.fetchall()
    cpd_inputs = _cpd_inputs(cursor, [str(row[0]) for row in found], today)
    rows = []
    for row in found:
        (cti_id, client_id, nic, name, kind, active, credited, used, balance, points) = row[:10]
        created_at, last_purchase_at, last_emission_at = row[10:13]
        first_day, window_stamps = cpd_inputs.get(str(cti_id), (None, 0))
        cpd, days_remaining = cpd_and_days_remaining(
            first_day=first_day,
            window_stamps=window_stamps,
            today=today,
            balance=int(balance),
            unlimited=kind == UNLIMITED,
        )
        created = dialect.to_ts(created_at)
        assert created is not None
        rows.append(
            StampingAccountRow(
                cti_id=str(cti_id),
                client_id=str(client_id),
                nic=str(nic),
                name=str(name),
                kind=str(kind),
                active=bool(active),
                credited=int(credited),
                used=int(used),
                balance=int(balance),
                points=int(points),
                created_at=created,
                last_purchase_at=dialect.to_ts(last_purchase_at),
                last_emission_at=dialect.to_ts(last_emission_at),
                cpd=cpd,
                days_remaining=days_remaining,
                held=int(row[15]),
                valid_until=dialect.to_day(row[16]),
                rfc_lock=None if row[17] is None else str(row[17]),
            )
        )
    return rows


def _cpd_inputs(
    cursor: Cursor, cti_ids: Sequence[str], today: date
) -> dict[str, tuple[date | None, int]]:
    """First consumption day and stamps in the CPD window of each CTI of a page."""
    if not cti_ids:
        return {}
    dialect = cursor.dialect
    first, last = window(today)
    marks = ", ".join("?" * len(cti_ids))
    cursor.execute(
        "SELECT cti_id, MIN(local_date), "  # noqa: S608  (constant SQL fragments; every value is a bound parameter)
        "SUM(CASE WHEN local_date >= ? AND local_date <= ? THEN stamps ELSE 0 END) "
        f"FROM view_consumption WHERE cti_id IN ({marks}) GROUP BY cti_id",
        [dialect.day(first), dialect.day(last), *cti_ids],
    )
    return {
        str(cti): (dialect.to_day(first_day), int(total or 0))
        for cti, first_day, total in cursor.fetchall()
    }


def clients(
    cursor: Cursor,
    distributor_id: str,
    now: datetime,
    *,
    search: str | None = None,
    sort: str = "name",
    tag: str | None = None,
    colour: str | None = None,
    limit: int = PAGE_LIMIT_DEFAULT,
    offset: int = 0,
) -> list[ClientRow]:
    """A distributor's clients: searched, filtered, sorted and paginated."""
    check_page(limit, offset)
    check_choice("sort", sort, SORTS)
    check_choice("tag", tag, TAGS)
    dialect = cursor.dialect
    where, params = _client_filters(dialect, tag, colour)
    where.insert(0, "c.distributor_id = ?")
    params.insert(0, distributor_id)
    clause, search_params = _search_clause(
        search_terms(search), ("c.search_text", "c.nic_sort", "c.postal_code")
    )
    if clause:
        where.append(clause)
        params += search_params
    own_ctis = (
        "FROM view_stamping_accounts s JOIN view_balances b "
        "ON b.holder_id = s.cti_id AND b.unit = 'stamps' WHERE s.client_id = c.client_id"
    )
    inner = (
        "SELECT c.client_id, c.nic, c.name, c.trade_name, c.rfc, c.email, c.favourite, "  # noqa: S608  (constant SQL fragments; every value is a bound parameter)
        f"c.dropped, c.colour, COALESCE((SELECT SUM(b.balance) {own_ctis}), 0) - "
        "COALESCE((SELECT SUM(l.remaining) FROM view_expiring_lots l "
        "JOIN view_stamping_accounts s ON s.cti_id = l.cti_id "
        "WHERE s.client_id = c.client_id AND l.expires_on < ?), 0) + "
        "COALESCE((SELECT COUNT(*) FROM view_holds h "
        "JOIN view_stamping_accounts s ON s.cti_id = h.cti_id "
        "WHERE s.client_id = c.client_id AND h.expires_at <= ? "
        "AND (h.lot_expires_on IS NULL OR h.lot_expires_on >= ?)), 0) AS balance, "
        "COALESCE(p.balance, 0) AS points, c.created_at, "
        f"(SELECT MAX(b.last_purchase_at) {own_ctis}) AS last_purchase_at, "
        f"(SELECT MAX(b.last_emission_at) {own_ctis}) AS last_emission_at, "
        "c.sort_name, c.nic_sort, c.converted_to "
        "FROM view_clients c "
        "LEFT JOIN view_balances p ON p.holder_id = c.client_id AND p.unit = 'points' "
        f"WHERE {' AND '.join(where)}"
    )
    cursor.execute(
        f"SELECT * FROM ({inner}) q ORDER BY {_order(sort)}, q.client_id LIMIT ? OFFSET ?",  # noqa: S608
        [*available_params(dialect, now), *params, limit, offset],
    )
    rows = []
    for row in cursor.fetchall():
        client_id, nic, name, trade_name, rfc, email, favourite, dropped, colour = row[:9]
        stamps, points, created_at = row[9:12]
        converted_to = row[16]
        created = dialect.to_ts(created_at)
        assert created is not None
        rows.append(
            ClientRow(
                client_id=str(client_id),
                nic=str(nic),
                name=str(name),
                trade_name=None if trade_name is None else str(trade_name),
                rfc=str(rfc),
                email=str(email),
                favourite=bool(favourite),
                dropped=bool(dropped),
                colour=None if colour is None else str(colour),
                stamps=int(stamps),
                points=int(points),
                created_at=created,
                converted_to=None if converted_to is None else str(converted_to),
            )
        )
    return rows


_STATUS_RANK = (
    "CASE q.status "
    + " ".join(f"WHEN '{status}' THEN {rank}" for rank, status in enumerate(STATUSES))
    + f" ELSE {len(STATUSES)} END"
)


def distributors(
    cursor: Cursor,
    parent_id: str,
    today: date,
    *,
    status: str | None = None,
    limit: int = PAGE_LIMIT_DEFAULT,
    offset: int = 0,
) -> list[DistributorRow]:
    """The distributors under ``parent_id`` by status (in lifecycle order), then name."""
    check_page(limit, offset)
    check_choice("status", status, STATUSES)
    dialect = cursor.dialect
    inner = (
        "SELECT d.distributor_id, d.parent_id, d.name, d.sort_name, "
        "CASE WHEN d.status = 'active' AND d.expires_on < ? THEN 'expired' "
        "ELSE d.status END AS status, d.expires_on, "
        "COALESCE(st.balance, 0) AS stamps, COALESCE(pt.balance, 0) AS points, d.created_at, "
        "d.converted_from "
        "FROM view_distributors d "
        "LEFT JOIN view_balances st ON st.holder_id = d.distributor_id AND st.unit = 'stamps' "
        "LEFT JOIN view_balances pt ON pt.holder_id = d.distributor_id AND pt.unit = 'points' "
        "WHERE d.parent_id = ?"
    )
    params: list[Any] = [dialect.day(today), parent_id]
    where = ""
    if status is not None:
        where = "WHERE q.status = ? "
        params.append(status)
    cursor.execute(
        "SELECT q.distributor_id, q.parent_id, q.name, q.status, q.expires_on, "  # noqa: S608  (constant SQL fragments; every value is a bound parameter)
        f"q.stamps, q.points, q.created_at, q.converted_from FROM ({inner}) q {where}"
        f"ORDER BY {_STATUS_RANK}, q.sort_name, q.distributor_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    found = cursor.fetchall()
    subscriptions = subscriptions_of(cursor, [str(row[0]) for row in found], today)
    rows = []
    for (
        distributor_id,
        parent,
        name,
        row_status,
        expires_on,
        stamps,
        points,
        created,
        converted_from,
    ) in found:
        created_at = dialect.to_ts(created)
        assert created_at is not None
        rows.append(
            DistributorRow(
                distributor_id=str(distributor_id),
                parent_id=str(parent),
                name=str(name),
                status=str(row_status),
                expires_on=dialect.to_day(expires_on),
                stamps=int(stamps),
                points=int(points),
                created_at=created_at,
                converted_from=None if converted_from is None else str(converted_from),
                subscriptions=subscriptions.get(str(distributor_id), ()),
            )
        )
    return rows


def purge_due(cursor: Cursor, today: date, limit: int) -> list[tuple[str, str]]:
    """``(distributor_id, parent_id)`` of cancelled distributors whose purge day has come."""
    cursor.execute(
        "SELECT distributor_id, parent_id FROM view_distributors "
        "WHERE status = 'cancelled' AND purge_on <= ? ORDER BY purge_on, distributor_id LIMIT ?",
        [cursor.dialect.day(today), limit],
    )
    return [(str(d), str(p)) for d, p in cursor.fetchall()]


def client_profiles(
    cursor: Cursor, distributor_id: str | None, after_id: str, limit: int
) -> list[ClientProfileRow]:
    """Clients (of one distributor, or all) after ``after_id`` in id order (for export); the
    clients of a purged distributor are left out (their personal data is gone)."""
    where = "c.client_id > ? AND (d.status IS NULL OR d.status <> 'purged')"
    params: list[Any] = [after_id]
    if distributor_id is not None:
        where += " AND c.distributor_id = ?"
        params.append(distributor_id)
    cursor.execute(
        "SELECT c.client_id, c.distributor_id, c.nic, c.name, c.trade_name, c.rfc, "  # noqa: S608  (constant SQL fragments; every value is a bound parameter)
        "c.regimen_fiscal, c.uso_cfdi, c.email, c.phone, c.postal_code, c.profile, "
        "c.favourite, c.dropped, c.colour FROM view_clients c "
        "LEFT JOIN view_distributors d ON d.distributor_id = c.distributor_id "
        f"WHERE {where} ORDER BY c.client_id LIMIT ?",
        [*params, limit],
    )
    return [
        ClientProfileRow(
            client_id=str(row[0]),
            distributor_id=str(row[1]),
            nic=str(row[2]),
            name=str(row[3]),
            trade_name=row[4],
            rfc=str(row[5]),
            regimen_fiscal=row[6],
            uso_cfdi=row[7],
            email=str(row[8]),
            phone=row[9],
            postal_code=row[10],
            profile=json.loads(row[11]) if row[11] else {},
            favourite=bool(row[12]),
            dropped=bool(row[13]),
            colour=row[14],
        )
        for row in cursor.fetchall()
    ]
