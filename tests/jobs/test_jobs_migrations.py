"""Migrations: an empty database reaches the latest schema, and the previous version keeps its data.

Every test runs on SQLite and on PostgreSQL (the throwaway server of tests/conftest.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jobs_helpers import add_job, make_settings, tiny_request
from sqlalchemy import inspect, text
from tests.backends import ON_EVERY_BACKEND

from stillmotion.jobs.store.db import Database
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.migrations import LATEST_VERSION, current_version, migrate
from stillmotion.jobs.store.schema import metadata
from stillmotion.jobs.store.states import JobStatus

pytestmark = ON_EVERY_BACKEND

V1_TIME = "2025-01-01 00:00:00.000000"  # how SQLAlchemy's SQLite DATETIME stores a UTC time


def _database(tmp_path: Path, database_url: str | None) -> Database:
    """The backend's empty database: a SQLite file under ``tmp_path``, or the test's PostgreSQL one."""
    return Database(database_url) if database_url else Database.sqlite(tmp_path / "jobs.sqlite3")


def _shape(db: Database) -> dict[str, tuple[set[str], set[str]]]:
    """table -> (column names, index names), as the live database reports them."""
    with db.engine.connect() as conn:
        insp = inspect(conn)
        return {
            name: (
                {c["name"] for c in insp.get_columns(name)},
                {i["name"] or "" for i in insp.get_indexes(name)},
            )
            for name in insp.get_table_names()
        }


def test_empty_database_migrates_to_exactly_schema_py(tmp_path: Path, database_url: str | None) -> None:
    db = _database(tmp_path, database_url)
    try:
        assert migrate(db) == LATEST_VERSION
        shape = _shape(db)
        expected = {
            table.name: ({c.name for c in table.columns}, {i.name or "" for i in table.indexes})
            for table in metadata.sorted_tables
        }
        for name, (columns, indexes) in expected.items():
            assert shape[name][0] == columns, name
            assert indexes <= shape[name][1], name
        assert set(shape) == set(expected)
        assert migrate(db) == LATEST_VERSION  # idempotent
        with db.engine.connect() as conn:
            assert current_version(conn) == LATEST_VERSION
            if database_url is not None:
                return
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.close()


def test_previous_version_with_data_migrates_and_keeps_it(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    db = _database(tmp_path, database_url)
    migrate(db, target=1)
    # A queued and a running job as version 1 wrote them (no worker_id / heartbeat columns).
    with db.transaction() as conn:
        old_jobs = inspect(conn).get_columns("jobs")
        assert "worker_id" not in {c["name"] for c in old_jobs}
        for job_id, status in (("old-run", "running"), ("old-wait", "queued")):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, status, request, model, created_at, updated_at, attempts, "
                    "cancel_requested, input_filename) VALUES (:id, :status, :request, 'tiny-i2vgen-xl', "
                    ":created, :created, 1, false, 'input.png')"
                ),
                {"id": job_id, "status": status, "request": json.dumps(tiny_request()), "created": V1_TIME},
            )
    db.close()

    store = JobStore.open(settings)  # applies the missing migration
    try:
        with store.db.engine.connect() as conn:
            assert current_version(conn) == LATEST_VERSION
        running = store.get("old-run")
        assert (
            running.request == tiny_request()
            and running.created_at == datetime(2025, 1, 1, tzinfo=UTC)
            and running.worker_id is None
        )
        (moved,) = store.requeue_interrupted("upgrade restart")
        assert moved.id == "old-run" and moved.status == JobStatus.QUEUED and moved.attempts == 2
        assert store.claim_next("w").id == "old-run"  # type: ignore[union-attr]
        add_job(store, "new")
        assert [e["kind"] for e in store.events("new")] == ["created"]
    finally:
        store.close()


def test_version_2_with_data_gains_batches_and_keeps_its_jobs(
    tmp_path: Path, database_url: str | None
) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    db = _database(tmp_path, database_url)
    migrate(db, target=2)
    with db.transaction() as conn:
        assert "batch_id" not in {c["name"] for c in inspect(conn).get_columns("jobs")}
        conn.execute(
            text(
                "INSERT INTO jobs (id, status, request, model, created_at, updated_at, attempts, "
                "cancel_requested, input_filename) VALUES ('v2-job', 'queued', :request, 'tiny-i2vgen-xl', "
                ":created, :created, 1, false, 'input.png')"
            ),
            {"request": json.dumps(tiny_request()), "created": V1_TIME},
        )
    db.close()

    store = JobStore.open(settings)
    try:
        old = store.get("v2-job")
        assert old.batch_id is None and old.request == tiny_request() and old.status == JobStatus.QUEUED
        jobs = store.create_batch("b-1", [("b-1-a", tiny_request(seed=1), "input.png")])
        assert [j.batch_id for j in jobs] == ["b-1"]
        assert [j.id for j in store.batch("b-1")] == ["b-1-a"]
        assert store.claim_next("w").id == "v2-job"  # type: ignore[union-attr]  # FIFO across versions
    finally:
        store.close()


def test_refuses_a_database_newer_than_the_code(tmp_path: Path, database_url: str | None) -> None:
    db = _database(tmp_path, database_url)
    try:
        migrate(db)
        with db.transaction() as conn:
            conn.execute(
                text("INSERT INTO schema_version (version, applied_at) VALUES (:v, '2030-01-01 00:00:00')"),
                {"v": LATEST_VERSION + 1},
            )
        with pytest.raises(RuntimeError, match="newer"):
            migrate(db)
    finally:
        db.close()
