"""The few error types a user can see, each with a stable code.

Every surface maps them in one place: the CLI to an exit code, the REST API to an HTTP status and a JSON
body ``{"error": {"code", "message", "field"}}``, the web UI to a visible message. Messages name the field,
the value and the rule, and never carry a traceback.
"""

from __future__ import annotations

from typing import Any


class StillmotionError(Exception):
    """Base for errors we expect and can explain to a user."""

    code: str = "internal_error"
    http_status: int = 500
    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        http_status: int | None = None,
        details: dict[str, Any] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s  # when retrying later may succeed (HTTP Retry-After)
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the API, the CLI's --json and job rows."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.details:
            out["details"] = self.details
        return out


class ServiceRefused(StillmotionError):
    """The job service refuses a request for a reason of its own state (shutting down, queue full, low disk,
    a job without a video); ``code`` and ``http_status`` say which, ``retry_after_s`` when to try again."""

    def __init__(
        self,
        http_status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(
            message, code=code, field=field, http_status=http_status, retry_after_s=retry_after_s
        )


class InvalidRequest(StillmotionError):
    """A generation parameter breaks a rule (field, value and rule are in the message)."""

    code = "invalid_request"
    http_status = 422
    exit_code = 2


class InvalidImage(InvalidRequest):
    """The input image cannot be used; ``code`` says why (empty_file, unsupported_format, ...)."""

    code = "invalid_image"


class UnknownModel(InvalidRequest):
    """The model name is neither registered, a local folder, nor a Hugging Face repo id."""

    code = "unknown_model"
    http_status = 404


class ModelUnavailable(StillmotionError):
    """The model exists but its weights cannot be had here (offline, missing files, corrupt)."""

    code = "model_unavailable"
    http_status = 503


# How a user picks another model, where the error is shown: the stored error message is the same for every
# surface (the worker writes it once); each surface adds its own line.
MODEL_CHOICE_ADVICE = {
    "cli": "Pass a downloaded folder with --model /path/to/folder, or try --model tiny-i2vgen-xl "
    "(built in, no download; its videos are noise).",
    "ui": "Choose a model from the Model list that is here already (tiny-i2vgen-xl needs no download), "
    "or type the path of a downloaded folder in the Model field.",
}


def advice(exc_code: str | None, surface: str) -> str:
    """The surface's own next step for an error code, or '' (only model_unavailable has one today)."""
    return MODEL_CHOICE_ADVICE.get(surface, "") if exc_code == ModelUnavailable.code else ""


class CannotFit(StillmotionError):
    """No plan fits the memory budget; the message says what would fit."""

    code = "cannot_fit"
    http_status = 507
    exit_code = 3


class OutOfMemory(StillmotionError):
    """Out of memory after every cheaper plan was tried."""

    code = "oom"
    http_status = 507
    exit_code = 3


class Cancelled(StillmotionError):
    """The user cancelled; nothing was written."""

    code = "cancelled"
    http_status = 409
    exit_code = 130


class BadOutput(StillmotionError):
    """The generated frames are unusable (NaN or infinite values)."""

    code = "bad_output"


class OutputWriteFailed(StillmotionError):
    """The video could not be written (``disk_full`` when the disk is full); no partial file remains."""

    code = "output_write_failed"


class JobNotFound(StillmotionError):
    """No job with that id."""

    code = "job_not_found"
    http_status = 404
    exit_code = 2


class InvalidTransition(StillmotionError):
    """A job state change that the state machine forbids (e.g. cancelling a finished job)."""

    code = "invalid_transition"
    http_status = 409
    exit_code = 2
