"""JobStore: the API-side and worker-side contract of docs/interfaces.md, on a real SQLite file and a real
PostgreSQL server (every test runs on both)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from jobs_helpers import Clock, add_job, tiny_request
from tests.backends import ON_EVERY_BACKEND

from stillmotion.config import Settings
from stillmotion.errors import InvalidRequest, InvalidTransition, JobNotFound
from stillmotion.jobs.store.job_store import WORKER_CRASHED_REPEATEDLY, JobStore, QueueFull
from stillmotion.jobs.store.states import JobStatus

pytestmark = ON_EVERY_BACKEND


def test_create_is_committed_and_visible_to_another_connection(settings: Settings, store: JobStore) -> None:
    job = add_job(store, "job1")
    assert job.status == JobStatus.QUEUED
    assert job.attempts == 1
    assert job.model == "tiny-i2vgen-xl"
    assert job.request == tiny_request()
    other = JobStore.open(settings)  # a separate engine and connection, as another process would have
    try:
        assert other.get("job1").id == "job1"
    finally:
        other.close()
    assert store.job_dir("job1") == settings.jobs_dir / "job1"
    assert [e["kind"] for e in store.events("job1")] == ["created"]


def test_model_defaults_to_settings(store: JobStore) -> None:
    job, _ = store.create(job_id="j", request={"prompt": "x"}, input_filename="input.png")
    assert job.model == store.settings.default_model


def test_unknown_request_field_and_bad_ids_create_no_row(store: JobStore) -> None:
    with pytest.raises(InvalidRequest):
        store.create(job_id="j1", request={"prompt": "x", "steps": 3}, input_filename="input.png")
    with pytest.raises(InvalidRequest):
        store.create(job_id="../etc", request={"prompt": "x"}, input_filename="input.png")
    with pytest.raises(InvalidRequest):
        store.create(job_id="j2", request={"prompt": "x"}, input_filename="../input.png")
    assert store.list()[1] == 0
    with pytest.raises(JobNotFound):
        store.job_dir("../../etc")


def test_idempotency_key_returns_the_same_job(store: JobStore) -> None:
    first, created = store.create(
        job_id="a", request=tiny_request(), input_filename="input.png", idempotency_key="k"
    )
    again, created_again = store.create(
        job_id="b", request=tiny_request(), input_filename="input.png", idempotency_key="k"
    )
    assert created and not created_again
    assert again.id == first.id == "a"
    assert store.list()[1] == 1
    with pytest.raises(InvalidRequest) as info:
        store.create(
            job_id="c", request=tiny_request(steps=3), input_filename="input.png", idempotency_key="k"
        )
    assert info.value.code == "idempotency_key_reused"
    assert store.list()[1] == 1


def test_queue_full_creates_no_row(open_store: Callable[..., JobStore]) -> None:
    store = open_store(max_queue_size=2)
    add_job(store, "a")
    add_job(store, "b")
    with pytest.raises(QueueFull) as info:
        add_job(store, "c")
    assert (info.value.code, info.value.http_status) == ("queue_full", 429)
    assert store.list()[1] == 2
    store.claim_next("w")  # a running job frees a queue slot
    add_job(store, "c")


def test_list_paging_and_filters(store: JobStore) -> None:
    for i in range(5):
        add_job(store, f"job{i}")
    store.request_cancel("job1")
    store.claim_next("w")  # job0
    page, total = store.list(limit=2)
    assert total == 5
    assert [j.id for j in page] == ["job4", "job3"]  # newest first
    page, _ = store.list(limit=2, offset=4)
    assert [j.id for j in page] == ["job0"]
    queued, total_queued = store.list(status=JobStatus.QUEUED)
    assert total_queued == 3 and {j.id for j in queued} == {"job2", "job3", "job4"}
    _, total_two = store.list(status=[JobStatus.RUNNING, JobStatus.CANCELLED])
    assert total_two == 2
    for bad in ({"limit": 0}, {"limit": 10_000}, {"offset": -1}):
        with pytest.raises(InvalidRequest):
            store.list(**bad)  # type: ignore[arg-type]


def test_queue_depth_and_position(store: JobStore) -> None:
    for i in range(3):
        add_job(store, f"job{i}")
    assert store.queue_depth() == 3
    assert [store.queue_position(f"job{i}") for i in range(3)] == [1, 2, 3]
    store.claim_next("w")
    assert store.queue_position("job0") is None
    assert store.queue_position("job2") == 2
    with pytest.raises(JobNotFound):
        store.queue_position("nope")


def test_claim_is_fifo_and_records_the_worker(store: JobStore) -> None:
    for i in range(3):
        add_job(store, f"job{i}")
    claimed = [store.claim_next("w1") for _ in range(4)]
    assert [j.id if j else None for j in claimed] == ["job0", "job1", "job2", None]
    job = store.get("job0")
    assert job.status == JobStatus.RUNNING
    assert job.worker_id == "w1" and job.started_at is not None and job.heartbeat_at is not None


def _claim_all(settings: Settings, worker_id: str, out: list[str]) -> None:
    store = JobStore.open(settings)
    try:
        while (job := store.claim_next(worker_id)) is not None:
            out.append(job.id)
    finally:
        store.close()


def test_claim_exclusive_across_threads(settings: Settings, store: JobStore) -> None:
    for i in range(30):
        add_job(store, f"job{i:02d}")
    results: list[list[str]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=_claim_all, args=(settings, f"w{i}", results[i])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    claimed = [job_id for r in results for job_id in r]
    assert sorted(claimed) == [f"job{i:02d}" for i in range(30)]  # every job once, none twice


def _claim_in_process(settings_json: str, worker_id: str, queue: multiprocessing.Queue[list[str]]) -> None:
    out: list[str] = []
    _claim_all(Settings.model_validate_json(settings_json), worker_id, out)
    queue.put(out)


@pytest.mark.timeout(60)
def test_claim_exclusive_across_processes(settings: Settings, store: JobStore) -> None:
    for i in range(30):
        add_job(store, f"job{i:02d}")
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[str]] = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(settings.model_dump_json(), f"p{i}", queue))
        for i in range(2)
    ]
    try:
        for p in procs:
            p.start()
        claimed = [job_id for _ in procs for job_id in queue.get(timeout=45)]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert sorted(claimed) == [f"job{i:02d}" for i in range(30)]


def test_cancel_queued_never_touches_the_running_job(store: JobStore) -> None:
    add_job(store, "run")
    add_job(store, "wait")
    store.claim_next("w")
    job = store.request_cancel("wait")
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert job.error_code == "cancelled"
    running = store.get("run")
    assert running.status == JobStatus.RUNNING and not running.cancel_requested
    assert store.claim_next("w") is None  # a cancelled job is never claimed


def test_cancel_running_is_a_request_the_worker_honours(store: JobStore) -> None:
    add_job(store, "run")
    store.claim_next("w")
    job = store.request_cancel("run")
    assert job.status == JobStatus.RUNNING and job.cancel_requested
    assert store.is_cancel_requested("run")
    assert store.request_cancel("run").status == JobStatus.RUNNING  # asking twice is harmless
    assert store.finish_cancelled("run").status == JobStatus.CANCELLED
    assert store.request_cancel("run").status == JobStatus.CANCELLED  # double cancel: no-op
    kinds = [e["kind"] for e in store.events("run")]
    assert kinds == ["created", "running", "cancel_requested", "cancelled"]


def test_cancel_after_success_is_409_and_keeps_the_output(store: JobStore) -> None:
    add_job(store, "done")
    store.claim_next("w")
    store.finish_succeeded("done", "video.mp4", "ab" * 32, {"sha256": "ab" * 32, "plan": {"strategy": "x"}})
    with pytest.raises(InvalidTransition) as info:
        store.request_cancel("done")
    assert info.value.http_status == 409
    job = store.get("done")
    assert job.status == JobStatus.SUCCEEDED and job.output_filename == "video.mp4"
    assert job.plan == {"strategy": "x"}


def test_cancel_racing_completion_gives_one_terminal_state(store: JobStore) -> None:
    add_job(store, "race")
    store.claim_next("w")
    store.request_cancel("race")  # the request lands while the last step is finishing
    store.finish_succeeded("race", "video.mp4", "00" * 32, {})
    with pytest.raises(InvalidTransition):
        store.finish_cancelled("race")  # the worker's late cancel loses
    assert store.get("race").status == JobStatus.SUCCEEDED


def test_two_actors_finishing_one_job_exactly_one_wins(store: JobStore) -> None:
    terminal = {JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value}
    for round_ in range(5):
        job_id = f"race{round_}"
        add_job(store, job_id)
        store.claim_next("w")
        barrier = threading.Barrier(3)
        outcomes: list[str] = []

        def finish(
            kind: str,
            job_id: str = job_id,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                if kind == "ok":
                    store.finish_succeeded(job_id, "video.mp4", "00" * 32, {})
                elif kind == "fail":
                    store.finish_failed(job_id, "oom", "out of memory")
                else:
                    store.finish_cancelled(job_id)
                outcomes.append(kind)
            except InvalidTransition:
                outcomes.append("lost")

        threads = [threading.Thread(target=finish, args=(k,)) for k in ("ok", "fail", "cancel")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes).count("lost") == 2
        assert sum(e["kind"] in terminal for e in store.events(job_id)) == 1


def test_delete(store: JobStore) -> None:
    add_job(store, "q")
    add_job(store, "r")
    store.claim_next("w")  # "q" runs
    with pytest.raises(InvalidTransition):
        store.delete("q")
    assert store.job_dir("q").exists()
    store.delete("r")
    assert not store.job_dir("r").exists()
    with pytest.raises(JobNotFound):
        store.get("r")
    with pytest.raises(JobNotFound):
        store.delete("r")
    store.finish_failed("q", "oom", "out of memory")
    store.delete("q")
    assert store.list()[1] == 0


def test_progress_plan_and_heartbeat(store: JobStore) -> None:
    clock = Clock()
    store = JobStore(store.db, store.settings, clock=clock)
    add_job(store, "p")
    store.claim_next("w")
    first_beat = store.get("p").heartbeat_at
    clock.advance(5)
    progress = {
        "stage": "denoise",
        "step": 1,
        "total_steps": 2,
        "elapsed_s": 0.5,
        "eta_s": 0.5,
        "message": "",
    }
    assert store.update_progress("p", progress, plan={"strategy": "full_gpu"})
    job = store.get("p")
    assert job.progress == progress and job.plan == {"strategy": "full_gpu"}
    assert first_beat is not None and job.heartbeat_at == first_beat + timedelta(seconds=5)
    clock.advance(1)
    assert store.heartbeat("p")
    store.finish_failed("p", "oom", "out of memory")
    assert not store.update_progress("p", progress)  # finished: the write is refused, not applied


def test_finish_succeeded_records_output_result_and_downgrades(store: JobStore) -> None:
    add_job(store, "s")
    store.claim_next("w")
    result = {
        "sha256": "cd" * 32,
        "request": {"seed": 7},
        "plan": {"strategy": "a"},
        "downgrades": [{"to": "b"}],
    }
    job = store.finish_succeeded("s", "video.mp4", "cd" * 32, result)
    assert job.status == JobStatus.SUCCEEDED and job.finished_at is not None
    assert job.result is not None and job.result["request"]["seed"] == 7
    assert job.output_sha256 == "cd" * 32
    assert [e["kind"] for e in store.events("s")][-2:] == ["succeeded", "downgrade"]
    with pytest.raises(InvalidTransition):
        store.finish_failed("s", "oom", "late")


def test_finish_on_a_queued_job_is_refused(store: JobStore) -> None:
    add_job(store, "q")
    with pytest.raises(InvalidTransition):
        store.finish_failed("q", "oom", "x")
    with pytest.raises(JobNotFound):
        store.finish_failed("missing", "oom", "x")


def test_restart_recovery_requeues_with_attempts_then_poison_fails(
    open_store: Callable[..., JobStore],
) -> None:
    store = open_store(max_attempts=3)
    add_job(store, "crashy")
    add_job(store, "next")
    for expected_attempts in (2, 3):
        assert store.claim_next("w").id == "crashy"  # type: ignore[union-attr]
        store.update_progress("crashy", {"stage": "denoise", "step": 1})
        (moved,) = store.requeue_interrupted("service restart")
        assert moved.status == JobStatus.QUEUED and moved.attempts == expected_attempts
        assert moved.progress is None and moved.worker_id is None
    store.claim_next("w")
    (failed,) = store.requeue_interrupted("service restart")
    assert failed.status == JobStatus.FAILED and failed.attempts == 3
    assert failed.error_code == WORKER_CRASHED_REPEATEDLY and "3 attempts" in (failed.error_message or "")
    kinds = [e["kind"] for e in store.events("crashy")]
    assert kinds.count("interrupted") == 2 and kinds[-1] == "failed"
    assert store.claim_next("w").id == "next"  # type: ignore[union-attr]  # the queue moves on
    assert store.get("next").status == JobStatus.RUNNING


def test_requeue_filters_by_worker_and_honours_cancel_and_graceful(store: JobStore) -> None:
    for name in ("a", "b", "c"):
        add_job(store, name)
    store.claim_next("w1")
    store.claim_next("w2")
    store.claim_next("w2")
    store.request_cancel("c")
    moved = store.requeue_interrupted("worker w2 restarted", worker_id="w2")
    assert {(j.id, j.status) for j in moved} == {("b", JobStatus.QUEUED), ("c", JobStatus.CANCELLED)}
    assert store.get("a").status == JobStatus.RUNNING
    # A graceful shutdown re-queues without spending an attempt, even at the limit.
    for _ in range(5):
        job = store.requeue("a", reason="shutdown", count_attempt=False)
        assert job is not None and job.status == JobStatus.QUEUED and job.attempts == 1
        assert store.claim_next("w1") is not None
    assert store.requeue("missing-or-not-running", reason="x") is None


def test_purge_expired_deletes_only_old_finished_jobs(open_store: Callable[..., JobStore]) -> None:
    clock = Clock()
    store = open_store(retention_days=1, clock=clock)
    add_job(store, "old_done")
    add_job(store, "old_queued")
    store.claim_next("w")
    store.finish_failed("old_done", "oom", "x")
    clock.advance(2 * 86400)
    add_job(store, "new_done")
    store.claim_next("w")  # old_queued runs now
    store.finish_succeeded("old_queued", "video.mp4", "00" * 32, {})
    assert store.purge_expired() == 1
    assert not store.job_dir("old_done").exists()
    assert {j.id for j in store.list()[0]} == {"old_queued", "new_done"}
    assert store.purge_expired(clock() + timedelta(days=3)) == 1  # old_queued finished 2 days "ago"
    assert [j.id for j in store.list()[0]] == ["new_done"]  # queued jobs are never purged
    off = open_store()  # retention off
    assert off.purge_expired(datetime.now(UTC) + timedelta(days=10_000)) == 0


def test_job_to_dict_is_json(store: JobStore) -> None:
    add_job(store, "j")
    data = json.loads(json.dumps(store.get("j").to_dict()))
    assert data["status"] == "queued" and data["created_at"].endswith("+00:00")


def test_heartbeat_keeps_beating_while_weights_load(store: JobStore) -> None:
    """A long first download emits no step events; the load heartbeat keeps the watchdog away."""
    import time

    from stillmotion.jobs.workers.worker import _LoadHeartbeat

    store.create(job_id="loading", request={"prompt": "x"}, input_filename="input.png")
    job = store.claim_next("w1")
    assert job is not None and job.id == "loading"
    before = store.get("loading").updated_at
    beat = _LoadHeartbeat(store, job, interval_s=0.05)
    beat.start()
    time.sleep(0.4)
    beat.stop()
    during = store.get("loading").updated_at
    time.sleep(0.2)
    assert during > before
    assert store.get("loading").updated_at == during  # stopped means stopped
