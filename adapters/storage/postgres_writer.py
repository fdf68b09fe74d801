"""The connection a PostgreSQL recorder keeps between its writes, and the pipelined write on it.

One write at a time holds it (its lock); a concurrent writer takes a pooled connection instead.
A pipelined write is sent with libpq's asynchronous API and answered later (``Sent``).
"""

from __future__ import annotations

import contextlib
import select
import struct
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from eventsourcing.persistence import (
    PersistenceError,
)
from eventsourcing.postgres import PostgresDatastore
from psycopg import Connection, Cursor
from psycopg.pq import Format
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from adapters.storage.postgres_arrays import record_arrays
from adapters.storage.postgres_pool import closed_by_server, take_connection
from adapters.storage.recording import (
    OutcomeUnknown,
    driver_errors,
    persistence_error,
    raising,
)
from ledger.chain import StoredRow
from ledger.write.ports import KeyRecord, Sent, wait_readable

_RECORD_LATER = b"ledger_record_later"
"""The name ``WriterConnection.send`` prepares the recorder's ``record_statement`` under."""
_BINARY_PARAMS = (Format.BINARY,) * 8
_INT8 = struct.Struct(">q")
_FATAL_ERROR = psycopg.pq.ExecStatus.FATAL_ERROR
"""Looked up once, not through psycopg's modules on every answer."""


def _flush(pgconn: psycopg.pq.abc.PGconn) -> None:
    """Sends what libpq holds for the server, waiting while the socket is full."""
    while pgconn.flush():
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLOUT)
        poller.poll()
        pgconn.consume_input()  # the server may be answering while it reads


def _results(pgconn: psycopg.pq.abc.PGconn) -> list[psycopg.pq.abc.PGresult]:
    """Every result of the call sent on ``pgconn``, waiting for them (without the GIL)."""
    results: list[psycopg.pq.abc.PGresult] = []
    while True:
        pgconn.consume_input()
        if pgconn.is_busy():
            wait_readable([pgconn.socket])
            continue
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


_PSYCOPG_ERRORS = driver_errors(psycopg)


def _persistence_error(exc: psycopg.Error) -> PersistenceError:
    """eventsourcing's error for a psycopg error, as ``PostgresDatastore.get_connection``
    gives it."""
    return persistence_error(exc, _PSYCOPG_ERRORS)


@contextmanager
def _as_persistence_errors() -> Iterator[None]:
    """psycopg's errors as eventsourcing's (``_persistence_error``)."""
    try:
        yield
    except psycopg.Error as exc:
        raise _persistence_error(exc) from exc


