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
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

from ledger.domain import Event
from ledger.errors import InfrastructureError, LedgerError, one_line
from ledger.json_fields import json_fields
from ledger.logging import get_logger
from ledger.projections.base import (
    Buffer,
    Cursor,
    Handler,
    Table,
    View,
    ViewDatabase,
    ViewWriteError,
    resolve,
)

log = get_logger("ledger.projections")

TRACKING = Table(
    "view_tracking",
    (
        ("name", "text"),
        ("position", "int"),
        ("version", "int"),
        ("error", "text"),
        ("error_notification_id", "int"),
        ("error_aggregate_id", "text"),
        ("error_topic", "text"),
        ("error_at", "ts"),
        ("failures", "int"),
        ("heartbeat_at", "ts"),
    ),
    key=("name",),
)
"""One row per view: the last notification id its rows include, its schema version, the last
failure that stopped it (cleared by the next page that commits): the error, the event that
broke the page (notification id, aggregate, topic), when, and how many attempts failed in a row;
and the projector's heartbeat: when a projector last ran over the view."""
_ERROR_COLUMNS = TRACKING.columns[3:9]
_ADDED_COLUMNS = TRACKING.columns[3:]
"""Columns added after the first release (``setup`` adds them to an older tracking table)."""
HEARTBEAT_EVERY_S = 1.0
"""A projector records its heartbeat at most this often when it runs without committing a page
(every committed page records it too): at most one small write a second per process."""

PAGE_SIZE_DEFAULT = 20_000
"""Notifications per page (and per view transaction); memory is bounded by it, not history."""
PAGE_SIZE_MAX = 100_000
MOVED_RETRIES_MAX = 1_000
"""Bound on pages given up in a row because another processor moved the positions."""
EVENT_ATTEMPTS_MAX = 3
"""Attempts at a single event's page before it is reported as the one that breaks the views."""
EVENT_RETRY_PAUSE_S = 0.1
"""Pause before retrying a single event's page (doubled each time)."""
FAILED_RETRY_AFTER_S = 10.0
"""A catch-up within this time of a reported failure, still behind that event, reports it again
without retrying (queries, commits and followers would otherwise retry it in a busy loop)."""


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


