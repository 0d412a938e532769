"""Submission and read-side logic shared by the REST routes and the web UI, so both use one path.

Routes and the UI call ``JobService`` only, never the store or a job folder: reads (``get``, ``list_jobs``,
``batch``, ``finished_video``, ``input_image``), changes (``request_cancel``, ``delete``, ``cancel_batch``)
and ``submit``. ``JobService.submit`` is the whole "accept a job" rule: admission (draining, queue depth,
free disk) -> image validation -> request validation -> input moved into the job's folder -> row committed.
Any failure before the commit leaves no row and no file. Every method here blocks (SQLite, files); async
callers run them in a thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from stillmotion.config import Settings
from stillmotion.engine.request import GenerationRequest, ResolvedRequest
from stillmotion.engine.resolve import model_spec, resolve_gguf_files, resolve_loras
from stillmotion.errors import (
    CannotFit,
    InvalidImage,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    ModelUnavailable,
    ServiceRefused,
    StillmotionError,
    UnknownModel,
)
from stillmotion.jobs.store.job_store import MAX_LIST_LIMIT as MAX_LIST_LIMIT  # the routes' page limit
from stillmotion.jobs.store.job_store import DatabaseUnavailable as DatabaseUnavailable  # for the routes
from stillmotion.jobs.store.job_store import Job as Job  # the row type, for the routes and the UI
from stillmotion.jobs.store.job_store import JobStatus as JobStatus  # for the routes and the UI
from stillmotion.jobs.store.job_store import JobStore, QueueFull
from stillmotion.jobs.store.states import TERMINAL as TERMINAL  # the one definition, for routes and UI
from stillmotion.jobs.workers import worker_state
from stillmotion.jobs.workers.disk_space import is_disk_full_error
from stillmotion.jobs.workers.job_files import LAST_IMAGE_STEM
from stillmotion.media.image_input import ImageLimits, InputImage, load_image_file
from stillmotion.media.interpolation import Interpolator
from stillmotion.models.registry import get_spec
from stillmotion.models.rife_loader import RifeWeights, check_available
from stillmotion.service.batch import expand_batch
from stillmotion.service.expected_time import ExpectedTime, expected_time, queue_wait, time_left
from stillmotion.service.live_status import RETRY_AFTER_QUEUE_FULL_S, StatusMonitor, out_of_space, refusal
from stillmotion.service.model_folders import api_model_spec, public_text
from stillmotion.service.schemas import (
    BatchCounts,
    BatchLinks,
    BatchOut,
    DeviceBudgetOut,
    DowngradeOut,
    InterpolationPlanOut,
    JobErrorOut,
    JobLinks,
    JobOut,
    JobResultOut,
    MemoryPlanOut,
    ModelReadinessOut,
    PlanOut,
    ProgressOut,
    ResolvedRequestOut,
)

logger = logging.getLogger(__name__)
_Model = TypeVar("_Model", bound=BaseModel)

API_PREFIX = "/api/v1"
READINESS_TTL_S = 30.0
HISTORY_FOR_TIMING = 50  # finished jobs read to learn this machine's speed
RETRY_AFTER_MODEL_S = 60  # the default model's readiness (files on disk) is re-checked at most this often
# The first plan and the first readiness check import diffusers lazily; two threads doing so at once can meet
# a partially initialised module (seen: ImportError from accelerate.hooks). They take turns.
_MODEL_CODE_LOCK = threading.RLock()


class JobService:
    """Accepts, plans and describes jobs over one ``JobStore``: the one service the API and the UI share."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.accepting = True  # False while shutting down: new jobs get 503 (F4)
        # Set when the service starts to stop: long-lived streams end at once, so the server's wait for open
        # connections does not hold the shutdown (a browser tab would otherwise keep it for the whole grace).
        self.stopping = threading.Event()
        self.status = StatusMonitor(settings, store)  # what /health and admission read (live_status.py)
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        self._readiness: ModelReadinessOut | None = None
        self._readiness_at = 0.0
        self._readiness_thread: threading.Thread | None = None
        self._readiness_lock = threading.Lock()

    # -- limits ------------------------------------------------------------------------------------------

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 2**20)

    @property
    def upload_tmp_dir(self) -> Path:
        """Uploads stream here, on the data disk, so the move into the job folder is a rename."""
        return self.settings.data_dir / "tmp"

    def check_admission(self) -> None:
        """Cheap checks before reading an upload: shutting down (503), queue full (429), low disk (507).

        The rule and the figures are the ones /health shows (``live_status.refusal``), measured at most a
        few seconds ago; the store re-checks the queue depth as it commits, and a disk that fills meanwhile
        answers 507 from the upload itself.
        """
        refused = refusal(self.settings, self.status.current(), accepting=self.accepting)
        if refused is not None:
            raise refused

    # -- validation --------------------------------------------------------------------------------------

    def load_image(self, path: Path) -> InputImage:
        """Decode and validate an uploaded image (raises InvalidImage with its own code)."""
        return load_image_file(path, ImageLimits(max_bytes=self.max_upload_bytes))

    def load_last_image(self, path: Path) -> InputImage:
        """``load_image`` for the ``last_image`` file part: its refusals name that part, not ``image``."""
        try:
            return self.load_image(path)
        except InvalidImage as exc:
            message = exc.message.removeprefix("image")
            raise InvalidImage(
                f"{LAST_IMAGE_STEM}{message}",
                code=exc.code,
                field=LAST_IMAGE_STEM,
                http_status=exc.http_status,
            ) from None

    def resolve(
        self,
        request: GenerationRequest,
        image_size: tuple[int, int] | None,
        *,
        need_prompt: bool = True,
        seed_key: str | None = None,
        last_image_sha256: str | None = None,
    ) -> ResolvedRequest:
        """Validate the request against its model's limits and fill every default, once (raises
        InvalidRequest / UnknownModel); ``seed_key`` derives a missing seed from an idempotency key. LoRA
        files are found and checked now (under the LoRA folders only: never a client's path elsewhere)."""
        try:
            # An unregistered repo id is checked now (exists, is a pipeline we run, can be had here), so a
            # job is never queued only to fail at run time. A client names folders under the model roots
            # only; the server's own default may be any folder.
            if request.model:
                spec = api_model_spec(request.model, self.settings)
            else:
                spec = model_spec(self.settings.default_model, self.settings)
        except UnknownModel as exc:
            if request.model:
                raise  # the client named it: 422
            # The server's own default (a local folder) vanished: not the client's fault (F20).
            raise ServiceRefused(
                503,
                "model_unavailable",
                f"The server's default model is unavailable: {public_text(exc.message, self.settings)}",
                retry_after_s=RETRY_AFTER_MODEL_S,
            ) from None
        loras = resolve_loras(request, spec, self.settings, any_local_path=False)
        gguf, gguf_2 = resolve_gguf_files(request, spec, self.settings, any_local_path=False)
        resolved = request.resolve(
            spec,
            image_size,
            need_prompt=need_prompt,
            seed_key=seed_key,
            loras=loras,
            last_image_sha256=last_image_sha256,
            transformer_gguf=gguf,
            transformer_2_gguf=gguf_2,
        )
        self._check_interpolator(resolved)
        return resolved

    def _check_interpolator(self, resolved: ResolvedRequest) -> None:
        """RIFE's weights must be here or downloadable from here (ModelUnavailable, as for a model), so a job
        asking for them is never queued only to fail when it starts, and the plan says so too."""
        if resolved.interpolate > 1 and resolved.interpolator == Interpolator.RIFE.value:
            weights = RifeWeights(self.settings.rife_repo_id, self.settings.rife_revision)
            check_available(weights, cache_dir=self.settings.models_dir, offline=self.settings.offline)

    # -- submit ------------------------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        upload: Path,
        idempotency_key: str | None = None,
        last_upload: Path | None = None,
    ) -> tuple[Job, bool]:
        """Validate, move ``upload`` into a new job folder and commit the row with the resolved request;
        returns (job, created). ``last_upload``: the ``last_image`` file part, stored beside the input as
        ``last_image.<format>`` (consumed like ``upload``).

        ``upload`` is consumed: moved on success, deleted on any failure. A repeated ``idempotency_key``
        returns the first job and ``created=False`` (a retry resolves to the same request: a missing seed is
        the key's).
        """
        job_dir: Path | None = None
        try:
            self.check_admission()
            image = self.load_image(upload)
            last = None if last_upload is None else self.load_last_image(last_upload)
            if last is not None:
                request = replace(request, last_image=str(last_upload))
            resolved = self.resolve(
                request,
                (image.width, image.height),
                seed_key=idempotency_key,
                last_image_sha256=None if last is None else last.sha256,
            )
            job_id = str(uuid.uuid4())
            job_dir = self.store.job_dir(job_id)
            job_dir.mkdir(parents=True, exist_ok=False)
            input_filename = f"input.{image.format}"
            os.replace(upload, job_dir / input_filename)
            if last is not None and last_upload is not None:
                os.replace(last_upload, job_dir / f"{LAST_IMAGE_STEM}.{last.format}")
            try:
                job, created = self.store.create(
                    job_id=job_id,
                    request=resolved.to_dict(),
                    input_filename=input_filename,
                    idempotency_key=idempotency_key,
                    input_sha256=image.sha256,
                )
            except QueueFull as exc:
                raise _queue_full(exc) from None
            if not created:  # an idempotent replay: the first job stands, this copy of the input goes
                shutil.rmtree(job_dir, ignore_errors=True)
            job_dir = None
            logger.info("job %s %s (model %s)", job.id, "accepted" if created else "replayed", job.model)
            return job, created
        except OSError as exc:  # the job folder could not be made on a full disk
            if is_disk_full_error(exc):
                raise out_of_space() from None
            raise
        finally:
            for consumed in (upload, last_upload):
                if consumed is not None:
                    with contextlib.suppress(FileNotFoundError):
                        consumed.unlink()
            if job_dir is not None:
                shutil.rmtree(job_dir, ignore_errors=True)

    def submit_batch(
        self,
        base: GenerationRequest,
        items: Sequence[dict[str, Any]],
        upload: Path,
        last_upload: Path | None = None,
    ) -> tuple[str, list[Job]]:
        """One image, one job per entry of ``items`` (fields on top of ``base``): (batch id, the jobs).

        All or nothing: every entry is validated before any folder or row exists, and the rows are committed
        in one transaction (the queue must hold them all). Each job gets its own copy of the image (and of
        ``last_upload``, the last frame), its own row and its own video. The uploads are consumed, as by
        ``submit``.
        """
        job_dirs: list[Path] = []
        try:
            self.check_admission()
            image = self.load_image(upload)
            last = None if last_upload is None else self.load_last_image(last_upload)
            if last is not None:
                base = replace(base, last_image=str(last_upload))
            entries = []
            for index, request in enumerate(expand_batch(base, items)):
                try:
                    resolved = self.resolve(
                        request,
                        (image.width, image.height),
                        last_image_sha256=None if last is None else last.sha256,
                    )
                except InvalidRequest as exc:
                    raise InvalidRequest(
                        f"items[{index}]: {exc.message}",
                        code=exc.code,
                        field=f"items[{index}].{exc.field}",
                        http_status=exc.http_status,
                    ) from None
                except ModelUnavailable as exc:  # e.g. RIFE without its weights here
                    raise ModelUnavailable(
                        f"items[{index}]: {exc.message}",
                        field=f"items[{index}].{exc.field}",
                        details=exc.details,
                    ) from None
                entries.append((str(uuid.uuid4()), resolved.to_dict(), f"input.{image.format}"))
            for job_id, _, input_filename in entries:
                job_dir = self.store.job_dir(job_id)
                job_dirs.append(job_dir)
                job_dir.mkdir(parents=True, exist_ok=False)
                shutil.copyfile(upload, job_dir / input_filename)
                if last is not None and last_upload is not None:
                    shutil.copyfile(last_upload, job_dir / f"{LAST_IMAGE_STEM}.{last.format}")
            batch_id = str(uuid.uuid4())
            try:
                jobs = self.store.create_batch(batch_id, entries)
            except QueueFull as exc:
                raise _queue_full(exc) from None
            job_dirs = []  # committed: the folders belong to their rows now
            logger.info("batch %s accepted: %d jobs", batch_id, len(jobs))
            return batch_id, jobs
        except OSError as exc:  # the copies of the image could not be made on a full disk
            if is_disk_full_error(exc):
                raise out_of_space() from None
            raise
        finally:
            for consumed in (upload, last_upload):
                if consumed is not None:
                    with contextlib.suppress(FileNotFoundError):
                        consumed.unlink()
            for job_dir in job_dirs:
                shutil.rmtree(job_dir, ignore_errors=True)

    # -- plan --------------------------------------------------------------------------------------------

    def plan(self, request: GenerationRequest, image_size: tuple[int, int] | None) -> PlanOut:
        """The engine's plan for this request on this device; ``fits=False`` (not an error) on CannotFit.

        The prompt may be empty: memory does not depend on it."""
        resolved = self.resolve(request, image_size, need_prompt=False)
        request_out = ResolvedRequestOut(
            **{**resolved.to_dict(), "model": public_text(resolved.model, self.settings)}
        )
        try:
            with _MODEL_CODE_LOCK:
                engine = self._get_engine()
                report = engine.plan(resolved, budget=self.plan_budget(engine))
        except CannotFit as exc:
            return PlanOut(fits=False, message=exc.message, request=request_out)
        data = report.to_dict()
        plan = data.get("plan") or {}
        expected = self.expected_time(data["request"])
        interpolation = data.get("interpolation")
        return PlanOut(
            fits=True,
            message=plan.get("reason") or None,
            request=request_out,
            budget=DeviceBudgetOut.model_validate(_jsonable(report.budget.__dict__)),
            plan=MemoryPlanOut.model_validate(_jsonable(plan)),
            interpolation=None
            if interpolation is None
            else InterpolationPlanOut.model_validate(interpolation),
            expected_time_s=None if expected is None else round(expected.seconds, 1),
            expected_time_basis=None if expected is None else expected.basis,
        )

    def expected_time(self, request: dict[str, Any]) -> ExpectedTime | None:
        """How long ``request`` (resolved) should take here, from this service's finished jobs."""
        finished, _ = self.store.list(status=JobStatus.SUCCEEDED, limit=HISTORY_FOR_TIMING)
        return expected_time(request, [job.result for job in finished])

    def queue_wait_s(self, job: Job, position: int | None) -> float | None:
        """About how long until the queued ``job`` starts (``queue_wait``), or None while unknown: no ready
        worker, or no finished job of its model to measure by."""
        ready = self.status.latest().ready_workers
        if position is None or ready < 1:
            return None
        try:
            expected = self.expected_time(job.request)
        except (KeyError, TypeError, ValueError):  # a request stored by an older version: no estimate
            return None
        return None if expected is None else round(queue_wait(position, ready, expected.seconds), 1)

    def time_left(self, job: Job) -> float | None:
        """About how long the running ``job`` still takes, its decode counted (``expected_time.time_left``);
        None when unknown or when it is not running."""
        if job.status != JobStatus.RUNNING or not isinstance(job.progress, dict):
            return None
        try:
            expected = self.expected_time(job.request)
        except (KeyError, TypeError, ValueError):  # a request stored by an older version: no estimate
            expected = None
        decoding_for_s = 0.0
        elapsed = job.progress.get("elapsed_s")
        if job.started_at is not None and isinstance(elapsed, int | float):
            # The decode began ``elapsed_s`` into the run (its progress event); the run began at the claim.
            decode_began = job.started_at.timestamp() + float(elapsed)
            decoding_for_s = max(0.0, time.time() - decode_began)
        return time_left(job.progress, expected, decoding_for_s)

    def workers(self) -> list[dict[str, Any]] | None:
        """The workers' last statuses (``WorkerPool.statuses``; None when this server runs none), each with
        ``device_name``: the name of the device it measured (the GPU's, or "CPU"), from the state it
        publishes (jobs/workers/worker_state.py), else the GPU it is pinned to, else None."""
        statuses = self.status.latest().workers
        if statuses is None:
            return None
        named = []
        for status in statuses:
            worker_id = str(status.get("worker_id") or worker_state.DEFAULT_WORKER_ID)
            state = worker_state.read_state(worker_state.state_path(self.settings.data_dir, worker_id))
            named.append({**status, "device_name": _device_name(state, status)})
        return named

    def plan_budget(self, engine: Any) -> Any:
        """This process's measurement of the engine's device, plus what the worker will reuse there.

        The worker keeps its weights and PyTorch cache on the GPU between jobs; measured from here they look
        taken, yet the worker's next job reuses them (jobs/workers/worker_state.py). CPU budgets are
        unchanged."""
        from stillmotion.memory.device import measure_budget

        device = getattr(engine, "device", None)
        if device is None:  # an engine without a device (a test double) measures for itself
            return None
        budget = measure_budget(device, self.settings)
        state = worker_state.read_state(
            worker_state.state_path(self.settings.data_dir, worker_state.DEFAULT_WORKER_ID)
        )
        return worker_state.budget_with_worker(
            budget, worker_state.device_key(device.type, device.index), state
        )

    # -- model readiness (F20) ---------------------------------------------------------------------------

    def model_readiness(self) -> ModelReadinessOut | None:
        """The default model's readiness as last checked; never blocks (None until the first check ends).

        A check older than ``READINESS_TTL_S`` starts a new one in a background thread: the first one imports
        the model code (seconds), and ``/health`` must answer at once.
        """
        with self._readiness_lock:
            stale = time.monotonic() - self._readiness_at > READINESS_TTL_S
            running = self._readiness_thread is not None and self._readiness_thread.is_alive()
            if stale and not running:
                self._readiness_thread = threading.Thread(
                    target=self._refresh_readiness, name="model-readiness", daemon=True
                )
                self._readiness_thread.start()
            return self._readiness

    def check_model_readiness(self) -> ModelReadinessOut:
        """Whether the default model's files are here, checked on disk only: no network, no weights loaded."""
        name = self.settings.default_model
        try:
            with _MODEL_CODE_LOCK:
                available, detail = _model_files_ready(self.settings)
        except StillmotionError as exc:  # e.g. a local folder that no longer exists
            available, detail = False, exc.message
        except Exception as exc:  # a readiness probe must never take the health check down
            logger.exception("model readiness check failed")
            available, detail = False, f"the check failed: {type(exc).__name__}"
        return ModelReadinessOut(name=name, available=available, detail=public_text(detail, self.settings))

    def _refresh_readiness(self) -> None:
        result = self.check_model_readiness()
        with self._readiness_lock:
            if not result.available and (self._readiness is None or self._readiness.available):
                logger.error("default model %s is not available: %s", result.name, result.detail)
            self._readiness, self._readiness_at = result, time.monotonic()

    def _get_engine(self) -> Any:
        # The Engine is cheap (weights load lazily, and plan() loads none); imported here so the API and
        # UI start without pulling in diffusers until a plan is asked for.
        with self._engine_lock:
            if self._engine is None:
                from stillmotion.engine.engine import Engine

                self._engine = Engine(self.settings)
            return self._engine

    # -- read side ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job, or JobNotFound (also for ids that are not UUIDs: B27)."""
        return self.store.get(parse_job_id(job_id))

    def list_jobs(
        self, status: Sequence[JobStatus] | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and how many match ``status`` (all when None); ``limit`` is 1 to
        ``MAX_LIST_LIMIT`` (InvalidRequest otherwise)."""
        return self.store.list(status=list(status) if status else None, limit=limit, offset=offset)

    def queue_position(self, job: Job) -> int | None:
        """1 for the queued job that runs next, 2 for the one after...; None unless ``job`` is queued."""
        return self.store.queue_position(job.id) if job.status == JobStatus.QUEUED else None

    def request_cancel(self, job_id: str) -> Job:
        """Cancel: a queued job at once, a running one at its next step (``cancel_requested``); a cancelled
        job is a no-op; a finished one is InvalidTransition (409). Returns the job as it is now."""
        return self.store.request_cancel(self.get(job_id).id)

    def delete(self, job_id: str) -> None:
        """Remove the job, its history and its files; a running job is InvalidTransition (409)."""
        self.store.delete(self.get(job_id).id)

    def batch(self, batch_id: str) -> list[Job]:
        """The jobs of one batch in submission order; JobNotFound when there is no such batch."""
        return self.store.batch(parse_job_id(batch_id))  # batch ids are UUIDs, like job ids

    def cancel_batch(self, batch_id: str) -> list[Job]:
        """Cancel every unfinished job of the batch (as ``request_cancel``); the batch as it is now.

        Each job on its own: one that finishes (or is deleted) between the read and its cancel keeps its end,
        and the others are cancelled all the same."""
        batch_id = parse_job_id(batch_id)
        for job in self.store.batch(batch_id):
            if job.status in TERMINAL:
                continue
            try:
                self.store.request_cancel(job.id)
            except (InvalidTransition, JobNotFound):
                logger.info("batch %s: job %s ended before its cancel", batch_id, job.id)
        return self.store.batch(batch_id)

    def finished_video(self, job: Job) -> Path | None:
        """The succeeded ``job``'s video, checked as ``video_path`` checks it; None while it has none (not
        finished, failed, cancelled) or once its file is gone."""
        if job.status != JobStatus.SUCCEEDED or not job.output_filename:
            return None
        path = self._file_in_job_dir(job, job.output_filename)
        return path if path.is_file() else None

    def input_image(self, job: Job) -> Path | None:
        """The image ``job`` was submitted with, or None once its file is gone."""
        path = self._file_in_job_dir(job, job.input_filename)
        return path if path.is_file() else None

    def last_image(self, job: Job) -> Path | None:
        """The last frame ``job`` was submitted with (``last_image.<format>``), or None: it has none, or the
        file is gone."""
        if job.request.get("last_image") is None:
            return None
        found = sorted(self.store.job_dir(job.id).glob(f"{LAST_IMAGE_STEM}.*"))
        path = self._file_in_job_dir(job, found[0].name) if found else None
        return path if path is not None and path.is_file() else None

    def _file_in_job_dir(self, job: Job, name: str) -> Path:
        """``name`` in the job's folder; JobNotFound if it resolves anywhere else. Second line of defence
        behind UUID ids and the store's filename rule."""
        job_dir = self.store.job_dir(job.id).resolve()
        path = (job_dir / name).resolve()
        if os.path.commonpath([job_dir, path]) != str(job_dir):
            raise JobNotFound(f"job {job.id} has no such file.")
        return path

    def job_out(self, job: Job, *, with_position: bool = True) -> JobOut:
        """The public view of a stored job. Its queue position and wait are read now, when the database
        answers: a job just committed is still answered (202) if it stops answering meanwhile."""
        data = job.to_dict()
        status = JobStatus(data["status"])
        base = f"{API_PREFIX}/jobs/{job.id}"
        position, wait_s = None, None
        if with_position:
            with contextlib.suppress(DatabaseUnavailable):
                position = self.queue_position(job)
                wait_s = self.queue_wait_s(job, position)
        error = None
        if data.get("error_code"):
            message = public_text(data.get("error_message") or data["error_code"], self.settings)
            error = JobErrorOut(code=data["error_code"], message=message)
        result = data.get("result") or None
        return JobOut(
            id=job.id,
            status=status,
            model=None if data.get("model") is None else public_text(data["model"], self.settings),
            batch_id=job.batch_id,
            request=self._request_out(data.get("request")),
            created_at=data["created_at"],
            updated_at=data.get("updated_at"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            attempts=int(data.get("attempts") or 0),
            cancel_requested=bool(data.get("cancel_requested")),
            queue_position=position,
            queue_wait_s=wait_s,
            progress=_progress(data.get("progress"), terminal=status in TERMINAL),
            plan=_stored(MemoryPlanOut, _jsonable(data.get("plan"))),
            error=error,
            result=None
            if result is None
            else JobResultOut(
                sha256=data.get("output_sha256") or result.get("sha256"),
                warnings=[str(w) for w in result.get("warnings") or []],
                downgrades=[
                    d
                    for d in (_stored(DowngradeOut, x) for x in result.get("downgrades") or [])
                    if d is not None
                ],
                timings={k: float(v) for k, v in (result.get("timings") or {}).items() if _is_number(v)},
            ),
            links=JobLinks(
                self=base,
                events=f"{base}/events",
                cancel=f"{base}/cancel",
                video=f"{base}/video" if status == JobStatus.SUCCEEDED else None,
            ),
        )

    def _request_out(self, data: object) -> ResolvedRequestOut | None:
        """A stored resolved request on the wire, its model folder named relative to its root, its files
        (LoRAs, a GGUF transformer) without their places on the server."""
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": public_text(data["model"], self.settings)}
        if isinstance(data, dict):  # no server path in the answer: a file is named by its reference
            data = {**data, **_without_paths(data, ("loras", "transformer_gguf", "transformer_2_gguf"))}
        return _stored(ResolvedRequestOut, data)

    def batch_out(self, batch_id: str, jobs: list[Job]) -> BatchOut:
        """The public view of a batch."""
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.status.value] = counts.get(job.status.value, 0) + 1
        base = f"{API_PREFIX}/batches/{batch_id}"
        return BatchOut(
            id=batch_id,
            jobs=[self.job_out(job) for job in jobs],
            counts=BatchCounts(**counts),
            links=BatchLinks(self=base, cancel=f"{base}/cancel"),
        )

    def video_path(self, job_id: str) -> Path:
        """The finished video's path: 409 ``job_not_finished`` (queued, running) or ``job_has_no_video``
        (failed, cancelled), 410 if its file has gone (F22)."""
        job = self.get(job_id)
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            raise ServiceRefused(
                409,
                "job_not_finished",
                f"job {job.id} is {job.status}; its video is not ready yet (follow {API_PREFIX}/jobs/"
                f"{job.id}/events).",
            )
        if job.status != JobStatus.SUCCEEDED or not job.output_filename:
            # Failed and cancelled are final: telling the client to wait would have it poll forever.
            why = f"failed ({job.error_code})" if job.status == JobStatus.FAILED else "was cancelled"
            raise ServiceRefused(
                409,
                "job_has_no_video",
                f"job {job.id} {why}; it has no video and never will. Submit it again to retry.",
            )
        path = self._file_in_job_dir(job, job.output_filename)
        if not path.is_file():
            raise ServiceRefused(
                410,
                "output_deleted",
                f"job {job.id}'s video was deleted from the data folder; the job record is kept.",
            )
        return path


