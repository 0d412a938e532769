"""``RayPool``: one Ray actor per GPU of a Ray cluster, each a worker taking jobs from the shared store
(``stillmotion serve --ray ADDRESS``; docs/scale.md).

The pieces, all plain Ray:

- ``GpuWorker`` (``num_gpus=1``, restarted by Ray when it dies): builds the engine once and runs the same
  ``Worker`` loop as a local worker process, in a thread, claiming jobs from the store under leases. Ray pins
  it to its card (CUDA_VISIBLE_DEVICES), so it plans against that card's memory. Its job folders are a
  scratch folder on its own node (the input, the run's video, the checkpoint): no shared filesystem.
- ``FileDepot`` (pinned to the API's node, no GPU): the only process that touches the API's data folder for
  the actors. An actor fetches a job's input from it and sends it the finished video as bytes (a Ray object);
  the depot writes the video into the job folder and publishes it under the job's lease, exactly as a local
  worker does (``jobs/workers/job_files.publish_output``), so a run that lost its lease changes nothing.

A node that dies takes its actors with it; their jobs' leases lapse and the other actors take the jobs back
(``JobStore.requeue_expired_leases``), attempt counted. The store must be reachable from every node:
PostgreSQL (``STILLMOTION_DATABASE_URL``), or SQLite only when every Ray node is on the API's machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from stillmotion.atomic_file import atomic_file
from stillmotion.config import Settings
from stillmotion.errors import StillmotionError
from stillmotion.jobs.store.job_store import Job, JobStore, LeaseLost
from stillmotion.jobs.workers.job_files import publish_output, run_output_path
from stillmotion.media.video_output import sidecar_path_for

logger = logging.getLogger(__name__)

NAMESPACE = "stillmotion"
STATUS_TIMEOUT_S = 5.0  # an actor that does not answer its status this fast counts as down
PROBE_TIMEOUT_S = 5.0  # a head node answers a TCP connect at once; ray.init's own retries take minutes
STOP_MARGIN_S = 15.0  # beyond the drain grace: time for a stopped job to be re-queued


class RayUnavailable(StillmotionError):
    """The Ray cluster cannot run this service's workers (unreachable, no GPU, or no shared store)."""

    code = "ray_unavailable"
    exit_code = 2


def connect(settings: Settings) -> None:
    """Join the Ray cluster at ``settings.ray_address`` and check that it can run the workers; raises
    ``RayUnavailable`` saying why not. Called by ``stillmotion serve`` before the server starts."""
    address = settings.ray_address
    _probe(address)
    try:
        ray.init(address=address, namespace=NAMESPACE, ignore_reinit_error=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailable(
            f"Could not join the Ray cluster at ray_address={address!r}: {str(exc).rstrip('.')}. Start it "
            "first (ray start --head on one machine, ray start --address=HEAD:6379 on the others) or pass "
            "--ray auto on a machine that is part of it."
        ) from None
    if int(ray.cluster_resources().get("GPU", 0)) < 1:
        raise RayUnavailable(
            f"The Ray cluster at {address!r} has no GPU: each worker is one actor with num_gpus=1. Start its "
            "nodes on GPU machines (or with --num-gpus=N for logical GPUs when testing on CPUs)."
        )
    if settings.database_url is None:
        here = ray.util.get_node_ip_address()
        elsewhere = sorted(
            {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] != here}
        )
        if elsewhere:
            raise RayUnavailable(
                "The job database is SQLite, a file on this machine, but Ray nodes run on other machines "
                f"({', '.join(elsewhere)}). Set STILLMOTION_DATABASE_URL=postgresql+psycopg://USER:PASS@HOST/"
                "DB to a PostgreSQL server every node reaches (docs/scale.md); SQLite works with Ray only "
                "when every node is on this machine."
            )


