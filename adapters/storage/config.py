"""The ledger URL as eventsourcing's environment, and where it points in error messages.

Configuration comes only from the URL (``env_for_url``; the cipher key from
``LEDGER_CIPHER_KEY``), never from stray environment variables. Its waits are bounded: an unknown
or out-of-range option is refused.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlparse

import psycopg

from ledger.errors import LedgerError

CONNECT_TIMEOUT_S_DEFAULT = 5
"""Seconds to open one PostgreSQL connection (URL ``?connect_timeout=``, whole seconds; libpq
waits at least 2)."""
POOL_TIMEOUT_S_DEFAULT = 5.0
"""Seconds a command waits for a pooled PostgreSQL connection, (re)connecting included (URL
``?pool_timeout=``). Past it the command fails with ``InfrastructureError``."""
BUSY_TIMEOUT_S_DEFAULT = 5
"""Seconds a SQLite command waits while another process holds the file's write lock (URL
``?busy_timeout=``, whole seconds)."""
TIMEOUT_S_MAX = 600
"""Bound on any timeout given in a URL."""
POSTGRES_POOL_TIMEOUT_S = "POSTGRES_POOL_TIMEOUT_S"
"""The environment key (ours, not eventsourcing's) that carries ``pool_timeout``."""


class StoreConfigError(LedgerError):
    """Raised when a ledger URL or store setting cannot be used."""


def _checked_cipher_key(key: str) -> str:
    """``key`` if it is a base64 AES key of 16, 24 or 32 bytes; a clear error otherwise."""
    try:
        size = len(base64.b64decode(key.encode("ascii"), validate=True))
    except (ValueError, UnicodeError):
        size = -1
    if size not in (16, 24, 32):
        raise StoreConfigError("LEDGER_CIPHER_KEY is not a base64 AES key of 16, 24 or 32 bytes")
    return key


def postgres_conninfo(env: Mapping[str, str]) -> str:
    """A libpq connection string from a PostgreSQL store's environment (``env_for_url``)."""
    return str(
        psycopg.conninfo.make_conninfo(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=env["POSTGRES_CONNECT_TIMEOUT"],
        )
    )


def env_for_url(url: str | None, *, create_tables: bool = True) -> dict[str, str]:
    """The eventsourcing environment for ``sqlite:///path`` or ``postgresql://user@host/db``."""
    if url is None:
        url = os.environ.get("LEDGER_URL") or "sqlite:///ledger.db"
    parsed = urlparse(url)
    common = {
        "ORIGINATOR_ID_TYPE": "text",
        "IS_SNAPSHOTTING_ENABLED": "y",
        "CREATE_TABLE": "y" if create_tables else "n",
    }
    cipher_key = os.environ.get("LEDGER_CIPHER_KEY")
    if cipher_key:
        common["CIPHER_KEY"] = _checked_cipher_key(cipher_key)
        # eventsourcing's default cipher needs pycryptodome; ours is the `cryptography` package.
        common["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
    if parsed.scheme == "sqlite":
        sqlite_options = _url_options(url, parsed.query, {"busy_timeout": BUSY_TIMEOUT_S_DEFAULT})
        path = unquote(parsed.path)
        if parsed.netloc:
            path = parsed.netloc + path
        if (
            path.startswith("/")
            and url.startswith("sqlite:///")
            and not url.startswith("sqlite:////")
        ):
            path = path[1:]  # sqlite:///ledger.db is relative; sqlite:////abs/path is absolute.
        if not path:
            raise StoreConfigError(f"no SQLite file in {url!r}")
        return {
            **common,
            "PERSISTENCE_MODULE": "adapters.storage.sqlite:LedgerSQLiteFactory",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": str(sqlite_options["busy_timeout"]),
        }
    if parsed.scheme in ("postgresql", "postgres"):
        options = _url_options(
            url,
            parsed.query,
            {"connect_timeout": CONNECT_TIMEOUT_S_DEFAULT, "pool_timeout": POOL_TIMEOUT_S_DEFAULT},
        )
        return {
            **common,
            "PERSISTENCE_MODULE": "adapters.storage.postgres:LedgerPostgresFactory",
            "POSTGRES_DBNAME": (parsed.path or "/").lstrip("/") or "postgres",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_LOCK_TIMEOUT": "10",
            # libpq's connect timeout (eventsourcing reads the same key as the pool's wait;
            # LedgerPostgresFactory sets both right).
            "POSTGRES_CONNECT_TIMEOUT": str(options["connect_timeout"]),
            POSTGRES_POOL_TIMEOUT_S: repr(float(options["pool_timeout"])),
        }
    raise StoreConfigError(f"unsupported ledger URL {url!r} (sqlite:/// or postgresql://)")


def _url_options(url: str, query: str, defaults: dict[str, int | float]) -> dict[str, int | float]:
    """The timeouts of a URL's query string over ``defaults``; anything else is refused.

    Whole seconds for every option but ``pool_timeout``; each above 0 and at most
    ``TIMEOUT_S_MAX``. An unknown or repeated option is an error, never silently ignored.
    """
    options = dict(defaults)
    seen: set[str] = set()
    shown = url.split("?", 1)[0].rsplit("@", maxsplit=1)[-1]  # never echo a password
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name not in defaults or name in seen:
            known = ", ".join(sorted(defaults))
            raise StoreConfigError(
                f"unknown or repeated option {name!r} in the ledger URL for {shown}"
                f" (known: {known})"
            )
        seen.add(name)
        whole = isinstance(defaults[name], int)
        try:
            value: int | float = int(text) if whole else float(text)
        except ValueError:
            value = math.nan
        if not (0 < value <= TIMEOUT_S_MAX):  # also refuses nan
            unit = "whole seconds" if whole else "seconds"
            raise StoreConfigError(
                f"option {name}={text!r} in the ledger URL: expected {unit} above 0 and at most"
                f" {TIMEOUT_S_MAX}"
            )
        options[name] = value
    return options


def describe_store(env: Mapping[str, str]) -> str:
    """Where the events are kept, for error messages (never the password)."""
    if "SQLITE_DBNAME" in env:
        return f"the SQLite file {env['SQLITE_DBNAME']}"
    return (
        f"PostgreSQL at {env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT')}"
        f" (database {env.get('POSTGRES_DBNAME')}, user {env.get('POSTGRES_USER')})"
    )


def infrastructure_message(action: str, env: Mapping[str, str], exc: BaseException) -> str:
    """One line: what failed, where, the driver's reason, and what to check."""
    reason = " ".join(str(exc).split()).rstrip(".?! ")  # libpq's messages span lines
    if "SQLITE_DBNAME" in env:
        check = (
            "Check that no other process (another ledger, a backup, a sqlite3 shell) holds"
            " a long write transaction on the file, and that the file and its directory are"
            f" writable; waited busy_timeout={env.get('SQLITE_LOCK_TIMEOUT')} s (URL option)"
        )
    else:
        check = (
            f"Check that the server runs and accepts TCP connections at"
            f" {env.get('POSTGRES_HOST')}:{env.get('POSTGRES_PORT')}, that the URL's host,"
            f" port, database and user are right, and the network between; waited at most"
            f" connect_timeout={env.get('POSTGRES_CONNECT_TIMEOUT')} s to connect and"
            f" pool_timeout={env.get(POSTGRES_POOL_TIMEOUT_S)} s for a connection (URL options)"
        )
    return f"cannot {action}: {describe_store(env)}: {reason}. {check}"
