"""A data disk that fills up, for real (a small tmpfs; tests/server/small_disk.py): issue 15.3-15.5, 15.7 and
RELIABILITY F9/F10.

- An upload that meets a full disk answers 507, leaves no temp file and no row (15.3).
- /health and POST /jobs agree: while the disk is below the floor, health says ok: false, why, and
  accepting_jobs: false, and POST answers 507 with the same words (15.5).
- F9/F10: the disk fills exactly when the video is written: no file at the final path, the job goes back
  to the queue (attempt counted), submissions get 507 and create nothing, reads still work; once space is
  freed the same worker finishes the job.
- Issue 19.5: the disk fills as a checkpoint is saved: the same path as during the video write (re-queued,
  then resumed from the last saved step once space is freed).
- The disk filling completely during a job, under the real `stillmotion serve`: the worker stays up (no
  restart), the job goes back to the queue (or waits to be recorded) instead of "running" forever, health
  says why, and once space is freed the job finishes, at attempt 2 (15.4). No answer names the data folder's
  path (15.7).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stillmotion.engine.engine import Engine
from stillmotion.engine.hooks import Callbacks, EngineHooks
from stillmotion.engine.progress import ProgressEvent, Stage
from stillmotion.engine.request import ResolvedRequest
from stillmotion.engine.result import GenerationResult, PlanReport
from stillmotion.faults import FAULTS_ENV
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.workers.worker import Worker, output_filename
from stillmotion.media.image_input import InputImage
from stillmotion.server.app import create_app
from tests.server.helpers import (
    BASE,
    free_port,
    leftovers,
    make_settings,
    png_bytes,
    server_process,
    small_job_fields,
    wait_for,
    wait_terminal,
)
from tests.server.small_disk import fill, free_mb, free_space, small_disk
from tests.support.engine_hooks import CheckpointHook

pytestmark = pytest.mark.timeout(240)

JOBS = "/api/v1/jobs"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB file system as the data folder."""
    with small_disk(tmp_path / "data", 24) as path:
        yield path


def _no_paths(data_dir: Path, *answers: httpx.Response) -> None:
    for answer in answers:
        assert str(data_dir) not in answer.text and str(data_dir.resolve()) not in answer.text, answer.text


def test_upload_that_meets_a_full_disk_is_507_and_leaves_nothing(disk: Path) -> None:
    settings = make_settings(disk, min_free_disk_mb=0)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        fill(disk, leave_mb=2.5)  # above the 1 MB floor, so admission lets the upload in...
        wait_for(
            "health to see the fuller disk",
            lambda: client.get("/api/v1/health").json()["free_disk_mb"] < 3,
            10,
        )
        assert client.get("/api/v1/health").json()["accepting_jobs"] is True
        big = png_bytes() + b"\0" * (6 << 20)  # ...and the upload itself cannot fit
        response = client.post(JOBS, files={"image": ("big.png", big, "image/png")}, data=small_job_fields())
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert error["code"] == "insufficient_storage" and "ran out of space" in error["message"]
        assert "Retry-After" in response.headers
        _no_paths(disk, response)
        assert leftovers(settings) == []
        assert client.app.state.store.list()[1] == 0  # type: ignore[attr-defined]

        free_space(disk)
        retry = client.post(
            JOBS, files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
        )
        assert retry.status_code == 202, retry.text


def test_health_and_admission_agree_on_a_low_disk(disk: Path) -> None:
    settings = make_settings(disk, min_free_disk_mb=8)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        assert client.get("/api/v1/health").json()["accepting_jobs"] is True
        fill(disk, leave_mb=4)  # below the 8 MB floor: every POST is 507
        wait_for(
            "health to see the fuller disk",
            lambda: client.get("/api/v1/health").json()["free_disk_mb"] < 8,
            10,
        )
        refused = client.post(
            JOBS, files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
        )
        health = client.get("/api/v1/health")
        assert refused.status_code == 507
        body = health.json()
        assert body["ok"] is False and body["accepting_jobs"] is False
        assert body["problems"][0] == {
            "code": "insufficient_storage",
            "message": refused.json()["error"]["message"],
        }
        assert body["free_disk_mb"] < 8
        _no_paths(disk, refused, health)
        free_space(disk)
        wait_for("health to see the room", lambda: client.get("/api/v1/health").json()["ok"], 10)


