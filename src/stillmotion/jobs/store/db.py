"""Database connection: one SQLAlchemy engine, one ``transaction()`` context, honest errors.

SQLite is the embedded default: WAL journal (readers never wait for the writer), ``synchronous=FULL``
(a commit survives power loss; NORMAL can drop the last commits), a ``busy_timeout`` so writers queue
instead of failing at once, and foreign keys on. Write transactions start with ``BEGIN IMMEDIATE`` so the
write lock is taken up front: a deferred transaction that upgrades to a writer can fail with SQLITE_BUSY
without ever consulting the busy handler. The same Core schema runs on PostgreSQL (pass its URL).

Failures the caller can explain become ``DatabaseUnavailable`` (HTTP 503): ``database_busy`` when the lock
stayed held past the busy timeout, ``database_full`` when the disk (or ``max_page_count``) is full.
``run_with_retry()`` is for writes that must not be dropped (the worker's progress and terminal states).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError

from stillmotion.errors import StillmotionError

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0  # how long one statement waits for another writer's lock before giving up
RETRY_INITIAL_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 1.0
DEFAULT_RETRY_DEADLINE_S = 120.0  # worker writes keep retrying this long before the error surfaces
RETRY_AFTER_BUSY_S = 5
RETRY_AFTER_FULL_S = 60
_WRITE_OPTION = "stillmotion_write"


class DatabaseUnavailable(StillmotionError):
    """The job database cannot take a write right now (locked too long, or its disk is full)."""

    code = "database_busy"
    http_status = 503


# SQLite result codes (the primary code is the low byte of the extended one): https://sqlite.org/rescode.html
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_IOERR = 10
SQLITE_FULL = 13
# PostgreSQL SQLSTATEs: disk_full, out_of_memory/insufficient_resources; lock_not_available, deadlock,
# serialization_failure.
PG_FULL_STATES = frozenset({"53100", "53000", "53200"})
PG_BUSY_STATES = frozenset({"55P03", "40P01", "40001"})


def _driver_error(exc: BaseException) -> BaseException:
    """The DB-API exception under SQLAlchemy's wrapper (or ``exc`` itself)."""
    return getattr(exc, "orig", None) or exc


def error_kind(exc: BaseException) -> str | None:
    """'busy', 'full' or None, from the driver's error code (never from the message text).

    SQLite: SQLITE_BUSY / SQLITE_LOCKED are 'busy'; SQLITE_FULL and SQLITE_IOERR (what a disk that fills
    during a write gives) are 'full'. PostgreSQL: by SQLSTATE.
    """
    orig = _driver_error(exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        primary = code & 0xFF
        if primary in (SQLITE_BUSY, SQLITE_LOCKED):
            return "busy"
        if primary in (SQLITE_FULL, SQLITE_IOERR):
            return "full"
        return None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str):
        if state in PG_BUSY_STATES:
            return "busy"
        if state in PG_FULL_STATES:
            return "full"
    return None


def translate_error(exc: BaseException) -> DatabaseUnavailable | None:
    """The user-facing error for a driver failure we can name, else None (a bug: let it propagate)."""
    kind = error_kind(exc)
    if kind == "busy":
        return DatabaseUnavailable(
            "The job database is busy (another process holds its write lock); try again in a few seconds.",
            code="database_busy",
            retry_after_s=RETRY_AFTER_BUSY_S,
        )
    if kind == "full":
        return DatabaseUnavailable(
            "The job database's disk is full; free space in the data folder and try again.",
            code="database_full",
            retry_after_s=RETRY_AFTER_FULL_S,
        )
    return None


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
                self.engine = create_engine(url, pool_pre_ping=True, **engine_kwargs)
            except ModuleNotFoundError as exc:  # the URL's driver (psycopg) is an optional extra
                raise StillmotionError(
                    f"The job database URL needs the Python package {exc.name!r}, which is not installed: "
                    "pip install 'stillmotion[scale]'.",
                    code="database_driver_missing",
                ) from None
        self._closed = threading.Event()
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

        Driver errors we can explain (lock held too long, disk full) are raised as ``DatabaseUnavailable``.
        """
        try:
            with self._write_lock if write else contextlib.nullcontext(), self.engine.connect() as conn:
                conn = conn.execution_options(**{_WRITE_OPTION: write})
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            known = translate_error(exc)
            if known is None:
                raise
            raise known from exc

    def run_with_retry(
        self,
        fn: Callable[[Connection], T],
        *,
        deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
        what: str = "write",
    ) -> T:
        """Run ``fn`` in a write transaction, retrying while the database is locked, up to ``deadline_s``.

        Every retry is logged, so a write that waits is visible; after the deadline the error is raised.
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
            except OperationalError as exc:  # locked errors raised outside the busy handler's reach
                if error_kind(exc) != "busy" or time.monotonic() + delay > deadline:
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
