"""Publishers' targets (DESIGN §10), one module per broker behind ``ledger.outbound.Target``.

- ``jetstream.py``: NATS JetStream (nats-py);
- ``amqp.py``: an AMQP 0-9-1 topic exchange, RabbitMQ (aio-pika over aiormq).

``open_target(url, ...)`` picks one by the URL's scheme.
"""

from __future__ import annotations

from ledger.errors import Rejected
from ledger.outbound.publisher import Target

STREAM_DEFAULT = "LEDGER"
EXCHANGE_DEFAULT = "ledger"
SUBJECT_PREFIX_DEFAULT = "ledger"


def open_target(
    url: str,
    *,
    stream: str = STREAM_DEFAULT,
    exchange: str = EXCHANGE_DEFAULT,
    subject_prefix: str = SUBJECT_PREFIX_DEFAULT,
) -> Target:
    """The target of ``url``: ``nats://HOST:PORT`` or ``amqp://USER:PASS@HOST:PORT/VHOST``."""
    # The client libraries load only for the target asked for (every other command starts
    # without them).
    scheme = url.partition("://")[0].lower()
    if scheme in ("nats", "tls") and "://" in url:
        from adapters.publish.jetstream import JetStreamTarget  # noqa: PLC0415

        return JetStreamTarget(url, stream=stream, subject_prefix=subject_prefix)
    if scheme in ("amqp", "amqps") and "://" in url:
        from adapters.publish.amqp import AmqpTarget  # noqa: PLC0415

        return AmqpTarget(url, exchange=exchange)
    raise Rejected("invalid_command", field="to", reason="nats://HOST:PORT or amqp://...")
