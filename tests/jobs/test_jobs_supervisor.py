"""The worker as a real subprocess under WorkerSupervisor: kills, poison jobs, hangs, shutdown.

F1 (kill at step k), F2 (poison job), F4 (SIGTERM mid-job) and F18 (hung step) from ../shared/RELIABILITY.md,
each asserting I1-I6 where they apply; F3 (SIGKILL of the whole service) runs against the real `stillmotion
serve` in tests/server/test_kill_service.py. Fault switches: stillmotion/faults.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from jobs_helpers import TINY_MODEL, add_job, make_settings

from stillmotion.config import Settings
from stillmotion.faults import FAULTS_ENV
from stillmotion.jobs.store.job_store import TIMEOUT, WORKER_CRASHED_REPEATEDLY, WORKER_KILLED, Job, JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.supervisor import WorkerSupervisor
from stillmotion.jobs.workers.worker import output_filename

POLL_S = 0.2


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``condition`` (a cheap store read) until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_S)


def all_terminal(store: JobStore, ids: list[str]) -> Callable[[], bool]:
    return lambda: all(store.get(i).is_terminal for i in ids)


def running_at_step(store: JobStore, job_id: str, step: int) -> Callable[[], bool]:
    def check() -> bool:
        job = store.get(job_id)
        return (
            job.status == JobStatus.RUNNING
            and job.progress is not None
            and job.progress["stage"] == "denoise"
            and job.progress["step"] >= step
        )

    return check


def assert_one_output(store: JobStore, job: Job) -> None:
    """I3: exactly one complete output, its sha256 recorded, nothing half-written beside it."""
    assert job.status == JobStatus.SUCCEEDED, (job.id, job.error_code, job.error_message)
    job_dir = store.job_dir(job.id)
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "input.png",
        output_filename(job.id),
        output_filename(job.id) + ".json",
    ]
    assert hashlib.sha256((job_dir / output_filename(job.id)).read_bytes()).hexdigest() == job.output_sha256


def assert_no_output(store: JobStore, job: Job) -> None:
    assert sorted(p.name for p in store.job_dir(job.id).iterdir()) == ["input.png"]


def worker_env(faults: str = "") -> dict[str, str]:
    env = dict(os.environ, STILLMOTION_DEFAULT_MODEL=TINY_MODEL)
    env[FAULTS_ENV] = faults
    return env


@pytest.fixture
def supervisors() -> Iterator[list[WorkerSupervisor]]:
    """Supervisors a test starts; whatever they still run is killed at the end, pass or fail."""
    started: list[WorkerSupervisor] = []
    try:
        yield started
    finally:
        for sup in started:
            pid = sup.status()["pid"]
            if pid is not None:
                _kill_group(pid)
            sup.stop(grace_s=0)


@pytest.fixture
def processes() -> Iterator[list[int]]:
    """Pids (service hosts, workers) to SIGKILL at the end, pass or fail."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            _kill_group(pid)


