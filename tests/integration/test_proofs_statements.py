"""Statements and offline bundles, checked with the verifier key alone (DESIGN §9).

A CTI gets stamps on 5 January and consumes on 6, 7 and 8 January; its statements are checked
by ``check-statement`` with no database, and the log is exported and verified as a bundle.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.cli.main import main
from adapters.storage.bundle import offline_decoder, verify_bundle
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.errors import Rejected
from ledger.proofs.note import Signer, Verifier
from ledger.proofs.statement import check_statement
from tests.integration.test_proofs_rewrite import ORIGIN, rewrite_credit
from tests.integration.test_tamper import RawDb
from tests.support import CTI, build_network, consume


def build_month(url: str, clock: ManualClock, signer: Signer) -> None:
    """10 stamps on 5 January; 2, 3 and 1 consumed on the 6th, 7th and 8th; a checkpoint."""
    with Ledger.open(url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=10)
        for count in (2, 3, 1):
            clock.advance(timedelta(days=1))
            lg.execute_many([consume() for _ in range(count)])
        lg.checkpoint(signer)


def statement(url: str, start: str, end: str) -> dict[str, Any]:
    """The CTI's stamps statement."""
    with Ledger.open(url, projections="off") as lg:
        return lg.statement(CTI, "stamps", start, end)


def checked(document: dict[str, Any], verifier: Verifier, **previous: Any) -> Any:
    """``check_statement`` with the offline codec."""
    return check_statement(document, verifier, offline_decoder(), **previous)


def test_statements_check_offline_and_chain(store_url: str, clock: ManualClock) -> None:
    """Whole history: opening 0 proven; a later period: proven by the one before it."""
    signer = Signer.generate(ORIGIN)
    build_month(store_url, clock, signer)
    whole = statement(store_url, "2026-01-01", "2026-01-31")
    assert [m["delta"] for m in whole["movements"]] == [10, -1, -1, -1, -1, -1, -1]
    assert (whole["opening_balance"], whole["closing_balance"]) == (0, 4)
    result = checked(whole, signer.verifier())
    assert result.ok, result.problems
    assert result.opening_proven
    first = statement(store_url, "2026-01-01", "2026-01-06")
    second = statement(store_url, "2026-01-07", "2026-01-07")
    assert (second["opening_balance"], second["closing_balance"]) == (8, 5)
    assert second["opening_event"] is not None
    assert second["closing_event"] is not None
    alone = checked(second, signer.verifier())
    assert alone.ok, alone.problems
    assert not alone.opening_proven
    chained = checked(second, signer.verifier(), previous=first)
    assert chained.ok, chained.problems
    assert chained.opening_proven


def test_an_altered_statement_fails(store_url: str, clock: ManualClock) -> None:
    """A changed delta, balance or opening, an omitted event, a foreign key: each fails."""
    signer = Signer.generate(ORIGIN)
    build_month(store_url, clock, signer)
    good = statement(store_url, "2026-01-07", "2026-01-07")
    first = statement(store_url, "2026-01-01", "2026-01-06")

    def altered(change: Any) -> dict[str, Any]:
        document = copy.deepcopy(good)
        change(document)
        return document

    cases = {
        "delta": altered(lambda d: d["movements"][0].update(delta=-2)),
        "closing": altered(lambda d: d.update(closing_balance=6)),
        "omitted": altered(lambda d: (d["events"].pop(1), d["movements"].pop(1))),
        "proof": altered(lambda d: d["events"][0]["audit_path"].reverse()),
    }
    for name, document in cases.items():
        assert not checked(document, signer.verifier()).ok, name
    other_key = checked(good, Signer.generate(ORIGIN).verifier())
    assert not other_key.ok
    opening = altered(lambda d: d.update(opening_balance=9))
    assert not checked(opening, signer.verifier(), previous=first).ok


def test_a_rewrite_below_the_checkpoint_fails_check_statement(
    store_url: str, clock: ManualClock
) -> None:
    """After an SQL rewrite with the chain recomputed, a statement cannot prove the edited
    event: neither with the stored tree, nor with a tree rebuilt from the rewritten log."""
    signer = Signer.generate(ORIGIN)
    build_month(store_url, clock, signer)
    assert checked(statement(store_url, "2026-01-01", "2026-01-31"), signer.verifier()).ok
    rewrite_credit(store_url)
    forged = statement(store_url, "2026-01-01", "2026-01-31")
    assert forged["movements"][0]["delta"] == 1000
    result = checked(forged, signer.verifier())
    assert not result.ok
    assert "inclusion proof fails" in result.problems[0]
    db = RawDb(store_url)
    db.execute("DELETE FROM ledger_tiles")
    db.execute("UPDATE ledger_tree SET size = 0, last_id = 0")
    with Ledger.open(store_url, projections="off") as lg:
        lg.seal()
    assert not checked(statement(store_url, "2026-01-01", "2026-01-31"), signer.verifier()).ok


