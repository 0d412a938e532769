"""``/api/v1/jobs``: submit, list, inspect, follow (server-sent events), cancel, delete, download.

Routes are thin: parse, call ``JobService`` (never the store) in a thread pool (SQLite and files block),
return a schema. Errors are raised, never caught here; ``server/errors.py`` maps them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from stillmotion.errors import JobNotFound
from stillmotion.server.deps import get_service
from stillmotion.server.errors import ApiError
from stillmotion.server.forms import (
    IMAGE_FIELD,
    LAST_IMAGE_FIELD,
    multipart_body,
    multipart_form,
    parse_fields,
)
from stillmotion.service.job_service import (
    MAX_LIST_LIMIT,
    TERMINAL,
    DatabaseUnavailable,
    JobService,
    JobStatus,
)
from stillmotion.service.schemas import (
    ErrorResponse,
    JobForm,
    JobList,
    JobOut,
    JobStatusName,
    job_event_schema,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])

SSE_POLL_S = 0.5  # how often a stream re-reads its job (one indexed SELECT); steps take longer
SSE_KEEPALIVE_S = 15.0

ServiceDep = Annotated[JobService, Depends(get_service)]
JobId = Annotated[str, Path(description="The job's UUID.")]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed body",
        401: "Missing or wrong API token",
        403: "Cross-origin request refused",
        404: "No such job",
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
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}


# OpenAPI links from a submitted job to what can be done with it: generated clients and stateful fuzzers
# (schemathesis) follow them with the id the answer carries.
JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (
        ("GetJob", "getJob"),
        ("FollowJob", "followJob"),
        ("CancelJob", "cancelJob"),
        ("DeleteJob", "deleteJob"),
        ("GetVideo", "getJobVideo"),
    )
}


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    operation_id="submitJob",
    summary="Submit a job",
    description="Multipart upload: the file part `image` and the generation fields. The job row is committed "
    "before the answer; with the same `Idempotency-Key` a retry returns the first job (header "
    "`Idempotent-Replayed: true`) instead of creating another.",
    responses={
        202: {"description": "The job, queued", "links": JOB_LINKS},
        **_errors(400, 401, 403, 413, 415, 422, 429, 503, 507),
    },
    openapi_extra=multipart_body(JobForm, description="The image and the generation fields."),
)
async def submit_job(
    request: Request,
    service: ServiceDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=255, description="Makes retries safe.")
    ] = None,
) -> JSONResponse:
    await run_in_threadpool(service.check_admission)  # refuse before reading a 20 MB body
    async with multipart_form(request, service, last_image=True) as form:
        fields = parse_fields(form)
        if form.file_path is None:
            raise ApiError(
                422, "invalid_request", "image: the file part 'image' is missing.", field=IMAGE_FIELD
            )
        last = form.extra_files.get(LAST_IMAGE_FIELD)
        job, created = await run_in_threadpool(service.submit, fields, form.file_path, idempotency_key, last)
    out = await run_in_threadpool(service.job_out, job)
    headers = {"Location": out.links.self}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(out.model_dump(mode="json"), status_code=202, headers=headers)


@router.get(
    "",
    response_model=JobList,
    operation_id="listJobs",
    summary="List jobs, newest first",
    responses=_errors(401, 422),
)
async def list_jobs(
    service: ServiceDep,
    status: Annotated[list[JobStatusName] | None, Query(description="Filter; repeat for several.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> JobList:
    def read() -> JobList:
        statuses = [JobStatus(s) for s in status] if status else None
        jobs, total = service.list_jobs(status=statuses, limit=limit, offset=offset)
        return JobList(jobs=[service.job_out(j) for j in jobs], total=total, limit=limit, offset=offset)

    return await run_in_threadpool(read)


@router.get(
    "/{job_id}",
    response_model=JobOut,
    operation_id="getJob",
    summary="One job",
    responses=_errors(401, 404, 422),
)
async def get_job(job_id: JobId, service: ServiceDep) -> JobOut:
    return await run_in_threadpool(lambda: service.job_out(service.get(job_id)))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    operation_id="followJob",
    summary="Follow a job (server-sent events)",
    description="A `text/event-stream`: an `event: job` with the job JSON each time its status or progress "
    "changes (in order), then one `event: done` with the terminal job, and the stream ends (it also ends, "
    "without `done`, if the job is deleted meanwhile). Closing the stream never affects the job. The "
    "response schema describes one event (fields `event`, `id`, `data`, as an SSE client parses them; "
    "`data` is a JobOut as JSON), as OpenAPI 3.1 tools read event streams.",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": job_event_schema()}},
            "description": "Event stream, one event per change",
        },
        **_errors(401, 404, 422),
    },
)
async def job_events(job_id: JobId, service: ServiceDep) -> StreamingResponse:
    first = await run_in_threadpool(service.get, job_id)  # 404 before the stream starts
    return StreamingResponse(
        _event_stream(service, first.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(service: JobService, job_id: str) -> AsyncIterator[str]:
    """Emit the job on every change; a disconnect just cancels this generator (the job is untouched). A
    database outage pauses the stream (keep-alives go on) until the job can be read again."""
    yield f"retry: {int(SSE_POLL_S * 8000)}\n\n"
    last: tuple[Any, ...] | None = None
    seq = 0
    quiet_s = 0.0
    while True:
        try:
            out = await run_in_threadpool(lambda: service.job_out(service.get(job_id)))
        except JobNotFound:
            # Deleted while followed: end the stream cleanly (a reconnecting client then gets 404).
            return
        except DatabaseUnavailable:
            out = None
        terminal = out is not None and JobStatus(out.status) in TERMINAL
        if out is not None and (_stream_key(out) != last or terminal):
            seq += 1
            kind = "done" if terminal else "job"
            yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(out.model_dump(mode='json'))}\n\n"
            last = _stream_key(out)
            quiet_s = 0.0
            if terminal:
                return
        elif quiet_s >= SSE_KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_s = 0.0
        if service.stopping.is_set():
            return  # the server is stopping: the client reconnects (``retry``) to the next one
        await asyncio.sleep(SSE_POLL_S)
        quiet_s += SSE_POLL_S


def _stream_key(out: JobOut) -> tuple[Any, ...]:
    """What a client sees change: an event is sent when this does."""
    return (
        out.status,
        out.cancel_requested,
        out.queue_position,
        out.progress.model_dump() if out.progress else None,
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    operation_id="cancelJob",
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running one stops within one denoising step "
    "(`cancel_requested` is true until it does). Cancelling a cancelled job is a no-op; a finished "
    "(succeeded or failed) job answers 409.",
    responses=_errors(401, 403, 404, 409, 422),
)
async def cancel_job(job_id: JobId, service: ServiceDep) -> JobOut:
    return await run_in_threadpool(lambda: service.job_out(service.request_cancel(job_id)))


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    operation_id="deleteJob",
    summary="Delete a job and its files",
    description="A running job answers 409: cancel it first.",
    responses=_errors(401, 403, 404, 409, 422),
)
async def delete_job(job_id: JobId, service: ServiceDep) -> Response:
    await run_in_threadpool(service.delete, job_id)
    return Response(status_code=204)


@router.get(
    "/{job_id}/video",
    response_class=FileResponse,
    operation_id="getJobVideo",
    summary="Download the video",
    description="Supports HTTP Range (206; 416 for a range outside the file), so browsers can seek. "
    "409 `job_not_finished` while the job is queued or running, 409 `job_has_no_video` once it failed or "
    "was cancelled (it never will have one), 410 if the file was deleted from the data folder.",
    responses={
        200: {
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The whole video",
        },
        206: {
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The requested byte range",
        },
        **_errors(401, 404, 409, 410, 416, 422),
    },
)
async def job_video(job_id: JobId, service: ServiceDep, request: Request) -> FileResponse:
    path = await run_in_threadpool(service.video_path, job_id)
    _check_range(request.headers.get("range"), path.stat().st_size)
    media_type = {".mp4": "video/mp4", ".webp": "image/webp", ".gif": "image/gif"}.get(
        path.suffix, "video/mp4"
    )
    return FileResponse(
        path,
        media_type=media_type,
        filename=f"stillmotion-{job_id}{path.suffix}",
        content_disposition_type="inline",
        headers={"Cache-Control": "private, max-age=3600"},
    )


def _check_range(header: str | None, size: int) -> None:
    """416 as JSON for a single range starting past the end (FileResponse serves every valid range)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return
    start = header[6:].split("-", 1)[0].strip()
    if start.isdigit() and int(start) >= size:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"Range {header[:60]!r} starts past the end ({size} bytes).",
            headers={"Content-Range": f"bytes */{size}"},
        )
