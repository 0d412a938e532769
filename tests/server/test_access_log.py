"""The terminal of `stillmotion serve` keeps what a user did, not every poll (server/run.py, ``UserActions``).

uvicorn's access records are judged as it writes them: (client, method, path, HTTP version, status).
"""

from __future__ import annotations

import logging

import pytest

from stillmotion.server.run import UserActions

JOB = "/api/v1/jobs/0b6f3c1e-8a51-4a47-9d44-2f5d1b7c9a10"


@pytest.mark.parametrize(
    ("method", "path", "status", "kept"),
    [
        ("POST", "/api/v1/jobs", 201, True),  # a submission
        ("POST", f"{JOB}/cancel", 200, True),
        ("DELETE", JOB, 204, True),
        ("GET", f"{JOB}/video", 200, True),  # a download
        ("GET", "/", 200, True),  # the UI opened
        ("POST", "/api/v1/jobs", 422, True),  # every refusal
        ("GET", JOB, 404, True),
        ("GET", "/api/v1/health", 200, False),  # health checks
        ("GET", JOB, 200, False),  # polling a job, the list, a batch, an event stream
        ("GET", "/api/v1/jobs?status=queued", 200, False),
        ("GET", f"{JOB}/events", 200, False),
        ("GET", "/api/v1/batches/0b6f3c1e-8a51-4a47-9d44-2f5d1b7c9a10", 200, False),
        ("POST", "/gradio_api/queue/join", 200, False),  # the UI's own traffic: timers, plans, uploads
        ("GET", "/gradio_api/queue/data?session_hash=x", 200, False),
        ("GET", "/gradio_api/heartbeat/abc", 200, False),
        ("GET", "/assets/index-DphvyggB.js", 200, False),
        ("GET", "/static/fonts/x.woff2", 200, False),
        ("GET", "/theme.css?v=0", 200, False),
    ],
)  # fmt: skip
def test_the_access_log_keeps_user_actions_and_refusals(
    method: str, path: str, status: int, kept: bool
) -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", method, path, "1.1", status), None,
    )  # fmt: skip
    assert UserActions().filter(record) is kept
    other = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "something else", None, None)
    assert UserActions().filter(other)  # a record of another shape is never dropped
