"""Database outages fail fast and clearly (DESIGN §7): typed errors, bounded waits, safe retries.

The databases are real. Faults are injected from outside the ledger: a TCP proxy that closes
its port or cuts a connection exactly when the server answers the commit, another connection
that holds a lock and terminates the ledger's backend with ``pg_terminate_backend``, and a
second SQLite connection that holds the file's write lock.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from adapters.cli.common import EXIT_ERROR
from adapters.cli.main import main
from adapters.storage.views import CONNECTIONS_MAX, open_view_database
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import (
    CommitOutcomeUnknown,
    DatabaseUnreachable,
    InfrastructureError,
    LedgerError,
)
from ledger.outcome import Outcome
from tests.support import CLIENT, CTI, DISTRIBUTOR, MASTER, build_network, consume, seed_network
from tests.tcp_proxy import TcpProxy

FAST = "pool_timeout=1&connect_timeout=2"
"""Short waits, so a test of an outage takes about a second."""
UUID = "0b9c3d1e-6f2a-4c4b-9a51-2f1f5c1d7e10"
WAIT_S_MAX = 10.0
"""Bound on how long a test polls for the state it waits for."""


def stamp(cfdi_uuid: str = UUID) -> dict[str, object]:
    """A ConsumeStamp by the stamping service."""
    return consume(cfdi_uuid=cfdi_uuid, actor=MASTER)


def consumptions(pg_url: str, cfdi_uuid: str) -> int:
    """How many stored events consume ``cfdi_uuid`` (read with plain SQL)."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE 'StampingAccount.StampConsumed%%'"
            " AND convert_from(state, 'UTF8') ILIKE %s",
            (f"%{cfdi_uuid}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for(predicate: object, what: str) -> None:
    """Polls ``predicate`` until it holds (bounded)."""
    assert callable(predicate)
    deadline = time.monotonic() + WAIT_S_MAX
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def network(pg_url: str, clock: ManualClock) -> str:
    """The test network in ``pg_url``; C1's CTI holds 10 stamps."""
    seed_network(pg_url, clock, projections="off", cti_stamps=10)
    return pg_url


@pytest.fixture
def proxied(network: str, clock: ManualClock) -> Iterator[tuple[Ledger, TcpProxy]]:
    """A ledger reaching the network's database through a TCP proxy, CTI cached."""
    with TcpProxy(network) as proxy:
        lg = Ledger.open(
            f"{proxy.url}?{FAST}", clock=clock, password_cost="fast", projections="off"
        )
        try:
            lg.execute(stamp("11111111-1111-4111-8111-111111111111"))  # warms the cache
            yield lg, proxy
        finally:
            lg.close()


def test_open_on_a_closed_port_is_an_infrastructure_error_saying_what_to_check(
    clock: ManualClock,
) -> None:
    """Nothing listens: InfrastructureError naming the host and port and what to check."""
    with TcpProxy("postgresql://postgres@127.0.0.1:5432/x") as proxy:
        url = f"{proxy.url}?{FAST}"
    with pytest.raises(InfrastructureError) as caught:
        Ledger.open(url, clock=clock)
    message = str(caught.value)
    assert isinstance(caught.value, LedgerError)
    assert not isinstance(caught.value, CommitOutcomeUnknown)
    assert f"PostgreSQL at 127.0.0.1:{proxy.port}" in message
    assert "Check that the server runs and accepts TCP connections" in message
    assert "\n" not in message


def test_a_command_after_the_server_went_away_is_an_infrastructure_error(
    proxied: tuple[Ledger, TcpProxy], network: str
) -> None:
    """The port closes under a running ledger: commands and reads are DatabaseUnreachable, an
    InfrastructureError whose outcome is known (nothing recorded)."""
    lg, proxy = proxied
    proxy.close()
    with pytest.raises(InfrastructureError) as caught:
        lg.execute(stamp())
    assert type(caught.value) is DatabaseUnreachable
    assert f"127.0.0.1:{proxy.port}" in str(caught.value)
    assert "pool_timeout=1.0 s" in str(caught.value)
    with pytest.raises(InfrastructureError) as read:
        lg.balance(CTI, "stamps")
    assert f"cannot load {CTI!r}" in str(read.value)
    assert consumptions(network, UUID) == 0


def test_a_commit_whose_answer_is_lost_is_retried_by_the_ledger_and_replays(
    proxied: tuple[Ledger, TcpProxy], network: str
) -> None:
    """The server commits, the answer is lost: every command has a key, so the ledger retries
    at once and answers the first outcome (replayed); the stamp is consumed once."""
    lg, proxy = proxied
    before = lg.balance(CTI, "stamps")
    proxy.cut_at_next_select_result()
    outcome = lg.execute(stamp())
    assert proxy.cuts == 1
    assert (outcome.replayed, outcome.balance_after) == (True, before - 1)
    assert consumptions(network, UUID) == 1
    assert lg.balance(CTI, "stamps") == before - 1


def test_a_lost_commit_answer_with_the_server_gone_is_outcome_unknown(
    proxied: tuple[Ledger, TcpProxy], network: str, clock: ManualClock
) -> None:
    """The answer is lost and the server unreachable: CommitOutcomeUnknown; the caller's retry
    with the same key, once the database is back, replays it and records nothing."""
    lg, proxy = proxied
    before = lg.balance(CTI, "stamps")
    proxy.cut_at_next_select_result(then_close=True)
    with pytest.raises(CommitOutcomeUnknown) as caught:
        lg.execute(stamp())
    assert proxy.cuts == 1
    assert "Retry the same commands with the same keys" in str(caught.value)
    assert consumptions(network, UUID) == 1  # it was committed
    with Ledger.open(network, clock=clock, password_cost="fast", projections="off") as back:
        retried = back.execute(stamp())
        assert (retried.replayed, retried.balance_after) == (True, before - 1)
        assert back.balance(CTI, "stamps") == before - 1
    assert consumptions(network, UUID) == 1


UUID_2 = "5d1c0a7e-2b3f-4e8a-9c6d-7f0e1a2b3c4d"


def test_a_lost_answer_to_a_pipelined_write_is_retried_and_the_next_group_decided_again(
    proxied: tuple[Ledger, TcpProxy], network: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two groups: the first is sent, the second decided on top of it, and the first's answer
    is lost. The ledger retries the first (it replays: it was committed), undoes and decides
    the second again; each stamp is consumed once."""
    monkeypatch.setattr("ledger.write.group_commit.PIPELINE_GROUP_MAX", 1)
    lg, proxy = proxied
    before = lg.balance(CTI, "stamps")
    proxy.cut_at_next_select_result()
    first, second = lg.execute_many([stamp(), stamp(UUID_2)])
    assert proxy.cuts == 1
    assert (first.replayed, first.balance_after) == (True, before - 1)  # type: ignore[union-attr]
    assert (second.replayed, second.balance_after) == (False, before - 2)  # type: ignore[union-attr]
    assert (consumptions(network, UUID), consumptions(network, UUID_2)) == (1, 1)
    assert lg.balance(CTI, "stamps") == before - 2


def test_a_pipelined_write_with_the_server_gone_is_outcome_unknown_and_stops_the_batch(
    proxied: tuple[Ledger, TcpProxy], network: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first group's answer is lost and the server is gone: CommitOutcomeUnknown, and the
    caller's second group, decided on top of it, is not recorded."""
    monkeypatch.setattr("ledger.write.group_commit.PIPELINE_GROUP_MAX", 1)
    lg, proxy = proxied
    proxy.cut_at_next_select_result(then_close=True)
    with pytest.raises(CommitOutcomeUnknown):
        lg.execute_many([stamp(), stamp(UUID_2)])
    assert (consumptions(network, UUID), consumptions(network, UUID_2)) == (1, 0)


def killed_at_commit(lg: Ledger, network: str, command: dict[str, object]) -> object:
    """Runs ``command`` while its commit waits for a lock, kills that backend with
    ``pg_terminate_backend``, releases the lock; the outcome or the error raised."""
    answers: list[object] = []

    def run() -> None:
        try:
            answers.append(lg.execute(command))
        except BaseException as exc:  # handed to the test thread
            answers.append(exc)

    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%ledger_record%'"
    )
    with (
        psycopg.connect(network, autocommit=True) as admin,
        psycopg.connect(network) as blocker,
    ):
        blocker.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
        writer = threading.Thread(target=run)
        writer.start()
        wait_for(lambda: admin.execute(waiting).fetchone() is not None, "the blocked commit")
        row = admin.execute(waiting).fetchone()
        assert row is not None
        admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        wait_for(lambda: not writer.is_alive() or admin.execute(waiting).fetchone(), "a retry")
        blocker.rollback()
        writer.join(WAIT_S_MAX)
    (answer,) = answers
    return answer


def test_a_backend_killed_during_its_commit_is_retried_by_the_ledger_and_recorded_once(
    network: str, clock: ManualClock
) -> None:
    """pg_terminate_backend during the commit of a keyed command: the server rolled it back,
    the ledger's own retry records it, and a later retry replays it."""
    with Ledger.open(network, clock=clock, password_cost="fast", projections="off") as lg:
        before = lg.balance(CTI, "stamps")
        outcome = killed_at_commit(lg, network, stamp())
        assert isinstance(outcome, Outcome)
        assert (outcome.replayed, outcome.balance_after) == (False, before - 1)
        assert lg.execute(stamp()).replayed is True
        assert consumptions(network, UUID) == 1


def test_a_command_without_a_key_killed_during_its_commit_is_outcome_unknown(
    network: str, clock: ManualClock
) -> None:
    """Without a key a retry could record it twice, so the ledger says the outcome is unknown
    (here the server rolled it back: nothing is recorded)."""
    tag = {"type": "TagClient", "client_id": CLIENT, "favourite": True, "actor": DISTRIBUTOR}
    with Ledger.open(network, clock=clock, password_cost="fast", projections="off") as lg:
        error = killed_at_commit(lg, network, tag)
        assert isinstance(error, CommitOutcomeUnknown)
        assert "A command without a key may be recorded twice" in str(error)
    with psycopg.connect(network) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE 'Client.Tagged%%'"
        ).fetchone()
    assert row == (0,)


