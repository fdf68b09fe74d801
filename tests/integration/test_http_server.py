"""``ledger serve`` as a real subprocess on a free port, driven by httpx, curl and schemathesis;
``ledger api-key`` on SQLite and PostgreSQL; SIGTERM; four workers on one hot CTI."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.cli.main import main
from adapters.http.app import create_app
from adapters.storage.api_keys import ApiKeyStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.proofs.note import Signer
from tests.support import CLIENT, CTI, MASTER, build_network, consume
from tests.unit.test_http_app import AppClient, second_distributor

ROOT = Path(__file__).resolve().parents[2]
LEDGER = [sys.executable, "-m", "ledger"]
START_WAIT_S = 30.0
STOP_WAIT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_key(url: str, actor: str, scope: str) -> str:
    done = subprocess.run(
        [*LEDGER, "api-key", "create", "--url", url, "--actor", actor, "--scope", scope],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


@contextlib.contextmanager
def served(url: str, tmp_path: Path, *options: str) -> Iterator[str]:
    """``ledger serve`` in a subprocess until the block ends; then SIGTERM, and it must exit 0."""
    port = free_port()
    log = (tmp_path / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(
        [*LEDGER, "serve", "--url", url, "--port", str(port), *options],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LEDGER_LOG_LEVEL": "WARNING"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_WAIT_S
        while True:
            assert process.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            log.close()
        text = (tmp_path / f"serve-{port}.log").read_text()
        assert code == 0, text
        assert "Traceback" not in text
        assert "serve: stopped" in text


def network(url: str, *, cti_stamps: int = 5) -> None:
    with Ledger.open(url) as lg:
        build_network(lg, cti_stamps=cti_stamps)


# Keys ----------------------------------------------------------------------------------------


def test_api_keys_are_shown_once_stored_hashed_and_recorded(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """create prints the key once; the database holds its hash only; create and revoke are
    recorded with who, when and which actor; revoking twice or an unknown actor is refused."""
    network(store_url)
    assert main(["api-key", "create", "--url", store_url, "--actor", "D1", "--scope", "read",
                 "--name", "portal", "--by", "ana"]) == 0  # fmt: skip
    key = capsys.readouterr().out.strip()
    key_id, secret = key.removeprefix("lgk_").split("_", 1)
    assert len(secret) == 43  # 256 bits, base64url
    assert main(["api-key", "list", "--url", store_url, "--json"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed
    assert secret not in listed
    assert main(["api-key", "revoke", "--url", store_url, key_id, "--by", "luis"]) == 0
    assert main(["api-key", "revoke", "--url", store_url, key_id]) == 1
    assert "already revoked" in capsys.readouterr().err
    assert main(["api-key", "create", "--url", store_url, "--actor", "nobody", "--scope",
                 "write"]) == 1  # fmt: skip
    keys = ApiKeyStore.open(store_url)
    try:
        assert [(a, by, actor, scope) for a, _, by, actor, scope in keys.events(key_id)] == [
            ("created", "ana", "D1", "read"),
            ("revoked", "luis", "D1", "read"),
        ]
        assert keys.authenticate(key) is None  # revoked
        with keys.database.read() as cursor:
            for table in ("ledger_api_keys", "ledger_api_key_events"):
                cursor.execute(f"SELECT * FROM {table}")  # noqa: S608
                assert secret not in repr(cursor.fetchall())
    finally:
        keys.close()


def test_a_key_authenticates_in_constant_time_by_its_digest(sqlite_url: str) -> None:
    """The right key is found; one changed character, or a well-formed unknown id, is not."""
    network(sqlite_url)
    keys = ApiKeyStore.open(sqlite_url)
    try:
        key, text = keys.create(MASTER, "write", name="", by="t", now=_now())
        found = keys.authenticate(text)
        assert found is not None
        assert (found.key_id, found.actor_id, found.scope) == (key.key_id, MASTER, "write")
        tampered = text[:-1] + ("A" if text[-1] != "A" else "B")
        assert keys.authenticate(tampered) is None
        assert keys.authenticate("lgk_" + "0" * 16 + text[-44:]) is None
    finally:
        keys.close()


def _now() -> object:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)


# The real server -----------------------------------------------------------------------------


def test_the_service_answers_httpx_and_curl(sqlite_url: str, tmp_path: Path) -> None:
    """A Python client and a non-Python one (curl, tests/integration/http_curl.sh)."""
    network(sqlite_url)
    key = make_key(sqlite_url, MASTER, "write")
    read_key = make_key(sqlite_url, CLIENT, "read")
    with served(sqlite_url, tmp_path) as base:
        work = tmp_path / "curl"
        work.mkdir()
        done = subprocess.run(
            ["bash", str(ROOT / "tests/integration/http_curl.sh")],
            env={
                **os.environ,
                "BASE": base,
                "KEY": key,
                "READ_KEY": read_key,
                "CTI": CTI,
                "WORK": str(work),
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        assert "every check passed" in done.stdout
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.post(f"{base}/v1/commands", json=consume(), headers=headers)
        assert response.status_code == 200
        assert response.json()["balance_after"] == 2
        document = httpx.get(f"{base}/openapi.json").json()
        assert document["openapi"] == "3.1.0"
    with Ledger.open(sqlite_url) as lg:
        assert lg.balance(CTI) == 2


def test_sigterm_answers_the_requests_in_flight(sqlite_url: str, tmp_path: Path) -> None:
    """SIGTERM while 40 clients send: every request that was answered 200 is recorded, every
    recorded consumption was answered, and the server exits 0 (``served`` checks it)."""
    network(sqlite_url, cti_stamps=1_000)
    key = make_key(sqlite_url, MASTER, "write")
    answered: list[str] = []
    failed: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(41)

    def client(base: str) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            started.wait()
            for _ in range(25):
                command = consume()
                try:
                    response = http.post("/v1/commands", json=command, timeout=30)
                except httpx.TransportError:
                    with lock:
                        failed.append(command["cfdi_uuid"])
                    return
                assert response.status_code == 200, response.text
                with lock:
                    answered.append(command["cfdi_uuid"])

    with served(sqlite_url, tmp_path) as base:
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(40)]
        for thread in threads:
            thread.start()
        started.wait()
        # Some requests answered, others in flight: then the block's end sends SIGTERM.
        deadline = time.monotonic() + 30
        while len(answered) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(60)
    with Ledger.open(sqlite_url) as lg:
        consumed = 1_000 - lg.balance(CTI)
        history = {m.ref.upper() for m in lg.history(CTI) if m.amount == -1}
    assert answered, "no request was answered before the stop"
    assert consumed == len(answered)
    assert history == {u.upper() for u in answered}


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_every_response_matches_the_schema(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Fuzzing from /openapi.json with a master's write key: no 5xx, and every status, media
    type, header and body as documented."""
    network(sqlite_url)
    key = make_key(sqlite_url, MASTER, "write")
    with served(sqlite_url, tmp_path) as base:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_headers_conformance,response_schema_conformance",
                "--phases",
                "examples,fuzzing",
                "--max-examples",
                os.environ.get("LEDGER_SCHEMATHESIS_EXAMPLES", "20"),
                "--seed",
                "7",
                "--workers",
                "2",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=tmp_path,
        )
    summary = done.stdout[-3000:]
    assert done.returncode == 0, summary + done.stderr[-2000:]
    assert " passed" in summary


