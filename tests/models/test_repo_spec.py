"""An unregistered repo id is checked before anything is queued: its family from its own model_index.json.

The Hugging Face cache here is a real one (the hub's folder layout, read by huggingface_hub itself); there is
no network, so "not cached" means "cannot be had here".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stillmotion.errors import ModelUnavailable, UnknownModel
from stillmotion.models.repo_spec import find_spec
from stillmotion.server.app import create_app
from tests.server.helpers import make_settings, png_bytes

REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(cache: Path, repo: str, files: dict[str, dict[str, object]]) -> None:
    """``repo`` at ``main`` in the hub cache layout, holding ``files`` (JSON)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(REVISION)
    for name, content in files.items():
        path = folder / "snapshots" / REVISION / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


def test_a_cached_repo_is_planned_as_the_family_its_index_names(tmp_path: Path) -> None:
    cache_repo(
        tmp_path,
        "someone/svd-finetune",
        {"model_index.json": {"_class_name": "StableVideoDiffusionPipeline"}},
    )
    spec = find_spec("someone/svd-finetune", cache_dir=tmp_path, offline=True)
    assert (spec.family, spec.repo_id, spec.unverified) == ("svd", "someone/svd-finetune", False)
    assert spec.defaults.num_frames == find_spec("svd-xt").defaults.num_frames
    cache_repo(
        tmp_path,
        "someone/wan-i2v",
        {
            "model_index.json": {"_class_name": "WanImageToVideoPipeline"},
            "transformer/config.json": {"image_dim": 1280},
        },
    )
    assert find_spec("someone/wan-i2v", cache_dir=tmp_path, offline=True).family == "wan"


def test_repos_that_cannot_run_here_are_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as missing:
        find_spec("someone/never-downloaded", cache_dir=tmp_path, offline=True)
    assert "not in this machine's model cache and offline mode is on" in missing.value.message
    assert "hf download someone/never-downloaded" in missing.value.message
    cache_repo(
        tmp_path, "someone/text-to-image", {"model_index.json": {"_class_name": "StableDiffusionPipeline"}}
    )
    with pytest.raises(UnknownModel) as wrong:
        find_spec("someone/text-to-image", cache_dir=tmp_path, offline=True)
    assert "'StableDiffusionPipeline' that is not an image-to-video model" in wrong.value.message


def test_the_api_refuses_a_repo_it_cannot_have_before_queueing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", offline=True, models_dir=tmp_path / "hub")
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        answer = client.post(
            "/api/v1/jobs",
            files={"image": ("p.png", png_bytes(), "image/png")},
            data={"prompt": "x", "model": "someone/never-downloaded"},
        )
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "model_unavailable"
        assert client.get("/api/v1/jobs").json()["total"] == 0  # nothing queued to fail later
        plan = client.post("/api/v1/plan", data={"model": "someone/never-downloaded"})
        assert plan.status_code == 503 and "offline mode is on" in plan.json()["error"]["message"]
