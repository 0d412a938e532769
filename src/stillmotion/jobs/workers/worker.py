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
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
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
from stillmotion.jobs.store.db import DatabaseUnavailable
from stillmotion.jobs.store.job_store import Job, JobStore, LeaseLost, file_sha256
from stillmotion.jobs.workers import worker_state
from stillmotion.jobs.workers.disk_space import (
    DISK_FULL,
    disk_floor_mb,
    disk_low,
    free_disk_mb,
    is_disk_full_error,
)
from stillmotion.jobs.workers.job_files import JobFiles, LocalJobFiles, output_filename, run_output_path
from stillmotion.jobs.workers.lease import LeaseKeeper
from stillmotion.logging_setup import job_context, setup_logging
from stillmotion.media.image_input import InputImage, load_image_file

logger = logging.getLogger(__name__)

FAULTS_ENV = "STILLMOTION_FAULTS"
DEFAULT_WORKER_ID = worker_state.DEFAULT_WORKER_ID
IDLE_POLL_S = 0.5  # how often an idle worker looks for new jobs (an Event wait, so a stop wakes it at once)
CHECKPOINT_FILENAME = "checkpoint.pt"  # the latest denoising step of a running job (engine/checkpoint.py)
PROGRESS_MIN_INTERVAL_S = 0.2  # denoising steps closer together than this are not each written
PURGE_INTERVAL_S = 3600.0  # retention (settings.retention_days) is applied this often, when idle
STDIN_FD = 0
ROOM_POLL_S = 1.0  # how often a worker waiting for disk space looks again (and its first retry delay)
MAX_ROOM_WAIT_S = 30.0  # retries of a write that met a full disk slow down to this
DISK_FULL_REASON = "the data disk was full (nothing more could be written)"
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
        self._draining = threading.Event()
        self._interrupting = threading.Event()
        self._lock = threading.Lock()
        self._token: CancelToken | None = None

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
        record its progress (docs/jobs.md, "A full disk").
        """
        done = 0
        next_purge = next_reap = time.monotonic()
        self.publish_state()
        room = _RoomWatch(self.settings)
        while not self._draining.is_set() and (max_jobs is None or done < max_jobs):
            if not room.available():
                self._draining.wait(ROOM_POLL_S)
                continue
            try:
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self.settings.lease_s / 3
                    self.store.requeue_expired_leases()  # jobs of workers (or machines) that died
                job = self.store.claim_next(self.worker_id)
            except DatabaseUnavailable as exc:
                # Locked for minutes, or full: nothing was claimed, so waiting loses nothing.
                logger.error("could not claim a job (%s); retrying in %gs", exc.code, ROOM_POLL_S)
                self._draining.wait(ROOM_POLL_S)
                continue
            if job is None:
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_INTERVAL_S
                    self._purge()
                self._draining.wait(IDLE_POLL_S)
                continue
            with LeaseKeeper(self.store, job, on_lost=self._lost_lease):
                self.run_one(job)
            self.publish_state()
            done += 1
        return done

    def _lost_lease(self, why: str) -> None:
        """The running job is no longer this worker's (LeaseKeeper): stop it at the next step."""
        with self._lock:
            if self._token is not None:
                self._token.cancel()

    def recover_interrupted(self) -> None:
        """At start: re-queue what a previous process of this worker left running (waits out a full disk)."""
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
            budget = measure_budget(device, self.settings)
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
            if self._interrupting.is_set():
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
                if outcome.is_terminal:  # a re-queued job keeps its checkpoint: its next run resumes there
                    _remove_checkpoint(job_dir / CHECKPOINT_FILENAME)
                gc.collect()  # drop this job's tensors now, so memory is back to baseline between jobs
            return outcome

    def _after_failure(self, job: Job, output_path: Path, exc: Exception) -> Job:
        """The outcome of a generation that raised: re-queued on a full disk, else failed with its code."""
        if is_disk_full_error(exc):
            # The service ran out of room, not the job out of luck: it runs again once there is space. The
            # attempt counts (each one starts only with room on the disk), so a job whose output can never
            # fit ends failed with disk_full instead of looping.
            logger.error("job %s: the data disk is full; back to the queue once there is room", job.id)
            _remove_output(output_path)
            return self._record(
                lambda: (
                    self.store.requeue(
                        job.id,
                        reason=DISK_FULL_REASON,
                        exhausted_code=DISK_FULL,
                        reason_code=DISK_FULL,
                        lease=job.lease_token,
                    )
                    or self.store.get(job.id)
                ),
                f"re-queue job {job.id}",
            )
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
        """Run a write that must not be lost; while the data disk is full, wait for room and try again.

        The worker stays up meanwhile: dying here would leave the job running until a restarted worker
        re-queued it, and on a full disk a restarted worker cannot start either. A second SIGTERM gives up
        and leaves the job to the re-queue at the next start.
        """
        delay = ROOM_POLL_S
        while True:
            try:
                return write()
            except (StillmotionError, OSError) as exc:
                if not is_disk_full_error(exc):
                    raise
                logger.error("%s: the data disk is full (%s); trying again in %gs", what, exc, delay)
                if self._interrupting.wait(delay):
                    raise
            delay = min(delay * 2, MAX_ROOM_WAIT_S)

    def _generate(self, job: Job, job_dir: Path, output_path: Path, token: CancelToken) -> Job:
        image = load_image_file(self.files.input_path(job))
        request = self._stored_request(job, image)
        last_image = _last_image(job_dir, request)
        report = self.engine.plan(request)
        self.store.update_progress(
            job.id,
            ProgressEvent(Stage.PLAN, 0, report.request.num_inference_steps, 0.0).to_dict(),
            plan=report.plan.to_dict(),
            lease=job.lease_token,
        )
        loading = _LoadHeartbeat(self.store, job, self.settings.step_timeout_s / 4)
        # A run before this one (a restart, or a worker whose lease lapsed) left its latest step here: carry
        # on from it (the engine checks that it belongs to this request). Not reachable from another machine.
        saved = job_dir / CHECKPOINT_FILENAME
        resume = checkpoint.load(saved)
        hooks = Callbacks(
            on_progress=self._progress(job, token, loading), on_checkpoint=self._checkpointer(saved)
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
        finished = self.files.publish(job, output_path, sha256, result.to_dict())
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
                # Also the watchdog's heartbeat; False: the job is no longer this worker's (lease lost).
                if not self.store.update_progress(job.id, event.to_dict(), lease=job.lease_token):
                    token.cancel()
                last_write, last_stage = now, event.stage
            if self._interrupting.is_set() or self.store.is_cancel_requested(job.id):
                token.cancel()  # the engine raises Cancelled before the next step

        return on_progress

    def _checkpointer(self, path: Path) -> CheckpointCallback:
        """Keeps the engine's latest step in the job's folder: at most every ``checkpoint_interval_s``, and
        at once when the worker is being stopped, so a restart resumes there (engine/checkpoint.py)."""
        last_write = time.monotonic()

        def on_checkpoint(steps_done: int, make: Callable[[], Checkpoint]) -> None:
            nonlocal last_write
            now = time.monotonic()
            if not self._interrupting.is_set() and now - last_write < self.settings.checkpoint_interval_s:
                return
            try:
                checkpoint.save(make(), path)
            except OSError as exc:  # a checkpoint is insurance: a full disk must not fail the job for it
                logger.warning("could not save the checkpoint after step %d: %s", steps_done, exc)
            last_write = now

        return on_checkpoint

    def _after_cancel(self, job: Job, output_path: Path) -> Job:
        _remove_output(output_path)
        if self._interrupting.is_set() and not self.store.is_cancel_requested(job.id):
            logger.info("job %s interrupted by shutdown; back to the queue", job.id)
            requeued = self.store.requeue(
                job.id, reason="the service shut down", count_attempt=False, lease=job.lease_token
            )
            return requeued or self.store.get(job.id)
        try:
            cancelled = self._record(
                lambda: self.store.finish_cancelled(job.id, lease=job.lease_token), f"cancel job {job.id}"
            )
        except LeaseLost:
            logger.warning("job %s stopped: this worker lost its lease; the job runs elsewhere", job.id)
            return self.store.get(job.id)
        except InvalidTransition:  # finished by someone else meanwhile (e.g. the service's own recovery)
            logger.error("job %s was moved by someone else before it could be cancelled", job.id)
            return self.store.get(job.id)
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
        except InvalidTransition:
            logger.error("job %s was moved by someone else before it could fail (%s)", job.id, code)
            return self.store.get(job.id)


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


def _without_paths(message: str, settings: Settings) -> str:
    """A row's message as users see it: the server's data folder is named, never its absolute path."""
    for folder in {str(settings.data_dir.resolve()), str(settings.data_dir.absolute())}:
        message = message.replace(folder, "<data folder>")
    return message


def _internal_message(exc: BaseException, job_id: str) -> str:
    name = type(exc).__name__
    return f"Unexpected {name} in the worker; the details are in the worker log under job {job_id}."


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

    values: dict[str, Any] = {}
    if args.settings_from_stdin:
        values = json.loads(sys.stdin.buffer.readline())
    if args.data_dir is not None:
        values["data_dir"] = args.data_dir
    settings = Settings(**values)
    setup_logging(settings, "worker")
    if args.settings_from_stdin:
        threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    if fault_switches.active():
        logger.warning("test fault switches active: %s", os.environ[fault_switches.FAULTS_ENV])

    from stillmotion.engine.engine import Engine  # torch and diffusers load here, after the cheap setup

    store = JobStore.open(settings)
    try:
        worker = Worker(settings, store, Engine(settings), worker_id=args.worker_id)
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


def _last_image(job_dir: Path, request: ResolvedRequest) -> InputImage | None:
    """The frame a job ends on, stored beside its input as ``last_image.<format>`` (None if it has none)."""
    if request.last_image is None:
        return None
    found = sorted(job_dir.glob("last_image.*"))
    if not found:
        raise InvalidRequest(
            "last_image: the job's last frame is missing from its folder; submit the job again.",
            field="last_image",
        )
    return load_image_file(found[0])
