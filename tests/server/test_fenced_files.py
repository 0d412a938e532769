"""Fenced files (issue 19.4): a run that lost its lease writes nothing more to the job's folder.

The real ``stillmotion serve --workers 2`` over PostgreSQL, leases of 4 s, a checkpoint after every step and
steps slowed to about a second. The worker running a job is paused (SIGSTOP) past its lease: the API
process's reaper takes the job back, the other worker resumes it from its checkpoint and finishes it. Then
the paused worker is resumed (SIGCONT): it finds the job gone and stops, and the job's folder is as the
lease holder left it, file for file and byte for byte: no checkpoint, no video of the stale run in it.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stillmotion.faults import FAULTS_ENV
from tests.server.helpers import (
    BASE,
    free_port,
    png_bytes,
    server_process,
    small_job_fields,
    wait_for,
    wait_terminal,
)
from tests.support.throwaway_postgres import ThrowawayPostgres

pytestmark = pytest.mark.timeout(300)

JOBS = "/api/v1/jobs"
LEASE_S = 4.0
DEADLINE_S = 180.0


def _folder(job_dir: Path) -> dict[str, str]:
    """Every file of the job's folder with its sha256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(job_dir.iterdir())}


def _holder(http: httpx.Client, job_id: str) -> dict[str, Any] | None:
    """The /health entry of the worker running ``job_id`` once it is past its second step."""
    job = http.get(f"{JOBS}/{job_id}").json()
    if int((job.get("progress") or {}).get("step") or 0) < 2:
        return None
    workers = http.get("/api/v1/health").json()["workers"]
    return next((w for w in workers if w["current_job_id"] == job_id), None)


@pytest.fixture
def paused() -> Iterator[list[int]]:
    """Pids the test stopped: resumed at the end whatever happens, so no process stays frozen."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_a_run_paused_past_its_lease_writes_nothing_to_the_job_folder(
    tmp_path: Path, postgres_server: ThrowawayPostgres, paused: list[int]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    env = {
        "STILLMOTION_DATABASE_URL": postgres_server.create_database(),
        "STILLMOTION_WORKERS": "2",
        "STILLMOTION_LEASE_S": str(LEASE_S),
        "STILLMOTION_CHECKPOINT_INTERVAL_S": "0",
        FAULTS_ENV: "slow@step:all@attempt:all",
        "OMP_NUM_THREADS": "1",
    }
    with server_process(data_dir, port, **env), httpx.Client(base_url=f"{BASE}:{port}", timeout=30) as http:
        wait_for("two ready workers", lambda: http.get("/api/v1/health").json()["ready_workers"] == 2, 120)
        submitted = http.post(
            JOBS,
            files={"image": ("in.png", png_bytes(64, 64), "image/png")},
            data=small_job_fields(num_inference_steps="8"),
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        job_dir = data_dir / "jobs" / job_id

        stale = wait_for("the job mid-run", lambda: _holder(http, job_id), DEADLINE_S)
        os.kill(stale["pid"], signal.SIGSTOP)
        paused.append(stale["pid"])

        done = wait_terminal(http, job_id, timeout_s=DEADLINE_S)  # taken back, resumed, finished elsewhere
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
        assert any("resumed after denoising step" in w for w in done["result"]["warnings"])
        holders_files = _folder(job_dir)

        os.kill(stale["pid"], signal.SIGCONT)
        log = data_dir / "logs" / stale["node"] / f"{stale['worker_id']}.log"
        wait_for(
            "the resumed worker to notice",
            lambda: log.is_file() and f"job {job_id} stopped: this worker lost its lease" in log.read_text(),
            DEADLINE_S,
        )
        after = _folder(job_dir)
        # Nothing new, nothing changed: at most the stale run's own unfinished temp file went away.
        assert after.items() <= holders_files.items(), (holders_files, after)
        assert sorted(after) == ["input.png", f"stillmotion-{job_id}.mp4", f"stillmotion-{job_id}.mp4.json"]
        video = http.get(f"{JOBS}/{job_id}/video")
        assert hashlib.sha256(video.content).hexdigest() == done["result"]["sha256"]
        assert http.get(f"{JOBS}/{job_id}").json()["status"] == "succeeded"
