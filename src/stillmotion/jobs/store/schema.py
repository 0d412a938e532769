"""The job tables as SQLAlchemy Core ``Table``s: the current schema, portable to SQLite and PostgreSQL.

migrations.py builds this schema step by step on a live database; a test checks that the two agree.
Times are stored as UTC and always come back timezone-aware (``UTCDateTime``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

ID_LENGTH = 64  # job ids are UUIDs (36 chars); room for other schemes without a migration
STATUS_LENGTH = 16
CODE_LENGTH = 64
FILENAME_LENGTH = 255
IDEMPOTENCY_KEY_LENGTH = 255


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC; SQLite keeps no zone, so the zone is attached on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC time")
        value = value.astimezone(UTC)
        # SQLite compares these as text, so store one fixed format (no offset) for correct ordering.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    # seq orders the queue: FIFO by created_at, seq breaks ties between jobs created in one clock tick.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(ID_LENGTH), nullable=False, unique=True),
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("request", JSON, nullable=False),
    Column("model", String(FILENAME_LENGTH), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=1),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("progress", JSON, nullable=True),
    Column("plan", JSON, nullable=True),
    Column("result", JSON, nullable=True),
    Column("error_code", String(CODE_LENGTH), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("input_filename", String(FILENAME_LENGTH), nullable=False),
    Column("output_filename", String(FILENAME_LENGTH), nullable=True),
    Column("output_sha256", String(64), nullable=True),
    Column("idempotency_key", String(IDEMPOTENCY_KEY_LENGTH), nullable=True, unique=True),
    # Added in schema version 2: who holds a running job, and when it last showed signs of life.
    Column("worker_id", String(ID_LENGTH), nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    # Added in schema version 3: the batch a job was submitted in (one request, several jobs), or NULL.
    Column("batch_id", String(ID_LENGTH), nullable=True),
    # Added in schema version 4: the running job's lease. Its worker renews lease_expires_at; every write a
    # worker makes carries lease_token, so a worker whose lease lapsed (and the job moved on) changes nothing.
    Column("lease_token", String(ID_LENGTH), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
)

Index("ix_jobs_status_created", jobs.c.status, jobs.c.created_at, jobs.c.seq)
Index("ix_jobs_created", jobs.c.created_at)
Index("ix_jobs_batch", jobs.c.batch_id)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(CODE_LENGTH), nullable=False),
    Column("detail", JSON, nullable=True),
)

Index("ix_job_events_job", job_events.c.job_id, job_events.c.id)
