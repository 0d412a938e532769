"""Schemathesis hooks for fuzzing `stillmotion serve` (docs/api.md, "Fuzzing the API"; loaded by the
``hooks`` key of tests/fuzz/schemathesis.toml).

The job image is a ``format: binary`` part. Left to itself schemathesis sends a 1x1 sample file, which the
server rightly refuses (image_too_small), so no job would ever be created and the stateful phase would have
no job to follow. This gives it real small images instead: PNG, JPEG and WebP, 64-160 px a side.
"""

from __future__ import annotations

import io
from typing import Any

import schemathesis
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from PIL import Image
from schemathesis.core.failures import AcceptedNegativeData, Failure


def _image(fmt: str, width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, fmt)
    return buffer.getvalue()


IMAGES = st.builds(
    _image,
    st.sampled_from(["PNG", "JPEG", "WEBP"]),
    st.integers(64, 160),
    st.integers(64, 160),
    st.tuples(*(st.integers(0, 255),) * 3),
)

schemathesis.openapi.format("binary", IMAGES)


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: object) -> bool:
    """Skip form bodies holding an empty list. Schemathesis 4.32 sends such a field as no part at all, so the
    server receives a valid request (the field absent) while the check expects a refusal: a false positive
    of negative_data_rejection (the kind fixed for query strings and url-encoded bodies in
    schemathesis#3792, not yet for multipart)."""
    return not (isinstance(body, dict) and any(value == [] for value in body.values()))


@schemathesis.hook
def filter_failure(context: schemathesis.HookContext, failure: Failure, case: Any, response: Any) -> bool:
    """Drop an "accepted negative data" failure only when the form actually sent conforms to the schema.

    Schemathesis 4.32 cannot re-validate a multipart body that holds a binary part, so it may call a request
    the schema allows schema-violating. This re-checks its claim: the text fields against their schemas (a
    non-text field sent empty is the documented "not given", as curl's ``-F seed=`` sends it), the file part
    present as bytes where required. Every other failure, and every real violation, is kept.
    """
    if not isinstance(failure, AcceptedNegativeData) or case.media_type != "multipart/form-data":
        return True
    if not isinstance(case.body, dict):
        return True
    schema = case.operation.definition.raw["requestBody"]["content"][case.media_type]["schema"]
    components = case.operation.schema.raw_schema["components"]["schemas"]
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    files = {name for name, prop in schema["properties"].items() if prop.get("format") == "binary"}
    for name in files:
        value = case.body.get(name)
        if (name in schema.get("required", []) and value is None) or not (
            value is None or hasattr(value, "data") or isinstance(value, bytes)
        ):
            return True  # a missing or non-file image is a real violation: keep it
    text_schema = {
        **schema,
        "properties": {k: v for k, v in schema["properties"].items() if k not in files},
        "required": [r for r in schema.get("required", []) if r not in files],
    }
    types = {name: prop.get("type") for name, prop in schema["properties"].items()}
    # A form sends text: a value schemathesis generated as a number arrives as that number's text, which a
    # string field takes as it is.
    text = {
        k: (
            str(v)
            if types.get(k) == "string" and isinstance(v, int | float) and not isinstance(v, bool)
            else v
        )
        for k, v in case.body.items()
        if k not in files and not (v == "" and types.get(k) != "string")
    }
    # The document's components ride along, so a field's "$ref" (an enum, say) resolves in this document.
    return not Draft202012Validator({**text_schema, "components": {"schemas": components}}).is_valid(text)
