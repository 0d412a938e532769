"""Schemathesis hooks for fuzzing `stillmotion serve` (docs/api.md, "Fuzzing the API"; loaded by the
``hooks`` key of tests/fuzz/schemathesis.toml).

The job image is a ``format: binary`` part. Left to itself schemathesis sends a 1x1 sample file, which the
server rightly refuses (image_too_small), so no job would ever be created and the stateful phase would have
no job to follow. This gives it real small images instead: PNG, JPEG and WebP, 64-160 px a side.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


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