class FillAtWrite:
    """The real engine, except that the data disk fills up completely as the video starts being written."""

    def __init__(self, engine: Engine, disk: Path) -> None:
        self.engine, self.disk = engine, disk
        self.filled = threading.Event()

    def plan(self, request: ResolvedRequest) -> PlanReport:
        return self.engine.plan(request)

    def generate(
        self,
        request: ResolvedRequest,
        image: InputImage,
        output_path: Path,
        hooks: Sequence[EngineHooks] = (),
        **more: Any,  # cancel, resume: passed on as they are
    ) -> GenerationResult:
        def progress(event: ProgressEvent) -> None:
            if event.stage is Stage.WRITE and not self.filled.is_set():
                fill(self.disk)
                self.filled.set()

        return self.engine.generate(
            request, image, output_path, [Callbacks(on_progress=progress), *hooks], **more
        )


def test_f9_f10_the_video_write_meets_a_really_full_disk(disk: Path, tmp_path: Path) -> None:
    settings = make_settings(disk, min_free_disk_mb=0)
    engine = FillAtWrite(Engine(make_settings(tmp_path / "engine")), disk)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        job_id = client.post(
            JOBS, files={"image": ("a.png", png_bytes(64, 64), "image/png")}, data=small_job_fields()
        ).json()["id"]
        worker = Worker(settings, store, engine)
        thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 2}, daemon=True)
        thread.start()
        try:
            assert engine.filled.wait(120)
            job_dir = store.job_dir(job_id)
            # F9: nothing at the final path, no temp file beside it, the input kept for the retry.
            wait_for(
                "the partial video to go",
                lambda: sorted(p.name for p in job_dir.iterdir()) == ["input.png"],
                30,
            )
            # F10: reads still work; a submission is refused and creates nothing.
            assert store.get(job_id).status in ("queued", "running")
            wait_for("health to see the full disk", lambda: not client.get("/api/v1/health").json()["ok"], 10)
            refused = client.post(
                JOBS, files={"image": ("b.png", png_bytes(), "image/png")}, data=small_job_fields()
            )
            assert refused.status_code == 507 and store.list()[1] == 1
            _no_paths(disk, refused, client.get(f"{JOBS}/{job_id}"))
            time.sleep(2)
            assert thread.is_alive()  # waiting for room, not dead
            free_space(disk)
            thread.join(timeout=120)
            assert not thread.is_alive()
        finally:
            worker.drain()
            free_space(disk)
        job = store.get(job_id)
        assert (job.status, job.attempts) == ("succeeded", 2), (job.error_code, job.error_message)
        video = output_filename(job_id)
        assert sorted(p.name for p in job_dir.iterdir()) == ["input.png", video, f"{video}.json"]
        kinds = [e["kind"] for e in store.events(job_id)]
        assert kinds == ["created", "running", "interrupted", "running", "succeeded"]


def _health(http: httpx.Client) -> dict[str, Any]:
    answer: dict[str, Any] = http.get("/api/v1/health").json()
    return answer


