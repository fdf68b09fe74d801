"""``ledger demo``: a realistic reseller network, built in seconds, and its views printed."""

from adapters.cli.demo.network import (
    CLOSING,
    CLOSING_CLIENT,
    CONVERTED_BY,
    CONVERTED_DISTRIBUTOR,
    LICENSED_BY,
    MASTER,
    SUBSCRIPTIONS,
    run,
)

__all__ = [
    "CLOSING",
    "CLOSING_CLIENT",
    "CONVERTED_BY",
    "CONVERTED_DISTRIBUTOR",
    "LICENSED_BY",
    "MASTER",
    "SUBSCRIPTIONS",
    "run",
]
