"""``create_app(settings)``: the FastAPI service, the REST API under /api/v1 and the Gradio UI at /.

Four objects, built here and nowhere else: settings, the job store, the job service (the one submission
path, shared by API and UI; its status monitor feeds /health) and the worker pool (jobs/workers/pools.py:
local worker processes, or Ray actors; started in the lifespan, stopped gracefully: new jobs get 503, the
running ones finish or are re-queued). The lifespan also runs a lease reaper (jobs/workers/lease.py), so a
dead worker's job comes back within 1.25 leases even while every worker is busy.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount, compile_path

from stillmotion import __version__
from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.workers.lease import LeaseReaper
from stillmotion.jobs.workers.local_pool import WorkerPool
from stillmotion.jobs.workers.pools import make_pool
from stillmotion.server.errors import ApiError, register_error_handlers
from stillmotion.server.routes import batches, health, jobs, models
from stillmotion.server.security import OriginGuard, is_loopback, require_token
from stillmotion.service.job_service import API_PREFIX, JobService

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0
# Every method a client may send to an /api path that has no route for it (answered 404 or 405 as JSON).
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "QUERY")


def create_app(settings: Settings, *, start_worker: bool = True) -> FastAPI:
    """Build the app; ``start_worker=False`` serves the API and UI over the store without running jobs."""
    # Gradio reads these at import: no usage analytics, no version check, nothing leaves the machine.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from stillmotion.webui.app import build_ui, ui_theme

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Opened here rather than in the lifespan because the UI is built (and mounted) around it.
    store = JobStore.open(settings)
    service = JobService(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # for begin_shutdown
        pool: WorkerPool | None = None
        if start_worker:
            pool = await run_in_threadpool(make_pool, settings, store)
            requeued = await run_in_threadpool(pool.recover_interrupted)
            if requeued:
                logger.warning("%d interrupted job(s) re-queued at start-up", len(requeued))
            await run_in_threadpool(pool.start)
        app.state.workers = pool
        await run_in_threadpool(service.status.watch_workers, None if pool is None else pool.statuses)
        await run_in_threadpool(service.status.start)
        reaper = LeaseReaper(store).start()
        logger.info("stillmotion %s serving data dir %s", __version__, settings.data_dir)
        try:
            yield
        finally:
            service.accepting = False  # F4: from here on, submissions get 503
            reaper.stop()
            if pool is not None:
                await run_in_threadpool(pool.stop, SHUTDOWN_GRACE_S)
            service.status.stop()
            store.close()

    app = FastAPI(
        title="stillmotion",
        version=__version__,
        summary="Image-to-video (I2VGen-XL), planned to fit your GPU, over a durable job queue.",
        lifespan=lifespan,
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        description='REST API of stillmotion. Every error answers `{"error": {"code", "message", '
        '"field"}}` (schema ErrorResponse); docs/api.md lists the codes.',
    )
    app.state.settings = settings
    app.state.store = store
    app.state.service = service
    app.state.workers = None
    register_error_handlers(app)

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(health.router)
    # Without a token the routes are open, and the OpenAPI document says so: it declares the bearer scheme
    # only where the server really asks for it (a spec that demands a header the server ignores is wrong).
    protected = APIRouter(dependencies=[Depends(require_token)] if settings.api_token else [])
    protected.include_router(jobs.router)
    protected.include_router(batches.router)
    protected.include_router(models.router)
    api.include_router(protected)
    app.include_router(api)

    async def api_fallback(request: Request) -> None:
        # Keeps unknown /api paths (../, %2e%2e...) and methods away from the UI mount, which would otherwise
        # match them: a JSON 404 or 405, never a page. (Starlette answers 405 itself only when no later route
        # matches the path, and the UI mount at / matches every path.)
        allowed = _allowed_methods(request.app, request.url.path)
        if allowed:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.method[:20]} is not allowed on {request.url.path[:200]!r}; allowed: "
                f"{', '.join(allowed)}.",
                headers={"Allow": ", ".join(allowed)},
            )
        raise ApiError(404, "not_found", f"No API route {request.url.path[:200]!r}; see /openapi.json.")

    for path in ("/api", "/api/{rest:path}"):
        app.add_api_route(path, api_fallback, methods=list(HTTP_METHODS), include_in_schema=False)

    blocks = build_ui(service)
    token = settings.api_token
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        allowed_paths=[str(settings.jobs_dir.resolve())],
        max_file_size=int(settings.max_upload_mb * 2**20),
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        footer_links=[],
        theme=ui_theme(),
        auth=(lambda _user, password: _same(password, token)) if token else None,
        auth_message="Password: the server's STILLMOTION_API_TOKEN (any user name)." if token else None,
        show_error=True,
    )
    app.add_middleware(OriginGuard, pin_loopback_host=is_loopback(settings.host))
    # The mounted UI app: its session heartbeats end when its stop event is set (begin_shutdown).
    app.state.ui_app = next(r.app for r in app.router.routes if isinstance(r, Mount) and r.path == "")
    return app


def begin_shutdown(app_state: Any) -> None:
    """The first moment of a stop (a signal), before the server waits for open connections to close: refuse
    new jobs, and end the streams that would never close by themselves (job event streams, the UI's session
    heartbeats). Their clients reconnect to the next server. Safe to call from a signal handler and twice."""
    service: JobService = app_state.service
    service.accepting = False
    service.stopping.set()
    ui_app = getattr(app_state, "ui_app", None)
    loop = getattr(app_state, "loop", None)
    if ui_app is not None and loop is not None:
        # Gradio's own stop signal for its heartbeats (what Blocks.close sets): an asyncio.Event, so it is set
        # on the server's loop, through the one call that is safe from a signal handler.
        loop.call_soon_threadsafe(ui_app.stop_event.set)


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for ``path`` (empty when it documents no such path)."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def _same(given: str, expected: str | None) -> bool:
    import hmac

    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())