def test_disk_full_during_a_job_worker_stays_up_and_the_job_finishes_after(disk: Path) -> None:
    port = free_port()
    # Each denoising step takes 1 s more on the first attempt, so the disk fills while the job runs.
    env = {
        "STILLMOTION_MIN_FREE_DISK_MB": "2",
        FAULTS_ENV: "slow@step:all",
        "OMP_NUM_THREADS": "1",
    }
    with server_process(disk, port, **env), httpx.Client(base_url=f"{BASE}:{port}", timeout=30) as http:
        first_pid = _health(http)["worker"]["pid"]
        submitted = http.post(
            JOBS,
            files={"image": ("a.png", png_bytes(64, 64), "image/png")},
            data=small_job_fields(num_inference_steps="6"),
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        wait_for(
            "the job to reach step 2",
            lambda: (http.get(f"{JOBS}/{job_id}").json().get("progress") or {}).get("step", 0) >= 2,
            90,
        )

        fill(disk)  # completely: not one more page fits
        assert free_mb(disk) < 0.1
        # The job cannot be finished or recorded: it goes back to the queue (or, while not even that can be
        # written, waits in the worker) and the service says why, instead of a worker crash loop.
        health = wait_for(
            "health to report the full disk", lambda: (h := _health(http))["ok"] is False and h, 15
        )
        assert health["accepting_jobs"] is False
        assert health["problems"][0]["code"] == "insufficient_storage"
        time.sleep(12)  # long enough for the old crash loop to show (a restart within seconds)
        health = _health(http)
        assert health["worker"]["pid"] == first_pid and health["worker"]["restarts"] == 0
        assert health["worker"]["status"] == "running"
        job = http.get(f"{JOBS}/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        refused = http.post(
            JOBS, files={"image": ("b.png", png_bytes(), "image/png")}, data=small_job_fields()
        )
        assert refused.status_code == 507 and refused.json()["error"]["code"] == "insufficient_storage"
        assert http.get(JOBS).json()["total"] == 1  # nothing was created for the refused one
        _no_paths(disk, refused, http.get("/api/v1/health"), http.get(f"{JOBS}/{job_id}"))

        free_space(disk)
        done = wait_terminal(http, job_id, timeout_s=120)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2  # the attempt that met the full disk counts (docs/jobs.md)
        video = http.get(f"{JOBS}/{job_id}/video")
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        health = wait_for("health to recover", lambda: (h := _health(http))["ok"] and h, 15)
        assert health["accepting_jobs"] is True
        assert health["worker"]["pid"] == first_pid and health["worker"]["restarts"] == 0
        assert sorted(p.name for p in (disk / "jobs" / job_id).iterdir()) == [
            "input.png",
            output_filename(job_id),
            output_filename(job_id) + ".json",
        ]
        events = json.dumps(http.get(f"{JOBS}/{job_id}").json())
        _no_paths(disk, video)
        assert str(disk) not in events


def test_the_disk_fills_while_a_checkpoint_is_saved_and_the_job_finishes_once_there_is_room(
    disk: Path, tmp_path: Path
) -> None:
    """Issue 19.5: a disk that fills during a checkpoint save is the service's trouble, as during the video
    write: the job goes back to the queue (not failed), the worker waits for room, and once space is freed
    the job runs again from its last saved step and finishes."""
    settings = make_settings(disk, min_free_disk_mb=0, checkpoint_interval_s=0)  # a checkpoint every step
    filled = threading.Event()

    def fill_up() -> None:
        if not filled.is_set():
            fill(disk)
            filled.set()

    engine = CheckpointHook(Engine(make_settings(tmp_path / "engine")), 2, fill_up)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        job_id = client.post(
            JOBS,
            files={"image": ("a.png", png_bytes(64, 64), "image/png")},
            data=small_job_fields(num_inference_steps="4"),
        ).json()["id"]
        worker = Worker(settings, store, engine)  # type: ignore[arg-type]
        thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 2}, daemon=True)
        thread.start()
        try:
            assert filled.wait(120)
            wait_for("health to see the full disk", lambda: not client.get("/api/v1/health").json()["ok"], 10)
            assert store.get(job_id).status in ("queued", "running")  # not failed: waiting for room
            assert thread.is_alive()
            free_space(disk)
            thread.join(timeout=120)
            assert not thread.is_alive()
        finally:
            worker.drain()
            free_space(disk)
        job = store.get(job_id)
        assert (job.status, job.attempts) == ("succeeded", 2), (job.error_code, job.error_message)
        assert any("resumed after denoising step 1" in w for w in (job.result or {})["warnings"])
        interrupted = [e for e in store.events(job_id) if e["kind"] == "interrupted"]
        assert [e["detail"]["reason_code"] for e in interrupted] == ["disk_full"]
        video = output_filename(job_id)
        assert sorted(p.name for p in store.job_dir(job_id).iterdir()) == [
            "input.png",
            video,
            f"{video}.json",
        ]