@pytest.mark.slow
def test_four_workers_four_clients_one_hot_cti_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    """``--workers 4``, 4 clients consuming from one CTI holding 150 stamps, 200 requests: 150
    consumed, 50 insufficient_stamps, no other error, and every consumption recorded once."""
    network(pg_url, cti_stamps=150)
    key = make_key(pg_url, MASTER, "write")
    codes: Counter[str] = Counter()
    ok_uuids: list[str] = []
    lock = threading.Lock()

    def client(base: str) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            for _ in range(50):
                command = consume(cfdi_uuid=str(uuid.uuid4()))
                response = http.post("/v1/commands", json=command, timeout=60)
                body = response.json()
                with lock:
                    if response.status_code == 200:
                        codes["ok"] += 1
                        ok_uuids.append(command["cfdi_uuid"])
                    else:
                        codes[body["code"]] += 1

    with served(pg_url, tmp_path, "--workers", "4") as base:
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        metrics = httpx.get(f"{base}/metrics").text
    assert dict(codes) == {"ok": 150, "insufficient_stamps": 50}
    with Ledger.open(pg_url) as lg:
        assert lg.balance(CTI) == 0
        consumed = [m.ref.upper() for m in lg.history(CTI) if m.amount == -1]
        assert sorted(consumed) == sorted(u.upper() for u in ok_uuids)
        assert lg.verify().ok
    # /metrics sums the four workers' files, whichever worker answered.
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('ledger_http_commands_total{outcome="ok"}')
    )
    assert total == 150


def test_proofs_and_statements_over_http_are_scoped(sqlite_url: str, clock: ManualClock) -> None:
    """DESIGN §9 over HTTP: the checkpoint and consistency proofs to any key; an inclusion proof
    and a statement only to a key whose actor may read the account."""
    signer = Signer.generate("ledger.example/log")
    with Ledger.open(sqlite_url, clock=clock, password_cost="fast") as lg:
        build_network(lg, cti_stamps=5)
        second_distributor(lg)
        lg.execute_many([consume(), consume()])
        note = lg.checkpoint(signer)
        assert note is not None
        size = lg.checkpoints()[-1].size
        keys = ApiKeyStore.open(sqlite_url)
        tokens = {
            actor: keys.create(actor, "read", name="", by="t", now=clock())[1]
            for actor in (MASTER, CLIENT, "D2")
        }
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as raw:
            (cti_event,) = raw.execute(
                "SELECT max(rowid) FROM stored_events WHERE originator_id = ?", (CTI,)
            ).fetchone()
        with AppClient(create_app(lg, keys)) as client:

            def get(actor: str, path: str) -> httpx.Response:
                return client.get(path, headers={"Authorization": f"Bearer {tokens[actor]}"})

            assert get("D2", "/v1/checkpoint").json() == {"checkpoint": note}
            consistency = get("D2", f"/v1/proofs/consistency?from={size}&to={size}")
            assert consistency.status_code == 200
            assert consistency.json()["checkpoint2"] == note
            proof = get(CLIENT, f"/v1/proofs/inclusion/{cti_event}")
            assert proof.status_code == 200
            assert proof.json() == lg.prove_inclusion(cti_event)
            assert get("D2", f"/v1/proofs/inclusion/{cti_event}").status_code == 403
            assert get(MASTER, "/v1/proofs/inclusion/0").status_code == 400
            period = "unit=stamps&from=2026-01-01&to=2026-01-31"
            statement = get(CLIENT, f"/v1/statements/{CTI}?{period}")
            assert statement.status_code == 200, statement.text
            assert get("D2", f"/v1/statements/{CTI}?{period}").status_code == 403
            assert get(CLIENT, f"/v1/statements/{CTI}?unit=stamps").status_code == 400
        keys.close()
