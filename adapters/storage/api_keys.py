"""API keys of the HTTP service (DESIGN §11), kept in the ledger's own database.

A key is shown once, when it is made: ``lgk_<key id>_<secret>``. The key id (64 random bits, in
hex) is public: it names the key in ``ledger api-key list`` and ``revoke``. The secret is 256
random bits; only its SHA-256 is stored. A fast hash is enough here, unlike for passwords: a
256-bit secret cannot be guessed, so there is nothing for a slow hash to slow down. A presented
key is found by its id and its digest compared in constant time (``hmac.compare_digest``).

Two tables, created like the views' (``adapters/storage/views.py`` does the SQL dialects):

- ``ledger_api_keys``: one row per key (id, digest, actor, scope, name, who made it and when,
  who revoked it and when);
- ``ledger_api_key_events``: what was done to the keys, append-only: ``created`` and ``revoked``
  rows with who, when, which actor and scope. Neither table ever holds a key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from adapters.storage.views import ViewStorage, open_view_database
from ledger.errors import LedgerError
from ledger.json_fields import json_fields
from ledger.projections.base import Table

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
KEY_PREFIX = "lgk_"
KEY_ID_BYTES = 8
"""Random bytes of a key's public id (16 hex digits)."""
SECRET_BYTES = 32
"""Random bytes of a key's secret: 256 bits."""
NAME_CHARS_MAX = 200
BY_CHARS_MAX = 200
KEYS_LISTED_MAX = 10_000
"""Bound on the keys ``list_keys`` returns."""

_KEY_SHAPE = re.compile(r"^lgk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")

KEYS = Table(
    "ledger_api_keys",
    (
        ("key_id", "text"),
        ("digest", "text"),
        ("actor_id", "text"),
        ("scope", "text"),
        ("name", "text"),
        ("created_at", "ts"),
        ("created_by", "text"),
        ("revoked_at", "ts"),
        ("revoked_by", "text"),
    ),
    ("key_id",),
)
KEY_EVENTS = Table(
    "ledger_api_key_events",
    (
        ("key_id", "text"),
        ("action", "text"),
        ("at", "ts"),
        ("by_whom", "text"),
        ("actor_id", "text"),
        ("scope", "text"),
    ),
    ("key_id", "action"),
)


