"""``/api/v1/health``: answered from memory, whatever the database, the disk or the thread pool are doing.

Everything it reports was measured by the service's background monitor (``service/live_status.py``) or the
model-readiness check, so it never waits on a query, a statfs or a GPU call (F11, F12, issue 15.9). Open
without a token. ``accepting_jobs`` is the admission rule of POST /jobs applied to the same figures.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request

from stillmotion import __version__
from stillmotion.server.deps import get_service
from stillmotion.service.job_service import JobService
from stillmotion.service.live_status import refusal
from stillmotion.service.schemas import HealthOut, HealthProblem, WorkerOut

router = APIRouter(tags=["health"])

STALE_STATUS_S = 30.0  # figures this old mean the monitor is stuck: say so rather than look healthy


@router.get(
    "/health", response_model=HealthOut, operation_id="getHealth", summary="Liveness, worker and queue"
)
async def health(request: Request, service: Annotated[JobService, Depends(get_service)]) -> HealthOut:
    status = service.status.latest()
    supervised = getattr(request.app.state, "workers", None) is not None
    workers = [worker_out(info, supervised=supervised) for info in status.workers or ()]
    worker = all_workers(workers, supervised=supervised)
    problems = []
    refused = refusal(service.settings, status, accepting=service.accepting)
    if refused is not None:
        problems.append(HealthProblem(code=refused.code, message=refused.message))
    if worker.status == "starting":
        problems.append(
            HealthProblem(code="worker_starting", message="The worker is starting; queued jobs wait for it.")
        )
    elif worker.status == "down":
        problems.append(HealthProblem(code="worker_down", message=_down_message(status.workers or [])))
    down = [w.worker_id or "?" for w in workers if w.status == "down"]
    if worker.status == "running" and down:
        problems.append(
            HealthProblem(
                code="worker_down",
                message=f"{len(down)} of {len(workers)} workers are down ({', '.join(down)}); the others "
                "run the queue.",
            )
        )
    if status.age_s > STALE_STATUS_S:
        problems.append(
            HealthProblem(
                code="status_stale",
                message=f"These figures were measured {status.age_s:.0f} s ago; the status monitor is stuck.",
            )
        )
    return HealthOut(
        ok=not problems,
        problems=problems,
        version=__version__,
        accepting_jobs=refused is None,
        queue_depth=status.queue_depth,
        max_queue_size=service.settings.max_queue_size,
        worker=worker,
        workers=workers,
        ready_workers=status.ready_workers,
        free_disk_mb=None if status.free_disk_mb is None else round(status.free_disk_mb, 1),
        status_age_s=round(status.age_s, 3),
        default_model=service.model_readiness(),
    )


def _down_message(infos: list[dict[str, Any]]) -> str:
    """Why no worker runs, promising a restart only where something will do one (a supervisor that is not
    stopping; Ray restarts a lost actor only once a GPU is free for it)."""
    if not infos:
        return "The worker's state could not be read; the error is in the server log."
    if all(info.get("restarting") for info in infos):
        return "The worker process is down and being restarted."
    reasons = sorted({str(info["down_reason"]) for info in infos if info.get("down_reason")})
    return "The workers are down" + (f": {'; '.join(reasons)}." if reasons else ".")


def all_workers(workers: list[WorkerOut], *, supervised: bool) -> WorkerOut:
    """The workers summed up: one worker as it is; several as running when any runs (else starting, else
    down), with their restarts added."""
    if not supervised:
        return WorkerOut(status="disabled")
    if not workers:  # not measured (the error is logged): an unknown worker is not a ready one
        return WorkerOut(status="down")
    if len(workers) == 1:
        return workers[0]
    states = {w.status for w in workers}
    status: Literal["running", "starting", "down"] = (
        "running" if "running" in states else "starting" if "starting" in states else "down"
    )
    return WorkerOut(status=status, restarts=sum(w.restarts for w in workers))


def worker_out(info: dict[str, Any] | None, *, supervised: bool) -> WorkerOut:
    """One worker's status (``WorkerPool.statuses``) as the API shows it; ``disabled`` without workers."""
    if not supervised:
        return WorkerOut(status="disabled")
    if info is None:  # not measured (the error is logged): an unknown worker is not a ready one
        return WorkerOut(status="down")
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
        worker_id=info.get("worker_id"),
        node=info.get("node"),
        gpu=None if info.get("gpu") is None else str(info.get("gpu")),
    )
