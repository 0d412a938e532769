"""``LocalWorkerPool``: the worker processes of this machine, one per GPU (``stillmotion serve --workers``).

Each worker is a ``WorkerSupervisor`` (its own process, restarted when it dies) pinned to one card with
``CUDA_VISIBLE_DEVICES``, so inside it the card is ``cuda:0`` and it plans against that card's free memory
alone. ``--workers auto`` starts one per visible GPU and one on a machine without a GPU; the default, one
worker named ``worker-0`` on whatever device it finds, is the single-machine setup it always was.

The pool and ``jobs/workers/ray_pool.py`` answer the same four calls (``WorkerPool``), which is all the API
process knows of its workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from stillmotion.config import Settings
from stillmotion.errors import InvalidRequest
from stillmotion.jobs.store.job_store import Job, JobStore
from stillmotion.jobs.workers.supervisor import WorkerSupervisor
from stillmotion.jobs.workers.worker_state import DEFAULT_WORKER_ID

logger = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 20


class WorkerPool(Protocol):
    """What the API process does with its workers, wherever they run."""

    def recover_interrupted(self) -> list[Job]:
        """At start: re-queue the jobs this pool's workers left running when the service last stopped."""
        ...

    def start(self) -> None: ...

    def stop(self, grace_s: float) -> None:
        """Drain: no new jobs; running ones finish within ``grace_s`` or go back to the queue."""
        ...

    def interrupt(self) -> None:
        """Stop now: running jobs stop at their next step and go back to the queue (Ctrl-C)."""
        ...

    def statuses(self) -> list[dict[str, Any]]:
        """One dict per worker: worker_id, node, gpu, alive, ready, current_job_id, pid, restarts, device."""
        ...


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use, as CUDA_VISIBLE_DEVICES entries; empty without one.

    Read from CUDA_VISIBLE_DEVICES when it is set, else from ``nvidia-smi -L``: the API process does not
    import torch (it would hold a CUDA context on every card)."""
    pinned = os.environ.get("CUDA_VISIBLE_DEVICES")
    if pinned is not None:
        return [d.strip() for d in pinned.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("nvidia-smi -L failed (%s); counting no GPU", exc)
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def worker_count(workers: int | str, gpus: list[str]) -> int:
    """How many workers ``--workers`` asks for: a number, or 'auto' (one per GPU, one without a GPU)."""
    if workers == "auto":
        return max(1, len(gpus))
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        return workers
    raise InvalidRequest(
        f"workers={workers!r} is not valid: give a whole number of at least 1, or 'auto' (one per GPU).",
        field="workers",
    )


def cpu_threads_per_worker(count: int, cores: int) -> int | None:
    """On a machine without a GPU, the cores each of ``count`` workers computes on (OMP_NUM_THREADS), or
    None for one worker (torch's own default: every core). torch gives every process one OpenMP thread per
    core; several workers on the same cores then spin waiting for each other (two processes on two cores ran
    4x slower in tests/conftest.py's measurement), so the cores are shared out instead."""
    if count <= 1:
        return None
    return max(1, cores // count)


def worker_ids(settings: Settings, count: int) -> list[str]:
    """Each worker's id, unique across every machine sharing the store: ``worker-0`` for the one default
    worker; with a shared database (several machines) the machine's name goes first."""
    if count == 1 and settings.database_url is None:
        return [DEFAULT_WORKER_ID]
    prefix = f"{settings.node_name}-" if settings.database_url is not None else ""
    return [f"{prefix}worker-{i}" for i in range(count)]


class LocalWorkerPool:
    """``settings.workers`` worker processes on this machine, each pinned to its own GPU (if there are)."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        gpus = visible_gpus()
        count = worker_count(settings.workers, gpus)
        if gpus and count > len(gpus):
            logger.warning(
                "workers=%d but %d GPU(s) visible: several workers share a card and plan with its memory "
                "as if it were theirs alone",
                count,
                len(gpus),
            )
        self.store = store
        self.ids = worker_ids(settings, count)
        self.supervisors: list[WorkerSupervisor] = []
        threads = cpu_threads_per_worker(count, os.cpu_count() or 1) if not gpus else None
        for i, worker_id in enumerate(self.ids):
            env = dict(os.environ)
            gpu = gpus[i % len(gpus)] if gpus and count > 1 else None
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu  # the card is cuda:0 inside; it plans with its own memory
            if threads is not None and "OMP_NUM_THREADS" not in env:
                env["OMP_NUM_THREADS"] = str(threads)
            self.supervisors.append(
                WorkerSupervisor(
                    settings, worker_id=worker_id, store=store, env=env, node=settings.node_name, gpu=gpu
                )
            )

    def recover_interrupted(self) -> list[Job]:
        if self.ids == [DEFAULT_WORKER_ID] and self.store.settings.database_url is None:
            # The one worker of this machine's own database: everything left running was its.
            return self.store.requeue_interrupted("service restarted")
        # Other machines' workers may share this database: only this machine's jobs are ours to take back
        # (the others' come back when their lease lapses).
        return [
            job
            for worker_id in self.ids
            for job in self.store.requeue_interrupted("service restarted", worker_id=worker_id)
        ]

    def start(self) -> None:
        for supervisor in self.supervisors:
            supervisor.start()

    def stop(self, grace_s: float) -> None:
        # Every worker drains at once (each may take grace_s), not one after the other.
        with ThreadPoolExecutor(max_workers=len(self.supervisors)) as stopping:
            list(stopping.map(lambda supervisor: supervisor.stop(grace_s), self.supervisors))

    def interrupt(self) -> None:
        for supervisor in self.supervisors:
            supervisor.interrupt()

    def statuses(self) -> list[dict[str, Any]]:
        return [supervisor.status() for supervisor in self.supervisors]
