"""The ledger as an ASGI application (DESIGN §11): Starlette routes over one ``Ledger``.

A route parses, calls the ``Ledger`` and maps the result; the rules stay in the library
(commands, authorisation of commands, idempotency) and in ``ledger.read_scope`` (what a key's
actor may read). Problems are built in ``problems.py`` from a ``Rejected``.

- ``POST /v1/commands``: one command (the same JSON as a ``ledger exec`` line, parsed by the same
  ``parse_command_json``), answered with its outcome or a problem. The key's actor is the
  command's actor; an ``Idempotency-Key`` header becomes the ``idempotency_key`` of a command
  without a natural key.
- ``POST /v1/commands/batch[?atomic=true]``: a JSON array (or NDJSON) of up to 10,000 commands,
  one result each, in order.
- ``GET /v1/balances/{holder}``, ``/v1/history/{holder}``, ``/v1/views/<query>/{id}`` (every query
  of ``Ledger.views``), ``/v1/status``: reads, scoped to what the key's actor may see.
- ``/openapi.json``, ``/healthz``, ``/readyz``, ``/metrics``: no key needed.

``create_app(ledger, keys)`` gives an app over a ``Ledger`` the host owns (to mount in its own
ASGI app); ``create_app(settings=ServiceSettings(url=...))`` opens and closes its own, as
``ledger serve`` does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import date, datetime
from typing import Any

import msgspec
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from adapters.http import metrics
from adapters.http.openapi import openapi_document
from adapters.http.problems import (
    http_problem,
    problem_response,
    rejected_response,
    rejection_problem,
)
from adapters.http.views import ViewParameter, ViewQuery, view_queries
from adapters.storage.api_keys import ApiKey, ApiKeyStore
from ledger.api import Ledger, Projections
from ledger.commands.json_text import parse_command_array, parse_command_json
from ledger.commands.models import COMMAND_ADAPTER
from ledger.errors import InfrastructureError, LedgerError, Rejected
from ledger.logging import get_logger
from ledger.outcome import Outcome
from ledger.proofs.tree import parse_leaf_input

log = get_logger("ledger.http")

BODY_BYTES_MAX = 1_000_000
"""Bound on the body of ``POST /v1/commands`` (413 past it)."""
BATCH_BYTES_MAX = 10_000_000
"""Bound on the body of ``POST /v1/commands/batch`` (413 past it)."""
BATCH_COMMANDS_MAX = 10_000
"""Bound on the commands of one batch request."""
HISTORY_PAGE_DEFAULT = 100
HISTORY_PAGE_MAX = 1_000
KEY_CACHE_S_DEFAULT = 2.0
"""How long a key checked against the database is trusted without asking again: a revoked key
is refused within this long by every worker."""
KEY_CACHE_ENTRIES_MAX = 10_000
TURN_COMMANDS_MAX = 32
"""Bound on the single commands of one turn of the event loop sent to the ledger in one call
(the ledger prepares up to 32 in the caller's thread, more in another)."""
JSON_MEDIA_TYPE = "application/json"

Result = Outcome | Rejected
_Waiting = tuple[dict[str, Any], "asyncio.Future[Result]"]
"""A single command and the future of the request that waits for its result."""

_ENCODER = msgspec.json.Encoder()
_OK_TRUE = b'{"ok":true,'
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """How ``ledger serve`` runs the application (all but ``url`` have safe defaults)."""

    url: str | None = None
    projections: Projections = "inline"
    rate_limit_rps: float = 0.0
    """Requests a second one key may make (a burst of as many); 0: no limit."""
    key_cache_s: float = KEY_CACHE_S_DEFAULT
    body_bytes_max: int = BODY_BYTES_MAX
    batch_bytes_max: int = BATCH_BYTES_MAX
    batch_commands_max: int = BATCH_COMMANDS_MAX


class Problem(Exception):
    """Raised inside a route to answer a problem document (``problems.http_problem``)."""

    def __init__(self, problem: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(problem.get("code"))
        self.problem = problem
        self.headers = headers


# What a route may answer -----------------------------------------------------------------------


def _json(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODER.encode(data), media_type=JSON_MEDIA_TYPE, headers=headers)


def _result_dict(result: Outcome | Rejected) -> Any:
    """A command's result as the response shows it (counted in the metrics)."""
    return _result_dicts([result])[0]


def _result_dicts(results: list[Outcome | Rejected]) -> list[Any]:
    """Each result as the response shows it: an outcome already encoded (``_outcome_json``), a
    rejection as its problem's object; the metrics counted once for them all (a counter's
    increment takes a lock: once per result cost a batch as much as its encoding)."""
    shown: list[Any] = []
    rejected = replayed = 0
    for result in results:
        if isinstance(result, Rejected):
            rejected += 1
            metrics.REJECTIONS.labels(result.code).inc()
            shown.append(rejection_problem(result))
        else:
            replayed += result.replayed
            shown.append(_outcome_json(result))
    for counter, count in (
        (metrics.COMMANDS_OK, len(results) - rejected - replayed),
        (metrics.COMMANDS_REPLAYED, replayed),
        (metrics.COMMANDS_REJECTED, rejected),
    ):
        if count:
            counter.inc(count)
    return shown


def _outcome_json(outcome: Outcome) -> msgspec.Raw:
    """``outcome.to_dict()`` as JSON, encoded from the struct itself: the struct leaves out
    its defaults, ``ok`` among them, which ``to_dict`` puts back; here it leads the object."""
    encoded = _ENCODER.encode(outcome)
    return msgspec.Raw(_OK_TRUE + encoded[1:] if len(encoded) > 2 else b'{"ok":true}')


def _header(scope: Scope, name: bytes) -> str | None:
    """One request header (``name`` in lower case, as ASGI gives them), read off the raw list:
    a request reads three, and Starlette's ``Headers`` decodes the whole list for each."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _invalid(field: str, message: str) -> Rejected:
    return Rejected("invalid_command", errors=[{"field": field, "message": message}])


def _settle(turn: list[_Waiting], done: asyncio.Future[list[Result]] | BaseException) -> None:
    """Hands each command of a turn its result, or the failure of the call they shared (the
    database away: none of them was recorded, the call being one request to the committer)."""
    if not isinstance(done, BaseException):
        if done.cancelled():
            for _, future in turn:
                future.cancel()
            return
        failure = done.exception()
        if failure is None:
            for (_, future), result in zip(turn, done.result(), strict=True):
                if not future.done():
                    future.set_result(result)
            return
        done = failure
    for _, future in turn:
        if not future.done():
            future.set_exception(done)


# Keys and rate ---------------------------------------------------------------------------------


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``rate`` (at least 1) held."""

    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Service:
    """What the routes share: the ledger, the keys, the limits and the requests in flight."""

    def __init__(
        self,
        settings: ServiceSettings,
        ledger: Ledger | None = None,
        keys: ApiKeyStore | None = None,
    ) -> None:
        self.settings = settings
        self._ledger = ledger
        self._keys = keys
        self._owned: list[Ledger | ApiKeyStore] = []
        self._key_cache: dict[bytes, tuple[ApiKey | None, float]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self.in_flight: set[str] = set()
        self.views = view_queries()
        self._turns: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
        self._sending: set[asyncio.Task[list[Result]]] = set()

    def execute(self, command: dict[str, Any]) -> asyncio.Future[Result]:
        """The command's result, once the ledger has it.

        The single commands that arrive in one turn of the event loop go to the ledger
        together, as one ``aexecute_many`` (not atomic: each has its own result, exactly as if
        it came alone), in parts of at most ``TURN_COMMANDS_MAX``. A call each cost a request
        its own preparation, queue entry and wake-up of the committer, and gave the committer
        the requests of a turn one by one.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = []
            loop.call_soon(self._send_turn, loop)
        turn.append((command, future))
        if len(turn) >= TURN_COMMANDS_MAX:
            self._send_turn(loop)
        return future

    def _send_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._turns.pop(loop, None)
        if turn is None:
            return  # sent when it filled up
        try:
            ledger = self.ledger
        except Problem as problem:
            _settle(turn, problem)
            return
        task = loop.create_task(ledger.aexecute_many([command for command, _ in turn]))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(lambda done: _settle(turn, done))

    @property
    def ledger(self) -> Ledger:
        """The ledger the routes call."""
        if self._ledger is None:
            raise Problem(http_problem("unavailable", "the ledger is not open"))
        return self._ledger

    @property
    def keys(self) -> ApiKeyStore:
        """The API keys."""
        if self._keys is None:
            raise Problem(http_problem("unavailable", "the ledger is not open"))
        return self._keys

    def open(self) -> None:
        """Opens what was not given (``ledger serve``); ``close`` closes only that."""
        if self._ledger is None:
            self._ledger = Ledger.open(self.settings.url, projections=self.settings.projections)
            self._owned.append(self._ledger)
        if self._keys is None:
            self._keys = ApiKeyStore.open(self._ledger.url or self.settings.url)
            self._owned.append(self._keys)
        if metrics.on_commit not in self._ledger.engine.on_commit:
            self._ledger.engine.on_commit.append(metrics.on_commit)

    def close(self) -> None:
        """Closes the ledger and key store this service opened (the ledger waits, bounded,
        for the commands queued)."""
        if self._ledger is not None:
            with contextlib.suppress(ValueError):
                self._ledger.engine.on_commit.remove(metrics.on_commit)
        while self._owned:
            self._owned.pop().close()

    async def authenticate(self, scope: Scope) -> ApiKey:
        """The live key of the request's ``Authorization: Bearer``; 401 (saying nothing more)
        otherwise, and 429 past the key's rate."""
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(http_problem("unauthorised"), {"WWW-Authenticate": "Bearer"})
        token = token.strip()
        # Cached by the token's digest: the cache compares digests, never the keys themselves.
        digest = hashlib.sha256(token.encode(errors="surrogateescape")).digest()
        now = time.monotonic()
        cached = self._key_cache.get(digest)
        if cached is not None and cached[1] > now:
            key = cached[0]
        else:
            key = await run_in_threadpool(self.keys.authenticate, token)
            if len(self._key_cache) >= KEY_CACHE_ENTRIES_MAX:
                self._key_cache.clear()
            self._key_cache[digest] = (key, now + self.settings.key_cache_s)
        if key is None:
            raise Problem(http_problem("unauthorised"), {"WWW-Authenticate": "Bearer"})
        self._take_token(key, now)
        return key

    def _take_token(self, key: ApiKey, now: float) -> None:
        rate = self.settings.rate_limit_rps
        if rate <= 0:
            return
        burst = max(rate, 1.0)
        bucket = self._buckets.get(key.key_id)
        if bucket is None:
            bucket = self._buckets[key.key_id] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1:
            retry_after_s = math.ceil((1 - bucket.tokens) / rate)
            raise Problem(
                http_problem("rate_limited", f"at most {rate:g} requests a second per key"),
                {"Retry-After": str(max(retry_after_s, 1))},
            )
        bucket.tokens -= 1


def _require_write(key: ApiKey) -> None:
    if key.scope != "write":
        raise Rejected("not_authorised", actor=key.actor_id, reason="a read key cannot write")


def _as_actor(command: dict[str, Any], key: ApiKey) -> dict[str, Any] | Rejected:
    """The command acting as the key's actor; ``not_authorised`` if it names another actor."""
    actor = command.get("actor", key.actor_id)
    if actor != key.actor_id:
        return Rejected(
            "not_authorised",
            actor=actor if isinstance(actor, str) else None,
            reason=f"this API key acts as {key.actor_id}",
        )
    if "actor" not in command:
        command["actor"] = key.actor_id
    return command


def _with_idempotency_key(command: dict[str, Any], header: str) -> dict[str, Any]:
    """The command with ``idempotency_key`` from the header, unless it has a natural key."""
    given = command.get("idempotency_key")
    if given is not None and given != header:
        raise _invalid("idempotency_key", "differs from the Idempotency-Key header")
    try:
        model = COMMAND_ADAPTER.validate_python(command)
    except (ValidationError, Rejected):
        model = None  # the ledger rejects it, naming the field
    if model is not None and model.natural_keys():
        return command  # idempotent by its own fields, as in the library
    return {**command, "idempotency_key": header}


async def _body(scope: Scope, receive: Receive, bytes_max: int) -> bytes:
    """The request's body, refused (413) past ``bytes_max`` without reading it all (the ASGI
    messages read as ``Request.stream`` reads them: a client gone is ``ClientDisconnect``)."""
    length = _header(scope, b"content-length")
    if length is not None:
        if not length.isdigit():
            raise _invalid("Content-Length", "not a number")
        if int(length) > bytes_max:
            raise Problem(http_problem("payload_too_large", f"at most {bytes_max} bytes"))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > bytes_max:
            raise Problem(http_problem("payload_too_large", f"at most {bytes_max} bytes"))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# Commands ------------------------------------------------------------------------------------


async def post_command(service: Service, scope: Scope, receive: Receive) -> Response:
    """``POST /v1/commands`` (served by ``_Commands``, without a ``Request``)."""
    key = await service.authenticate(scope)
    _require_write(key)
    body = await _body(scope, receive, service.settings.body_bytes_max)
    command = _as_actor(parse_command_json(body), key)
    if isinstance(command, Rejected):
        raise command
    header = _header(scope, b"idempotency-key")
    if header is not None:
        command = _with_idempotency_key(command, header)
    flight = command.get("idempotency_key")
    if isinstance(flight, str):
        if flight in service.in_flight:
            raise Problem(
                rejection_problem(
                    Rejected("idempotency_conflict", key=f"key:{flight}", reason="in flight"),
                    409,
                )
            )
        service.in_flight.add(flight)
    try:
        result = await service.execute(command)
    finally:
        if isinstance(flight, str):
            service.in_flight.discard(flight)
    if isinstance(result, Rejected):
        return problem_response(_result_dict(result))
    headers = {"Idempotency-Replayed": "true"} if result.replayed else None
    return _json(_result_dict(result), headers)


def _batch_items(body: bytes, content_type: str) -> list[dict[str, Any] | Rejected]:
    """Each command of a batch body, or its rejection (as ``ledger exec`` answers a line)."""
    if "ndjson" in content_type or "jsonlines" in content_type:
        lines = body.split(b"\n")
        if lines and not lines[-1].strip():
            lines.pop()  # the newline that ends the last line
        raws = [line.removesuffix(b"\r") for line in lines]
    else:
        commands = parse_command_array(body)
        if commands is not None:
            return list(commands)  # the common case: every one an object, no key repeated
        try:
            raws = [bytes(raw) for raw in _RAW_LIST.decode(body)]
        except RecursionError:
            raise Rejected("invalid_command", reason="JSON nested too deeply") from None
        except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
            raise Rejected(
                "invalid_command",
                reason=f"a JSON array of command objects (or NDJSON) was expected: {exc}",
            ) from None
    items: list[dict[str, Any] | Rejected] = []
    for index, raw in enumerate(raws):
        try:
            items.append(parse_command_json(raw))
        except Rejected as rejection:
            items.append(Rejected(rejection.code, index=index, **rejection.details))
    return items


async def post_batch(request: Request) -> Response:
    """``POST /v1/commands/batch[?atomic=true]``."""
    service: Service = request.app.state.service
    key = await service.authenticate(request.scope)
    _require_write(key)
    atomic_text = request.query_params.get("atomic", "false").lower()
    if atomic_text not in ("true", "false", "1", "0"):
        raise _invalid("atomic", "true or false")
    atomic = atomic_text in ("true", "1")
    if "idempotency-key" in request.headers:
        raise _invalid(
            "Idempotency-Key",
            "only for POST /v1/commands; give each command of a batch its own idempotency_key",
        )
    body = await _body(request.scope, request.receive, service.settings.batch_bytes_max)
    items = _batch_items(body, request.headers.get("content-type", ""))
    if len(items) > service.settings.batch_commands_max:
        raise _invalid("commands", f"at most {service.settings.batch_commands_max} in a batch")
    checked = [item if isinstance(item, Rejected) else _as_actor(item, key) for item in items]
    commands = [item for item in checked if not isinstance(item, Rejected)]
    if atomic and len(commands) < len(checked):
        first = next(i for i, item in enumerate(checked) if isinstance(item, Rejected))
        results: list[Outcome | Rejected] = [
            item if isinstance(item, Rejected) else Rejected("batch_aborted", rejected_index=first)
            for item in checked
        ]
    else:
        # The library's own execute_many, in a worker thread: it writes a long list in
        # pipelined parts (each sent while the next is decided) with the collector paused,
        # where aexecute_many takes it as one group (1,000 commands: 16 against 23 ms here).
        ledger = service.ledger
        done = iter(
            await run_in_threadpool(ledger.execute_many, commands, atomic=atomic)
            if commands
            else ()
        )
        results = [item if isinstance(item, Rejected) else next(done) for item in checked]
    return _json({"results": _result_dicts(results)})


# Reads ---------------------------------------------------------------------------------------


async def _reader(request: Request, account_id: str) -> tuple[Service, ApiKey]:
    service: Service = request.app.state.service
    key = await service.authenticate(request.scope)
    await run_in_threadpool(service.ledger.check_read, key.actor_id, account_id)
    return service, key


def _unit(request: Request) -> str:
    unit = request.query_params.get("unit", "stamps")
    if unit not in ("stamps", "points"):
        raise _invalid("unit", "stamps or points")
    return unit


async def get_balance(request: Request) -> Response:
    """``GET /v1/balances/{holder}?unit=&at=``."""
    holder = request.path_params["holder"]
    service, _ = await _reader(request, holder)
    unit = _unit(request)
    at_text = request.query_params.get("at")
    if at_text is None:
        balance = await run_in_threadpool(service.ledger.balance, holder, unit)
        return _json({"holder_id": holder, "unit": unit, "balance": balance, "at": None})
    at = _instant("at", at_text)
    balance = await run_in_threadpool(service.ledger.balance_at, holder, unit, at)
    return _json({"holder_id": holder, "unit": unit, "balance": balance, "at": at.isoformat()})


def _instant(field: str, text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise _invalid(field, "an ISO 8601 time with an offset, e.g. 2026-11-01T12:00:00-06:00")
    return at


def _page_limit(request: Request, default: int, maximum: int) -> int:
    text = request.query_params.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise _invalid("limit", f"1 to {maximum}")
    return int(text)


_CURSOR_PREFIX = "h1:"


def _cursor_position(text: str | None) -> int:
    if text is None:
        return 0
    try:
        decoded = base64.urlsafe_b64decode(text.encode("ascii") + b"==").decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        decoded = ""
    position = decoded.removeprefix(_CURSOR_PREFIX)
    if not decoded.startswith(_CURSOR_PREFIX) or not position.isdigit():
        raise _invalid("cursor", "not a cursor this service gave")
    return int(position)


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{position}".encode()).decode().rstrip("=")


async def get_history(request: Request) -> Response:
    """``GET /v1/history/{holder}?unit=&cursor=&limit=``: a page of movements, oldest first."""
    holder = request.path_params["holder"]
    service, _ = await _reader(request, holder)
    unit = _unit(request)
    start = _cursor_position(request.query_params.get("cursor"))
    limit = _page_limit(request, HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX)

    def page() -> list[dict[str, Any]]:
        movements = service.ledger.iter_history(holder, unit)
        return [m.to_dict() for m in itertools.islice(movements, start, start + limit + 1)]

    movements = await run_in_threadpool(page)
    more = len(movements) > limit
    return _json(
        {
            "movements": movements[:limit],
            "next_cursor": _cursor(start + limit) if more else None,
        }
    )


async def get_status(request: Request) -> Response:
    """``GET /v1/status``: the read side's positions, lags and last errors."""
    service: Service = request.app.state.service
    key = await service.authenticate(request.scope)
    status = await run_in_threadpool(service.ledger.status_for, key.actor_id)
    return _json(status)


def _parameter_value(parameter: ViewParameter, text: str) -> Any:
    if parameter.kind is bool:
        if text not in ("true", "false"):
            raise _invalid(parameter.name, "true or false")
        return text == "true"
    try:
        if parameter.kind is int:
            return int(text)
        if parameter.kind is date:
            return date.fromisoformat(text)
        if parameter.kind is datetime:
            return _instant(parameter.name, text)
    except ValueError:
        raise _invalid(parameter.name, f"not a {parameter.kind.__name__}") from None
    return text


def _view_endpoint(query: ViewQuery) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        subject = request.path_params[query.subject]
        service, _ = await _reader(request, subject)
        arguments: dict[str, Any] = {}
        for parameter in query.parameters:
            text = request.query_params.get(parameter.name)
            if text is not None:
                arguments[parameter.name] = _parameter_value(parameter, text)
            elif parameter.required:
                raise _invalid(parameter.name, "required")
        method = getattr(service.ledger.views, query.name)
        found = await run_in_threadpool(method, subject, **arguments)
        return _json({"rows": found} if query.many else found)

    endpoint.__name__ = f"view_{query.name}"
    endpoint.__doc__ = query.summary
    return endpoint


# Proofs (DESIGN §9) --------------------------------------------------------------------------


def _count(request: Request, name: str, *, required: bool) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        if required:
            raise _invalid(name, "required")
        return None
    if not text.isdigit() or not 0 < int(text) < 1 << 62:
        raise _invalid(name, "a positive whole number")
    return int(text)


async def get_checkpoint(request: Request) -> Response:
    """``GET /v1/checkpoint``: the latest signed checkpoint's note text (null before one)."""
    service: Service = request.app.state.service
    await service.authenticate(request.scope)
    note = await run_in_threadpool(service.ledger.checkpoint)
    return _json({"checkpoint": note})


async def get_inclusion(request: Request) -> Response:
    """``GET /v1/proofs/inclusion/{notification_id}?size=``: an event's inclusion proof, for a
    key whose actor may read the event's account (its leaf input holds the event)."""
    service: Service = request.app.state.service
    key = await service.authenticate(request.scope)
    text = request.path_params["notification_id"]
    if not text.isdigit() or not 0 < int(text) < 1 << 62:
        raise _invalid("notification_id", "a positive whole number")
    size = _count(request, "size", required=False)
    proof = await run_in_threadpool(service.ledger.prove_inclusion, int(text), size)
    _, originator_id, _, _, _ = parse_leaf_input(base64.b64decode(proof["leaf_input"]))
    await run_in_threadpool(service.ledger.check_read, key.actor_id, originator_id)
    return _json(proof)


async def get_consistency(request: Request) -> Response:
    """``GET /v1/proofs/consistency?from=&to=``: between two signed checkpoints (hashes only)."""
    service: Service = request.app.state.service
    await service.authenticate(request.scope)
    size1 = _count(request, "from", required=True)
    size2 = _count(request, "to", required=True)
    assert size1 is not None
    assert size2 is not None
    proof = await run_in_threadpool(service.ledger.prove_consistency, size1, size2)
    return _json(proof)


async def get_statement(request: Request) -> Response:
    """``GET /v1/statements/{holder}?unit=&from=&to=``: a holder's statement with its proofs."""
    holder = request.path_params["holder"]
    service, _ = await _reader(request, holder)
    unit = _unit(request)
    start = request.query_params.get("from")
    end = request.query_params.get("to")
    if start is None or end is None:
        raise _invalid("from" if start is None else "to", "required (a date, YYYY-MM-DD)")
    statement = await run_in_threadpool(service.ledger.statement, holder, unit, start, end)
    return _json(statement)


# Operations ----------------------------------------------------------------------------------


async def healthz(_request: Request) -> Response:
    """``GET /healthz``: the process is up."""
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: the ledger's database answers."""
    service: Service = request.app.state.service

    def ping() -> None:
        with service.keys.database.read() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()

    try:
        await run_in_threadpool(ping)
    except LedgerError as exc:
        raise Problem(http_problem("unavailable", str(exc))) from None
    return _json({"status": "ready"})


async def get_metrics(_request: Request) -> Response:
    """``GET /metrics``: Prometheus text."""
    text, media_type = metrics.exposition()
    return Response(text, media_type=media_type)


async def get_openapi(request: Request) -> Response:
    """``GET /openapi.json``: the OpenAPI 3.1 document."""
    return Response(request.app.state.openapi, media_type=JSON_MEDIA_TYPE)


# The application -----------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def _failure(route: str, exc: Exception) -> Response:
    """The problem that answers a route's failure (never a traceback): a rejection by its
    code, the database away as 503, a bug as 500."""
    if isinstance(exc, Rejected):
        metrics.REJECTIONS.labels(exc.code).inc()
        return rejected_response(exc)
    if isinstance(exc, Problem):
        metrics.REJECTIONS.labels(exc.problem["code"]).inc()
        return problem_response(exc.problem, exc.headers)
    if isinstance(exc, InfrastructureError):
        log.error("request_failed", route=route, error=str(exc))
        return problem_response(http_problem("unavailable", str(exc)))
    log.error("request_failed", route=route, error=f"{type(exc).__name__}: {exc}")
    return problem_response(http_problem("internal_error"))


class _Counted:
    """A route's request counter (by method and status) and latency histogram, their children
    bound once: ``labels`` looks a child up under a lock on every call."""

    __slots__ = ("counters", "latency", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self.latency = metrics.LATENCY.labels(route)
        self.counters: dict[tuple[str, int], Any] = {}

    def __call__(self, method: str, status: int, started: float) -> None:
        counter = self.counters.get((method, status))
        if counter is None:
            counter = metrics.REQUESTS.labels(self.route, method, status)
            if len(self.counters) < 100:
                self.counters[method, status] = counter
        counter.inc()
        self.latency.observe(time.perf_counter() - started)


def _answering(route: str, endpoint: Endpoint) -> Endpoint:
    """The endpoint with its metrics, and every failure answered as a problem (``_failure``)."""

    counted = _Counted(route)

    async def answer(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await endpoint(request)
        except Exception as exc:  # the one place that answers any failure: never a traceback
            response = _failure(route, exc)
        counted(request.method, response.status_code, started)
        return response

    answer.__name__ = endpoint.__name__
    answer.__doc__ = endpoint.__doc__
    return answer


class _Commands:
    """``POST /v1/commands`` as a plain ASGI app, answered as ``_answering`` answers the others.

    The hot route: Starlette's ``Request`` and the wrappers of a function endpoint cost a
    single command's request several microseconds, and this route reads nothing but three
    headers and the body.
    """

    route = "/v1/commands"

    def __init__(self, service: Service) -> None:
        self.service = service
        self.counted = _Counted(self.route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            response = await post_command(self.service, scope, receive)
        except Exception as exc:  # answered as every route answers a failure
            response = _failure(self.route, exc)
        self.counted(scope["method"], response.status_code, started)
        await response(scope, receive, send)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """No route (404) or a wrong method (405), as problems."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        problem = http_problem("method_not_allowed")
        headers = {"Allow": exc.headers["Allow"]} if exc.headers and "Allow" in exc.headers else {}
    else:
        problem = http_problem("not_found")
        headers = {}
    metrics.REQUESTS.labels("unmatched", request.method, problem["status"]).inc()
    return problem_response(problem, headers)


class _Application(Starlette):
    """Starlette, with ``POST /v1/commands`` at the top level handed to ``_Commands`` before the
    middleware and the router: they would only pass it on (``_Commands`` answers every failure
    itself, so nothing reaches them), and on the hot route they cost as much again as the
    route's own HTTP work. Anything else, and the same route under a host's ``Mount``, takes
    the usual way (the router hands it to the same ``_Commands``)."""

    def __init__(self, commands: _Commands, **options: Any) -> None:
        super().__init__(**options)
        self.commands = commands

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == _Commands.route
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self.commands(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def routes(service: Service, commands: _Commands) -> list[Route]:
    """Every route of the service: ``(path, endpoint, methods)`` with problems and metrics."""
    table: list[tuple[str, Endpoint, list[str]]] = [
        ("/v1/commands/batch", post_batch, ["POST"]),
        ("/v1/balances/{holder}", get_balance, ["GET"]),
        ("/v1/history/{holder}", get_history, ["GET"]),
        ("/v1/status", get_status, ["GET"]),
        ("/v1/checkpoint", get_checkpoint, ["GET"]),
        ("/v1/proofs/inclusion/{notification_id}", get_inclusion, ["GET"]),
        ("/v1/proofs/consistency", get_consistency, ["GET"]),
        ("/v1/statements/{holder}", get_statement, ["GET"]),
        *((query.path, _view_endpoint(query), ["GET"]) for query in service.views),
        ("/healthz", healthz, ["GET"]),
        ("/readyz", readyz, ["GET"]),
        ("/metrics", get_metrics, ["GET"]),
        ("/openapi.json", get_openapi, ["GET"]),
    ]
    commands_route = Route(
        _Commands.route,
        commands,
        methods=["POST"],
        name="post_command",
        include_in_schema=False,
    )
    return [
        commands_route,
        *(
            Route(path, _answering(path, endpoint), methods=methods, include_in_schema=False)
            for path, endpoint, methods in table
        ),
    ]


def create_app(
    ledger: Ledger | None = None,
    keys: ApiKeyStore | None = None,
    *,
    settings: ServiceSettings | None = None,
) -> Starlette:
    """The ASGI application.

    Given a ``ledger`` (and its ``keys``), it uses them and leaves them open: the host owns
    them, and may mount the app in its own (``Mount("/ledger", app=create_app(lg, keys))``).
    Otherwise it opens the ledger at ``settings.url`` (and its keys) when it starts and closes
    them when it stops (``ledger serve``).
    """
    settings = settings or ServiceSettings(url=None if ledger is None else ledger.url)
    service = Service(settings, ledger, keys)
    if ledger is not None:
        service.open()  # opens only the key store, when none was given

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(service.open)
        try:
            yield
        finally:
            # The ledger's close waits for queued commands: in a thread, not in the loop.
            await asyncio.shield(run_in_threadpool(service.close))

    commands = _Commands(service)
    app = _Application(
        commands,
        routes=routes(service, commands),
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.openapi = _ENCODER.encode(openapi_document(service.views))
    return app


def app_from_settings(settings: Mapping[str, Any]) -> Starlette:
    """``create_app`` from plain settings (what ``ledger serve`` hands each worker)."""
    return create_app(settings=ServiceSettings(**settings))
