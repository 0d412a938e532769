"""Database connection: one SQLAlchemy engine, one ``transaction()`` context, honest errors.

SQLite is the embedded default: WAL journal (readers never wait for the writer), ``synchronous=FULL``
(a commit survives power loss; NORMAL can drop the last commits), a ``busy_timeout`` so writers queue
instead of failing at once, and foreign keys on. Write transactions start with ``BEGIN IMMEDIATE`` so the
write lock is taken up front: a deferred transaction that upgrades to a writer can fail with SQLITE_BUSY
without ever consulting the busy handler. The same Core schema runs on PostgreSQL (pass its URL).

Every driver error (SQLAlchemy's, sqlite3's, psycopg's) is translated here, inside ``transaction()``, into
stillmotion's own: nothing above the store imports a driver's exceptions. ``DatabaseUnavailable`` (HTTP
503, with Retry-After) when waiting may help: ``database_busy`` (a lock held past the busy timeout),
``database_full`` (the disk or ``max_page_count`` is full), ``database_unavailable`` (the server cannot be
reached: refused, reset, starting up, shutting down, too many connections). ``DatabaseConflict`` for a
unique key taken; ``DatabaseError`` (500, logged with its traceback) for anything else.
``run_with_retry()`` is for writes that must not be dropped (the worker's progress and terminal states).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from stillmotion.errors import StillmotionError

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0  # how long one statement waits for another writer's lock before giving up
CONNECT_TIMEOUT_S = 5  # a PostgreSQL server that does not answer a connection this fast is unavailable
RETRY_INITIAL_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 1.0
DEFAULT_RETRY_DEADLINE_S = 120.0  # worker writes keep retrying this long before the error surfaces
RETRY_AFTER_BUSY_S = 5
RETRY_AFTER_FULL_S = 60
RETRY_AFTER_UNAVAILABLE_S = 5
_WRITE_OPTION = "stillmotion_write"

BUSY, FULL, UNAVAILABLE = "busy", "full", "unavailable"


class DatabaseError(StillmotionError):
    """The job database failed in a way we did not expect (a bug or a broken setup; the log has why)."""

    code = "database_error"
    http_status = 500


class DatabaseUnavailable(DatabaseError):
    """The job database cannot serve right now: locked too long, its disk is full, or it cannot be reached.
    ``code`` says which; waiting and trying again may help (``retry_after_s``)."""

    code = "database_busy"
    http_status = 503


class DatabaseConflict(DatabaseError):
    """A write broke a unique key (e.g. two submissions raced with one idempotency key)."""

    code = "database_conflict"
    http_status = 409


# SQLite result codes (the primary code is the low byte of the extended one): https://sqlite.org/rescode.html
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_IOERR = 10
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html): disk_full,
# insufficient_resources, out_of_memory; lock_not_available, deadlock, serialization_failure; and the server
# going away: class 08 (connection exception), admin/crash shutdown, cannot_connect_now (starting up),
# too_many_connections.
PG_FULL_STATES = frozenset({"53100", "53000", "53200"})
PG_BUSY_STATES = frozenset({"55P03", "40P01", "40001"})
PG_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
PG_CONNECTION_CLASS = "08"


def _driver_error(exc: BaseException) -> BaseException:
    """The DB-API exception under SQLAlchemy's wrapper (or ``exc`` itself)."""
    return getattr(exc, "orig", None) or exc


def error_kind(exc: BaseException) -> str | None:
    """'busy', 'full', 'unavailable' or None, from the driver's error code (never from the message text).

    SQLite: SQLITE_BUSY / SQLITE_LOCKED are 'busy'; SQLITE_FULL and SQLITE_IOERR (what a disk that fills
    during a write gives) are 'full'; SQLITE_CANTOPEN is 'unavailable'. PostgreSQL: by SQLSTATE; a psycopg
    ``OperationalError`` without one failed below SQL (refused, reset, timed out): 'unavailable'. So is a
    connection SQLAlchemy saw drop, and a pool with no connection to give.
    """
    if isinstance(exc, PoolTimeout) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return UNAVAILABLE
    orig = _driver_error(exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        primary = code & 0xFF
        if primary in (SQLITE_BUSY, SQLITE_LOCKED):
            return BUSY
        if primary in (SQLITE_FULL, SQLITE_IOERR):
            return FULL
        if primary == SQLITE_CANTOPEN:
            return UNAVAILABLE
        return None
    if isinstance(orig, sqlite3.Error):
        return None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str):
        if state in PG_BUSY_STATES:
            return BUSY
        if state in PG_FULL_STATES:
            return FULL
        if state in PG_UNAVAILABLE_STATES or state.startswith(PG_CONNECTION_CLASS):
            return UNAVAILABLE
        return None
    if type(orig).__name__ in ("OperationalError", "InterfaceError"):  # psycopg's, without a SQLSTATE
        return UNAVAILABLE
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(_driver_error(exc)).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def translate_error(exc: BaseException) -> DatabaseError:
    """stillmotion's error for a driver failure: ``DatabaseUnavailable`` when waiting may help,
    ``DatabaseConflict`` for a unique key taken, else ``DatabaseError`` (logged here with its traceback)."""
    kind = error_kind(exc)
    if kind == BUSY:
        return DatabaseUnavailable(
            "The job database is busy (another process holds its write lock); try again in a few seconds.",
            code="database_busy",
            retry_after_s=RETRY_AFTER_BUSY_S,
        )
    if kind == FULL:
        return DatabaseUnavailable(
            "The job database's disk is full; free space in the data folder and try again.",
            code="database_full",
            retry_after_s=RETRY_AFTER_FULL_S,
        )
    if kind == UNAVAILABLE:
        return DatabaseUnavailable(
            "The job database cannot be reached right now (it is restarting, or the connection failed); "
            "try again in a few seconds.",
            code="database_unavailable",
            retry_after_s=RETRY_AFTER_UNAVAILABLE_S,
            details={"reason": _first_line(exc)},
        )
    if isinstance(exc, IntegrityError):
        return DatabaseConflict(f"The write conflicts with a stored row: {_first_line(exc)}")
    ref = uuid.uuid4().hex[:12]
    logger.error("database error ref=%s", ref, exc_info=exc)
    return DatabaseError(f"Internal database error (reference {ref}); see the server log.")


