"""The public REST contract: every body the API accepts or returns, as pydantic models.

Kept apart from ``jobs/`` so the API can stay stable while the store changes; ``job_out()`` is the one
translation from a store ``Job`` to the wire. Input models forbid unknown fields and NaN/Infinity; bounds
that depend on the model (frames, size, steps...) are checked by ``GenerationRequest.resolve`` so one rule
lives in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorBody(_Out):
    code: str = Field(
        description="Stable machine-readable code, e.g. invalid_request, empty_file, queue_full."
    )
    message: str = Field(description="Human message naming the field, the value and the rule.")
    field: str | None = Field(default=None, description="The request field at fault, when there is one.")


class ErrorResponse(_Out):
    """Every 4xx/5xx answer of the API has this shape (never a traceback)."""

    error: ErrorBody


class GenerationFields(BaseModel):
    """The generation fields of ``POST /jobs`` and ``POST /plan`` (multipart form fields, diffusers names).

    Everything but ``prompt`` may be left out and takes the model's default; give either ``resolution`` or
    both ``height`` and ``width``. A missing ``seed`` is drawn at random and stored with the job. The model's
    rules (GET /models: size multiple, frame rule, whether it takes a prompt) are checked by the server.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=100_000)

    prompt: str = Field(
        default="",
        description="What should move, and how (max 2000 characters; no control characters). Required by "
        "models that take a prompt; must be left empty for models that take none (svd-xt: the image alone).",
    )
    negative_prompt: str | None = Field(default=None, description="What to avoid; default: the model's.")
    model: str | None = Field(
        default=None,
        description="Registered model name (see GET /models), Hugging Face repo id or local folder; "
        "default: the server's STILLMOTION_DEFAULT_MODEL.",
    )
    resolution: Literal["512p", "480p", "768p", "720p", "1024p"] | None = Field(
        default=None,
        description="Preset output area (512p/768p/1024p: that side squared; 480p/720p: a 16:9 frame of that "
        "height); the input's aspect ratio is kept, snapped to the model's preset multiple.",
    )
    height: int | None = Field(
        default=None,
        description="Explicit output height (a multiple of the model's size_multiple); needs width.",
    )
    width: int | None = Field(
        default=None,
        description="Explicit output width (a multiple of the model's size_multiple); needs height.",
    )
    num_frames: int | None = Field(
        default=None,
        description="Frames to generate (model limits apply; Wan takes 4k+1 frames, LTX-Video 8k+1).",
    )
    num_inference_steps: int | None = Field(default=None, description="Denoising steps.")
    guidance_scale: float | None = Field(default=None, description="Classifier-free guidance scale.")
    fps: int | None = Field(default=None, description="Frames per second of the output video.")
    seed: int | None = Field(default=None, description="0 to 2**32-1; leave out for a random one.")
    interpolate: int | None = Field(
        default=None,
        description="Frame interpolation after generation: 2, 3 or 4 times the frames and the fps (N frames "
        "become N x k, the duration stays). Changes the video; recorded in its recipe.",
    )
    interpolate_fps: int | None = Field(
        default=None, description="Instead of `interpolate`: the output fps, fps times 2, 3 or 4."
    )
    interpolator: Literal["minterpolate", "rife"] | None = Field(
        default=None,
        description="minterpolate (ffmpeg, CPU, no download; the default) or rife (learned RIFE 4.6 network, "
        "weights from the Hugging Face hub).",
    )


class JobForm(GenerationFields):
    """Multipart body of ``POST /jobs``: the image file plus the generation fields."""

    image: bytes = Field(
        json_schema_extra={"format": "binary"},
        description="PNG, JPEG or WebP still image (size limited by the server; checked by content).",
    )


class PlanForm(GenerationFields):
    """Multipart body of ``POST /plan``: the generation fields and, optionally, the image."""

    prompt: str = Field(default="", description="Optional here: the memory plan does not depend on it.")

    image: bytes | None = Field(
        default=None,
        json_schema_extra={"format": "binary"},
        description="Optional: with it, presets keep its aspect ratio exactly as a job would.",
    )


class ResolvedRequestOut(_Out):
    """A request with every default filled in: exactly what runs."""

    prompt: str
    negative_prompt: str
    model: str
    resolution: str | None
    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    fps: int
    seed: int
    interpolate: int = 1
    interpolator: str | None = None


class ProgressOut(_Out):
    stage: str = Field(description="plan, load, encode, denoise, decode, interpolate, write or done.")
    step: int = Field(description="Finished denoising steps.")
    total_steps: int
    elapsed_s: float
    eta_s: float | None = Field(default=None, description="Estimated seconds left, when known.")
    message: str = ""


class JobLinks(_Out):
    self: str
    events: str
    cancel: str
    video: str | None = Field(default=None, description="Present once the job succeeded.")