def test_export_is_incremental_and_verifies_offline(
    store_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    """Two exports make two segments; the bundle verifies with the key and no database."""
    signer = Signer.generate(ORIGIN)
    bundle = tmp_path / "bundle"
    build_month(store_url, clock, signer)
    vkey = signer.verifier().text()
    assert main(["export-log", "--url", store_url, str(bundle)]) == 0
    with Ledger.open(store_url, clock=clock, projections="off") as lg:
        lg.execute_many([consume() for _ in range(2)])
        lg.checkpoint(signer)
    assert main(["export-log", "--url", store_url, str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert len(manifest["segments"]) == 2
    assert manifest["events"] == RawDb(store_url).rows("SELECT count(*) FROM {events}")[0][0]
    report = verify_bundle(bundle, signer.verifier())
    assert report.ok, report.breaches
    assert any("2 checkpoints" in note and "verified" in note for note in report.notes)
    assert main(["verify", "--bundle", str(bundle), "--verifier-key", vkey]) == 0
    assert main(["verify", "--bundle", str(bundle), "--verifier-key",
                 Signer.generate(ORIGIN).verifier().text()]) == 1  # fmt: skip


def test_a_bundle_of_a_rewritten_log_fails(
    store_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    """The rewrite, exported with its recomputed chain, fails against the signed checkpoints."""
    signer = Signer.generate(ORIGIN)
    build_month(store_url, clock, signer)
    rewrite_credit(store_url)
    assert main(["export-log", "--url", store_url, str(tmp_path / "b")]) == 0
    report = verify_bundle(tmp_path / "b", signer.verifier())
    assert "merkle_root" in report.breach_counts
    assert not {"chain_mismatch", "chain_uncovered", "chain_order"} & set(report.breach_counts)


@pytest.mark.parametrize("edit", ["state", "file"])
def test_an_edited_bundle_fails(
    sqlite_url: str, clock: ManualClock, tmp_path: Path, edit: str
) -> None:
    """An event edited in the bundle breaks its chain link and root; a file swapped after the
    manifest was written is refused."""
    signer = Signer.generate(ORIGIN)
    build_month(sqlite_url, clock, signer)
    bundle = tmp_path / "b"
    assert main(["export-log", "--url", sqlite_url, str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    path = bundle / manifest["segments"][0]["events"]
    lines = path.read_text().splitlines()
    row = json.loads(lines[3])
    row["originator_version"] += 0 if edit == "state" else 1
    row["state"] = row["state"][:-4] + ("AAA=" if edit == "state" else row["state"][-4:])
    lines[3] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    if edit == "state":
        segment = manifest["segments"][0]
        segment["events_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        report = verify_bundle(bundle, signer.verifier())
        assert {"chain_mismatch", "merkle_root"} <= set(report.breach_counts)
    else:
        vkey = signer.verifier().text()
        assert main(["verify", "--bundle", str(bundle), "--verifier-key", vkey]) == 2


def test_a_statement_needs_a_checkpoint_and_a_holder(sqlite_url: str, clock: ManualClock) -> None:
    """No checkpoint yet, an unknown holder, a unit that is no book: each a typed rejection."""
    with Ledger.open(sqlite_url, clock=clock, projections="off", password_cost="fast") as lg:
        build_network(lg, cti_stamps=10)
        with pytest.raises(Rejected) as no_checkpoint:
            lg.statement(CTI, "stamps", "2026-01-01", "2026-01-31")
        assert no_checkpoint.value.code == "invalid_command"
        lg.checkpoint(Signer.generate(ORIGIN))
        with pytest.raises(Rejected) as unknown:
            lg.statement("nobody", "stamps", "2026-01-01", "2026-01-31")
        assert unknown.value.code == "unknown_account"
        with pytest.raises(Rejected) as unit:
            lg.statement(CTI, "coins", "2026-01-01", "2026-01-31")
        assert unit.value.code == "invalid_command"
        with pytest.raises(Rejected) as period:
            lg.statement(CTI, "stamps", "2026-02-01", "2026-01-31")
        assert period.value.code == "invalid_command"
