"""The public REST contract: every body the API accepts or returns, as pydantic models.

Kept apart from ``jobs/`` so the API can stay stable while the store changes; ``job_out()`` is the one
translation from a store ``Job`` to the wire. Input models forbid unknown fields and NaN/Infinity, and take
numbers written plainly only ("16", not "+16", " 16 ", "1_6" or "16.0"). The field bounds come from the model
registry through ``field_limits.api_bounds()``: the widest over registered models, stated in the OpenAPI
document and enforced here; the rules of the one model a request names are checked by
``GenerationRequest.resolve`` (docs/api.md, "Field limits").
"""

from __future__ import annotations

import re
import typing
from dataclasses import MISSING
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from stillmotion.engine.request import DeclaredField, GenerationRequest, ResolvedRequest, request_fields
from stillmotion.service.field_limits import PROMPT_PATTERN, api_bounds

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]

_PLAIN_INT = re.compile(r"-?[0-9]+")
_PLAIN_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _plain(pattern: re.Pattern[str], kind: str, example: str) -> BeforeValidator:
    """Form values arrive as text: take only a number written plainly (pydantic's lax parsing would also
    take signs, spaces, underscores and "8.0" for an integer). Numbers (from the web UI) pass through."""

    def check(value: object) -> object:
        if isinstance(value, bool):  # True is an int to Python, never a number to a user
            raise PydanticCustomError("plain_number", f"must be {kind}, not a true/false value")
        if isinstance(value, str) and not pattern.fullmatch(value):
            raise PydanticCustomError("plain_number", f"must be {kind} written plainly, e.g. {example}")
        return value

    return BeforeValidator(check)


# Used inside Annotated with the field's bounds: bounds given to Field() on an Optional of an annotated type
# would not reach the JSON Schema.
PLAIN_INT = _plain(_PLAIN_INT, "a whole number (digits, optionally a leading minus)", "16")
PLAIN_FLOAT = _plain(_PLAIN_FLOAT, "a decimal number", "7.5")


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


_MODEL_RULES = "each model may be narrower (GET /models lists its limits)"


def _api_field(declared: DeclaredField) -> tuple[Any, Any]:
    """One request field as a form field: its type with the widest bounds over the models, and its help."""
    info, bounds = declared.info, api_bounds()[declared.name]
    description = info.help + (f" Bounds: {_MODEL_RULES}." if info.bounds is not None else "")
    if info.kind in ("int", "float"):
        constraints = Field(ge=bounds.low, le=bounds.high, multiple_of=bounds.multiple_of)
        number = (
            Annotated[int, constraints, PLAIN_INT]
            if info.kind == "int"
            else Annotated[float, constraints, PLAIN_FLOAT]
        )
        return number | None, Field(default=None, description=description)
    if info.kind == "choice":
        literal: Any = Literal
        return literal[info.choices] | None, Field(default=None, description=description)
    if info.kind == "flag":
        return bool | None, Field(default=None, description=description)
    if info.kind == "loras":  # a form field is text: the list as JSON (batch items may give the list itself)
        return str | list[Any] | None, Field(
            default=None,
            description=description
            + ' A JSON array, e.g. [{"ref": "my-style.safetensors", "strength": 0.8}].',
        )
    pattern = PROMPT_PATTERN if info.kind == "text" else None
    text = Field(
        default=declared.default, max_length=bounds.max_chars, pattern=pattern, description=description
    )
    return (str if declared.default == "" else str | None), text


# The generation fields of ``POST /jobs``, ``POST /plan`` and batches (multipart form fields, diffusers'
# names), built from the one field list (engine/request.py): everything may be left out and takes the model's
# default; give either ``resolution`` or both ``height`` and ``width``; a missing ``seed`` is drawn and stored
# with the job. Bounds are the widest over the registered models; the named model's own rules (GET /models:
# size multiple, frame rule, whether it takes a prompt) are checked by the server too.
# An image field (``last_image``) is a file part of the form, not a text field: JobForm below.
_GENERATION_FIELDS: dict[str, Any] = {
    declared.name: _api_field(declared) for declared in request_fields() if declared.info.kind != "image"
}
GenerationFields: type[BaseModel] = create_model(
    "GenerationFields",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    __doc__="The generation fields of a job (multipart form fields with diffusers' names); see the field "
    "list in engine/request.py.",
    **_GENERATION_FIELDS,
)

