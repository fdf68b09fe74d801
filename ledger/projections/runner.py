"""The shared runner: follows the notification log into every view, exactly once.

One *step* reads a page of notifications after the tracked position, decodes each event once,
lets every view buffer its rows in memory, then opens ONE write transaction that (1) re-reads the
tracking rows under lock and gives the page up if another processor moved them, (2) flushes each
view's buffer in bulk, and (3) moves the tracking positions. Rows and positions therefore commit
together: a crash at any point leaves both as they were before the page or both after it, and two
processors (a background thread, ``ledger project --follow``, another process in inline mode)
never count a page twice.

Each view keeps its own tracking row (name, position, version). A view whose ``version``
changed, or a view added later, is rebuilt from the start of the log while the others skip the
events they already have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.domain import Event
from ledger.errors import LedgerError
from ledger.logging import get_logger
from ledger.projections.base import Buffer, Cursor, Handler, Table, View, ViewDatabase, resolve

log = get_logger("ledger.projections")

TRACKING = Table(
    "view_tracking",
    (("name", "text"), ("position", "int"), ("version", "int")),
    key=("name",),
)
"""One row per view: the last notification id its rows include, and its schema version."""

PAGE_SIZE_DEFAULT = 20_000
"""Notifications per page (and per view transaction); memory is bounded by it, not history."""
PAGE_SIZE_MAX = 100_000
MOVED_RETRIES_MAX = 1_000
"""Bound on pages given up in a row because another processor moved the positions."""


class NotificationSource(Protocol):
    """The recorder's notification log (eventsourcing's ``select_notifications``)."""

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Any]:
        """Notifications after (or from) ``start``, at most ``limit``, in id order."""

    def max_notification_id(self) -> int | None:
        """The newest notification id, or None when the log is empty."""


class ProjectionError(LedgerError):
    """Raised when the views cannot follow the log (another processor keeps winning, ...)."""


class _Moved(Exception):
    """Another processor moved the tracking positions since this page was read."""


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a catch-up is: events done of the total known when it started."""

    done: int
    total: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Events per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def remaining_s(self) -> float | None:
        """Estimated seconds left, or None before the first page."""
        if self.done == 0 or self.rate == 0:
            return None
        return max(self.total - self.done, 0) / self.rate


ProgressCallback = Callable[[Progress], None]


