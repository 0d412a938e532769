"""The worker process: claims jobs one at a time and runs them through the Engine, which stays loaded.

Run by ``WorkerSupervisor`` as ``python -m stillmotion.jobs.workers.worker --settings-from-stdin`` (or by
hand with ``--data-dir``). The loop is: claim the oldest queued job -> ``engine.generate`` with a progress
callback that writes progress to the store and turns a stored cancel request into the CancelToken -> one
``finish_*`` call. Expected failures keep their ``StillmotionError.code``; anything else is
``internal_error`` with the traceback in the log file, never in the row. A full data disk is the service's
trouble, not the job's: the job goes back to the queue, outcomes that cannot be written yet wait for room,
and no job is claimed until there is some (docs/jobs.md, "A full disk").

Signals: the first SIGTERM drains (finish the current job, claim no more, exit 0); a second SIGTERM or a
SIGINT interrupts (stop at the next step boundary, re-queue the job without spending an attempt, exit 0).

The worker resolves each job's request and hears the engine through hooks (engine/hooks.py): progress goes
to the store, checkpoints to the job's folder. Test-only fault switches (``STILLMOTION_FAULTS``,
``stillmotion/faults.py``) are one more hook, installed per job and attempt so ``@job`` and ``@attempt``
qualifiers match.

After start and after every job the worker publishes its device state (``jobs/workers/worker_state.py``) so
the API plans with the memory this worker will really have.

Several workers (processes on one machine, Ray actors on many) share one store. Each job runs under a lease
(``jobs/workers/lease.py``) that the worker renews, and every write about the job carries the lease's token;
a worker that loses the lease stops the run and writes nothing more. Between jobs a worker takes back the
jobs whose lease lapsed (their worker or machine died). Inputs and outputs go through ``JobFiles``
(``jobs/workers/job_files.py``): the local job folder, or for a Ray actor the API node's.

A database outage is waited out, never charged to a job (docs/jobs.md, "Database outages"): an idle worker
retries with a capped backoff; a running job carries on without its progress writes while its lease lasts,
and past it stops and goes back to the queue without spending an attempt once the database answers; the
writes that record an outcome wait for the database. No database error ends the loop.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import gc
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

from stillmotion import faults as fault_switches
from stillmotion.config import Settings
from stillmotion.engine import checkpoint
from stillmotion.engine.checkpoint import Checkpoint, CheckpointCallback
from stillmotion.engine.hooks import Callbacks, EngineHooks
from stillmotion.engine.progress import CancelToken, ProgressCallback, ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest, ResolvedRequest
from stillmotion.engine.resolve import resolve
from stillmotion.engine.result import GenerationResult, PlanReport
from stillmotion.errors import (
    BadOutput,
    Cancelled,
    InvalidRequest,
    InvalidTransition,
    ModelUnavailable,
    StillmotionError,
    UnknownModel,
)
from stillmotion.jobs.store.db import DatabaseError, DatabaseUnavailable
from stillmotion.jobs.store.job_store import WORKER_CRASHED_REPEATEDLY, Job, JobStore, LeaseLost, file_sha256
from stillmotion.jobs.workers import worker_state
from stillmotion.jobs.workers.disk_space import (
    DISK_FULL,
    disk_floor_mb,
    disk_low,
    free_disk_mb,
    is_disk_full_error,
)
from stillmotion.jobs.workers.job_files import (
    LAST_IMAGE_STEM,
    JobFiles,
    LocalJobFiles,
    output_filename,
    run_checkpoint_path,
    run_output_path,
)
from stillmotion.jobs.workers.lease import LeaseKeeper, LeaseReaper
from stillmotion.logging_setup import job_context, setup_logging
from stillmotion.media.image_input import InputImage, load_image_file
from stillmotion.startup_heap import freeze_startup_objects

logger = logging.getLogger(__name__)

FAULTS_ENV = "STILLMOTION_FAULTS"
DEFAULT_WORKER_ID = worker_state.DEFAULT_WORKER_ID
IDLE_POLL_S = 0.5  # how often an idle worker looks for new jobs (an Event wait, so a stop wakes it at once)
CHECKPOINT_FILENAME = "checkpoint.pt"  # the latest denoising step of a running job (engine/checkpoint.py)
RUN_CHECKPOINTS = "checkpoint.run-*.pt"  # each run's own (job_files.run_checkpoint_path)
CHECKPOINT_MARGIN_MB = 1.0  # beyond the latents: the scheduler's state and the file's own overhead
PROGRESS_MIN_INTERVAL_S = 0.2  # denoising steps closer together than this are not each written
PURGE_INTERVAL_S = 3600.0  # retention (settings.retention_days) is applied this often, when idle
STDIN_FD = 0
ROOM_POLL_S = 1.0  # how often a worker waiting for disk space looks again (and its first retry delay)
MAX_ROOM_WAIT_S = 30.0  # retries of a write that met a full disk slow down to this
MAX_DATABASE_WAIT_S = 5.0  # retries against an unreachable database slow down to this, no further
DISK_FULL_REASON = "the data disk was full (nothing more could be written)"
DATABASE_UNAVAILABLE = "database_unavailable"  # reason code of a job handed back after an outage
OUTAGE_REASON = "the job database could not be reached for longer than the job's lease"
# Database errors a worker waits out: the database is locked or cannot be reached (a full one is disk_full).
WAITABLE_DATABASE_CODES = frozenset({"database_busy", DATABASE_UNAVAILABLE})
T = TypeVar("T")


class EngineLike(Protocol):
    """What the worker needs from ``stillmotion.engine.engine.Engine`` (a Protocol so tests can wrap it)."""

    def plan(self, request: ResolvedRequest) -> PlanReport: ...

    def generate(
        self,
        request: ResolvedRequest,
        image: InputImage,
        output_path: Path,
        hooks: Sequence[EngineHooks] = (),
        *,
        cancel: CancelToken | None = None,
        resume: Checkpoint | None = None,
        last_image: InputImage | None = None,
    ) -> GenerationResult: ...


__all__ = ["DEFAULT_WORKER_ID", "EngineLike", "Worker", "main", "output_filename"]


# ---- the worker -------------------------------------------------------------------------------------------


class Worker:
    """Runs queued jobs one after another on one engine (one worker per GPU)."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        engine: EngineLike,
        *,
        worker_id: str = DEFAULT_WORKER_ID,
        files: JobFiles | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.worker_id = worker_id
        self.files: JobFiles = files or LocalJobFiles(store)
        self.reaper = LeaseReaper(store, interval_s=settings.lease_s / 3)
        self._draining = threading.Event()
        self._interrupting = threading.Event()
        self._lock = threading.Lock()
        self._token: CancelToken | None = None
        self._lease_lost: str | None = None  # why the running job is no longer this worker's (None: held)
        self._lease_unreachable = False  # ... because the database could not be reached (hand it back)
        self._outage = _Outage()

    def drain(self) -> None:
        """Finish the current job, then stop (first SIGTERM)."""
        self._draining.set()

    def interrupt(self) -> None:
        """Stop the current job at the next step and re-queue it, then stop (second SIGTERM, SIGINT)."""
        self._interrupting.set()
        self._draining.set()
        with self._lock:
            if self._token is not None:
                self._token.cancel()

    def run(self, max_jobs: int | None = None) -> int:
        """Claim and run jobs until drained (or ``max_jobs`` ran); returns how many ran.

        On a full data disk it claims nothing and waits for room: a job started there could not even
        record its progress (docs/jobs.md, "A full disk"). While the database cannot be reached it tries
        again with a capped backoff; no database error ends the loop.
        """
        done = 0
        next_purge = time.monotonic()
        self.publish_state()
        room = _RoomWatch(self.settings)
        while not self._draining.is_set() and (max_jobs is None or done < max_jobs):
            if not room.available():
                self._draining.wait(ROOM_POLL_S)
                continue
            try:
                self.reaper.reap_if_due()  # jobs of workers (or machines) that died
                job = self.store.claim_next(self.worker_id)
            except DatabaseError as exc:
                # Locked, full or unreachable: nothing was claimed, so waiting loses nothing.
                self._draining.wait(self._outage.failed("claim a job", exc))
                continue
            self._outage.over()
            if job is None:
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_INTERVAL_S
                    self._purge()
                self._draining.wait(IDLE_POLL_S)
                continue
            with self._lock:
                self._lease_lost, self._lease_unreachable = None, False
            try:
                with LeaseKeeper(self.store, job, on_lost=self._lost_lease):
                    self.run_one(job)
            except DatabaseError as exc:  # an outcome the database did not take (a stop meanwhile): logged
                logger.error("job %s: its outcome was not recorded (%s); its lease decides", job.id, exc.code)
            self.publish_state()
            done += 1
        return done

    def _lost_lease(self, why: str, unreachable: bool = False) -> None:
        """The running job is no longer this worker's (LeaseKeeper, or a fenced write said so): stop it at
        the next step. ``unreachable``: only because the database could not be reached: hand it back."""
        with self._lock:
            if self._lease_lost is None:
                self._lease_lost, self._lease_unreachable = why, unreachable
            if self._token is not None:
                self._token.cancel()

    def recover_interrupted(self) -> None:
        """At start: re-queue what a previous process of this worker left running (waits out a full disk
        and an unreachable database)."""
        self._record(
            lambda: self.store.requeue_interrupted("the worker restarted", worker_id=self.worker_id),
            "re-queue interrupted jobs",
        )

    def publish_state(self) -> None:
        """Write this worker's device state for the API's planner (worker_state.py); never fails a job."""
        device = getattr(self.engine, "device", None)
        if device is None:  # a test double without a device: nothing to tell
            return
        try:
            import torch

            from stillmotion.memory.device import measure_budget

            index = device.index
            reusable = 0
            if device.type == "cuda" and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
                index = device.index if device.index is not None else torch.cuda.current_device()
                reusable = int(torch.cuda.memory_reserved(index))
            # The engine's own view counts the host memory its loaded weights hold as available.
            own = getattr(self.engine, "budget", None)
            budget = own() if callable(own) else measure_budget(device, self.settings)
            loaded = getattr(self.engine, "_loaded", None)
            worker_state.publish(
                worker_state.state_path(self.settings.data_dir, self.worker_id),
                pid=os.getpid(),
                device=worker_state.device_key(device.type, index),
                budget=budget.to_dict(),
                reusable_bytes=reusable,
                model=loaded[0] if isinstance(loaded, tuple) and loaded else None,
            )
        except Exception:
            logger.exception("could not publish the worker's device state")

    def _purge(self) -> None:
        """Apply the retention policy while idle; a failure is logged and retried at the next interval."""
        try:
            self.store.purge_expired()
        except StillmotionError as exc:
            logger.error("retention purge failed: %s", exc.message)

    def run_one(self, job: Job) -> Job:
        """Run one claimed job to exactly one outcome: finished, failed, cancelled or re-queued."""
        token = CancelToken()
        with self._lock:
            self._token = token
            if self._interrupting.is_set() or self._lease_lost is not None:
                token.cancel()
        job_dir = self.store.job_dir(job.id)
        output_path = run_output_path(job_dir, job)
        with job_context(job.id):
            logger.info("starting job %s (attempt %d)", job.id, job.attempts)
            outcome = job
            try:
                outcome = self._generate(job, job_dir, output_path, token)
            except Cancelled:
                outcome = self._after_cancel(job, output_path)
            except Exception as exc:
                outcome = self._after_failure(job, output_path, exc)
            finally:
                with self._lock:
                    self._token = None
                _remove_checkpoint(run_checkpoint_path(job_dir, job))  # promoted, or this run's to drop
                if outcome.is_terminal and outcome.worker_id == self.worker_id:
                    # This run ended the job: its checkpoint goes, and any a vanished run left (a re-queued
                    # job keeps the job's: its next run resumes from it).
                    for leftover in (job_dir / CHECKPOINT_FILENAME, *job_dir.glob(RUN_CHECKPOINTS)):
                        _remove_checkpoint(leftover)
                gc.collect()  # drop this job's tensors now, so memory is back to baseline between jobs
            return outcome

    def _after_failure(self, job: Job, output_path: Path, exc: Exception) -> Job:
        """The outcome of a generation that raised: re-queued on a full disk or an unreachable database,
        else failed with its code."""
        if is_disk_full_error(exc):
            # The service ran out of room, not the job out of luck: it runs again once there is space. The
            # attempt counts (each one starts only with room on the disk), so a job whose output can never
            # fit ends failed with disk_full instead of looping.
            logger.error("job %s: the data disk is full; back to the queue once there is room", job.id)
            _remove_output(output_path)
            return self._requeue(
                job, DISK_FULL_REASON, DISK_FULL, count_attempt=True, exhausted_code=DISK_FULL
            )
        if isinstance(exc, LeaseLost):  # its video was not published: another run holds the job now
            return self._after_lease_lost(job, output_path, exc.message)
        if isinstance(exc, InvalidTransition):
            # Moved meanwhile: by someone else, or by this run's own commit whose answer the database lost
            # (a retried success then finds the job succeeded). Either way there is nothing left to record.
            _remove_output(output_path)
            current = self._current(job)
            logger.warning(
                "job %s was moved before this run could record it; it is %s", job.id, current.status
            )
            return current
        if isinstance(exc, DatabaseUnavailable) and exc.code in WAITABLE_DATABASE_CODES:
            # The database, not the job: back to the queue without spending an attempt, once it answers.
            _remove_output(output_path)
            return self._hand_back(job, OUTAGE_REASON, DATABASE_UNAVAILABLE)
        if isinstance(exc, UnknownModel):
            # It resolved when the job was accepted: the model (a local folder) moved or vanished since.
            message = f"{exc.message} It was available when the job was accepted; it has moved or gone."
            logger.warning("job %s failed: model_unavailable: %s", job.id, message)
            return self._fail(job, output_path, ModelUnavailable.code, message)
        if isinstance(exc, StillmotionError):
            logger.warning("job %s failed: %s: %s", job.id, exc.code, exc.message)
            for downgrade in exc.details.get("downgrades") or ():
                # The OOM steps tried before giving up: kept in the job's history (I5).
                self._note(job, "downgrade", downgrade)
            return self._fail(job, output_path, exc.code, exc.message)
        # Anything else is a bug: full traceback to the log, a short honest line to the row.
        logger.error("job %s: unexpected error", job.id, exc_info=exc)
        return self._fail(job, output_path, "internal_error", _internal_message(exc, job.id))

    def _record(self, write: Callable[[], T], what: str) -> T:
        """Run a write that must not be lost; while the data disk is full or the database cannot be reached,
        wait and try again.

        The worker stays up meanwhile: dying here would leave the job running until a restarted worker
        re-queued it (an attempt spent), and on a full disk a restarted worker cannot start either. A second
        SIGTERM gives up and leaves the job to the re-queue at the next start.
        """
        delay = ROOM_POLL_S
        while True:
            try:
                result = write()
            except (StillmotionError, OSError) as exc:
                if is_disk_full_error(exc):
                    logger.error("%s: the data disk is full (%s); trying again in %gs", what, exc, delay)
                    cap = MAX_ROOM_WAIT_S
                elif isinstance(exc, DatabaseUnavailable) and exc.code in WAITABLE_DATABASE_CODES:
                    delay = self._outage.failed(what, exc)
                    cap = MAX_DATABASE_WAIT_S
                else:
                    raise
                if self._interrupting.wait(delay):
                    raise
                delay = min(delay * 2, cap)
                continue
            self._outage.over()
            return result

    def _generate(self, job: Job, job_dir: Path, output_path: Path, token: CancelToken) -> Job:
        image = load_image_file(self.files.input_path(job))
        request = self._stored_request(job, image)
        last_image = _last_image(job_dir, request)
        report = self.engine.plan(request)
        self._write_progress(
            job,
            ProgressEvent(Stage.PLAN, 0, report.request.num_inference_steps, 0.0).to_dict(),
            plan=report.plan.to_dict(),
        )
        loading = _LoadHeartbeat(self.store, job, self.settings.step_timeout_s / 4)
        # A run before this one (a restart, or a worker whose lease lapsed) left its latest step here: carry
        # on from it (the engine checks that it belongs to this request). Not reachable from another machine.
        resume = checkpoint.load(job_dir / CHECKPOINT_FILENAME)
        hooks = Callbacks(
            on_progress=self._progress(job, token, loading), on_checkpoint=self._checkpointer(job, job_dir)
        )
        try:
            result = self.engine.generate(
                request,
                image,
                output_path,
                [*fault_switches.hooks(job.id, job.attempts), hooks],
                cancel=token,
                resume=resume,
                last_image=last_image,
            )
        finally:
            loading.stop()
        sha256 = file_sha256(output_path)
        if sha256 != result.sha256:
            raise BadOutput(
                f"the video at {output_path.name} does not match the checksum the engine recorded."
            )
        finished = self._record(
            lambda: self.files.publish(job, output_path, sha256, result.to_dict()), f"finish job {job.id}"
        )
        logger.info("job %s succeeded (seed %d, sha256 %s)", job.id, result.request.seed, sha256[:12])
        return finished

    def _stored_request(self, job: Job, image: InputImage) -> ResolvedRequest:
        """The request as the service resolved and stored it: run as stored, nothing resolved or drawn again.

        A row stored before requests were stored resolved (stillmotion 0.1 kept the fields as given, with
        the seed) is resolved once here, as it would have been then."""
        try:
            return ResolvedRequest.from_dict(job.request)
        except InvalidRequest:
            asked = GenerationRequest.from_dict(job.request)
            logger.info("job %s: a request stored as given (before 0.2); resolving it once", job.id)
            return resolve(asked, self.settings, (image.width, image.height))

    def _write_progress(self, job: Job, progress: dict[str, Any], plan: dict[str, Any] | None = None) -> None:
        """Record progress (the watchdog's heartbeat too). While the database cannot be reached the run
        carries on without it (its lease says how long); a refused write means the job is someone else's."""
        try:
            held = self.store.update_progress(job.id, progress, plan=plan, lease=job.lease_token)
        except DatabaseUnavailable as exc:
            if exc.code not in WAITABLE_DATABASE_CODES:
                raise  # a full database is a full disk: the job goes back to the queue
            self._outage.note(f"progress of job {job.id}", exc)
            return
        self._outage.over()
        if not held:
            self._lost_lease("a progress write found the job taken back or finished elsewhere")

    def _cancel_requested(self, job: Job) -> bool:
        """Whether the user asked to cancel ``job``; False while the database cannot say."""
        try:
            return self.store.is_cancel_requested(job.id)
        except DatabaseUnavailable as exc:
            if exc.code not in WAITABLE_DATABASE_CODES:
                raise
            return False

    def _progress(self, job: Job, token: CancelToken, loading: _LoadHeartbeat) -> ProgressCallback:
        last_write = 0.0
        last_stage: Stage | None = None

        def on_progress(event: ProgressEvent) -> None:
            nonlocal last_write, last_stage
            if event.stage is Stage.LOAD:
                loading.start()
            else:
                loading.stop()
            now = time.monotonic()
            important = event.stage != last_stage or event.step >= event.total_steps
            if important or now - last_write >= PROGRESS_MIN_INTERVAL_S:
                self._write_progress(job, event.to_dict())
                last_write, last_stage = now, event.stage
            if self._interrupting.is_set() or self._lease_lost is not None or self._cancel_requested(job):
                token.cancel()  # the engine raises Cancelled before the next step

        return on_progress

    def _checkpointer(self, job: Job, job_dir: Path) -> CheckpointCallback:
        """Keeps the engine's latest step for the job: at most every ``checkpoint_interval_s``, and at once
        when the worker is being stopped, so a restart resumes there (engine/checkpoint.py).

        Fenced like the video: the run writes its own file (``run_checkpoint_path``) and only the lease
        holder renames it to the job's ``checkpoint.pt`` (``JobStore.run_while_held``); a run whose job was
        taken back writes nothing more. While the database cannot be reached the run's file waits, and
        becomes the job's if the run still holds the lease when it hands the job back. A full disk is the
        service's trouble, as during the video write: the job goes back to the queue
        (``_save_checkpoint``)."""
        last_write = time.monotonic()
        run_file = run_checkpoint_path(job_dir, job)

        def on_checkpoint(steps_done: int, make: Callable[[], Checkpoint]) -> None:
            nonlocal last_write
            now = time.monotonic()
            if self._lease_lost is not None and not self._lease_unreachable:
                return  # another run holds the job: this one writes nothing more
            if not self._interrupting.is_set() and now - last_write < self.settings.checkpoint_interval_s:
                return
            last_write = now
            if not _save_checkpoint(make(), run_file, steps_done):
                return
            try:
                self.store.run_while_held(
                    job.id,
                    job.lease_token or "",
                    self._promoter(job),
                    what=f"checkpoint after step {steps_done}",
                )
            except InvalidTransition as exc:  # LeaseLost included: not this run's job any more
                _remove_checkpoint(run_file)
                self._lost_lease(exc.message)
            except DatabaseUnavailable as exc:
                if exc.code not in WAITABLE_DATABASE_CODES:
                    raise
                # Kept: promoted at the next save, or when the run hands the job back.
                self._outage.note(f"checkpoint of job {job.id}", exc)

        return on_checkpoint

    def _promoter(self, job: Job) -> Callable[[], None]:
        """Makes this run's last saved checkpoint the job's (called inside a transaction holding the lease);
        nothing when there is none. Idempotent: a retried commit finds it already moved."""
        job_dir = self.store.job_dir(job.id)
        run_file = run_checkpoint_path(job_dir, job)

        def promote() -> None:
            if run_file.exists():
                os.replace(run_file, job_dir / CHECKPOINT_FILENAME)

        return promote

    def _hand_back(self, job: Job, reason: str, reason_code: str | None) -> Job:
        """Back to the queue without spending an attempt: not the job's fault (a shutdown, an outage)."""
        return self._requeue(job, reason, reason_code, count_attempt=False)

    def _requeue(
        self,
        job: Job,
        reason: str,
        reason_code: str | None,
        *,
        count_attempt: bool,
        exhausted_code: str = WORKER_CRASHED_REPEATEDLY,
    ) -> Job:
        """Back to the queue (or failed with ``exhausted_code`` once a counted attempt was the last), with
        this run's last checkpoint as the job's; waits for room or the database. The job as it is now
        (elsewhere, if it was taken back meanwhile)."""
        requeued = self._record(
            lambda: self.store.requeue(
                job.id,
                reason=reason,
                count_attempt=count_attempt,
                exhausted_code=exhausted_code,
                reason_code=reason_code,
                lease=job.lease_token,
                publish=self._promoter(job),
            ),
            f"re-queue job {job.id}",
        )
        if requeued is None:
            logger.warning("job %s was taken back before this run could put it back", job.id)
            return self._current(job)
        logger.info("job %s back to the queue (%s; attempt counted: %s)", job.id, reason, count_attempt)
        return requeued

    def _after_lease_lost(self, job: Job, output_path: Path, why: str) -> Job:
        self._lost_lease(why)  # from here on this run writes nothing to the job's folder
        _remove_output(output_path)
        if self._lease_unreachable:
            return self._hand_back(job, OUTAGE_REASON, DATABASE_UNAVAILABLE)
        logger.warning("job %s stopped: this worker lost its lease (%s); the job runs elsewhere", job.id, why)
        return self._current(job)

    def _current(self, job: Job) -> Job:
        """The job as stored now, or as this worker last knew it while the database cannot say."""
        try:
            return self.store.get(job.id)
        except DatabaseError:
            return job

    def _after_cancel(self, job: Job, output_path: Path) -> Job:
        _remove_output(output_path)
        if self._lease_lost is not None:
            return self._after_lease_lost(job, output_path, self._lease_lost)
        if self._interrupting.is_set() and not self._cancel_requested(job):
            logger.info("job %s interrupted by shutdown; back to the queue", job.id)
            return self._hand_back(job, "the service shut down", None)
        try:
            cancelled = self._record(
                lambda: self.store.finish_cancelled(job.id, lease=job.lease_token), f"cancel job {job.id}"
            )
        except LeaseLost as exc:
            return self._after_lease_lost(job, output_path, exc.message)
        except InvalidTransition:  # finished by someone else meanwhile (e.g. the service's own recovery)
            logger.error("job %s was moved by someone else before it could be cancelled", job.id)
            return self._current(job)
        logger.info("job %s cancelled by the user", job.id)
        return cancelled

    def _note(self, job: Job, kind: str, detail: object) -> None:
        if isinstance(detail, dict):
            try:
                self.store.add_event(job.id, kind, detail, lease=job.lease_token)
            except StillmotionError as exc:
                logger.error("job %s: could not record a %s event: %s", job.id, kind, exc.message)

    def _fail(self, job: Job, output_path: Path, code: str, message: str) -> Job:
        _remove_output(output_path)
        message = _without_paths(message, self.settings)
        try:
            return self._record(
                lambda: self.store.finish_failed(job.id, code, message, lease=job.lease_token),
                f"fail job {job.id}",
            )
        except LeaseLost as exc:
            return self._after_lease_lost(job, output_path, exc.message)
        except InvalidTransition:
            logger.error("job %s was moved by someone else before it could fail (%s)", job.id, code)
            return self._current(job)


