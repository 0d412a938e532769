"""JobStore: the durable job table, the single source of truth for every job the service acknowledged.

Start with ``JobStore.open(settings)``. The API side uses ``create`` / ``get`` / ``list`` /
``request_cancel`` / ``delete``; the worker side uses ``claim_next``, ``update_progress``, the ``finish_*``
methods and ``requeue*`` (crash recovery). Every status change goes through ``states.transition()`` (one
guarded UPDATE in one transaction), so a job gets exactly one terminal state. ``create`` commits before it
returns: once the API answers 202, the row survives any crash. docs/jobs.md has the lifecycle.

Attempts: a job is created with ``attempts = 1`` (the attempt it is on). Each time a worker dies under it,
it goes back to the queue with ``attempts + 1``; once ``attempts`` reaches ``settings.max_attempts`` it is
failed instead (``worker_crashed_repeatedly``, or ``timeout`` when the watchdog killed a hung step), so
``attempts`` of a finished job is the number of attempts made. A graceful shutdown re-queues without
counting an attempt: it is not the job's fault.

Leases (several workers, several machines): ``claim_next`` gives the job a lease (``lease_token``, expiring
``settings.lease_s`` later) that the worker renews (``renew_lease``). Lease times are the database's clock
(``now()`` in the statement that claims, renews or reclaims), never a machine's: a worker or a reaper whose
clock is off cannot take back a healthy job or keep a dead one. A worker passes its token to every
write (``lease=``): once the lease has lapsed and the job was re-queued (``requeue_expired_leases``) or
claimed by another worker, those writes change nothing (``LeaseLost``, or False), so a job never has two
live runs that both count. Writes without ``lease`` are the service's own (tests, the supervisor of a
worker it saw die). On PostgreSQL every read-then-write locks its row (``FOR UPDATE``); on SQLite the
write transaction already excludes every other writer.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Interval,
    Row,
    Select,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from stillmotion.config import Settings
from stillmotion.engine.request import check_stored
from stillmotion.errors import InvalidRequest, InvalidTransition, JobNotFound, StillmotionError
from stillmotion.jobs.store.db import (
    BUSY_TIMEOUT_S,
    Database,
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
)
from stillmotion.jobs.store.migrations import migrate
from stillmotion.jobs.store.schema import UTCDateTime, job_events, jobs
from stillmotion.jobs.store.states import TERMINAL, JobStatus, check_allowed, transition

__all__ = [
    "DatabaseError",
    "DatabaseUnavailable",
    "Job",
    "JobStatus",
    "JobStore",
    "LeaseLost",
    "QueueFull",
    "WORKER_CRASHED_REPEATEDLY",
    "WORKER_KILLED",
    "TIMEOUT",
]

logger = logging.getLogger(__name__)

WORKER_CRASHED_REPEATEDLY = "worker_crashed_repeatedly"
WORKER_KILLED = "worker_killed"  # reason code: SIGKILL without a watchdog decision (e.g. the host OOM killer)
TIMEOUT = "timeout"
LEASE_EXPIRED = (
    "lease_expired"  # reason code: the job's worker stopped renewing its lease (it or its node died)
)
MAX_LIST_LIMIT = 500
# Job ids name folders, so they are restricted to a safe alphabet (UUIDs fit); anything else is "not found".
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FILENAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A submission waits this long for a locked database (retrying after each busy timeout) before answering 503:
# a client would rather wait seconds than retry, and a lock held longer than this is an incident.
SUBMIT_WAIT_S = 15.0
HASH_CHUNK_BYTES = 1 << 20


class QueueFull(StillmotionError):
    """The queue already holds ``settings.max_queue_size`` jobs; the client should retry later."""

    code = "queue_full"
    http_status = 429


class LeaseLost(InvalidTransition):
    """A worker wrote to a job it no longer holds: its lease lapsed and the job went back to the queue."""

    code = "lease_lost"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Job:
    """One row of the job table, as the API and the worker see it."""

    id: str
    status: JobStatus
    request: dict[str, Any]
    model: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    cancel_requested: bool
    progress: dict[str, Any] | None
    plan: dict[str, Any] | None
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    input_filename: str
    output_filename: str | None
    output_sha256: str | None
    idempotency_key: str | None
    worker_id: str | None
    heartbeat_at: datetime | None
    batch_id: str | None = None  # set for the jobs of one batch request
    lease_token: str | None = None  # while running: the claim's token, which the worker's writes carry
    lease_expires_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; times are ISO-8601 UTC."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "id": self.id,
            "status": self.status.value,
            "request": self.request,
            "model": self.model,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "progress": self.progress,
            "plan": self.plan,
            "result": self.result,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "input_filename": self.input_filename,
            "output_filename": self.output_filename,
            "output_sha256": self.output_sha256,
            "idempotency_key": self.idempotency_key,
            "worker_id": self.worker_id,
            "heartbeat_at": iso(self.heartbeat_at),
            "batch_id": self.batch_id,
            "lease_expires_at": iso(self.lease_expires_at),
        }


def _row_to_job(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        status=JobStatus(m["status"]),
        request=m["request"],
        model=m["model"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        attempts=m["attempts"],
        cancel_requested=bool(m["cancel_requested"]),
        progress=m["progress"],
        plan=m["plan"],
        result=m["result"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        input_filename=m["input_filename"],
        output_filename=m["output_filename"],
        output_sha256=m["output_sha256"],
        idempotency_key=m["idempotency_key"],
        worker_id=m["worker_id"],
        heartbeat_at=m["heartbeat_at"],
        batch_id=m["batch_id"],
        lease_token=m["lease_token"],
        lease_expires_at=m["lease_expires_at"],
    )


_LEASE_ENDED: dict[str, Any] = {"lease_token": None, "lease_expires_at": None}  # a job leaving "running"


def _held(job_id: str, lease: str | None) -> builtins.list[Any]:
    """WHERE clauses: the job is running and, when ``lease`` is given, still held by that lease."""
    where = [jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value]
    if lease is not None:
        where.append(jobs.c.lease_token == lease)
    return where


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks (inputs and outputs can be tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _statuses(status: JobStatus | Sequence[JobStatus] | None) -> list[str] | None:
    if status is None:
        return None
    if isinstance(status, str):
        return [JobStatus(status).value]
    return [JobStatus(s).value for s in status]


class JobStore:
    """The job table plus each job's folder (``settings.jobs_dir / job_id``)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = _utcnow,
        submit_wait_s: float = SUBMIT_WAIT_S,
    ) -> None:
        self.db = db
        self.settings = settings
        self._clock = clock
        self.submit_wait_s = submit_wait_s

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        url: str | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        clock: Callable[[], datetime] = _utcnow,
        submit_wait_s: float = SUBMIT_WAIT_S,
    ) -> JobStore:
        """Open (creating and migrating) the database: ``url``, else ``settings.database_url``, else SQLite at
        ``settings.db_path``.

        ``submit_wait_s``: how long ``create`` keeps retrying a locked database before it gives up (503).
        """
        url = url or settings.database_url
        db = (
            Database(url, busy_timeout_s=busy_timeout_s)
            if url
            else Database.sqlite(settings.db_path, busy_timeout_s=busy_timeout_s)
        )
        migrate(db)
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        return cls(db, settings, clock=clock, submit_wait_s=submit_wait_s)

    def close(self) -> None:
        self.db.close()

    # ---- folders ---------------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """``settings.jobs_dir / job_id``: the job's upload, output and sidecar live here."""
        if not JOB_ID_PATTERN.match(job_id):
            raise JobNotFound(f"job id {job_id[:80]!r} is not a valid job id.")
        return self.settings.jobs_dir / job_id

    def _remove_dir(self, job_id: str) -> None:
        path = self.job_dir(job_id)

        def log_failure(_func: object, failed: str, exc_info: Any) -> None:
            logger.error("could not remove %s of job %s: %s", failed, job_id, exc_info[1])

        if path.exists():
            shutil.rmtree(path, onerror=log_failure)

    # ---- API side --------------------------------------------------------------------------------------

    def create(
        self,
        *,
        job_id: str,
        request: dict[str, Any],
        input_filename: str,
        idempotency_key: str | None = None,
        input_sha256: str | None = None,
    ) -> tuple[Job, bool]:
        """Insert a queued job and commit; returns ``(job, created)``.

        Write the upload to ``job_dir(job_id) / input_filename`` first, so a worker never claims a job whose
        input is missing. The same ``idempotency_key`` returns the existing job and ``created=False`` (the
        caller then removes the folder it wrote); a reused key with a different request, or with a different
        input (``input_sha256``, the upload's bytes), is ``InvalidRequest`` (422 ``idempotency_key_reused``).
        Raises ``QueueFull`` (429) when the queue is full and
        ``DatabaseUnavailable`` (503) when the database is locked too long or its disk is full; in every
        error case no row exists.
        """
        if not JOB_ID_PATTERN.match(job_id):
            raise InvalidRequest(
                f"job_id={job_id[:80]!r} must match {JOB_ID_PATTERN.pattern}.", field="job_id"
            )
        if not FILENAME_PATTERN.match(input_filename):
            raise InvalidRequest(
                f"input_filename={input_filename[:80]!r} must match {FILENAME_PATTERN.pattern}.",
                field="input_filename",
            )
        check_stored(request)  # unknown fields are an error, not stored and ignored
        if idempotency_key is not None:
            existing = self._by_idempotency_key(idempotency_key, request, input_sha256)
            if existing is not None:
                return existing, False

        def insert_job(conn: Connection) -> None:
            self._check_queue_room(conn, 1)
            self._insert_queued(conn, job_id, request, input_filename, idempotency_key=idempotency_key)

        try:
            # Retried while the database is locked (each try is a whole transaction, rolled back on failure).
            self.db.run_with_retry(insert_job, deadline_s=self.submit_wait_s, what=f"create job {job_id}")
        except DatabaseConflict:
            # Two submissions with one key raced (the check above ran outside this transaction).
            if idempotency_key is not None:
                existing = self._by_idempotency_key(idempotency_key, request, input_sha256)
                if existing is not None:
                    return existing, False
            raise InvalidRequest(f"job id {job_id} already exists.", field="job_id") from None
        return self.get(job_id), True

    def create_batch(
        self, batch_id: str, items: Sequence[tuple[str, dict[str, Any], str]]
    ) -> builtins.list[Job]:
        """Insert the queued jobs of a batch, ``(job_id, request, input_filename)`` each, in ONE transaction.

        All or nothing: the queue must have room for every job (``QueueFull`` otherwise), and any failure
        rolls every row back. Write each job's input first, as for ``create``.
        """
        if not JOB_ID_PATTERN.match(batch_id):
            raise InvalidRequest(
                f"batch_id={batch_id[:80]!r} must match {JOB_ID_PATTERN.pattern}.", field="batch_id"
            )
        for job_id, request, input_filename in items:
            if not JOB_ID_PATTERN.match(job_id) or not FILENAME_PATTERN.match(input_filename):
                raise InvalidRequest(
                    f"job {job_id[:80]!r} has an invalid id or input filename.", field="job_id"
                )
            check_stored(request)

        def insert_batch(conn: Connection) -> None:
            self._check_queue_room(conn, len(items))
            for job_id, request, input_filename in items:
                self._insert_queued(conn, job_id, request, input_filename, batch_id=batch_id)

        self.db.run_with_retry(insert_batch, deadline_s=self.submit_wait_s, what=f"create batch {batch_id}")
        return self.batch(batch_id)

    def batch(self, batch_id: str) -> builtins.list[Job]:
        """The jobs of one batch in submission order; ``JobNotFound`` when there are none."""
        with self.db.transaction(write=False) as conn:
            rows = conn.execute(select(jobs).where(jobs.c.batch_id == batch_id).order_by(jobs.c.seq)).all()
        if not rows:
            raise JobNotFound(f"No batch with id {batch_id[:80]!r}.", details={"batch_id": batch_id[:80]})
        return [_row_to_job(r) for r in rows]

    def cancel_batch(self, batch_id: str) -> builtins.list[Job]:
        """Cancel every unfinished job of the batch (as ``request_cancel``); finished ones stay as is."""
        for job in self.batch(batch_id):
            if job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                self.request_cancel(job.id)
        return self.batch(batch_id)

    def _check_queue_room(self, conn: Connection, count: int) -> None:
        depth = conn.execute(
            select(func.count()).select_from(jobs).where(jobs.c.status == JobStatus.QUEUED.value)
        ).scalar_one()
        if depth + count > self.settings.max_queue_size:
            raise QueueFull(
                f"The queue is full ({depth} jobs waiting, {count} more asked for, max_queue_size="
                f"{self.settings.max_queue_size}); try again later.",
                details={"queue_depth": depth},
            )

    def _insert_queued(
        self,
        conn: Connection,
        job_id: str,
        request: dict[str, Any],
        input_filename: str,
        *,
        idempotency_key: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        now = self._clock()
        conn.execute(
            insert(jobs).values(
                id=job_id,
                status=JobStatus.QUEUED.value,
                request=request,
                model=request.get("model") or self.settings.default_model,
                created_at=now,
                updated_at=now,
                attempts=1,
                cancel_requested=False,
                input_filename=input_filename,
                idempotency_key=idempotency_key,
                batch_id=batch_id,
            )
        )
        detail = None if batch_id is None else {"batch_id": batch_id}
        conn.execute(insert(job_events).values(job_id=job_id, at=now, kind="created", detail=detail))

    def _by_idempotency_key(self, key: str, request: dict[str, Any], input_sha256: str | None) -> Job | None:
        """The job created with ``key``, if any; 422 unless its request and its input are this one's."""
        with self.db.transaction(write=False) as conn:
            row = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).first()
        if row is None:
            return None
        job = _row_to_job(row)
        # The stored input is the upload's bytes, moved into the job folder: hashing it again (only when a
        # key is reused) keeps the fingerprint exact without a column of its own.
        same_input = input_sha256 is None or self._input_sha256(job) == input_sha256
        if job.request != request or not same_input:
            raise InvalidRequest(
                "This Idempotency-Key was already used for a different request or image; use a new key.",
                code="idempotency_key_reused",
                field="Idempotency-Key",
                details={"job_id": job.id},
            )
        return job

    def _input_sha256(self, job: Job) -> str | None:
        try:
            return file_sha256(self.job_dir(job.id) / job.input_filename)
        except FileNotFoundError:
            return None

    def get(self, job_id: str) -> Job:
        """The job, or ``JobNotFound`` (404)."""
        with self.db.transaction(write=False) as conn:
            return self._get(conn, job_id)

    @staticmethod
    def _get(conn: Connection, job_id: str) -> Job:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise JobNotFound(f"No job with id {job_id[:80]!r}.", details={"job_id": job_id[:80]})
        return _row_to_job(row)

    def _locked(self, query: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        """``query`` locking the rows it reads until the transaction ends (PostgreSQL; SQLite's write
        transaction already excludes every other writer). ``skip_locked``: pass over rows another
        transaction holds instead of waiting for them."""
        return query if self.db.is_sqlite else query.with_for_update(skip_locked=skip_locked)

    def _get_for_update(self, conn: Connection, job_id: str) -> Job:
        """``_get`` for a read that decides a write: the row stays as read until this transaction ends."""
        row = conn.execute(self._locked(select(jobs).where(jobs.c.id == job_id))).first()
        if row is None:
            raise JobNotFound(f"No job with id {job_id[:80]!r}.", details={"job_id": job_id[:80]})
        return _row_to_job(row)

    def database_time(self) -> datetime:
        """The database's clock now (UTC): the one every lease is timed by."""
        with self.db.transaction(write=False) as conn:
            value = conn.execute(select(self._database_now())).scalar_one()
        assert isinstance(value, datetime)
        return value

    def _database_now(self, *, plus_s: float = 0.0) -> ColumnElement[datetime]:
        """The database server's time (UTC) plus ``plus_s``, as SQL: evaluated by the statement that uses it,
        so every lease is timed by one clock, whichever machine writes or reads it. SQLite's is this machine's
        (every process using the file is here); it is written in the format ``UTCDateTime`` stores, so the
        text comparisons SQLite makes order it correctly."""
        if self.db.is_sqlite:
            return func.strftime("%Y-%m-%d %H:%M:%f", "now", f"{plus_s:+.3f} seconds", type_=UTCDateTime)
        now: ColumnElement[datetime] = func.now()
        return now + literal(timedelta(seconds=plus_s), Interval()) if plus_s else now

    def list(
        self,
        status: JobStatus | Sequence[JobStatus] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and the total matching ``status`` (one status, several, or all)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(
                f"limit={limit} is out of range; allowed: 1 to {MAX_LIST_LIMIT}.", field="limit"
            )
        if offset < 0:
            raise InvalidRequest(f"offset={offset} must be 0 or more.", field="offset")
        wanted = _statuses(status)
        where = [] if wanted is None else [jobs.c.status.in_(wanted)]
        with self.db.transaction(write=False) as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
            rows = conn.execute(
                select(jobs)
                .where(*where)
                .order_by(jobs.c.created_at.desc(), jobs.c.seq.desc())
                .limit(limit)
                .offset(offset)
            ).all()
        return [_row_to_job(r) for r in rows], total

    def queue_depth(self) -> int:
        """How many jobs are waiting (status queued)."""
        with self.db.transaction(write=False) as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(jobs).where(jobs.c.status == JobStatus.QUEUED.value)
                ).scalar_one()
            )

    def queue_position(self, job_id: str) -> int | None:
        """1 for the job that runs next, 2 for the one after...; None unless the job is queued."""
        with self.db.transaction(write=False) as conn:
            row = conn.execute(
                select(jobs.c.status, jobs.c.created_at, jobs.c.seq).where(jobs.c.id == job_id)
            ).first()
            if row is None:
                raise JobNotFound(f"No job with id {job_id[:80]!r}.")
            if row.status != JobStatus.QUEUED.value:
                return None
            ahead = conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(
                    jobs.c.status == JobStatus.QUEUED.value,
                    or_(
                        jobs.c.created_at < row.created_at,
                        and_(jobs.c.created_at == row.created_at, jobs.c.seq < row.seq),
                    ),
                )
            ).scalar_one()
        return int(ahead) + 1

    def request_cancel(self, job_id: str) -> Job:
        """Cancel: queued -> cancelled at once; running -> ``cancel_requested`` (the worker stops within
        one step); cancelled -> no-op; succeeded / failed -> ``InvalidTransition`` (409)."""
        now = self._clock()
        with self.db.transaction() as conn:
            job = self._get_for_update(conn, job_id)
            if job.status == JobStatus.QUEUED:
                moved = transition(
                    conn,
                    job_id,
                    JobStatus.QUEUED,
                    JobStatus.CANCELLED,
                    now=now,
                    finished_at=now,
                    cancel_requested=True,
                    error_code="cancelled",
                    error_message="Cancelled by the user before it started.",
                )
                assert moved, "the row is locked, so the status read above cannot be stale"
            elif job.status == JobStatus.RUNNING:
                if not job.cancel_requested:
                    conn.execute(
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
                        .values(cancel_requested=True, updated_at=now)
                    )
                    conn.execute(
                        insert(job_events).values(job_id=job_id, at=now, kind="cancel_requested", detail=None)
                    )
            elif job.status != JobStatus.CANCELLED:
                check_allowed(job_id, job.status, JobStatus.CANCELLED)  # raises: finished jobs stay finished
            return self._get(conn, job_id)

    def delete(self, job_id: str) -> None:
        """Remove the row, its events and its folder. A running job must be cancelled first (409)."""
        with self.db.transaction() as conn:
            job = self._get_for_update(conn, job_id)
            if job.status == JobStatus.RUNNING:
                raise InvalidTransition(
                    f"job {job_id} is running; cancel it first, then delete it.",
                    details={"job_id": job_id, "status": job.status.value},
                )
            conn.execute(delete(job_events).where(job_events.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id, jobs.c.status != JobStatus.RUNNING.value))
        self._remove_dir(job_id)

    def events(self, job_id: str) -> builtins.list[dict[str, Any]]:
        """The job's history, oldest first: created, running, interrupted, downgrade, succeeded..."""
        with self.db.transaction(write=False) as conn:
            self._get(conn, job_id)
            rows = conn.execute(
                select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
            ).all()
        return [{"at": r.at.isoformat(), "kind": r.kind, "detail": r.detail} for r in rows]

    # ---- worker side -----------------------------------------------------------------------------------

    def claim_next(self, worker_id: str) -> Job | None:
        """Atomically take the oldest queued job (FIFO by created_at) for ``worker_id``; None if idle.

        The job comes with a fresh lease (``lease_token``, good for ``settings.lease_s``): pass the token to
        every write about it and renew it (``renew_lease``) while the job runs."""

        def claim(conn: Connection) -> Job | None:
            now = self._clock()
            query = (
                select(jobs.c.id, jobs.c.attempts)
                .where(jobs.c.status == JobStatus.QUEUED.value)
                .order_by(jobs.c.created_at, jobs.c.seq)
                .limit(1)
            )
            # Several workers on PostgreSQL skip each other's rows instead of queueing behind them.
            row = conn.execute(self._locked(query, skip_locked=True)).first()
            if row is None:
                return None
            # Select and claim in one write transaction; the status guard makes a lost race return None.
            if not transition(
                conn,
                row.id,
                JobStatus.QUEUED,
                JobStatus.RUNNING,
                now=now,
                detail={"worker_id": worker_id, "attempt": row.attempts},
                worker_id=worker_id,
                started_at=now,
                heartbeat_at=now,
                progress=None,
                lease_token=uuid.uuid4().hex,
                lease_expires_at=self._database_now(plus_s=self.settings.lease_s),
            ):
                return None
            return self._get(conn, row.id)

        return self.db.run_with_retry(claim, what="claim_next")

    def renew_lease(self, job_id: str, lease: str) -> bool:
        """Extend the lease by ``settings.lease_s`` from now; False once the job is no longer held by it."""

        def write(conn: Connection) -> bool:
            result = conn.execute(
                update(jobs)
                .where(*_held(job_id, lease))
                .values(lease_expires_at=self._database_now(plus_s=self.settings.lease_s))
            )
            return result.rowcount == 1

        # A renewal that waits longer than a third of the lease is late anyway: the next one tries again.
        return self.db.run_with_retry(write, deadline_s=self.settings.lease_s / 3, what=f"lease of {job_id}")

    def update_progress(
        self,
        job_id: str,
        progress: dict[str, Any],
        plan: dict[str, Any] | None = None,
        *,
        lease: str | None = None,
    ) -> bool:
        """Record progress (and the plan, once known) and refresh the heartbeat; False if no longer running
        (or, with ``lease``, no longer held by it: the worker should stop).

        Retried while the database is locked; raises only after ``DEFAULT_RETRY_DEADLINE_S``.
        """
        values: dict[str, Any] = {"progress": progress}
        if plan is not None:
            values["plan"] = plan
        return self._touch(job_id, values, lease, what=f"progress of job {job_id}")

    def heartbeat(self, job_id: str, *, lease: str | None = None) -> bool:
        """Refresh the heartbeat the watchdog reads; False if the job is no longer running (by ``lease``)."""
        return self._touch(job_id, {}, lease, what=f"heartbeat of job {job_id}")

    def _touch(self, job_id: str, values: dict[str, Any], lease: str | None, *, what: str) -> bool:
        def write(conn: Connection) -> bool:
            now = self._clock()
            result = conn.execute(
                update(jobs).where(*_held(job_id, lease)).values(heartbeat_at=now, updated_at=now, **values)
            )
            return result.rowcount == 1

        return self.db.run_with_retry(write, what=what)

    def add_event(
        self, job_id: str, kind: str, detail: dict[str, Any] | None = None, *, lease: str | None = None
    ) -> None:
        """Append to the job's history (e.g. a memory-plan downgrade); ``LeaseLost`` if ``lease`` lapsed."""

        def write(conn: Connection) -> None:
            if (
                lease is not None
                and conn.execute(self._locked(select(jobs.c.id).where(*_held(job_id, lease)))).first() is None
            ):
                raise LeaseLost(f"job {job_id} is no longer held by this worker; event {kind} not recorded.")
            conn.execute(insert(job_events).values(job_id=job_id, at=self._clock(), kind=kind, detail=detail))

        self.db.run_with_retry(write, what=f"event {kind} of job {job_id}")

    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether the user asked to cancel this job."""
        with self.db.transaction(write=False) as conn:
            value = conn.execute(
                select(jobs.c.cancel_requested).where(jobs.c.id == job_id)
            ).scalar_one_or_none()
        if value is None:
            raise JobNotFound(f"No job with id {job_id[:80]!r}.")
        return bool(value)

    def finish_succeeded(
        self,
        job_id: str,
        output_filename: str,
        output_sha256: str,
        result: dict[str, Any],
        *,
        lease: str | None = None,
        publish: Callable[[], None] | None = None,
    ) -> Job:
        """running -> succeeded with its one output and the result (plan used, resolved seed, timings).

        ``publish`` (moving the video to its final name) runs inside the transaction, after the lease is
        checked and before the row is updated: only the job's current holder ever writes its final path.
        It may run twice when the commit is retried, so it must be idempotent.
        """

        def write(conn: Connection) -> Job:
            now = self._clock()
            if publish is not None:
                self._check_held(conn, job_id, JobStatus.SUCCEEDED, lease)
                publish()
            values: dict[str, Any] = {
                "finished_at": now,
                "output_filename": output_filename,
                "output_sha256": output_sha256,
                "result": result,
                "error_code": None,
                "error_message": None,
            }
            if isinstance(result.get("plan"), dict):
                values["plan"] = result["plan"]
            self._move(
                conn, job_id, JobStatus.SUCCEEDED, now, lease, detail={"sha256": output_sha256}, **values
            )
            for downgrade in result.get("downgrades") or ():
                conn.execute(
                    insert(job_events).values(job_id=job_id, at=now, kind="downgrade", detail=downgrade)
                )
            return self._get(conn, job_id)

        return self.db.run_with_retry(write, what=f"finish job {job_id}")

    def finish_failed(self, job_id: str, code: str, message: str, *, lease: str | None = None) -> Job:
        """running -> failed with a stable ``code`` and a human ``message`` (never a traceback)."""

        def write(conn: Connection) -> Job:
            now = self._clock()
            self._move(
                conn,
                job_id,
                JobStatus.FAILED,
                now,
                lease,
                detail={"code": code},
                finished_at=now,
                error_code=code,
                error_message=message,
            )
            return self._get(conn, job_id)

        return self.db.run_with_retry(write, what=f"fail job {job_id}")

    def finish_cancelled(self, job_id: str, *, lease: str | None = None) -> Job:
        """running -> cancelled, after the worker stopped at a step boundary on the user's request."""

        def write(conn: Connection) -> Job:
            now = self._clock()
            self._move(
                conn,
                job_id,
                JobStatus.CANCELLED,
                now,
                lease,
                finished_at=now,
                error_code="cancelled",
                error_message="Cancelled by the user while running; no output was kept.",
            )
            return self._get(conn, job_id)

        return self.db.run_with_retry(write, what=f"cancel job {job_id}")

    def _move(
        self,
        conn: Connection,
        job_id: str,
        to: JobStatus,
        now: datetime,
        lease: str | None,
        *,
        detail: dict[str, Any] | None = None,
        **values: Any,
    ) -> None:
        """running (held by ``lease``, if given) -> ``to``, ending the lease; else the error that says why."""
        if not transition(
            conn,
            job_id,
            JobStatus.RUNNING,
            to,
            now=now,
            detail=detail,
            lease=lease,
            **_LEASE_ENDED,
            **values,
        ):
            self._check_held(conn, job_id, to, lease)
            raise AssertionError("unreachable: the job is held, yet the guarded update changed nothing")

    def _check_held(self, conn: Connection, job_id: str, to: JobStatus, lease: str | None) -> None:
        """Lock the row; raise unless the job is running (and held by ``lease``, if given).

        ``InvalidTransition`` names the status the job actually has; ``LeaseLost`` says another run holds it.
        """
        current = self._get_for_update(conn, job_id)
        if lease is not None and current.lease_token != lease and not current.is_terminal:
            # Taken back (queued again) or running under another lease: this run no longer counts.
            raise LeaseLost(
                f"job {job_id} is no longer held by this worker (its lease lapsed and the job was taken "
                f"back); it cannot become {to.value} from here."
            )
        if current.status != JobStatus.RUNNING:
            check_allowed(job_id, current.status, to)
            raise InvalidTransition(
                f"job {job_id} is {current.status.value}, not running; it cannot become {to.value}."
            )

    def requeue(
        self,
        job_id: str,
        *,
        reason: str,
        count_attempt: bool = True,
        exhausted_code: str = WORKER_CRASHED_REPEATEDLY,
        reason_code: str | None = None,
        lease: str | None = None,
        publish: Callable[[], None] | None = None,
    ) -> Job | None:
        """An interrupted running job: back to the queue (attempts + 1), or failed once attempts are spent.

        A job whose cancel was already requested becomes cancelled instead. Returns None when the job is not
        running (someone already moved it) or, with ``lease``, no longer held by it. ``count_attempt=False``
        (graceful shutdown, a database outage: not the job's fault) never fails it. ``reason_code`` (e.g.
        ``disk_full``) names ``reason`` as in ``requeue_interrupted``. ``publish`` (making the run's last
        checkpoint the job's) runs inside the transaction once the job is found held, as in
        ``finish_succeeded``; it may run twice when the commit is retried, so it must be idempotent.
        """

        def write(conn: Connection) -> Job | None:
            row = conn.execute(self._locked(select(jobs).where(*_held(job_id, lease)))).first()
            if row is None:
                return None
            if publish is not None:
                publish()
            return self._requeue_row(
                conn, _row_to_job(row), reason, count_attempt, exhausted_code, reason_code
            )

        return self.db.run_with_retry(write, what=f"requeue job {job_id}")

    def run_while_held(self, job_id: str, lease: str, action: Callable[[], None], *, what: str) -> None:
        """Run ``action`` (moving a run's file into the job's folder) inside a write transaction that locks
        the job's row and finds it running under ``lease``: the file counterpart of a fenced write, so only
        the lease holder ever changes the job's files. ``LeaseLost`` (and ``action`` not run) when another run
        holds the job now, ``InvalidTransition`` when it is no longer running."""

        def write(conn: Connection) -> None:
            current = self._get_for_update(conn, job_id)
            if current.lease_token != lease and not current.is_terminal:
                raise LeaseLost(f"job {job_id} is no longer held by this worker; {what} not done.")
            if current.status != JobStatus.RUNNING:
                raise InvalidTransition(f"job {job_id} is {current.status.value}; {what} not done.")
            action()

        self.db.run_with_retry(write, what=f"{what} of job {job_id}")

    def requeue_interrupted(
        self,
        reason: str,
        *,
        worker_id: str | None = None,
        exhausted_code: str = WORKER_CRASHED_REPEATEDLY,
        reason_code: str | None = None,
    ) -> builtins.list[Job]:
        """At start-up: every job left running (by ``worker_id``, or by anyone) was interrupted; requeue
        each (attempts + 1) or fail it when its attempts are spent. Returns the jobs as they are now.

        ``reason_code`` (e.g. ``worker_killed``) is a stable name for ``reason``: kept in the event's
        detail and, when the job fails, at the end of its message."""
        where = [jobs.c.status == JobStatus.RUNNING.value]
        if worker_id is not None:
            where.append(jobs.c.worker_id == worker_id)
        return self._requeue_where(where, reason, exhausted_code, reason_code)

    def requeue_expired_leases(self) -> builtins.list[Job]:
        """Take back every running job whose lease lapsed (its worker or its machine stopped renewing it):
        re-queued with its attempt counted, or failed once attempts are spent (the poison guard).

        Any service may call this; each job is moved once (rows are locked, a lost race skips the row). A
        running row without a lease was left by a version before leases: it is taken back too."""
        where = [
            jobs.c.status == JobStatus.RUNNING.value,
            or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < self._database_now()),
        ]
        reason = (
            f"its worker stopped renewing the job's lease (lease_s={self.settings.lease_s:g}): the worker or "
            "its machine is gone"
        )
        return self._requeue_where(where, reason, WORKER_CRASHED_REPEATEDLY, LEASE_EXPIRED)

    def _requeue_where(
        self, where: builtins.list[Any], reason: str, exhausted_code: str, reason_code: str | None
    ) -> builtins.list[Job]:
        def write(conn: Connection) -> builtins.list[Job]:
            query = self._locked(
                select(jobs).where(*where).order_by(jobs.c.created_at, jobs.c.seq), skip_locked=True
            )
            found = [_row_to_job(r) for r in conn.execute(query).all()]
            return [self._requeue_row(conn, job, reason, True, exhausted_code, reason_code) for job in found]

        moved = self.db.run_with_retry(write, what="requeue interrupted jobs")
        for job in moved:
            logger.warning(
                "job %s was interrupted (%s); now %s, attempts=%d", job.id, reason, job.status, job.attempts
            )
        return moved

    def _requeue_row(
        self,
        conn: Connection,
        job: Job,
        reason: str,
        count_attempt: bool,
        exhausted_code: str,
        reason_code: str | None = None,
    ) -> Job:
        now = self._clock()
        detail: dict[str, Any] = {"reason": reason, "attempt": job.attempts, "worker_id": job.worker_id}
        if reason_code is not None:
            detail["reason_code"] = reason_code
        last = f"{reason} ({reason_code})" if reason_code is not None else reason
        if job.cancel_requested:
            moved = transition(
                conn,
                job.id,
                JobStatus.RUNNING,
                JobStatus.CANCELLED,
                now=now,
                event="cancelled",
                detail=detail,
                finished_at=now,
                error_code="cancelled",
                error_message=f"Cancelled by the user; the run was interrupted ({reason}).",
                **_LEASE_ENDED,
            )
        elif count_attempt and job.attempts >= self.settings.max_attempts:
            moved = transition(
                conn,
                job.id,
                JobStatus.RUNNING,
                JobStatus.FAILED,
                now=now,
                detail={**detail, "code": exhausted_code},
                finished_at=now,
                error_code=exhausted_code,
                error_message=(
                    f"Gave up after {job.attempts} attempts (max_attempts={self.settings.max_attempts}); "
                    f"each one ended without a result. The last: {last}."
                ),
                **_LEASE_ENDED,
            )
        else:
            moved = transition(
                conn,
                job.id,
                JobStatus.RUNNING,
                JobStatus.QUEUED,
                now=now,
                event="interrupted",
                detail=detail,
                attempts=job.attempts + (1 if count_attempt else 0),
                worker_id=None,
                heartbeat_at=None,
                progress=None,
                **_LEASE_ENDED,
            )
        assert moved, "called inside the write transaction that read the job as running"
        return self._get(conn, job.id)

    def running_jobs(self, worker_id: str | None = None) -> builtins.list[Job]:
        """Jobs currently running (held by ``worker_id`` if given)."""
        query = select(jobs).where(jobs.c.status == JobStatus.RUNNING.value)
        if worker_id is not None:
            query = query.where(jobs.c.worker_id == worker_id)
        with self.db.transaction(write=False) as conn:
            return [_row_to_job(r) for r in conn.execute(query.order_by(jobs.c.started_at)).all()]

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete finished jobs (rows and folders) older than ``settings.retention_days``; returns how many.

        Queued and running jobs are never touched, however old. Does nothing when retention is off.
        """
        if self.settings.retention_days is None:
            return 0
        cutoff = (now or self._clock()) - timedelta(days=self.settings.retention_days)
        with self.db.transaction() as conn:
            ids = list(
                conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.status.in_([s.value for s in TERMINAL]), jobs.c.finished_at < cutoff
                    )
                ).scalars()
            )
            if ids:
                conn.execute(delete(job_events).where(job_events.c.job_id.in_(ids)))
                conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
        for job_id in ids:
            self._remove_dir(job_id)
        if ids:
            logger.info("retention: deleted %d jobs finished before %s", len(ids), cutoff.isoformat())
        return len(ids)
