"""interpolator=rife is refused up front where its weights cannot be had, as an unavailable model is.

Offline (or with the hub out of reach) and without RIFE's weights in the model cache, a job asking for RIFE
would be accepted and then fail a second later; ``POST /plan`` would say it fits. Both now answer 503
``model_unavailable`` naming the weights and the way on (the download command, or minterpolate), and nothing
is created; with the weights in the cache the same requests are accepted and planned.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from stillmotion.config import RIFE_REPO_ID, Settings
from stillmotion.models import hub_probe
from stillmotion.server.app import create_app
from tests.interpolation.helpers import save_rife_in_hub_cache
from tests.server.helpers import leftovers, make_settings, png_bytes, small_job_fields

RIFE = {"interpolate": "2", "interpolator": "rife"}


def _post(client: TestClient, path: str, **fields: str) -> httpx.Response:
    files = {"image": ("photo.png", png_bytes(), "image/png")}
    return client.post(f"/api/v1/{path}", files=files, data=small_job_fields(**fields))


def _assert_unavailable(response: httpx.Response, field: str = "interpolator") -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "model_unavailable" and error["field"] == field
    assert RIFE_REPO_ID in error["message"] and "hf download" in error["message"]
    assert "interpolator=minterpolate" in error["message"]


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "hub out of reach"])
def test_rife_without_weights_here_is_refused_before_queueing_and_in_the_plan(
    tmp_path: Path, offline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not offline:  # online, but the hub does not answer (as on this machine without network)
        monkeypatch.setattr(hub_probe, "hub_reachable", lambda timeout_s=5.0: False)
    settings = make_settings(tmp_path / "data", offline=offline, models_dir=tmp_path / "empty-cache")
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        _assert_unavailable(_post(client, "jobs", **RIFE))
        _assert_unavailable(_post(client, "plan", **RIFE))
        items = json.dumps([{"seed": 1}, {"seed": 2, **RIFE}])
        _assert_unavailable(_post(client, "batches", items=items), field="items[1].interpolator")
        assert client.app.state.store.list()[1] == 0  # type: ignore[attr-defined]
        assert leftovers(settings) == []
        # minterpolate needs no download: the same request with it is accepted.
        assert _post(client, "jobs", interpolate="2", interpolator="minterpolate").status_code == 202


def test_rife_with_its_weights_in_the_cache_is_accepted_offline(tmp_path: Path) -> None:
    models = tmp_path / "models"
    save_rife_in_hub_cache(models)
    settings: Settings = make_settings(tmp_path / "data", offline=True, models_dir=models)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        plan = _post(client, "plan", **RIFE)
        assert plan.status_code == 200 and plan.json()["interpolation"]["interpolator"] == "rife"
        assert _post(client, "jobs", **RIFE).status_code == 202
