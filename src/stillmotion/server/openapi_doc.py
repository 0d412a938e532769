"""The OpenAPI document (``/openapi.json``) and its pages (``/api/v1/docs``), built for generated clients.

``build_openapi`` starts from FastAPI's document of the routes and adds what FastAPI cannot infer: the
multipart forms as named components (``request_form.form_schema``: plainly typed optional numbers, enums,
binary file parts, the batch's "items or variations"), the event stream's event schema, the bearer scheme on
every route but ``/health``, and the tags. Every route names its ``operationId`` itself (routes/*.py), so
generated methods are ``submitJob``, ``getBatch``..., and ``tests/server/test_openapi.py`` holds the document
to all of it. The docs page is Swagger UI served from the ``fastapi-offline`` package's copy of its assets:
it renders with no network.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse

from stillmotion import __version__
from stillmotion.service.batch import BATCH_FORM
from stillmotion.service.request_form import JOB_FORM, PLAN_FORM, GenerationFields, form_schema
from stillmotion.service.schemas import job_event_schema

BEARER = "bearerAuth"
INT32_MAX = 2**31 - 1
FORMS = (JOB_FORM, PLAN_FORM, BATCH_FORM)
TAGS = [
    {"name": "jobs", "description": "Submit a job, follow it, cancel it, download its video."},
    {"name": "batches", "description": "Several jobs from one request, followed and cancelled as a group."},
    {"name": "models", "description": "The registered models and their limits."},
    {"name": "plan", "description": "A dry run: the memory plan and the time a request would take here."},
    {"name": "health", "description": "Liveness, the worker and the queue (open without a token)."},
]
OPEN_OPERATIONS = frozenset({"getHealth"})
DESCRIPTION = (
    'REST API of stillmotion. Every error answers `{"error": {"code", "message", "field"}}` (schema '
    "ErrorResponse, codes in ErrorCode; docs/api.md lists them). With `STILLMOTION_API_TOKEN` set, every "
    "route but `/health` needs `Authorization: Bearer <token>`. Generated clients: examples/java/ and "
    "examples/python-client/."
)
# The Swagger UI assets shipped by the fastapi-offline package, served under the docs page.
ASSETS = resources.files("fastapi_offline") / "static"
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}


def build_openapi(app: FastAPI, *, token_required: bool) -> dict[str, Any]:
    """The whole document (cached on the app, as FastAPI caches its own)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title="stillmotion",
        version=__version__,
        summary="Image-to-video, planned to fit your GPU, over a durable job queue.",
        description=DESCRIPTION,
        routes=app.routes,
        tags=TAGS,
        separate_input_output_schemas=False,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    fields = GenerationFields.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(fields.pop("$defs", {}))
    schemas["GenerationFields"] = fields
    for form in FORMS:
        schemas[form.name] = form_schema(form)
    schemas["JobEvent"] = job_event_schema()
    doc["components"]["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "The server's STILLMOTION_API_TOKEN; required when the server has one.",
        }
    }
    # With a token every route but health needs it; without one the scheme is still declared (a generated
    # client can send it), and an empty requirement says a request without it is accepted too.
    requirement: list[dict[str, list[str]]] = [{BEARER: []}] if token_required else [{BEARER: []}, {}]
    for item in doc["paths"].values():
        for operation in item.values():
            if operation.get("operationId") in OPEN_OPERATIONS:
                operation.pop("security", None)
            else:
                operation["security"] = requirement
    _mark_int64(doc)
    app.openapi_schema = doc
    return doc


def _mark_int64(node: object) -> None:
    """``format: int64`` on every integer that may pass 2^31 - 1 (a seed, a byte count, any unbounded count):
    generators map a plain integer to a 32-bit type (Java's Integer), which a 32-bit seed overflows."""
    if isinstance(node, dict):
        if (
            node.get("type") == "integer"
            and "format" not in node
            and node.get("maximum", INT32_MAX + 1) > INT32_MAX
        ):
            node["format"] = "int64"
        for value in node.values():
            _mark_int64(value)
    elif isinstance(node, list):
        for value in node:
            _mark_int64(value)


def docs_page(openapi_url: str, assets_url: str) -> HTMLResponse:
    """Swagger UI over ``openapi_url`` with its assets from ``assets_url`` (this server, never a CDN)."""
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title="stillmotion API",
        swagger_js_url=f"{assets_url}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets_url}/swagger-ui.css",
        swagger_favicon_url=f"{assets_url}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": False, "displayOperationId": True},
    )


def asset(name: str) -> tuple[bytes, str] | None:
    """One Swagger UI asset and its media type, or None for a name that is not one."""
    media_type = ASSET_TYPES.get(name)
    if media_type is None:
        return None
    return (ASSETS / name).read_bytes(), media_type