def _kill_group(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def _store(tmp_path: Path, **overrides: Any) -> tuple[Settings, JobStore]:
    settings = make_settings(tmp_path / "data", **overrides)
    return settings, JobStore.open(settings)


@pytest.mark.timeout(240)
def test_a_killed_job_resumes_from_its_last_saved_step(
    tmp_path: Path, supervisors: list[WorkerSupervisor]
) -> None:
    """F1 with checkpoints: the restarted worker carries on after the last saved step, not at step 1, and the
    video is the one an uninterrupted run makes."""
    settings, store = _store(tmp_path, checkpoint_interval_s=0)  # save after every step
    add_job(store, "killed", steps=5)
    add_job(store, "uninterrupted", steps=5)  # the same request and seed, run in one go
    sup = WorkerSupervisor(settings, store=store, env=worker_env("kill@step:4@job:killed"))
    supervisors.append(sup)
    sup.start()
    wait_for("both jobs to finish", all_terminal(store, ["killed", "uninterrupted"]), 200)
    killed, whole = store.get("killed"), store.get("uninterrupted")
    assert_one_output(store, killed)  # the checkpoint went with the success: nothing else in the folder
    assert_one_output(store, whole)
    assert killed.attempts == 2 and killed.result is not None
    assert "resumed after denoising step 3, saved before a restart" in killed.result["warnings"]
    assert not any("resumed" in w for w in (whole.result or {})["warnings"])
    assert _frames(store, killed) == _frames(store, whole)  # the same frames, so the same video
    assert sup.stop(grace_s=10) == 0


def _frames(store: JobStore, job: Job) -> list[bytes]:
    with av.open(str(store.job_dir(job.id) / output_filename(job.id))) as container:
        return [frame.to_ndarray(format="rgb24").tobytes() for frame in container.decode(video=0)]


@pytest.mark.timeout(240)
def test_f1_f2_killed_worker_is_restarted_and_a_poison_job_is_quarantined(
    tmp_path: Path, supervisors: list[WorkerSupervisor]
) -> None:
    settings, store = _store(tmp_path, max_attempts=2)
    faults = "kill@step:2@job:crash-once,kill@step:1@attempt:all@job:poison"
    ids = ["crash-once", "poison", "after"]
    add_job(store, "crash-once", steps=3)
    add_job(store, "poison")
    add_job(store, "after")
    sup = WorkerSupervisor(settings, store=store, env=worker_env(faults))
    supervisors.append(sup)
    sup.start()
    wait_for("every job to finish", all_terminal(store, ids), 200)

    # F1: SIGKILL at step 2 -> interrupted, re-queued with attempt 2, completed exactly once (I1-I4).
    once = store.get("crash-once")
    assert_one_output(store, once)
    assert once.attempts == 2
    kinds = [e["kind"] for e in store.events("crash-once")]
    assert kinds == ["created", "running", "interrupted", "running", "succeeded"]
    interrupted = next(e for e in store.events("crash-once") if e["kind"] == "interrupted")
    # F8: a SIGKILL the watchdog did not decide (the kernel's OOM killer looks the same) is named honestly.
    assert interrupted["detail"]["reason_code"] == WORKER_KILLED
    assert "killed (signal 9)" in interrupted["detail"]["reason"]
    assert "out of host memory" in interrupted["detail"]["reason"]

    # F2: the job that kills the worker every time ends failed, with a stable code and message (I5).
    poison = store.get("poison")
    assert (poison.status, poison.error_code, poison.attempts) == (
        JobStatus.FAILED,
        WORKER_CRASHED_REPEATEDLY,
        2,
    )
    assert poison.error_message and "2 attempts" in poison.error_message
    assert "killed (signal 9)" in poison.error_message and WORKER_KILLED in poison.error_message
    failed = store.events("poison")[-1]
    assert failed["kind"] == "failed" and failed["detail"]["reason_code"] == WORKER_KILLED
    assert_no_output(store, poison)

    # The queue moved on and the service is healthy (I6).
    assert_one_output(store, store.get("after"))
    status = sup.status()
    assert status["alive"] and status["restarts"] == 3 and status["current_job_id"] is None
    assert sup.stop(grace_s=10) == 0


@pytest.mark.timeout(180)
def test_f18_hung_step_is_killed_by_the_watchdog_then_failed_with_timeout(
    tmp_path: Path, supervisors: list[WorkerSupervisor]
) -> None:
    settings, store = _store(tmp_path, max_attempts=2, step_timeout_s=6)
    add_job(store, "hung")
    add_job(store, "after")
    sup = WorkerSupervisor(settings, store=store, env=worker_env("hang@step:1@attempt:all@job:hung"))
    supervisors.append(sup)
    sup.start()
    wait_for("both jobs to finish", all_terminal(store, ["hung", "after"]), 150)
    hung = store.get("hung")
    assert (hung.status, hung.error_code, hung.attempts) == (JobStatus.FAILED, TIMEOUT, 2)
    assert hung.error_message and "step_timeout_s" in hung.error_message
    assert [e["kind"] for e in store.events("hung")] == [
        "created",
        "running",
        "interrupted",
        "running",
        "failed",
    ]
    assert_no_output(store, hung)
    assert_one_output(store, store.get("after"))
    status = sup.status()
    assert status["alive"] and status["restarts"] == 2


@pytest.mark.timeout(180)
def test_f4_sigterm_mid_job_requeues_or_finishes_and_exits_0(
    tmp_path: Path, supervisors: list[WorkerSupervisor]
) -> None:
    settings, store = _store(tmp_path, step_timeout_s=30)
    add_job(store, "long", steps=4)
    # 1. A grace period shorter than the job: stopped at a step boundary, re-queued, no attempt spent.
    sup = WorkerSupervisor(settings, store=store, env=worker_env("slow@step:all@job:long"))
    supervisors.append(sup)
    sup.start()
    wait_for("the job to reach step 1", running_at_step(store, "long", 1), 90)
    assert sup.stop(grace_s=0.5) == 0
    job = store.get("long")
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
    last = store.events("long")[-1]
    assert last["kind"] == "interrupted" and "shut down" in last["detail"]["reason"]
    # No video, nothing half-written: only the input and the checkpoint its next run resumes from.
    assert sorted(p.name for p in store.job_dir(job.id).iterdir()) == ["checkpoint.pt", "input.png"]

    # 2. A grace period long enough: the running job finishes, then the worker exits 0.
    sup2 = WorkerSupervisor(settings, store=store, env=worker_env())
    supervisors.append(sup2)
    sup2.start()
    wait_for("the job to run again", lambda: store.get("long").status == JobStatus.RUNNING, 90)
    assert sup2.stop(grace_s=90) == 0
    job = store.get("long")
    assert_one_output(store, job)  # and the checkpoint went with the success
    assert job.attempts == 1 and job.result is not None
    assert any(w.startswith("resumed after denoising step") for w in job.result["warnings"])


class _Alive:
    """Stands in for the worker process in the watchdog's check: a pid that no process has."""

    pid = 2**22 + 4321  # above pid_max

    def poll(self) -> None:
        return None


def test_on_a_full_disk_the_supervisor_backs_off_and_the_watchdog_waits(tmp_path: Path) -> None:
    settings, store = _store(tmp_path)
    sup = WorkerSupervisor(settings, store=store, env=worker_env())
    for job_id in ("a", "b"):
        add_job(store, job_id)
        store.claim_next(sup.worker_id)
        assert sup._after_death(1) == 0.0  # died holding a job: the attempt count bounds it, restart now

    full_disk = make_settings(tmp_path / "data", min_free_disk_mb=1e12)  # more than any disk has free
    sup_full = WorkerSupervisor(full_disk, store=store, env=worker_env())
    delays = []
    for job_id in ("c", "d", "e"):
        add_job(store, job_id)
        store.claim_next(sup_full.worker_id)
        delays.append(sup_full._after_death(1))
    # A worker that died on a full disk is restarted ever more slowly, not in a tight loop.
    assert 0 < delays[0] < delays[1] < delays[2]

    # A job silent for longer than step_timeout_s on a full disk is waiting for room, not hung.
    slow = make_settings(tmp_path / "data", min_free_disk_mb=1e12, step_timeout_s=0.001)
    watchdog = WorkerSupervisor(slow, store=store, env=worker_env())
    add_job(store, "silent")
    store.claim_next(watchdog.worker_id)
    time.sleep(0.05)
    watchdog._check_heartbeat(_Alive())  # type: ignore[arg-type]
    assert watchdog._timed_out_job is None
    store.close()
