"""Fixtures for the job tests: settings under tmp_path and a migrated store, on the test's backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs_helpers import make_settings

from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import JobStore


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "data", database_url=database_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[JobStore]:
    store = JobStore.open(settings)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def open_store(tmp_path: Path, database_url: str | None) -> Iterator[Callable[..., JobStore]]:
    """``open_store(**settings_overrides, clock=...)``: a store on the test's backend, closed at the end."""
    opened: list[JobStore] = []

    def open_(clock: Any = None, **overrides: Any) -> JobStore:
        settings = make_settings(tmp_path / "data", database_url=database_url, **overrides)
        store = JobStore.open(settings) if clock is None else JobStore.open(settings, clock=clock)
        opened.append(store)
        return store

    try:
        yield open_
    finally:
        for store in opened:
            store.close()
