"""F10 (database disk full) and F11 (database locked by another connection) against a real SQLite file, and
the translation of every driver error into stillmotion's own at every store entry point."""

from __future__ import annotations

import inspect
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobs_helpers import add_job, lapse_lease, make_settings, tiny_request
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from tests.support.sqlite_outage import SqliteOutage

from stillmotion.config import Settings
from stillmotion.jobs.store.db import DatabaseError, DatabaseUnavailable
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.lease import LeaseReaper

SHORT_BUSY_TIMEOUT_S = 0.3  # keeps the "lock held longer than the busy timeout" case quick
SHORT_SUBMIT_WAIT_S = 0.5  # a submission gives up after this (the default is SUBMIT_WAIT_S)


@pytest.fixture
def quick_store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.open(
        make_settings(tmp_path), busy_timeout_s=SHORT_BUSY_TIMEOUT_S, submit_wait_s=SHORT_SUBMIT_WAIT_S
    )
    try:
        yield store
    finally:
        store.close()


def test_f10_sqlite_full_on_insert_raises_503_and_leaves_no_row(quick_store: JobStore) -> None:
    add_job(quick_store, "before")

    # SQLITE_FULL for real: cap the file at its current size on every pooled connection.
    def cap_pages(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    quick_store.db.engine.dispose()
    event.listen(quick_store.db.engine, "connect", cap_pages)
    big_request = tiny_request(prompt="x" * 1900, negative_prompt="y" * 1900)
    for i in range(20):  # each insert fills pages until the cap is hit
        try:
            quick_store.create(job_id=f"fill{i}", request=big_request, input_filename="input.png")
        except DatabaseUnavailable as exc:
            failed_id = f"fill{i}"
            assert (exc.code, exc.http_status) == ("database_full", 503)
            break
    else:
        pytest.fail("the capped database never reported SQLITE_FULL")
    ids = {j.id for j in quick_store.list(limit=100)[0]}
    assert failed_id not in ids and "before" in ids  # no row for the failed submission; reads still work
    assert quick_store.get("before").request == tiny_request()


def _hold_exclusive(db_path: Path, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)  # the fault itself: a writer that sits on the lock
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_f11_locked_database_writers_wait_or_503_progress_never_dropped(
    quick_store: JobStore, tmp_path: Path
) -> None:
    settings: Settings = quick_store.settings
    add_job(quick_store, "running")
    quick_store.claim_next("w")
    locked = threading.Event()
    holder = threading.Thread(target=_hold_exclusive, args=(settings.db_path, 2.0, locked))
    holder.start()
    try:
        assert locked.wait(10)
        # An API write retries past the busy timeout, then gives up with a 503, not a 500, and leaves no row.
        with pytest.raises(DatabaseUnavailable) as info:
            add_job(quick_store, "during-lock")
        assert (info.value.code, info.value.http_status) == ("database_busy", 503)
        # Reads keep working under WAL while the writer holds the lock.
        assert quick_store.get("running").status == "running"
        # The worker's progress write retries until the lock is released, then lands.
        started = time.monotonic()
        progress = {"stage": "denoise", "step": 1, "total_steps": 2}
        assert quick_store.update_progress("running", progress)
        assert time.monotonic() - started > 0.5
    finally:
        holder.join(timeout=30)
    assert quick_store.get("running").progress == progress
    assert "during-lock" not in {j.id for j in quick_store.list()[0]}


@pytest.mark.timeout(60)
def test_f11_a_short_lock_is_waited_out(tmp_path: Path) -> None:
    store = JobStore.open(make_settings(tmp_path))  # default busy timeout (5 s) > the 0.5 s lock
    try:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_exclusive, args=(store.settings.db_path, 0.5, locked))
        holder.start()
        assert locked.wait(10)
        add_job(store, "waited")
        holder.join(timeout=30)
        assert store.get("waited").status == "queued"
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_f11_a_submission_outlasts_a_lock_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    """busy_timeout alone would answer 503 after 0.3 s; the submission retries and lands once it is free."""
    store = JobStore.open(make_settings(tmp_path), busy_timeout_s=SHORT_BUSY_TIMEOUT_S, submit_wait_s=10.0)
    try:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_exclusive, args=(store.settings.db_path, 1.5, locked))
        holder.start()
        assert locked.wait(10)
        started = time.monotonic()
        add_job(store, "patient")
        assert time.monotonic() - started > 1.0  # it really waited for the lock, across several busy timeouts
        holder.join(timeout=30)
        assert store.get("patient").status == "queued"
    finally:
        store.close()


def test_database_errors_are_classified_by_their_code_not_their_text() -> None:
    from stillmotion.jobs.store.db import error_kind, translate_error

    def sqlite_error(code: int, text: str) -> sqlite3.OperationalError:
        exc = sqlite3.OperationalError(text)
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        return exc

    assert error_kind(sqlite_error(sqlite3.SQLITE_BUSY, "whatever the locale says")) == "busy"
    assert error_kind(sqlite_error(sqlite3.SQLITE_LOCKED, "")) == "busy"
    assert error_kind(sqlite_error(sqlite3.SQLITE_BUSY_SNAPSHOT, "")) == "busy"  # extended code
    assert error_kind(sqlite_error(sqlite3.SQLITE_FULL, "")) == "full"
    assert error_kind(sqlite_error(sqlite3.SQLITE_IOERR_WRITE, "")) == "full"
    assert error_kind(sqlite_error(sqlite3.SQLITE_ERROR, "database is locked")) is None  # text is ignored
    full = translate_error(sqlite_error(sqlite3.SQLITE_FULL, ""))
    assert full is not None and (full.code, full.http_status) == ("database_full", 503)