def _save_checkpoint(saved: Checkpoint, path: Path, steps_done: int) -> bool:
    """Write ``saved`` to ``path``; True when written. A checkpoint is insurance: a write that fails is
    logged and skipped, except on a full disk, raised as ENOSPC so the job takes the full-disk path.

    ``torch.save`` reports a failed write as a RuntimeError without an errno, so a failure is a full disk
    when the disk has less room left than the checkpoint needs."""
    try:
        checkpoint.save(saved, path)
    except Exception as exc:
        needed_mb = saved.latents.element_size() * saved.latents.nelement() / 2**20 + CHECKPOINT_MARGIN_MB
        if is_disk_full_error(exc) or shutil.disk_usage(path.parent).free / 2**20 < needed_mb:
            raise OSError(
                errno.ENOSPC, f"no room on the data disk for the checkpoint after step {steps_done}"
            ) from exc
        logger.warning("could not save the checkpoint after step %d: %s", steps_done, exc)
        return False
    return True


class _Outage:
    """How long to wait before trying an unreachable database again (0.5 s doubling to 5 s), logging when
    an outage starts and ends rather than at every try."""

    def __init__(self) -> None:
        self._delay: float | None = None
        self._since = 0.0
        self._lock = threading.Lock()

    def failed(self, what: str, exc: StillmotionError) -> float:
        """Note a failed try; the seconds to wait before the next."""
        with self._lock:
            if self._delay is None:
                self._started(what, exc)
                delay = IDLE_POLL_S
            else:
                delay = min(self._delay * 2, MAX_DATABASE_WAIT_S)
            self._delay = delay
            return delay

    def note(self, what: str, exc: StillmotionError) -> None:
        """Note a write skipped for the outage (nobody waits on it): logged if it is the first sign."""
        with self._lock:
            if self._delay is None:
                self._started(what, exc)
                self._delay = IDLE_POLL_S

    def _started(self, what: str, exc: StillmotionError) -> None:
        self._since = time.monotonic()
        logger.error("%s: %s (%s); waiting for the database", what, exc.code, exc.message)

    def over(self) -> None:
        """Note a successful try (logs the end of an outage)."""
        with self._lock:
            if self._delay is not None:
                logger.info("the database answers again (after %.1fs)", time.monotonic() - self._since)
            self._delay = None