class ProjectionFailed(ProjectionError):
    """Raised when one stored event cannot be projected: the views stop just before it.

    Every event before it is in the views; the failure is recorded in ``view_tracking`` (where
    ``status`` and ``verify`` read it) and logged. The event is retried on the next catch-up
    after ``FAILED_RETRY_AFTER_S``; the views never skip it, so they stay equal to a replay.
    """

    def __init__(
        self,
        notification_id: int,
        aggregate_id: str,
        topic: str,
        error: str,
        *,
        view: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.notification_id = notification_id
        self.aggregate_id = aggregate_id
        self.topic = topic
        self.error = one_line(error)
        self.view = view
        self.attempts = attempts
        where = f" (view {view})" if view else ""
        super().__init__(
            f"notification {notification_id} (aggregate {aggregate_id}, {topic}) cannot be"
            f" projected{where}: {self.error}"
        )


class _Moved(Exception):
    """Another processor moved the tracking positions since this page was read."""


class _BufferFailed(Exception):
    """An event of the page could not be decoded or buffered (``Page.failure`` says which)."""


def _transient(exc: BaseException) -> bool:
    """Whether a failed page may succeed unchanged later (the database was unreachable, ...).

    ``ViewWriteError`` is the view database refusing the rows themselves, and any other
    exception is a bug or bad data in our own code: retrying the same rows fails again, so
    those pages are narrowed down to the event that breaks them.
    """
    return isinstance(exc, InfrastructureError) and not isinstance(exc, ViewWriteError)


@dataclass(frozen=True, slots=True)
class ViewStatus:
    """Where one view stands (``ledger status``, ``Ledger.status()``)."""

    name: str
    version: int
    position: int
    lag_events: int
    """Notification ids between the view's position and the newest in the log."""
    lag_s: float | None
    """Seconds since the oldest event not yet in the view was recorded (0 when caught up;
    None when that event cannot be read)."""
    error: str | None
    error_notification_id: int | None
    error_aggregate_id: str | None
    error_topic: str | None
    error_at: datetime | None
    failures: int
    heartbeat_at: datetime | None = None
    """When a projector last ran over the view (None: none has since the column exists)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return json_fields(self)


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
        self._beat_at: float | None = None
        self._beats: bool | None = None
        """Whether the tracking table has the heartbeat column (None: not looked yet)."""
        self._positions: dict[str, int] | None = None
        self._dispatch: dict[type[Event], list[tuple[int, Handler]]] = {}
        self._handlers = [view.handlers() for view in self.views]
        self._lock_suffix = " FOR UPDATE" if database.dialect.name == "postgres" else ""
        self._executor: ThreadPoolExecutor | None = None
        self._known_failure: tuple[ProjectionFailed, float] | None = None
        self.failed_retry_after_s = FAILED_RETRY_AFTER_S
        """Within this time of a failure, a catch-up still behind it raises it again at once.
        Inline mode needs it (every commit and query catches up); a follower or background
        thread that backs off on its own sets it to 0."""
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
            self._add_columns(cursor)
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
                        "INSERT INTO view_tracking (name, position, version, failures)"
                        " VALUES (?, 0, ?, 0)",
                        (view.name, view.version),
                    )
            self._positions = None
            self._beats = True

    def _add_columns(self, cursor: Cursor) -> None:
        """Adds the failure and heartbeat columns to a tracking table made before they existed."""
        present = _tracking_columns(cursor)
        types = {"text": "text", "int": "bigint", "ts": "timestamptz"}
        if cursor.dialect.name == "sqlite":
            types = {"text": "TEXT", "int": "INTEGER", "ts": "TEXT"}
        for name, kind in _ADDED_COLUMNS:
            if name not in present:
                cursor.execute(f"ALTER TABLE view_tracking ADD COLUMN {name} {types[kind]}")

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
            f"UPDATE view_tracking SET position = 0, version = ?, {_CLEARED} WHERE name = ?",  # noqa: S608  (constant SQL)
            (view.version, view.name),
        )
        cursor.execute(
            "INSERT INTO view_tracking (name, position, version, failures) SELECT ?, 0, ?, 0 "
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

    def status(self, now: datetime | None = None) -> list[ViewStatus]:
        """Each view's position, lag (events and seconds) and last failure, as committed."""
        now = now or datetime.now(UTC)
        with self.database.read() as cursor:
            present = _tracking_columns(cursor)
            errors = "error, error_notification_id, error_aggregate_id, error_topic, error_at"
            if not present >= {name for name, _ in _ERROR_COLUMNS}:
                # Made by a release that recorded no failures, not opened to write since.
                errors = "NULL, NULL, NULL, NULL, NULL"
            failures = "failures" if "failures" in present else "0"
            heartbeat = "heartbeat_at" if "heartbeat_at" in present else "NULL"
            cursor.execute(
                f"SELECT name, version, position, {errors}, {failures}, {heartbeat}"  # noqa: S608  (constant SQL)
                " FROM view_tracking"
            )
            rows = {str(row[0]): row for row in cursor.fetchall()}
        newest = self.source.max_notification_id() or 0
        waited: dict[int, float | None] = {}
        found: list[ViewStatus] = []
        dialect = self.database.dialect
        for view in self.views:
            row = rows.get(view.name)
            position = 0 if row is None else int(row[2])
            lag_events = max(newest - position, 0)
            if position not in waited:
                waited[position] = 0.0 if lag_events == 0 else self.waited_s(position, now)
            found.append(
                ViewStatus(
                    name=view.name,
                    version=view.version if row is None else int(row[1]),
                    position=position,
                    lag_events=lag_events,
                    lag_s=waited[position],
                    error=None if row is None else row[3],
                    error_notification_id=None if row is None or row[4] is None else int(row[4]),
                    error_aggregate_id=None if row is None else row[5],
                    error_topic=None if row is None else row[6],
                    error_at=None if row is None else dialect.to_ts(row[7]),
                    failures=0 if row is None or row[8] is None else int(row[8]),
                    heartbeat_at=None if row is None else dialect.to_ts(row[9]),
                )
            )
        return found

    def waited_s(self, position: int, now: datetime) -> float | None:
        """Seconds since the first event after ``position`` was recorded (0 when there is none;
        None when it cannot be read): the lag in seconds of whatever stands at ``position``."""
        following = self.source.select_notifications(position, 1, inclusive_of_start=False)
        if not following:
            return 0.0
        try:
            recorded = self.decode(following[0]).timestamp
        except Exception:
            return None
        return max((now - recorded).total_seconds(), 0.0)

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

        A page that cannot be committed for another reason than an unreachable database is
        narrowed down (halves, then single events, each retried) to the event that breaks it:
        every event before that one commits, and ``ProjectionFailed`` names it.
        """
        with self._lock:
            self.beat(due_only=True)
            self._check_known_failure()
            run = _Run(progress, self._remaining() if progress is not None else 0)
            in_flight: tuple[Future[int], _Page] | None = None
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
                    if not page.notifications and page.failure is None:
                        break
                    run.pages += 1
                    if (
                        self.overlap
                        and page.failure is None
                        and len(page.notifications) == self.page_size
                    ):
                        # More pages likely follow: commit this one while reading the next.
                        in_flight = (self._flusher().submit(self._commit, page), page)
                        self._positions = page.moved_to
                        continue
                    try:
                        run.add(self._commit_or_isolate(page))
                        self._positions = page.moved_to
                    except _Moved:
                        self._positions = None
                        run.moved()
                        continue
                    if page.failure is not None:
                        self._positions = None
                        self._fail(page.failure)
                if in_flight is not None:
                    flushed = in_flight
                    in_flight = None
                    self._settle(flushed, run)
            finally:
                if in_flight is not None:
                    # Never leave a transaction running behind the caller (an error is raising).
                    wait([in_flight[0]])
                    self._positions = None
            self._known_failure = None
            return run.done

    def beat(self, *, due_only: bool = False) -> None:
        """Records the heartbeat: this projector runs over its views now (``verify`` tells a
        view that a running projector cannot advance from one that nobody projects).

        ``due_only``: only if this projector recorded none for ``HEARTBEAT_EVERY_S``.
        """
        now = time.monotonic()
        if due_only and self._beat_at is not None and now - self._beat_at < HEARTBEAT_EVERY_S:
            return
        names = [view.name for view in self.views]
        marks = ", ".join("?" * len(names))
        with self.database.write() as cursor:
            if self._beats is None:  # a tracking table no ``setup`` of this release extended
                self._beats = "heartbeat_at" in _tracking_columns(cursor)
            if self._beats:
                rows = f"name IN ({marks})"
                if cursor.dialect.name == "postgres":
                    # Rows another processor's page holds are skipped, not waited for: that
                    # page sets them, and two lockers of these rows in different orders
                    # would deadlock.
                    rows = f"name IN (SELECT name FROM view_tracking WHERE {rows} {_SKIP_LOCKED})"  # noqa: S608
                cursor.execute(
                    f"UPDATE view_tracking SET heartbeat_at = ? WHERE {rows}",  # noqa: S608  (placeholders only)
                    (self.database.dialect.ts(datetime.now(UTC)), *names),
                )
        self._beat_at = now

    def _check_known_failure(self) -> None:
        """Raises the last failure again, without retrying, while it is recent and unpassed."""
        known = self._known_failure
        if known is None:
            return
        failure, failed_at = known
        if time.monotonic() - failed_at >= self.failed_retry_after_s:
            return
        if self.position() >= failure.notification_id:
            self._known_failure = None  # another processor got past it
            return
        raise failure

    def _remaining(self) -> int:
        positions = self._positions or self.positions()
        newest = self.source.max_notification_id() or 0
        return max(newest - min(positions.values(), default=0), 0)

    def _settle(self, flushed: tuple[Future[int], _Page], run: _Run) -> bool:
        """Waits for a page's commit; False if it found the positions moved or failed."""
        future, page = flushed
        try:
            run.add(future.result())
        except _Moved:
            self._positions = None
            return False
        except Exception as exc:
            if _transient(exc):
                raise
            # The page read ahead assumed this one committed: drop it, narrow this one down.
            self._positions = None
            run.add(self._isolate(page.notifications, page.positions, exc))
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
        """Projects the whole history (or ``pages_max`` pages) aside, then swaps it in.

        The new views are built in a separate place of the view database (a schema on
        PostgreSQL, a file beside the database on SQLite) while the current views keep
        answering. One transaction then replaces the current views and their tracking with the
        new ones. If the build fails, the current views stay as they were and the error names
        the event that broke it. Events recorded during the build are projected after the swap.
        """
        with self._lock:
            with self.database.aside() as aside:
                builder = Projector(
                    aside, self.source, self.decode, self.views, page_size=self.page_size
                )
                builder.overlap = self.overlap
                try:
                    builder.setup()
                    done = builder.catch_up(progress=progress, pages_max=pages_max)
                finally:
                    builder.close()
                tables = [table for view in self.views for table in view.tables]
                self.database.swap_in(aside, tables)
            self._positions = None
            self._known_failure = None
            log.info(
                "views_rebuilt", views=[view.name for view in self.views], position=self.position()
            )
            if pages_max is None:
                done += self.catch_up()
            return done

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
        return self._buffer(notifications, positions)

    def _buffer(self, notifications: Sequence[Any], positions: dict[str, int]) -> _Page:
        """A page of ``notifications`` after ``positions``, buffered for every view.

        An event that cannot be decoded or buffered ends the page before it: the page then
        holds the events before it (buffered afresh, so nothing of the bad event is kept) and
        names the failure.
        """
        try:
            buffers = self._fill(notifications, positions)
        except _BufferFailed as failed:
            index, failure = failed.args
            notifications = notifications[:index]
            page = self._buffer(notifications, positions)
            return _Page(page.notifications, page.buffers, positions, page.moved_to, failure)
        if not notifications:
            return _Page(notifications, buffers, positions, positions)
        last = int(notifications[-1].id)
        moved_to = {name: max(position, last) for name, position in positions.items()}
        return _Page(notifications, buffers, positions, moved_to)

    def _fill(self, notifications: Sequence[Any], positions: dict[str, int]) -> list[Buffer]:
        dialect = self.database.dialect
        buffers: list[Buffer] = [view.new_buffer(dialect) for view in self.views]
        decode = self.decode
        dispatch = self._dispatch
        index = 0
        # A view added or rebuilt lags the others: it alone takes the older events.
        floors = [positions[view.name] for view in self.views]
        same = len(set(floors)) <= 1
        view_name: str | None = None
        try:
            for index, notification in enumerate(notifications):  # noqa: B007  (read in except)
                view_name = None
                event = decode(notification)
                targets = dispatch.get(type(event)) or self._targets(type(event))
                for target, handler in targets:
                    if same or notification.id > floors[target]:
                        view_name = self.views[target].name
                        handler(buffers[target], event)
        except Exception as exc:
            notification = notifications[index]
            raise _BufferFailed(
                index, _failure(notification, f"{type(exc).__name__}: {exc}", view_name)
            ) from exc
        return buffers

    def _commit_or_isolate(self, page: _Page) -> int:
        """Commits the page; a failure that is not transient is narrowed to its event."""
        if not page.notifications:
            return 0
        try:
            return self._commit(page)
        except _Moved:
            raise
        except Exception as exc:
            if _transient(exc):
                raise
            return self._isolate(page.notifications, page.positions, exc)

    def _isolate(
        self, notifications: Sequence[Any], positions: dict[str, int], error: BaseException
    ) -> int:
        """Commits the halves of a failed page in order; raises at the event that breaks one."""
        log.warning(
            "projection_page_failed",
            first=int(notifications[0].id),
            last=int(notifications[-1].id),
            error=one_line(str(error)),
        )
        if len(notifications) == 1:
            self._retry_single(notifications, positions, error)
            return 1
        middle = len(notifications) // 2
        done = 0
        for part in (notifications[:middle], notifications[middle:]):
            page = self._buffer(part, positions)
            if page.failure is not None:  # a handler that failed only now: not deterministic
                self._commit_or_isolate(page)
                self._fail(page.failure)
            try:
                done += self._commit(page)
            except _Moved:
                raise
            except Exception as exc:
                if _transient(exc):
                    raise
                done += self._isolate(part, positions, exc)
            positions = page.moved_to
        return done

    def _retry_single(
        self, notifications: Sequence[Any], positions: dict[str, int], error: BaseException
    ) -> None:
        """Retries one event's page (bounded); reports the event if it keeps failing."""
        pause_s = EVENT_RETRY_PAUSE_S
        for _attempt in range(1, EVENT_ATTEMPTS_MAX):
            time.sleep(pause_s)
            pause_s *= 2
            page = self._buffer(notifications, positions)
            try:
                if page.failure is None:
                    self._commit(page)
                    return
            except _Moved:
                raise
            except Exception as exc:
                if _transient(exc):
                    raise
                error = exc
        failure = page.failure or _failure(
            notifications[0], f"{type(error).__name__}: {error}", _failed_view(error)
        )
        self._fail(replace_attempts(failure, EVENT_ATTEMPTS_MAX))

    def _fail(self, failure: ProjectionFailed) -> NoReturn:
        """Records the failure where ``status`` and ``verify`` read it, logs it, raises it."""
        self._positions = None
        self._known_failure = (failure, time.monotonic())
        log.error(
            "projection_failed",
            notification_id=failure.notification_id,
            aggregate_id=failure.aggregate_id,
            topic=failure.topic,
            view=failure.view,
            error=failure.error,
        )
        try:
            with self.database.write() as cursor:
                cursor.execute(
                    "UPDATE view_tracking SET error = ?, error_notification_id = ?,"
                    " error_aggregate_id = ?, error_topic = ?, error_at = ?,"
                    " failures = COALESCE(failures, 0) + 1 WHERE position < ?",
                    (
                        str(failure),
                        failure.notification_id,
                        failure.aggregate_id,
                        failure.topic,
                        self.database.dialect.ts(datetime.now(UTC)),
                        failure.notification_id,
                    ),
                )
        except Exception:
            # The database refused even this: the failure is still raised below and logged
            # here with the reason it could not be recorded.
            log.exception("projection_failure_not_recorded")
        raise failure

    def _commit(self, page: _Page) -> int:
        """One transaction: check the positions, flush every buffer, move the positions."""
        with self.database.write() as cursor:
            self._check_unmoved(cursor, page.positions)
            for index, buffer in enumerate(page.buffers):
                try:
                    buffer.flush(cursor)
                except Exception as exc:
                    exc.add_note(f"view {self.views[index].name}")
                    raise
            beat = self.database.dialect.ts(datetime.now(UTC))
            cursor.executemany(
                f"UPDATE view_tracking SET position = ?, heartbeat_at = ?, {_CLEARED}"  # noqa: S608  (constant SQL)
                " WHERE name = ?",
                [(position, beat, name) for name, position in page.moved_to.items()],
            )
        self._beat_at = time.monotonic()
        return len(page.notifications)


def _tracking_columns(cursor: Cursor) -> set[str]:
    """The columns ``view_tracking`` has in the view database."""
    if cursor.dialect.name == "postgres":
        cursor.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'view_tracking'"
        )
    else:
        cursor.execute("SELECT name FROM pragma_table_info('view_tracking')")
    return {str(row[0]) for row in cursor.fetchall()}


