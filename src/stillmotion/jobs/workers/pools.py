"""``make_pool(settings, store)``: the workers the API process runs, chosen by the settings.

Local worker processes (``jobs/workers/local_pool.py``) by default, or Ray actors across a cluster
(``jobs/workers/ray_pool.py``, imported only then: Ray is an optional extra) when ``settings.ray_address`` is
set."""

from __future__ import annotations

from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.workers.local_pool import LocalWorkerPool, WorkerPool


def make_pool(settings: Settings, store: JobStore) -> WorkerPool:
    if settings.ray_address:
        from stillmotion.jobs.workers.ray_pool import RayPool

        return RayPool(settings, store)
    return LocalWorkerPool(settings, store)
