"""The HTTP application in-process (Starlette's test client) over an in-memory ledger: commands,
keys, idempotency, hostile bodies, limits, read scoping and the authorisation matrix.

The real server (a subprocess on a free port, curl, schemathesis, several workers) is tested in
``tests/integration/test_http_server.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from adapters.http.app import ServiceSettings, _result_dicts, create_app
from adapters.http.problems import STATUS, mapping_markdown, mapping_rows
from adapters.storage.api_keys import ApiKeyStore
from ledger.api import Ledger
from ledger.clock import ManualClock
from ledger.commands.json_text import parse_command_json
from ledger.commands.reference import command_models
from ledger.docs import example
from ledger.errors import MESSAGES, Rejected
from ledger.outcome import Outcome
from tests.support import (
    CLIENT,
    CTI,
    DISTRIBUTOR,
    MASTER,
    build_network,
    consume,
    distributor_profile,
    recorded,
)

NOW = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)


class AppClient:
    """A synchronous client of an ASGI app in this process (httpx over ``ASGITransport``, on
    one event loop of its own)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ledger.test"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, answered."""
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


class Service:
    """An app over an in-memory ledger with one key per kind of account and scope."""

    def __init__(self, lg: Ledger, keys: ApiKeyStore, client: AppClient) -> None:
        self.lg = lg
        self.keys = keys
        self.client = client
        self.tokens: dict[tuple[str, str], str] = {}
        for actor in (MASTER, DISTRIBUTOR, CLIENT, "D2"):
            for scope in ("read", "write"):
                _, token = keys.create(actor, scope, name="test", by="tests", now=NOW)  # type: ignore[arg-type]
                self.tokens[actor, scope] = token

    def auth(self, actor: str, scope: str = "write") -> dict[str, str]:
        """The Authorization header of that key."""
        return {"Authorization": f"Bearer {self.tokens[actor, scope]}"}

    def post(self, command: Any, actor: str = MASTER, **kwargs: Any) -> Any:
        """POST /v1/commands as ``actor``'s write key."""
        headers = {**self.auth(actor), **kwargs.pop("headers", {})}
        if isinstance(command, bytes):
            return self.client.post("/v1/commands", content=command, headers=headers, **kwargs)
        return self.client.post("/v1/commands", json=command, headers=headers, **kwargs)


def second_distributor(lg: Ledger) -> None:
    """D2: another active distributor of the master, with no clients."""
    for command in (
        {
            "type": "RegisterDistributor",
            "actor": MASTER,
            "distributor_id": "D2",
            "parent_id": MASTER,
            "profile": distributor_profile("Dos", "dos@example.com"),
        },
        {"type": "ValidateDistributor", "actor": MASTER, "distributor_id": "D2"},
        {
            "type": "ActivateDistributor",
            "actor": MASTER,
            "distributor_id": "D2",
            "expires_on": "2027-01-31",
        },
    ):
        lg.execute(command)


@pytest.fixture
def service(clock: ManualClock) -> Iterator[Service]:
    with Ledger.open("memory://", clock=clock, password_cost="fast") as lg:
        build_network(lg, cti_stamps=5)
        second_distributor(lg)
        keys = ApiKeyStore.open("memory://")
        try:
            with AppClient(create_app(lg, keys)) as client:
                yield Service(lg, keys, client)
        finally:
            keys.close()


def events(lg: Ledger) -> int:
    return recorded(lg)[0]


# Commands ------------------------------------------------------------------------------------


def test_a_command_is_answered_with_its_outcome(service: Service) -> None:
    """A ConsumeStamp without actor acts as the key's actor and answers the outcome."""
    response = service.post({k: v for k, v in consume().items() if k != "actor"})
    assert response.status_code == 200
    assert response.json() == {
        "type": "ConsumeStamp",
        "ok": True,
        "balance_after": 4,
        "details": {"local_date": "2026-01-05"},
    }
    assert service.lg.balance(CTI) == 4


def post_together(service: Service, bodies: list[Any]) -> list[httpx.Response]:
    """POST /v1/commands of each body, all sent in the same turn of the app's event loop."""
    client = service.client

    async def all_of_them() -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                *(
                    client._client.post("/v1/commands", json=body, headers=service.auth(MASTER))
                    for body in bodies
                )
            )
        )

    return client._loop.run_until_complete(all_of_them())


