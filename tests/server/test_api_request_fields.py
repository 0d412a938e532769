"""The request fields of issue 21 over the REST API, typed for generated clients (issue 23): ``fast`` a
boolean, ``guidance_scale_2`` a number, ``loras`` a typed list (JSON text in a form, the list itself in batch
items), ``last_image`` a binary file part of ``POST /jobs`` and ``/batches``; answers name no server
file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.models import tiny
from tests.server.helpers import png_bytes
from tests.support.gguf_files import write_gguf
from tests.support.lora_files import make_lora

pytestmark = pytest.mark.timeout(180)

A14B = "tiny-wan2.2-i2v-a14b"
FIRST, LAST = png_bytes(160, 96), png_bytes(160, 96, colour=(20, 200, 90))
DEEP = "[" * 5_000 + "]" * 5_000  # within the field's 16 KB: refused for its depth


def _fields(**extra: str) -> dict[str, str]:
    return {"prompt": "a kite", "model": A14B, "height": "48", "width": "80", "num_frames": "9", **extra}


def _files(last: bytes | None = None) -> dict[str, Any]:
    files: dict[str, Any] = {"image": ("first.png", FIRST, "image/png")}
    if last is not None:
        files["last_image"] = ("last.png", last, "image/png")
    return files


def _error(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.fixture
def lora(settings: Settings) -> str:
    """A LoRA for the tiny A14B under the server's LoRA folder (``<data>/loras``), named relative to it."""
    make_lora(settings.data_dir / "loras", name="style.safetensors")
    return "style.safetensors"


def test_the_spec_types_each_new_field(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    job = schemas["JobForm"]
    assert job["properties"]["fast"]["type"] == "boolean"
    assert job["properties"]["guidance_scale_2"]["type"] == "number"
    assert job["properties"]["last_image"]["format"] == "binary" and job["required"] == ["image"]
    assert schemas["BatchForm"]["properties"]["last_image"]["format"] == "binary"  # every job's last frame
    assert "last_image" not in schemas["PlanForm"]["properties"]  # a plan needs no second image
    assert "last_image" not in schemas["GenerationFields"]["properties"]  # never a text field
    loras = job["properties"]["loras"]  # a form field is text: the list as JSON, its shape described
    assert (loras["type"], loras["contentMediaType"]) == ("string", "application/json")
    assert loras["contentSchema"]["items"] == {"$ref": "#/components/schemas/LoraIn"}
    item = schemas["GenerationFields"]["properties"]["loras"]  # a batch item gives the list itself
    assert {"type": "array", "items": {"$ref": "#/components/schemas/LoraIn"}, "maxItems": 8}.items() <= next(
        option for option in item["anyOf"] if option.get("type") == "array"
    ).items()
    lora_in = schemas["LoraIn"]
    assert lora_in["required"] == ["ref"] and lora_in["additionalProperties"] is False
    assert schemas["LoraExpert"]["enum"] == ["both", "high", "low"]
    request = schemas["ResolvedRequestOut"]["properties"]
    assert request["loras"]["items"] == {"$ref": "#/components/schemas/LoraOut"}
    assert "path" not in schemas["LoraOut"]["properties"]  # where the file lies on the server is not said
    assert {"$ref": "#/components/schemas/ExpertsOut"} in request["experts"]["anyOf"]
    assert {"$ref": "#/components/schemas/GgufOut"} in request["transformer_gguf"]["anyOf"]
    assert "path" not in schemas["GgufOut"]["properties"]


def test_a_job_with_a_last_frame_a_lora_and_the_second_guidance(client: TestClient, lora: str) -> None:
    loras = f'[{{"ref": "{lora}", "strength": 0.5, "expert": "low"}}]'
    response = client.post(
        "/api/v1/jobs",
        data=_fields(loras=loras, guidance_scale_2="2.5", fast="false"),
        files=_files(LAST),
    )
    assert response.status_code == 202, response.text
    request = response.json()["request"]
    assert request["last_image"] == hashlib.sha256(LAST).hexdigest()
    assert request["guidance_scale_2"] == 2.5 and request["fast"] is False
    (applied,) = request["loras"]
    assert (applied["reference"], applied["strength"], applied["expert"]) == (lora, 0.5, "low")
    assert len(applied["sha256"]) == 64 and "path" not in applied
    assert request["experts"]["high_noise"] == "transformer"


def test_a_batch_item_gives_the_lora_list_itself(client: TestClient, lora: str) -> None:
    items = f'[{{"loras": [{{"ref": "{lora}", "strength": 0.25}}]}}, {{"seed": 3}}]'
    response = client.post("/api/v1/batches", data=_fields(items=items), files=_files())
    assert response.status_code == 202, response.text
    first, second = response.json()["jobs"]
    assert [x["strength"] for x in first["request"]["loras"]] == [0.25] and second["request"]["loras"] == []


def test_a_batch_shares_its_last_frame_and_an_entry_cannot_name_one(client: TestClient) -> None:
    response = client.post("/api/v1/batches", data=_fields(variations="2"), files=_files(LAST))
    assert response.status_code == 202, response.text
    digests = {job["request"]["last_image"] for job in response.json()["jobs"]}
    assert digests == {hashlib.sha256(LAST).hexdigest()}
    items = '[{"last_image": "/etc/hostname"}]'
    error = _error(client.post("/api/v1/batches", data=_fields(items=items), files=_files()))
    assert error["field"] == "items[0].last_image"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"loras": "not json"}, "loras", "JSON array of LoRA objects"),
        ({"loras": DEEP}, "loras", "nested deeper"),
        ({"loras": '[{"ref": "x.safetensors", "weight": 1}]'}, "loras.0.weight", "not part of the API"),
        ({"loras": '[{"ref": "x.safetensors", "strength": 9}]'}, "loras[0].strength", "out of range"),
        ({"loras": '[{"ref": "x.safetensors", "expert": "middle"}]'}, "loras.0.expert", "high"),
        ({"loras": '[{"ref": "/etc/passwd.safetensors"}]'}, "loras[0].ref", "under the LoRA folders"),
        ({"fast": "maybe"}, "fast", "boolean"),
        ({"fast": "true"}, "fast", "no step-distilled LoRA"),  # the tiny build has no fast choice
        ({"model": "tiny-i2vgen-xl", "guidance_scale_2": "2"}, "guidance_scale_2", "one denoiser"),
        ({"last_image": "/etc/hostname"}, "last_image", "file part"),
    ],
)
def test_bad_values_of_the_new_fields_are_422_naming_the_field(
    client: TestClient, settings: Settings, store: JobStore, fields: dict[str, str], field: str, words: str
) -> None:
    error = _error(client.post("/api/v1/jobs", data=_fields(**fields), files=_files()))
    assert error["field"] == field and words in error["message"], error
    assert str(settings.data_dir) not in error["message"]  # the LoRA folder is named <data>/loras
    assert store.list()[1] == 0


