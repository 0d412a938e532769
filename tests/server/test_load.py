"""Loads L1 and L2 from RELIABILITY 3.4, scaled to CI time (no worker: the queue only fills); their latency
figures come from the benchmarks (stillmotion.bench.queue_depth, stillmotion.bench.service_load)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from stillmotion.bench.queue_depth import measure
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.server.app import create_app
from tests.server.helpers import live_server, make_settings, png_bytes, small_job_fields

pytestmark = pytest.mark.timeout(240)

PENDING = 2000
STUCK_READS = 60  # more than the thread pool's 40 threads


# Not a latency target (those are in `python -m stillmotion.bench.queue_depth`, docs/jobs.md): a bound that
# only a regression fails, e.g. a full scan of the queue per request, which at this depth takes seconds. On
# the 2-core CI box the p99s measured 10-40 ms alone and up to ~0.3 s beside a second test run.
NOT_STALLED_S = 2.0


def test_l1_a_deep_queue_takes_jobs_and_answers_status(tmp_path: Path) -> None:
    figures = measure(tmp_path / "data", depth=PENDING, submits=150, reads=200)
    assert figures["codes"] == [200, 202]  # every submission accepted, every read answered
    assert figures["total"] == PENDING + 150
    assert figures["last_pending_position"] == PENDING  # FIFO positions hold at depth
    assert figures["enqueue_s"]["p99"] < NOT_STALLED_S, figures["enqueue_s"]
    assert figures["status_s"]["p99"] < NOT_STALLED_S, figures["status_s"]


def test_l2_burst_over_the_queue_limit_gets_429_never_5xx(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", max_queue_size=200)
    image = png_bytes()
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        app = client.app
        store: JobStore = app.state.store  # type: ignore[attr-defined]
        with live_server(app) as base:  # type: ignore[arg-type]

            def client_run(_: int) -> list[tuple[int, str | None, str | None]]:
                out = []
                with httpx.Client(base_url=base, timeout=60) as http:
                    for _ in range(10):
                        r = http.post(
                            "/api/v1/jobs",
                            files={"image": ("a.png", image, "image/png")},
                            data=small_job_fields(),
                        )
                        job_id = r.json().get("id") if r.status_code == 202 else None
                        out.append((r.status_code, job_id, r.headers.get("Retry-After")))
                return out

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=30) as pool:
                results = [x for batch in pool.map(client_run, range(30)) for x in batch]
            elapsed = time.monotonic() - started
        codes = [code for code, _, _ in results]
        assert len(results) == 300
        assert not [c for c in codes if c >= 500], f"5xx answers: {codes}"
        assert codes.count(202) == 200 and codes.count(429) == 100, sorted(set(codes))
        assert all(retry and int(retry) > 0 for code, _, retry in results if code == 429)
        accepted = sorted(job_id for code, job_id, _ in results if code == 202 and job_id)
        rows = sorted(job.id for job in store.list(limit=500)[0])
        assert rows == accepted  # acknowledged = stored; the refused have no rows
        assert sorted(p.name for p in settings.jobs_dir.iterdir()) == accepted
        assert not list((settings.data_dir / "tmp").iterdir())
        assert elapsed < 120


def test_health_answers_from_memory_while_every_worker_thread_is_stuck(tmp_path: Path) -> None:
    """Issue 15.9: /health must not queue behind other work. Hold every thread of the API's pool in a slow
    read; health still answers at once, with real figures (measured in the background), not nulls."""
    settings = make_settings(tmp_path / "data")
    app = create_app(settings, start_worker=False)
    release = threading.Event()
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        job_id = http.post(
            "/api/v1/jobs", files={"image": ("a.png", png_bytes(), "image/png")}, data=small_job_fields()
        ).json()["id"]
        store: JobStore = app.state.store
        real_get = store.get

        def slow_get(job: str) -> Any:
            release.wait(60)  # a read stuck behind the disk: it holds its pool thread meanwhile
            return real_get(job)

        store.get = slow_get  # type: ignore[method-assign]
        with ThreadPoolExecutor(max_workers=STUCK_READS) as pool:
            stuck = [pool.submit(http.get, f"/api/v1/jobs/{job_id}") for _ in range(STUCK_READS)]
            try:
                time.sleep(1.0)  # let them take every pool thread
                assert not any(f.done() for f in stuck)
                for _ in range(5):
                    started = time.monotonic()
                    health = http.get("/api/v1/health")
                    waited = time.monotonic() - started
                    body = health.json()
                    assert health.status_code == 200 and body["queue_depth"] == 1, body
                    assert body["free_disk_mb"] is not None and body["status_age_s"] < 5
                    assert waited < 2.0, f"health waited {waited:.2f}s behind stuck requests"  # not blocked
            finally:
                release.set()
            assert all(f.result().status_code == 200 for f in stuck)
