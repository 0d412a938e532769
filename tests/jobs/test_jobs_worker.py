"""The worker in-process with the real tiny engine: outcomes, error codes, cancel (F15), disk full (F9)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jobs_helpers import TINY_MODEL, add_job, lapse_lease, make_settings
from tests.support.engine_hooks import StepHook

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.engine.progress import Stage
from stillmotion.faults import FAULTS_ENV
from stillmotion.jobs.store.job_store import Job, JobStore
from stillmotion.jobs.store.states import TERMINAL, JobStatus
from stillmotion.jobs.workers.worker import (
    CHECKPOINT_FILENAME,
    PROGRESS_MIN_INTERVAL_S,
    Worker,
    output_filename,
)
from stillmotion.logging_setup import SafeRotatingFileHandler, job_context, logging_errors, setup_logging


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One engine for the module: the worker keeps it loaded between jobs, and so do these tests."""
    return Engine(make_settings(tmp_path_factory.mktemp("engine")))


@pytest.fixture
def worker(settings: Settings, store: JobStore, engine: Engine) -> Worker:
    return Worker(settings, store, engine, worker_id="w-test")


def assert_succeeded_with_one_output(store: JobStore, job: Job) -> None:
    """I2 + I3: terminal, exactly one complete output whose sha256 is the recorded one, no temp files."""
    assert job.status == JobStatus.SUCCEEDED, (job.error_code, job.error_message)
    job_dir = store.job_dir(job.id)
    video = job_dir / output_filename(job.id)
    assert job.output_filename == output_filename(job.id)
    assert video.stat().st_size > 0
    assert hashlib.sha256(video.read_bytes()).hexdigest() == job.output_sha256
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "input.png",
        output_filename(job.id),
        output_filename(job.id) + ".json",
    ]
    assert job.result is not None and isinstance(job.result["request"]["seed"], int)
    assert job.plan is not None


def assert_no_output(store: JobStore, job: Job) -> None:
    """No video, sidecar or temp file in the job's folder. A job back in the queue may keep the checkpoint
    of its last run (its next run resumes there: on a busy machine a run lasts past checkpoint_interval_s);
    a finished job keeps none."""
    kept = {"input.png"} | ({CHECKPOINT_FILENAME} if job.status == JobStatus.QUEUED else set())
    left = sorted(p.name for p in store.job_dir(job.id).iterdir())
    assert "input.png" in left and set(left) <= kept, left


@pytest.mark.timeout(120)
def test_jobs_run_in_order_and_record_everything(store: JobStore, worker: Worker) -> None:
    add_job(store, "first", steps=3)
    add_job(store, "second", steps=2, seed=None)
    assert worker.run(max_jobs=2) == 2
    first, second = store.get("first"), store.get("second")
    for job in (first, second):
        assert_succeeded_with_one_output(store, job)
    assert first.started_at is not None and second.started_at is not None
    assert first.started_at < second.started_at
    assert first.progress is not None and first.progress["step"] == 3
    assert second.result is not None and second.result["request"]["seed"] >= 0  # the drawn seed is stored
    assert [e["kind"] for e in store.events("first")] == ["created", "running", "succeeded"]


@pytest.mark.timeout(120)
def test_expected_failures_keep_their_code_and_the_next_job_succeeds(store: JobStore, worker: Worker) -> None:
    add_job(store, "bad", num_frames=100_000)
    add_job(store, "good")
    worker.run(max_jobs=2)
    bad = store.get("bad")
    assert (bad.status, bad.error_code) == (JobStatus.FAILED, "invalid_request")
    assert bad.error_message is not None and "num_frames" in bad.error_message
    assert_succeeded_with_one_output(store, store.get("good"))  # I6: the next job succeeds


@pytest.mark.timeout(120)
def test_unexpected_error_is_internal_error_with_traceback_only_in_the_log(
    settings: Settings, store: JobStore, engine: Engine
) -> None:
    log_file = setup_logging(settings, "worker-test")
    try:

        def boom() -> None:
            raise RuntimeError("kaboom in a step")

        add_job(store, "crash")
        add_job(store, "after")
        Worker(settings, store, StepHook(engine, Stage.DENOISE, 1, boom)).run(max_jobs=1)
        job = store.get("crash")
        assert (job.status, job.error_code) == (JobStatus.FAILED, "internal_error")
        assert job.error_message is not None and "Traceback" not in job.error_message
        assert "RuntimeError" in job.error_message and "crash" in job.error_message
        assert_no_output(store, job)
        for handler in logging.getLogger().handlers:
            handler.flush()
        log = log_file.read_text()
        assert "Traceback" in log and "kaboom in a step" in log and "[job=crash]" in log
        Worker(settings, store, engine).run(max_jobs=1)
        assert_succeeded_with_one_output(store, store.get("after"))
    finally:
        _remove_our_handlers()


