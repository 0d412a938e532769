"""Multipart forms for ``POST /jobs`` and ``POST /plan``: parsing into a ``GenerationRequest``, and the
OpenAPI description of the bodies (the routes read the stream themselves, so FastAPI cannot infer it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from stillmotion.engine.request import GenerationRequest, request_fields
from stillmotion.server.errors import ApiError
from stillmotion.server.upload import ParsedForm, read_multipart
from stillmotion.service.job_service import JobService
from stillmotion.service.schemas import GenerationFields, request_of

IMAGE_FIELD = "image"
LAST_IMAGE_FIELD = "last_image"  # POST /jobs: an optional second file part, the frame to end on
# Optional non-text fields sent empty (``-F seed=``) mean "not given"; text fields keep "" as a value. Only
# empty: " " is a value, and not a plain number.
_TEXT_FIELDS = frozenset(d.name for d in request_fields() if d.info.kind == "text")


def parse_fields(form: ParsedForm, *, prompt_optional: bool = False) -> GenerationRequest:
    """Turn the text parts into a request (validated by ``GenerationFields``, the form built from the field
    list); duplicates, unknown names and bad values are 422.

    ``prompt_optional`` (``POST /plan``): a missing prompt is an empty one; the plan does not use it.
    """
    values: dict[str, Any] = {"prompt": ""} if prompt_optional else {}
    for name, given in form.fields.items():
        if name == IMAGE_FIELD:
            raise ApiError(
                422,
                "invalid_request",
                "image: send the image as a file part (multipart file upload), not as a text field.",
                field=IMAGE_FIELD,
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


def multipart_body(model: type[BaseModel], *, description: str) -> dict[str, Any]:
    """``openapi_extra`` describing a multipart body with ``model``'s fields (image as a binary part)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    for name, prop in schema.get("properties", {}).items():
        # OpenAPI 3.1 multipart: a file part is a string with contentMediaType/format binary.
        if prop.get("format") == "binary" or any(
            option.get("format") == "binary" for option in prop.get("anyOf", [])
        ):
            prop.pop("anyOf", None)
            prop.update(
                {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
            )
        elif "anyOf" in prop:
            _form_optional(name, prop)
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


def _form_optional(name: str, prop: dict[str, Any]) -> None:
    """A form has no null: an optional field is left out or, if not a text field, sent empty (``parse_fields``
    reads both as "not given"). Say exactly that in place of pydantic's ``null`` branch."""
    options = [option for option in prop["anyOf"] if option.get("type") != "null"]
    takes_empty = any(
        option.get("type") == "string" and not option.keys() & {"enum", "pattern", "minLength"}
        for option in options
    )
    if name not in _TEXT_FIELDS and not takes_empty:
        options.append({"const": "", "description": "Empty: not given (the default applies)."})
    if len(options) == 1:
        prop.pop("anyOf")
        prop.update(options[0])
    else:
        prop["anyOf"] = options