class ApiKeyError(LedgerError):
    """Raised when a key cannot be made or revoked as asked (unknown id, already revoked)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored (never its secret): who it acts as, what it may do, its history."""

    key_id: str
    actor_id: str
    scope: Scope
    name: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The key as JSON-ready data."""
        return json_fields(self)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    found = _KEY_SHAPE.match(token)
    return None if found is None else (found.group(1), found.group(2))


class ApiKeyStore:
    """The API keys in a ledger's database (SQLite or PostgreSQL; ``memory:`` keeps them in a
    private in-memory database)."""

    def __init__(self, database: ViewStorage) -> None:
        self.database = database

    @classmethod
    def open(cls, url: str | None, *, create_tables: bool = True) -> ApiKeyStore:
        """The key store of the ledger at ``url`` (the events' database, not ``views_url``)."""
        store = cls(open_view_database(url))
        if create_tables:
            try:
                store.database.create([KEYS, KEY_EVENTS])
            except BaseException:
                store.close()
                raise
        return store

    def create(
        self, actor_id: str, scope: Scope, *, name: str, by: str, now: datetime
    ) -> tuple[ApiKey, str]:
        """Makes a key for ``actor_id``; returns it and the key text, which is never stored."""
        if scope not in SCOPES:
            raise ApiKeyError(f"scope {scope!r}: read or write")
        if len(name) > NAME_CHARS_MAX or len(by) > BY_CHARS_MAX:
            raise ApiKeyError(f"name and by: at most {NAME_CHARS_MAX} characters")
        key_id = secrets.token_hex(KEY_ID_BYTES)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        key = ApiKey(key_id, actor_id, scope, name, now, by)
        with self.database.write() as cursor:
            ts = cursor.dialect.ts(now)
            cursor.insert(
                KEYS,
                [(key_id, _digest(secret), actor_id, scope, name, ts, by, None, None)],
            )
            cursor.insert(KEY_EVENTS, [(key_id, "created", ts, by, actor_id, scope)])
        return key, f"{KEY_PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str, *, by: str, now: datetime) -> ApiKey:
        """Revokes a key for good; ``ApiKeyError`` if there is no such key or it was revoked."""
        with self.database.write() as cursor:
            cursor.execute(
                "SELECT actor_id, scope, revoked_at FROM ledger_api_keys WHERE key_id = ?",
                (key_id,),
            )
            rows = cursor.fetchall()
            if not rows:
                raise ApiKeyError(f"no API key {key_id!r}")
            actor_id, scope, revoked_at = rows[0]
            if revoked_at is not None:
                raise ApiKeyError(f"API key {key_id} was already revoked")
            ts = cursor.dialect.ts(now)
            cursor.execute(
                "UPDATE ledger_api_keys SET revoked_at = ?, revoked_by = ? WHERE key_id = ?",
                (ts, by, key_id),
            )
            cursor.insert(KEY_EVENTS, [(key_id, "revoked", ts, by, actor_id, scope)])
        found = self.get(key_id)
        assert found is not None
        return found

    def get(self, key_id: str) -> ApiKey | None:
        """The key with that id, revoked or not."""
        found = self._stored(key_id)
        return None if found is None else found[0]

    def _stored(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key with that id and the digest of its secret, or None."""
        with self.database.read() as cursor:
            cursor.execute(
                "SELECT key_id, actor_id, scope, name, created_at, created_by, revoked_at,"
                " revoked_by, digest FROM ledger_api_keys WHERE key_id = ?",
                (key_id,),
            )
            rows = cursor.fetchall()
            return (_key(cursor.dialect, rows[0][:-1]), str(rows[0][-1])) if rows else None

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        with self.database.read() as cursor:
            cursor.execute(
                "SELECT key_id, actor_id, scope, name, created_at, created_by, revoked_at,"
                " revoked_by FROM ledger_api_keys ORDER BY created_at, key_id LIMIT ?",
                (KEYS_LISTED_MAX,),
            )
            return [_key(cursor.dialect, row) for row in cursor.fetchall()]

    def events(self, key_id: str) -> list[tuple[str, datetime, str, str, str]]:
        """``(action, at, by, actor_id, scope)`` of what was done to a key, in order."""
        with self.database.read() as cursor:
            cursor.execute(
                "SELECT action, at, by_whom, actor_id, scope FROM ledger_api_key_events"
                " WHERE key_id = ? ORDER BY at, action",
                (key_id,),
            )
            dialect = cursor.dialect
            out = []
            for action, at, by, actor_id, scope in cursor.fetchall():
                when = dialect.to_ts(at)
                assert when is not None
                out.append((action, when, by, actor_id, scope))
            return out

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key ``token`` is, or None (malformed, unknown or revoked: the caller is
        told nothing more)."""
        parts = split_key(token)
        if parts is None:
            return None
        key_id, secret = parts
        found = self._stored(key_id)
        if found is None:
            # The same work as for a known key, so that timing does not tell ids apart.
            hmac.compare_digest(_digest(secret), _digest(""))
            return None
        key, digest = found
        if not hmac.compare_digest(_digest(secret), digest):
            return None
        return None if key.revoked_at is not None else key

    def close(self) -> None:
        """Releases the connections; calling it again does nothing."""
        self.database.close()


def _key(dialect: Any, row: tuple[Any, ...]) -> ApiKey:
    key_id, actor_id, scope, name, created_at, created_by, revoked_at, revoked_by = row
    created = dialect.to_ts(created_at)
    assert created is not None
    return ApiKey(
        key_id,
        actor_id,
        scope,
        name,
        created,
        created_by,
        dialect.to_ts(revoked_at),
        revoked_by,
    )
