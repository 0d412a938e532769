"""Fault cases through the service: F5-F7 (GPU out-of-memory recovery), F20 (model missing or corrupt),
B28 (slow upload) and the UI planner's view of the worker's memory. ../shared/RELIABILITY.md §3.2-3.3.

The worker runs as the real supervised subprocess where the case is about the running service (F5/F6);
elsewhere it runs in-process (``Worker.run(max_jobs=1)``) over the app's own store, which keeps the cases
fast and the order of events exact.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.faults import FAULTS_ENV
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.workers import worker_state
from stillmotion.jobs.workers.worker import Worker
from stillmotion.memory.device import GIB, DeviceBudget
from stillmotion.server.app import create_app
from stillmotion.webui.views import status_markdown
from tests.server.helpers import (
    leftovers,
    live_server,
    make_settings,
    png_bytes,
    small_job_fields,
    wait_healthy,
    wait_terminal,
)

JOBS = "/api/v1/jobs"


def submit(client: httpx.Client | TestClient, **fields: str) -> dict[str, Any]:
    response = client.post(
        JOBS, files={"image": ("in.png", png_bytes(64, 64), "image/png")}, data=small_job_fields(**fields)
    )
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def run_worker(settings: Settings, store: JobStore, engine: Engine, faults: str = "") -> None:
    """Run exactly one queued job in this process, as the worker process would, with ``faults`` set."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAULTS_ENV, faults)
        assert Worker(settings, store, engine).run(max_jobs=1) == 1


