"""Safe defaults (RELIABILITY 0.6, B30): bearer token, same-origin writes, Host pinning, bind refusal."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stillmotion.config import Settings
from stillmotion.server.app import create_app
from stillmotion.server.run import EXIT_REFUSED, check_bind, serve
from tests.server.helpers import REPO_ROOT, make_settings, png_bytes, small_job_fields

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def token_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", api_token=TOKEN)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as c:
        yield c


def test_b30_missing_wrong_and_query_tokens_are_401(token_client: TestClient) -> None:
    for headers, params in (
        ({}, {}),
        ({"Authorization": "Bearer wrong"}, {}),
        ({"Authorization": f"Basic {TOKEN}"}, {}),
        ({}, {"token": TOKEN}),
        ({}, {"access_token": TOKEN}),
        ({"Authorization": f"Bearer {TOKEN}"}, {"token": TOKEN}),
    ):
        response = token_client.get("/api/v1/jobs", headers=headers, params=params)
        assert response.status_code == 401, (headers, params)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    response = token_client.post(
        "/api/v1/jobs", files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
    )
    assert response.status_code == 401
    assert token_client.app.state.store.list()[1] == 0  # type: ignore[attr-defined]


def test_b30_right_token_works_and_health_stays_open(token_client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert token_client.get("/api/v1/jobs", headers=auth).status_code == 200
    assert (
        token_client.post(
            "/api/v1/jobs",
            files={"image": ("a.png", png_bytes(), "image/png")},
            data=small_job_fields(),
            headers=auth,
        ).status_code
        == 202
    )
    assert token_client.get("/api/v1/health").status_code == 200


def test_b30_token_compare_is_constant_time() -> None:
    source = (REPO_ROOT / "src/stillmotion/server/security.py").read_text()
    assert "hmac.compare_digest" in source and "== expected" not in source


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page.html"},
    ],
)
def test_cross_origin_writes_are_403(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/jobs",
        files={"image": ("a.png", png_bytes(), "image/png")},
        data=small_job_fields(),
        headers=headers,
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_origin"
    job = client.post(
        "/api/v1/jobs", files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
    ).json()["id"]
    assert client.post(f"/api/v1/jobs/{job}/cancel", headers=headers).status_code == 403
    assert client.delete(f"/api/v1/jobs/{job}", headers=headers).status_code == 403
    assert client.app.state.store.list()[1] == 1  # type: ignore[attr-defined]
    # Gradio's own endpoints are covered too.
    assert client.post("/gradio_api/queue/join", json={}, headers=headers).status_code == 403


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Host": "127.0.0.1:abc"}, "Host"),
        ({"Host": "127.0.0.1:99999"}, "Host"),
        ({"Host": "[::1"}, "Host"),
        ({"Host": "evil.example@127.0.0.1:7860"}, "Host"),
        ({"Host": "127.0.0.1:7860/path"}, "Host"),
        ({"Origin": "http://[::1"}, "Origin"),
        ({"Origin": "http://127.0.0.1:7860x"}, "Origin"),
        ({"Origin": "http://127.0.0.1:0"}, "Origin"),
        ({"Referer": "http://127.0.0.1:7871.evil/"}, "Referer"),
        ({"Referer": "http://127.0.0.1:99999/"}, "Referer"),
    ],
)
def test_malformed_host_origin_or_referer_is_400_never_500(
    client: TestClient, headers: dict[str, str], field: str
) -> None:
    for method in ("GET", "POST"):
        response = client.request(method, "/api/v1/jobs", headers=headers)
        if field != "Host" and method == "GET":
            assert response.status_code == 200  # reads are not checked against the origin
            continue
        assert response.status_code == 400, (method, headers, response.text)
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("malformed_header", field)
        assert list(headers.values())[0][:40] in error["message"]
    assert client.app.state.store.list()[1] == 0  # type: ignore[attr-defined]


def test_origin_scheme_must_match_and_repeated_headers_are_refused(client: TestClient) -> None:
    files = {"image": ("a.png", png_bytes(), "image/png")}
    https = client.post(
        "/api/v1/jobs", files=files, data=small_job_fields(), headers={"Origin": "https://127.0.0.1:7860"}
    )
    assert https.status_code == 403 and https.json()["error"]["code"] == "forbidden_origin"
    assert "scheme" in https.json()["error"]["message"]
    for name in ("Origin", "Referer", "Host"):
        twice = [(name, "http://127.0.0.1:7860" if name != "Host" else "127.0.0.1:7860")] * 2
        response = client.post("/api/v1/jobs", files=files, data=small_job_fields(), headers=twice)
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == "malformed_header" and "more than once" in error["message"]
    assert client.app.state.store.list()[1] == 0  # type: ignore[attr-defined]
    ipv6 = client.get("/api/v1/health", headers={"Host": "[::1]:7860"})
    assert ipv6.status_code == 200


def test_same_origin_and_headerless_writes_pass(client: TestClient) -> None:
    for headers in ({"Origin": "http://127.0.0.1:7860"}, {"Referer": "http://127.0.0.1:7860/"}, {}):
        response = client.post(
            "/api/v1/jobs",
            files={"image": ("a.png", png_bytes(), "image/png")},
            data=small_job_fields(),
            headers=headers,
        )
        assert response.status_code == 202, (headers, response.text)


def test_no_cors_headers(client: TestClient) -> None:
    response = client.options(
        "/api/v1/jobs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers
    response = client.get("/api/v1/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_dns_rebinding_host_is_refused_on_loopback(settings: Settings) -> None:
    with TestClient(create_app(settings, start_worker=False), base_url="http://evil.example:7860") as c:
        assert c.get("/api/v1/health").status_code == 403
        assert c.get("/").status_code == 403
    with TestClient(create_app(settings, start_worker=False), base_url="http://localhost:7860") as c:
        assert c.get("/api/v1/health").status_code == 200


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", host="0.0.0.0")
    assert check_bind(settings) is not None and "STILLMOTION_API_TOKEN" in (check_bind(settings) or "")
    assert serve(settings) == EXIT_REFUSED
    assert check_bind(make_settings(tmp_path / "data", host="0.0.0.0", api_token=TOKEN)) is None
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert check_bind(make_settings(tmp_path / "data", host=host)) is None


def test_non_loopback_bind_refused_as_a_process(tmp_path: Path) -> None:
    env = {"STILLMOTION_HOST": "0.0.0.0", "STILLMOTION_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stillmotion.server.run"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "STILLMOTION_API_TOKEN" in proc.stderr
    assert time.monotonic() - started < 60


def test_ui_requires_the_token_when_one_is_set(token_client: TestClient) -> None:
    assert token_client.get("/config").status_code == 401
    assert token_client.post("/login", data={"username": "me", "password": "wrong"}).status_code == 400
    assert token_client.post("/login", data={"username": "me", "password": TOKEN}).status_code == 200
    assert token_client.get("/config").status_code == 200
