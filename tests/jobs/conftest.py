"""Fixtures for the job tests: settings under tmp_path and a migrated store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_helpers import make_settings

from stillmotion.config import Settings
from stillmotion.jobs.store import JobStore


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    store = JobStore.open(settings)
    try:
        yield store
    finally:
        store.close()
