"""Writes ``history_v1.json``: a small realistic history exactly as the v1 code stored it.

Run once, with the code from before ``StampingAccount.StampConsumed`` became version 2 (commit
recorded in the file), and never again: the file is evidence of what older code wrote, and the
schema-evolution tests decode it with today's code. Re-running it now would write v2 events.

    .venv/bin/python -m tests.golden.make_golden_v1
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ledger.api import Ledger
from ledger.clock import ManualClock
from tests.support import CLIENT, CTI, DISTRIBUTOR, MASTER, build_network, consume

OUT = Path(__file__).with_name("history_v1.json")

UUIDS = [
    "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F01",
    "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F02",
    "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F03",
    "6F1C2A9E-0B4D-4C55-9A1E-3D2B7C8E9F04",
]


def build(url: str, clock: ManualClock) -> None:
    """The history: a network, stamps and points moved, consumed, reclaimed and invoiced."""
    with Ledger.open(url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, inventory=2000)
        clock.advance(timedelta(minutes=5))
        lg.execute(
            {
                "type": "TransferStamps",
                "transfer_id": "T-1",
                "from_id": DISTRIBUTOR,
                "to_id": CTI,
                "quantity": 10,
                "amount": "50.00",
            }
        )
        # Two consumptions in the same second, microseconds apart (balance_at must tell them apart).
        clock.advance(timedelta(minutes=1, microseconds=250))
        lg.execute(consume(cfdi_uuid=UUIDS[0]))
        clock.advance(timedelta(microseconds=500))
        lg.execute(consume(cfdi_uuid=UUIDS[1]))
        clock.advance(timedelta(hours=7))  # past midnight in Mexico City: another local day
        lg.execute(consume(cfdi_uuid=UUIDS[2], stamped_at="2026-01-06T05:59:59-06:00"))
        lg.execute(consume(cfdi_uuid=UUIDS[3]))
        clock.advance(timedelta(minutes=1))
        lg.execute(
            {
                "type": "ReclaimStamps",
                "transfer_id": "R-1",
                "from_cti_id": CTI,
                "quantity": 2,
                "reason": "falta de pago",
            }
        )
        lg.execute(
            {
                "type": "BuyPackage",
                "buyer_id": DISTRIBUTOR,
                "seller_id": MASTER,
                "package_id": "PTS3000",
                "count": 1,
            }
        )
        lg.execute(
            {
                "type": "TransferPoints",
                "transfer_id": "TP-1",
                "from_id": DISTRIBUTOR,
                "to_id": CLIENT,
                "quantity": 500,
                "amount": "475.00",
            }
        )
        lg.execute(
            {
                "type": "SpendPoints",
                "client_id": CLIENT,
                "product": "licencia-nomina",
                "points": 120,
                "spend_id": "SP-1",
            }
        )
        lg.execute({"type": "TagClient", "client_id": CLIENT, "favourite": True, "colour": "verde"})
        lg.execute(
            {
                "type": "RegisterInvoice",
                "seller_id": DISTRIBUTOR,
                "invoice_ref": "F-0001",
                "sale_ids": ["T-1", "TP-1"],
            }
        )


def dump(path: Path) -> dict[str, object]:
    """Every stored row of the events, chain and keys tables, bytes kept exactly."""
    with sqlite3.connect(path) as db:
        events = [
            {
                "id": rowid,
                "originator_id": originator_id,
                "originator_version": version,
                "topic": topic,
                "state": bytes(state).decode("utf-8"),
            }
            for rowid, originator_id, version, topic, state in db.execute(
                "SELECT rowid, originator_id, originator_version, topic, state "
                "FROM stored_events ORDER BY rowid"
            )
        ]
        chain = [
            {"first_id": first, "last_id": last, "hash": bytes(h).hex()}
            for last, first, h in db.execute("SELECT last_id, first_id, hash FROM ledger_chain")
        ]
        keys = [
            {"key": k, "fingerprint": f, "outcome": bytes(o).decode("utf-8")}
            for k, f, o in db.execute(
                "SELECT key, fingerprint, outcome FROM ledger_keys ORDER BY key"
            )
        ]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "written_by_commit": commit,
        "note": "v1 stored rows (SQLite layout); never regenerate",
        "events": events,
        "chain": chain,
        "keys": keys,
    }


def main() -> None:
    """Builds the history in a temporary SQLite file and writes the golden file."""
    clock = ManualClock(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "golden.db"
        build(f"sqlite:///{path}", clock)
        data = dump(path)
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(data['events'])} events)")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
