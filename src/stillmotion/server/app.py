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
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount, compile_path

from stillmotion import __version__
from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.workers.lease import LeaseReaper
from stillmotion.jobs.workers.local_pool import WorkerPool
from stillmotion.jobs.workers.pools import make_pool
from stillmotion.server.errors import ApiError, register_error_handlers
from stillmotion.server.openapi_doc import asset, build_openapi, docs_page
from stillmotion.server.routes import batches, health, jobs, models
from stillmotion.server.security import (
    LoginGate,
    OriginGuard,
    is_loopback,
    require_page_token,
    require_token,
    token_problem,
)
from stillmotion.service.job_service import API_PREFIX, JobService

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0
# Every method a client may send to an /api path that has no route for it (answered 404 or 405 as JSON).
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "QUERY")


def create_app(settings: Settings, *, start_worker: bool = True) -> FastAPI:
    """Build the app; ``start_worker=False`` serves the API and UI over the store without running jobs."""
    problem = token_problem(settings)
    if problem is not None:
        raise ValueError(problem)
    # Gradio reads these at import: no usage analytics, no version check, nothing leaves the machine.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Opened here rather than in the lifespan because the UI is built (and mounted) around it.
    store = JobStore.open(settings)
    service = JobService(settings, store)
    app = FastAPI(
        title="stillmotion",
        version=__version__,
        lifespan=_lifespan(settings, store, service, start_worker=start_worker),
        # Served by routes of our own (below): behind the token like the API, assets from this server.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.service = service
    app.state.workers = None
    register_error_handlers(app)
    app.include_router(_api_router())
    app.include_router(_docs_router())
    _add_api_fallback(app)
    _mount_ui(app, service, settings)
    app.add_middleware(OriginGuard, pin_loopback_host=is_loopback(settings.host))
    if settings.api_token:
        app.add_middleware(LoginGate, token=settings.api_token)
    app.openapi = lambda: build_openapi(app, token_required=bool(settings.api_token))  # type: ignore[method-assign]
    # The mounted UI app: its session heartbeats end when its stop event is set (begin_shutdown).
    app.state.ui_app = next(r.app for r in app.router.routes if isinstance(r, Mount) and r.path == "")
    return app


def _lifespan(
    settings: Settings, store: JobStore, service: JobService, *, start_worker: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up and shutdown: the worker pool (F4: new jobs get 503 from the first moment of a stop)."""

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

    return lifespan


def _api_router() -> APIRouter:
    """/api/v1: health open, everything else behind the token (``require_token`` is a no-op without one;
    the OpenAPI document declares the bearer scheme either way: server/openapi_doc.py)."""
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(require_token)])
    protected.include_router(jobs.router)
    protected.include_router(batches.router)
    protected.include_router(models.router)
    api.include_router(protected)
    return api


def _docs_router() -> APIRouter:
    """/openapi.json, the docs page and its assets: behind the token like the API (only /health is open)."""
    router = APIRouter(dependencies=[Depends(require_page_token)], include_in_schema=False)
    assets_url = f"{API_PREFIX}/docs/assets"

    @router.get("/openapi.json")
    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get(f"{API_PREFIX}/docs")
    async def docs() -> HTMLResponse:
        return docs_page("/openapi.json", assets_url)

    @router.get(assets_url + "/{name}")
    async def docs_asset(name: str) -> Response:
        found = asset(name)
        if found is None:
            raise ApiError(404, "not_found", f"No docs asset {name[:80]!r}.")
        content, media_type = found
        return Response(content, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    return router


def _add_api_fallback(app: FastAPI) -> None:
    """Keep unknown /api paths (../, %2e%2e...) and methods away from the UI mount, which would otherwise
    match them: a JSON 404 or 405, never a page. (Starlette answers 405 itself only when no later route
    matches the path, and the UI mount at / matches every path.)"""

    async def api_fallback(request: Request) -> None:
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


def _mount_ui(app: FastAPI, service: JobService, settings: Settings) -> None:
    """The Gradio UI at /, its login the API token (any user name) when the server has one."""
    import gradio as gr

    from stillmotion.webui.app import build_ui, ui_theme

    token = settings.api_token
    gr.mount_gradio_app(
        app,
        build_ui(service),
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
