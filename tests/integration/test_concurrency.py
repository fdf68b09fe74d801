"""Several OS processes write to one database at once (DESIGN §3.2, §3.3; issue 2.7).

Each test runs on a SQLite file and on a PostgreSQL database (``store_url``) and starts real
processes (``spawn``) that open their own ``Ledger`` on it; the scenarios and their checks are in
``tests/integration/concurrency.py``.
"""

from __future__ import annotations

from ledger.clock import ManualClock
from tests.integration.concurrency import (
    check_hot_cti_never_errors,
    check_long_batches_racing_record_once,
    check_processes_never_overdraw,
    check_racing_duplicates_record_once,
)


def test_processes_consuming_one_cti_never_overdraw(store_url: str, clock: ManualClock) -> None:
    """More consumptions than stamps from four processes: exactly the stamps, each CFDI once."""
    check_processes_never_overdraw(store_url, clock)


def test_processes_racing_on_the_same_cfdis_record_each_once(
    store_url: str, clock: ManualClock
) -> None:
    """The same CFDIs from four processes at once: one stamp each, every caller the same outcome."""
    check_racing_duplicates_record_once(store_url, clock)


def test_processes_racing_long_batches_record_each_cfdi_once(
    store_url: str, clock: ManualClock
) -> None:
    """The same 600 CFDIs as one batch from four processes, in both orders: each stamped once."""
    check_long_batches_racing_record_once(store_url, clock)


def test_a_hot_cti_raced_by_processes_and_threads_never_errors(
    store_url: str, clock: ManualClock
) -> None:
    """8 processes x 4 threads on one CTI: outcomes or insufficient_stamps, never an error."""
    check_hot_cti_never_errors(store_url, clock)
