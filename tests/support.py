"""What the test tiers share: one builder per command (``command`` for the rest), the standard
network (``build_network``) and ledgers holding it (``network_fixture``, ``network_ledger``,
``seed_network``), forged audit rows, and the command line run as a process."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import Notification, StoredEvent

from adapters.storage.codec import MsgspecMapper
from adapters.storage.memory import MemoryStore
from ledger.aggregates.stamping_account import StampingAccount
from ledger.api import Ledger, Projections
from ledger.clock import ManualClock
from ledger.commands.auth import NOBODY_ELSE, RULES, rule
from ledger.domain import Event
from ledger.errors import Rejected
from ledger.first_steps import seed_subscription_commands
from ledger.outcome import Outcome
from ledger.write.decision import HANDLERS

ROOT = Path(__file__).resolve().parents[1]
"""The repository (``python -m ledger`` runs from it)."""
MASTER = "M"
DISTRIBUTOR = "D1"
CLIENT = "C1"
CTI = "C1-cti"
ISSUER_RFC = "GODE561231GR8"
MAPPER = MsgspecMapper()
PASSWORD = "Tr0mbón-azul-77"
EXPIRES_ON = "2027-01-31"


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


def command(kind: str, actor: str, /, **fields: Any) -> dict[str, Any]:
    """A command of type ``kind`` sent by ``actor`` (``fields`` may name another ``actor``)."""
    return {"type": kind, "actor": actor, **fields}


def buy(
    package_id: str = "P1000", *, buyer_id: str = DISTRIBUTOR, seller_id: str = MASTER, **extra: Any
) -> dict[str, Any]:
    """``buyer_id`` (D1) buys ``package_id`` from ``seller_id`` (the master account)."""
    fields = {"buyer_id": buyer_id, "seller_id": seller_id, "package_id": package_id}
    return command("BuyPackage", buyer_id, **fields, **extra)


def transfer_stamps(quantity: int = 10, transfer_id: str = "T1", **fields: Any) -> dict[str, Any]:
    """D1 sends ``quantity`` stamps to C1's CTI; ``fields`` may name another ``to_id``, another
    ``from_id`` (the actor then), an ``amount``..."""
    return _transfer("TransferStamps", quantity, transfer_id, {"to_id": CTI, **fields})


def transfer_points(quantity: int = 100, transfer_id: str = "P1", **fields: Any) -> dict[str, Any]:
    """D1 sends ``quantity`` points to C1's wallet; ``fields`` as for ``transfer_stamps``."""
    return _transfer("TransferPoints", quantity, transfer_id, {"to_id": CLIENT, **fields})


