"""Issue 14.17: an ordinary input error (empty prompt, no image, a bad header) is one log line with its code,
at INFO (or WARNING for the service's own state); tracebacks are kept for real faults."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from stillmotion.service.job_service import JobService
from stillmotion.webui.app import build_ui
from tests.server.helpers import png_bytes, small_job_fields


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("stillmotion")]


@pytest.mark.parametrize(
    ("files", "data", "headers", "status", "code"),
    [
        pytest.param(True, {"prompt": ""}, {}, 422, "invalid_request", id="empty-prompt"),
        pytest.param(False, {}, {}, 422, "invalid_request", id="no-image"),
        pytest.param(True, {"num_frames": "+8"}, {}, 422, "invalid_request", id="lenient-number"),
        pytest.param(True, {}, {"Origin": "http://[::1"}, 400, "malformed_header", id="bad-origin"),
        pytest.param(True, {}, {"Origin": "http://evil.example"}, 403, "forbidden_origin", id="cross-origin"),
    ],
)
def test_api_input_errors_are_one_info_line_without_traceback(
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
    files: bool,
    data: dict[str, str],
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    response = client.post(
        "/api/v1/jobs",
        files={"image": ("a.png", png_bytes(), "image/png")} if files else None,
        data=small_job_fields(**data),
        headers=headers,
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    records = _ours(caplog)
    assert [r.levelno for r in records] == [logging.INFO], [r.getMessage() for r in records]
    assert f"-> {status} {code}" in records[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_api_refusals_for_the_services_state_are_warnings(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.app.state.service.accepting = False  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG)
    response = client.post(
        "/api/v1/jobs", files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
    )
    assert response.status_code == 503
    records = _ours(caplog)
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "shutting_down" in records[0].getMessage() and not records[0].exc_info


def _ui_handler(service: JobService, name: str) -> Any:
    blocks = build_ui(service)
    return next(f.fn for f in blocks.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_ui_input_errors_are_one_info_line_and_no_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    submit = _ui_handler(client.app.state.service, "submit")  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(gr.Error) as shown:
        submit(None)  # Generate without an image
    # Gradio prints the traceback of every gr.Error unless print_exception is off.
    assert shown.value.print_exception is False
    assert shown.value.title == "invalid_request" and "image" in shown.value.message
    records = _ours(caplog)
    assert [r.levelno for r in records] == [logging.INFO]
    assert "invalid_request" in records[0].getMessage() and not records[0].exc_info
