"""Service logging: a rotating file per process under ``settings.logs_dir``, plus readable console lines.

Every line carries the id of the job being worked on (``job=...``, from a context variable set with
``job_context()``), so ``grep <job id> logs/*.log`` tells one job's story across the API and the worker.
Logging never takes the service down: when the log disk is full or the file is unwritable, the handler
counts the failure (``logging_errors()``) instead of raising or spraying tracebacks on stderr.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from logging.handlers import RotatingFileHandler
from typing import TextIO

from stillmotion.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s [job=%(job_id)s] %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s [job=%(job_id)s] %(message)s"
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
    """Adds ``record.job_id`` (the current job, or '-') so formats can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _current_job.get() or NO_JOB
        return True


class SafeRotatingFileHandler(RotatingFileHandler):
    """A rotating file handler whose write failures are counted, never raised."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        _count_error()


class SafeStreamHandler(logging.StreamHandler[TextIO]):
    """A console handler whose write failures (closed pipe, full disk) are counted, never raised."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        _count_error()


def setup_logging(settings: Settings, process: str, level: int = logging.INFO) -> None:
    """Send the root logger to ``logs_dir/<process>.log`` (rotating) and the console.

    One file per process: two processes rotating one file would lose lines. Calling it again replaces the
    handlers it installed before (tests, repeated ``create_app``).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OUR_HANDLER, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    job_filter = JobIdFilter()

    console = SafeStreamHandler()
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    console.addFilter(job_filter)
    setattr(console, _OUR_HANDLER, True)
    root.addHandler(console)

    try:
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        # delay=True opens the file on the first record, so an unwritable file is a counted error there.
        file_handler = SafeRotatingFileHandler(
            settings.logs_dir / f"{process}.log", maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, delay=True
        )
    except OSError as exc:
        _count_error()
        logging.getLogger(__name__).warning(
            "log folder %s unusable (%s); console only", settings.logs_dir, exc
        )
        return
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    file_handler.addFilter(job_filter)
    setattr(file_handler, _OUR_HANDLER, True)
    root.addHandler(file_handler)