class JobResultOut(_Out):
    sha256: str | None = None
    warnings: list[str] = Field(default_factory=list)
    downgrades: list[dict[str, Any]] = Field(default_factory=list, description="OOM recoveries, one each.")
    timings: dict[str, float] = Field(default_factory=dict)


class JobOut(_Out):
    """One job as the API shows it."""

    id: str
    status: JobStatusName
    model: str | None
    request: dict[str, Any] = Field(description="The request as stored: the fields given, the seed drawn.")
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int
    cancel_requested: bool
    queue_position: int | None = Field(default=None, description="1 = next to run; null unless queued.")
    progress: ProgressOut | None = None
    plan: dict[str, Any] | None = Field(default=None, description="The memory plan in use (see GET /plan).")
    error: ErrorBody | None = Field(default=None, description="Why the job failed or was cancelled.")
    result: JobResultOut | None = None
    links: JobLinks


class JobList(_Out):
    jobs: list[JobOut]
    total: int = Field(description="Jobs matching the filter, ignoring limit and offset.")
    limit: int
    offset: int


class ModelOut(_Out):
    name: str
    family: str
    description: str
    source: str
    tiny: bool
    default: bool = Field(description="True for the server's default model.")
    defaults: dict[str, Any]
    limits: dict[str, Any] = Field(
        description="Every bound a request must keep: frames (min_frames, max_frames, frame_step: num_frames "
        "must be frame_step x k + 1), size (size_multiple and why, min_side, max_side, max_pixels), steps, "
        "guidance, fps, prompt length, and accepts_prompt."
    )
    rules: list[str] = Field(description="The same rules in words, as the UI shows them.")


class ModelList(_Out):
    models: list[ModelOut]
    default_model: str


class WorkerOut(_Out):
    status: Literal["running", "starting", "down", "disabled"] = Field(
        description="running: takes jobs; starting: its process is loading (jobs wait in the queue); down: "
        "dead and being restarted; disabled: this server runs no worker."
    )
    pid: int | None = None
    restarts: int = 0
    current_job_id: str | None = None
    device: str | None = None


class ModelReadinessOut(_Out):
    name: str = Field(description="The server's default model.")
    available: bool = Field(description="Its files are on this machine (checked on disk; nothing loaded).")
    detail: str = Field(description="Where the files are, or what is missing and what jobs will do.")


class HealthOut(_Out):
    ok: bool = Field(
        description="True when the API accepts jobs and its worker is ready to run them (or disabled)."
    )
    version: str
    accepting_jobs: bool
    queue_depth: int | None = Field(description="Queued jobs; null if the database did not answer in time.")
    max_queue_size: int
    worker: WorkerOut
    free_disk_mb: float
    default_model: ModelReadinessOut | None = Field(
        default=None,
        description="The default model's readiness; null until the first check (in the background) ends. "
        "Jobs are accepted either way; with the model unavailable they fail with model_unavailable.",
    )


class PlanOut(_Out):
    """A dry run of a request on this server's device: no weights are loaded."""

    fits: bool = Field(description="False when no memory plan fits; `message` says what would.")
    message: str | None = None
    request: ResolvedRequestOut
    budget: dict[str, Any] | None = Field(default=None, description="The device budget measured now.")
    plan: dict[str, Any] | None = Field(default=None, description="The chosen plan and its estimates.")
    interpolation: dict[str, Any] | None = Field(
        default=None, description="The interpolation phase's plan, when the request asks for interpolation."
    )
    expected_time_s: float | None = Field(
        default=None,
        description="Expected seconds for the whole job on this machine, learned from its earlier jobs of "
        "the same model; null until one has run.",
    )
    expected_time_basis: str | None = Field(default=None, description="What the expected time rests on.")


class BatchForm(JobForm):
    """Multipart body of ``POST /batches``: one image, the fields all jobs share, and what differs per job."""

    items: str | None = Field(
        default=None,
        description="A JSON array, one object per job with the fields that differ from the shared ones, "
        'e.g. [{"seed": 1}, {"seed": 2}] or [{"prompt": "waves"}, {"prompt": "rain"}] (1 to 64 entries).',
    )
    variations: int | None = Field(
        default=None,
        description="Instead of `items`: this many jobs that differ only in the seed (seed, seed+1, ... when "
        "`seed` is given, random seeds otherwise).",
    )


class BatchLinks(_Out):
    self: str
    cancel: str


class BatchOut(_Out):
    """One batch: its jobs in submission order and how many are in each status."""

    id: str
    jobs: list[JobOut]
    counts: dict[str, int] = Field(description='Jobs per status, e.g. {"succeeded": 5, "cancelled": 1}.')
    links: BatchLinks