def test_the_commands_of_one_turn_share_one_call_each_with_its_own_result(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six stamps asked of a CTI holding five, and a malformed command, in one turn of the
    loop: one call into the ledger, and each command answered as if it came alone."""
    calls: list[int] = []
    aexecute_many = service.lg.aexecute_many

    async def counted(commands: Any, **options: Any) -> Any:
        commands = list(commands)
        calls.append(len(commands))
        return await aexecute_many(commands, **options)

    monkeypatch.setattr(service.lg, "aexecute_many", counted)
    commands: list[dict[str, Any]] = [consume() for _ in range(6)]
    commands.insert(3, {**consume(), "cti_id": 7})

    async def one_turn() -> list[Any]:
        state = service.client.app.state.service
        futures = [state.execute(command) for command in commands]  # no await between them
        return list(await asyncio.gather(*futures))

    results = service.client._loop.run_until_complete(one_turn())
    assert calls == [7]
    assert [getattr(r, "code", None) for r in results] == [None] * 3 + [
        "invalid_command",
        None,
        None,
        "insufficient_stamps",
    ]
    assert [r.balance_after for r in results if not isinstance(r, Rejected)] == [4, 3, 2, 1, 0]
    assert service.lg.balance(CTI) == 0


def test_requests_sent_together_are_each_answered_as_if_alone(service: Service) -> None:
    """The same over HTTP (however the requests fall into turns): each request its own status
    and outcome, each stamp recorded once under its own CFDI."""
    bodies: list[Any] = [consume() for _ in range(6)]
    bodies.insert(3, {**consume(), "cti_id": 7})
    responses = post_together(service, bodies)
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 200, 400, 422]
    assert responses[3].json()["code"] == "invalid_command"
    assert responses[3].json()["details"]["errors"][0]["field"] == "ConsumeStamp.cti_id"
    refused = [r for r in responses if r.status_code == 422]
    assert refused[0].json()["code"] == "insufficient_stamps"
    served = {
        body["cfdi_uuid"]: response.json()
        for body, response in zip(bodies, responses, strict=True)
        if response.status_code == 200
    }
    assert sorted(o["balance_after"] for o in served.values()) == [0, 1, 2, 3, 4]
    assert service.lg.balance(CTI) == 0
    for cfdi_uuid, outcome in served.items():
        again = service.post(consume(cfdi_uuid=cfdi_uuid))
        assert again.headers["Idempotency-Replayed"] == "true"
        assert again.json()["balance_after"] == outcome["balance_after"]


def test_the_same_cfdi_twice_in_one_turn_is_recorded_once(service: Service) -> None:
    """Two requests of one turn consuming the same CFDI: one stamp, and the other request is
    the replay of its outcome; with other fields, the other is 409."""
    service.post(tag(True), actor=DISTRIBUTOR)
    before = service.lg.balance(CTI)
    same = consume()
    responses = post_together(service, [same, dict(same)])
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.json()["balance_after"] for r in responses] == [before - 1, before - 1]
    assert sorted(r.headers.get("Idempotency-Replayed", "") for r in responses) == ["", "true"]
    assert service.lg.balance(CTI) == before - 1
    other = consume()
    responses = post_together(service, [other, {**other, "issuer_rfc": "XAXX010101000"}])
    assert sorted(r.status_code for r in responses) == [200, 409]
    assert service.lg.balance(CTI) == before - 2


def test_a_failure_of_the_shared_call_answers_every_request_of_the_turn(
    service: Service,
) -> None:
    """The ledger closed under the app: each request of the turn is answered a problem, none
    is left waiting, and nothing is recorded."""
    service.post(tag(True), actor=DISTRIBUTOR)
    before = events(service.lg)
    service.lg.close()
    responses = post_together(service, [consume() for _ in range(3)])
    assert [r.status_code for r in responses] == [500, 500, 500]
    assert {r.json()["code"] for r in responses} == {"internal_error"}
    assert "Traceback" not in "".join(r.text for r in responses)
    assert events(service.lg) == before


def test_a_rejection_is_a_problem_with_code_title_and_details(service: Service) -> None:
    """A business rule is 422 problem+json: the stable code, the Spanish title, the details."""
    service.lg.execute({"type": "BlockStampingAccount", "actor": DISTRIBUTOR, "cti_id": CTI})
    before = events(service.lg)
    response = service.post(consume())
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "account_blocked"
    assert (
        problem["title"] == MESSAGES["account_blocked"] == "La cuenta de timbrado está bloqueada."
    )
    assert problem["status"] == 422
    assert problem["type"] == "urn:ledger:problem:account_blocked"
    assert events(service.lg) == before


def test_another_actor_in_the_body_is_403_and_records_nothing(service: Service) -> None:
    """The key's actor is the command's actor: D1's key naming M is refused."""
    before = events(service.lg)
    response = service.post(consume(), actor=DISTRIBUTOR)
    assert response.status_code == 403
    assert response.json()["code"] == "not_authorised"
    assert events(service.lg) == before
    assert service.lg.balance(CTI) == 5


def test_a_read_key_cannot_write(service: Service) -> None:
    """A read key's command is 403 not_authorised, and nothing is recorded."""
    before = events(service.lg)
    response = service.client.post(
        "/v1/commands", json=consume(), headers=service.auth(MASTER, "read")
    )
    assert response.status_code == 403
    assert response.json()["code"] == "not_authorised"
    assert events(service.lg) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer lgk_0000000000000000_" + "A" * 43},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["missing", "unknown", "malformed", "not-bearer"],
)
def test_no_valid_key_is_401_saying_nothing_more(service: Service, headers: dict[str, str]) -> None:
    """Missing, unknown or malformed: the same 401, with WWW-Authenticate."""
    response = service.client.post("/v1/commands", json=consume(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "type": "urn:ledger:problem:unauthorised",
        "ok": False,
        "code": "unauthorised",
        "title": "Falta la clave de acceso, o no es válida.",
        "status": 401,
    }


def test_a_revoked_key_is_401(clock: ManualClock) -> None:
    """Once revoked (and past the key cache), a key gets the same 401 as an unknown one."""
    with Ledger.open("memory://", clock=clock, password_cost="fast") as lg:
        build_network(lg, cti_stamps=5)
        keys = ApiKeyStore.open("memory://")
        key, token = keys.create(MASTER, "write", name="", by="tests", now=NOW)
        app = create_app(lg, keys, settings=ServiceSettings(key_cache_s=0))
        with AppClient(app) as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get(f"/v1/balances/{CTI}", headers=headers).status_code == 200
            keys.revoke(key.key_id, by="tests", now=NOW)
            response = client.get(f"/v1/balances/{CTI}", headers=headers)
            assert response.status_code == 401
            assert response.json()["code"] == "unauthorised"
        keys.close()


# Hostile bodies: answered as ``ledger exec`` answers a line -----------------------------------

HOSTILE = [
    b'{"type": "ConsumeStamp", "cti_id": "C1-cti", "cti_id": "X"}',
    b'{"type": "ConsumeStamp", "issuer_rfc": "\xff\xfe"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 2_000 + b"1" + b"}" * 2_000,
    b"",
    b"[]",
    b"not json",
]


@pytest.mark.parametrize(
    "body", HOSTILE, ids=["duplicate", "utf8", "deep", "deep-obj", "empty", "array", "text"]
)
def test_a_hostile_body_is_400_as_exec_answers_it(service: Service, body: bytes) -> None:
    """Duplicated key, invalid UTF-8, deep nesting, not an object: 400 with exec's details."""
    before = events(service.lg)
    response = service.post(body)
    assert response.status_code == 400
    with pytest.raises(Rejected) as expected:
        parse_command_json(body)
    problem = response.json()
    assert problem["code"] == expected.value.code == "invalid_command"
    assert problem["details"] == json.loads(json.dumps(expected.value.details))
    assert events(service.lg) == before


def test_a_body_over_1_mb_is_413(service: Service) -> None:
    """A command body over 1,000,000 bytes is refused unread."""
    command = {**consume(), "pad": "x" * 1_000_001}
    response = service.post(command)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_a_batch_body_over_10_mb_is_413_and_one_under_it_is_read(service: Service) -> None:
    """The batch endpoint's bound is 10,000,000 bytes: 1.5 MB passes, 10 MB and a byte is 413."""
    padded = [{**consume(), "pad": "x" * 1_500_000}]
    under = service.client.post("/v1/commands/batch", json=padded, headers=service.auth(MASTER))
    assert under.status_code == 200
    assert under.json()["results"][0]["code"] == "invalid_command"  # the pad field, not the size
    over = service.client.post(
        "/v1/commands/batch", content=b" " * 10_000_001, headers=service.auth(MASTER)
    )
    assert over.status_code == 413
    assert over.json()["code"] == "payload_too_large"


def test_unknown_routes_are_404_and_wrong_methods_405(service: Service) -> None:
    """Both as problems, 405 with Allow."""
    missing = service.client.get("/v1/nothing", headers=service.auth(MASTER))
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    wrong = service.client.get("/v1/commands", headers=service.auth(MASTER))
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["code"] == "method_not_allowed"


# Idempotency ---------------------------------------------------------------------------------


def tag(favourite: bool) -> dict[str, Any]:
    return {"type": "TagClient", "client_id": CLIENT, "favourite": favourite}


def test_an_idempotency_key_header_replays_the_first_outcome(service: Service) -> None:
    """A command without a natural key: the header is its idempotency key."""
    headers = {"Idempotency-Key": "tag-1"}
    first = service.post(tag(True), actor=DISTRIBUTOR, headers=headers)
    after_first = events(service.lg)
    again = service.post(tag(True), actor=DISTRIBUTOR, headers=headers)
    assert first.status_code == again.status_code == 200
    assert "idempotency-replayed" not in first.headers
    assert again.headers["idempotency-replayed"] == "true"
    assert again.json() == {**first.json(), "replayed": True}
    assert events(service.lg) == after_first


def test_the_same_key_with_another_body_is_422(service: Service) -> None:
    """idempotency_conflict on a caller's key is 422, and records nothing."""
    service.post(tag(True), actor=DISTRIBUTOR, headers={"Idempotency-Key": "tag-2"})
    before = events(service.lg)
    response = service.post(tag(False), actor=DISTRIBUTOR, headers={"Idempotency-Key": "tag-2"})
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_conflict"
    assert events(service.lg) == before


def test_a_natural_key_conflict_is_409(service: Service) -> None:
    """A CFDI consumed again with other fields: idempotency_conflict on its natural key, 409."""
    command = consume()
    assert service.post(command).status_code == 200
    response = service.post({**command, "issuer_rfc": "XAXX010101000"})
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"


def test_a_natural_key_command_keeps_its_own_key(service: Service) -> None:
    """ConsumeStamp with a header is keyed by its CFDI alone: a repeat under another header
    value replays, it does not conflict."""
    command = consume()
    first = service.post(command, headers={"Idempotency-Key": "a"})
    again = service.post(command, headers={"Idempotency-Key": "b"})
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotency-replayed"] == "true"
    assert service.lg.balance(CTI) == 4


def test_the_same_key_in_flight_is_409(service: Service) -> None:
    """While a request with that key is being answered, another with it is 409."""
    state = service.client.app.state.service
    state.in_flight.add("busy-key")
    response = service.post(tag(True), actor=DISTRIBUTOR, headers={"Idempotency-Key": "busy-key"})
    state.in_flight.discard("busy-key")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    assert response.json()["details"]["reason"] == "in flight"


def test_a_header_that_differs_from_the_body_key_is_400(service: Service) -> None:
    response = service.post(
        {**tag(True), "idempotency_key": "x"}, actor=DISTRIBUTOR, headers={"Idempotency-Key": "y"}
    )
    assert response.status_code == 400
    assert response.json()["details"]["errors"][0]["field"] == "idempotency_key"


# Batches -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(type="ConsumeStamp", balance_after=4, details={"local_date": "2026-01-05"}),
        Outcome(type="ConsumeStamp", replayed=True, balance_after=0),
        Outcome(type="IssueCreditCode", code="ABC", nip="1234", sale_ids=("S:1", "S:2")),
        Outcome(type="RegisterClient", cti_id="C9-cti", cti_password='p\u00e1ss"w'),
        Outcome(type="VerifyStampingCredentials", valid=False, warnings=("w",)),
    ],
)
def test_an_outcome_is_shown_as_its_to_dict(outcome: Outcome) -> None:
    """The service encodes outcomes from the struct: the same JSON object as ``to_dict``, the
    shown-once secrets included."""
    shown = _result_dicts([outcome])[0]
    assert json.loads(bytes(shown)) == json.loads(json.dumps(outcome.to_dict()))


