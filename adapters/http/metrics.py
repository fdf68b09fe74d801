"""Prometheus metrics of the service (``GET /metrics``): requests, latencies, commits, group
sizes and rejections by code.

With several worker processes (``ledger serve --workers N``) each worker writes its values to
files in ``$PROMETHEUS_MULTIPROC_DIR`` (``serve`` makes that folder before starting them), and
``/metrics`` sums every worker's files, whichever worker answers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's metrics (one process: what ``/metrics`` shows)."""

REQUESTS = Counter(
    "ledger_http_requests",
    "HTTP requests answered, by route template, method and status",
    ("route", "method", "status"),
    registry=REGISTRY,
)
LATENCY = Histogram(
    "ledger_http_request_seconds",
    "Time from a request's arrival to its response, by route template",
    ("route",),
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
    registry=REGISTRY,
)
COMMANDS = Counter(
    "ledger_http_commands",
    "Commands answered over HTTP, by outcome (ok, replayed, rejected)",
    ("outcome",),
    registry=REGISTRY,
)
COMMANDS_OK = COMMANDS.labels("ok")
COMMANDS_REPLAYED = COMMANDS.labels("replayed")
COMMANDS_REJECTED = COMMANDS.labels("rejected")
REJECTIONS = Counter(
    "ledger_http_rejections",
    "Rejected commands and refused requests, by code",
    ("code",),
    registry=REGISTRY,
)
COMMITS = Counter(
    "ledger_commits",
    "Transactions committed by this process's ledger (group commit)",
    registry=REGISTRY,
)
GROUP_EVENTS = Histogram(
    "ledger_commit_events",
    "Events recorded per committed transaction (the size of a commit group)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 5000),
    registry=REGISTRY,
)


def on_commit(notification_ids: Sequence[int]) -> None:
    """The ledger's commit callback: one commit of that many events."""
    COMMITS.inc()
    GROUP_EVENTS.observe(len(notification_ids))


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every metric (every worker's, with several) and its media type."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
