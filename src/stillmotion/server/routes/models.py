"""``/api/v1/models`` (the registry) and ``/api/v1/plan`` (a dry run on this device, no weights loaded)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from stillmotion.engine.request import describe_rules
from stillmotion.models.registry import list_specs
from stillmotion.server.deps import get_service
from stillmotion.server.forms import multipart_body, multipart_form, parse_fields
from stillmotion.server.routes.responses import error_responses
from stillmotion.service.job_service import JobService
from stillmotion.service.request_form import PLAN_FORM
from stillmotion.service.schemas import DefaultsOut, LimitsOut, ModelList, ModelOut, PlanOut

router = APIRouter()

ServiceDep = Annotated[JobService, Depends(get_service)]


@router.get(
    "/models",
    tags=["models"],
    response_model=ModelList,
    operation_id="listModels",
    summary="Registered models",
    responses=error_responses(401),
)
async def models(service: ServiceDep) -> ModelList:
    default = service.settings.default_model
    return ModelList(
        default_model=default,
        models=[
            ModelOut(
                name=spec.name,
                family=spec.family,
                description=spec.description,
                source=spec.source,
                tiny=spec.tiny,
                default=spec.name == default or default in spec.aliases,
                defaults=DefaultsOut(**asdict(spec.defaults)),
                limits=LimitsOut(**asdict(spec.limits)),
                rules=describe_rules(spec),
                fast=None if spec.fast is None else spec.fast.label,
                two_experts=spec.experts is not None,
                accepts_last_image=spec.accepts_last_image,
            )
            for spec in list_specs()
        ],
    )


@router.post(
    "/plan",
    tags=["plan"],
    response_model=PlanOut,
    operation_id="planJob",
    summary="Plan a request without running it",
    description="The same fields as POST /jobs, the image optional. Answers the memory plan and estimate "
    "for this server's device; when nothing fits, `fits` is false and `message` says what would.",
    responses=error_responses(400, 401, 403, 413, 415, 422, 503),
    openapi_extra=multipart_body(PLAN_FORM, description="The generation fields and, optionally, the image."),
)
async def plan(request: Request, service: ServiceDep) -> PlanOut:
    async with multipart_form(request, service) as form:
        fields = parse_fields(form, prompt_optional=True)
        size = None
        if form.file_path is not None:
            image = await run_in_threadpool(service.load_image, form.file_path)
            size = (image.width, image.height)
    return await run_in_threadpool(service.plan, fields, size)