@pytest.fixture(scope="module")
def cpu_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One engine for the in-process cases (the tiny model stays loaded between them)."""
    return Engine(make_settings(tmp_path_factory.mktemp("engine")))


# ---- F5 / F6 / F7 ---------------------------------------------------------------------------------------


@pytest.mark.timeout(300)  # a hang guard: a worker took over 60 s to start beside Ray's or Chromium's tests
def test_f5_f6_oom_in_denoise_and_decode_recovered_by_the_running_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The supervisor hands its own environment to the worker: every job OOMs at step 2 and in decode.
    monkeypatch.setenv(FAULTS_ENV, "oom@step:2@attempt:all,oom@decode@attempt:all")
    settings = make_settings(tmp_path / "data")
    app = create_app(settings)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        wait_healthy(base)
        first = wait_terminal(client, submit(client, num_inference_steps="3")["id"], timeout_s=90)
        assert first["status"] == "succeeded", first["error"]
        downgrades = first["result"]["downgrades"]
        assert [d["phase"] for d in downgrades] == ["denoise", "decode"]
        assert downgrades[0]["resumed_at_step"] == 1 and downgrades[0]["from"] != downgrades[0]["to"]
        assert downgrades[1]["from"] == downgrades[0]["to"]
        assert client.get(f"{JOBS}/{first['id']}/video").status_code == 200

        store: JobStore = app.state.store
        kinds = [e["kind"] for e in store.events(first["id"])]
        assert kinds.count("downgrade") == 2 and "succeeded" in kinds and "failed" not in kinds
        text = status_markdown(store.get(first["id"]), None)
        assert "downgraded" in text and downgrades[1]["to"] in text

        health = client.get("/api/v1/health").json()
        assert health["ok"] and health["worker"]["restarts"] == 0  # I6: recovered inside the worker
        second = wait_terminal(client, submit(client)["id"], timeout_s=60)
        assert second["status"] == "succeeded", second["error"]
        assert client.get("/api/v1/health").json()["ok"]


@pytest.mark.timeout(180)  # a hang guard: the rung walk took 97 s on 2 busy cores
def test_f7_oom_at_load_then_oom_on_every_rung_fails_clearly(
    client: TestClient,
    settings: Settings,
    store: JobStore,
    cpu_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # F7: out of memory while placing the weights: dropped, re-placed one rung down, job succeeds.
    loaded = submit(client)
    run_worker(settings, store, cpu_engine, faults="oom@load")
    job = client.get(f"{JOBS}/{loaded['id']}").json()
    assert job["status"] == "succeeded", job["error"]
    assert [d["phase"] for d in job["result"]["downgrades"]] == ["load"]

    # Every rung runs out of memory (4 steps > the CPU ladder's 3 rungs): failed, code oom, actionable.
    doomed = submit(client, num_inference_steps="4")
    run_worker(settings, store, cpu_engine, faults="oom@step:all")
    job = client.get(f"{JOBS}/{doomed['id']}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "oom"
    assert "no cheaper plan" in job["error"]["message"] and "smaller size" in job["error"]["message"]
    assert job["result"] is None and job["links"]["video"] is None
    events = store.events(doomed["id"])
    assert [e["kind"] for e in events].count("downgrade") >= 1  # the rungs tried are in the history
    assert sorted(p.name for p in store.job_dir(doomed["id"]).iterdir()) == ["input.png"]

    # I6: the next job on the same engine succeeds without a downgrade.
    after = submit(client)
    run_worker(settings, store, cpu_engine)
    job = client.get(f"{JOBS}/{after['id']}").json()
    assert job["status"] == "succeeded" and job["result"]["downgrades"] == []
    text = status_markdown(store.get(after["id"]), None)
    assert "downgraded" not in text


# ---- F20 --------------------------------------------------------------------------------------------------


def readiness(client: TestClient) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = client.get("/api/v1/health").json()
        if health["default_model"] is not None:
            assert health["ok"]  # the service stays up whatever the model's state
            ready: dict[str, Any] = health["default_model"]
            return ready
        time.sleep(0.1)
    raise TimeoutError("the model readiness check did not finish")


@pytest.mark.timeout(90)
def test_f20_default_model_not_downloaded_offline(tmp_path: Path, cpu_engine: Engine) -> None:
    settings = make_settings(
        tmp_path / "data", default_model="i2vgen-xl", offline=True, models_dir=tmp_path / "empty-cache"
    )
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        ready = readiness(client)
        assert ready["name"] == "i2vgen-xl" and ready["available"] is False
        assert "not in" in ready["detail"] and "model_unavailable" in ready["detail"]
        # Policy: accepted and queued; the worker then fails it with the loader's message.
        job = submit(client, model="", height="256", width="256")
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        run_worker(settings, store, Engine(settings))
        out = client.get(f"{JOBS}/{job['id']}").json()
        assert out["status"] == "failed" and out["error"]["code"] == "model_unavailable"
        assert "offline mode is on" in out["error"]["message"]
        assert client.get("/api/v1/health").json()["ok"]


def fake_model_folder(path: Path) -> Path:
    """A diffusers-style folder that names the right pipeline but holds no weights (corrupt/incomplete)."""
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "I2VGenXLPipeline"}))
    return path


@pytest.mark.timeout(90)
def test_f20_local_model_folder_corrupt_then_renamed_away(tmp_path: Path) -> None:
    folder = fake_model_folder(tmp_path / "models" / "i2v")
    settings = make_settings(tmp_path / "data", default_model=str(folder), offline=True)
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        service = client.app.state.service  # type: ignore[attr-defined]
        ready = readiness(client)
        assert ready["available"] is False and "lacks unet/" in ready["detail"]

        corrupt = submit(client, model="", height="256", width="256")
        renamed = submit(client, model="", height="256", width="256")
        engine = Engine(settings)
        run_worker(settings, store, engine)
        out = client.get(f"{JOBS}/{corrupt['id']}").json()
        assert out["status"] == "failed" and out["error"]["code"] == "model_unavailable"
        assert "could not be loaded" in out["error"]["message"]

        folder.rename(folder.with_name("moved-away"))
        run_worker(settings, store, engine)
        out = client.get(f"{JOBS}/{renamed['id']}").json()
        assert out["status"] == "failed" and out["error"]["code"] == "model_unavailable"
        assert str(folder) in out["error"]["message"] and "moved or gone" in out["error"]["message"]

        fresh = service.check_model_readiness()
        assert fresh.available is False and str(folder) in fresh.detail
        # New submissions for the vanished default: 503 (the server's fault), no row, no file.
        response = client.post(
            JOBS,
            files={"image": ("in.png", png_bytes(64, 64), "image/png")},
            data=small_job_fields(model="", height="256", width="256"),
        )
        assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"
        assert store.list()[1] == 2
        assert client.get("/api/v1/health").json()["ok"]


# ---- B28 --------------------------------------------------------------------------------------------------


@pytest.fixture
def trickle_socket() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


@pytest.mark.timeout(60)
def test_b28_slow_upload_gets_408_while_health_answers(
    tmp_path: Path, trickle_socket: list[socket.socket]
) -> None:
    settings = make_settings(tmp_path / "data", upload_timeout_s=2.0)
    with live_server(create_app(settings, start_worker=False)) as base:
        port = int(base.rsplit(":", 1)[1])
        boundary = "slowboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickle_socket.append(sock)
        sock.sendall(
            (
                f"POST {JOBS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 100000\r\n\r\n"
            ).encode()
            + head
        )
        started = time.monotonic()
        worst = 0.0
        sock.setblocking(False)
        answer = b""
        with httpx.Client(base_url=base, timeout=5) as client:
            while time.monotonic() - started < 8 and b"\r\n\r\n" not in answer:
                try:
                    sock.send(b"\x89")  # a few bytes per second
                except OSError:
                    pass  # the server hung up after answering
                t0 = time.monotonic()
                assert client.get("/api/v1/health").status_code == 200
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.25)
                try:
                    answer += sock.recv(65536)
                except BlockingIOError:
                    pass
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer and b"UPLOAD_TIMEOUT_S" in answer
        assert 1.5 < elapsed < 6
        assert worst < 0.2, f"health took {worst:.3f}s during the slow upload"
        assert leftovers(settings) == []


# ---- the UI's plan vs the worker's memory ------------------------------------------------------------------


def cuda_budget(free_gib: float, *, total_gib: float = 24.0, user_gib: float | None = None) -> DeviceBudget:
    reserve = int(0.5 * GIB)
    free = int(free_gib * GIB)
    user = None if user_gib is None else int(user_gib * GIB)
    budget = free - reserve if user is None else min(free - reserve, user)
    return DeviceBudget(
        device_type="cuda",
        total_bytes=int(total_gib * GIB),
        free_bytes=free,
        budget_bytes=budget,
        reserve_bytes=reserve,
        name="fake",
        user_budget_bytes=user,
    )


def publish(path: Path, *, pid: int, device: str = "cuda:0", reusable_gib: float = 6.0) -> dict[str, Any]:
    worker_state.publish(
        path, pid=pid, device=device, budget=None, reusable_bytes=int(reusable_gib * GIB), model="m"
    )
    state = worker_state.read_state(path)
    assert state is not None and state["reusable_bytes"] == int(reusable_gib * GIB)
    return state


def test_plan_budget_adds_back_what_the_live_worker_reuses(tmp_path: Path) -> None:
    path = worker_state.state_path(tmp_path, worker_state.DEFAULT_WORKER_ID)
    alive = publish(path, pid=os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-0.state.json"]  # atomic: no temp left

    # 10 GiB free seen from the API + 6 GiB the worker holds = 16 GiB free, budget 16 - 0.5 reserve.
    adjusted = worker_state.budget_with_worker(cuda_budget(10), "cuda:0", alive)
    assert adjusted.free_bytes == 16 * GIB and adjusted.budget_bytes == int(15.5 * GIB)
    # Never more than the card: 20 + 6 is capped at the 24 GiB total.
    assert worker_state.budget_with_worker(cuda_budget(20), "cuda:0", alive).free_bytes == 24 * GIB
    # A user's vram_budget_gb cap still holds.
    capped = worker_state.budget_with_worker(cuda_budget(10, user_gib=12), "cuda:0", alive)
    assert capped.budget_bytes == 12 * GIB

    base = cuda_budget(10)
    assert worker_state.budget_with_worker(base, "cuda:1", alive) == base  # another card
    assert worker_state.budget_with_worker(base, "cuda:0", None) == base  # nothing published
    dead = publish(path, pid=2**22 + 12345)  # above pid_max: no such process
    assert worker_state.budget_with_worker(base, "cuda:0", dead) == base
    cpu = DeviceBudget(device_type="cpu", total_bytes=GIB, free_bytes=GIB, budget_bytes=GIB, reserve_bytes=0)
    assert worker_state.budget_with_worker(cpu, "cpu", publish(path, pid=os.getpid(), device="cpu")) == cpu
    assert worker_state.device_key("cuda", None) == "cuda:0" == worker_state.device_key("cuda", 0)
    path.write_text("{not json")
    assert worker_state.read_state(path) is None


def test_worker_publishes_its_state_and_the_cpu_plan_is_unchanged(
    client: TestClient, settings: Settings, store: JobStore, cpu_engine: Engine
) -> None:
    submit(client)
    run_worker(settings, store, cpu_engine)
    path = worker_state.state_path(settings.data_dir, worker_state.DEFAULT_WORKER_ID)
    state = worker_state.read_state(path)
    assert state is not None and state["pid"] == os.getpid() and state["device"] == "cpu"
    assert state["reusable_bytes"] == 0 and state["budget"]["device_type"] == "cpu"
    service = client.app.state.service  # type: ignore[attr-defined]
    engine = service._get_engine()
    assert service.plan_budget(engine).device_type == "cpu"
    response = client.post("/api/v1/plan", data=small_job_fields())
    assert response.status_code == 200 and response.json()["fits"] is True