def test_a_batch_answers_one_result_per_command_in_order(service: Service) -> None:
    """A JSON array: outcomes and problems in order; a bad element does not stop the others."""
    body = b"[" + json.dumps(consume()).encode() + b', {"type": "Nope"}, {"a": 1, "a": 2}]'
    response = service.client.post("/v1/commands/batch", content=body, headers=service.auth(MASTER))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, False]
    assert results[1]["code"] == results[2]["code"] == "invalid_command"
    assert results[2]["details"]["errors"][0]["message"] == "duplicated key in a JSON object"
    assert service.lg.balance(CTI) == 4


def test_an_ndjson_batch_is_read_line_by_line(service: Service) -> None:
    lines = b"\n".join(json.dumps(consume()).encode() for _ in range(3)) + b"\n"
    response = service.client.post(
        "/v1/commands/batch",
        content=lines,
        headers={**service.auth(MASTER), "Content-Type": "application/x-ndjson"},
    )
    assert [r["balance_after"] for r in response.json()["results"]] == [4, 3, 2]


def test_an_atomic_batch_with_a_rejection_records_nothing(service: Service) -> None:
    """?atomic=true as execute_many(atomic=True): the others are batch_aborted."""
    before = events(service.lg)
    response = service.client.post(
        "/v1/commands/batch?atomic=true",
        json=[consume(), consume(), {**consume(), "actor": DISTRIBUTOR}],
        headers=service.auth(MASTER),
    )
    codes = [r.get("code") for r in response.json()["results"]]
    assert codes == ["batch_aborted", "batch_aborted", "not_authorised"]
    assert events(service.lg) == before
    response = service.client.post(
        "/v1/commands/batch?atomic=true",
        json=[consume(), consume(cti_id="nope")],
        headers=service.auth(MASTER),
    )
    assert [r.get("code") for r in response.json()["results"]] == [
        "batch_aborted",
        "unknown_account",
    ]
    assert events(service.lg) == before


