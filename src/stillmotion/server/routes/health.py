"""``/api/v1/health``: answers fast whatever the database is doing (F11, F12); open without a token."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from stillmotion import __version__
from stillmotion.server.deps import get_service
from stillmotion.service.job_service import JobService
from stillmotion.service.schemas import HealthOut, WorkerOut

router = APIRouter(tags=["health"])

DB_TIMEOUT_S = 0.2  # a locked database shows as queue_depth=null rather than a slow health check


@router.get("/health", response_model=HealthOut, summary="Liveness, worker and queue")
async def health(request: Request, service: Annotated[JobService, Depends(get_service)]) -> HealthOut:
    try:
        depth: int | None = await asyncio.wait_for(run_in_threadpool(service.store.queue_depth), DB_TIMEOUT_S)
    except TimeoutError:
        depth = None
    worker = worker_out(getattr(request.app.state, "supervisor", None))
    ok = service.accepting and worker.status in ("running", "disabled")
    return HealthOut(
        ok=ok,
        version=__version__,
        accepting_jobs=service.accepting,
        queue_depth=depth,
        max_queue_size=service.settings.max_queue_size,
        worker=worker,
        free_disk_mb=round(service.free_disk_mb(), 1),
        default_model=service.model_readiness(),
    )


def worker_out(supervisor: Any) -> WorkerOut:
    """The supervisor's status() as the API shows it; ``disabled`` when the app runs without a worker."""
    if supervisor is None:
        return WorkerOut(status="disabled")
    info = supervisor.status()
    alive = bool(info.get("alive"))
    status: Literal["running", "starting", "down"] = (
        "down" if not alive else "running" if info.get("ready") else "starting"
    )
    return WorkerOut(
        status=status,
        pid=info.get("pid"),
        restarts=int(info.get("restarts") or 0),
        current_job_id=info.get("current_job_id"),
        device=None if info.get("device") is None else str(info.get("device")),
    )
