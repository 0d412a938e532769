"""The public REST contract: every body the API returns, as named, typed pydantic models.

Kept apart from ``jobs/`` so the API can stay stable while the store changes; ``JobService.job_out`` is the
one translation from a store ``Job`` to the wire. Every body and every nested object is a named schema with
typed fields, closed sets are enums (a generated client gets classes, not maps of anything); where a body
mirrors an engine dataclass (the resolved request, a model's limits and defaults, the device budget, the
plans) its model is derived from that dataclass (``wire_model``), so a field added there appears here. The
request forms are in ``request_form.py``; the error codes in ``ErrorCode``.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING
from dataclasses import fields as dataclass_fields
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from stillmotion.engine.request import ResolvedRequest
from stillmotion.jobs.store.states import JobStatus
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.interpolation import InterpolationPlan
from stillmotion.memory.types import GroupOffloadType, MemoryPlan, PhaseEstimate, Placement
from stillmotion.models.gguf import GgufWeights
from stillmotion.models.lora_refs import ResolvedLora
from stillmotion.models.registry import Defaults, Limits
from stillmotion.service.request_form import CHOICE_ENUMS, LoraExpert


class ErrorCode(StrEnum):
    """Every stable error code an API answer can carry (docs/api.md lists them with their statuses;
    tests/server/test_openapi.py checks that every code the source raises is here)."""

    # 400, 401, 403, 404, 405, 408
    MALFORMED_BODY = "malformed_body"
    MALFORMED_HEADER = "malformed_header"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    JOB_NOT_FOUND = "job_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    HTTP_ERROR = "http_error"
    # 409, 410, 413, 415, 416
    INVALID_TRANSITION = "invalid_transition"
    LEASE_LOST = "lease_lost"
    JOB_NOT_FINISHED = "job_not_finished"
    JOB_HAS_NO_VIDEO = "job_has_no_video"
    CANCELLED = "cancelled"
    OUTPUT_DELETED = "output_deleted"
    FILE_TOO_LARGE = "file_too_large"
    FIELD_TOO_LARGE = "field_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNSUPPORTED_FORMAT = "unsupported_format"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    # 422
    INVALID_REQUEST = "invalid_request"
    INVALID_IMAGE = "invalid_image"
    UNKNOWN_MODEL = "unknown_model"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    TOO_MANY_PARTS = "too_many_parts"
    EMPTY_FILE = "empty_file"
    FILE_UNREADABLE = "file_unreadable"
    IMAGE_TRUNCATED = "image_truncated"
    IMAGE_CORRUPT = "image_corrupt"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_SMALL = "image_too_small"
    BAD_ASPECT_RATIO = "bad_aspect_ratio"
    ANIMATED_NOT_SUPPORTED = "animated_not_supported"
    # 429, 5xx
    QUEUE_FULL = "queue_full"
    INTERNAL_ERROR = "internal_error"
    SHUTTING_DOWN = "shutting_down"
    MODEL_UNAVAILABLE = "model_unavailable"
    DATABASE_BUSY = "database_busy"
    DATABASE_FULL = "database_full"
    DATABASE_UNAVAILABLE = "database_unavailable"
    DATABASE_CONFLICT = "database_conflict"
    DATABASE_ERROR = "database_error"
    DATABASE_DRIVER_MISSING = "database_driver_missing"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    DISK_FULL = "disk_full"
    CANNOT_FIT = "cannot_fit"
    OOM = "oom"
    BAD_OUTPUT = "bad_output"
    NAN_OUTPUT = "nan_output"
    OUTPUT_WRITE_FAILED = "output_write_failed"
    MISSING_EXTRA = "missing_extra"
    RAY_MISSING = "ray_missing"
    RAY_UNAVAILABLE = "ray_unavailable"
    # read by the CLI and in /health rather than answered, listed so that one enum holds every code
    NO_METADATA = "no_metadata"
    WORKER_STARTING = "worker_starting"
    WORKER_DOWN = "worker_down"
    STATUS_STALE = "status_stale"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorBody(_Out):
    code: ErrorCode = Field(description="Stable machine-readable code (docs/api.md lists them).")
    message: str = Field(description="Human message naming the field, the value and the rule.")
    field: str | None = Field(default=None, description="The request field at fault, when there is one.")


class ErrorResponse(_Out):
    """Every 4xx/5xx answer of the API has this shape (never a traceback)."""

    error: ErrorBody


def wire_model(
    source: type,
    name: str,
    doc: str,
    *,
    types: dict[str, Any] | None = None,
    exclude: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> type[BaseModel]:
    """A pydantic model with the fields of the dataclass ``source`` (names, types, defaults): ``types``
    replaces a field's type (an enum for a str, say), ``exclude`` drops fields, ``extra`` adds some."""
    hints = typing.get_type_hints(source)
    fields: dict[str, Any] = {}
    for f in dataclass_fields(source):
        if f.name in exclude:
            continue
        default = ... if f.default is MISSING and f.default_factory is MISSING else f.default
        if f.default_factory is not MISSING:
            default = Field(default_factory=f.default_factory)
        fields[f.name] = ((types or {}).get(f.name, hints[f.name]), default)
    fields.update(extra or {})
    model: type[BaseModel] = create_model(name, __base__=_Out, __doc__=doc, **fields)
    return model


