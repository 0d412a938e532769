"""Helpers for the job tests: small valid requests, settings under a folder, jobs created like the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import update

from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import Job, JobStore
from stillmotion.jobs.store.schema import jobs

TINY_MODEL = "tiny-i2vgen-xl"


def tiny_request(steps: int = 2, **overrides: Any) -> dict[str, Any]:
    """A request the tiny model runs on CPU in about a second."""
    request: dict[str, Any] = {
        "prompt": "waves rolling in",
        "model": TINY_MODEL,
        "height": 64,
        "width": 64,
        "num_frames": 8,
        "num_inference_steps": steps,
        "seed": 1234,
    }
    request.update(overrides)
    return request


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "default_model": TINY_MODEL, "device": "cpu"}
    values.update(overrides)
    return Settings(**values)


def add_job(store: JobStore, job_id: str, *, steps: int = 2, key: str | None = None, **overrides: Any) -> Job:
    """Create a queued job the way the API does: the input file first, then the row."""
    job_dir = store.job_dir(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    write_png(job_dir / "input.png")
    job, _ = store.create(
        job_id=job_id,
        request=tiny_request(steps, **overrides),
        input_filename="input.png",
        idempotency_key=key,
    )
    return job


def write_png(path: Path, size: tuple[int, int] = (64, 64)) -> None:
    image = Image.new("RGB", size)
    for x in range(size[0]):
        for y in range(size[1]):
            image.putpixel((x, y), (x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256))
    image.save(path)


class Clock:
    """A controllable UTC clock for ``JobStore.open(..., clock=)``: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def lapse_lease(store: JobStore, job_id: str) -> None:
    """Let ``job_id``'s lease lapse now: its worker stopped renewing it long ago. Leases are timed by the
    database's clock, so a test moves the expiry into the past rather than moving a clock forward."""
    with store.db.transaction() as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
