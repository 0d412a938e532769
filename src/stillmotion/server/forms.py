"""Multipart forms for ``POST /jobs`` and ``POST /plan``: parsing into a ``GenerationRequest``, and the
OpenAPI description of the bodies (the routes read the stream themselves, so FastAPI cannot infer it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request

from stillmotion.engine.request import GenerationRequest, request_fields
from stillmotion.server.errors import ApiError
from stillmotion.server.upload import ParsedForm, read_multipart
from stillmotion.service.job_service import JobService
from stillmotion.service.request_form import IMAGE_PART, LAST_IMAGE_PART, Form, GenerationFields, request_of

IMAGE_FIELD = IMAGE_PART.name
LAST_IMAGE_FIELD = LAST_IMAGE_PART.name  # POST /jobs: an optional second file part, the frame to end on
_FILE_FIELDS = frozenset({IMAGE_FIELD, LAST_IMAGE_FIELD})
# Optional non-text fields sent empty (``-F seed=``) mean "not given", as curl and HTML forms send them; text
# fields keep "" as a value. Only empty: " " is a value, and not a plain number.
_TEXT_FIELDS = frozenset(d.name for d in request_fields() if d.info.kind == "text")


def parse_fields(form: ParsedForm, *, prompt_optional: bool = False) -> GenerationRequest:
    """Turn the text parts into a request (validated by ``GenerationFields``, the form built from the field
    list); duplicates, unknown names and bad values are 422.

    ``prompt_optional`` (``POST /plan``): a missing prompt is an empty one; the plan does not use it.
    """
    values: dict[str, Any] = {"prompt": ""} if prompt_optional else {}
    for name, given in form.fields.items():
        if name in _FILE_FIELDS:
            raise ApiError(
                422,
                "invalid_request",
                f"{name}: send the image as a file part (multipart file upload), not as a text field.",
                field=name,
            )
        if len(given) > 1:
            raise ApiError(
                422, "invalid_request", f"{name}: given {len(given)} times; give it once.", field=name
            )
        value = given[0]
        if value == "" and name not in _TEXT_FIELDS and name in GenerationFields.model_fields:
            continue  # a known field sent empty; an unknown one is refused below, empty or not
        values[name] = value
    return request_of(GenerationFields.model_validate(values))


@asynccontextmanager
async def multipart_form(
    request: Request, service: JobService, *, last_image: bool = False
) -> AsyncIterator[ParsedForm]:
    """Stream the form in; its temp files are removed when the block ends, whatever happened.

    ``last_image``: the form may carry a second file part, ``last_image`` (``POST /jobs``)."""
    form = await read_multipart(
        request,
        tmp_dir=service.upload_tmp_dir,
        file_fields={IMAGE_FIELD, LAST_IMAGE_FIELD} if last_image else {IMAGE_FIELD},
        max_file_bytes=service.max_upload_bytes,
        timeout_s=service.settings.upload_timeout_s,
    )
    try:
        yield form
    finally:
        form.cleanup()


def multipart_body(form: Form, *, description: str) -> dict[str, Any]:
    """``openapi_extra`` describing a multipart body: a reference to the form's component (the document
    builder, server/openapi_doc.py, adds the component from ``request_form.form_schema``)."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{form.name}"}}},
        }
    }
