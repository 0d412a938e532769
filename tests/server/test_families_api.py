"""Every family through the API and the UI's form rules: GET /models describes each one's parameters, bad
input for a family is a 422 naming the field, value and rule with nothing stored, jobs of every family share
one queue, and switching the UI's model updates its fields."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from stillmotion.config import Settings
from stillmotion.engine.request import GenerationRequest
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.models.registry import get_spec
from stillmotion.webui.form import model_fields
from tests.server.helpers import leftovers, png_bytes

FAMILY_MODELS = ["i2vgen-xl", "wan2.1-i2v-14b-480p", "wan2.2-ti2v-5b", "svd-xt", "ltx-video"]


def _submit(client: TestClient, **fields: str) -> dict[str, object]:
    response = client.post(
        "/api/v1/jobs", files={"image": ("photo.png", png_bytes(), "image/png")}, data=fields
    )
    return {**response.json(), "http_status": response.status_code}


def test_models_describe_each_familys_own_rules_and_defaults(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert set(FAMILY_MODELS) <= set(models)
    assert {models[name]["family"] for name in FAMILY_MODELS} == {"i2vgen-xl", "wan", "svd", "ltx"}
    wan = models["wan2.1-i2v-14b-480p"]
    assert (wan["limits"]["frame_step"], wan["limits"]["size_multiple"], wan["defaults"]["num_frames"]) == (
        4,
        16,
        81,
    )
    assert any("4k+1" in rule for rule in wan["rules"])
    ltx = models["ltx-video"]
    assert (ltx["limits"]["frame_step"], ltx["limits"]["size_multiple"]) == (8, 32)
    svd = models["svd-xt"]
    assert svd["limits"]["accepts_prompt"] is False and svd["defaults"]["num_frames"] == 25
    assert any("animates the image alone" in rule for rule in svd["rules"])
    assert models["i2vgen-xl"]["limits"]["accepts_prompt"] is True


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"model": "tiny-wan2.1-i2v", "prompt": "x", "num_frames": "16"}, "num_frames", "not 4k+1"),
        (
            {"model": "tiny-wan2.1-i2v", "prompt": "x", "height": "72", "width": "64"},
            "height",
            "multiple of 16",
        ),
        ({"model": "tiny-ltx-video", "prompt": "x", "num_frames": "12"}, "num_frames", "not 8k+1"),
        ({"model": "tiny-svd-xt", "prompt": "a cat"}, "prompt", "no text encoder"),
        ({"model": "tiny-i2vgen-xl"}, "prompt", "empty"),
    ],
)
def test_bad_input_for_a_family_is_refused_with_its_rule_and_nothing_is_kept(
    client: TestClient, settings: Settings, fields: dict[str, str], field: str, words: str
) -> None:
    answer = _submit(client, **fields)
    assert answer["http_status"] == 422
    error = answer["error"]
    assert isinstance(error, dict) and error["field"] == field and words in error["message"]
    assert client.get("/api/v1/jobs").json()["total"] == 0
    assert leftovers(settings) == []


def test_jobs_of_every_family_wait_in_one_queue(client: TestClient, store: JobStore) -> None:
    small = {"height": "64", "width": "64", "num_inference_steps": "2"}
    requests = [
        {"model": "tiny-i2vgen-xl", "prompt": "waves", "num_frames": "8"},
        {"model": "tiny-wan2.1-i2v", "prompt": "waves", "num_frames": "9"},
        {"model": "tiny-svd-xt", "num_frames": "4"},
        {"model": "tiny-ltx-video", "prompt": "waves", "num_frames": "9"},
    ]
    ids = []
    for request in requests:
        answer = _submit(client, **request, **small)
        assert answer["http_status"] == 202, answer
        ids.append(answer["id"])
    queued = [store.queue_position(job_id) for job_id in ids]
    assert queued == [1, 2, 3, 4]
    assert [store.get(job_id).model for job_id in ids] == [r["model"] for r in requests]


def test_switching_models_in_the_ui_sets_each_familys_fields() -> None:
    wan = model_fields(get_spec("wan2.1-i2v-14b-480p"))
    assert (wan["num_frames"]["minimum"], wan["num_frames"]["step"], wan["num_frames"]["value"]) == (5, 4, 81)
    assert wan["height"]["step"] == wan["width"]["step"] == 16
    assert wan["prompt"]["interactive"] is True and wan["size_mode"]["value"] == "480p"
    svd = model_fields(get_spec("svd-xt"))
    assert svd["prompt"] == {"interactive": False, "value": "", "placeholder": svd["prompt"]["placeholder"]}
    assert (
        "takes no prompt" in svd["prompt"]["placeholder"] and svd["negative_prompt"]["interactive"] is False
    )
    assert (svd["num_frames"]["maximum"], svd["num_frames"]["step"], svd["fps"]["value"]) == (25, 1, 7)
    ltx = model_fields(get_spec("ltx-video"))
    assert (ltx["num_frames"]["minimum"], ltx["num_frames"]["step"]) == (9, 8)
    assert ltx["height"]["step"] == 32 and "8k+1" in ltx["rules"]["value"]
    i2v = model_fields(get_spec("i2vgen-xl"))
    assert (i2v["num_frames"]["step"], i2v["height"]["step"], i2v["guidance_scale"]["value"]) == (1, 8, 9.0)


def test_the_ui_plans_before_a_prompt_is_typed_for_every_family(client: TestClient) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    for model in ("svd-xt", "wan2.1-i2v-14b-480p", "ltx-video"):
        # No prompt typed yet: the plan does not depend on the words, for any family.
        answer = service.plan(GenerationRequest(model=model), (1280, 720))  # on this machine's device
        assert answer.request.model == model and answer.request.prompt == ""
