"""/openapi.json is accurate: a valid OpenAPI document, every route documents its answers and the error
schema, and a client driven only by the spec (paths, methods, body schema) works against the server."""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from stillmotion.models.registry import RESOLUTION_PRESETS, list_specs
from stillmotion.server.app import create_app
from tests.server.helpers import REPO_ROOT, make_settings, png_bytes

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
    body = _job_body(_spec(client))
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
    schema = _job_body(spec)
    data, files = {}, {}
    for name, prop in schema["properties"].items():
        if prop.get("format") == "binary":
            if name in schema["required"]:  # an optional file (last_image) is for the models that take one
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


def _job_body(spec: dict[str, Any], path: str = "/api/v1/jobs") -> dict[str, Any]:
    """The multipart body schema of ``POST path`` (a named component: JobForm, PlanForm, BatchForm)."""
    return _resolve(
        spec, spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    )


def _value_schema(prop: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """An optional form field's schema (a $ref to an enum component resolved)."""
    assert "anyOf" not in prop, prop
    return _resolve(spec, prop) if spec is not None and "$ref" in prop else prop


def test_field_limits_in_the_spec_are_the_widest_of_the_registry(client: TestClient) -> None:
    """One place: the registry's Limits. Where models differ the spec states the widest bound."""
    limits = [spec.limits for spec in list_specs()]
    expected = {
        "height": (min(x.min_side for x in limits), max(x.max_side for x in limits)),
        "width": (min(x.min_side for x in limits), max(x.max_side for x in limits)),
        "num_frames": (min(x.min_frames for x in limits), max(x.max_frames for x in limits)),
        "num_inference_steps": (1, max(x.max_inference_steps for x in limits)),
        "guidance_scale": (
            min(x.min_guidance_scale for x in limits),
            max(x.max_guidance_scale for x in limits),
        ),
        "fps": (min(x.min_fps for x in limits), max(x.max_fps for x in limits)),
        "seed": (0, 2**32 - 1),
    }
    spec = _spec(client)
    body = _job_body(spec)
    for name, (low, high) in expected.items():
        schema = _value_schema(body["properties"][name])
        assert (schema["minimum"], schema["maximum"]) == (low, high), name
    multiple = math.gcd(*(x.size_multiple for x in limits))
    assert _value_schema(body["properties"]["height"])["multipleOf"] == multiple
    longest = max(x.max_prompt_chars for x in limits)
    assert body["properties"]["prompt"]["maxLength"] == longest
    assert "prompt" not in body.get("required", [])  # svd-xt takes none; the others are checked by the server
    assert _value_schema(body["properties"]["negative_prompt"])["maxLength"] == longest
    assert _value_schema(body["properties"]["resolution"], spec)["enum"] == list(RESOLUTION_PRESETS)


# Which Limits field of a model stands behind each bound of the spec (None: the same for every model).
BOUND_SOURCES: dict[str, tuple[str | None, str | None]] = {
    "height": ("min_side", "max_side"),
    "width": ("min_side", "max_side"),
    "num_frames": ("min_frames", "max_frames"),
    "num_inference_steps": (None, "max_inference_steps"),
    "guidance_scale": ("min_guidance_scale", "max_guidance_scale"),
    "fps": ("min_fps", "max_fps"),
    "seed": (None, None),
}


def _plan(client: TestClient, model: dict[str, Any], field: str, value: Any) -> Any:
    """POST /plan for ``model`` with ``field=value`` (a size field gets the model's smallest other side)."""
    data = {"model": model["name"], field: str(value)}  # no prompt: a plan needs none, and svd-xt takes none
    other = {"height": "width", "width": "height"}.get(field)
    if other is not None:
        data[other] = str(model["limits"]["min_side"])
    return client.post("/api/v1/plan", data=data)


def test_every_bound_in_the_spec_is_the_one_the_server_enforces(client: TestClient) -> None:
    """Read each bound from /openapi.json: at the bound a model that has it accepts the value; one step past
    it the server refuses it naming the field, whatever the model."""
    spec = _spec(client)
    body = _job_body(spec)
    models = client.get("/api/v1/models").json()["models"]
    checked = 0
    for name, (low_source, high_source) in BOUND_SOURCES.items():
        schema = _value_schema(body["properties"][name])
        step = schema.get("multipleOf", 1) if schema["type"] == "integer" else 0.5
        for bound, source, past in (
            (schema["minimum"], low_source, schema["minimum"] - step),
            (schema["maximum"], high_source, schema["maximum"] + step),
        ):
            model = next(m for m in models if source is None or m["limits"][source] == bound)
            inside = _plan(client, model, name, bound)
            assert inside.status_code == 200, (name, bound, model["name"], inside.text)
            for any_model in models:
                outside = _plan(client, any_model, name, past)
                assert outside.status_code == 422, (name, past, any_model["name"], outside.text)
                assert outside.json()["error"]["field"] == name
            checked += 1
        if "multipleOf" in schema:
            model = next(m for m in models if m["limits"]["min_side"] == schema["minimum"])
            off = _plan(client, model, name, schema["minimum"] + schema["multipleOf"] // 2)
            assert off.status_code == 422 and off.json()["error"]["field"] == name
    assert checked == 2 * len(BOUND_SOURCES)

    longest = body["properties"]["prompt"]["maxLength"]
    pattern = re.compile(body["properties"]["prompt"]["pattern"])
    tiny = next(m for m in models if m["name"] == "tiny-i2vgen-xl")
    for prompt, fits_spec in (
        ("x" * longest, True),
        ("x" * (longest + 1), False),
        ("tab\tand\nnewline", True),
        ("bell\x07", False),
        ("c1 control \x85", False),
    ):
        assert bool(pattern.fullmatch(prompt)) == fits_spec or len(prompt) > longest
        answer = _plan(client, tiny, "prompt", prompt)
        assert (answer.status_code == 200) == fits_spec, (prompt[:20], answer.text)
        if not fits_spec:
            assert answer.json()["error"]["field"] == "prompt"


def test_event_stream_is_declared_with_the_event_shape(client: TestClient) -> None:
    spec = _spec(client)
    ok = spec["paths"]["/api/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(ok) == ["text/event-stream"]
    event = _resolve(spec, ok["text/event-stream"]["schema"])
    assert event["type"] == "object" and set(event["required"]) == {"event", "id", "data"}
    assert event["properties"]["event"]["enum"] == ["job", "done"]
    assert event["properties"]["data"]["contentSchema"]["$ref"].endswith("/JobOut")
    # The events a real stream sends match that shape.
    job = client.post(
        "/api/v1/jobs",
        files={"image": ("p.png", png_bytes(), "image/png")},
        data={"prompt": "x", "model": "tiny-i2vgen-xl", "height": "64", "width": "64"},
    ).json()
    client.post(f"/api/v1/jobs/{job['id']}/cancel")
    text = client.get(f"/api/v1/jobs/{job['id']}/events").text
    blocks = [b for b in text.split("\n\n") if "data: " in b]
    assert blocks
    for block in blocks:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        assert set(fields) <= set(event["properties"]) and set(event["required"]) <= set(fields)
        assert fields["event"] in event["properties"]["event"]["enum"]
        assert re.fullmatch(event["properties"]["id"]["pattern"], fields["id"])
        assert json.loads(fields["data"])["id"] == job["id"]
    links = spec["paths"]["/api/v1/jobs"]["post"]["responses"]["202"]["links"]
    operation_ids = {op["operationId"] for item in spec["paths"].values() for op in item.values()}
    assert {link["operationId"] for link in links.values()} <= operation_ids
    assert all(link["parameters"] == {"job_id": "$response.body#/id"} for link in links.values())


def test_methods_the_spec_does_not_list_are_405_with_allow(client: TestClient) -> None:
    spec = _spec(client)
    for method, path, allowed in (
        ("TRACE", "/api/v1/health", "GET"),
        ("PUT", "/api/v1/health", "GET"),
        ("QUERY", "/api/v1/plan", "POST"),
        ("PATCH", "/api/v1/jobs/00000000-0000-0000-0000-000000000000", "DELETE, GET"),
    ):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert response.headers["Allow"] == allowed
        template = path if path in spec["paths"] else "/api/v1/jobs/{job_id}"
        assert allowed == ", ".join(sorted(m.upper() for m in spec["paths"][template]))
    missing = client.request("TRACE", "/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_form_fields_say_what_a_form_can_send(client: TestClient) -> None:
    """A form has no null: optional fields are left out (the default applies). Each is one plain type, as a
    generator needs (no number-or-empty-string union); the server still reads a non-text field sent empty
    as "not given" (curl's -F seed=), and a blank one is not a number."""
    spec = _spec(client)
    for path in ("/api/v1/jobs", "/api/v1/plan", "/api/v1/batches"):
        body = _job_body(spec, path)
        for name, prop in body["properties"].items():
            assert '"null"' not in json.dumps(prop) and '"const"' not in json.dumps(prop), (path, name)
            assert "anyOf" not in prop and ("type" in prop or "$ref" in prop), (path, name, prop)
    body = _job_body(spec)
    for name in ("height", "width", "num_frames", "num_inference_steps", "fps", "interpolate"):
        assert body["properties"][name]["type"] == "integer", name
    assert body["properties"]["guidance_scale"]["type"] == "number"
    assert body["properties"]["seed"]["format"] == "int64"  # 2^32 - 1 does not fit a Java Integer
    fields = {"prompt": "x", "model": "tiny-i2vgen-xl", "height": "64", "width": "64"}
    assert client.post("/api/v1/plan", data={**fields, "seed": ""}).status_code == 200
    blank = client.post("/api/v1/plan", data={**fields, "seed": " "})
    assert blank.status_code == 422 and blank.json()["error"]["field"] == "seed"


# -- a contract generators can use (issue 23) ---------------------------------------------------------------


def _walk(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_every_operation_is_named_tagged_and_secured(client: TestClient) -> None:
    spec = _spec(client)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    tags = {tag["name"] for tag in spec["tags"]}
    names = set()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert re.fullmatch(r"[a-z]+[A-Za-z]*", op["operationId"]), (method, path, op["operationId"])
            names.add(op["operationId"])
            assert len(op["tags"]) == 1 and op["tags"][0] in tags, (method, path, op["tags"])
            if op["operationId"] == "getHealth":
                assert "security" not in op
            else:  # no token on this server: the scheme is declared, and an empty requirement allows none
                assert op["security"] == [{"bearerAuth": []}, {}], (method, path)
    assert len(names) == len(EXPECTED)
    assert {"submitBatch", "getBatch", "cancelBatch", "planJob"} <= names
    assert spec["paths"]["/api/v1/plan"]["post"]["tags"] == ["plan"]


def test_with_a_token_every_route_but_health_requires_the_bearer_scheme(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", api_token="token-for-the-spec-0123456789")
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as c:
        spec = c.get("/openapi.json", headers={"Authorization": f"Bearer {settings.api_token}"}).json()
    for item in spec["paths"].values():
        for op in item.values():
            assert op.get("security") == (None if op["operationId"] == "getHealth" else [{"bearerAuth": []}])


def test_bodies_are_named_typed_schemas_and_closed_sets_are_enums(client: TestClient) -> None:
    spec = _spec(client)
    schemas = spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for code, response in op["responses"].items():
                for media, content in response.get("content", {}).items():
                    schema = content["schema"]
                    if media.startswith(("video/", "image/")):
                        assert schema == {"type": "string", "format": "binary"}, (method, path, code)
                    else:  # JSON bodies and the event stream: a named component
                        assert set(schema) == {"$ref"}, (method, path, code, media)
    # No untyped maps anywhere: every object lists its properties, or says what its values are.
    for name, schema in schemas.items():
        for node in _walk(schema):
            if node.get("type") == "object":
                typed = node.get("properties") or isinstance(node.get("additionalProperties"), dict)
                assert typed, (name, node)
            assert node.get("additionalProperties") not in (True, {}), (name, node)
    job = schemas["JobOut"]["properties"]
    assert job["status"] == {"$ref": "#/components/schemas/JobStatus"}
    assert "batch_id" in job
    for field, component in (("request", "ResolvedRequestOut"), ("plan", "MemoryPlanOut")):
        assert {"$ref": f"#/components/schemas/{component}"} in job[field]["anyOf"], field
    assert schemas["ErrorBody"]["properties"]["code"]["$ref"] == "#/components/schemas/ErrorCode"
    for enum, values in (
        ("JobStatus", ["queued", "running", "succeeded", "failed", "cancelled"]),
        ("Resolution", list(RESOLUTION_PRESETS)),
        ("Interpolator", ["minterpolate", "rife"]),
    ):
        assert schemas[enum]["enum"] == values, enum
    assert _job_body(spec)["properties"]["resolution"]["$ref"] == "#/components/schemas/Resolution"
    model = schemas["ModelOut"]["properties"]
    assert (model["limits"], model["defaults"]) == (
        {"$ref": "#/components/schemas/LimitsOut"},
        {"$ref": "#/components/schemas/DefaultsOut"},
    )


def test_the_batch_form_says_items_or_variations(client: TestClient) -> None:
    """oneOf: a schema-valid batch has exactly one of them, and the server takes each alone."""
    body = _job_body(_spec(client), "/api/v1/batches")
    assert body["oneOf"] == [{"required": ["items"]}, {"required": ["variations"]}]
    assert body["properties"]["items"]["contentMediaType"] == "application/json"
    image = {"image": ("p.png", png_bytes(), "image/png")}
    fields = {"prompt": "x", "model": "tiny-i2vgen-xl", "height": "64", "width": "64"}
    for extra, status in (
        ({"variations": "2"}, 202),
        ({"items": '[{"seed": 1}]'}, 202),
        ({"variations": "2", "items": '[{"seed": 1}]'}, 422),
    ):
        assert client.post("/api/v1/batches", data={**fields, **extra}, files=image).status_code == status


def _raised_codes() -> set[str]:
    """Every error code literal in the source: ``code=`` arguments and class attributes, the code after a
    status in a call or tuple (``ApiError(422, "x", ...)``), and the values of status-to-code tables."""
    codes: set[str] = set()

    def is_status(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, int) and 400 <= node.value < 600

    def text(node: ast.AST) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    for path in (REPO_ROOT / "src" / "stillmotion").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg in ("code", "error_code"):
                codes.add(text(node.value) or "")
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "code" for t in node.targets
            ):
                codes.add(text(node.value) or "")
            elif isinstance(node, ast.Call | ast.Tuple):
                items = node.args if isinstance(node, ast.Call) else node.elts
                codes |= {text(b) or "" for a, b in zip(items, items[1:], strict=False) if is_status(a)}
            elif (
                isinstance(node, ast.Dict)
                and node.keys
                and all(k is not None and is_status(k) for k in node.keys)
            ):
                codes |= {text(v) or "" for v in node.values}
    return {code for code in codes if re.fullmatch(r"[a-z]+(_[a-z]+)*", code)}


def test_every_error_code_the_source_raises_is_in_the_enum(client: TestClient) -> None:
    """A code missing from ErrorCode would make a generated client fail to read that error."""
    enum = set(_spec(client)["components"]["schemas"]["ErrorCode"]["enum"])
    raised = _raised_codes()
    assert {"invalid_request", "queue_full", "unknown_model", "malformed_header", "not_found"} <= raised
    assert raised - enum == set()
