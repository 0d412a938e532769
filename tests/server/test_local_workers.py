"""``stillmotion serve --workers auto|N``: one worker process per visible GPU, each pinned to its card.

On this CPU machine ``CUDA_VISIBLE_DEVICES`` stands in for two cards: the pool must start one worker per
entry, pin each to its own (the worker sees only that card), show both in /health, and share the queue."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stillmotion.cli import main
from stillmotion.errors import InvalidRequest
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.local_pool import (
    LocalWorkerPool,
    cpu_threads_per_worker,
    visible_gpus,
    worker_count,
    worker_ids,
)
from stillmotion.server.app import create_app
from stillmotion.service.expected_time import queue_wait
from tests.server.helpers import make_settings, png_bytes, small_job_fields, wait_for
from tests.support.throwaway_postgres import ThrowawayPostgres

DEADLINE_S = 180


def test_worker_count_and_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker_count("auto", []) == 1  # a CPU machine: one worker, as always
    assert worker_count("auto", ["0", "1", "2"]) == 3
    assert worker_count(2, []) == 2
    for bad in (0, -1, "many"):
        with pytest.raises(InvalidRequest) as info:
            worker_count(bad, ["0"])  # type: ignore[arg-type]
        assert info.value.field == "workers" and "auto" in info.value.message
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []
    default = make_settings(tmp_path)
    assert worker_ids(default, 1) == ["worker-0"]  # the single-machine default is unchanged
    assert worker_ids(default, 2) == ["worker-0", "worker-1"]
    shared = make_settings(tmp_path, database_url="postgresql+psycopg://h/db", node_name="box7")
    assert worker_ids(shared, 2) == ["box7-worker-0", "box7-worker-1"]  # unique across machines


def test_cli_refuses_a_bad_workers_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--workers", "0"])
    assert info.value.code == 2
    assert "--workers: '0' is not 'auto' or a whole number of at least 1" in capsys.readouterr().err


def test_cli_names_a_bad_setting_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STILLMOTION_WORKERS", "0")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "setting workers (STILLMOTION_WORKERS) = '0'" in err and "greater than or equal to 1" in err
    assert "Traceback" not in err


def test_queue_wait_is_shared_among_ready_workers() -> None:
    assert queue_wait(1, 1, 10.0) == 10.0
    assert queue_wait(3, 1, 10.0) == 30.0
    assert queue_wait(3, 3, 10.0) == 10.0  # three workers: the third in line starts with the first round
    assert queue_wait(4, 3, 10.0) == 20.0
    with pytest.raises(ValueError):
        queue_wait(1, 0, 10.0)


@pytest.mark.parametrize(
    ("count", "cores", "threads"), [(1, 2, None), (2, 2, 1), (2, 16, 8), (3, 16, 5), (4, 2, 1)]
)
def test_cpu_workers_share_the_cores_out(count: int, cores: int, threads: int | None) -> None:
    assert cpu_threads_per_worker(count, cores) == threads


def test_two_cpu_workers_each_get_their_share_unless_the_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    store = JobStore.open(make_settings(tmp_path / "data"))
    try:
        pool = LocalWorkerPool(make_settings(tmp_path / "data", workers=2), store)
        expected = str(cpu_threads_per_worker(2, os.cpu_count() or 1))
        assert [s._env["OMP_NUM_THREADS"] for s in pool.supervisors] == [expected, expected]
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice is kept
        pool = LocalWorkerPool(make_settings(tmp_path / "data", workers=2), store)
        assert [s._env["OMP_NUM_THREADS"] for s in pool.supervisors] == ["3", "3"]
    finally:
        store.close()


def test_workers_auto_runs_one_pinned_worker_per_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # two "cards"
    settings = make_settings(tmp_path / "data", workers="auto")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:7860") as client:
        pool = client.app.state.workers  # type: ignore[attr-defined]
        assert [s._env["CUDA_VISIBLE_DEVICES"] for s in pool.supervisors] == ["0", "1"]
        health = wait_for("two ready workers", lambda: _ready(client, 2), DEADLINE_S)
        assert [(w["worker_id"], w["gpu"]) for w in health["workers"]] == [
            ("worker-0", "0"),
            ("worker-1", "1"),
        ]
        ids = [
            client.post(
                "/api/v1/jobs",
                files={"image": ("in.png", png_bytes(), "image/png")},
                data=small_job_fields(seed=str(i)),
            ).json()["id"]
            for i in range(4)
        ]
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        wait_for("every job finished", lambda: all(store.get(i).is_terminal for i in ids), DEADLINE_S)
        jobs = [store.get(i) for i in ids]
        assert all(job.status == JobStatus.SUCCEEDED for job in jobs)
        assert {job.worker_id for job in jobs} <= {"worker-0", "worker-1"}


def _ready(client: TestClient, count: int) -> dict[str, object] | None:
    health = client.get("/api/v1/health").json()
    return health if health["ready_workers"] == count else None


def test_serve_with_an_unreachable_ray_head_says_so_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's own connect retries an absent head for minutes; the service must refuse to start in seconds,
    naming the address, before any server or worker starts."""
    with socket.socket() as s:  # a port nothing listens on: bound, then released
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))
    for address, words in (
        (f"127.0.0.1:{port}", "Nothing answers"),
        ("head-without-port", "is not an address"),
    ):
        assert main(["serve", "--ray", address]) == 2
        err = capsys.readouterr().err
        assert "ray_unavailable" in err and words in err and f"ray_address={address!r}" in err
        assert "Traceback" not in err


def test_serve_refuses_a_live_port_that_is_not_a_ray_head_within_30s(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: ThrowawayPostgres,
) -> None:
    """Issue 19.6: a port that answers but is not Ray (PostgreSQL's here) once held `serve --ray` for
    minutes: the TCP probe passed and Ray's own connect retried. Ray's client asks it for a cluster id with a
    bounded timeout, and the service refuses within 30 s, naming the address."""
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))
    address = f"127.0.0.1:{postgres_server.port}"
    started = time.monotonic()
    assert main(["serve", "--ray", address]) == 2
    took_s = time.monotonic() - started
    err = capsys.readouterr().err
    assert "ray_unavailable" in err and "not a Ray head" in err and f"ray_address={address!r}" in err
    assert "Traceback" not in err
    assert took_s < 30, f"refused only after {took_s:.0f}s"


def test_health_promises_a_restart_only_where_something_will_do_one() -> None:
    """Issue 19.2: a supervised worker process that died is being restarted; a Ray actor that does not answer
    is restarted by Ray only once a GPU is free for it, and /health must not say otherwise."""
    from stillmotion.server.routes.health import _down_message

    assert _down_message([{"alive": False, "restarting": True}]) == (
        "The worker process is down and being restarted."
    )
    ray_down = {"alive": False, "restarting": False, "down_reason": "its Ray actor does not answer"}
    message = _down_message([ray_down, ray_down])
    assert "restarted" not in message and "its Ray actor does not answer" in message