if TYPE_CHECKING:  # classes built from dataclasses below; mypy sees only their names

    class ResolvedRequestOut(BaseModel): ...

    class LimitsOut(BaseModel): ...

    class DefaultsOut(BaseModel): ...

    class DeviceBudgetOut(BaseModel): ...

    class PhaseEstimateOut(BaseModel): ...

    class MemoryPlanOut(BaseModel): ...

    class InterpolationPlanOut(BaseModel): ...


class ExpertsOut(_Out):
    """A two-expert model's split of the steps (engine/request.py ``_expert_note``)."""

    high_noise: str = Field(description="The component that denoises the high-noise steps (transformer).")
    low_noise: str = Field(description="The component that denoises the low-noise steps (transformer_2).")
    boundary_ratio: float
    high_noise_steps: int
    low_noise_steps: int
    switch_after_step: int | None = Field(description="The last high-noise step; null: no switch.")


if TYPE_CHECKING:

    class LoraOut(BaseModel): ...

    class GgufOut(BaseModel): ...

else:
    # A file's place on the server is not part of an answer: ``reference`` names it (docs/api.md).
    LoraOut = wire_model(
        ResolvedLora,
        "LoraOut",
        "A LoRA as it ran: its reference, the hub revision, the file's sha256 and size, strength, expert.",
        types={"source": Literal["file", "hub"], "expert": LoraExpert},
        exclude=("path",),
    )
    GgufOut = wire_model(
        GgufWeights,
        "GgufOut",
        "A GGUF transformer file as it ran: its reference, the hub revision, sha256, size, quantization.",
        types={"source": Literal["file", "hub"]},
        exclude=("path",),
    )
    ResolvedRequestOut = wire_model(
        ResolvedRequest,
        "ResolvedRequestOut",
        "A request with every default filled in: exactly what runs (engine/request.py's ResolvedRequest).",
        types={
            **{name: enum | None for name, enum in CHOICE_ENUMS.items()},
            "loras": list[LoraOut],
            "experts": ExpertsOut | None,
            "transformer_gguf": GgufOut | None,
            "transformer_2_gguf": GgufOut | None,
        },
    )
    LimitsOut = wire_model(
        Limits,
        "LimitsOut",
        "Every bound a request must keep for one model: frames (num_frames = frame_step x k + 1), size "
        "(size_multiple and why, min_side, max_side, max_pixels), steps, guidance, fps, prompt length, and "
        "whether it takes a prompt.",
    )
    DefaultsOut = wire_model(Defaults, "DefaultsOut", "What a request gets for each field it leaves out.")
    DeviceBudgetOut = wire_model(
        DeviceBudget, "DeviceBudgetOut", "The memory a job may use on this device (bytes), measured now."
    )
    PhaseEstimateOut = wire_model(PhaseEstimate, "PhaseEstimateOut", "Predicted peak of one phase, in GiB.")


class HostEstimateOut(_Out):
    """Predicted peak host memory of a plan, in GiB (memory/host.py; memory/types.py HostEstimate)."""

    peak_gib: float = Field(description="The most host memory the job holds at once (runtime included).")
    peak_stage: Literal["load", "place", "run"]
    runtime_gib: float = Field(description="The process before any weight (assumed).")
    load_gib: float = Field(description="Every component loaded into host memory, before placement.")
    place_gib: float = Field(description="While the plan is applied (pinned copies beside the loaded ones).")
    run_gib: float = Field(description="Weights the placement keeps in host memory while the job runs.")
    pinned_gib: float = Field(description="Of those, page-locked (group offload with CUDA streams).")
    video_gib: float = Field(description="The decoded video.")