# Every public JobStore method, called with arguments that would be valid on a healthy database.
STORE_CALLS: dict[str, Callable[[JobStore], object]] = {
    "create": lambda s: s.create(job_id="new", request=tiny_request(), input_filename="input.png"),
    "create_batch": lambda s: s.create_batch("b", [("b1", tiny_request(), "input.png")]),
    "batch": lambda s: s.batch("b"),
    "cancel_batch": lambda s: s.cancel_batch("b"),
    "get": lambda s: s.get("j"),
    "list": lambda s: s.list(),
    "queue_depth": lambda s: s.queue_depth(),
    "queue_position": lambda s: s.queue_position("j"),
    "request_cancel": lambda s: s.request_cancel("j"),
    "delete": lambda s: s.delete("j"),
    "events": lambda s: s.events("j"),
    "claim_next": lambda s: s.claim_next("w"),
    "renew_lease": lambda s: s.renew_lease("j", "token"),
    "update_progress": lambda s: s.update_progress("j", {"step": 1}),
    "heartbeat": lambda s: s.heartbeat("j"),
    "add_event": lambda s: s.add_event("j", "downgrade", {}),
    "is_cancel_requested": lambda s: s.is_cancel_requested("j"),
    "finish_succeeded": lambda s: s.finish_succeeded("j", "v.mp4", "00" * 32, {}),
    "finish_failed": lambda s: s.finish_failed("j", "oom", "x"),
    "finish_cancelled": lambda s: s.finish_cancelled("j"),
    "requeue": lambda s: s.requeue("j", reason="x"),
    "requeue_interrupted": lambda s: s.requeue_interrupted("x"),
    "requeue_expired_leases": lambda s: s.requeue_expired_leases(),
    "running_jobs": lambda s: s.running_jobs(),
    "purge_expired": lambda s: s.purge_expired(),
    "run_while_held": lambda s: s.run_while_held("j", "token", lambda: None, what="x"),
    "database_time": lambda s: s.database_time(),
}
NO_DATABASE = {"open", "close", "job_dir"}  # entry points that never touch the database


def test_every_store_entry_point_is_in_the_fault_tests() -> None:
    """A new JobStore method must join STORE_CALLS, so the two tests below cover it too."""
    public = {name for name, _ in inspect.getmembers(JobStore, callable) if not name.startswith("_")}
    assert public - NO_DATABASE == set(STORE_CALLS)


def test_an_unreachable_sqlite_database_is_database_unavailable_at_every_entry_point(tmp_path: Path) -> None:
    """The database file cannot be opened (here: a folder stands where it was): every store method raises
    stillmotion's DatabaseUnavailable (HTTP 503, database_unavailable), never a driver's exception."""
    store = JobStore.open(make_settings(tmp_path, retention_days=1))
    try:
        add_job(store, "j")
        store.db.engine.dispose()  # the pool's open connections would still reach the old file
        db_path = store.settings.db_path
        for suffix in ("", "-wal", "-shm"):
            db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
        db_path.mkdir()
        for name, call in STORE_CALLS.items():
            with pytest.raises(DatabaseUnavailable) as info:
                call(store)
            assert (info.value.code, info.value.http_status) == ("database_unavailable", 503), name
            assert info.value.retry_after_s, name
            assert isinstance(info.value.__cause__, SQLAlchemyError), name  # translated, not made up
    finally:
        store.close()


def test_an_unexpected_driver_error_is_a_database_error_with_the_traceback_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure nobody can explain to a user (here: the table is gone) is DatabaseError (HTTP 500) with a
    reference; the log has the driver's message and traceback under that reference."""
    store = JobStore.open(make_settings(tmp_path, retention_days=1))
    try:
        add_job(store, "j")
        with store.db.transaction() as conn:
            conn.exec_driver_sql("DROP TABLE job_events")
            conn.exec_driver_sql("DROP TABLE jobs")
        for name, call in STORE_CALLS.items():
            if name == "database_time":  # reads no table: nothing to break here
                continue
            caplog.clear()
            with pytest.raises(DatabaseError) as info:
                call(store)
            assert not isinstance(info.value, DatabaseUnavailable), name
            assert (info.value.code, info.value.http_status) == ("database_error", 500), name
            ref = info.value.message.split("reference ")[1].split(")")[0]
            logged = [r for r in caplog.records if ref in r.getMessage()]
            assert logged and logged[0].exc_info is not None, name
            assert "no such table" in str(logged[0].exc_info[1]), name
    finally:
        store.close()


def test_after_an_outage_the_reaper_gives_lease_holders_a_lease_to_come_back(
    tmp_path: Path,
) -> None:
    """Leases lapse during a database outage because nobody can renew them: for ``lease_s`` after this
    process saw the database unreachable, its reaper takes nothing back (the holders renew or hand their jobs
    back first, without spending an attempt); then it reaps as always."""
    settings = make_settings(tmp_path, lease_s=1.0)
    outage = SqliteOutage(settings.db_path)
    store = JobStore.open(settings)
    add_job(store, "j")
    assert store.claim_next("w") is not None
    lapse_lease(store, "j")
    reaper = LeaseReaper(store)
    outage.begin(store)
    with pytest.raises(DatabaseUnavailable):
        reaper.reap()
    outage.end()
    assert reaper.reap() == []  # the database is back, the lease has lapsed: still the holder's turn
    assert store.get("j").status == JobStatus.RUNNING
    deadline = time.monotonic() + 30
    while not (taken := reaper.reap()):
        assert time.monotonic() < deadline, "the reaper never resumed after the grace"
        time.sleep(0.1)
    assert [job.id for job in taken] == ["j"]
    store.close()
