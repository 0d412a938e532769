"""Service logging: one line format for every process of the service (the API, its worker processes, Ray
actors), to a rotating file per process and to the console.

``LOG_FORMAT``: time, level, the node and process that wrote the line (``node/process[pid]``), the logger,
the job being worked on (``job=...``, from a context variable set with ``job_context()``) and the message:

    2026-12-07 13:40:01,123 INFO    box-1/worker-0[48210] stillmotion.jobs.workers.worker [job=6f1c] hi

so ``grep <job id> logs/*/*.log`` tells one job's story across the API and the workers, and lines from
services sharing a data folder say where they come from. Files are ``logs/<node>/<process>.log``: one per
process, so two processes never rotate one file. Logging never takes the service down: when the log disk is
full or the file is unwritable, the handler counts the failure (``logging_errors()``) instead of raising or
spraying tracebacks on stderr.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TextIO

from stillmotion.config import Settings

LOG_FORMAT = (
    "%(asctime)s %(levelname)-7s %(node)s/%(proc)s[%(process)d] %(name)s [job=%(job_id)s] %(message)s"
)
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
NO_JOB = "-"

_current_job: ContextVar[str | None] = ContextVar("stillmotion_job_id", default=None)
_errors_lock = threading.Lock()
_errors = 0
_OUR_HANDLER = "_stillmotion_handler"


def _count_error() -> None:
    global _errors
    with _errors_lock:
        _errors += 1


def logging_errors() -> int:
    """How many log records could not be written since start-up (e.g. the log disk was full)."""
    with _errors_lock:
        return _errors


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line written inside the block (in this thread or task) with ``job_id``."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)


def current_job_id() -> str | None:
    return _current_job.get()


class JobIdFilter(logging.Filter):
    """Adds ``record.job_id`` (the current job, or '-'), ``record.node`` and ``record.proc`` (who writes)
    so ``LOG_FORMAT`` can print them."""

    def __init__(self, node: str = NO_JOB, process: str = NO_JOB) -> None:
        super().__init__()
        self.node, self.process = node, process

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _current_job.get() or NO_JOB
        record.node, record.proc = self.node, self.process
        return True


class SafeRotatingFileHandler(RotatingFileHandler):
    """A rotating file handler whose write failures are counted, never raised."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        _count_error()


class SafeStreamHandler(logging.StreamHandler[TextIO]):
    """A console handler whose write failures (closed pipe, full disk) are counted, never raised."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        _count_error()


def log_path(settings: Settings, process: str) -> Path:
    """Where ``process`` on this node writes: ``logs/<node>/<process>.log``."""
    return settings.logs_dir / settings.node_name / f"{process}.log"


def setup_logging(settings: Settings, process: str, level: int = logging.INFO) -> Path:
    """Send the root logger, in ``LOG_FORMAT``, to ``log_path(settings, process)`` (rotating) and the
    console; returns the file's path. ``process`` names this process on its node (``server``, a worker id).

    One file per process: two processes rotating one file would lose lines. Calling it again replaces the
    handlers it installed before (tests, repeated ``create_app``), and a plain console handler someone put
    on the root logger (``logging.basicConfig``), so no line is printed twice in two formats.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OUR_HANDLER, False) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    job_filter = JobIdFilter(settings.node_name, process)
    formatter = logging.Formatter(LOG_FORMAT)

    console = SafeStreamHandler()
    console.setFormatter(formatter)
    console.addFilter(job_filter)
    setattr(console, _OUR_HANDLER, True)
    root.addHandler(console)

    path = log_path(settings, process)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # delay=True opens the file on the first record, so an unwritable file is a counted error there.
        file_handler = SafeRotatingFileHandler(
            path, maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, delay=True
        )
    except OSError as exc:
        _count_error()
        logging.getLogger(__name__).warning("log folder %s unusable (%s); console only", path.parent, exc)
        return path
    file_handler.setFormatter(formatter)
    file_handler.addFilter(job_filter)
    setattr(file_handler, _OUR_HANDLER, True)
    root.addHandler(file_handler)
    return path
