"""The worker runs jobs of different families from one queue, one model resident at a time."""

from __future__ import annotations

import pytest
from jobs_helpers import add_job, write_png

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.worker import Worker
from stillmotion.media.image_input import load_image_file
from stillmotion.models.registry import get_spec


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


@pytest.mark.timeout(180)
def test_a_two_expert_job_with_a_last_frame_runs_as_stored(settings: Settings, store: JobStore) -> None:
    """A job stored as the service stores it (resolved, its experts note and the last frame's hash, the
    frame beside the input) runs to a video whose recipe keeps both."""
    spec = get_spec("tiny-wan2.2-i2v-a14b")
    job_dir = store.job_dir("first-last")
    job_dir.mkdir(parents=True)
    write_png(job_dir / "input.png")
    write_png(job_dir / "last_image.png", (96, 64))
    last = load_image_file(job_dir / "last_image.png")
    asked = GenerationRequest(
        prompt="a loop", model=spec.name, height=64, width=64, num_frames=5, num_inference_steps=2, seed=3,
        last_image="last_image.png",
    )  # fmt: skip
    resolved = asked.resolve(spec, (64, 64), last_image_sha256=last.sha256)
    store.create(job_id="first-last", request=resolved.to_dict(), input_filename="input.png")
    assert Worker(settings, store, Engine(settings), worker_id="w-flf").run(max_jobs=1) == 1
    job = store.get("first-last")
    assert job.status == JobStatus.SUCCEEDED, job.error_message
    assert job.result is not None
    ran = job.result["request"]
    assert ran["last_image"] == last.sha256 and ran["experts"]["high_noise_steps"] >= 1
