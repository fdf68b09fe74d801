"""Several hosts in one URL (DESIGN §8): libpq's list, ``target_session_attrs``, a promotion.

A real primary and hot standby (``tests/pgcluster.py``). A URL naming both picks the writable
one for the events and the views (``read-write``, the default with several hosts), or the
standby for a follower (``prefer-standby``); after the primary dies and the standby is
promoted, the same open ``Ledger`` writes and projects on the new primary by itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from ledger.api import Ledger
from ledger.errors import InfrastructureError
from tests.pgcluster import Replica, _Runner, replica, required_bindir
from tests.support import CTI, MASTER, build_network, consume

SHORT = "connect_timeout=2&pool_timeout=2"


@pytest.fixture
def cluster() -> Iterator[Replica]:
    """A throwaway primary and hot standby for one test."""
    with replica(required_bindir("a replica")) as made:
        yield made


def hosts(cluster: Replica, *, standby_first: bool = False) -> str:
    """``127.0.0.1:P1,127.0.0.1:P2``: the primary first, or the standby first."""
    servers = [cluster.primary, cluster.standby]
    if standby_first:
        servers.reverse()
    return ",".join(f"127.0.0.1:{server.port}" for server in servers)


def consumed(url: str) -> int:
    """How many stamps the events of ``url``'s server consume (plain SQL)."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE 'StampingAccount.StampConsumed%'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_url_listing_the_standby_first_writes_to_the_primary_and_a_follower_reads_the_standby(
    cluster: Replica,
) -> None:
    """With the standby listed first, commands and views go to the writable server; the same
    hosts with ``prefer-standby`` read the log from the standby."""
    url = f"postgresql://postgres@{hosts(cluster, standby_first=True)}/ledger?{SHORT}"
    with Ledger.open(url, password_cost="fast") as lg:
        build_network(lg, cti_stamps=10)
        assert lg.execute(consume(actor=MASTER)).balance_after == 9
        (row,) = lg.views.stamping_accounts("D1")
        assert (row.cti_id, row.used, row.balance) == (CTI, 1, 9)
        assert lg.status()["log_standby"] is False
    assert consumed(cluster.primary.url("ledger")) == 1
    cluster.wait_replayed("ledger")
    follower = f"postgresql://postgres@{hosts(cluster)}/ledger?target_session_attrs=prefer-standby"
    with Ledger.open(follower, views_url=url, projections="off", create_tables=False) as lg:
        assert lg.status()["log_standby"] is True  # the primary is listed first, yet not used
        assert lg.verify().ok


def test_after_a_promotion_the_same_ledger_writes_and_projects_on_the_new_primary(
    cluster: Replica,
) -> None:
    """The primary dies: a call fails naming both servers. The standby is promoted: the next
    call, on the same open ledger, is recorded there and its views follow; verify holds."""
    url = f"postgresql://postgres@{hosts(cluster)}/ledger?{SHORT}"
    with Ledger.open(url, password_cost="fast") as lg:
        build_network(lg, cti_stamps=10)
        assert lg.execute(consume(actor=MASTER)).balance_after == 9
        cluster.wait_replayed("ledger")
        runner = _Runner(required_bindir("a replica"), cluster.primary.datadir.parent)
        runner.stop(cluster.primary)
        with pytest.raises(InfrastructureError) as caught:
            lg.execute(consume(actor=MASTER))
        assert hosts(cluster) in str(caught.value)
        assert "target_session_attrs=read-write" in str(caught.value)
        runner.run("pg_ctl", "-D", str(cluster.standby.datadir), "-w", "promote")
        outcome = lg.execute(consume(actor=MASTER))
        assert (outcome.replayed, outcome.balance_after) == (False, 8)
        (row,) = lg.views.stamping_accounts("D1")
        assert (row.used, row.balance) == (2, 8)
        report = lg.verify()
        assert report.ok, report.breaches
    assert consumed(cluster.standby.url("ledger")) == 2
