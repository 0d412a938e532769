"""The worker runs jobs of different families from one queue, one model resident at a time."""

from __future__ import annotations

import pytest
from jobs_helpers import add_job

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.worker import Worker


@pytest.mark.timeout(180)
def test_one_queue_runs_every_family_in_order(settings: Settings, store: JobStore) -> None:
    engine = Engine(settings)
    loaded: list[str] = []
    generate = engine.generate

    def recording(*args: object, **kwargs: object) -> object:
        result = generate(*args, **kwargs)  # type: ignore[arg-type]
        assert engine._loaded is not None
        loaded.append(engine._loaded[0])
        return result

    engine.generate = recording  # type: ignore[method-assign]
    add_job(store, "wan", model="tiny-wan2.1-i2v", num_frames=9)
    add_job(store, "svd", model="tiny-svd-xt", prompt="", num_frames=4)
    add_job(store, "ltx", model="tiny-ltx-video", num_frames=9)
    assert Worker(settings, store, engine, worker_id="w-families").run(max_jobs=3) == 3
    jobs = [store.get(job_id) for job_id in ("wan", "svd", "ltx")]
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 3, [job.error_message for job in jobs]
    assert jobs[0].started_at and jobs[1].started_at and jobs[0].started_at < jobs[1].started_at
    # Each job ran on its own model; the engine holds one at a time (tests/engine/test_family_switch.py).
    assert loaded == ["tiny-wan2.1-i2v", "tiny-svd-xt", "tiny-ltx-video"]
