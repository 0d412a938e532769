"""A real database outage on SQLite, for tests: ``SqliteOutage`` makes the job database unopenable.

PostgreSQL outages are made by killing the server (``throwaway_postgres.ThrowawayPostgres.kill``); SQLite has
no server, so its outage is the file itself going missing, as an unmounted volume would.
"""

from __future__ import annotations

import os
from pathlib import Path

from stillmotion.jobs.store.job_store import JobStore


class SqliteOutage:
    """A database outage on SQLite, for real: the database path is a symbolic link to the file, swapped
    (atomically) for one to a folder during the outage. SQLite cannot open a folder (SQLITE_CANTOPEN, what a
    missing or unmounted volume gives); ``end()`` swaps the link back. Make it before the store opens the
    file; ``begin(store)`` also closes the store's pooled connections (they would still reach the file)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.file = db_path.parent / "database" / db_path.name  # SQLite keeps its -wal beside the target
        self.folder = db_path.parent / "unreachable"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._point_at(self.file)

    def begin(self, *stores: JobStore) -> None:
        self._point_at(self.folder)
        for store in stores:
            store.db.engine.dispose()

    def end(self) -> None:
        self._point_at(self.file)

    def _point_at(self, target: Path) -> None:
        swap = self.db_path.with_name(self.db_path.name + ".swap")
        swap.unlink(missing_ok=True)
        swap.symlink_to(target)
        os.replace(swap, self.db_path)