@pytest.mark.timeout(120)
def test_f15_cancel_at_step_k_stops_within_one_step(
    settings: Settings, store: JobStore, engine: Engine
) -> None:
    add_job(store, "cancel-me", steps=6)
    hook = StepHook(engine, Stage.DENOISE, 2, lambda: store.request_cancel("cancel-me"))
    Worker(settings, store, hook).run(max_jobs=1)
    job = store.get("cancel-me")
    assert job.status == JobStatus.CANCELLED and job.error_code == "cancelled"
    steps = [e.step for e in hook.events if e.stage == Stage.DENOISE]
    assert max(steps) == 2  # the request landed during step 2's event: step 3 never ran
    assert_no_output(store, job)
    assert [e["kind"] for e in store.events("cancel-me")][-2:] == ["cancel_requested", "cancelled"]


@pytest.mark.timeout(120)
def test_f15_cancel_racing_completion_gives_exactly_one_terminal_state(
    settings: Settings, store: JobStore, engine: Engine
) -> None:
    add_job(store, "late-cancel", steps=2)
    hook = StepHook(engine, Stage.DONE, 2, lambda: store.request_cancel("late-cancel"))
    Worker(settings, store, hook).run(max_jobs=1)
    job = store.get("late-cancel")
    kinds = [e["kind"] for e in store.events("late-cancel")]
    assert sum(k in TERMINAL for k in kinds) == 1
    # The video was already written when the cancel arrived: the job keeps it and stays succeeded.
    assert_succeeded_with_one_output(store, job)
    assert job.cancel_requested


@pytest.mark.timeout(120)
def test_f9_disk_full_while_writing_requeues_the_job_which_then_succeeds(
    settings: Settings, store: JobStore, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk filling up is the service's trouble, not the job's: nothing half-written stays, the job goes
    back to the queue (its attempt counted) and runs again once there is room. Without a path in sight."""
    add_job(store, "full")
    add_job(store, "next")
    monkeypatch.setenv(FAULTS_ENV, "enospc@write@job:full")  # attempt 1 only
    worker = Worker(settings, store, engine)
    worker.run(max_jobs=1)
    job = store.get("full")
    assert (job.status, job.attempts, job.error_code) == (JobStatus.QUEUED, 2, None)
    assert_no_output(store, job)  # no file at the final path, no temp file left beside it
    requeued = store.events("full")[-1]
    assert requeued["kind"] == "interrupted" and requeued["detail"]["reason_code"] == "disk_full"
    assert str(settings.data_dir.resolve()) not in json.dumps(store.events("full"))

    worker.run(max_jobs=2)
    again = store.get("full")
    assert_succeeded_with_one_output(store, again)
    assert again.attempts == 2
    assert_succeeded_with_one_output(store, store.get("next"))


@pytest.mark.timeout(120)
def test_f9_a_job_that_never_fits_fails_with_disk_full_after_its_attempts(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data", max_attempts=2)
    store = JobStore.open(settings)
    try:
        add_job(store, "huge")
        monkeypatch.setenv(FAULTS_ENV, "enospc@write@attempt:all")
        Worker(settings, store, engine).run(max_jobs=2)
        job = store.get("huge")
        assert (job.status, job.error_code, job.attempts) == (JobStatus.FAILED, "disk_full", 2)
        assert job.error_message and "data disk was full" in job.error_message
        assert str(tmp_path) not in job.error_message  # what happened, not where the server keeps files
        assert_no_output(store, job)
    finally:
        store.close()


def test_log_lines_carry_the_job_id_and_a_full_disk_never_raises(settings: Settings) -> None:
    log_file = setup_logging(settings, "logtest")
    try:
        log = logging.getLogger("stillmotion.test")
        with job_context("job-123"):
            log.warning("inside")
        log.warning("outside")
        file_handler = next(h for h in logging.getLogger().handlers if isinstance(h, SafeRotatingFileHandler))
        file_handler.flush()
        lines = log_file.read_text().splitlines()
        assert "[job=job-123] inside" in lines[0] and "[job=-] outside" in lines[1]
        # Each line names the node and the process that wrote it (services may share a data folder).
        who = f" {settings.node_name}/logtest[{os.getpid()}] "
        assert who in lines[0] and who in lines[1]
        assert log_file == settings.logs_dir / settings.node_name / "logtest.log"

        class FullDisk:
            def write(self, _text: str) -> int:
                raise OSError(28, "No space left on device")

            def flush(self) -> None:
                raise OSError(28, "No space left on device")

        before = logging_errors()
        real_stream = file_handler.stream
        file_handler.stream = FullDisk()  # type: ignore[assignment]
        try:
            log.error("this line cannot be written")  # must not raise
        finally:
            file_handler.stream = real_stream
        assert logging_errors() > before
    finally:
        _remove_our_handlers()


def _remove_our_handlers() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_stillmotion_handler", False):
            root.removeHandler(handler)
            try:
                handler.close()
            except OSError:
                pass


@pytest.fixture(autouse=True)
def _tiny_default_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STILLMOTION_DEFAULT_MODEL", TINY_MODEL)
    yield


@pytest.mark.timeout(60)
def test_idle_worker_applies_the_retention_policy(tmp_path: Path, engine: Engine) -> None:
    settings = make_settings(tmp_path, retention_days=1)
    long_ago = datetime.now(UTC) - timedelta(days=3)
    past = JobStore.open(settings, clock=lambda: long_ago)
    add_job(past, "old")
    past.claim_next("w")
    past.finish_failed("old", "oom", "out of memory")
    past.close()
    store = JobStore.open(settings)
    try:
        add_job(store, "recent-queued")
        store.request_cancel("recent-queued")
        worker = Worker(settings, store, engine)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while store.list()[1] != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            worker.drain()
            thread.join(timeout=20)
        assert [j.id for j in store.list()[0]] == ["recent-queued"]
        assert not store.job_dir("old").exists()
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_worker_claims_nothing_while_the_data_disk_is_full(tmp_path: Path, engine: Engine) -> None:
    """A job started on a full disk could not even record its progress: the worker waits for room."""
    full = make_settings(tmp_path / "data", min_free_disk_mb=1e12)  # more than any disk has free
    store = JobStore.open(full)
    try:
        add_job(store, "waits")
        worker = Worker(full, store, engine)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            time.sleep(2.5)
            assert store.get("waits").status == JobStatus.QUEUED
        finally:
            worker.drain()
            thread.join(timeout=20)
        assert not thread.is_alive()
        Worker(make_settings(tmp_path / "data"), store, engine).run(max_jobs=1)  # room again: it runs
        assert_succeeded_with_one_output(store, store.get("waits"))
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_an_outcome_that_cannot_be_written_yet_waits_for_room(
    settings: Settings, store: JobStore, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is full too: the worker neither dies nor drops the outcome; it retries until it lands."""
    from stillmotion.jobs.store.db import DatabaseUnavailable
    from stillmotion.jobs.workers import worker as worker_module

    monkeypatch.setattr(worker_module, "ROOM_POLL_S", 0.05)
    add_job(store, "full")
    monkeypatch.setenv(FAULTS_ENV, "enospc@write@job:full")
    real_requeue = store.requeue
    calls: list[str] = []

    def full_then_room(job_id: str, **kwargs: Any) -> Job | None:
        calls.append(job_id)
        if len(calls) <= 2:
            raise DatabaseUnavailable("The job database's disk is full.", code="database_full")
        return real_requeue(job_id, **kwargs)

    monkeypatch.setattr(store, "requeue", full_then_room)
    Worker(settings, store, engine).run(max_jobs=1)
    assert calls == ["full"] * 3
    job = store.get("full")
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 2)
    assert_no_output(store, job)