class Database:
    """A SQLAlchemy engine plus the transaction discipline every store method uses."""

    def __init__(self, url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, **engine_kwargs: Any) -> None:
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # The worker's threads and the API's thread pool share the engine; sqlite3 connections are safe to
            # hand between threads as long as one thread uses one at a time, which the pool guarantees.
            connect_args = {"check_same_thread": False, "timeout": busy_timeout_s}
            self.engine: Engine = create_engine(url, connect_args=connect_args, **engine_kwargs)
            event.listen(self.engine, "connect", self._on_sqlite_connect)
            event.listen(self.engine, "begin", self._on_sqlite_begin)
        else:
            try:
                # pre-ping: a pooled connection the server dropped (a restart) is replaced, not handed out.
                self.engine = create_engine(
                    url,
                    pool_pre_ping=True,
                    connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
                    **engine_kwargs,
                )
            except ModuleNotFoundError as exc:  # the URL's driver (psycopg) is an optional extra
                raise StillmotionError(
                    f"The job database URL needs the Python package {exc.name!r}, which is not installed: "
                    "pip install 'stillmotion[scale]'.",
                    code="database_driver_missing",
                ) from None
        self._closed = threading.Event()
        self._unavailable_at: float | None = None  # time.monotonic() of the last "cannot be reached"
        # SQLite takes one writer at a time anyway. Queueing this process's writers on a lock, instead of
        # letting each poll SQLite's busy handler, keeps a burst of submissions from starving one of them
        # past busy_timeout (seen: 1 of 300 burst POSTs answered 503). Other processes (the worker) still
        # meet the busy handler, and writes that must not be dropped retry (run_with_retry).
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else contextlib.nullcontext()
        )

    @classmethod
    def sqlite(cls, path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Database:
        """A file database at ``path`` (its folder is created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}", busy_timeout_s=busy_timeout_s)

    def _on_sqlite_connect(self, dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Take transaction control away from the sqlite3 module (it would BEGIN DEFERRED on its own) so the
        # "begin" listener below decides between DEFERRED and IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        finally:
            cursor.close()

    @staticmethod
    def _on_sqlite_begin(conn: Connection) -> None:
        write = bool(conn.get_execution_options().get(_WRITE_OPTION, False))
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """One transaction: commit on success, roll back on any exception.

        Every driver error is raised as stillmotion's own (``translate_error``); the caller's exceptions pass
        through untouched.
        """
        try:
            with self._write_lock if write else contextlib.nullcontext(), self.engine.connect() as conn:
                conn = conn.execution_options(**{_WRITE_OPTION: write})
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            known = translate_error(exc)
            if known.code == "database_unavailable":
                self._unavailable_at = time.monotonic()
            raise known from exc

    def unavailable_within(self, seconds: float) -> bool:
        """Whether this process found the database unreachable in the last ``seconds``: what a worker could
        not write then (a heartbeat, a lease renewal) says nothing about the worker."""
        at = self._unavailable_at
        return at is not None and time.monotonic() - at < seconds

    def run_with_retry(
        self,
        fn: Callable[[Connection], T],
        *,
        deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
        what: str = "write",
    ) -> T:
        """Run ``fn`` in a write transaction, retrying while the database is locked, up to ``deadline_s``.

        Every retry is logged, so a write that waits is visible; after the deadline the error is raised. An
        unreachable database is raised at once: the caller decides whether to wait (a worker) or answer 503.
        """
        deadline = time.monotonic() + deadline_s
        delay = RETRY_INITIAL_DELAY_S
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.transaction() as conn:
                    return fn(conn)
            except DatabaseUnavailable as exc:
                if exc.code != "database_busy" or time.monotonic() + delay > deadline:
                    raise
                logger.warning("%s: database locked (attempt %d); retrying in %.2fs", what, attempt, delay)
            # Waiting on an Event (never set) instead of time.sleep keeps this interruptible by close().
            if self._closed.wait(delay):
                raise DatabaseUnavailable(f"{what}: the database was closed while retrying.")
            delay = min(delay * 2, RETRY_MAX_DELAY_S)

    def close(self) -> None:
        """Dispose of the connection pool."""
        self._closed.set()
        self.engine.dispose()