def test_a_batch_over_10000_commands_is_400(service: Service) -> None:
    response = service.client.post(
        "/v1/commands/batch", json=[{}] * 10_001, headers=service.auth(MASTER)
    )
    assert response.status_code == 400
    assert response.json()["details"]["errors"][0]["field"] == "commands"


# Rate ----------------------------------------------------------------------------------------


def test_past_a_keys_rate_the_answer_is_429_with_retry_after(clock: ManualClock) -> None:
    with Ledger.open("memory://", clock=clock, password_cost="fast") as lg:
        build_network(lg, cti_stamps=5)
        keys = ApiKeyStore.open("memory://")
        _, token = keys.create(MASTER, "read", name="", by="tests", now=NOW)
        _, other = keys.create(MASTER, "read", name="", by="tests", now=NOW)
        app = create_app(lg, keys, settings=ServiceSettings(rate_limit_rps=0.5))
        with AppClient(app) as client:
            first = client.get(f"/v1/balances/{CTI}", headers={"Authorization": f"Bearer {token}"})
            second = client.get(f"/v1/balances/{CTI}", headers={"Authorization": f"Bearer {token}"})
            third = client.get(f"/v1/balances/{CTI}", headers={"Authorization": f"Bearer {other}"})
        keys.close()
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["code"] == "rate_limited"
    assert int(second.headers["retry-after"]) == 2
    assert third.status_code == 200  # per key