def _probe(address: str | None) -> None:
    """Fail in seconds when nothing listens at a HOST:PORT address: ``ray.init`` itself retries an unreachable
    head for minutes before it gives up. ``auto``/``local`` (found or started by Ray) are left to Ray."""
    if not address or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(
            f"ray_address={address!r} is not an address: use HOST:PORT of the head node "
            "(e.g. 10.0.0.5:6379), ray://HOST:10001 or auto."
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RayUnavailable(
            f"Nothing answers at ray_address={address!r} ({exc.strerror or exc}). Start the cluster first "
            "(ray start --head on one machine, ray start --address=HEAD:6379 on the others), check the "
            "address and that the port is open from this machine."
        ) from None


def _shared_settings(settings: Settings) -> Settings:
    """The settings the actors get: the store named by a URL every node can open (SQLite by its absolute
    path: all nodes are on this machine then, see ``connect``)."""
    url = settings.database_url or f"sqlite:///{settings.db_path.resolve()}"
    return settings.model_copy(update={"database_url": url, "data_dir": settings.data_dir.resolve()})


class RayPool:
    """The API process's handle on the actors (``jobs/workers/local_pool.WorkerPool``)."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = _shared_settings(settings)
        self.store = store
        self.depot: Any = None
        self.actors: list[Any] = []

    def recover_interrupted(self) -> list[Job]:
        # Nothing to do here: each actor re-queues its own jobs when it starts, and the jobs of actors that
        # are gone come back when their lease lapses.
        return []

    def start(self) -> None:
        connect(self.settings)
        settings_json = self.settings.model_dump_json(exclude={"api_token"})
        here = ray.get_runtime_context().get_node_id()
        self.depot = FileDepot.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
            num_cpus=0,
            max_concurrency=16,
        ).remote(settings_json)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.actors = [
            GpuWorker.options(  # type: ignore[attr-defined]
                num_gpus=1, num_cpus=0, max_restarts=-1, max_concurrency=4
            ).remote(settings_json, index, self.depot)
            for index in range(gpus)
        ]
        logger.info("started %d Ray worker actor(s), one per GPU of the cluster", len(self.actors))

    def stop(self, grace_s: float) -> None:
        # Only live actors can drain; one waiting for a GPU (its node was lost) would only make us wait.
        alive = [a for a, s in zip(self.actors, self.statuses(), strict=True) if s.get("alive")]
        refs = [actor.stop.remote(grace_s) for actor in alive]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=grace_s + STOP_MARGIN_S)
        if len(ready) < len(refs):
            logger.warning("%d Ray worker(s) did not stop in time; killing them", len(refs) - len(ready))
        for actor in [*self.actors, self.depot]:
            if actor is not None:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        self.actors, self.depot = [], None

    def interrupt(self) -> None:
        for actor in self.actors:
            actor.interrupt.remote()

    def statuses(self) -> list[dict[str, Any]]:
        refs = [actor.status.remote() for actor in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STATUS_TIMEOUT_S)
        done = set(ready)
        out: list[dict[str, Any]] = []
        for index, ref in enumerate(refs):
            status: dict[str, Any] | None = None
            if ref in done:
                with contextlib.suppress(Exception):  # a dead actor's call raises: it is down
                    status = ray.get(ref)
            out.append(status or {"worker_id": f"ray-actor-{index}", "alive": False, "ready": False})
        return out


@ray.remote
class GpuWorker:
    """One GPU's worker: the engine loaded once, the ``Worker`` loop in a thread (module docstring)."""

    def __init__(self, settings_json: str, index: int, depot: Any) -> None:
        from stillmotion.engine.engine import Engine
        from stillmotion.jobs.workers.worker import Worker

        context = ray.get_runtime_context()
        node = context.get_node_id()
        gpu_ids = ray.get_gpu_ids()
        self.gpu = str(gpu_ids[0]) if gpu_ids else None
        self.worker_id = f"ray-{node[:8]}-gpu{self.gpu if self.gpu is not None else index}"
        shared = Settings.model_validate_json(settings_json)
        scratch = Path(tempfile.gettempdir()) / "stillmotion-ray" / self.worker_id
        settings = shared.model_copy(update={"data_dir": scratch, "node_name": node[:8]})
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.node = node[:8]
        self.restarted = context.was_current_actor_reconstructed
        self.store = JobStore.open(settings)
        self.worker = Worker(
            settings,
            self.store,
            Engine(settings),
            worker_id=self.worker_id,
            files=RayJobFiles(self.store, depot),
        )
        self.worker.recover_interrupted()  # what this actor held before Ray restarted it
        self.device = settings.device
        self.thread = threading.Thread(target=self.worker.run, name="worker", daemon=True)
        self.thread.start()
        logger.info("Ray worker %s ready (pid %d)", self.worker_id, os.getpid())

    def status(self) -> dict[str, Any]:
        running = self.store.running_jobs(self.worker_id)
        return {
            "worker_id": self.worker_id,
            "node": self.node,
            "gpu": self.gpu,
            "alive": self.thread.is_alive(),
            "ready": self.thread.is_alive(),
            "current_job_id": running[0].id if running else None,
            "pid": os.getpid(),
            "restarts": int(self.restarted),
            "device": self.device,
        }

    def stop(self, grace_s: float) -> None:
        """Drain: finish the running job within ``grace_s``, else stop it at its next step (re-queued)."""
        self.worker.drain()
        self.thread.join(grace_s)
        if self.thread.is_alive():
            self.worker.interrupt()
            self.thread.join()
        self.store.close()

    def interrupt(self) -> None:
        self.worker.interrupt()


class RayJobFiles:
    """A Ray actor's ``JobFiles``: the input fetched from the depot, the video sent back to it as bytes."""

    def __init__(self, store: JobStore, depot: Any) -> None:
        self.store = store
        self.depot = depot

    def input_path(self, job: Job) -> Path:
        path = self.store.job_dir(job.id) / job.input_filename
        if not path.is_file():  # a retry on this node already has it
            data = ray.get(self.depot.read_input.remote(job.id))
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as out:
                out.write(data)
        return path

    def publish(self, job: Job, video: Path, sha256: str, result: dict[str, Any]) -> Job:
        sidecar = sidecar_path_for(video)
        try:
            lost = ray.get(
                self.depot.publish.remote(
                    job.id,
                    job.lease_token,
                    video.read_bytes(),
                    sidecar.read_bytes() if sidecar.exists() else None,
                    sha256,
                    result,
                )
            )
        finally:
            for path in (video, sidecar):  # the depot holds the copy that counts
                path.unlink(missing_ok=True)
        if lost is not None:
            raise LeaseLost(lost)
        return self.store.get(job.id)


@ray.remote
class FileDepot:
    """The API node's data folder, as the actors see it: inputs out, finished videos in."""

    def __init__(self, settings_json: str) -> None:
        self.store = JobStore.open(Settings.model_validate_json(settings_json))

    def read_input(self, job_id: str) -> bytes:
        job = self.store.get(job_id)
        return (self.store.job_dir(job.id) / job.input_filename).read_bytes()

    def publish(
        self,
        job_id: str,
        lease: str | None,
        video: bytes,
        sidecar: bytes | None,
        sha256: str,
        result: dict[str, Any],
    ) -> str | None:
        """Store the run's video and publish it under ``lease``; the reason when the lease was lost."""
        job = dataclasses.replace(self.store.get(job_id), lease_token=lease)
        path = run_output_path(self.store.job_dir(job.id), job)
        with atomic_file(path) as out:
            out.write(video)
        if sidecar is not None:
            with atomic_file(sidecar_path_for(path)) as out:
                out.write(sidecar)
        try:
            publish_output(self.store, job, path, sha256, result)
        except LeaseLost as exc:
            for leftover in (path, sidecar_path_for(path)):
                leftover.unlink(missing_ok=True)
            return exc.message
        return None