def _model_files_ready(settings: Settings) -> tuple[bool, str]:
    """(available, detail) for ``settings.default_model`` from the files alone; raises StillmotionError."""
    import torch

    from stillmotion.models.loader import is_cached, missing_weights

    spec = get_spec(settings.default_model)
    if spec.tiny or spec.random_weights:
        return True, "built in (random weights, no files needed)"
    if spec.local_path is not None:
        folder = spec.local_path
        missing = missing_weights(spec, folder)
        if not folder.is_dir():
            return False, f"the model folder {folder} does not exist; jobs will fail with model_unavailable."
        if missing:
            return False, (
                f"the model folder {folder} lacks {', '.join(missing)}; jobs will fail with "
                "model_unavailable. Download the model again into that folder."
            )
        return True, f"local folder {folder}"
    if any(is_cached(spec, dtype, settings.models_dir) for dtype in (torch.float16, torch.float32)):
        return True, f"{spec.repo_id} is in the local cache"
    where = str(settings.models_dir) if settings.models_dir else "the Hugging Face cache"
    if settings.offline:
        then = "offline mode is on, so jobs will fail with model_unavailable until it is downloaded"
    else:
        then = "the first job downloads it (or fails with model_unavailable if the hub cannot be reached)"
    return False, f"{spec.repo_id} is not in {where}; {then}."


