"""Batches through the API: one request, several jobs (own rows and videos), all-or-nothing, group cancel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.worker import Worker
from stillmotion.server.app import create_app
from tests.interpolation.helpers import save_rife_in_hub_cache
from tests.server.helpers import leftovers, make_settings, png_bytes, small_job_fields


def post_batch(client: TestClient, **fields: str) -> httpx.Response:
    data = small_job_fields(num_inference_steps="1", **fields)
    return client.post("/api/v1/batches", files={"image": ("photo.png", png_bytes(), "image/png")}, data=data)


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """A batch's counts (every status, typed: BatchCounts) without the statuses no job is in."""
    return {status: count for status, count in counts.items() if count}


def run_queue(settings: Settings, store: JobStore, engine: Engine) -> None:
    """A worker in this process, with a real tiny engine, until the queue is empty."""
    Worker(settings, store, engine, worker_id="w-batch").run(max_jobs=store.queue_depth())


def test_a_batch_of_6_makes_6_videos_one_cancelled_on_request(
    client: TestClient, store: JobStore, settings: Settings
) -> None:
    response = post_batch(client, variations="6", seed="100")
    assert response.status_code == 202
    batch = response.json()
    assert response.headers["Location"] == f"/api/v1/batches/{batch['id']}"
    jobs = batch["jobs"]
    assert len({job["id"] for job in jobs}) == 6 and nonzero(batch["counts"]) == {"queued": 6}
    assert [job["request"]["seed"] for job in jobs] == [100, 101, 102, 103, 104, 105]
    assert {store.get(job["id"]).batch_id for job in jobs} == {batch["id"]}  # committed, one batch id

    cancelled = jobs[4]["id"]
    assert client.post(f"/api/v1/jobs/{cancelled}/cancel").json()["status"] == "cancelled"
    engine = Engine(settings)
    run_queue(settings, store, engine)

    after = client.get(f"/api/v1/batches/{batch['id']}").json()
    assert nonzero(after["counts"]) == {"succeeded": 5, "cancelled": 1}
    videos = set()
    for job in after["jobs"]:
        if job["id"] == cancelled:
            assert job["status"] == "cancelled" and job["links"]["video"] is None
            continue
        video = client.get(job["links"]["video"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        videos.add(video.content)
    assert len(videos) == 5  # five different videos, one file each
    # One prompt and one image: the encoders ran for the first job only, the others hit the embedding cache.
    warnings = [store.get(job["id"]).result["warnings"] for job in jobs if job["id"] != cancelled]  # type: ignore[index]
    assert "embedding cache hit: text and image encoders skipped" not in warnings[0]
    assert all("embedding cache hit: text and image encoders skipped" in w for w in warnings[1:])
    assert engine.cache.hits >= 4 * 3  # prompt, negative prompt and image, for each of the 4 later jobs


def test_items_give_each_job_its_own_fields(client: TestClient) -> None:
    items = [{"prompt": "waves"}, {"prompt": "rain", "seed": 3}, {"prompt": "snow", "interpolate": 2}]
    response = post_batch(client, items=json.dumps(items), prompt="")
    assert response.status_code == 202, response.text
    stored = [job["request"] for job in response.json()["jobs"]]
    assert [r["prompt"] for r in stored] == ["waves", "rain", "snow"]
    assert stored[1]["seed"] == 3 and stored[2]["interpolate"] == 2


@pytest.mark.parametrize(
    ("fields", "code", "field", "words"),
    [
        (
            {"items": json.dumps([{"seed": 1}, {"seed": 2}, {"seed": 3}, {"seed": -1}])},
            422,
            "items[3].seed",
            "-1",
        ),
        ({"items": json.dumps([{"seed": 1}, {"sed": 2}])}, 422, "items[1].sed", "unknown field"),
        ({"items": json.dumps([{}, {"interpolate": 5}])}, 422, "items[1].interpolate", "allowed: 2, 3, 4"),
        ({"items": "[1, 2]"}, 422, "items", "array of objects"),
        ({"variations": "0"}, 422, "variations", "1 to 64"),
        ({"variations": "2", "items": "[{}]"}, 422, "items", "one or the other"),
        ({}, 422, "items", "what differs"),
    ],
)
def test_a_bad_entry_refuses_the_whole_batch_and_leaves_nothing(
    client: TestClient,
    store: JobStore,
    settings: Settings,
    fields: dict[str, str],
    code: int,
    field: str,
    words: str,
) -> None:
    response = post_batch(client, **fields)
    assert response.status_code == code
    error = response.json()["error"]
    assert error["field"] == field and words in error["message"]
    assert store.list()[1] == 0 and leftovers(settings) == []


def test_a_batch_larger_than_the_queue_room_is_refused_whole(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", max_queue_size=3)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        response = post_batch(client, variations="4")
        assert response.status_code == 429 and response.json()["error"]["code"] == "queue_full"
        assert client.app.state.store.list()[1] == 0  # type: ignore[attr-defined]
        assert leftovers(settings) == []


def test_cancel_a_batch_as_a_group(client: TestClient, store: JobStore) -> None:
    batch = post_batch(client, variations="3").json()
    first = batch["jobs"][0]["id"]
    store.claim_next("w")  # the first one is running
    out = client.post(f"/api/v1/batches/{batch['id']}/cancel").json()
    assert nonzero(out["counts"]) == {"running": 1, "cancelled": 2}
    assert store.get(first).cancel_requested  # the running one stops within one step
    assert client.get("/api/v1/batches/00000000-0000-0000-0000-000000000000").status_code == 404


def test_a_failure_in_one_job_does_not_stop_the_others(tmp_path: Path) -> None:
    # Offline, RIFE's weights in the cache when the batch is accepted and gone when it runs: the job that
    # asks for RIFE fails (model_unavailable), the others run.
    models = tmp_path / "models"
    save_rife_in_hub_cache(models)
    settings = make_settings(tmp_path / "data", offline=True, models_dir=models)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        items = [{"seed": 1}, {"seed": 2, "interpolate": 2, "interpolator": "rife"}, {"seed": 3}]
        batch = post_batch(client, items=json.dumps(items)).json()
        shutil.rmtree(models)
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        run_queue(settings, store, Engine(settings))
        jobs = [store.get(job["id"]) for job in batch["jobs"]]
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED]
    assert jobs[1].error_code == "model_unavailable" and "minterpolate" in (jobs[1].error_message or "")
