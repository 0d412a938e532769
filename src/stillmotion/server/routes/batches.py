"""``/api/v1/batches``: one request, several jobs (seeds, prompts, ...), followed and cancelled as a group.

Each job of a batch is an ordinary job (``/jobs/{id}``: its own row, progress, video); the batch adds the
all-or-nothing submission and the group view and cancel. Routes are thin, as in routes/jobs.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.requests import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stillmotion.server.deps import get_service
from stillmotion.server.errors import ApiError
from stillmotion.server.forms import IMAGE_FIELD, multipart_body, multipart_form, parse_fields
from stillmotion.server.routes.jobs import _errors
from stillmotion.server.upload import ParsedForm
from stillmotion.service.batch import parse_items, variation_items
from stillmotion.service.job_service import JobService
from stillmotion.service.schemas import BatchForm, BatchOut

router = APIRouter(prefix="/batches", tags=["batches"])

ServiceDep = Annotated[JobService, Depends(get_service)]
BatchId = Annotated[str, Path(description="The batch's UUID.")]
BATCH_FIELDS = ("items", "variations")


@router.post(
    "",
    status_code=202,
    response_model=BatchOut,
    summary="Submit a batch of jobs",
    description="Multipart upload: the file part `image`, the generation fields every job shares, and either "
    "`items` (a JSON array, one object of differing fields per job) or `variations` (N jobs that differ in "
    "the seed). All or nothing: every job is validated before any is stored, and all rows are committed in "
    "one transaction before the answer.",
    responses=_errors(400, 401, 403, 413, 415, 422, 429, 503, 507),
    openapi_extra=multipart_body(BatchForm, description="The image, the shared fields and the per-job ones."),
)
async def submit_batch(request: Request, service: ServiceDep) -> JSONResponse:
    await run_in_threadpool(service.check_admission)
    async with multipart_form(request, service) as form:
        items = _batch_items(form)
        shared = ParsedForm(fields={k: v for k, v in form.fields.items() if k not in BATCH_FIELDS})
        fields = parse_fields(shared, prompt_optional=True)  # the entries may each bring their prompt
        if items is None:
            items = variation_items(_one_int(form, "variations"), fields.seed)
        if form.file_path is None:
            raise ApiError(
                422, "invalid_request", "image: the file part 'image' is missing.", field=IMAGE_FIELD
            )
        batch_id, jobs = await run_in_threadpool(service.submit_batch, fields, items, form.file_path)
    out = await run_in_threadpool(service.batch_out, batch_id, jobs)
    return JSONResponse(out.model_dump(mode="json"), status_code=202, headers={"Location": out.links.self})


@router.get("/{batch_id}", response_model=BatchOut, summary="One batch", responses=_errors(401, 404, 422))
async def get_batch(batch_id: BatchId, service: ServiceDep) -> BatchOut:
    def read() -> BatchOut:
        jobs = service.batch(batch_id)
        return service.batch_out(jobs[0].batch_id or batch_id, jobs)

    return await run_in_threadpool(read)


@router.post(
    "/{batch_id}/cancel",
    response_model=BatchOut,
    summary="Cancel a batch",
    description="Every job of the batch that has not finished is cancelled, as by `POST /jobs/{id}/cancel`; "
    "finished jobs keep their videos.",
    responses=_errors(401, 403, 404, 422),
)
async def cancel_batch(batch_id: BatchId, service: ServiceDep) -> BatchOut:
    def cancel() -> BatchOut:
        jobs = service.cancel_batch(batch_id)
        return service.batch_out(jobs[0].batch_id or batch_id, jobs)

    return await run_in_threadpool(cancel)


def _batch_items(form: ParsedForm) -> list[dict[str, object]] | None:
    given = [name for name in BATCH_FIELDS if form.fields.get(name)]
    if len(given) == 2:
        raise ApiError(422, "invalid_request", "items and variations given; one or the other.", field="items")
    if "items" in given:
        return parse_items(_one(form, "items"))
    if "variations" not in given:
        raise ApiError(
            422, "invalid_request", "items or variations: say what differs between the jobs.", field="items"
        )
    return None


def _one(form: ParsedForm, name: str) -> str:
    values = form.fields[name]
    if len(values) > 1:
        raise ApiError(
            422, "invalid_request", f"{name}: given {len(values)} times; give it once.", field=name
        )
    return values[0]


def _one_int(form: ParsedForm, name: str) -> int:
    text = _one(form, name).strip()
    if not text.lstrip("-").isdigit():
        raise ApiError(422, "invalid_request", f"{name}={text[:40]!r} must be a whole number.", field=name)
    return int(text)
