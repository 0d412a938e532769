"""F3 (RELIABILITY 3.2): SIGKILL of the whole real service (`stillmotion serve`: uvicorn, the API, the
supervisor and its worker) with one job running and 50 queued, then a restart on the same data folder.

Expected (I1, I2, I4): every acknowledged job is still there; after the restart all of them finish, in
submission order (the interrupted one first, re-queued with attempt 2, never `cancelled`), each exactly once
with exactly one output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from stillmotion.faults import FAULTS_ENV
from stillmotion.server.app import SHUTDOWN_GRACE_S
from tests.server.helpers import BASE, REPO_ROOT, free_port, png_bytes, small_job_fields, wait_healthy

pytestmark = pytest.mark.timeout(420)

QUEUED = 50


def _serve(data_dir: Path, port: int, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`stillmotion serve` (the CLI's own entry point) as the leader of a new process group."""
    environ = dict(os.environ)
    environ.pop(FAULTS_ENV, None)
    environ.update(
        STILLMOTION_DATA_DIR=str(data_dir),
        STILLMOTION_DEFAULT_MODEL="tiny-i2vgen-xl",
        STILLMOTION_DEVICE="cpu",
        STILLMOTION_MIN_FREE_DISK_MB="0",
        GRADIO_ANALYTICS_ENABLED="False",
        OMP_NUM_THREADS="1",  # two torch threads fighting the API and the test for 2 cores run 5-10x slower
        **env,
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stillmotion.cli", "serve", "--port", str(port)],
            env=environ,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups to SIGKILL at the end, pass or fail (the service's and its worker's)."""
    started: list[int] = []
    try:
        yield started
    finally:
        for pgid in started:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_f3_sigkill_of_the_real_service_group_loses_nothing(tmp_path: Path, groups: list[int]) -> None:
    data_dir, port = tmp_path / "data", free_port()
    base = f"{BASE}:{port}"
    log = tmp_path / "serve.log"
    # First life: every step takes a second, so the first job is mid-run and the other 50 wait.
    service = _serve(data_dir, port, log, **{FAULTS_ENV: "slow@step:all"})
    groups.append(service.pid)
    wait_healthy(base, service)
    worker_pid = psutil.Process(service.pid).children()[0].pid
    groups.append(worker_pid)  # the worker leads a group of its own
    with httpx.Client(base_url=base, timeout=30) as http:

        def submit(index: int) -> str:
            # The running job has steps to be killed in; the 50 waiting ones need only one each.
            steps = "4" if index == 0 else "1"
            response = http.post(
                "/api/v1/jobs",
                files={"image": ("in.png", png_bytes(), "image/png")},
                data=small_job_fields(prompt=f"job {index}", num_inference_steps=steps),
            )
            assert response.status_code == 202, response.text
            job_id: str = response.json()["id"]
            return job_id

        ids = [submit(0)]
        deadline = time.monotonic() + 60
        while (http.get(f"/api/v1/jobs/{ids[0]}").json()["progress"] or {}).get("step", 0) < 1:
            assert time.monotonic() < deadline, "the first job never started"
            time.sleep(0.1)
        ids += [submit(i) for i in range(1, QUEUED + 1)]

    os.killpg(service.pid, signal.SIGKILL)  # uvicorn, the app, the supervisor: no cleanup runs
    service.wait(timeout=10)
    deadline = time.monotonic() + 15
    while not _gone(worker_pid):  # the orphaned worker sees its supervisor gone and kills itself
        assert time.monotonic() < deadline, "the worker outlived its service"
        time.sleep(0.1)

    # Second life on the same data folder, without the slow switch.
    service = _serve(data_dir, port, log)
    groups.append(service.pid)
    wait_healthy(base, service)
    with httpx.Client(base_url=base, timeout=30) as http:
        deadline = time.monotonic() + 300
        while True:
            listed = http.get("/api/v1/jobs", params={"limit": 500}).json()
            if all(job["status"] in ("succeeded", "failed", "cancelled") for job in listed["jobs"]):
                break
            assert time.monotonic() < deadline, "the jobs did not all finish after the restart"
            time.sleep(0.5)
        assert listed["total"] == QUEUED + 1  # I1: every acknowledged job is still there, none added
        jobs = {job["id"]: job for job in listed["jobs"]}
        assert [jobs[i]["status"] for i in ids] == ["succeeded"] * len(ids)  # none cancelled or failed
        assert [jobs[i]["attempts"] for i in ids] == [2] + [1] * QUEUED
        finished = sorted(ids, key=lambda i: jobs[i]["finished_at"])
        assert finished == ids  # FIFO, the interrupted job first
        for job_id in ids:
            kinds = [e["kind"] for e in service_events(data_dir, job_id)]
            assert kinds.count("succeeded") == 1 and kinds.count("running") == jobs[job_id]["attempts"]
            folder = data_dir / "jobs" / job_id
            video = f"stillmotion-{job_id}.mp4"
            assert sorted(p.name for p in folder.iterdir()) == ["input.png", video, f"{video}.json"]
        assert "interrupted" in [e["kind"] for e in service_events(data_dir, ids[0])]
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=60) == 0


def service_events(data_dir: Path, job_id: str) -> list[dict[str, object]]:
    """The job's history from the store the service wrote (read-only; the service is still running)."""
    from stillmotion.jobs.store.job_store import JobStore
    from tests.server.helpers import make_settings

    store = JobStore.open(make_settings(data_dir))
    try:
        return store.events(job_id)
    finally:
        store.close()


def test_ctrl_c_stops_at_the_next_step_and_the_restart_resumes_there(
    tmp_path: Path, groups: list[int]
) -> None:
    """14.18: Ctrl-C says at once what happens, stops within a step (not after a 30 s drain), and the job
    goes back to the queue without spending an attempt; the next start resumes it after its last step."""
    data_dir, port = tmp_path / "data", free_port()
    base = f"{BASE}:{port}"
    log = tmp_path / "serve.log"
    service = _serve(data_dir, port, log, **{FAULTS_ENV: "slow@step:all"})  # a second per step
    groups.append(service.pid)
    wait_healthy(base, service)
    with httpx.Client(base_url=base, timeout=30) as http:
        job = http.post(
            "/api/v1/jobs",
            files={"image": ("in.png", png_bytes(), "image/png")},
            data=small_job_fields(num_inference_steps="12"),
        ).json()
        deadline = time.monotonic() + 60
        while (http.get(f"/api/v1/jobs/{job['id']}").json()["progress"] or {}).get("step", 0) < 3:
            assert time.monotonic() < deadline, "the job never got to step 3"
            time.sleep(0.1)
    # A browser tab left open and a client following the job: streams that never end by themselves.
    streams = [
        _Follower(base, f"/api/v1/jobs/{job['id']}/events"),
        _Follower(base, "/gradio_api/heartbeat/opentab"),
    ]
    pressed = time.monotonic()
    service.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal of `make run` sends
    deadline = pressed + 5
    while "stopping now" not in log.read_text():
        assert time.monotonic() < deadline, "Ctrl-C was not acknowledged at once"
        time.sleep(0.05)
    assert service.wait(timeout=60) == 0
    stopped_in = time.monotonic() - pressed
    assert stopped_in < SHUTDOWN_GRACE_S, f"Ctrl-C waited {stopped_in:.0f} s: a drain, not a stop"
    for stream in streams:  # ended by the server, not cut off after uvicorn's grace
        stream.join(timeout=10)
        assert stream.received and stream.ended_cleanly, (stream.path, stream.received, stream.error)
    assert "timeout graceful shutdown exceeded" not in log.read_text()

    service = _serve(data_dir, port, log)  # no slow switch this time
    groups.append(service.pid)
    wait_healthy(base, service)
    with httpx.Client(base_url=base, timeout=30) as http:
        deadline = time.monotonic() + 120
        while (done := http.get(f"/api/v1/jobs/{job['id']}").json())["status"] != "succeeded":
            assert done["status"] in ("queued", "running") and time.monotonic() < deadline, done
            time.sleep(0.2)
    assert done["attempts"] == 1  # a stop is not the job's fault: no attempt spent
    resumed = [w for w in done["result"]["warnings"] if w.startswith("resumed after denoising step")]
    assert resumed and int(resumed[0].split()[4].rstrip(",")) >= 3, done["result"]["warnings"]
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=60) == 0


class _Follower(threading.Thread):
    """Reads a streaming response until the server ends it (``ended_cleanly``) or the connection breaks."""

    def __init__(self, base: str, path: str) -> None:
        super().__init__(daemon=True)
        self.base, self.path = base, path
        self.received = 0
        self.ended_cleanly = False
        self.error: str | None = None
        self.opened = threading.Event()
        self.start()
        assert self.opened.wait(30), f"{path} did not start streaming"

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.base + self.path, timeout=httpx.Timeout(10, read=120)) as response:
                response.raise_for_status()
                for chunk in response.iter_raw():
                    self.received += len(chunk)
                    self.opened.set()
            self.ended_cleanly = True
        except httpx.HTTPError as exc:
            self.error = repr(exc)
        finally:
            self.opened.set()