_SKIP_LOCKED = "FOR UPDATE SKIP LOCKED"

_CLEARED = (
    "error = NULL, error_notification_id = NULL, error_aggregate_id = NULL, error_topic = NULL,"
    " error_at = NULL, failures = 0"
)
"""SQL that clears a view's failure: a committed page means it moved past it."""


def _failure(notification: Any, error: str, view: str | None) -> ProjectionFailed:
    return ProjectionFailed(
        int(notification.id),
        str(notification.originator_id),
        str(notification.topic),
        error,
        view=view,
    )


def _failed_view(exc: BaseException) -> str | None:
    """The view whose flush raised ``exc`` (from the note ``_commit`` adds)."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith("view "):
            return str(note[5:])
    return None


def replace_attempts(failure: ProjectionFailed, attempts: int) -> ProjectionFailed:
    """The same failure, counting ``attempts``."""
    return ProjectionFailed(
        failure.notification_id,
        failure.aggregate_id,
        failure.topic,
        failure.error,
        view=failure.view,
        attempts=attempts,
    )


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
    failure: ProjectionFailed | None = None
    """The event that ends the page early because it could not be decoded or buffered."""


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
        projector.failed_retry_after_s = 0.0  # this thread backs off on its own

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
            except ProjectionFailed as exc:
                # Logged and recorded in ``view_tracking`` by the projector; retried later.
                self.last_error = exc
                backoff_s = min(backoff_s * 2, 30.0)
            except Exception as exc:
                # The events are safe; the views lag until the database answers again. The error
                # is logged with its traceback and kept in ``last_error`` for ``views.status()``.
                self.last_error = exc
                log.exception("projection_failed", error=one_line(str(exc)))
                backoff_s = min(backoff_s * 2, 30.0)
            self._wake.wait(backoff_s)
            self._wake.clear()
