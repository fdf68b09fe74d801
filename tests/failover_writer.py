"""One writer process of the failover test: threads consuming stamps until told to stop.

``python -m tests.failover_writer URL DIR INDEX THREADS HOT_CTI OWN_CTI...`` runs ``THREADS``
threads on one ``Ledger``; each consumes stamps, every other one on the hot CTI and the others
on a CTI of its own. A command is sent again with its key until it is recorded, whatever the
error (a lost connection, no writable server, ``CommitOutcomeUnknown``): nothing is given up.

Files in DIR, per process: ``acked-INDEX`` gets each acknowledged CFDI UUID, written and
fsynced before the next command; ``unknown-INDEX`` each UUID that once answered
``CommitOutcomeUnknown`` (fsynced too); ``events-INDEX.jsonl`` the timeline (each success and
error with its time, thread and error class). The process stops when ``DIR/stop`` exists.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from ledger.api import Ledger
from ledger.errors import CommitOutcomeUnknown, LedgerError, Rejected
from tests.support import MASTER, consume

RETRY_PAUSE_S = 0.05
"""Pause before sending a failed command again."""
STOP_POLL_S = 0.2


class Files:
    """The process's output files, shared by its threads."""

    def __init__(self, directory: Path, index: int) -> None:
        self._lock = threading.Lock()
        self.acked = (directory / f"acked-{index}").open("a")
        self.unknown = (directory / f"unknown-{index}").open("a")
        self.events = (directory / f"events-{index}.jsonl").open("a")

    def durable(self, file: IO[str], line: str) -> None:
        """Appends ``line`` and waits until it is on disk."""
        with self._lock:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())

    def close(self) -> None:
        """Flushes and closes the files."""
        for file in (self.acked, self.unknown, self.events):
            file.close()

    def event(self, **fields: Any) -> None:
        """A timeline entry (not fsynced: the process ends cleanly)."""
        with self._lock:
            self.events.write(json.dumps({"t": time.time(), **fields}) + "\n")
            self.events.flush()


def write(
    lg: Ledger, files: Files, thread: str, ctis: tuple[str, str], stop: threading.Event
) -> None:
    """Consumes stamps until ``stop``, each command retried with its key until recorded."""
    turn = 0
    while not stop.is_set():
        command = consume(ctis[turn % 2], cfdi_uuid=str(uuid.uuid4()), actor=MASTER)
        turn += 1
        unknown = False
        while True:
            try:
                outcome = lg.execute(command)
            except Rejected as exc:  # a rule broke: a bug of the test's set-up
                files.event(thread=thread, kind="rejected", error=exc.code)
                raise
            except LedgerError as exc:
                files.event(
                    thread=thread, kind="error", error=type(exc).__name__, message=str(exc)[:600]
                )
                if isinstance(exc, CommitOutcomeUnknown) and not unknown:
                    unknown = True
                    files.durable(files.unknown, str(command["cfdi_uuid"]))
                if stop.is_set():
                    return
                time.sleep(RETRY_PAUSE_S)
                continue
            files.durable(files.acked, str(command["cfdi_uuid"]))
            files.event(thread=thread, kind="ok", replayed=outcome.replayed, unknown=unknown)
            break


def main(argv: list[str]) -> int:
    """Runs the writer threads until ``DIR/stop`` exists."""
    url, directory, index, threads, hot, *own = argv
    folder = Path(directory)
    files = Files(folder, int(index))
    stop = threading.Event()
    with Ledger.open(url, projections="off", password_cost="fast") as lg:
        workers = [
            threading.Thread(
                target=write,
                args=(lg, files, f"{index}.{n}", (hot, own[n]), stop),
                name=f"writer-{index}.{n}",
            )
            for n in range(int(threads))
        ]
        for worker in workers:
            worker.start()
        files.event(thread=index, kind="started")
        while not (folder / "stop").exists() and any(w.is_alive() for w in workers):
            time.sleep(STOP_POLL_S)
        stop.set()
        for worker in workers:
            worker.join()
    files.event(thread=index, kind="stopped")
    files.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
