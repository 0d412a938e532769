"""The one place where errors become HTTP answers: ``{"error": {"code", "message", "field"}}``.

Routes raise ``StillmotionError`` subclasses (or ``ApiError`` for HTTP-only cases) and never catch
``Exception``; ``register_error_handlers`` maps them here. Database driver errors never get this far: the
store translates them (jobs/store/db.py), e.g. an unreachable database is 503 ``database_unavailable``.
4xx is a client fault, 5xx never carries a traceback (it is logged with a short reference instead).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from stillmotion.errors import StillmotionError, UnknownModel
from stillmotion.service.validation import validation_message

logger = logging.getLogger(__name__)

RETRY_AFTER_STORAGE_S = 5

# UnknownModel is 404 in errors.py (for the CLI); over HTTP the model is always a field of the request
# body, so the API answers 422 like every other bad field (docs/api.md says so).
_STATUS_OVERRIDES: dict[type[StillmotionError], int] = {UnknownModel: 422}


class ApiError(StillmotionError):
    """An HTTP-only failure (auth, size, media type, queue full...) with its status and optional headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, field=field, http_status=status)
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error answer (also used by middleware, which runs outside the exception handlers)."""
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# Refusals that say the service is full or busy, not that the client erred: worth a WARNING, not a traceback.
_SERVICE_STATE_STATUSES = frozenset({429, 503, 507})


def log_refusal(method: str, path: str, status: int, code: str, message: str) -> None:
    """One line per expected error, with its code: INFO for a client's mistake, WARNING for the service's
    state (queue full, shutting down, disk full), ERROR for another 5xx. Never a traceback: these are
    answers, not faults (faults go through ``on_unexpected``)."""
    if status in _SERVICE_STATE_STATUSES:
        level = logging.WARNING
    else:
        level = logging.INFO if status < 500 else logging.ERROR
    logger.log(level, "%s %s -> %d %s: %s", method, path[:200], status, code, message)


def register_error_handlers(app: FastAPI) -> None:
    """Install the handlers; call once in ``create_app``."""

    async def on_stillmotion(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StillmotionError)
        status = _STATUS_OVERRIDES.get(type(exc), exc.http_status)
        headers = dict(exc.headers) if isinstance(exc, ApiError) else {}
        if exc.retry_after_s is not None:
            headers.setdefault("Retry-After", str(exc.retry_after_s))
        if status in (429, 503):
            headers.setdefault("Retry-After", str(RETRY_AFTER_STORAGE_S))
        log_refusal(request.method, request.url.path, status, exc.code, exc.message)
        return error_response(status, exc.code, exc.message, exc.field, headers)

    async def on_request_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError | ValidationError)
        message, field = validation_message(list(exc.errors()))
        log_refusal(request.method, request.url.path, 422, "invalid_request", message)
        return error_response(422, "invalid_request", message, field)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        log_refusal(request.method, request.url.path, exc.status_code, code, str(exc.detail))
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        logger.error("unhandled error ref=%s on %s %s", ref, request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", f"Internal error (reference {ref}); see the server log.")

    app.add_exception_handler(StillmotionError, on_stillmotion)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(ValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
