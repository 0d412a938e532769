"""RELIABILITY 3.3: every bad or hostile input gets its stated code, creates no row, leaves no file behind,
and the service stays healthy (B1-B24, B27, B32)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.server.app import create_app
from tests.server.helpers import leftovers, make_settings, png_bytes, small_job_fields

pytestmark = pytest.mark.timeout(120)

MAX_UPLOAD_MB = 1.0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, JobStore, Settings]]:
    settings = make_settings(tmp_path_factory.mktemp("bad") / "data", max_upload_mb=MAX_UPLOAD_MB)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as c:
        yield c, c.app.state.store, settings  # type: ignore[attr-defined]


def _img(mode: str, size: tuple[int, int], fmt: str = "PNG", **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt, **save)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (96, 96), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _jpeg(mode: str = "RGB") -> bytes:
    return _img(mode, (96, 96), "JPEG")


def _submit(client: TestClient, image: bytes | None = b"", filename: str = "photo.png", **fields: str) -> Any:
    data = small_job_fields()
    data.update(fields)
    files = None if image is None else {"image": (filename, image, "image/png")}
    return client.post("/api/v1/jobs", files=files, data={k: v for k, v in data.items() if v is not None})


def _assert_refused(
    env: tuple[TestClient, JobStore, Settings], response: Any, status: int, code: str, field: str | None = "-"
) -> None:
    client, store, settings = env
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    if field != "-":
        assert body["error"]["field"] == field, body
    assert store.list()[1] == 0, "a refused request created a row"
    assert leftovers(settings) == [], "a refused request left files behind"
    assert client.get("/api/v1/health").json()["ok"] is True


TRUNCATED_PNG = png_bytes(200, 200)
TRUNCATED_PNG = TRUNCATED_PNG[: len(TRUNCATED_PNG) // 2]
TRUNCATED_JPEG = _jpeg()[: len(_jpeg()) // 2]

IMAGE_CASES = [
    pytest.param(b"", 422, "empty_file", id="B1-empty"),
    pytest.param(b"PK\x03\x04" + b"\0" * 200, 415, "unsupported_format", id="B2-zip"),
    pytest.param(
        b"<!doctype html><html><script>alert(1)</script></html>", 415, "unsupported_format", id="B2-html"
    ),
    pytest.param(b"MZ\x90\x00" + b"\0" * 200, 415, "unsupported_format", id="B2-exe"),
    pytest.param(TRUNCATED_PNG, 422, "image_truncated", id="B3-png-half"),
    pytest.param(TRUNCATED_JPEG, 422, "image_truncated", id="B3-jpeg-half"),
    pytest.param(_bomb_png(20000, 20000), 422, "image_too_large", id="B4-bomb-header"),
    pytest.param(_img("1", (8000, 8000)), 422, "image_too_large", id="B5-8000px"),
    pytest.param(_img("RGB", (1, 1)), 422, "image_too_small", id="B6-1x1"),
    pytest.param(_img("RGB", (8, 8)), 422, "image_too_small", id="B6-8x8"),
    pytest.param(_img("1", (10000, 16)), 422, "bad_aspect_ratio", id="B7-10000x16"),
    pytest.param(_img("RGB", (1000, 100)), 422, "bad_aspect_ratio", id="B7-10to1"),
    pytest.param(_animated("PNG"), 422, "animated_not_supported", id="B11-apng"),
    pytest.param(_animated("WEBP"), 422, "animated_not_supported", id="B11-webp"),
    pytest.param(_animated("GIF"), 415, "unsupported_format", id="B11-gif"),
]


@pytest.mark.parametrize(("image", "status", "code"), IMAGE_CASES)
def test_bad_images_are_refused_without_a_row(env: Any, image: bytes, status: int, code: str) -> None:
    _assert_refused(env, _submit(env[0], image), status, code, field="image")


GOOD_IMAGE_CASES = [
    pytest.param(_jpeg("CMYK"), id="B8-cmyk-jpeg"),
    pytest.param(_img("RGBA", (96, 96)), id="B10-rgba"),
    pytest.param(_img("LA", (96, 96)), id="B10-la"),
    pytest.param(_img("P", (96, 96), transparency=0), id="B10-palette-trns"),
    pytest.param(_img("RGB", (96, 96), "JPEG", exif=b"Exif\x00\x00" + b"\xff" * 65000), id="B13-huge-exif"),
]


@pytest.mark.parametrize("image", GOOD_IMAGE_CASES)
def test_unusual_but_valid_images_are_accepted(env: Any, image: bytes) -> None:
    client, store, _ = env
    response = _submit(client, image)
    assert response.status_code in (202, 422), response.text  # B13 may be refused, never a 500
    if response.status_code == 202:
        store.delete(response.json()["id"])


def test_b15_upload_over_limit_is_413(env: Any) -> None:
    big = png_bytes() + b"\0" * int(3 * MAX_UPLOAD_MB * 2**20)
    _assert_refused(env, _submit(env[0], big), 413, "file_too_large", field="image")


@pytest.mark.parametrize(
    ("files", "status", "code", "field"),
    [
        pytest.param(None, 422, "invalid_request", "image", id="B16-no-file"),
        pytest.param(
            [("image", ("a.png", png_bytes(), "image/png")), ("image", ("b.png", png_bytes(), "image/png"))],
            422,
            "invalid_request",
            "image",
            id="B16-two-files",
        ),
        pytest.param(
            {"file": ("a.png", png_bytes(), "image/png")}, 422, "invalid_request", "file", id="B16-wrong-name"
        ),
    ],
)
def test_b16_file_parts(env: Any, files: Any, status: int, code: str, field: str) -> None:
    response = env[0].post("/api/v1/jobs", files=files, data=small_job_fields())
    _assert_refused(env, response, status, code, field=field)


@pytest.mark.parametrize(
    "filename",
    ["../../etc/passwd.png", "/etc/passwd.png", "a\x00b.png", "x" * 10_000 + ".png", "evil\u202egnp.exe"],
    ids=["dotdot", "absolute", "nul", "10k-chars", "rtl-override"],
)
def test_b17_client_filenames_are_ignored(env: Any, filename: str) -> None:
    client, store, settings = env
    response = _submit(client, png_bytes(), filename=filename)
    assert response.status_code == 202, response.text
    job = store.get(response.json()["id"])
    assert job.input_filename == "input.png"
    assert sorted(p.name for p in store.job_dir(job.id).iterdir()) == ["input.png"]
    store.delete(job.id)
    assert leftovers(settings) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"prompt": ""}, "prompt", id="B18-empty"),
        pytest.param({"prompt": "   \t "}, "prompt", id="B18-whitespace"),
        pytest.param({"prompt": "x" * 100_000}, "prompt", id="B18-100k"),
        pytest.param({"prompt": "hello\x00world"}, "prompt", id="B18-nul"),
        pytest.param({"prompt": "bell\x07"}, "prompt", id="B18-control"),
        pytest.param({"negative_prompt": "esc\x1b[31m"}, "negative_prompt", id="B18-negative-control"),
        pytest.param({"num_inference_steps": "-1"}, "num_inference_steps", id="B19-steps-neg"),
        pytest.param({"num_inference_steps": "0"}, "num_inference_steps", id="B19-steps-0"),
        pytest.param({"num_inference_steps": "1000000000"}, "num_inference_steps", id="B19-steps-1e9"),
        pytest.param({"guidance_scale": "NaN"}, "guidance_scale", id="B19-guidance-nan"),
        pytest.param({"guidance_scale": "Infinity"}, "guidance_scale", id="B19-guidance-inf"),
        pytest.param({"guidance_scale": "-5"}, "guidance_scale", id="B19-guidance-neg"),
        pytest.param({"num_frames": "2"}, "num_frames", id="B20-frames-low"),
        pytest.param({"num_frames": "1000"}, "num_frames", id="B20-frames-high"),
        pytest.param({"fps": "0"}, "fps", id="B20-fps-0"),
        pytest.param({"fps": "1000"}, "fps", id="B20-fps-high"),
        pytest.param({"width": "65"}, "width", id="B20-width-not-multiple"),
        pytest.param({"height": "99999"}, "height", id="B20-height-huge"),
        pytest.param({"resolution": "4k", "height": "", "width": ""}, "resolution", id="B20-bad-preset"),
        pytest.param({"seed": "-1"}, "seed", id="B21-seed-neg"),
        pytest.param({"seed": str(2**64)}, "seed", id="B21-seed-2^64"),
        pytest.param({"seed": "1.5"}, "seed", id="B21-seed-float"),
        pytest.param({"seed": "abc"}, "seed", id="B21-seed-abc"),
        pytest.param({"seed": "true"}, "seed", id="B21-seed-bool"),
        pytest.param({"model": "no such model!"}, "model", id="unknown-model"),
        pytest.param({"model": "0" * 1000}, "model", id="model-name-longer-than-a-file-name"),
        pytest.param({"strength": "0.5"}, "strength", id="B22-unknown-field"),
        pytest.param({"strength": ""}, "strength", id="B22-unknown-field-sent-empty"),
    ],
)
def test_bad_fields_are_422_naming_the_field(env: Any, fields: dict[str, str], field: str) -> None:
    response = _submit(env[0], png_bytes(), **fields)
    code = "unknown_model" if field == "model" else "invalid_request"
    _assert_refused(env, response, 422, code, field=field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_frames", "+8"),
        ("num_frames", " 8 "),
        ("num_frames", "1_6"),
        ("num_frames", "8.0"),
        ("num_inference_steps", "2e0"),
        ("fps", "\u0668"),  # ARABIC-INDIC DIGIT EIGHT: int() takes it, a user never means it
        ("seed", "0x10"),
        ("height", "64 "),
        ("guidance_scale", " 7.5"),
        ("guidance_scale", "1_0"),
        ("guidance_scale", "+7"),
    ],
)
def test_numbers_must_be_written_plainly(env: Any, field: str, value: str) -> None:
    response = _submit(env[0], png_bytes(), **{field: value})
    _assert_refused(env, response, 422, "invalid_request", field=field)
    message = response.json()["error"]["message"]
    assert message.startswith(f"{field}: must be a") and "written plainly" in message
    assert repr(value) in message


def test_b18_invalid_utf8_prompt(env: Any) -> None:
    boundary = "BOUNDARY"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode()
        + b"\xff\xfe bad \xc3\x28\r\n"
        + f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + png_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = env[0].post(
        "/api/v1/jobs", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    _assert_refused(env, response, 422, "invalid_request", field="prompt")


def test_b22_duplicate_field(env: Any) -> None:
    response = env[0].post(
        "/api/v1/jobs",
        files=[
            ("image", ("a.png", png_bytes(), "image/png")),
            ("prompt", (None, "one")),
            ("prompt", (None, "two")),
        ],
    )
    _assert_refused(env, response, 422, "invalid_request", field="prompt")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        pytest.param(
            b'{"prompt": "x",', "application/json", 415, "unsupported_media_type", id="B23-malformed"
        ),
        pytest.param(
            b"[" * 10_000 + b"]" * 10_000,
            "application/json",
            415,
            "unsupported_media_type",
            id="B23-deep-nesting",
        ),
        pytest.param(
            b'{"prompt": "a", "prompt": "b"}',
            "application/json",
            415,
            "unsupported_media_type",
            id="B23-duplicate-keys",
        ),
        # Larger than any form may be (two image files and the fields): refused before a byte is read.
        pytest.param(b" " * (8 * 2**20), "application/json", 413, "file_too_large", id="B23-big-json"),
        pytest.param(
            b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi\r\n--x',
            "multipart/form-data",
            400,
            "malformed_body",
            id="B23-multipart-no-boundary-param",
        ),
        pytest.param(
            b"garbage without any boundary",
            "multipart/form-data; boundary=abc",
            400,
            "malformed_body",
            id="B23-multipart-garbage",
        ),
    ],
)
def test_b23_bodies_that_are_not_forms(
    env: Any, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = env[0].post("/api/v1/jobs", content=body, headers={"Content-Type": content_type})
    _assert_refused(env, response, status, code)


@pytest.mark.parametrize(
    "value",
    ["!!!not base64!!!", "data:text/html;base64,PGgxPmhpPC9oMT4=", "data:image/png;base64," + "A" * 5000],
    ids=["bad-base64", "wrong-mime", "data-url"],
)
def test_b24_base64_image_as_a_text_field(env: Any, value: str) -> None:
    response = env[0].post(
        "/api/v1/jobs",
        data={**small_job_fields(), "image": value},
        files={"_unused": ("", b"", "application/octet-stream")},
    )
    assert response.status_code == 422, response.text
    # Either the stray file part or the text image field is named; both are 422, no row, no file.
    _assert_refused(env, response, 422, "invalid_request")


def test_b24_huge_declared_body_is_refused_before_reading(env: Any) -> None:
    response = env[0].post(
        "/api/v1/jobs",
        content=b"x" * 10,
        headers={"Content-Type": "multipart/form-data; boundary=abc", "Content-Length": str(2**30)},
    )
    _assert_refused(env, response, 413, "file_too_large")


HOSTILE_IDS = [
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f",
    "%5c..%5c",
    "%2Fetc%2Fpasswd",
    "x" * 5000,
    "1%20OR%201%3D1",
    "00000000-0000-0000-0000-000000000000",
]


@pytest.mark.parametrize("job_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/video"), ("GET", "/events"), ("POST", "/cancel"), ("DELETE", "")],
)
def test_b27_hostile_ids_are_404_json(env: Any, job_id: str, method: str, suffix: str) -> None:
    client = env[0]
    response = client.request(method, f"/api/v1/jobs/{job_id}{suffix}")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] in ("job_not_found", "not_found")
    assert "root:" not in response.text


def test_b32_queue_full_is_429_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", max_queue_size=2)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        ids = [
            client.post(
                "/api/v1/jobs", files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
            ).json()["id"]
            for _ in range(2)
        ]
        response = client.post(
            "/api/v1/jobs", files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
        )
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"]["code"] == "queue_full"
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        assert sorted(j.id for j in store.list()[0]) == sorted(ids)
        assert sorted(p.name for p in settings.jobs_dir.iterdir()) == sorted(ids)
        assert not list((settings.data_dir / "tmp").iterdir())


def test_low_disk_is_507(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", min_free_disk_mb=1e12)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        response = client.post(
            "/api/v1/jobs", files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
        )
        assert response.status_code == 507
        assert response.json()["error"]["code"] == "insufficient_storage"
        assert client.app.state.store.list()[1] == 0  # type: ignore[attr-defined]
        # Health applies the same admission rule to the same figures (issue 15.5).
        health = client.get("/api/v1/health").json()
        assert health["ok"] is False and health["accepting_jobs"] is False
        assert health["problems"] == [
            {"code": "insufficient_storage", "message": response.json()["error"]["message"]}
        ]


def test_json_errors_never_carry_tracebacks(env: Any) -> None:
    for response in (
        env[0].get("/api/v1/nope"),
        env[0].post("/api/v1/jobs/../x"),
        env[0].get("/api/v1/jobs?limit=0"),
    ):
        assert "Traceback" not in response.text
        body = json.loads(response.text)
        assert "error" in body or "detail" in body
