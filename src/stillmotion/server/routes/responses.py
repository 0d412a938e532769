"""The error answers a route documents: each status with the ErrorResponse schema and what it means."""

from __future__ import annotations

from typing import Any

from stillmotion.service.schemas import ErrorResponse

DESCRIPTIONS = {
    400: "Malformed body",
    401: "Missing or wrong API token",
    403: "Cross-origin request refused",
    404: "No such job or batch",
    409: "Not allowed in the job's current state",
    410: "The output file is gone",
    413: "Upload too large",
    415: "Not multipart/form-data, or not a supported image",
    416: "Range not satisfiable",
    422: "Invalid field (the error names it)",
    429: "Queue full (see Retry-After)",
    503: "Shutting down or database unavailable (see Retry-After)",
    507: "Not enough free disk",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may answer these error statuses."""
    return {code: {"model": ErrorResponse, "description": DESCRIPTIONS[code]} for code in codes}
