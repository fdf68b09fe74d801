"""A driver's errors become eventsourcing's of the same PEP 249 name, the most specific first."""

from __future__ import annotations

import sqlite3
from types import ModuleType

import psycopg
import psycopg.errors
import pytest
from eventsourcing import persistence

from adapters.storage.recording import driver_errors, persistence_error


@pytest.mark.parametrize(
    ("driver", "exc", "expected"),
    [
        (psycopg, psycopg.errors.UniqueViolation("dup"), persistence.IntegrityError),
        (psycopg, psycopg.errors.SerializationFailure("race"), persistence.OperationalError),
        (psycopg, psycopg.OperationalError("gone"), persistence.OperationalError),
        (psycopg, psycopg.DatabaseError("db"), persistence.DatabaseError),
        (psycopg, psycopg.Error("other"), persistence.PersistenceError),
        (sqlite3, sqlite3.IntegrityError("UNIQUE constraint failed"), persistence.IntegrityError),
        (sqlite3, sqlite3.OperationalError("database is locked"), persistence.OperationalError),
        (sqlite3, sqlite3.DatabaseError("malformed"), persistence.DatabaseError),
        (sqlite3, sqlite3.Error("other"), persistence.PersistenceError),
    ],
)
def test_a_drivers_error_becomes_eventsourcings(
    driver: ModuleType, exc: Exception, expected: type
) -> None:
    error = persistence_error(exc, driver_errors(driver))
    assert type(error) is expected
    assert str(error) == str(exc)
