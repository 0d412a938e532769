"""F10 (database disk full) and F11 (database locked by another connection) against a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_helpers import add_job, make_settings, tiny_request
from sqlalchemy import event

from stillmotion.config import Settings
from stillmotion.jobs.db import DatabaseUnavailable
from stillmotion.jobs.store import JobStore

SHORT_BUSY_TIMEOUT_S = 0.3  # keeps the "lock held longer than the busy timeout" case quick


@pytest.fixture
def quick_store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.open(make_settings(tmp_path), busy_timeout_s=SHORT_BUSY_TIMEOUT_S)
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
        # An API write gives up after the busy timeout with a 503, not a 500, and leaves no row.
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
