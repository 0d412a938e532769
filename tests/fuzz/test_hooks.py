"""The fuzzing hooks must never hide a real failure: the failure filter drops an "accepted negative data"
report only when the form actually sent conforms to the schema (tests/fuzz/hooks.py)."""

from __future__ import annotations

import types
from io import BytesIO
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from PIL import Image
from schemathesis.core.failures import AcceptedNegativeData, ServerError
from schemathesis.transport.serialization import Binary

from stillmotion.server.app import create_app
from tests.fuzz.hooks import IMAGES, filter_failure
from tests.server.helpers import make_settings


def _image() -> Binary:
    image = Binary.__new__(Binary, "")
    image.data = b"\x89PNG..."
    return image


@pytest.fixture(scope="module")
def submit_case(tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = make_settings(tmp_path_factory.mktemp("fuzz") / "data")
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        spec = client.get("/openapi.json").json()
    op = types.SimpleNamespace(
        definition=types.SimpleNamespace(raw=spec["paths"]["/api/v1/jobs"]["post"]),
        schema=types.SimpleNamespace(raw_schema=spec),
    )
    return lambda body: types.SimpleNamespace(media_type="multipart/form-data", body=body, operation=op)


ACCEPTED = AcceptedNegativeData(
    operation="POST /api/v1/jobs", message="", status_code=202, expected_statuses=[]
)


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        ({"prompt": "x", "fps": "", "image": _image()}, False),  # "" is the documented "not given"
        ({"prompt": "x", "seed": 7, "image": _image()}, False),
        ({"prompt": "x", "fps": "abc", "image": _image()}, True),
        ({"prompt": "x", "fps": 0, "image": _image()}, True),
        ({"prompt": "x", "resolution": "512p", "image": _image()}, False),  # an enum, through its $ref
        ({"prompt": -1.5e308, "image": _image()}, False),  # sent as the text "-1.5e+308": a valid prompt
        ({"prompt": "x", "resolution": "513p", "image": _image()}, True),
        ({"prompt": "", "image": _image()}, False),  # optional on the wire: svd-xt takes none
        ({"prompt": "x\x00y", "image": _image()}, True),  # control character
        ({"prompt": "x"}, True),  # no image
        ({"prompt": "x", "image": "text, not a file"}, True),
        ({"prompt": "x", "image": _image(), "strength": 1}, True),
    ],
)
def test_only_requests_that_conform_are_dropped(submit_case: Any, body: dict[str, Any], kept: bool) -> None:
    assert filter_failure(None, ACCEPTED, submit_case(body), None) is kept  # type: ignore[arg-type]


def test_other_failures_are_always_kept(submit_case: Any) -> None:
    failure = ServerError(operation="POST /api/v1/jobs", status_code=500)
    case = submit_case({"prompt": "x", "image": _image()})
    assert filter_failure(None, failure, case, None) is True  # type: ignore[arg-type]


@settings(max_examples=10, deadline=None)
@given(IMAGES)
def test_generated_images_are_real_images(data: bytes) -> None:
    with Image.open(BytesIO(data)) as image:
        assert 64 <= min(image.size) and image.format in ("PNG", "JPEG", "WEBP")