def _without_paths(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The file records ``names`` of a stored request (a record or a list of them) without their ``path``."""
    out: dict[str, Any] = {}
    for name in names:
        value = data.get(name)
        if isinstance(value, dict):
            out[name] = {k: v for k, v in value.items() if k != "path"}
        elif isinstance(value, list):
            out[name] = [
                {k: v for k, v in x.items() if k != "path"} if isinstance(x, dict) else x for x in value
            ]
    return out


def _device_name(state: dict[str, Any] | None, status: dict[str, Any]) -> str | None:
    """What a person calls the worker's device: "CPU", the GPU's name, or the pinned GPU's index."""
    budget = (state or {}).get("budget") or {}
    if budget.get("device_type") == "cpu":
        return "CPU"
    if budget.get("name"):
        return str(budget["name"])
    gpu = status.get("gpu")
    return None if gpu is None else f"GPU {gpu}"


def parse_job_id(job_id: str) -> str:
    """The canonical UUID string, or JobNotFound: ids never reach a path or a query unvalidated."""
    if len(job_id) > 64:
        raise JobNotFound("No job with that id (job ids are UUIDs).")
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise JobNotFound(f"No job {job_id[:40]!r} (job ids are UUIDs).") from None


def _queue_full(exc: QueueFull) -> ServiceRefused:
    """429 with the store's own count, measured as it refused (not the monitor's figure of a moment ago)."""
    return ServiceRefused(429, "queue_full", exc.message, retry_after_s=RETRY_AFTER_QUEUE_FULL_S)


def _stored(model: type[_Model], data: object) -> _Model | None:
    """``data`` read back from a job row as ``model``; None when it is missing or has another shape (a row
    written by an older version): the job is still shown, without that part."""
    if data is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        logger.debug("stored %s of another shape left out: %r", model.__name__, data)
        return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _progress(data: object, *, terminal: bool) -> ProgressOut | None:
    if not isinstance(data, dict):
        return None
    known = set(ProgressOut.model_fields)
    progress = ProgressOut(**{k: v for k, v in data.items() if k in known})
    # A finished job has nothing left to wait for, whatever its last progress write said.
    return progress.model_copy(update={"eta_s": None}) if terminal else progress


def _jsonable(data: object) -> dict[str, Any] | None:
    """Plan/budget dicts as JSON-safe values (no NaN/inf, enums and paths as strings)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        return {"value": str(data)}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return None
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    result: dict[str, Any] = clean(data)
    return result
