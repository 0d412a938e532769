"""Fixtures for the whole suite: the throwaway PostgreSQL server the PostgreSQL-backed tests share."""

from __future__ import annotations

import os
from collections.abc import Iterator

# One OpenMP thread per process, set before anything imports torch (the services and workers the tests start
# inherit it). `make test` runs two test processes on two cores, and the service tests start servers and
# workers beside them: with torch's default of one thread per core in each process, OpenMP threads spin
# waiting for each other. Measured with `pytest -n 2 --dist loadfile` on four engine test files
# (test_family_resume, test_few_steps, test_engine, test_family_equivalence) on this 2-core machine: 170 s
# wall and 313 s of CPU by default, 40 s and 58 s with one thread. The tiny models gain nothing from more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

from tests.support.throwaway_postgres import PostgresUnavailable, ThrowawayPostgres

SKIP_POSTGRES_ENV = "STILLMOTION_SKIP_POSTGRES_TESTS"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every test module, and with them torch and diffusers, is imported now: freeze those objects, as the
    worker and the CLI do after their imports (stillmotion/startup_heap.py), so the engine's gc.collect after
    each in-process job skips them (0.3 s a job here otherwise)."""
    from stillmotion.startup_heap import freeze_startup_objects

    freeze_startup_objects()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """One PostgreSQL cluster in a temp folder for the session (each test makes its own database in it).

    A test that needs it fails, saying why, when it cannot start: never a silent skip. Only an explicit
    STILLMOTION_SKIP_POSTGRES_TESTS=1 (for a machine without root or sudo; CI never sets it) skips them."""
    if os.environ.get(SKIP_POSTGRES_ENV) == "1":
        pytest.skip(f"{SKIP_POSTGRES_ENV}=1: the PostgreSQL tests are switched off")
    try:
        server = ThrowawayPostgres.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"the PostgreSQL tests need a server the suite starts itself: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """The job database a test runs on; store tests parametrize it over ``BACKENDS`` (tests/backends.py)."""
    name: str = request.param
    return name


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """``settings.database_url`` for the backend: None (SQLite in the data folder) or a new PostgreSQL DB."""
    if backend == "sqlite":
        return None
    server: ThrowawayPostgres = request.getfixturevalue("postgres_server")
    return server.create_database()