# Reads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "path", "status"),
    [
        (MASTER, f"/v1/balances/{CTI}", 200),
        (DISTRIBUTOR, f"/v1/balances/{CTI}", 200),
        (CLIENT, f"/v1/balances/{CTI}", 200),
        (CLIENT, f"/v1/balances/held:{CTI}", 200),
        ("D2", f"/v1/balances/{CTI}", 403),
        (CLIENT, f"/v1/balances/{DISTRIBUTOR}", 403),
        (DISTRIBUTOR, f"/v1/balances/{MASTER}", 403),
        (MASTER, "/v1/balances/nobody", 404),
        (DISTRIBUTOR, f"/v1/views/clients/{DISTRIBUTOR}", 200),
        ("D2", f"/v1/views/clients/{DISTRIBUTOR}", 403),
        (CLIENT, f"/v1/views/clients/{DISTRIBUTOR}", 403),
        (CLIENT, f"/v1/views/consumption/{CTI}", 200),
        (CLIENT, f"/v1/views/licences/{CLIENT}", 200),
        (MASTER, f"/v1/views/distributors/{MASTER}", 200),
        (DISTRIBUTOR, f"/v1/views/distributors/{MASTER}", 403),
        (DISTRIBUTOR, f"/v1/history/{CTI}", 200),
        ("D2", f"/v1/history/{CTI}", 403),
    ],
)
def test_reads_are_scoped_to_the_keys_network(
    service: Service, actor: str, path: str, status: int
) -> None:
    """DESIGN §4a: a master reads its network, a distributor below itself, a client itself."""
    response = service.client.get(path, headers=service.auth(actor, "read"))
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["code"] == "not_authorised"