def _transfer(kind: str, quantity: int, transfer_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    sender = fields.pop("from_id", DISTRIBUTOR)
    return command(
        kind, sender, transfer_id=transfer_id, from_id=sender, quantity=quantity, **fields
    )


def mass_transfer(
    *lines: tuple[str, int], batch_id: str = "B1", amount: str | None = None, **extra: Any
) -> dict[str, Any]:
    """D1 sends each ``(to_id, quantity)`` line in one batch (each line at ``amount`` if given)."""
    priced = {} if amount is None else {"amount": amount}
    rows = [{"to_id": to_id, "quantity": quantity, **priced} for to_id, quantity in lines]
    return command(
        "MassTransfer", DISTRIBUTOR, batch_id=batch_id, from_id=DISTRIBUTOR, lines=rows, **extra
    )


def open_cti(
    cti_id: str = "X1",
    kind: str = "standard",
    *,
    password: str = PASSWORD,
    client_id: str = CLIENT,
    **extra: Any,
) -> dict[str, Any]:
    """D1 opens another stamping account of C1 (``kind`` standard or unlimited)."""
    fields = {"cti_id": cti_id, "client_id": client_id, "kind": kind, "password": password}
    return command("OpenStampingAccount", DISTRIBUTOR, **fields, **extra)


def package(
    package_id: str,
    quantity: int,
    price: str,
    *,
    seller_id: str = MASTER,
    unit: str = "stamps",
    audience: str = "distributor",
    **extra: Any,
) -> dict[str, Any]:
    """``seller_id`` (the master account) defines a package of ``quantity`` ``unit`` for
    ``audience`` (a client package takes ``validity_days``)."""
    fields = {"seller_id": seller_id, "package_id": package_id, "unit": unit, "quantity": quantity}
    return command("DefinePackage", seller_id, **fields, price=price, audience=audience, **extra)


def grant(
    grant_id: str, package_id: str, *, cti_id: str = CTI, seller_id: str = DISTRIBUTOR, **extra: Any
) -> dict[str, Any]:
    """``seller_id`` (D1) assigns its client package ``package_id`` to ``cti_id`` (C1's CTI)."""
    fields = {"grant_id": grant_id, "seller_id": seller_id, "cti_id": cti_id}
    return command("AssignPackage", seller_id, **fields, package_id=package_id, **extra)


def reserve(
    hold_id: str = "H1", cfdi_uuid: str | None = None, *, cti_id: str = CTI, **extra: Any
) -> dict[str, Any]:
    """The stamping service (the master account) sets a stamp aside on ``cti_id`` (C1's CTI)
    for a CFDI (a fresh UUID unless one is given)."""
    fields = {"hold_id": hold_id, "cti_id": cti_id, "cfdi_uuid": cfdi_uuid or str(uuid.uuid4())}
    return command("ReserveStamp", MASTER, **fields, issuer_rfc=ISSUER_RFC, **extra)


def post(hold_id: str = "H1", **extra: Any) -> dict[str, Any]:
    """The stamping service posts a hold."""
    return command("PostReservation", MASTER, hold_id=hold_id, **extra)


def void(hold_id: str = "H1", **extra: Any) -> dict[str, Any]:
    """The stamping service voids a hold."""
    return command("VoidReservation", MASTER, hold_id=hold_id, **extra)


def verify_credentials(password: str, cti_id: str = CTI) -> dict[str, Any]:
    """VerifyStampingCredentials by the stamping service (the master account)."""
    return command("VerifyStampingCredentials", MASTER, cti_id=cti_id, password=password)


def credentials_answer(lg: Ledger, password: str, cti_id: str = CTI) -> bool | str:
    """``valid`` of a credentials check of ``cti_id``, or the code of its rejection."""
    try:
        outcome = lg.execute(verify_credentials(password, cti_id))
    except Rejected as rejected:
        return rejected.code
    assert outcome.valid is not None
    return outcome.valid


def register_distributor(
    distributor_id: str, parent_id: str = MASTER, *, profile: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``parent_id`` registers ``distributor_id``; its profile is ``distributor_profile()`` with
    an email of its own unless another profile is given."""
    profile = profile or distributor_profile(email=f"{distributor_id.lower()}@example.com")
    fields = {"distributor_id": distributor_id, "parent_id": parent_id, "profile": profile}
    return command("RegisterDistributor", parent_id, **fields)


def onboard(
    distributor_id: str,
    parent_id: str = MASTER,
    *,
    expires_on: str = EXPIRES_ON,
    profile: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``parent_id`` registers, validates and activates ``distributor_id``."""
    return [
        register_distributor(distributor_id, parent_id, profile=profile),
        command("ValidateDistributor", parent_id, distributor_id=distributor_id),
        command("ActivateDistributor", parent_id, distributor_id=distributor_id,
                expires_on=expires_on),
    ]  # fmt: skip


def on_cti(kind: str, cti_id: str = CTI, **fields: Any) -> dict[str, Any]:
    """D1's command ``kind`` on its client's stamping account ``cti_id`` (C1's CTI): Block-,
    ReactivateStampingAccount, ResetStampingPassword, RenewUnlimitedAccount..."""
    return command(kind, DISTRIBUTOR, cti_id=cti_id, **fields)


def rival_distributor(distributor_id: str = "D2", client_id: str = "C2") -> list[dict[str, Any]]:
    """Another active distributor of the master (``Dos``) with a client of its own (``Ana``,
    whose CTI is ``C2-cti``)."""
    profile = distributor_profile("Dos", "dos@example.com")
    return [
        *onboard(distributor_id, profile=profile),
        register_client(
            client_id, distributor_id=distributor_id, name="Ana", email="ana@example.com"
        ),
    ]


def cancel_distributor(
    distributor_id: str = DISTRIBUTOR, actor: str = MASTER
) -> list[dict[str, Any]]:
    """``actor`` (the master account) suspends, then cancels ``distributor_id`` (D1)."""
    return [
        command(kind, actor, distributor_id=distributor_id)
        for kind in ("SuspendDistributor", "CancelDistributor")
    ]


def assign_admin(email: str, client_id: str = CLIENT, **extra: Any) -> dict[str, Any]:
    """D1 sets the admin login of its client ``client_id`` (C1)."""
    fields = {"client_id": client_id, "email": email, "mobile": "5512345678"}
    return command("AssignAdminProfile", DISTRIBUTOR, **fields, **extra)


def buy_seat(
    seat_id: str = "S1", price: str = "288.84", *, client_id: str = CLIENT
) -> dict[str, Any]:
    """D1 sells its client ``client_id`` (C1) an extra-user seat (249.00 + IVA)."""
    return command("BuyUserSeat", DISTRIBUTOR, seat_id=seat_id, client_id=client_id, price=price)


def add_portal_user(
    user_id: str = "U1", email: str | None = None, *, client_id: str = CLIENT, **extra: Any
) -> dict[str, Any]:
    """The client ``client_id`` (C1) adds a portal user (``u1@example.com`` for ``U1`` unless an
    email is given); ``extra`` may name another ``actor``."""
    fields = {"user_id": user_id, "client_id": client_id}
    email = email or f"{user_id.lower()}@example.com"
    return command("AddPortalUser", client_id, **fields, email=email, **extra)


def sub_distributor(
    sub_id: str = "D1a", *, expires_on: str = "2026-12-31", profile: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The seed's catalogue, D1's Multinivel, then D1 registers, validates and activates its
    sub-distributor ``sub_id`` (``Sub``, sub@example.com unless another profile is given)."""
    profile = profile or distributor_profile("Sub", "sub@example.com")
    return [
        *subscription_catalogue(),
        contract("Multinivel"),
        *onboard(sub_id, DISTRIBUTOR, expires_on=expires_on, profile=profile),
    ]


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


def build_network(
    lg: Ledger,
    *,
    inventory: int = 10_000,
    cti_stamps: int = 0,
    catalogue: bool = False,
    points: int = 0,
) -> Network:
    """Master account, one active distributor with ``inventory`` stamps, one client and its CTI;
    then, in this order, ``cti_stamps`` stamps sent to the CTI, the seed's subscription
    ``catalogue`` and ``points`` bought by the distributor (in packages of 3,000)."""
    commands: list[dict[str, Any]] = [
        {"type": "OpenMasterAccount", "master_id": MASTER, "name": "Plataforma",
         "rfc": "SAT970701NN3"},
        package("P1000", 1000, "500.00"),
        package("PTS3000", 3000, "2850.00", unit="points"),
        *onboard(DISTRIBUTOR, profile=distributor_profile()),
        buy(count=max(inventory // 1000, 1)),
        register_client(CLIENT),
    ]  # fmt: skip
    if cti_stamps:
        commands.append(transfer_stamps(cti_stamps, "T-setup", amount="0.00"))
    if catalogue:
        commands.extend(subscription_catalogue())
    if points:
        commands.append(buy("PTS3000", count=points // 3000))
    ok(lg, *commands)
    return Network()


def subscription_catalogue(master_id: str = MASTER) -> list[dict[str, Any]]:
    """The ``DefineSubscriptionProduct`` commands of the seed's catalogue."""
    return seed_subscription_commands(master_id)


def define_catalogue(lg: Ledger, master_id: str = MASTER) -> None:
    """The seed's subscription catalogue (Multinivel 1,999.00, MKL Dóminus 1,850.00, ...)."""
    ok(lg, *subscription_catalogue(master_id))


def ok(lg: Ledger, *commands: dict[str, Any]) -> list[Outcome]:
    """The outcomes of ``commands``, sent in one ``execute_many``; each must succeed."""
    results = lg.execute_many(list(commands))
    for result in results:
        assert isinstance(result, Outcome), result
    return results  # type: ignore[return-value]


def contract(product: str, distributor_id: str = DISTRIBUTOR) -> dict[str, Any]:
    """``distributor_id`` contracts a catalogue subscription."""
    return command(
        "ContractSubscription", distributor_id, distributor_id=distributor_id, product=product
    )


RANDOM_ID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
"""A uuid's text, with or without its dashes (a sale's id is ``S:`` and 32 hex digits).

A phone is searched by its digits, which are hex digits too: a random id held in a view (the
purge keeps sales) holds a four-digit fragment such as "4433" about once in 2,000 ids. An id is
no personal data, so ``fragments_in`` skips it and no random value can decide a test.
"""


def fragments_in(row: Sequence[Any], fragments: Iterable[str]) -> set[str]:
    """The ``fragments`` that a row's text holds (in any case) outside random ids."""
    texts = [RANDOM_ID.sub("<id>", value.lower()) for value in row if isinstance(value, str)]
    return {fragment for fragment in fragments if any(fragment.lower() in t for t in texts)}


def view_rows_holding(lg: Ledger, fragments: Sequence[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """(table, row) of every view row that holds one of ``fragments``, once the views caught up.

    It reads every row of every view table (``views.dump()`` selects each table whole), not
    query results, so a column that no query shows is searched too.
    """
    lg.views.catch_up()
    return [
        (table, row)
        for table, rows in lg.views.dump().items()
        for row in rows
        if fragments_in(row, fragments)
    ]


@contextmanager
def network_ledger(
    clock: ManualClock,
    *setup: dict[str, Any],
    url: str = "memory://",
    projections: Projections = "inline",
    views_url: str | None = None,
    **network: Any,
) -> Iterator[Ledger]:
    """A ledger on ``url`` (the in-memory store unless given; fast password hashes) holding
    ``build_network(lg, **network)``, then the ``setup`` commands (each must succeed)."""
    options = {"projections": projections, "views_url": views_url}
    with Ledger.open(url, clock=clock, password_cost="fast", **options) as lg:
        build_network(lg, **network)
        if setup:
            ok(lg, *setup)
        yield lg


def seed_network(url: str, clock: ManualClock, *setup: dict[str, Any], **network: Any) -> None:
    """Records ``network_ledger``'s network (and ``setup``) at ``url``, then closes the ledger."""
    with network_ledger(clock, *setup, url=url, **network):
        pass


def network_fixture(*setup: dict[str, Any], **network: Any) -> Any:
    """A test module's ``lg`` fixture on the in-memory store: ``lg = network_fixture(...)`` gives
    each test a ``network_ledger(clock, *setup, **network)``."""

    @pytest.fixture
    def lg(clock: ManualClock) -> Iterator[Ledger]:
        with network_ledger(clock, *setup, **network) as ledger:
            yield ledger

    return lg


def store_network_fixture(*setup: dict[str, Any], **network: Any) -> Any:
    """The same ``lg`` fixture on each real store of ``store_url`` (SQLite and PostgreSQL)."""

    @pytest.fixture
    def lg(store_url: str, clock: ManualClock) -> Iterator[Ledger]:
        with network_ledger(clock, *setup, url=store_url, **network) as ledger:
            yield ledger

    return lg


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


def invalid_fields(lg: Ledger, command: dict[str, Any]) -> list[str]:
    """The fields named by the ``invalid_command`` rejection of ``command`` (checked as
    ``rejection`` checks it, and that its code is ``invalid_command``)."""
    rejected = rejection(lg, command)
    assert rejected.code == "invalid_command"
    return fields(rejected)


def register_client(
    client_id: str = "C2", *, distributor_id: str = DISTRIBUTOR, **profile: Any
) -> dict[str, Any]:
    """A RegisterClient command of ``distributor_id`` (D1), its profile ``client_profile()``
    with ``profile`` overrides."""
    fields = {"client_id": client_id, "distributor_id": distributor_id}
    return command(
        "RegisterClient", distributor_id, **fields, profile={**client_profile(), **profile}
    )


def as_rows(stored: Iterable[StoredEvent], first_id: int = 1) -> list[Notification]:
    """Stored events as the rows ``verify`` reads, numbered from ``first_id``."""
    return [
        Notification(e.originator_id, e.originator_version, e.topic, e.state, id=n)
        for n, e in enumerate(stored, start=first_id)
    ]


def rows_of(lg: Ledger) -> list[Notification]:
    """The stored rows of a ledger on the in-memory store, with their notification ids."""
    assert isinstance(lg.store, MemoryStore)
    return as_rows(lg.store.stored_events())


def forged(rows: list[Notification], *events: Event) -> list[Notification]:
    """``rows`` plus ``events`` stored as the next rows (encoded by the real mapper)."""
    return [*rows, *as_rows(map(MAPPER.to_stored_event, events), rows[-1].id + 1)]


def cli_env(**variables: str) -> dict[str, str]:
    """This process's environment, the repository importable, plus ``variables``."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **variables}


def run_cli(*args: str, timeout: float = 120, **options: Any) -> subprocess.CompletedProcess[Any]:
    """``python -m ledger *args`` run to its end in the repository, its output captured (as
    text unless ``text=False``); the exit status is the caller's to check."""
    options = {"capture_output": True, "text": True, "env": cli_env(), **options}
    argv = [sys.executable, "-m", "ledger", *args]
    return subprocess.run(argv, cwd=ROOT, timeout=timeout, check=False, **options)


def start_cli(*args: str, **options: Any) -> subprocess.Popen[Any]:
    """``python -m ledger *args`` started in the repository (``env`` defaults to ``cli_env()``)."""
    options = {"env": cli_env(), **options}
    return subprocess.Popen([sys.executable, "-m", "ledger", *args], cwd=ROOT, **options)


@contextmanager
def handler_registered(command_class: type, handler: Callable[..., Any]) -> Iterator[None]:
    """Inside the block (or the test it decorates), ``handler`` decides ``command_class`` (a
    test's own command on ``cti_id``, which only the master account may send); afterwards
    neither is registered."""
    HANDLERS[command_class] = handler
    RULES[command_class] = rule("cti_id", StampingAccount, NOBODY_ELSE)
    try:
        yield
    finally:
        del HANDLERS[command_class]
        del RULES[command_class]


class RawDb:
    """Direct SQL on a ledger's database, SQLite or PostgreSQL (``?`` marks on both)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgres")
        self.events = "ledger_events" if self.postgres else "stored_events"
        self.id_column = "notification_id" if self.postgres else "rowid"

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor in one transaction, committed when the block ends without an error."""
        if self.postgres:
            with psycopg.connect(self.url) as conn, conn.cursor() as cursor:
                yield cursor
        else:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                with conn:
                    yield conn.cursor()
            finally:
                conn.close()

    def sql(self, sql: str) -> str:
        """``sql`` with ``{events}`` and ``{id}`` named for this database, and its marks."""
        sql = sql.format(events=self.events, id=self.id_column)
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs one statement; returns the rows it changed."""
        with self.cursor() as cursor:
            cursor.execute(self.sql(sql), params)
            return int(cursor.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Runs one statement per parameter row, in one transaction."""
        with self.cursor() as cursor:
            cursor.executemany(self.sql(sql), rows)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query."""
        with self.cursor() as cursor:
            cursor.execute(self.sql(sql), params)
            return [tuple(row) for row in cursor.fetchall()]

    def event(self, originator_id: str, version: int) -> tuple[int, str, bytes]:
        """``(notification id, topic, state)`` of one stored event."""
        ((position, topic, state),) = self.rows(
            "SELECT {id}, topic, state FROM {events}"
            " WHERE originator_id = ? AND originator_version = ?",
            (originator_id, version),
        )
        return int(position), str(topic), bytes(state)

    def set_state(self, originator_id: str, version: int, state: bytes) -> None:
        """Overwrites the stored state of one event."""
        self.execute(
            "UPDATE {events} SET state = ? WHERE originator_id = ? AND originator_version = ?",
            (state, originator_id, version),
        )

    def edit(self, originator_id: str, version: int, **fields: Any) -> int:
        """Changes ``fields`` in one event's stored JSON; the event's notification id."""
        position, _, state = self.event(originator_id, version)
        edited = {**json.loads(state), **fields}
        self.set_state(originator_id, version, json.dumps(edited).encode())
        return position

    def insert_copy(self, originator_id: str, version: int, new: int, **fields: Any) -> int:
        """Inserts a copy of one event as version ``new`` of its stream, ``fields`` changed; the
        copy's notification id."""
        _, topic, state = self.event(originator_id, version)
        forged = {**json.loads(state), "originator_version": new, **fields}
        self.execute(
            "INSERT INTO {events} (originator_id, originator_version, topic, state)"
            " VALUES (?,?,?,?)",
            (originator_id, new, topic, json.dumps(forged).encode()),
        )
        return self.event(originator_id, new)[0]

    def delete(self, originator_id: str, version: int) -> int:
        """Deletes one event (it must be there); its notification id."""
        position, _, _ = self.event(originator_id, version)
        deleted = self.execute(
            "DELETE FROM {events} WHERE originator_id = ? AND originator_version = ?",
            (originator_id, version),
        )
        assert deleted == 1
        return position

    def link_of(self, position: int) -> int:
        """The ``first_id`` of the chain link that covers ``position``."""
        ((first,),) = self.rows(
            "SELECT first_id FROM ledger_chain WHERE first_id <= ? AND last_id >= ?",
            (position, position),
        )
        return int(first)