_IMAGE = Field(
    json_schema_extra={"format": "binary"},
    description="PNG, JPEG or WebP still image (size limited by the server; checked by content).",
)
JobForm: type[BaseModel] = create_model(
    "JobForm",
    __base__=GenerationFields,
    __doc__="Multipart body of ``POST /jobs``: the image file plus the generation fields (the prompt "
    "optional on the wire: a model without a text encoder takes none; the server requires it for the "
    "others).",
    image=(bytes, _IMAGE),
    last_image=(
        bytes | None,
        Field(
            default=None,
            json_schema_extra={"format": "binary"},
            description="Optional second file part: the frame the video ends on (PNG, JPEG or WebP), for "
            "models that take one (wan2.2-i2v-a14b); the same file as `image` makes a loop.",
        ),
    ),
)
PlanForm: type[BaseModel] = create_model(
    "PlanForm",
    __base__=GenerationFields,
    __doc__="Multipart body of ``POST /plan``: the generation fields and, optionally, the image (with it, "
    "presets keep its aspect ratio exactly as a job would). The prompt is optional here: the plan does not "
    "depend on it.",
    image=(
        bytes | None,
        Field(
            default=None,
            json_schema_extra={"format": "binary"},
            description="Optional: with it, presets keep its aspect ratio exactly as a job would.",
        ),
    ),
)
BatchForm: type[BaseModel] = create_model(
    "BatchForm",
    __base__=JobForm,
    __doc__="Multipart body of ``POST /batches``: one image, the fields all jobs share, and what differs per "
    "job.",
    items=(
        str | None,
        Field(
            default=None,
            description="A JSON array, one object per job with the fields that differ from the shared ones, "
            'e.g. [{"seed": 1}, {"seed": 2}] or [{"prompt": "waves"}, {"prompt": "rain"}] (1 to 64 entries).',
        ),
    ),
    variations=(
        int | None,
        Field(
            default=None,
            description="Instead of `items`: this many jobs that differ only in the seed (seed, seed+1, ... "
            "when `seed` is given, random seeds otherwise).",
        ),
    ),
)


def request_of(fields: BaseModel) -> GenerationRequest:
    """The engine's request from validated form fields (the one translation from the wire)."""
    return GenerationRequest(**fields.model_dump())


if TYPE_CHECKING:  # a class built from the dataclass below; mypy sees only its name

    class ResolvedRequestOut(BaseModel):
        """engine/request.py's ResolvedRequest on the wire."""

else:  # engine/request.py's ResolvedRequest on the wire
    ResolvedRequestOut = create_model(
        "ResolvedRequestOut",
        __base__=_Out,
        __doc__="A request with every default filled in: exactly what runs.",
        **{
            f.name: (hint, ... if f.default is MISSING else f.default)
            for f, hint in zip(
                dataclass_fields(ResolvedRequest),
                typing.get_type_hints(ResolvedRequest).values(),
                strict=True,
            )
        },
    )


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
    queue_wait_s: float | None = Field(
        default=None,
        description="Seconds until it starts, at most about: the jobs ahead shared among the ready workers, "
        "each as long as this one is expected to take; null unless queued and measured.",
    )
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
    code: str = Field(
        description="shutting_down, queue_full, insufficient_storage (the codes POST /jobs would answer), "
        "worker_starting, worker_down or status_stale."
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


class BatchLinks(_Out):
    self: str
    cancel: str


class BatchOut(_Out):
    """One batch: its jobs in submission order and how many are in each status."""

    id: str
    jobs: list[JobOut]
    counts: dict[str, int] = Field(description='Jobs per status, e.g. {"succeeded": 5, "cancelled": 1}.')
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