def test_a_view_takes_the_librarys_filters_sorts_and_pages(service: Service) -> None:
    service.lg.execute(
        {
            "type": "RegisterClient",
            "actor": DISTRIBUTOR,
            "client_id": "C2",
            "distributor_id": DISTRIBUTOR,
            "profile": {
                "name": "Ana Zapata",
                "rfc": "GODE561231GR8",
                "email": "ana@example.com",
                "postal_code": "06600",
                "regimen_fiscal": "612",
                "uso_cfdi": "G03",
            },
        }
    )
    headers = service.auth(DISTRIBUTOR, "read")
    path = f"/v1/views/clients/{DISTRIBUTOR}"
    names = [r["name"] for r in service.client.get(path, headers=headers).json()["rows"]]
    assert names == ["Ana Zapata", "Juan Pérez"]
    page = service.client.get(f"{path}?sort=name&limit=1&offset=1", headers=headers).json()
    assert [r["client_id"] for r in page["rows"]] == ["C1"]
    wrong = service.client.get(f"{path}?sort=sideways", headers=headers)
    assert wrong.status_code == 400
    bad_limit = service.client.get(f"{path}?limit=many", headers=headers)
    assert bad_limit.status_code == 400
    assert bad_limit.json()["details"]["errors"][0]["field"] == "limit"


