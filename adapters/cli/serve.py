"""``ledger serve`` (the HTTP service, DESIGN §11) and ``ledger api-key create|list|revoke``."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from types import FrameType
from typing import Any

from adapters.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    add_command,
    error,
    fail,
    output_console,
    url_option,
    whole_number,
)
from adapters.storage.api_keys import SCOPES, ApiKeyError, ApiKeyStore
from ledger.aggregates.client import Client
from ledger.aggregates.distributor import Distributor
from ledger.aggregates.master_account import MasterAccount
from ledger.api import Ledger
from ledger.errors import LedgerError

SETTINGS_ENV = "LEDGER_SERVE_SETTINGS"
"""How ``serve`` hands its settings to worker processes (JSON)."""
WORKERS_MAX = 64
GRACEFUL_SHUTDOWN_S = 30
"""Bound on the wait for requests in flight after SIGTERM."""


_workers = whole_number("_workers", 1, WORKERS_MAX)
_port = whole_number("_port", 1, 65_535)


def _non_negative(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("0 to 1,000,000")
    return value


def register(commands: Any) -> None:
    """Adds ``serve`` and ``api-key`` to the ``ledger`` CLI's subparsers."""
    serve = add_command(
        commands,
        "serve",
        "run the ledger as an HTTP service (API keys, OpenAPI at /openapi.json)",
        "Serves POST /v1/commands, POST /v1/commands/batch, GET /v1/balances/{holder},\n"
        "/v1/history/{holder}, /v1/views/..., /v1/status, and /openapi.json, /healthz, /readyz,\n"
        "/metrics. Every /v1 request carries `Authorization: Bearer <key>` (`ledger api-key\n"
        "create`). Plain HTTP: put TLS in a proxy in front of it. SIGTERM stops accepting,\n"
        "answers the requests in flight (their commits included) and exits 0.",
        [
            "ledger serve --url postgresql://postgres@db/ledger --port 8080 --workers 4",
            "ledger serve --url sqlite:///ledger.db --rate-limit 200",
        ],
    )
    url_option(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes, each with its own ledger (group commit within each)",
    )
    serve.add_argument(
        "--projections",
        choices=("inline", "background", "off"),
        default="inline",
        help="who keeps the views current: each worker after its commits, a thread, or"
        " another process (`ledger project --follow`)",
    )
    serve.add_argument(
        "--rate-limit",
        type=_non_negative,
        default=0.0,
        metavar="RPS",
        help="requests a second per key and worker (a burst of as many); past it, 429 with"
        " Retry-After; 0: no limit",
    )
    serve.add_argument(
        "--key-cache-s",
        type=_non_negative,
        default=2.0,
        help="seconds a checked key is trusted without asking the database again (a revoked"
        " key is refused within this long)",
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log one line per request (uvicorn's)"
    )
    serve.set_defaults(func=run_serve)

    keys = add_command(
        commands,
        "api-key",
        "create, list or revoke the API keys of the HTTP service",
        "A key acts as one account (a master account, distributor or client) with scope read\n"
        "(reads only) or write (commands and reads). It is printed once, when created, and\n"
        "stored only as a hash. Creating and revoking are recorded (who, when, which actor)\n"
        "in the table ledger_api_key_events.",
        [
            "ledger api-key create --actor D1 --scope write --name 'portal D1'",
            "ledger api-key list",
            "ledger api-key revoke 9f3c2a7b1d4e5f60",
        ],
    )
    actions = keys.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="create, list or revoke"
    )
    create = add_command(
        actions,
        "create",
        "make a key for an account and print it once",
        "The key goes to stdout, alone on its line; store it now: only its hash is kept.",
        ["ledger api-key create --actor M --scope write --name 'stamping service'"],
    )
    url_option(create)
    create.add_argument("--actor", required=True, metavar="ID", help="the account the key acts as")
    create.add_argument("--scope", required=True, choices=SCOPES, help="read, or write (and read)")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--by", default=None, help="who makes it (default: the login name)")
    create.set_defaults(func=run_key_create)

    listing = add_command(
        actions,
        "list",
        "print every key (never the key itself)",
        "Key id, actor, scope, name, and when and by whom it was created and revoked.",
        ["ledger api-key list", "ledger api-key list --json"],
    )
    url_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per key")
    listing.set_defaults(func=run_key_list)

    revoke = add_command(
        actions,
        "revoke",
        "revoke a key for good",
        "Every worker of `ledger serve` refuses it (401) within --key-cache-s seconds.",
        ["ledger api-key revoke 9f3c2a7b1d4e5f60"],
    )
    url_option(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (ledger api-key list)")
    revoke.add_argument("--by", default=None, help="who revokes it (default: the login name)")
    revoke.set_defaults(func=run_key_revoke)


def _by(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


# api-key ------------------------------------------------------------------------------------


def run_key_create(args: argparse.Namespace) -> int:
    """``ledger api-key create``: the key on stdout, once."""
    url = getattr(args, "url", None)
    try:
        with Ledger.open(url, projections="off") as lg:
            account = lg.engine.current(args.actor)
            if not isinstance(account, MasterAccount | Distributor | Client):
                return error(
                    "api-key", f"--actor {args.actor!r}: no master account, distributor or client"
                )
            keys = ApiKeyStore.open(lg.url)
            try:
                key, text = keys.create(
                    args.actor, args.scope, name=args.name, by=_by(args.by), now=lg.engine.clock()
                )
            finally:
                keys.close()
    except ApiKeyError as exc:
        return error("api-key", str(exc))
    except LedgerError as exc:
        return fail("api-key", exc)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"api-key: made {key.key_id} for {key.actor_id} ({key.scope}); it is shown only now\n"
    )
    return EXIT_OK


@contextlib.contextmanager
def _key_store(args: argparse.Namespace) -> Iterator[tuple[Ledger, ApiKeyStore]]:
    with Ledger.open(getattr(args, "url", None), projections="off") as lg:
        keys = ApiKeyStore.open(lg.url)
        try:
            yield lg, keys
        finally:
            keys.close()


def run_key_list(args: argparse.Namespace) -> int:
    """``ledger api-key list``."""
    try:
        with _key_store(args) as (_, keys):
            found = keys.list_keys()
    except LedgerError as exc:
        return fail("api-key", exc)
    if args.json:
        for key in found:
            sys.stdout.write(json.dumps(key.to_dict(), ensure_ascii=False) + "\n")
        return EXIT_OK
    console = output_console()
    for key in found:
        state = "live" if key.revoked_at is None else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
        console.print(
            f"{key.key_id}  {key.actor_id}  {key.scope}  {state}  "
            f"created {key.created_at:%Y-%m-%d %H:%M} by {key.created_by}  {key.name}",
            soft_wrap=True,
        )
    return EXIT_OK


def run_key_revoke(args: argparse.Namespace) -> int:
    """``ledger api-key revoke KEY_ID``."""
    try:
        with _key_store(args) as (lg, keys):
            key = keys.revoke(args.key_id, by=_by(args.by), now=lg.engine.clock())
    except ApiKeyError as exc:
        return error("api-key", str(exc))
    except LedgerError as exc:
        return fail("api-key", exc)
    sys.stderr.write(f"api-key: revoked {key.key_id} ({key.actor_id}, {key.scope})\n")
    return EXIT_OK


# serve --------------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    """``ledger serve``: until SIGTERM or SIGINT, then a graceful stop (exit 0)."""
    import uvicorn  # noqa: PLC0415  (only serve needs the server)

    from adapters.http.app import ServiceSettings, create_app  # noqa: PLC0415
    from adapters.http.metrics import MULTIPROCESS_ENV  # noqa: PLC0415

    settings = ServiceSettings(
        url=getattr(args, "url", None),
        projections=args.projections,
        rate_limit_rps=args.rate_limit,
        key_cache_s=args.key_cache_s,
    )
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "access_log": args.access_log,
        "log_level": "info" if args.access_log else "warning",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "server_header": False,
        "proxy_headers": False,
    }
    try:
        # Opened here first, so that a wrong URL or an unreachable database is one line and
        # exit 2 before anything listens; with one worker this ledger is the one served.
        lg = Ledger.open(settings.url, projections=settings.projections)
        keys = ApiKeyStore.open(lg.url)
    except LedgerError as exc:
        return fail("serve", exc)
    where = f"http://{args.host}:{args.port}"
    if args.workers == 1:
        try:
            app = create_app(lg, keys, settings=settings)
            _server_class(f"serve: listening on {where} (1 worker)\n")(
                uvicorn.Config(app, lifespan="on", **options)
            ).run()
        except SystemExit:  # uvicorn's own line said why (the port taken, say)
            return error("serve", f"could not serve on {where}", EXIT_ERROR)
        finally:
            keys.close()
            lg.close()
        sys.stderr.write("serve: stopped\n")
        return EXIT_OK
    keys.close()
    lg.close()
    # Each worker opens its own ledger (``app_from_environment``); their metrics are summed
    # from files in one folder.
    metrics_dir = None
    if not os.environ.get(MULTIPROCESS_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="ledger-metrics-")
        os.environ[MULTIPROCESS_ENV] = metrics_dir
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    try:
        sys.stderr.write(f"serve: starting {args.workers} workers on {where}\n")
        sys.stderr.flush()
        uvicorn.run(
            "adapters.cli.serve:app_from_environment",
            factory=True,
            workers=args.workers,
            **options,
        )
    except SystemExit:  # uvicorn's own line said why (the port taken, say)
        return error("serve", f"could not serve on {where}", EXIT_ERROR)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.stderr.write("serve: stopped\n")
    return EXIT_OK


def _server_class(ready: str) -> type[Any]:
    import uvicorn  # noqa: PLC0415

    class Server(uvicorn.Server):
        """uvicorn's server, but a stop asked for by SIGTERM or SIGINT ends the process
        normally once the server has stopped (exit 0, after the ledger is closed) instead of
        raising the signal again."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # bound and listening: say so (``ready``), once
                sys.stderr.write(ready)
                sys.stderr.flush()

    return Server


def app_from_environment() -> Any:
    """The application of one worker process, from the settings ``serve`` left in
    ``$LEDGER_SERVE_SETTINGS``; its logging configured as the CLI's."""
    from adapters.http.app import app_from_settings  # noqa: PLC0415
    from ledger.logging import configure_cli_logging  # noqa: PLC0415

    configure_cli_logging()
    return app_from_settings(json.loads(os.environ[SETTINGS_ENV]))