class WriterConnection:
    """The pooled connection and cursor a PostgreSQL recorder keeps for its writes.

    A write takes it when it is free (its lock), else a pooled connection. It goes back to the
    pool (which replaces it) when the server closed it or it broke, and on ``release``.
    """

    def __init__(self, datastore: PostgresDatastore, record_function: Identifier) -> None:
        self.datastore = datastore
        self._lock = threading.Lock()
        self._cursor: Cursor[Any] | None = None
        self._kept_poll: select.poll | None = None
        """The kept connection's socket, registered once (``_kept`` asks it whether the server
        closed the connection)."""
        # ``send`` calls the record function through a statement prepared under its own name,
        # on the connections where it was prepared.
        self._prepared_later: weakref.WeakSet[Connection[Any]] = weakref.WeakSet()
        self._prepared_cursor: Cursor[Any] | None = None
        """The kept cursor whose connection is known to have it prepared (a look-up in
        ``_prepared_later`` costs ~2,000 instructions a write)."""
        self.record_later_prepare = (
            SQL(
                "PREPARE {name} (text[], bigint[], text[], bytea[], text[], text[], bytea[], "
                "bytea) AS SELECT * FROM {function}($1, $2, $3, $4, $5, $6, $7, $8)"
            )
            .format(name=Identifier(_RECORD_LATER.decode()), function=record_function)
            .as_string()
        )

    def send(
        self,
        stored_events: Sequence[StoredRow],
        keys: Sequence[KeyRecord],
        at_once: Callable[..., Sequence[int] | None],
    ) -> Sent:
        """The record function called on the kept connection without waiting for the answer.

        Its ``answer`` waits for it and returns the ids, or raises what a write at once
        raises; it must be taken (the connection is held until then). The call is sent with
        libpq's asynchronous API, so that the caller's thread decides the next commands while
        the server works: the statement is the recorder's ``record_statement``, prepared once
        per connection, with the same binary parameters. If the kept connection is busy the
        write is made at once (``at_once(stored_events, keys=keys)``) on a pooled connection.
        """
        if not self._lock.acquire(blocking=False):
            try:
                ids = at_once(stored_events, keys=keys) or []
            except PersistenceError as exc:
                return raising(exc)
            return Sent(lambda: ids)
        try:
            params = record_arrays(stored_events, keys)
            # psycopg's errors as ``_as_persistence_errors`` gives them, without its generator
            # (~10,000 instructions a write).
            try:
                curs = self._kept()
                if curs is not self._prepared_cursor:
                    conn = curs.connection
                    if conn not in self._prepared_later:
                        conn.execute(self.record_later_prepare)
                        self._prepared_later.add(conn)
                    self._prepared_cursor = curs
            except psycopg.Error as exc:
                raise _persistence_error(exc) from exc
        except BaseException as exc:
            self._lock.release()
            return raising(exc)
        pgconn = curs.connection.pgconn
        try:
            pgconn.send_query_prepared(_RECORD_LATER, params, _BINARY_PARAMS, Format.BINARY)
            _flush(pgconn)
        except BaseException as exc:
            # Part of the call may have reached the server: its outcome is unknown.
            return self._later_failed(exc)

        def finish() -> Sequence[int]:
            try:
                results = _results(pgconn)
            except BaseException as exc:
                self._later_failed(exc).answer()
                raise AssertionError("unreachable") from exc  # pragma: no cover
            try:
                for result in results:
                    if result.status == _FATAL_ERROR:
                        with _as_persistence_errors():
                            raise psycopg.errors.error_from_result(result, "utf-8")
                (rows,) = results
                ids = [_INT8.unpack(rows.get_value(i, 0) or b"")[0] for i in range(rows.ntuples)]
            finally:
                self._lock.release()
            assert len(ids) == len(stored_events), (len(ids), len(stored_events))
            return ids

        return Sent(finish, pgconn.socket)

    def _later_failed(self, exc: BaseException) -> Sent:
        """A write sent by ``send`` whose connection failed: the connection is closed and
        given back, and the outcome is unknown (the server may have committed)."""
        try:
            curs = self._cursor
            if curs is not None:
                with contextlib.suppress(psycopg.Error):
                    curs.connection.close()
                self._drop()
        finally:
            self._lock.release()
        if not isinstance(exc, Exception):
            raise exc
        return raising(OutcomeUnknown(str(exc)))

    @contextmanager
    def cursor(self) -> Iterator[Cursor[Any]]:
        """A cursor for one write: on the kept connection when it is free (no pool checkout,
        and psycopg reuses the cursor's adapters and converted query: ~40 us of a single
        write's ~150 us of client work), else on a pooled one.

        Errors are eventsourcing's, as from ``get_connection``.
        """
        if not self._lock.acquire(blocking=False):
            with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
                yield c
            return
        try:
            with _as_persistence_errors():
                curs = self._kept()
                try:
                    yield curs
                finally:
                    if curs.connection.broken or curs.connection.closed:
                        self._drop()
        finally:
            self._lock.release()

    def _kept(self) -> Cursor[Any]:
        """The kept cursor (the lock is held): a new one if there was none or the server
        closed its connection.

        Closed: as ``closed_by_server`` tells, with a poll of the socket registered when the
        connection was taken instead of a ``select`` built each time (~3,500 instructions);
        any event counts (readable, hung up, an error, or a socket no longer open).
        """
        curs = self._cursor
        if curs is not None:
            assert self._kept_poll is not None
            if curs.connection.closed or self._kept_poll.poll(0):
                self._drop()
                curs = None
        if curs is None:
            curs = take_connection(self.datastore).cursor(row_factory=tuple_row)
            poller = select.poll()
            poller.register(curs.connection.pgconn.socket, select.POLLIN)
            self._cursor, self._kept_poll = curs, poller
        return curs

    def _drop(self) -> None:
        """Gives the kept connection back to the pool (the lock is held); one the server
        closed or that broke is closed first, so that the pool replaces it."""
        curs, self._cursor = self._cursor, None
        self._kept_poll = self._prepared_cursor = None
        if curs is not None:
            conn = curs.connection
            with contextlib.suppress(psycopg.Error):
                curs.close()
            if conn.broken or closed_by_server(conn):
                conn.close()
            self.datastore.pool.putconn(conn)

    def release(self) -> None:
        """Gives the kept connection back to the pool (before the pool closes)."""
        with self._lock:
            self._drop()
