"""/openapi.json is accurate: a valid OpenAPI document, every route documents its answers and the error
schema, and a client driven only by the spec (paths, methods, body schema) works against the server."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from tests.server.helpers import png_bytes

pytestmark = pytest.mark.timeout(120)

EXPECTED = {
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{job_id}"),
    ("get", "/api/v1/jobs/{job_id}/events"),
    ("post", "/api/v1/jobs/{job_id}/cancel"),
    ("delete", "/api/v1/jobs/{job_id}"),
    ("get", "/api/v1/jobs/{job_id}/video"),
    ("get", "/api/v1/models"),
    ("get", "/api/v1/health"),
    ("post", "/api/v1/plan"),
    ("post", "/api/v1/batches"),
    ("get", "/api/v1/batches/{batch_id}"),
    ("post", "/api/v1/batches/{batch_id}/cancel"),
}


def _spec(client: TestClient) -> dict[str, Any]:
    spec: dict[str, Any] = client.get("/openapi.json").json()
    return spec


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_spec_is_valid_and_complete(client: TestClient) -> None:
    spec = _spec(client)
    validate(spec)
    operations = {(m, p) for p, item in spec["paths"].items() for m in item}
    assert operations == EXPECTED  # no UI routes leak in, none of ours is missing
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert ok, (method, path)
            for code in ok:
                if code != "204":
                    assert op["responses"][code].get("content"), (method, path, code)
            errors = {c: r for c, r in op["responses"].items() if c[0] in "45"}
            assert errors or path == "/api/v1/health", (method, path)
            for code, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/ErrorResponse"), (method, path, code)
    error = _resolve(spec, spec["components"]["schemas"]["ErrorResponse"])
    assert error["required"] == ["error"]


def test_multipart_body_is_documented(client: TestClient) -> None:
    spec = _spec(client)
    body = spec["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["image"]["format"] == "binary"
    # prompt is optional on the wire: models without a text encoder (svd-xt) take none; the server requires it
    # for the models that do (tests/server/test_families_api.py).
    assert set(body["required"]) == {"image"}
    assert body["additionalProperties"] is False
    for name in (
        "prompt",
        "negative_prompt",
        "model",
        "resolution",
        "height",
        "width",
        "num_frames",
        "num_inference_steps",
        "guidance_scale",
        "fps",
        "seed",
    ):
        assert name in body["properties"], name


def _example(schema: dict[str, Any], name: str) -> str | None:
    examples = {
        "prompt": "a slow pan",
        "height": "64",
        "width": "64",
        "num_frames": "8",
        "num_inference_steps": "2",
        "model": "tiny-i2vgen-xl",
    }
    return examples.get(name)


def test_a_client_driven_by_the_spec_works(client: TestClient) -> None:
    """Build every request from the spec alone (as a generated client would) and check the answers."""
    spec = _spec(client)
    submit = spec["paths"]["/api/v1/jobs"]["post"]
    schema = submit["requestBody"]["content"]["multipart/form-data"]["schema"]
    data, files = {}, {}
    for name, prop in schema["properties"].items():
        if prop.get("format") == "binary":
            files[name] = ("photo.png", png_bytes(), "image/png")
        elif (value := _example(prop, name)) is not None:
            data[name] = value
    response = client.post("/api/v1/jobs", data=data, files=files)
    assert str(response.status_code) in submit["responses"]
    job = response.json()
    job_schema = _resolve(spec, submit["responses"]["202"]["content"]["application/json"]["schema"])
    assert set(job) == set(job_schema["properties"])
    assert set(job_schema["required"]) <= set(job)
    for method, path in sorted(EXPECTED):
        if method != "get" or path.endswith("/events") or ("{job_id}" not in path and path != "/api/v1/jobs"):
            continue  # (the event stream of a queued job runs until it ends: test_api_jobs covers it)
        url = path.replace("{job_id}", job["id"])
        answer = client.get(url)
        assert str(answer.status_code) in spec["paths"][path]["get"]["responses"], (url, answer.status_code)
    for path in ("/api/v1/models", "/api/v1/health"):
        op = spec["paths"][path]["get"]
        answer = client.get(path)
        schema = _resolve(spec, op["responses"]["200"]["content"]["application/json"]["schema"])
        assert set(schema["required"]) <= set(answer.json()), path
