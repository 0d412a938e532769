"""Job states and the one guarded ``transition()`` every status change goes through.

``ALLOWED`` is the whole state machine. ``transition()`` checks a move against it and applies it with
``UPDATE ... WHERE id = :id AND status = :expected``, so of two actors racing to move one job (a cancel and
the worker finishing, two workers claiming) exactly one succeeds; the loser sees ``False`` and re-reads.
An interrupted job (the worker died or the service stopped) goes running -> queued with its attempt
counted; there is no separate "interrupted" status, the job's events record it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, update

from stillmotion.errors import InvalidTransition
from stillmotion.jobs.store.schema import job_events, jobs


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

ALLOWED: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    # running -> queued is the interrupted path: the worker died or the service shut down mid-job.
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def is_allowed(current: JobStatus, to: JobStatus) -> bool:
    """Whether the state machine permits ``current -> to``."""
    return to in ALLOWED[current]


def check_allowed(job_id: str, current: JobStatus, to: JobStatus) -> None:
    """Raise ``InvalidTransition`` (HTTP 409) unless ``current -> to`` is allowed."""
    if not is_allowed(current, to):
        raise InvalidTransition(
            f"job {job_id} is {current.value}; it cannot become {to.value}.",
            details={"job_id": job_id, "status": current.value, "to": to.value},
        )


def transition(
    conn: Connection,
    job_id: str,
    expected: JobStatus,
    to: JobStatus,
    *,
    now: datetime,
    event: str | None = None,
    detail: dict[str, Any] | None = None,
    lease: str | None = None,
    **values: Any,
) -> bool:
    """Move ``job_id`` from ``expected`` to ``to`` inside the caller's transaction.

    ``values`` are further columns to set in the same UPDATE. Returns False (and changes nothing) when the
    job is no longer ``expected``: someone else moved it first. Raises ``InvalidTransition`` for a move the
    table forbids, before touching the database. ``event`` (default: the new status) goes to job_events.
    ``lease``: move only while the job is still held by that lease (a worker's fenced write).
    """
    check_allowed(job_id, expected, to)
    where = [jobs.c.id == job_id, jobs.c.status == expected.value]
    if lease is not None:
        where.append(jobs.c.lease_token == lease)
    result = conn.execute(update(jobs).where(*where).values(status=to.value, updated_at=now, **values))
    if result.rowcount != 1:
        return False
    conn.execute(insert(job_events).values(job_id=job_id, at=now, kind=event or to.value, detail=detail))
    return True