def test_connections_the_server_closed_while_idle_are_not_used(
    network: str, clock: ManualClock
) -> None:
    """After every idle backend is terminated (a restart), the next command just works."""
    with (
        Ledger.open(network, clock=clock, password_cost="fast", projections="off") as lg,
        psycopg.connect(network, autocommit=True) as admin,
    ):
        before = lg.balance(CTI, "stamps")
        others = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        pids = [row[0] for row in admin.execute(others).fetchall()]
        assert pids, "the ledger holds pooled connections"
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(
            lambda: not set(pids) & {r[0] for r in admin.execute(others).fetchall()},
            "the terminated backends to end",
        )
        outcome = lg.execute(stamp())
        assert (outcome.replayed, outcome.balance_after) == (False, before - 1)
        assert consumptions(network, UUID) == 1


def test_a_locked_sqlite_file_is_a_bounded_infrastructure_error(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Another process holds the write lock past busy_timeout: InfrastructureError, no trace."""
    path = tmp_path / "ledger.db"
    with Ledger.open(
        f"sqlite:///{path}?busy_timeout=1", clock=clock, password_cost="fast", projections="off"
    ) as lg:
        build_network(lg, cti_stamps=10)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(InfrastructureError) as caught:
                lg.execute(stamp())
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        message = str(caught.value)
        assert type(caught.value) is InfrastructureError
        assert "the SQLite file " in message
        assert str(path) in message
        assert "busy_timeout=1 s" in message
        assert lg.execute(stamp()).replayed is False
        assert lg.balance(CTI, "stamps") == 9


def test_the_command_line_reports_an_unreachable_server_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ledger balance`` on a closed port exits 2 with one line saying what to check."""
    with TcpProxy("postgresql://postgres@127.0.0.1:5432/x") as proxy:
        url = f"{proxy.url}?{FAST}"
    assert main(["balance", "M", "--url", url]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"PostgreSQL at 127.0.0.1:{proxy.port}" in err
    assert "Check that the server runs" in err


def test_the_views_wait_for_a_locked_sqlite_file_as_long_as_the_url_says(tmp_path: Path) -> None:
    """The view database takes the URL's busy_timeout too (it waited 30 s before)."""
    path = tmp_path / "ledger.db"
    views = open_view_database(f"sqlite:///{path}?busy_timeout=1")
    try:
        with views.write() as cursor:
            cursor.execute("CREATE TABLE probe (x INTEGER)")
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(InfrastructureError) as caught, views.write() as cursor:
                cursor.execute("INSERT INTO probe VALUES (1)")
            waited_s = time.monotonic() - started
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
    finally:
        views.close()
    assert "database is locked" in str(caught.value)
    assert 0.9 <= waited_s < 4.0


def test_the_views_wait_for_a_postgresql_connection_as_long_as_the_url_says(pg_url: str) -> None:
    """Every view connection busy: the next caller waits the URL's pool_timeout, then a typed
    error that says what sets the wait."""
    views = open_view_database(f"{pg_url}?pool_timeout=0.5")
    try:
        with ExitStack() as held:
            for _ in range(CONNECTIONS_MAX):
                held.enter_context(views.read())
            started = time.monotonic()
            with pytest.raises(InfrastructureError) as caught, views.read():
                pass
            waited_s = time.monotonic() - started
    finally:
        views.close()
    assert "no free view database connection after 0.5 s" in str(caught.value)
    assert "pool_timeout" in str(caught.value)
    assert 0.45 <= waited_s < 3.0


def test_exec_reports_a_server_error_with_its_detail_hint_and_context_on_one_line(
    network: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses the write (a trigger raising with DETAIL and HINT, under PL/pgSQL
    CONTEXT): ``exec`` exits 2 with one line that keeps all of them; nothing is recorded."""
    with psycopg.connect(network, autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'refused by a trigger' USING DETAIL = 'the detail line',"
            " HINT = 'the hint line'; END $$"
        )
        admin.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON ledger_events"
            " FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(json.dumps(stamp()).encode())))
    capsys.readouterr()
    assert main(["exec", "--url", network, "--projections", "off"]) == EXIT_ERROR
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("exec: ")]
    assert not [line for line in err.splitlines() if not line.startswith(("exec: ", "{"))]
    for part in ("refused by a trigger", "DETAIL: the detail line", "HINT: the hint line"):
        assert part in line
    assert "CONTEXT: PL/pgSQL function refuse() line 1 at RAISE" in line
    assert consumptions(network, UUID) == 0