def test_a_run_that_loses_its_lease_stops_and_the_next_run_resumes_from_its_checkpoint(
    tmp_path: Path, engine: Engine
) -> None:
    """Lease + checkpoint: after step 3 the job's lease is taken back (to the rest of the cluster its worker
    looks dead); that run stops at its next progress write, publishes nothing and keeps the checkpoint, and
    the run that takes the job over carries on after the saved step."""
    settings = make_settings(tmp_path / "data", checkpoint_interval_s=0)  # a checkpoint after every step
    store = JobStore.open(settings)
    reaper = JobStore.open(settings)  # another worker, between jobs
    try:
        add_job(store, "j", steps=5)
        stale = store.claim_next("stale")
        assert stale is not None
        taken_back: list[Job] = []

        def take_back() -> None:
            lapse_lease(store, "j")
            taken_back.extend(reaper.requeue_expired_leases())
            time.sleep(PROGRESS_MIN_INTERVAL_S * 1.5)  # so the worker writes this step's progress, and learns

        hook = StepHook(engine, Stage.DENOISE, 3, take_back)
        outcome = Worker(settings, store, hook, worker_id="stale").run_one(stale)  # type: ignore[arg-type]
        assert [j.id for j in taken_back] == ["j"]
        assert outcome.status == JobStatus.QUEUED and outcome.attempts == 2  # not cancelled, not failed
        # It stopped at that progress write: no step after it, no decode.
        assert max(e.step for e in hook.events if e.stage == Stage.DENOISE) == 3
        assert not any(e.stage == Stage.DECODE for e in hook.events)
        assert (store.job_dir("j") / "checkpoint.pt").is_file()
        assert not list(store.job_dir("j").glob("*.mp4"))  # the stale run published nothing

        assert Worker(settings, store, engine, worker_id="next").run(max_jobs=1) == 1
        done = store.get("j")
        assert_succeeded_with_one_output(store, done)
        assert done.worker_id == "next" and done.attempts == 2
        assert any("resumed after denoising step" in w for w in (done.result or {})["warnings"])
    finally:
        reaper.close()
        store.close()