class _LoadHeartbeat:
    """Keeps the watchdog's heartbeat fresh while weights load or download (no steps run then).

    Without it, a first download slower than step_timeout_s would look like a hung step.
    """

    def __init__(self, store: JobStore, job: Job, interval_s: float) -> None:
        self._store, self._job, self._interval_s = store, job, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="load-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._store.heartbeat(self._job.id, lease=self._job.lease_token)
            except StillmotionError as exc:  # a full or locked database: the next beat tries again
                logger.warning("heartbeat of job %s not written: %s", self._job.id, exc.code)


class _RoomWatch:
    """Whether the data disk has room for a job (``disk_low``); logs when that changes, not at every look."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._full = False

    def available(self) -> bool:
        free_mb = free_disk_mb(self.settings)
        full = disk_low(self.settings, free_mb)
        if full and not self._full:
            logger.error(
                "the data disk is full (%.1f MB free, jobs need %g MB): taking no job until space is freed",
                free_mb,
                disk_floor_mb(self.settings),
            )
        elif self._full and not full:
            logger.info("the data disk has room again (%.1f MB free): taking jobs", free_mb)
        self._full = full
        return not full


def open_store(settings: Settings, stop: threading.Event | None = None) -> JobStore | None:
    """``JobStore.open``, waiting while the database is locked or cannot be reached (a worker that starts
    during an outage waits for it, instead of dying and being restarted in a loop); None once ``stop`` is
    set. Any other error is raised."""
    outage = _Outage()
    while True:
        try:
            store = JobStore.open(settings)
        except DatabaseUnavailable as exc:
            if exc.code not in WAITABLE_DATABASE_CODES:
                raise
            delay = outage.failed("open the job database", exc)
            if (stop or threading.Event()).wait(delay):
                return None
            continue
        outage.over()
        return store


def _without_paths(message: str, settings: Settings) -> str:
    """A row's message as users see it: the server's data folder is named, never its absolute path."""
    for folder in {str(settings.data_dir.resolve()), str(settings.data_dir.absolute())}:
        message = message.replace(folder, "<data folder>")
    return message


def _internal_message(exc: BaseException, job_id: str) -> str:
    name = type(exc).__name__
    return f"Unexpected {name} in the worker; the details are in the worker log under job {job_id}."


def _last_image(job_dir: Path, request: ResolvedRequest) -> InputImage | None:
    """The frame a job ends on, stored beside its input as ``last_image.<format>`` (None if it has none)."""
    if request.last_image is None:
        return None
    found = sorted(job_dir.glob(f"{LAST_IMAGE_STEM}.*"))
    if not found:
        raise InvalidRequest(
            "last_image: the job's last frame is missing from its folder; submit the job again.",
            field="last_image",
        )
    return load_image_file(found[0])


def _remove_checkpoint(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.error("could not remove the checkpoint %s: %s", path.name, exc)


def _remove_output(output_path: Path) -> None:
    """No partial or unrecorded output may stay at the final path of a job that did not succeed."""
    for path in (output_path, output_path.with_name(output_path.name + ".json")):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.error("could not remove %s: %s", path, exc)


# ---- process entry point ----------------------------------------------------------------------------------


@contextmanager
def _signals(worker: Worker) -> Iterator[None]:
    terms = 0

    def on_term(signum: int, _frame: FrameType | None) -> None:
        nonlocal terms
        terms += 1
        if terms == 1:
            logger.info("SIGTERM: finishing the current job, then exiting")
            worker.drain()
        else:
            logger.info("second SIGTERM: stopping the current job at the next step and re-queueing it")
            worker.interrupt()

    def on_int(signum: int, _frame: FrameType | None) -> None:
        logger.info("SIGINT: stopping the current job at the next step and re-queueing it")
        worker.interrupt()

    previous = (signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def _exit_with_parent() -> None:
    """Die with the supervisor: its end of our stdin closes when it exits, however it exits.

    Without this a SIGKILLed service leaves an orphan worker that a restarted service would race.
    """
    # os.read on the raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader's lock
    # makes the interpreter abort at exit.
    try:
        while os.read(STDIN_FD, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stillmotion.jobs.workers.worker``: run the worker until SIGTERM; exit 0 when stopped
    cleanly."""
    parser = argparse.ArgumentParser(prog="stillmotion-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="data folder (default: STILLMOTION_DATA_DIR)")
    parser.add_argument("--worker-id", default=DEFAULT_WORKER_ID)
    parser.add_argument(
        "--settings-from-stdin",
        action="store_true",
        help="read Settings as one JSON line from stdin; exit when stdin closes (used by the supervisor)",
    )
    args = parser.parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack to stderr (the service's log): how to see where a worker
    # that stays "starting" or a step that hangs is stuck, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    values: dict[str, Any] = {}
    if args.settings_from_stdin:
        values = json.loads(sys.stdin.buffer.readline())
    if args.data_dir is not None:
        values["data_dir"] = args.data_dir
    settings = Settings(**values)
    setup_logging(settings, args.worker_id)
    if args.settings_from_stdin:
        threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    if fault_switches.active():
        logger.warning("test fault switches active: %s", os.environ[fault_switches.FAULTS_ENV])

    from stillmotion.engine.engine import Engine  # torch and diffusers load here, after the cheap setup

    store = open_store(settings)
    assert store is not None, "waits until the database answers: no stop event to give up on"
    try:
        worker = Worker(settings, store, Engine(settings), worker_id=args.worker_id)
        freeze_startup_objects()  # each job's gc.collect then skips torch's and diffusers' objects
        with _signals(worker):
            worker.recover_interrupted()
            logger.info("worker %s ready (pid %d, device %s)", args.worker_id, os.getpid(), settings.device)
            worker.run()
        logger.info("worker %s stopped", args.worker_id)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
