"""Timeouts in the ledger URL (DESIGN §7): documented defaults, bounded values, no stray options."""

from __future__ import annotations

import pytest

from adapters.storage.config import (
    BUSY_TIMEOUT_S_DEFAULT,
    CONNECT_TIMEOUT_S_DEFAULT,
    POOL_TIMEOUT_S_DEFAULT,
    StoreConfigError,
    describe_store,
    env_for_url,
    postgres_conninfo,
)
from ledger.errors import LedgerError

PG = "postgresql://postgres@db.example:6543/books"


def test_the_default_waits_are_five_seconds_or_less() -> None:
    """Connect, pool wait and SQLite busy timeouts default to at most 5 s."""
    assert (CONNECT_TIMEOUT_S_DEFAULT, POOL_TIMEOUT_S_DEFAULT, BUSY_TIMEOUT_S_DEFAULT) == (5, 5, 5)
    env = env_for_url(PG)
    assert (env["POSTGRES_CONNECT_TIMEOUT"], env["POSTGRES_POOL_TIMEOUT_S"]) == ("5", "5.0")
    assert env_for_url("sqlite:///ledger.db")["SQLITE_LOCK_TIMEOUT"] == "5"


def test_the_url_sets_the_postgresql_timeouts() -> None:
    """``?connect_timeout=`` (whole seconds) and ``?pool_timeout=`` (seconds) reach the store."""
    env = env_for_url(f"{PG}?connect_timeout=3&pool_timeout=0.5")
    assert (env["POSTGRES_CONNECT_TIMEOUT"], env["POSTGRES_POOL_TIMEOUT_S"]) == ("3", "0.5")
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db.example",
        "6543",
        "books",
    )


def test_the_url_sets_the_sqlite_busy_timeout() -> None:
    """``?busy_timeout=`` is the seconds a write waits for another process's lock."""
    env = env_for_url("sqlite:///ledger.db?busy_timeout=2")
    assert (env["SQLITE_LOCK_TIMEOUT"], env["SQLITE_DBNAME"]) == ("2", "ledger.db")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"{PG}?connect_timout=3", "unknown or repeated option 'connect_timout'"),
        (f"{PG}?pool_timeout=1&pool_timeout=2", "unknown or repeated option 'pool_timeout'"),
        (f"{PG}?busy_timeout=1", "unknown or repeated option 'busy_timeout'"),
        ("sqlite:///l.db?pool_timeout=1", "unknown or repeated option 'pool_timeout'"),
        (f"{PG}?connect_timeout=2.5", "option connect_timeout='2.5'"),
        (f"{PG}?pool_timeout=0", "option pool_timeout='0'"),
        (f"{PG}?pool_timeout=nan", "option pool_timeout='nan'"),
        (f"{PG}?pool_timeout=601", "option pool_timeout='601'"),
        ("sqlite:///l.db?busy_timeout=-1", "option busy_timeout='-1'"),
    ],
)
def test_a_bad_option_is_refused_by_name(url: str, words: str) -> None:
    """An unknown, repeated or out-of-range option is a StoreConfigError naming it."""
    with pytest.raises(StoreConfigError) as caught:
        env_for_url(url)
    assert words in str(caught.value)
    assert isinstance(caught.value, LedgerError)


def test_an_option_error_never_shows_the_password() -> None:
    """The URL in the message has no user or password."""
    with pytest.raises(StoreConfigError) as caught:
        env_for_url("postgresql://ana:s3creto@db.example/books?wait=1")
    assert "s3creto" not in str(caught.value)
    assert "db.example/books" in str(caught.value)


def test_several_hosts_are_libpqs_lists_and_default_to_read_write() -> None:
    """``h1:p1,h2,[::1]:p3`` becomes libpq's host and port lists; with several hosts only a
    writable server is taken unless the URL says otherwise; one host takes any."""
    env = env_for_url("postgresql://ana:s%40creto@db1:5433,db2,[::1]:5434/books?pool_timeout=1")
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db1,db2,::1", "5433,5432,5434")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("ana", "s@creto")
    assert env["POSTGRES_TARGET_SESSION_ATTRS"] == "read-write"
    assert "PostgreSQL at db1:5433,db2:5432,[::1]:5434 (database books" in describe_store(env)
    assert "target_session_attrs=read-write" in postgres_conninfo(env)
    assert env_for_url(PG)["POSTGRES_TARGET_SESSION_ATTRS"] == "any"
    follower = env_for_url("postgresql://db1,db2/books?target_session_attrs=prefer-standby")
    assert follower["POSTGRES_TARGET_SESSION_ATTRS"] == "prefer-standby"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"{PG}?target_session_attrs=master", "option target_session_attrs='master'"),
        ("postgresql://db1:x/books", "bad host 'db1:x'"),
        ("postgresql://db1,,db2/books", "bad host ''"),
        ("postgresql://db1:70000/books", "bad host 'db1:70000'"),
    ],
)
def test_a_bad_host_list_or_session_choice_is_refused(url: str, words: str) -> None:
    """A port that is no number, an empty host or an unknown ``target_session_attrs``."""
    with pytest.raises(StoreConfigError) as caught:
        env_for_url(url)
    assert words in str(caught.value)
