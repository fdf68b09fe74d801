"""The PostgreSQL write's parameters: ready binary arrays and the digest built in one pass.

``record_parameters`` encodes the columns itself (PostgreSQL's binary array format) and hashes
the rows on the way; both must equal what psycopg's own adapters and ``events_digest`` give,
which the server decodes here (no mock: a real PostgreSQL reads the arrays back).
"""

from __future__ import annotations

import psycopg
from eventsourcing.persistence import StoredEvent

from adapters.storage.postgres_arrays import record_parameters
from ledger.chain import events_digest
from ledger.write.ports import KeyRecord


def test_arrays_read_back_as_sent_and_the_digest_is_the_chains(pg_url: str) -> None:
    rows = [
        StoredEvent("C1-cti", 7, "StampingAccount.StampConsumed#2", b'{"a":1}'),
        StoredEvent("Ñandú-ĉti", 2**40, "Client.Registered", bytes(range(256))),
        StoredEvent("x", 1, "T", b""),
    ]
    keys = [
        KeyRecord("cfdi:B", "f2", b"\x00\xff"),
        KeyRecord("cfdi:A", "", b""),
        KeyRecord("id:Ñ", "f1", b"{}"),
    ]
    params = record_parameters(rows, keys)
    assert params[7] == events_digest(rows)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        back = conn.execute(
            "SELECT %b::text[], %b::bigint[], %b::text[], %b::bytea[], %b::text[], %b::text[],"
            " %b::bytea[]",
            params[:7],
        ).fetchone()
        assert back is not None
        assert back[0] == [r.originator_id for r in rows]
        assert back[1] == [r.originator_version for r in rows]
        assert back[2] == [r.topic for r in rows]
        assert back[3] == [r.state for r in rows]
        # Keys in one global order (no deadlock between writers sharing keys).
        assert back[4] == ["cfdi:A", "cfdi:B", "id:Ñ"]
        assert back[5] == ["", "f2", "f1"]
        assert back[6] == [b"", b"\x00\xff", b"{}"]
        nothing = record_parameters([], [])
        empty = conn.execute(
            "SELECT %b::text[], %b::bigint[], %b::bytea[], cardinality(%b::text[])",
            (nothing[0], nothing[1], nothing[3], params[4]),
        ).fetchone()
        assert empty == ([], [], [], 3)
    assert nothing[7] == events_digest([])
