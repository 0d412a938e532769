"""The service's live status, measured in the background so /health and admission answer from memory.

``StatusMonitor`` re-measures every ``STATUS_INTERVAL_S`` in a thread of its own: the queue depth (one
indexed COUNT), the free space on the data disk (one statfs) and the workers' states (the worker pool's
``statuses()``: for each, a poll of its process or actor, a small file and one query). /health reads the
last ``LiveStatus`` and never waits on the database, the disk or the GPU, however busy the thread pool is
(issue 15.9). ``refusal()`` is the one admission rule: POST /jobs raises what it returns, /health reports
it, so the two cannot disagree (issue 15.5). The queue-depth query doubles as the database probe: when it
fails, the status says why (``database``), so within a measurement of an outage /health says ``ok: false``
and submissions get 503 ``database_unavailable``; the next measurement that reaches the database clears it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stillmotion.config import Settings
from stillmotion.errors import ServiceRefused
from stillmotion.jobs.store.job_store import DatabaseError, JobStore
from stillmotion.jobs.workers.disk_space import disk_low, free_disk_mb, low_disk_message

logger = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0
RETRY_AFTER_QUEUE_FULL_S = 30
RETRY_AFTER_SHUTDOWN_S = 10
RETRY_AFTER_DISK_S = 60


@dataclass(frozen=True)
class DatabaseProblem:
    """Why the last measurement could not read the job database: the error's code, message, Retry-After."""

    code: str
    message: str
    retry_after_s: int | None


@dataclass(frozen=True)
class LiveStatus:
    """One measurement; ``None`` where a source did not answer (the error is logged)."""

    measured_at: float  # time.monotonic()
    queue_depth: int | None
    free_disk_mb: float | None
    workers: list[dict[str, Any]] | None  # WorkerPool.statuses(); None when this app runs no worker
    database: DatabaseProblem | None = None  # None: the database answered

    @property
    def ready_workers(self) -> int:
        """Workers alive and taking jobs (what queue waits are shared among)."""
        return sum(1 for w in self.workers or () if w.get("alive") and w.get("ready"))

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.measured_at


def refusal(settings: Settings, status: LiveStatus, *, accepting: bool) -> ServiceRefused | None:
    """Why a new job would be refused now (503 shutting down or database unavailable, 429 queue full, 507
    low disk), or None."""
    if not accepting:
        return ServiceRefused(
            503,
            "shutting_down",
            "The server is shutting down; submit again once it is back.",
            retry_after_s=RETRY_AFTER_SHUTDOWN_S,
        )
    if status.database is not None:
        return ServiceRefused(
            503,
            status.database.code,
            f"{status.database.message} Nothing is lost: queued and running jobs carry on once it is back.",
            retry_after_s=status.database.retry_after_s,
        )
    if status.queue_depth is not None and status.queue_depth >= settings.max_queue_size:
        return queue_full(settings)
    if status.free_disk_mb is not None and disk_low(settings, status.free_disk_mb):
        return ServiceRefused(
            507,
            "insufficient_storage",
            low_disk_message(settings, status.free_disk_mb),
            retry_after_s=RETRY_AFTER_DISK_S,
        )
    return None


def out_of_space() -> ServiceRefused:
    """507 for a write that met a full disk mid-request (after admission let it in)."""
    return ServiceRefused(
        507,
        "insufficient_storage",
        "The data disk ran out of space while storing this request; nothing was kept. Free some space and "
        "submit again.",
        retry_after_s=RETRY_AFTER_DISK_S,
    )


def queue_full(settings: Settings) -> ServiceRefused:
    return ServiceRefused(
        429,
        "queue_full",
        f"The queue is full ({settings.max_queue_size} jobs waiting); retry later.",
        retry_after_s=RETRY_AFTER_QUEUE_FULL_S,
    )


class StatusMonitor:
    """Keeps a fresh ``LiveStatus`` in memory (see the module docstring)."""

    def __init__(self, settings: Settings, store: JobStore, *, interval_s: float = STATUS_INTERVAL_S) -> None:
        self.settings = settings
        self.store = store
        self.interval_s = interval_s
        self._worker_statuses: Callable[[], list[dict[str, Any]]] | None = None
        self._latest: LiveStatus | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._measure_lock = threading.Lock()

    def watch_workers(self, statuses: Callable[[], list[dict[str, Any]]] | None) -> None:
        """Include the workers' states (the pool's ``statuses``) from the next measurement on."""
        self._worker_statuses = statuses
        self.refresh()

    def start(self) -> None:
        """Measure once now (so the first answer has figures), then keep measuring in the background."""
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="live-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def latest(self) -> LiveStatus:
        """The last measurement, never waiting for a new one (measures now only before the very first)."""
        return self._latest or self.refresh()

    def current(self) -> LiveStatus:
        """A measurement no older than a few intervals: the last one while the thread runs, else a new one."""
        latest = self._latest
        if latest is None or latest.age_s > 3 * self.interval_s:
            return self.refresh()
        return latest

    def refresh(self) -> LiveStatus:
        """Measure now (blocking: a query, a statfs, the supervisor's status) and keep the result."""
        with self._measure_lock:
            depth, database = self._probe_database()
            status = LiveStatus(
                measured_at=time.monotonic(),
                queue_depth=depth,
                database=database,
                free_disk_mb=_quietly("free disk space", lambda: free_disk_mb(self.settings)),
                workers=None
                if self._worker_statuses is None
                else _quietly("worker status", self._worker_statuses),
            )
            self._latest = status
            return status

    def _probe_database(self) -> tuple[int | None, DatabaseProblem | None]:
        """The queue depth, or why the database did not give it (logged when that changes, not each time)."""
        previous = None if self._latest is None else self._latest.database
        try:
            depth = self.store.queue_depth()
        except DatabaseError as exc:
            problem = DatabaseProblem(exc.code, exc.message, exc.retry_after_s)
            if previous is None or previous.code != problem.code:
                logger.error("status: the job database fails (%s: %s)", exc.code, exc.details or exc.message)
            return None, problem
        except Exception:
            logger.exception("status: could not measure the queue depth")
            return None, None
        if previous is not None:
            logger.info("status: the job database answers again")
        return depth, None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()


def _quietly(what: str, measure: Callable[[], Any]) -> Any:
    """``measure()``, or None when it fails: a status probe must never stop the monitor (logged)."""
    try:
        return measure()
    except Exception:
        logger.exception("status: could not measure the %s", what)
        return None
