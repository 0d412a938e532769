"""F19 on a real (local) Ray cluster: three nodes with one logical GPU each, the API over a real PostgreSQL
store, the tiny model. One node is removed while it runs a job: every job still succeeds once, no job ever
has two runs at the same time, and every video downloads from the API (it came back over Ray: the actors
have no access to the API's data folder but through the depot, which also hands them a job's last frame).

Jobs (4 steps) are slowed to about a second per step (the ``slow`` fault switch, inherited by the Ray nodes
from this process) so the node is surely removed mid-job; leases are short (6 s) so its job comes back
quickly. A second test kills the PostgreSQL server while the actors are idle (issue 19).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster

from stillmotion.faults import FAULTS_ENV
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.server.app import create_app
from tests.server.helpers import make_settings, png_bytes, small_job_fields, wait_for
from tests.support.throwaway_postgres import ThrowawayPostgres

JOBS = 12
LEASE_S = 6.0  # short, so the lost job comes back soon; renewed every 2 s, ample on busy cores
DEADLINE_S = 240  # generous: 2 busy cores; a healthy run takes well under a minute


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    # Set before the nodes start: their raylets, and so the actors, inherit it.
    monkeypatch.setenv(FAULTS_ENV, "slow@step:all@attempt:all")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_f19_node_lost_mid_job_every_job_succeeds_once(
    tmp_path: Path, cluster: Cluster, postgres_server: ThrowawayPostgres
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url=postgres_server.create_database(),
        ray_address=cluster.address,
        lease_s=LEASE_S,
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:7860") as client:
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        ids = []
        for i in range(JOBS):
            response = client.post(
                "/api/v1/jobs",
                files={"image": (f"in{i}.png", png_bytes(), "image/png")},
                data=small_job_fields(seed=str(i), num_inference_steps="4"),
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        # A first-and-last-frame job: its second image must reach whichever node runs it (the depot).
        response = client.post(
            "/api/v1/jobs",
            files={
                "image": ("first.png", png_bytes(), "image/png"),
                "last_image": ("last.png", png_bytes(colour=(10, 200, 10)), "image/png"),
            },
            data=small_job_fields(model="tiny-wan2.2-i2v-a14b", num_frames="5", num_inference_steps="2"),
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

        # Every worker shows up in /health, one per node, each on its logical GPU.
        health = wait_for("three ready workers", lambda: _ready_health(client), DEADLINE_S)
        assert len({w["node"] for w in health["workers"]}) == 3
        assert all(w["gpu"] is not None for w in health["workers"])

        # Remove a non-head node while it runs a job (past its first step).
        doomed = {node.node_id[:8]: node for node in cluster.worker_nodes}
        victim_job = wait_for(
            "a job mid-run on a removable node", lambda: _running_on(store, doomed), DEADLINE_S
        )
        node_prefix = victim_job.worker_id.split("-")[1]
        cluster.remove_node(doomed[node_prefix], allow_graceful=False)

        wait_for("every job finished", lambda: all(store.get(i).is_terminal for i in ids), DEADLINE_S)
        for job_id in ids:
            job = store.get(job_id)
            assert job.status == JobStatus.SUCCEEDED, (job_id, job.error_code, job.error_message)
            _assert_runs_never_overlap(store.events(job_id))
            video = client.get(f"/api/v1/jobs/{job_id}/video")
            assert video.status_code == 200 and len(video.content) > 0
        victim = store.get(victim_job.id)
        assert victim.attempts >= 2 and victim.worker_id != victim_job.worker_id
        reasons = [
            e["detail"].get("reason_code") for e in store.events(victim.id) if e["kind"] == "interrupted"
        ]
        assert reasons and set(reasons) == {"lease_expired"}
        # The health view follows: the lost node's worker is down, the others still run.
        health = wait_for("the lost worker reported down", lambda: _down_health(client), DEADLINE_S)
        assert health["worker"]["status"] == "running"


def _ready_health(client: TestClient) -> dict[str, Any] | None:
    health: dict[str, Any] = client.get("/api/v1/health").json()
    ready = [w for w in health["workers"] if w["status"] == "running"]
    return health if len(ready) == 3 and health["ready_workers"] == 3 else None


def _down_health(client: TestClient) -> dict[str, Any] | None:
    health: dict[str, Any] = client.get("/api/v1/health").json()
    return health if [w["status"] for w in health["workers"]].count("down") == 1 else None


def _running_on(store: JobStore, nodes: dict[str, Any]) -> Any:
    for job in store.running_jobs():
        step = int((job.progress or {}).get("step") or 0)
        if job.worker_id and job.worker_id.split("-")[1] in nodes and step >= 1:
            return job
    return None


def _assert_runs_never_overlap(events: list[dict[str, Any]]) -> None:
    """Each run starts ("running") only after the previous one ended; exactly one success."""
    open_run = False
    for event in events:
        if event["kind"] == "running":
            assert not open_run, f"two runs at once: {[e['kind'] for e in events]}"
            open_run = True
        elif event["kind"] in ("interrupted", "succeeded", "failed", "cancelled"):
            open_run = False
    assert [e["kind"] for e in events].count("succeeded") == 1


def test_a_database_outage_while_the_actors_are_idle_is_waited_out(tmp_path: Path, cluster: Cluster) -> None:
    """Issue 19: PostgreSQL killed -9 for 5 s while every actor waits for work. The actors' worker loops
    wait it out (they once died of it, for good, while Ray saw live actors), /health says the database is
    unavailable meanwhile, and jobs submitted afterwards all succeed, at their first attempt."""
    pg = ThrowawayPostgres.start()  # its own server: the test kills it
    try:
        settings = make_settings(
            tmp_path / "data", database_url=pg.create_database(), ray_address=cluster.address, lease_s=LEASE_S
        )
        with TestClient(create_app(settings), base_url="http://127.0.0.1:7860") as client:
            store: JobStore = client.app.state.store  # type: ignore[attr-defined]
            wait_for("three ready workers", lambda: _ready_health(client), DEADLINE_S)
            pg.kill()
            health = wait_for(
                "health to report the outage",
                lambda: (h := client.get("/api/v1/health").json())["ok"] is False and h,
                15,
            )
            assert "database_unavailable" in [p["code"] for p in health["problems"]]
            time.sleep(5.0)  # the outage itself
            pg.restart()
            wait_for(
                "the service to accept jobs again",
                lambda: client.get("/api/v1/health").json()["accepting_jobs"] and _ready_health(client),
                DEADLINE_S,
            )
            ids = []
            for i in range(6):
                response = client.post(
                    "/api/v1/jobs",
                    files={"image": (f"in{i}.png", png_bytes(), "image/png")},
                    data=small_job_fields(seed=str(i)),
                )
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            wait_for("every job finished", lambda: all(store.get(i).is_terminal for i in ids), DEADLINE_S)
            for job_id in ids:
                job = store.get(job_id)
                assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1), (
                    job.error_code,
                    job.error_message,
                )
            health = client.get("/api/v1/health").json()
            assert all(w["restarts"] == 0 for w in health["workers"])  # no loop (and no actor) had to restart
    finally:
        pg.stop()
