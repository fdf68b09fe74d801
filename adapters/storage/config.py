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
POSTGRES_TARGET_SESSION_ATTRS = "POSTGRES_TARGET_SESSION_ATTRS"
"""The environment key (ours) that carries libpq's ``target_session_attrs``."""
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
"""libpq's values of ``target_session_attrs`` (URL option): which of the URL's hosts to use."""
HOSTS_MAX = 16
"""Bound on the hosts one URL lists."""


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
        attrs, query = _target_session_attrs(url, parsed.query)
        options = _url_options(
            url,
            query,
            {"connect_timeout": CONNECT_TIMEOUT_S_DEFAULT, "pool_timeout": POOL_TIMEOUT_S_DEFAULT},
        )
        user, password, hosts, ports = _postgres_netloc(url, parsed.netloc)
        if attrs is None:
            # Several hosts are a primary and its standbys: the events are written, so by
            # default only a writable server will do (a follower asks for prefer-standby).
            attrs = "read-write" if len(hosts) > 1 else "any"
        return {
            **common,
            "PERSISTENCE_MODULE": "adapters.storage.postgres:LedgerPostgresFactory",
            "POSTGRES_DBNAME": unquote(parsed.path or "/").lstrip("/") or "postgres",
            # libpq's lists: it tries the hosts in order (one port may serve them all).
            "POSTGRES_HOST": ",".join(hosts),
            "POSTGRES_PORT": ",".join(ports),
            POSTGRES_TARGET_SESSION_ATTRS: attrs,
            "POSTGRES_USER": user,
            "POSTGRES_PASSWORD": password,
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_LOCK_TIMEOUT": "10",
            # libpq's connect timeout (eventsourcing reads the same key as the pool's wait;
            # LedgerPostgresFactory sets both right).
            "POSTGRES_CONNECT_TIMEOUT": str(options["connect_timeout"]),
            POSTGRES_POOL_TIMEOUT_S: repr(float(options["pool_timeout"])),
        }
    raise StoreConfigError(f"unsupported ledger URL {url!r} (sqlite:/// or postgresql://)")


def _postgres_netloc(url: str, netloc: str) -> tuple[str, str, list[str], list[str]]:
    """User, password, hosts and ports of ``user:password@h1:p1,h2:p2`` (libpq's URI form).

    A host without a port gets 5432; an IPv6 address is written in brackets.
    """
    userinfo, _, hostlist = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    shown = url.split("?", 1)[0].rsplit("@", maxsplit=1)[-1]  # never echo a password
    hosts: list[str] = []
    ports: list[str] = []
    for item in (hostlist or "127.0.0.1").split(","):
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host or not (port.isdigit() or port == "") or not 0 < int(port or 5432) < 65536:
            raise StoreConfigError(f"bad host {item!r} in the ledger URL for {shown}")
        hosts.append(unquote(host))
        ports.append(port or "5432")
    if len(hosts) > HOSTS_MAX:
        raise StoreConfigError(f"more than {HOSTS_MAX} hosts in the ledger URL for {shown}")
    return unquote(user or "postgres"), unquote(password), hosts, ports


def _target_session_attrs(url: str, query: str) -> tuple[str | None, str]:
    """``target_session_attrs`` from a query string (checked), and the rest of the query."""
    found: str | None = None
    rest = []
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name != "target_session_attrs":
            rest.append(f"{name}={text}")
            continue
        if found is not None or text not in TARGET_SESSION_ATTRS:
            shown = url.split("?", 1)[0].rsplit("@", maxsplit=1)[-1]
            raise StoreConfigError(
                f"option target_session_attrs={text!r} in the ledger URL for {shown}: expected"
                f" once, one of {', '.join(TARGET_SESSION_ATTRS)}"
            )
        found = text
    return found, "&".join(rest)


def postgres_conninfo(env: Mapping[str, str]) -> str:
    """A libpq connection string from the store's environment (every host, the same choice
    among them as the pool's)."""
    return str(
        psycopg.conninfo.make_conninfo(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=env["POSTGRES_CONNECT_TIMEOUT"],
            target_session_attrs=env.get(POSTGRES_TARGET_SESSION_ATTRS) or None,
        )
    )


def postgres_servers(env: Mapping[str, str]) -> str:
    """``host:port`` of each server the URL lists, comma-separated (for messages)."""
    hosts = env.get("POSTGRES_HOST", "").split(",")
    ports = env.get("POSTGRES_PORT", "").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    return ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for host, port in zip(hosts, ports, strict=False)
    )


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
    attrs = env.get(POSTGRES_TARGET_SESSION_ATTRS) or "any"
    chosen = "" if attrs == "any" else f", target_session_attrs={attrs}"
    return (
        f"PostgreSQL at {postgres_servers(env)}"
        f" (database {env.get('POSTGRES_DBNAME')}, user {env.get('POSTGRES_USER')}{chosen})"
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
            f" {postgres_servers(env)}, that the URL's host,"
            f" port, database and user are right, and the network between; waited at most"
            f" connect_timeout={env.get('POSTGRES_CONNECT_TIMEOUT')} s to connect and"
            f" pool_timeout={env.get(POSTGRES_POOL_TIMEOUT_S)} s for a connection (URL options)"
        )
    return f"cannot {action}: {describe_store(env)}: {reason}. {check}"