def test_history_is_paged_by_an_opaque_cursor(service: Service) -> None:
    for _ in range(3):
        service.post(consume())
    headers = service.auth(CLIENT, "read")
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = service.client.get(f"/v1/history/{CTI}{query}", headers=headers).json()
        seen += [m["balance"] for m in page["movements"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5, 4, 3, 2]
    assert seen[-1] == service.lg.balance(CTI)
    bad = service.client.get(f"/v1/history/{CTI}?cursor=xyz", headers=headers)
    assert bad.status_code == 400


def test_a_balance_at_an_instant(service: Service, clock: ManualClock) -> None:
    before = clock()
    clock.advance(timedelta(seconds=60))
    service.post(consume())
    headers = service.auth(MASTER, "read")
    now = service.client.get(f"/v1/balances/{CTI}", headers=headers).json()
    then = service.client.get(
        f"/v1/balances/{CTI}", params={"at": before.isoformat()}, headers=headers
    ).json()
    assert (now["balance"], then["balance"]) == (4, 5)
    naive = service.client.get(f"/v1/balances/{CTI}?at=2026-01-01T00:00:00", headers=headers)
    assert naive.status_code == 400


def test_operations_need_no_key(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    assert service.client.get("/readyz").json() == {"status": "ready"}
    service.post(consume())
    service.post(consume(cti_id="nope"))
    text = service.client.get("/metrics").text
    assert 'ledger_http_requests_total{method="POST",route="/v1/commands",status="200"}' in text
    assert 'ledger_http_rejections_total{code="unknown_account"}' in text
    assert "ledger_commits_total" in text
    assert "ledger_commit_events_bucket" in text
    document = service.client.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert "ConsumeStamp" in document["components"]["schemas"]


def test_every_rejection_code_has_a_status() -> None:
    """The docs' mapping covers every code; unlisted ones are business rules (422)."""
    codes = {code for code, _, _ in mapping_rows()}
    assert set(MESSAGES) <= codes
    assert set(STATUS) <= set(MESSAGES)


# The authorisation matrix: each kind of key x each command type ------------------------------

PLACEHOLDERS = {
    "DISTRIBUTOR-ID-1": DISTRIBUTOR,
    "SELLER-ID-1": DISTRIBUTOR,
    "BUYER-ID-1": DISTRIBUTOR,
    "PARENT-ID-1": DISTRIBUTOR,
    "FROM-ID-1": DISTRIBUTOR,
    "CLIENT-ID-1": CLIENT,
    "CTI-ID-1": CTI,
    "FROM-CTI-ID-1": CTI,
    "TO-ID-1": CTI,
}


def matrix_command(command_type: str) -> dict[str, Any]:
    """The docs' example of a command, aimed at the test network's accounts."""
    text = json.dumps({k: v for k, v in example(command_type).items() if k != "actor"})
    for placeholder, account in PLACEHOLDERS.items():
        text = text.replace(f'"{placeholder}"', f'"{account}"')
    return dict(json.loads(text))


def test_the_authorisation_matrix_over_http_matches_the_library(clock: ManualClock) -> None:
    """Every command type sent with each kind of key: a read key is always 403; a write key
    gets what the library answers that actor, on a twin ledger fed the same commands."""
    with (
        Ledger.open("memory://", clock=clock, password_cost="fast") as served,
        Ledger.open("memory://", clock=clock, password_cost="fast") as twin,
    ):
        for lg in (served, twin):
            build_network(lg, cti_stamps=5)
        keys = ApiKeyStore.open("memory://")
        tokens = {
            (actor, scope): keys.create(actor, scope, name="", by="t", now=NOW)[1]  # type: ignore[arg-type]
            for actor in (MASTER, DISTRIBUTOR, CLIENT)
            for scope in ("read", "write")
        }
        statuses: dict[str, int] = {}
        with AppClient(create_app(served, keys)) as client:
            for command_type in command_models():
                command = matrix_command(command_type)
                for actor in (MASTER, DISTRIBUTOR, CLIENT):
                    before = events(served)
                    read = client.post(
                        "/v1/commands",
                        json=command,
                        headers={"Authorization": f"Bearer {tokens[actor, 'read']}"},
                    )
                    assert read.status_code == 403, (command_type, actor)
                    assert events(served) == before
                    response = client.post(
                        "/v1/commands",
                        json=command,
                        headers={"Authorization": f"Bearer {tokens[actor, 'write']}"},
                    )
                    (expected,) = twin.execute_many([{**command, "actor": actor}])
                    body = response.json()
                    where = (command_type, actor, body)
                    if isinstance(expected, Rejected):
                        assert body["code"] == expected.code, where
                        assert response.status_code == STATUS.get(expected.code, 422) or (
                            expected.code == "idempotency_conflict"
                        ), where
                        if expected.code == "not_authorised":
                            assert events(served) == before, where
                    else:
                        assert response.status_code == 200, where
                    statuses[f"{command_type}/{actor}"] = response.status_code
        keys.close()
    # Not vacuous: many refusals and many commands that passed the check.
    assert sum(1 for s in statuses.values() if s == 403) >= 40
    assert sum(1 for s in statuses.values() if s != 403) >= 40
    assert statuses["ConsumeStamp/M"] == 200
    assert statuses["ConsumeStamp/D1"] == statuses["ConsumeStamp/C1"] == 403


def test_docs_http_lists_the_code_to_status_mapping() -> None:
    """docs/HTTP.md ends with the table the service answers by (regenerate it from
    ``adapters.http.problems.mapping_markdown`` when a code is added)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "HTTP.md").read_text(encoding="utf-8")
    assert page.endswith(mapping_markdown())


def test_a_host_mounts_the_app_in_its_own(service: Service) -> None:
    """``Mount("/ledger", app=create_app(lg, keys))`` inside a host's Starlette app."""
    host = Starlette(routes=[Mount("/ledger", app=create_app(service.lg, service.keys))])
    with AppClient(host) as client:
        response = client.get(f"/ledger/v1/balances/{CTI}", headers=service.auth(CLIENT, "read"))
        assert response.json()["balance"] == 5
        assert client.get("/ledger/v1/nowhere").status_code == 404


def test_status_shows_projection_errors_to_a_master_only(service: Service) -> None:
    """A failure's text and aggregate may name other networks: only a master sees them."""
    master = service.client.get("/v1/status", headers=service.auth(MASTER, "read")).json()
    other = service.client.get("/v1/status", headers=service.auth(DISTRIBUTOR, "read")).json()
    assert {"error", "error_aggregate_id"} <= set(master["views"][0])
    assert "error" not in other["views"][0]
    assert "error_aggregate_id" not in other["views"][0]
    assert other["views"][0]["failed"] is False
    assert other["views"][0]["position"] == master["views"][0]["position"]