class MemoryEstimateOut(_Out):
    """Predicted peaks per phase and the expected speed of a plan (memory/types.py MemoryEstimate.to_dict)."""

    peak_reserved_gib: float
    peak_allocated_gib: float
    peak_phase: Literal["encode", "denoise", "decode"]
    encode: PhaseEstimateOut
    denoise: PhaseEstimateOut
    decode: PhaseEstimateOut
    expandable_segments: bool
    s_per_step_h100: float = Field(description="Expected seconds per denoising step on an H100.")
    expected_slowdown: float = Field(description="Expected time relative to the fastest (resident) plan.")
    expected_total_s_h100: float = Field(
        default=0.0, description="Expected seconds of this request (its steps, an expert switch) on an H100."
    )
    expert_switch_s: float = Field(default=0.0, description="Two experts: loading the low-noise one.")
    switch_after_step: int | None = Field(default=None, description="Two experts: the last high-noise step.")
    lora_gib: float = Field(default=0.0, description="LoRA weights counted in the denoise phase.")
    experts: str | None = Field(default=None, description="Two experts: where they live.")
    host: HostEstimateOut | None = Field(default=None, description="Host memory (RAM) the plan needs.")


if not TYPE_CHECKING:
    MemoryPlanOut = wire_model(
        MemoryPlan,
        "MemoryPlanOut",
        "How a request runs: placement, dtype and the memory savers (memory/types.py MemoryPlan).",
        types={"placement": Placement, "group_offload_type": GroupOffloadType | None},
        exclude=("estimate",),
        extra={
            "approximate": (bool, Field(default=False, description="True when the plan changes the math.")),
            # to_dict writes {} for "no estimate"
            "estimate": (Annotated[MemoryEstimateOut | None, BeforeValidator(lambda v: v or None)], None),
        },
    )
    InterpolationPlanOut = wire_model(
        InterpolationPlan,
        "InterpolationPlanOut",
        "How the interpolation phase runs: where, in what precision, how many in-between frames at once.",
        types={"interpolator": CHOICE_ENUMS["interpolator"]},  # the request field's enum: one component
    )


