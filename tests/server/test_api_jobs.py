"""The jobs API over the real store, without a worker: the test moves jobs the way a worker would
(claim, progress, finish) so HTTP behaviour is checked exactly; the engine runs in test_e2e.py."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from stillmotion.jobs.store.job_store import JobStore
from stillmotion.server.app import create_app
from stillmotion.server.routes.jobs import SSE_POLL_S
from tests.server.helpers import leftovers, live_server, make_settings, png_bytes, small_job_fields
from tests.support.sqlite_outage import SqliteOutage

pytestmark = pytest.mark.timeout(120)

WORKER = "test-worker"


def _post(
    client: TestClient, headers: dict[str, str] | None = None, image: bytes | None = None, **fields: str
) -> httpx.Response:
    data = small_job_fields(**fields)
    return client.post(
        "/api/v1/jobs",
        files={"image": ("photo.png", image or png_bytes(), "image/png")},
        data=data,
        headers=headers or {},
    )


def _write_mp4(path: Path, frames: int = 8) -> str:
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 30, dtype=np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    container.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finish(store: JobStore, job_id: str) -> Path:
    claimed = store.claim_next(WORKER)
    assert claimed is not None and claimed.id == job_id
    out = store.job_dir(job_id) / "video.mp4"
    sha = _write_mp4(out)
    store.finish_succeeded(
        job_id,
        "video.mp4",
        sha,
        {"sha256": sha, "warnings": [], "downgrades": [], "timings": {"total_s": 1.0}},
    )
    return out


def test_submit_answers_202_with_a_committed_row(client: TestClient, store: JobStore) -> None:
    response = _post(client, seed="7")
    assert response.status_code == 202
    job = response.json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["queue_position"] == 1
    assert job["request"]["seed"] == 7 and job["request"]["model"] == "tiny-i2vgen-xl"
    row = store.get(job["id"])  # committed before the answer
    assert (store.job_dir(row.id) / row.input_filename).is_file()


def test_seed_is_drawn_and_stored_when_missing(client: TestClient) -> None:
    job = _post(client).json()
    assert isinstance(job["request"]["seed"], int)


def test_get_list_filter_and_paging(client: TestClient, store: JobStore) -> None:
    ids = [_post(client).json()["id"] for _ in range(5)]
    listed = client.get("/api/v1/jobs", params={"limit": 2, "offset": 1}).json()
    assert listed["total"] == 5 and listed["limit"] == 2 and listed["offset"] == 1
    assert [j["id"] for j in listed["jobs"]] == ids[::-1][1:3]  # newest first
    store.request_cancel(ids[0])
    cancelled = client.get("/api/v1/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["jobs"]] == [ids[0]]
    both = client.get("/api/v1/jobs", params=[("status", "cancelled"), ("status", "queued")]).json()
    assert both["total"] == 5
    assert client.get("/api/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/v1/jobs", params={"limit": 0}).json()["error"]["field"] == "limit"
    one = client.get(f"/api/v1/jobs/{ids[2]}").json()
    assert one["id"] == ids[2] and one["queue_position"] == 2


def test_idempotency_key_returns_the_first_job(client: TestClient, settings: Any) -> None:
    first = _post(client, headers={"Idempotency-Key": "abc-123"})
    again = _post(client, headers={"Idempotency-Key": "abc-123"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.get("/api/v1/jobs").json()["total"] == 1
    assert [p.name for p in settings.jobs_dir.iterdir()] == [first.json()["id"]]
    assert leftovers(settings) == [f"jobs/{first.json()['id']}", f"jobs/{first.json()['id']}/input.png"]
    reused = _post(client, headers={"Idempotency-Key": "abc-123"}, prompt="something else")
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    # The same fields with another picture is another request too: never a replay of the first video.
    other_image = _post(client, headers={"Idempotency-Key": "abc-123"}, image=png_bytes(colour=(0, 90, 200)))
    assert other_image.status_code == 422, other_image.text
    error = other_image.json()["error"]
    assert (error["code"], error["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert "image" in error["message"]
    assert client.get("/api/v1/jobs").json()["total"] == 1
    assert leftovers(settings) == [f"jobs/{first.json()['id']}", f"jobs/{first.json()['id']}/input.png"]


def test_cancel_codes(client: TestClient, store: JobStore) -> None:
    queued = _post(client).json()["id"]
    response = client.post(f"/api/v1/jobs/{queued}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/jobs/{queued}/cancel").status_code == 200  # idempotent

    running = _post(client).json()["id"]
    store.claim_next(WORKER)
    response = client.post(f"/api/v1/jobs/{running}/cancel")
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
    store.finish_cancelled(running)

    done = _post(client).json()["id"]
    _finish(store, done)
    response = client.post(f"/api/v1/jobs/{done}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "invalid_transition"
    assert client.get(f"/api/v1/jobs/{done}/video").status_code == 200  # output kept


def test_delete_codes(client: TestClient, store: JobStore, settings: Any) -> None:
    running = _post(client).json()["id"]
    store.claim_next(WORKER)
    response = client.delete(f"/api/v1/jobs/{running}")
    assert response.status_code == 409
    store.finish_failed(running, "oom", "out of memory")
    assert client.delete(f"/api/v1/jobs/{running}").status_code == 204
    assert client.get(f"/api/v1/jobs/{running}").status_code == 404
    assert client.delete(f"/api/v1/jobs/{running}").status_code == 404
    assert not (settings.jobs_dir / running).exists()


def test_failed_job_shows_its_error(client: TestClient, store: JobStore) -> None:
    job_id = _post(client).json()["id"]
    store.claim_next(WORKER)
    store.finish_failed(job_id, "cannot_fit", "Nothing fits in 2 GiB; try 512p.")
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["error"] == {
        "code": "cannot_fit",
        "message": "Nothing fits in 2 GiB; try 512p.",
        "field": None,
    }
    assert job["links"]["video"] is None


def test_video_of_a_job_that_will_never_have_one_says_so(client: TestClient, store: JobStore) -> None:
    queued = _post(client).json()["id"]
    waiting = client.get(f"/api/v1/jobs/{queued}/video").json()["error"]
    assert waiting["code"] == "job_not_finished" and "not ready yet" in waiting["message"]

    store.request_cancel(queued)
    cancelled = client.get(f"/api/v1/jobs/{queued}/video")
    assert cancelled.status_code == 409
    error = cancelled.json()["error"]
    assert error["code"] == "job_has_no_video" and "cancelled" in error["message"]
    assert "never" in error["message"] and "yet" not in error["message"]

    failed = _post(client).json()["id"]
    store.claim_next(WORKER)
    store.finish_failed(failed, "oom", "out of memory")
    error = client.get(f"/api/v1/jobs/{failed}/video").json()["error"]
    assert error["code"] == "job_has_no_video" and "failed (oom)" in error["message"]


def test_video_range_requests(client: TestClient, store: JobStore) -> None:
    job_id = _post(client).json()["id"]
    assert client.get(f"/api/v1/jobs/{job_id}/video").status_code == 409  # not finished
    out = _finish(store, job_id)
    size = out.stat().st_size
    full = client.get(f"/api/v1/jobs/{job_id}/video")
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    assert full.content == out.read_bytes() and full.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/v1/jobs/{job_id}/video", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-99/{size}"
    assert part.content == out.read_bytes()[10:100]
    tail = client.get(f"/api/v1/jobs/{job_id}/video", headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == out.read_bytes()[-16:]
    bad = client.get(f"/api/v1/jobs/{job_id}/video", headers={"Range": f"bytes={size + 10}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"
    out.unlink()  # F22: deleted behind our back
    gone = client.get(f"/api/v1/jobs/{job_id}/video")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "output_deleted"
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"  # the row is kept


def _read_sse(base: str, job_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    with (
        httpx.Client(base_url=base, timeout=30) as http,
        http.stream("GET", f"/api/v1/jobs/{job_id}/events") as r,
    ):
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line[6:])))
                if kind == "done":
                    return


def test_sse_progress_in_order_then_terminal(client: TestClient, store: JobStore) -> None:
    job_id = _post(client).json()["id"]
    events: list[tuple[str, dict[str, Any]]] = []
    with live_server(client.app) as base:  # type: ignore[arg-type]
        reader = threading.Thread(target=_read_sse, args=(base, job_id, events))
        reader.start()
        time.sleep(0.5)
        store.claim_next(WORKER)
        for step in range(1, 5):
            store.update_progress(
                job_id,
                {
                    "stage": "denoise",
                    "step": step,
                    "total_steps": 4,
                    "elapsed_s": step * 0.1,
                    "eta_s": (4 - step) * 0.1,
                    "message": "",
                },
            )
            time.sleep(2 * SSE_POLL_S + 0.2)  # the stream re-reads every SSE_POLL_S: it sees each step
        _finish_claimed(store, job_id)
        reader.join(timeout=30)
    assert not reader.is_alive()
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert events[0][1]["status"] == "queued"
    steps = [e["progress"]["step"] for _, e in events if e["status"] == "running" and e["progress"]]
    assert steps == sorted(steps) and steps[-1] == 4 and len(steps) >= 3
    assert events[-1][1]["status"] == "succeeded"


def _finish_claimed(store: JobStore, job_id: str) -> None:
    out = store.job_dir(job_id) / "video.mp4"
    sha = _write_mp4(out)
    store.finish_succeeded(job_id, "video.mp4", sha, {"sha256": sha})


def test_sse_of_a_job_deleted_meanwhile_ends_cleanly(client: TestClient) -> None:
    job_id = _post(client).json()["id"]
    with live_server(client.app) as base, httpx.Client(base_url=base, timeout=30) as http:  # type: ignore[arg-type]
        with http.stream("GET", f"/api/v1/jobs/{job_id}/events") as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event: ")) == "event: job"
            assert http.delete(f"/api/v1/jobs/{job_id}").status_code == 204
            rest = list(lines)  # the server ends the stream properly: no broken chunked encoding
        assert "event: done" not in rest
        assert http.get(f"/api/v1/jobs/{job_id}/events").status_code == 404


def test_sse_for_a_finished_job_ends_at_once(client: TestClient, store: JobStore) -> None:
    job_id = _post(client).json()["id"]
    store.request_cancel(job_id)
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    assert "event: done" in body and '"status": "cancelled"' in body


def test_models_and_health(client: TestClient) -> None:
    models = client.get("/api/v1/models").json()
    names = [m["name"] for m in models["models"]]
    assert "tiny-i2vgen-xl" in names and "i2vgen-xl" in names
    assert models["default_model"] == "tiny-i2vgen-xl"
    assert [m["name"] for m in models["models"] if m["default"]] == ["tiny-i2vgen-xl"]
    health = client.get("/api/v1/health").json()
    assert health["ok"] is True and health["worker"]["status"] == "disabled"
    assert health["queue_depth"] == 0 and health["version"]


def test_plan_without_and_with_image(client: TestClient) -> None:
    response = client.post("/api/v1/plan", data={"prompt": "x", "height": "64", "width": "64"})
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["fits"] is True and plan["request"]["height"] == 64 and plan["plan"]
    host = plan["plan"]["estimate"]["host"]  # host memory per stage, in every plan (docs/memory.md 9)
    assert host["peak_gib"] >= host["runtime_gib"] > 0 and host["peak_stage"] in ("load", "place", "run")
    with_image = client.post(
        "/api/v1/plan",
        files={"image": ("p.png", png_bytes(128, 64), "image/png")},
        data={"prompt": "x", "resolution": "512p"},
    ).json()
    assert with_image["request"]["width"] > with_image["request"]["height"]  # the image's aspect kept
    bad = client.post("/api/v1/plan", data={"prompt": "x", "num_frames": "1000"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "num_frames"


def test_plan_that_cannot_fit_is_a_normal_answer(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from stillmotion.errors import CannotFit

    class NoRoom:
        def plan(self, *args: Any, **kwargs: Any) -> Any:
            raise CannotFit("Nothing fits in 1 GiB; 256p with 8 frames would.")

    client.app.state.service._engine = NoRoom()  # type: ignore[attr-defined]
    body = client.post("/api/v1/plan", data={"prompt": "x"}).json()
    assert body["fits"] is False and "256p" in body["message"] and body["plan"] is None


def test_storage_errors_are_503(
    client: TestClient, store: JobStore, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from stillmotion.jobs.store.job_store import DatabaseUnavailable

    def full(**kwargs: Any) -> Any:
        raise DatabaseUnavailable("the database disk is full")

    monkeypatch.setattr(store, "create", full)
    response = _post(client)
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert leftovers(settings) == []
    monkeypatch.undo()
    assert client.get("/api/v1/jobs").json()["total"] == 0


def test_shutting_down_refuses_new_jobs(client: TestClient, settings: Any) -> None:
    client.app.state.service.accepting = False  # type: ignore[attr-defined]
    response = _post(client)
    assert response.status_code == 503 and response.json()["error"]["code"] == "shutting_down"
    assert client.get("/api/v1/health").json()["accepting_jobs"] is False


def test_a_finished_job_has_no_eta(client: TestClient, store: JobStore) -> None:
    """The last progress write can carry a small ETA; once the job is done nothing is left to wait for."""
    job_id = _post(client).json()["id"]
    assert store.claim_next(WORKER) is not None
    store.update_progress(
        job_id, {"stage": "write", "step": 2, "total_steps": 2, "elapsed_s": 1, "eta_s": 0.77}
    )
    running = client.get(f"/api/v1/jobs/{job_id}").json()
    assert running["progress"]["eta_s"] == 0.77
    _finish_claimed(store, job_id)
    done = client.get(f"/api/v1/jobs/{job_id}").json()
    assert done["status"] == "succeeded" and done["progress"]["eta_s"] is None


def test_plan_on_a_cpu_checks_host_memory_and_needs_no_prompt(tmp_path: Path) -> None:
    """A CPU-only server never answers fits: true for what its memory cannot hold."""
    settings = make_settings(tmp_path / "data", vram_budget_gb=4)  # the cap applies to host memory too
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        big = client.post("/api/v1/plan", data={"model": "i2vgen-xl", "resolution": "512p"}).json()
        assert big["fits"] is False and "host memory available (running on the CPU)" in big["message"]
        assert big["request"]["width"] == 512 and big["request"]["prompt"] == ""
        small = client.post("/api/v1/plan", data={"height": "64", "width": "64", "num_frames": "8"}).json()
        assert small["fits"] is True and "host memory available" in small["plan"]["reason"]


def test_the_api_process_takes_back_a_dead_workers_job_on_its_own(tmp_path: Path) -> None:
    """Issue 19.3: the lease reaper runs in the API process too, so a dead worker's job comes back even when
    no worker is idle (here: none runs at all) to take it back."""
    settings = make_settings(tmp_path / "data", lease_s=1.0)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        job_id = _post(client).json()["id"]
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        assert store.claim_next("a-worker-that-dies") is not None  # ...and never renews the lease
        deadline = time.monotonic() + 30
        while (job := client.get(f"/api/v1/jobs/{job_id}").json())["status"] == "running":
            assert time.monotonic() < deadline, "the API process never took the job back"
            time.sleep(0.1)
        assert (job["status"], job["attempts"]) == ("queued", 2)
        (event,) = [e for e in store.events(job_id) if e["kind"] == "interrupted"]
        assert event["detail"]["reason_code"] == "lease_expired"


def test_database_errors_reach_clients_as_503_with_retry_after(tmp_path: Path) -> None:
    """Issue 19.1 on SQLite: the database file cannot be opened. Reads and submissions answer 503
    database_unavailable with Retry-After (never 500); /health says ok: false and why, and recovers on its
    own once the file is back."""
    settings = make_settings(tmp_path / "data")
    outage = SqliteOutage(settings.db_path)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        job_id = _post(client).json()["id"]
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        outage.begin(store)
        try:
            for answer in (
                client.get("/api/v1/jobs"),
                client.get(f"/api/v1/jobs/{job_id}"),
                client.post(f"/api/v1/jobs/{job_id}/cancel"),
                _post(client),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "database_unavailable"
                assert int(answer.headers["Retry-After"]) > 0
            deadline = time.monotonic() + 10
            while (health := client.get("/api/v1/health").json())["ok"]:
                assert time.monotonic() < deadline, "health never noticed the outage"
                time.sleep(0.1)
            assert health["accepting_jobs"] is False
            assert [p["code"] for p in health["problems"]] == ["database_unavailable"]
        finally:
            outage.end()
        deadline = time.monotonic() + 10
        while not client.get("/api/v1/health").json()["ok"]:
            assert time.monotonic() < deadline, "health never recovered"
            time.sleep(0.1)
        assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"
        assert client.get("/api/v1/jobs").json()["total"] == 1  # the refused submission left nothing