def test_a_last_frame_for_a_model_without_one_or_not_an_image_is_refused_by_name(
    client: TestClient, store: JobStore
) -> None:
    fields = {**_fields(), "model": "tiny-wan2.1-i2v"}
    error = _error(client.post("/api/v1/jobs", data=fields, files=_files(LAST)))
    assert error["field"] == "last_image" and "cannot be used with tiny-wan2.1-i2v" in error["message"]
    not_an_image = client.post("/api/v1/jobs", data=_fields(), files=_files(b"GIF89a not an image"))
    error = _error(not_an_image, 415)
    assert error["field"] == "last_image" and error["message"].startswith("last_image: unsupported format")
    assert store.list()[1] == 0


def test_a_gguf_transformer_is_named_by_its_reference_never_its_place(
    client: TestClient, settings: Settings
) -> None:
    transformer = tiny.build_tiny_wan_components(0)["transformer"]  # tiny-wan2.1-i2v's weights
    (settings.data_dir / "models").mkdir(parents=True)
    write_gguf(transformer, settings.data_dir / "models" / "tiny-wan-Q8_0.gguf", "Q8_0")
    fields = {**_fields(transformer_gguf="tiny-wan-Q8_0.gguf"), "model": "tiny-wan2.1-i2v"}
    response = client.post("/api/v1/jobs", data=fields, files=_files())
    assert response.status_code == 202, response.text
    gguf = response.json()["request"]["transformer_gguf"]
    assert (gguf["reference"], gguf["quant"], gguf["source"]) == ("tiny-wan-Q8_0.gguf", "Q8_0", "file")
    assert "path" not in gguf and str(settings.data_dir) not in response.text
    outside = _error(
        client.post("/api/v1/jobs", data={**fields, "transformer_gguf": "/etc/x.gguf"}, files=_files())
    )
    assert outside["field"] == "transformer_gguf" and str(settings.data_dir) not in outside["message"]


def test_the_model_list_says_which_fields_a_model_takes(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert (models[A14B]["two_experts"], models[A14B]["accepts_last_image"]) == (True, True)
    assert models[A14B]["fast"] is None  # the published LoRAs fit the full-size experts only
    assert "approximate" in models["wan2.2-i2v-a14b"]["fast"]
    assert models["tiny-i2vgen-xl"]["accepts_last_image"] is False


def test_the_server_names_the_models_folder_as_models(tmp_path: Path) -> None:
    from stillmotion.service.model_folders import public_text

    settings = Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "hub")
    text = f"searched {tmp_path}/data/loras, {tmp_path}/hub"
    assert public_text(text, settings) == "searched <data>/loras, <models>"
