"""PostgreSQL connections: a pool that never hands out a connection the server closed, and
recorder methods that fail fast instead of waiting through eventsourcing's retries.
"""

from __future__ import annotations

import functools
import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import ConnectionPool, PostgresDatastore
from psycopg import Connection
from psycopg.rows import DictRow
from psycopg_pool import PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

RECONNECT_DELAY_S_FIRST = 0.05
RECONNECT_DELAY_S_MAX = 0.25
"""Bounds on the pause between attempts to open a connection while the server is away."""

_F = TypeVar("_F", bound=Callable[..., Any])


def without_retry(method: Callable[..., Any]) -> Callable[..., Any]:
    """eventsourcing's recorder method without its retry decorator (10 attempts, 0.2 s apart).

    Those retries multiplied every wait for a connection by ten: with the server down a
    command blocked about 52 s (10 x the pool wait) before failing.
    """
    inner = getattr(method, "__wrapped__", None)
    assert callable(inner), f"{method!r} is no longer wrapped by eventsourcing's retry"
    return cast("Callable[..., Any]", inner)


def read_retried_once(method: _F) -> _F:
    """A read that is tried once more on a fresh connection if its connection broke.

    A read is safe to repeat. A wait for a connection that timed out is not retried: it
    already took the whole ``pool_timeout``.
    """

    @functools.wraps(method)
    def read(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (InterfaceError, OperationalError) as exc:
            if isinstance(exc.__cause__, PoolTimeout):
                raise
            return method(*args, **kwargs)

    return cast("_F", read)


def closed_by_server(conn: Connection[Any]) -> bool:
    """Whether the server closed, or spoke on, an idle pooled connection.

    An idle connection has nothing to read unless the server ended it (a restart, an
    administrator's ``pg_terminate_backend``, an idle timeout): then a termination notice or
    the end of the stream is waiting. One non-blocking ``select``, no round trip.
    """
    if conn.closed or conn.broken:
        return True
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    return bool(readable)


class LedgerPostgresDatastore(PostgresDatastore):
    """eventsourcing's datastore that never hands out a connection the server has closed.

    A write sent on such a connection would fail only after it was sent, its commit outcome
    unknown; after a server restart every pooled connection is one. They are dropped (the pool
    replaces them) and another is taken, without the pool's own ``check`` (a round trip per
    use, or a sleep of a second or more after each failed check).
    """

    @contextmanager
    def get_connection(self) -> Iterator[Connection[DictRow]]:
        """A pooled connection that the server has not closed."""
        for _ in range((self.pool.max_size or 1) + 1):
            with super().get_connection() as conn:
                if not closed_by_server(conn):
                    yield conn
                    return
                conn.close()  # the pool opens a new one when this one comes back
        raise OperationalError("every pooled connection had been closed by the server")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a wait for a connection that timed out: no
    server of the URL could be used within connect_timeout and pool_timeout."""
    seen: BaseException | None = exc
    for _ in range(5):  # eventsourcing and the recorders wrap the pool's error once or twice
        if seen is None:
            return False
        if isinstance(seen, PoolTimeout):
            return True
        seen = seen.__cause__
    return False


class _QuickAttempt(AttemptWithBackoff):
    """psycopg_pool's reconnection attempts, a quarter second apart at most.

    psycopg_pool starts at 1 s and doubles the pause up to its ``reconnect_timeout``: after an
    outage of half a minute its next attempt could be 30 s away, so the first calls after the
    server (or a newly promoted primary) came back still waited out their ``pool_timeout``.
    """

    INITIAL_DELAY = RECONNECT_DELAY_S_FIRST

    def update_delay(self, now: float) -> None:
        """The next pause: psycopg_pool's, capped at ``RECONNECT_DELAY_S_MAX``."""
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_DELAY_S_MAX)


class LedgerConnectionPool(ConnectionPool[Any]):
    """eventsourcing's pool whose reconnection attempts are quick (``_QuickAttempt``).

    Its ``reconnect_timeout`` is set to how long a caller may wait (connect_timeout +
    pool_timeout): attempts stop when nobody can be waiting for them any more, and the next
    call that finds no connection starts them again at once (psycopg_pool grows the pool).
    """

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _QuickAttempt(timeout=self.reconnect_timeout), growing)


def take_connection(datastore: PostgresDatastore) -> Connection[Any]:
    """A pooled connection the server has not closed, as ``get_connection`` hands out; the
    caller gives it back with ``datastore.pool.putconn``."""
    pool = datastore.pool
    pool.open(datastore.pool_open_timeout is not None, datastore.pool_open_timeout or 30.0)
    for _ in range((pool.max_size or 1) + 1):
        conn = pool.getconn()
        if not closed_by_server(conn):
            return conn
        conn.close()  # the pool opens a new one when this one comes back
        pool.putconn(conn)
    raise OperationalError("every pooled connection had been closed by the server")
