"""Faults found on the new surfaces (issue 20, items 1-7 and 13-15; issue 24 item 9): each answered with a
clear 4xx naming the field, never a 500, and no answer tells a client about the server's files."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stillmotion.cli import main
from stillmotion.config import Settings
from stillmotion.engine.request import GenerationRequest
from stillmotion.errors import InvalidRequest, InvalidTransition
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.models.lora_refs import LoraChoice, parse_loras, resolve_lora
from stillmotion.models.registry import get_spec
from stillmotion.server.app import create_app
from stillmotion.server.run import check_bind
from tests.server.helpers import make_settings, png_bytes, small_job_fields

pytestmark = pytest.mark.timeout(180)

IMAGE = {"image": ("photo.png", png_bytes(), "image/png")}
DEEP = "[" * 100_000 + "]" * 100_000
TOKEN = "hostile-inputs-token-0123456789"


def _error(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _batch(client: TestClient, **fields: str) -> httpx.Response:
    return client.post("/api/v1/batches", data=small_job_fields(**fields), files=IMAGE)


# -- 1. bounded JSON -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [DEEP, "[" + "{" * 50_000 + "}" * 50_000 + "]", '[{"seed": ' + DEEP + "}]"],
    ids=["array", "object", "inside-a-field"],
)
def test_deeply_nested_batch_items_are_422(client: TestClient, items: str) -> None:
    error = _error(_batch(client, items=items))
    assert error["field"] == "items" and "nested deeper" in error["message"]


def test_a_deeply_nested_cli_batch_line_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(DEEP + "\n")
    image = tmp_path / "p.png"
    image.write_bytes(png_bytes())
    code = main(["generate", "--batch", str(batch), "--image", str(image), "--model", "tiny-i2vgen-xl"])
    assert code == 2
    assert "batch line 1: not valid JSON (nested deeper" in capsys.readouterr().err


def test_deep_json_in_a_lora_list_or_a_lora_files_header_is_refused_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="loras: not valid JSON .nested deeper"):
        parse_loras(DEEP)  # a CLI batch line may carry the list as JSON text
    header = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    (tmp_path / "deep.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(InvalidRequest, match="not a safetensors file"):
        resolve_lora(
            LoraChoice("deep.safetensors"),
            0,
            folders=[tmp_path],
            any_local_path=False,
            cache_dir=None,
            offline=True,
        )


def _cached_repo(cache: Path, repo: str, index: str) -> None:
    """A repo in a Hugging Face cache folder, as a download leaves it (refs/main -> snapshots/<commit>)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "model_index.json").write_text(index)


def test_a_deep_model_index_of_a_cached_repo_or_a_model_folder_is_422(tmp_path: Path) -> None:
    cache, root = tmp_path / "hub", tmp_path / "models"
    _cached_repo(cache, "evil/deep", '{"_class_name": ' + DEEP + "}")
    (root / "deep").mkdir(parents=True)
    (root / "deep" / "model_index.json").write_text(DEEP)
    settings = make_settings(tmp_path / "data", models_dir=cache, offline=True, model_dirs=str(root))
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        for model in ("evil/deep", "deep"):
            fields = {**small_job_fields(), "model": model}
            for path in ("/api/v1/plan", "/api/v1/jobs"):
                error = _error(client.post(path, data=fields, files=IMAGE))
                assert error["field"] == "model" and "nested deeper" in error["message"], (model, path)
                assert str(tmp_path) not in error["message"]


# -- 2. ASCII digits only ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variations", ["--6", "²", "9" * 5000, "٨", " 6 ", "+6", "6.0"])
def test_variations_take_plain_ascii_digits_only(
    client: TestClient, store: JobStore, variations: str
) -> None:
    error = _error(_batch(client, variations=variations))
    assert error["field"] == "variations"
    assert store.list()[1] == 0