class Projector:
    """Runs the views over the notification log. Safe to share between threads."""

    def __init__(
        self,
        database: ViewDatabase,
        source: NotificationSource,
        decode: Callable[[Any], Event],
        views: Sequence[View],
        *,
        page_size: int = PAGE_SIZE_DEFAULT,
    ) -> None:
        if not 1 <= page_size <= PAGE_SIZE_MAX:
            raise ValueError(f"page_size must be 1..{PAGE_SIZE_MAX}")
        self.database = database
        self.source = source
        self.decode = decode
        self.views = tuple(views)
        self.page_size = page_size
        self._lock = threading.RLock()
        self._positions: dict[str, int] | None = None
        self._dispatch: dict[type[Event], list[tuple[int, Handler]]] = {}
        self._handlers = [view.handlers() for view in self.views]
        self._lock_suffix = " FOR UPDATE" if database.dialect.name == "postgres" else ""
        self._executor: ThreadPoolExecutor | None = None
        # Whether a full page commits in the flusher thread while the next is read. It pays
        # where a commit mostly waits on a server (PostgreSQL: 15-20 % faster measured);
        # SQLite's commits are in-process work that only contends for the interpreter (10 %
        # slower measured). Tests switch it on to exercise both paths on both backends.
        self.overlap = database.dialect.name == "postgres"

    # Schema ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Creates missing tables; rebuilds from scratch any view whose version changed."""
        self.database.create([TRACKING])
        with self._lock, self.database.write() as cursor:
            self._lock_schema(cursor)
            stored = self._locked_rows(cursor)
            for view in self.views:
                found = stored.get(view.name)
                if found is not None and found[1] != view.version:
                    log.warning(
                        "view_version_changed", view=view.name, old=found[1], new=view.version
                    )
                    self._reset(cursor, view)
                    continue
                for table in view.tables:
                    for statement in cursor.dialect.create_statements(table):
                        cursor.execute(statement)
                if found is None:
                    cursor.execute(
                        "INSERT INTO view_tracking (name, position, version) VALUES (?, 0, ?)",
                        (view.name, view.version),
                    )
            self._positions = None

    def _lock_schema(self, cursor: Cursor) -> None:
        if cursor.dialect.name == "postgres":
            # DDL from several processes at once must not interleave (CREATE IF NOT EXISTS races).
            cursor.execute("SELECT pg_advisory_xact_lock(?)", (7_310_420_002,))

    def _reset(self, cursor: Cursor, view: View) -> None:
        for table in view.tables:
            cursor.execute(f"DROP TABLE IF EXISTS {table.name}")
            for statement in cursor.dialect.create_statements(table):
                cursor.execute(statement)
        cursor.execute(
            "UPDATE view_tracking SET position = 0, version = ? WHERE name = ?",
            (view.version, view.name),
        )
        cursor.execute(
            "INSERT INTO view_tracking (name, position, version) SELECT ?, 0, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM view_tracking WHERE name = ?)",
            (view.name, view.version, view.name),
        )

    def _check_unmoved(self, cursor: Cursor, positions: dict[str, int]) -> None:
        """Raises ``_Moved`` unless the tracked positions are still ``positions`` (locked)."""
        current = {name: position for name, (position, _) in self._locked_rows(cursor).items()}
        if any(current.get(name) != position for name, position in positions.items()):
            raise _Moved

    def _locked_rows(self, cursor: Cursor) -> dict[str, tuple[int, int]]:
        cursor.execute(f"SELECT name, position, version FROM view_tracking{self._lock_suffix}")  # noqa: S608  (constant SQL fragments; every value is a bound parameter)
        return {str(n): (int(p), int(v)) for n, p, v in cursor.fetchall()}

    # Positions ---------------------------------------------------------------------------

    def positions(self) -> dict[str, int]:
        """Each view's tracked notification id, as committed."""
        with self.database.read() as cursor:
            cursor.execute("SELECT name, position FROM view_tracking")
            stored = {str(n): int(p) for n, p in cursor.fetchall()}
        return {view.name: stored.get(view.name, 0) for view in self.views}

    def position(self) -> int:
        """The notification id every view has reached."""
        return min(self.positions().values(), default=0)

    def lag(self) -> int:
        """How many notifications the slowest view is behind the log."""
        newest = self.source.max_notification_id() or 0
        return max(newest - self.position(), 0)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every view table in key order, in one snapshot (to compare views)."""
        rows: dict[str, list[tuple[Any, ...]]] = {}
        with self.database.read() as cursor:
            for view in self.views:
                for table in view.tables:
                    order = ", ".join(table.key)
                    cursor.execute(f"SELECT * FROM {table.name} ORDER BY {order}")  # noqa: S608  (names from the table specs)
                    rows[table.name] = [tuple(row) for row in cursor.fetchall()]
        return rows

    # Running -----------------------------------------------------------------------------

    def catch_up(
        self,
        *,
        progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        pages_max: int | None = None,
    ) -> int:
        """Projects every notification recorded so far; returns how many were processed.

        On PostgreSQL, while one page's transaction runs (in the flusher thread, mostly
        waiting on the server) the next page is read and buffered here, so the two overlap. A page's
        buffers assume the previous page committed; if that commit finds the positions moved
        by another processor, the assumed page is dropped and reading restarts from what is
        committed.
        """
        with self._lock:
            run = _Run(progress, self._remaining() if progress is not None else 0)
            in_flight: Future[int] | None = None
            try:
                while (stop is None or not stop.is_set()) and (
                    pages_max is None or run.pages < pages_max
                ):
                    page: _Page | None = self._read_page()
                    if in_flight is not None:
                        flushed = in_flight
                        in_flight = None
                        page = page if self._settle(flushed, run) else None
                    if page is None:  # built on positions another processor replaced
                        run.moved()
                        continue
                    if not page.notifications:
                        break
                    run.pages += 1
                    if self.overlap and len(page.notifications) == self.page_size:
                        # More pages likely follow: commit this one while reading the next.
                        in_flight = self._flusher().submit(self._commit, page)
                        self._positions = page.moved_to
                    else:
                        try:
                            run.add(self._commit(page))
                            self._positions = page.moved_to
                        except _Moved:
                            self._positions = None
                            run.moved()
                if in_flight is not None:
                    flushed = in_flight
                    in_flight = None
                    self._settle(flushed, run)
            finally:
                if in_flight is not None:
                    # Never leave a transaction running behind the caller (an error is raising).
                    wait([in_flight])
                    self._positions = None
            return run.done

    def _remaining(self) -> int:
        positions = self._positions or self.positions()
        newest = self.source.max_notification_id() or 0
        return max(newest - min(positions.values(), default=0), 0)

    def _settle(self, flushed: Future[int], run: _Run) -> bool:
        """Waits for a page's commit; False if it found the positions moved."""
        try:
            run.add(flushed.result())
        except _Moved:
            self._positions = None
            return False
        return True

    def _flusher(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-views")
        return self._executor

    def close(self) -> None:
        """Stops the flusher thread (idempotent)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def rebuild(
        self, *, progress: ProgressCallback | None = None, pages_max: int | None = None
    ) -> int:
        """Drops every view's rows and projects the whole history again (or ``pages_max``)."""
        with self._lock:
            with self.database.write() as cursor:
                self._lock_schema(cursor)
                self._locked_rows(cursor)
                for view in self.views:
                    self._reset(cursor, view)
            self._positions = None
            log.info("views_dropped", views=[view.name for view in self.views])
            return self.catch_up(progress=progress, pages_max=pages_max)

    def _targets(self, event_class: type[Event]) -> list[tuple[int, Handler]]:
        targets = self._dispatch.get(event_class)
        if targets is None:
            targets = []
            for index, handlers in enumerate(self._handlers):
                handler = resolve(handlers, event_class)
                if handler is not None:
                    targets.append((index, handler))
            self._dispatch[event_class] = targets
        return targets

    def _read_page(self) -> _Page:
        """The next page after the assumed positions, decoded into fresh view buffers."""
        positions = self._positions
        if positions is None:
            positions = self.positions()
        start = min(positions.values(), default=0)
        notifications = self.source.select_notifications(
            start, self.page_size, inclusive_of_start=False
        )
        dialect = self.database.dialect
        buffers: list[Buffer] = [view.new_buffer(dialect) for view in self.views]
        if not notifications:
            return _Page(notifications, buffers, positions, positions)
        decode = self.decode
        dispatch = self._dispatch
        if len(set(positions.values())) == 1:
            for notification in notifications:
                event = decode(notification)
                targets = dispatch.get(type(event)) or self._targets(type(event))
                for index, handler in targets:
                    handler(buffers[index], event)
        else:
            # A view added or rebuilt lags the others: it alone takes the older events.
            floors = [positions[view.name] for view in self.views]
            for notification in notifications:
                event = decode(notification)
                for index, handler in dispatch.get(type(event)) or self._targets(type(event)):
                    if notification.id > floors[index]:
                        handler(buffers[index], event)
        last = int(notifications[-1].id)
        moved_to = {name: max(position, last) for name, position in positions.items()}
        return _Page(notifications, buffers, positions, moved_to)

    def _commit(self, page: _Page) -> int:
        """One transaction: check the positions, flush every buffer, move the positions."""
        with self.database.write() as cursor:
            self._check_unmoved(cursor, page.positions)
            for buffer in page.buffers:
                buffer.flush(cursor)
            cursor.executemany(
                "UPDATE view_tracking SET position = ? WHERE name = ?",
                [(position, name) for name, position in page.moved_to.items()],
            )
        return len(page.notifications)


@dataclass(slots=True)
class _Run:
    """Counters of one catch-up, and its progress reports."""

    progress: ProgressCallback | None
    total: int
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    pages: int = 0
    moves: int = 0

    def add(self, count: int) -> None:
        """A page committed."""
        self.done += count
        self.moves = 0
        if self.progress is not None:
            elapsed_s = time.perf_counter() - self.started
            self.progress(Progress(self.done, max(self.total, self.done), elapsed_s))

    def moved(self) -> None:
        """A page given up because another processor moved the positions (bounded)."""
        self.moves += 1
        if self.moves > MOVED_RETRIES_MAX:
            raise ProjectionError("another processor kept moving the views")


@dataclass(slots=True)
class _Page:
    """A page of notifications buffered for every view, and the positions it moves."""

    notifications: Sequence[Any]
    buffers: list[Buffer]
    positions: dict[str, int]
    moved_to: dict[str, int]


class BackgroundProjector:
    """A thread that keeps the views caught up: woken by local commits, polling for others."""

    def __init__(self, projector: Projector, *, poll_interval_s: float = 0.5) -> None:
        if not 0 < poll_interval_s <= 60:
            raise ValueError("poll_interval_s must be in (0, 60]")
        self.projector = projector
        self.poll_interval_s = poll_interval_s
        self.last_error: BaseException | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-projections", daemon=True)

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread is running."""
        return self._thread.is_alive()

    def wake(self, _ids: object = None) -> None:
        """Asks for a catch-up now (an ``Engine.on_commit`` callback)."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops the thread after its current page."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff_s = self.poll_interval_s
        while not self._stop.is_set():
            try:
                self.projector.catch_up(stop=self._stop)
                self.last_error = None
                backoff_s = self.poll_interval_s
            except Exception as exc:
                # The events are safe; the views lag until the database answers again. The error
                # is logged with its traceback and kept in ``last_error`` for ``views.status()``.
                self.last_error = exc
                log.exception("projection_failed", error=str(exc))
                backoff_s = min(backoff_s * 2, 30.0)
            self._wake.wait(backoff_s)
            self._wake.clear()
