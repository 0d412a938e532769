"""Fixtures for the API tests: a fresh data dir, settings, and an app served by TestClient (no worker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.server.app import create_app
from tests.server.helpers import make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The whole app (API + UI) without a worker: pure HTTP over the real store."""
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as c:
        yield c


@pytest.fixture
def store(client: TestClient) -> JobStore:
    """The app's own store (for worker-side moves in HTTP tests: claim, progress, finish)."""
    s: JobStore = client.app.state.store  # type: ignore[attr-defined]
    return s