@pytest.mark.parametrize("value", ["٨", "²", "9" * 5000, " 8 "])
def test_number_fields_take_plain_ascii_digits_only(client: TestClient, value: str) -> None:
    error = _error(client.post("/api/v1/plan", data={**small_job_fields(), "num_frames": value}))
    assert error["field"] == "num_frames"


# -- 3. hub ids by the hub's rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "rule"),
    [("foo--bar/baz", "--"), ("foo/bar.git", ".git"), ("a/" + "b" * 1020, "maximum length is 96")],
)
def test_hub_ids_breaking_the_hub_rules_are_422_naming_the_rule(
    client: TestClient, model: str, rule: str
) -> None:
    for path in ("/api/v1/plan", "/api/v1/jobs"):
        error = _error(client.post(path, data={**small_job_fields(), "model": model}, files=IMAGE))
        assert error["code"] == "unknown_model" and error["field"] == "model"
        assert "not a valid Hugging Face repo id" in error["message"] and rule in error["message"]


# -- 4, 5. model folders only under the model roots, and no server paths in answers --------------------------


def _model_folder(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    (parent / "model_index.json").write_text(json.dumps({"_class_name": "I2VGenXLPipeline"}))
    return parent


def test_the_api_takes_no_folder_outside_the_model_roots_and_says_the_same_for_each(
    tmp_path: Path, client: TestClient, store: JobStore
) -> None:
    outside = _model_folder(tmp_path / "anywhere" / "i2v")
    answers = set()
    for model in (str(outside), "/proc/self/cwd", "/nonexistent", "~", "../" * 8 + "etc"):
        response = client.post("/api/v1/jobs", data={**small_job_fields(), "model": model}, files=IMAGE)
        error = _error(response)
        assert error["code"] == "unknown_model"
        answers.add(error["message"].replace(repr(model[:200]), "<model>"))
        assert str(Path.home()) not in error["message"] or model == str(outside)
    assert len(answers) == 1, answers  # missing and disallowed folders look the same
    assert store.list()[1] == 0


def test_a_folder_under_a_model_root_is_named_relative_to_it(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _model_folder(root / "my-i2v")
    (root / "empty").mkdir()
    settings = make_settings(tmp_path / "data", model_dirs=str(root))
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        plan = client.post("/api/v1/plan", data={"model": "my-i2v", "height": "256", "width": "256"})
        assert plan.status_code == 200, plan.text
        assert plan.json()["request"]["model"] == "my-i2v"
        error = _error(client.post("/api/v1/plan", data={"model": "empty"}))
        assert "without model_index.json" in error["message"] and str(root) not in error["message"]
        escape = _error(client.post("/api/v1/plan", data={"model": "../models/../../.."}))
        assert escape["code"] == "unknown_model"


def test_a_job_error_names_the_repo_not_the_hub_cache_path(client: TestClient, store: JobStore) -> None:
    job = client.post("/api/v1/jobs", data=small_job_fields(), files=IMAGE).json()
    claimed = store.claim_next("w")
    assert claimed is not None
    cache = Path.home() / ".cache/huggingface/hub/models--evil--custompipe/snapshots" / ("ab" * 20)
    store.finish_failed(
        claimed.id,
        "model_unavailable",
        f"cannot load {cache}/unet/config.json: bad file",
        lease=claimed.lease_token,
    )
    message = client.get(f"/api/v1/jobs/{job['id']}").json()["error"]["message"]
    assert message == "cannot load evil/custompipe/unet/config.json: bad file"


# -- 6. only /health open with a token; blank tokens refused -------------------------------------------------


@pytest.fixture
def token_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", api_token=TOKEN)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as c:
        yield c


def test_with_a_token_only_health_is_open(token_client: TestClient) -> None:
    for path in ("/openapi.json", "/api/v1/docs", "/api/v1/docs/assets/swagger-ui-bundle.js", "/config"):
        assert token_client.get(path).status_code == 401, path
    heartbeat = token_client.get("/gradio_api/heartbeat/abc")
    assert heartbeat.status_code == 401 and heartbeat.json()["error"]["code"] == "unauthorized"
    assert token_client.get("/api/v1/health").status_code == 200
    assert token_client.get("/").status_code == 200  # the login page
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert token_client.get("/openapi.json", headers=bearer).status_code == 200
    # A browser asks for the docs page's password (HTTP Basic, any user name, the token as password).
    docs = token_client.get("/api/v1/docs")
    assert "Basic" in docs.headers["WWW-Authenticate"]
    assert token_client.get("/api/v1/docs", auth=("me", TOKEN)).status_code == 200
    assert token_client.get("/openapi.json", auth=("me", "wrong")).status_code == 401
    # After the UI login, the UI's own routes answer.
    assert token_client.post("/login", data={"username": "me", "password": TOKEN}).status_code == 200
    assert token_client.get("/gradio_api/app_id").status_code == 200


@pytest.mark.parametrize("token", [" ", "\t", ""])
def test_a_blank_token_is_refused_at_start(tmp_path: Path, token: str) -> None:
    settings = make_settings(tmp_path / "data", api_token=token, host="0.0.0.0")
    refusal = check_bind(settings)
    assert refusal is not None and "STILLMOTION_API_TOKEN" in refusal
    with pytest.raises(ValueError, match="blank"):
        create_app(make_settings(tmp_path / "data", api_token=token), start_worker=False)


# -- 7. batches answer as documented -------------------------------------------------------------------------


def test_a_batch_entry_with_an_unknown_model_is_422_and_a_non_uuid_batch_id_422(client: TestClient) -> None:
    error = _error(_batch(client, items='[{"seed": 1}, {"model": "no-such-model"}]'))
    assert error["code"] == "unknown_model" and error["field"] == "items[1].model"
    for path in ("/api/v1/batches/not-a-uuid", "/api/v1/batches/not-a-uuid/cancel"):
        method = client.get if path.endswith("uuid") else client.post
        assert _error(method(path))["field"] == "batch_id"


# -- 13, 14. the queue-full message, and a cancel racing a finish --------------------------------------------


def test_a_full_queue_says_how_many_are_waiting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", max_queue_size=8)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        assert _batch(client, variations="6").status_code == 202
        error = _error(_batch(client, variations="3"), 429)
        assert "6 jobs waiting" in error["message"], error["message"]


def test_cancelling_a_batch_survives_a_job_finishing_meanwhile(
    client: TestClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _batch(client, variations="3").json()
    first = store.claim_next("w")
    assert first is not None
    stale = store.batch(batch["id"])  # read while the first job still runs...
    store.finish_failed(first.id, "internal_error", "boom", lease=first.lease_token)  # ...then it ends
    reads = iter([stale])
    real_batch = store.batch
    monkeypatch.setattr(store, "batch", lambda batch_id: next(reads, None) or real_batch(batch_id))
    out = client.post(f"/api/v1/batches/{batch['id']}/cancel")
    assert out.status_code == 200, out.text
    assert {job["status"] for job in out.json()["jobs"]} == {"failed", "cancelled"}
    with pytest.raises(InvalidTransition):  # the race the service now survives
        store.request_cancel(first.id)


# -- issue 24, item 9: one wording for a broken rule on every surface ----------------------------------------


def test_an_api_rule_error_words_it_as_the_cli_does(client: TestClient) -> None:
    request = GenerationRequest(prompt="x", model="tiny-i2vgen-xl", height=383, width=384)
    with pytest.raises(InvalidRequest) as cli:
        request.resolve(get_spec("tiny-i2vgen-xl"), None)
    assert "try 384" in cli.value.message
    for path in ("/api/v1/plan", "/api/v1/jobs"):
        fields = {**small_job_fields(), "height": "383", "width": "384"}
        error = _error(client.post(path, data=fields, files=IMAGE))
        assert (error["message"], error["field"]) == (cli.value.message, "height")


def test_settings_read_the_model_roots(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model_dirs=f"{tmp_path}/a:{tmp_path}/b")
    assert settings.model_roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert Settings(data_dir=tmp_path).model_roots == ()
