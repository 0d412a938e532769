"""Database outages under the real service (issue 19): a real PostgreSQL server, SIGKILLed (``kill -9``) and
started again with ``pg_ctl`` by the test, under the real ``stillmotion serve`` with one worker process.

- Killed mid-burst for 5 s: no answer is a 500 (503 ``database_unavailable`` with Retry-After while it is
  down), /health says ``ok: false`` during the outage, and every acknowledged job succeeds exactly once,
  at its first attempt; the worker process never dies.
- Three 3 s outages during one running job: it succeeds at its first attempt, never interrupted.
- A 60 s outage (three leases): the service waits, accepts again once the database is back, and everything
  acknowledged finishes; the running job, whose lease lapsed meanwhile, went back to the queue without
  spending an attempt and resumed from its checkpoint.

One service (and one PostgreSQL server) for the module: it takes tens of seconds to start on two busy cores.
Each step is slowed to about a second (the ``slow`` fault switch), so a job is surely running when the
database goes away.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stillmotion.config import Settings
from stillmotion.faults import FAULTS_ENV
from stillmotion.jobs.store.job_store import JobStore
from tests.conftest import SKIP_POSTGRES_ENV
from tests.server.helpers import (
    BASE,
    free_port,
    png_bytes,
    server_process,
    small_job_fields,
    wait_for,
    wait_terminal,
)
from tests.support.throwaway_postgres import PostgresUnavailable, ThrowawayPostgres

pytestmark = pytest.mark.timeout(400)

JOBS = "/api/v1/jobs"
LEASE_S = 20.0  # far longer than the short outages and the server's restart, shorter than the long one
BURST = 16
BURST_PACE_S = 0.5  # a client submitting about twice a second: the burst outlasts the outage
SHORT_OUTAGE_S = 5.0
LONG_OUTAGE_S = 60.0
DEADLINE_S = 240.0


@dataclass
class Service:
    pg: ThrowawayPostgres
    http: httpx.Client
    store: JobStore  # the test's own view of the job table (for the jobs' histories)
    data_dir: Path

    def submit(self, steps: int = 2, seed: int = 0) -> httpx.Response:
        return self.http.post(
            JOBS,
            files={"image": ("in.png", png_bytes(64, 64), "image/png")},
            data=small_job_fields(num_inference_steps=str(steps), seed=str(seed)),
        )

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get("/api/v1/health").json()
        return answer

    def job(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get(f"{JOBS}/{job_id}").json()
        return answer

    def step(self, job_id: str) -> int:
        return int((self.job(job_id).get("progress") or {}).get("step") or 0)

    def worker(self) -> tuple[int, int]:
        """The worker process's pid and restart count."""
        worker = self.health()["worker"]
        return int(worker["pid"]), int(worker["restarts"])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if os.environ.get(SKIP_POSTGRES_ENV) == "1":
        pytest.skip(f"{SKIP_POSTGRES_ENV}=1: the PostgreSQL tests are switched off")
    try:
        pg = ThrowawayPostgres.start()  # its own server: the tests kill it
    except PostgresUnavailable as exc:
        pytest.fail(f"these tests need a PostgreSQL server they start themselves: {exc}", pytrace=False)
    data_dir = tmp_path_factory.mktemp("outages") / "data"
    data_dir.mkdir()
    url = pg.create_database()
    port = free_port()
    env = {
        "STILLMOTION_DATABASE_URL": url,
        "STILLMOTION_LEASE_S": str(LEASE_S),
        "STILLMOTION_CHECKPOINT_INTERVAL_S": "0",
        FAULTS_ENV: "slow@step:all@attempt:all",
        "OMP_NUM_THREADS": "1",
    }
    try:
        with (
            server_process(data_dir, port, **env),
            httpx.Client(base_url=f"{BASE}:{port}", timeout=30) as http,
        ):
            store = JobStore.open(Settings(data_dir=data_dir, database_url=url))
            try:
                yield Service(pg, http, store, data_dir)
            finally:
                store.close()
    finally:
        pg.stop()


@pytest.fixture
def healthy(service: Service) -> Service:
    """The service as each test finds it: the database up, the service ok, its one worker ready."""
    wait_for("the service to be healthy", lambda: service.health()["ok"], DEADLINE_S)
    return service


def _assert_succeeded_once(service: Service, job_id: str, *, interrupted_by: set[str]) -> dict[str, Any]:
    """Succeeded at its first attempt (no attempt charged), with one success and one video; the times it
    went back to the queue meanwhile were exactly for ``interrupted_by`` (reason codes)."""
    job = wait_terminal(service.http, job_id, timeout_s=DEADLINE_S)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1, f"an attempt was charged: {job}"
    video = service.http.get(f"{JOBS}/{job_id}/video")
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    job_dir = service.data_dir / "jobs" / job_id
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "input.png",
        f"stillmotion-{job_id}.mp4",
        f"stillmotion-{job_id}.mp4.json",
    ]
    history = [(e["kind"], (e["detail"] or {}).get("reason_code")) for e in service.store.events(job_id)]
    assert [kind for kind, _ in history].count("succeeded") == 1
    assert {code for kind, code in history if kind == "interrupted"} == interrupted_by
    return job


