"""A driver's errors become eventsourcing's of the same PEP 249 name, the most specific first."""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg.errors
import pytest
from eventsourcing import persistence

from adapters.storage.recording import driver_errors, persistence_error


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (psycopg.errors.UniqueViolation("dup"), persistence.IntegrityError),
        (psycopg.errors.SerializationFailure("race"), persistence.OperationalError),
        (psycopg.OperationalError("gone"), persistence.OperationalError),
        (psycopg.DatabaseError("db"), persistence.DatabaseError),
        (psycopg.Error("other"), persistence.PersistenceError),
    ],
)
def test_a_psycopg_error_becomes_eventsourcings(exc: Exception, expected: type) -> None:
    error = persistence_error(exc, driver_errors(psycopg))
    assert type(error) is expected
    assert str(error) == str(exc)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (sqlite3.IntegrityError("UNIQUE constraint failed"), persistence.IntegrityError),
        (sqlite3.OperationalError("database is locked"), persistence.OperationalError),
        (sqlite3.DatabaseError("malformed"), persistence.DatabaseError),
        (sqlite3.Error("other"), persistence.PersistenceError),
    ],
)
def test_a_sqlite_error_becomes_eventsourcings(exc: Exception, expected: type) -> None:
    error = persistence_error(exc, driver_errors(sqlite3))
    assert type(error) is expected
    assert str(error) == str(exc)
