"""Numbered schema migrations, tracked in the ``schema_version`` table.

Each migration is a function that takes a connection inside the migration transaction and builds on the
previous version. Migrations are frozen history: their table definitions are copies of what the schema
was at that version, never imports of schema.py (which is the latest version; a test checks that running
every migration yields exactly schema.py). Add a change by appending a function to ``MIGRATIONS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)

from stillmotion.jobs.store.db import Database
from stillmotion.jobs.store.schema import UTCDateTime

logger = logging.getLogger(__name__)

Migration = Callable[[Connection], None]


def _v1_jobs(conn: Connection) -> None:
    """Version 1: the jobs table."""
    meta = MetaData()
    jobs = Table(
        "jobs",
        meta,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("status", String(16), nullable=False),
        Column("request", JSON, nullable=False),
        Column("model", String(255), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("started_at", UTCDateTime, nullable=True),
        Column("finished_at", UTCDateTime, nullable=True),
        Column("attempts", Integer, nullable=False),
        Column("cancel_requested", Boolean, nullable=False),
        Column("progress", JSON, nullable=True),
        Column("plan", JSON, nullable=True),
        Column("result", JSON, nullable=True),
        Column("error_code", String(64), nullable=True),
        Column("error_message", Text, nullable=True),
        Column("input_filename", String(255), nullable=False),
        Column("output_filename", String(255), nullable=True),
        Column("output_sha256", String(64), nullable=True),
        Column("idempotency_key", String(255), nullable=True, unique=True),
    )
    Index("ix_jobs_status_created", jobs.c.status, jobs.c.created_at, jobs.c.seq)
    Index("ix_jobs_created", jobs.c.created_at)
    meta.create_all(conn)


def _v2_worker_and_events(conn: Connection) -> None:
    """Version 2: the worker that holds a job, its heartbeat, and a per-job event history."""
    dialect = conn.dialect
    id_type = String(64).compile(dialect=dialect)
    time_type = DateTime(timezone=True).compile(dialect=dialect)
    # ADD COLUMN with a nullable column and no default is the one ALTER that SQLite and PostgreSQL share.
    conn.execute(text(f"ALTER TABLE jobs ADD COLUMN worker_id {id_type}"))
    conn.execute(text(f"ALTER TABLE jobs ADD COLUMN heartbeat_at {time_type}"))
    meta = MetaData()
    Table("jobs", meta, Column("id", String(64), primary_key=True))  # only to resolve the foreign key
    events = Table(
        "job_events",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("kind", String(64), nullable=False),
        Column("detail", JSON, nullable=True),
    )
    Index("ix_job_events_job", events.c.job_id, events.c.id)
    events.create(conn)


def _v3_batch_id(conn: Connection) -> None:
    """Version 3: the batch a job belongs to, so a batch is listed and cancelled as a group."""
    id_type = String(64).compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE jobs ADD COLUMN batch_id {id_type}"))
    conn.execute(text("CREATE INDEX ix_jobs_batch ON jobs (batch_id)"))


def _v4_lease(conn: Connection) -> None:
    """Version 4: a running job's lease (token and expiry), so a job whose worker vanished is taken back."""
    dialect = conn.dialect
    conn.execute(text(f"ALTER TABLE jobs ADD COLUMN lease_token {String(64).compile(dialect=dialect)}"))
    time_type = DateTime(timezone=True).compile(dialect=dialect)
    conn.execute(text(f"ALTER TABLE jobs ADD COLUMN lease_expires_at {time_type}"))


MIGRATIONS: tuple[Migration, ...] = (_v1_jobs, _v2_worker_and_events, _v3_batch_id, _v4_lease)
# Any constant: it names the lock that serialises migrations of one PostgreSQL database across services.
PG_MIGRATION_LOCK_KEY = 0x57111
LATEST_VERSION = len(MIGRATIONS)

_version_meta = MetaData()
_schema_version = Table(
    "schema_version",
    _version_meta,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False),
)


def current_version(conn: Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    versions = conn.execute(select(_schema_version.c.version)).scalars().all()
    return max(versions, default=0)


def migrate(db: Database, target: int = LATEST_VERSION) -> int:
    """Apply every missing migration up to ``target`` in one transaction; returns the version reached.

    The write transaction (BEGIN IMMEDIATE on SQLite; a transaction-scoped advisory lock on PostgreSQL,
    where several workers on several machines open the store at once) serialises two processes starting
    together: the second sees the first one's work and applies nothing.
    """
    if not 0 <= target <= LATEST_VERSION:
        raise ValueError(f"target={target} is not a schema version; latest is {LATEST_VERSION}")
    with db.transaction() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
        _version_meta.create_all(conn)
        version = current_version(conn)
        if version > LATEST_VERSION:
            raise RuntimeError(
                f"the job database is at schema version {version}, newer than this stillmotion "
                f"({LATEST_VERSION}); upgrade stillmotion or point it at another data folder"
            )
        for number in range(version + 1, target + 1):
            logger.info("job database: applying migration %d (%s)", number, MIGRATIONS[number - 1].__doc__)
            MIGRATIONS[number - 1](conn)
            conn.execute(_schema_version.insert().values(version=number, applied_at=datetime.now(UTC)))
        return max(version, target)
