"""A database outage while the worker runs a job (issue 19.2), in-process with the real tiny engine: the
database is a SQLite file made unreachable for a while (``SqliteOutage``: the file cannot be opened).
The real PostgreSQL cases, with the real service, are in tests/server/test_db_outages.py.

- Shorter than the lease: the job carries on without its progress writes and succeeds at its first attempt.
- Longer than the lease: the run stops at its next step, hands the job back once the database answers
  (no attempt spent, its last step saved as the job's checkpoint), and the next run resumes there.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jobs_helpers import add_job, make_settings
from tests.support.engine_hooks import StepHook
from tests.support.sqlite_outage import SqliteOutage

from stillmotion.engine.engine import Engine
from stillmotion.engine.progress import Stage
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.worker import Worker, output_filename

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(make_settings(tmp_path_factory.mktemp("engine")))


class Outage:
    """``begin()`` / ``end()`` of a ``SqliteOutage`` of ``store``, callable from any thread."""

    def __init__(self, sqlite: SqliteOutage, store: JobStore) -> None:
        self.sqlite, self.store = sqlite, store
        self.ended = threading.Event()

    def begin(self) -> None:
        self.sqlite.begin(self.store)

    def end(self) -> None:
        self.sqlite.end()
        self.ended.set()


def _open(tmp_path: Path, **settings: Any) -> tuple[JobStore, SqliteOutage]:
    values = make_settings(tmp_path / "data", **settings)
    sqlite = SqliteOutage(values.db_path)
    return JobStore.open(values), sqlite


def _kinds(store: JobStore, job_id: str) -> list[str]:
    return [e["kind"] for e in store.events(job_id)]


def _assert_one_video(store: JobStore, job_id: str) -> None:
    files = sorted(p.name for p in store.job_dir(job_id).iterdir())
    assert files == ["input.png", output_filename(job_id), output_filename(job_id) + ".json"]


def test_an_outage_shorter_than_the_lease_is_ridden_out(tmp_path: Path, engine: Engine) -> None:
    store, sqlite = _open(tmp_path)  # lease_s 30: far longer than the outage
    try:
        add_job(store, "j", steps=4)
        outage = Outage(sqlite, store)
        # Steps 2 and 3 run without a database.
        hooked = StepHook(StepHook(engine, Stage.DENOISE, 2, outage.begin), Stage.DENOISE, 4, outage.end)
        assert Worker(store.settings, store, hooked).run(max_jobs=1) == 1  # type: ignore[arg-type]
        assert outage.ended.is_set()
        job = store.get("j")
        assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1), (job.error_code, job.error_message)
        assert _kinds(store, "j") == ["created", "running", "succeeded"]
        _assert_one_video(store, "j")
    finally:
        store.close()


def test_an_outage_past_the_lease_hands_the_job_back_uncharged_and_it_resumes(
    tmp_path: Path, engine: Engine
) -> None:
    store, sqlite = _open(tmp_path, lease_s=1.5, checkpoint_interval_s=0)
    try:
        _hand_back_and_resume(store, Outage(sqlite, store), engine)
    finally:
        store.close()


def _hand_back_and_resume(store: JobStore, outage: Outage, engine: Engine) -> None:
    add_job(store, "j", steps=4)
    worker: Worker | None = None

    def cut_off_past_the_lease() -> None:
        outage.begin()
        deadline = time.monotonic() + 60
        assert worker is not None
        while worker._lease_lost is None:  # the lease keeper gives up after lease_s without a renewal
            assert time.monotonic() < deadline, "the worker never noticed that its lease was gone"
            time.sleep(0.05)
        threading.Timer(1.0, outage.end).start()  # back after the run has stopped

    hooked = StepHook(engine, Stage.DENOISE, 2, cut_off_past_the_lease)
    worker = Worker(store.settings, store, hooked)  # type: ignore[arg-type]
    assert worker.run(max_jobs=1) == 1
    assert outage.ended.is_set()
    handed_back = store.get("j")
    assert (handed_back.status, handed_back.attempts) == (JobStatus.QUEUED, 1)  # no attempt spent
    interrupted = [e for e in store.events("j") if e["kind"] == "interrupted"]
    assert [e["detail"]["reason_code"] for e in interrupted] == ["database_unavailable"]
    job_dir = store.job_dir("j")
    assert sorted(p.name for p in job_dir.iterdir()) == ["checkpoint.pt", "input.png"]  # the run's last step

    assert Worker(store.settings, store, engine).run(max_jobs=1) == 1
    done = store.get("j")
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1), (done.error_code, done.error_message)
    assert any("resumed after denoising step 2" in w for w in (done.result or {})["warnings"])
    assert _kinds(store, "j") == ["created", "running", "interrupted", "running", "succeeded"]
    _assert_one_video(store, "j")