def _assert_refused_while_down(service: Service) -> None:
    """What the service says while the database is down: health not ok (and why), 503 with Retry-After."""
    health = wait_for("health to report the outage", lambda: (h := service.health())["ok"] is False and h, 15)
    assert health["accepting_jobs"] is False
    assert "database_unavailable" in [p["code"] for p in health["problems"]]
    listing = service.http.get(JOBS)
    assert listing.status_code == 503 and listing.json()["error"]["code"] == "database_unavailable"
    assert int(listing.headers["Retry-After"]) > 0
    refused = service.submit()
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "database_unavailable"


@pytest.mark.timeout(400)
def test_kill9_mid_burst_no_500_and_every_acknowledged_job_succeeds_once(healthy: Service) -> None:
    service = healthy
    worker_before = service.worker()
    acknowledged: list[str] = []
    answers: list[int] = []

    def burst() -> None:
        for seed in range(BURST):
            answer = service.submit(seed=seed)
            answers.append(answer.status_code)
            if answer.status_code == 202:
                acknowledged.append(answer.json()["id"])
            elif answer.status_code == 503:
                assert int(answer.headers["Retry-After"]) > 0
            time.sleep(BURST_PACE_S)  # a client's pace, so the burst spans the outage

    client = threading.Thread(target=burst, name="burst")
    client.start()
    try:
        wait_for("three acknowledged jobs", lambda: len(acknowledged) >= 3, DEADLINE_S)
        service.pg.kill()
        down_at = time.monotonic()
        _assert_refused_while_down(service)
        time.sleep(max(0.0, SHORT_OUTAGE_S - (time.monotonic() - down_at)))  # the rest of the outage
        service.pg.restart()
    finally:
        client.join(timeout=DEADLINE_S)
    assert set(answers) <= {202, 503} and 503 in answers, answers  # never a 500
    assert len(answers) == BURST and len(acknowledged) >= 3
    for job_id in acknowledged:
        _assert_succeeded_once(service, job_id, interrupted_by=set())
    wait_for("health to recover", lambda: service.health()["ok"], 30)
    assert service.worker() == worker_before  # the same worker process, never restarted


@pytest.mark.timeout(400)
def test_three_short_outages_during_one_job_and_it_succeeds(healthy: Service) -> None:
    service = healthy
    worker_before = service.worker()
    submitted = service.submit(steps=12)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    step = 0
    for _ in range(3):
        step = wait_for(
            "the job to move on",
            lambda last=step: (now := service.step(job_id)) >= last + 2 and now,
            DEADLINE_S,
        )
        service.pg.kill()
        time.sleep(3.0)  # the outage itself
        service.pg.restart()
    _assert_succeeded_once(service, job_id, interrupted_by=set())
    assert service.worker() == worker_before


@pytest.mark.timeout(500)
def test_a_60s_outage_is_waited_out_and_everything_acknowledged_finishes(healthy: Service) -> None:
    service = healthy
    worker_before = service.worker()
    running = service.submit(steps=40, seed=1)  # still denoising when its lease runs out
    waiting = service.submit(steps=2, seed=2)
    assert running.status_code == waiting.status_code == 202
    running_id, waiting_id = running.json()["id"], waiting.json()["id"]
    wait_for("the first job to run", lambda: service.step(running_id) >= 2, DEADLINE_S)

    service.pg.kill()
    down_at = time.monotonic()
    _assert_refused_while_down(service)
    time.sleep(max(0.0, LONG_OUTAGE_S - (time.monotonic() - down_at)))  # the rest of the outage
    _assert_refused_while_down(service)  # still saying so a minute later: no crash, no false "ok"
    service.pg.restart()

    wait_for("the service to accept jobs again", lambda: service.health()["accepting_jobs"], 30)
    after = service.submit(steps=2, seed=3)
    assert after.status_code == 202, after.text
    # Its lease lapsed during the outage: the run stopped and handed the job back, uncharged.
    done = _assert_succeeded_once(service, running_id, interrupted_by={"database_unavailable"})
    assert any("resumed after denoising step" in w for w in done["result"]["warnings"])
    _assert_succeeded_once(service, waiting_id, interrupted_by=set())
    _assert_succeeded_once(service, after.json()["id"], interrupted_by=set())
    assert service.worker() == worker_before