class DowngradeOut(_Out):
    """One recovery from out-of-memory: the plan that failed, the one that took over, where it resumed."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", description="The plan rung that ran out of memory.")
    to: str = Field(description="The cheaper rung that took over.")
    phase: str = Field(description="encode, denoise or decode.")
    resumed_at_step: int
    error: str = Field(description="The out-of-memory message, shortened.")


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
    downgrades: list[DowngradeOut] = Field(default_factory=list, description="OOM recoveries, one each.")
    timings: dict[str, float] = Field(default_factory=dict)


class JobErrorOut(_Out):
    """Why a job failed or was cancelled. ``code`` is a string, not the ErrorCode enum: a job keeps the code
    of the version that ran it (e.g. cancelled, model_unavailable, oom, internal_error)."""

    code: str = Field(description="Stable machine-readable code, e.g. cancelled, model_unavailable, oom.")
    message: str
    field: str | None = Field(default=None, description="Always null: kept for the shape of ErrorBody.")


class JobOut(_Out):
    """One job as the API shows it."""

    id: str = Field(description="The job's UUID.")
    status: JobStatus
    model: str | None
    batch_id: str | None = Field(default=None, description="The batch it belongs to (POST /batches), if any.")
    request: ResolvedRequestOut | None = Field(
        description="The request as stored: every field resolved, the seed drawn (null for a job stored by a "
        "version before 0.2, which kept the fields as given)."
    )
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int
    cancel_requested: bool
    queue_position: int | None = Field(default=None, description="1 = next to run; null unless queued.")
    queue_wait_s: float | None = Field(
        default=None,
        description="Seconds until it starts, at most about: the jobs ahead shared among the ready workers, "
        "each as long as this one is expected to take; null unless queued and measured.",
    )
    progress: ProgressOut | None = None
    plan: MemoryPlanOut | None = Field(default=None, description="The memory plan in use (see POST /plan).")
    error: JobErrorOut | None = Field(default=None, description="Why the job failed or was cancelled.")
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
    defaults: DefaultsOut
    limits: LimitsOut
    rules: list[str] = Field(description="The same rules in words, as the UI shows them.")
    fast: str | None = Field(
        default=None,
        description="The model's fast choice (a step-distilled LoRA, APPROXIMATE) as the UI labels it; "
        "null: none (the request field `fast` is refused).",
    )
    two_experts: bool = Field(default=False, description="Takes `guidance_scale_2` (Wan 2.2 A14B).")
    accepts_last_image: bool = Field(default=False, description="Takes the file part `last_image`.")


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
    worker_id: str | None = Field(default=None, description="The id its jobs record (``worker_id``).")
    node: str | None = Field(default=None, description="The machine (or Ray node) it runs on.")
    gpu: str | None = Field(
        default=None, description="The GPU it is pinned to (CUDA_VISIBLE_DEVICES entry); null: its device."
    )


class ModelReadinessOut(_Out):
    name: str = Field(description="The server's default model.")
    available: bool = Field(description="Its files are on this machine (checked on disk; nothing loaded).")
    detail: str = Field(description="Where the files are, or what is missing and what jobs will do.")


class HealthProblem(_Out):
    code: ErrorCode = Field(
        description="The code POST /jobs would answer now (shutting_down, a database_* code, queue_full, "
        "insufficient_storage), or worker_starting, worker_down or status_stale."
    )
    message: str


class HealthOut(_Out):
    ok: bool = Field(
        description="True when the API accepts jobs and its worker is ready to run them (or disabled); "
        "`problems` says why not."
    )
    problems: list[HealthProblem] = Field(
        default_factory=list, description="Why `ok` is false, most important first; empty when ok."
    )
    version: str
    accepting_jobs: bool = Field(
        description="Whether POST /jobs would admit a job now (the same check it runs)."
    )
    queue_depth: int | None = Field(description="Queued jobs; null if the database did not answer.")
    max_queue_size: int
    worker: WorkerOut = Field(
        description="All workers in one: running when any takes jobs (with one worker: that worker)."
    )
    workers: list[WorkerOut] = Field(
        default_factory=list,
        description="Every worker (one per GPU; Ray actors across machines): node, GPU, state, current job.",
    )
    ready_workers: int = Field(default=0, description="Workers taking jobs now; queue waits are shared.")
    free_disk_mb: float | None = Field(description="Free space on the data disk, in MiB.")
    status_age_s: float = Field(
        description="Seconds since queue_depth, free_disk_mb and worker were measured: they are re-measured "
        "every second in the background, so this answer never waits on the database or the disk."
    )
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
    budget: DeviceBudgetOut | None = Field(default=None, description="The device budget measured now.")
    plan: MemoryPlanOut | None = Field(default=None, description="The chosen plan and its estimates.")
    interpolation: InterpolationPlanOut | None = Field(
        default=None, description="The interpolation phase's plan, when the request asks for interpolation."
    )
    expected_time_s: float | None = Field(
        default=None,
        description="Expected seconds for the whole job on this machine, learned from its earlier jobs of "
        "the same model; null until one has run.",
    )
    expected_time_basis: str | None = Field(default=None, description="What the expected time rests on.")


class BatchLinks(_Out):
    self: str
    cancel: str


if TYPE_CHECKING:

    class BatchCounts(BaseModel): ...

else:
    BatchCounts = create_model(
        "BatchCounts",
        __base__=_Out,
        __doc__="Jobs of a batch per status.",
        **{status.value: (int, 0) for status in JobStatus},
    )


class BatchOut(_Out):
    """One batch: its jobs in submission order and how many are in each status."""

    id: str
    jobs: list[JobOut]
    counts: BatchCounts = Field(description="How many of its jobs are in each status.")
    links: BatchLinks


class JobEventOut(_Out):
    """One server-sent event of ``GET /jobs/{id}/events``, as an SSE client parses it from the stream."""

    event: Literal["job", "done"] = Field(
        description="job: the job changed (status, progress, queue position); done: it is terminal, and the "
        "stream ends after this event."
    )
    id: str = Field(pattern=r"^[0-9]+$", description="1, 2, 3... in the order sent.")
    data: str = Field(
        description="The job as JSON (schema JobOut).",
        json_schema_extra={"contentMediaType": "application/json"},
    )
    retry: int | None = Field(
        default=None, description="Reconnection delay in milliseconds (sent once, before the first event)."
    )


def job_event_schema() -> dict[str, Any]:
    """``JobEventOut``'s JSON Schema with ``data`` linked to the ``JobOut`` component (pydantic cannot emit a
    reference to a schema outside the model, so it is added here)."""
    schema = JobEventOut.model_json_schema()
    schema["properties"]["data"]["contentSchema"] = {"$ref": "#/components/schemas/JobOut"}
    return schema
