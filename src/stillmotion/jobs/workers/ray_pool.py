"""``RayPool``: one Ray actor per GPU of a Ray cluster, each a worker taking jobs from the shared store
(``stillmotion serve --ray ADDRESS``; docs/scale.md).

The pieces, all plain Ray:

- ``GpuWorker`` (``num_gpus=1``, restarted by Ray when it dies): builds the engine once and runs the same
  ``Worker`` loop as a local worker process, in a thread, claiming jobs from the store under leases. Ray pins
  it to its card (CUDA_VISIBLE_DEVICES), so it plans against that card's memory. Its job folders are a
  scratch folder on its own node (the input, the run's video, the checkpoint): no shared filesystem. Ray
  restarts dead actors only, so the actor supervises its own loop: it waits for the database at start, and a
  loop that ends by anything but a stop is started again (an idle worker's thread once died of a 5 s
  database outage and left a live actor that took no job).
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
from ray.exceptions import RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from stillmotion.atomic_file import atomic_file
from stillmotion.config import Settings
from stillmotion.errors import StillmotionError
from stillmotion.jobs.store.job_store import DatabaseError, Job, JobStore, LeaseLost
from stillmotion.jobs.workers.job_files import input_files, publish_output, run_output_path
from stillmotion.jobs.workers.worker import Worker, open_store
from stillmotion.logging_setup import setup_logging
from stillmotion.media.video_output import sidecar_path_for
from stillmotion.startup_heap import freeze_startup_objects

logger = logging.getLogger(__name__)

NAMESPACE = "stillmotion"
STATUS_TIMEOUT_S = 5.0  # an actor that does not answer its status this fast counts as down
PROBE_TIMEOUT_S = 5.0  # a head node answers a TCP connect at once; ray.init's own retries take minutes
GCS_PROBE_TIMEOUT_S = 5.0  # Ray's own client asking the head for its cluster id (plus ~10 s of its connects)
PROBE_DEADLINE_S = 25.0  # the whole check, whatever the client does: refuse within 30 s, naming the address
LOOP_RESTART_S = 1.0  # a worker loop that ended unexpectedly starts again after this, doubling up to:
MAX_LOOP_RESTART_S = 30.0
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
    """Fail within 30 s unless a Ray head answers at a HOST:PORT address: ``ray.init`` itself retries for
    minutes, at a dead port and at a live one that is not Ray (e.g. PostgreSQL's). A TCP connect first (a
    dead port fails at once), then Ray's own client asks the head for its cluster id with a bounded timeout.
    ``auto``/``local`` (found or started by Ray) are left to Ray; ``ray://`` (Ray Client) gets the TCP
    check."""
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
    if not address.startswith("ray://"):
        _probe_ray_head(address)


def _probe_ray_head(address: str) -> None:
    """Ask the head at ``address`` for its cluster id with Ray's GCS client (bounded: it runs in a thread
    given ``PROBE_DEADLINE_S``); RayUnavailable unless it answers."""
    import ray._raylet as raylet

    # InnerGcsClient is what GcsClient wraps, called with a timeout of our own (GcsClient's own is 30 s plus
    # its connects: 40 s). It is Ray's internal API; without it GcsClient still answers a real head at once,
    # and the thread's deadline bounds the wait for anything else.
    inner = getattr(raylet, "InnerGcsClient", None)

    def client() -> object:
        if inner is not None:
            return inner.standalone(address, None, int(GCS_PROBE_TIMEOUT_S * 1000))
        return raylet.GcsClient(address=address)  # type: ignore[attr-defined]

    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            client()
            outcome.append(None)
        except BaseException as exc:  # whatever the client raises, the answer is "not a Ray head"
            outcome.append(exc)

    thread = threading.Thread(target=ask, name="ray-probe", daemon=True)
    thread.start()
    thread.join(PROBE_DEADLINE_S)
    if outcome and outcome[0] is None:
        return
    why = f"{type(outcome[0]).__name__}: {str(outcome[0]).splitlines()[0][:200]}" if outcome else "no answer"
    raise RayUnavailable(
        f"Something listens at ray_address={address!r}, but it is not a Ray head: Ray's client got no "
        f"cluster id from it ({why}). Give the head node's GCS address (ray start --head prints it; port "
        "6379 by default), or --ray auto on a machine that is part of the cluster."
    )


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
            out.append(
                status
                or {
                    "worker_id": f"ray-actor-{index}",
                    "alive": False,
                    "ready": False,
                    "restarting": False,
                    "down_reason": "its Ray actor does not answer (Ray restarts a lost actor once a GPU is "
                    "free for it)",
                }
            )
        return out


@ray.remote
class GpuWorker:
    """One GPU's worker: the engine loaded once, the ``Worker`` loop in a supervised thread (module
    docstring)."""

    def __init__(self, settings_json: str, index: int, depot: Any) -> None:
        from stillmotion.engine.engine import Engine

        context = ray.get_runtime_context()
        node = context.get_node_id()
        gpu_ids = ray.get_gpu_ids()
        self.gpu = str(gpu_ids[0]) if gpu_ids else None
        self.worker_id = f"ray-{node[:8]}-gpu{self.gpu if self.gpu is not None else index}"
        shared = Settings.model_validate_json(settings_json)
        scratch = Path(tempfile.gettempdir()) / "stillmotion-ray" / self.worker_id
        self.settings = shared.model_copy(update={"data_dir": scratch, "node_name": node[:8]})
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(self.settings, self.worker_id)
        self.node = node[:8]
        self.device = self.settings.device
        self.restarted = context.was_current_actor_reconstructed
        self.engine = Engine(self.settings)
        freeze_startup_objects()  # each job's gc.collect then skips torch's and diffusers' objects
        self.depot = depot
        self.store: JobStore | None = None
        self.worker: Worker | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._loop_restarts = 0
        self.thread = threading.Thread(target=self._serve, name="worker", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        """Open the store (waiting for the database), re-queue what this actor held before Ray restarted it,
        run the loop; start it again after a pause if it ends by anything but a stop."""
        delay = LOOP_RESTART_S
        while not self._stopping.is_set():
            try:
                if self.worker is None:
                    store = open_store(self.settings, self._stopping)
                    if store is None:
                        return
                    self.store = store
                    self.worker = Worker(
                        self.settings,
                        store,
                        self.engine,
                        worker_id=self.worker_id,
                        files=RayJobFiles(store, self.depot),
                    )
                    self.worker.recover_interrupted()  # what this actor held before Ray restarted it
                    self._ready.set()
                    logger.info("Ray worker %s ready (pid %d)", self.worker_id, os.getpid())
                if self._stopping.is_set():
                    return
                self.worker.run()
                return  # drained
            except Exception:
                self._loop_restarts += 1
                logger.exception(
                    "Ray worker %s: its loop ended; starting it again in %gs", self.worker_id, delay
                )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_LOOP_RESTART_S)

    def status(self) -> dict[str, Any]:
        current: str | None = None
        if self.store is not None:
            try:
                running = self.store.running_jobs(self.worker_id)
                current = running[0].id if running else None
            except DatabaseError:  # health says why; the actor itself is fine
                pass
        alive = self.thread.is_alive()
        return {
            "worker_id": self.worker_id,
            "node": self.node,
            "gpu": self.gpu,
            "alive": alive,
            "ready": alive and self._ready.is_set(),
            "restarting": False,
            "current_job_id": current,
            "pid": os.getpid(),
            "restarts": int(self.restarted) + self._loop_restarts,
            "device": self.device,
        }

    def stop(self, grace_s: float) -> None:
        """Drain: finish the running job within ``grace_s``, else stop it at its next step (re-queued)."""
        self._stopping.set()
        worker = self.worker
        if worker is not None:
            worker.drain()
        self.thread.join(grace_s)
        if self.thread.is_alive() and worker is not None:
            worker.interrupt()
        self.thread.join()
        if self.store is not None:
            self.store.close()

    def interrupt(self) -> None:
        self._stopping.set()
        if self.worker is not None:
            self.worker.interrupt()


class RayJobFiles:
    """A Ray actor's ``JobFiles``: the input fetched from the depot, the video sent back to it as bytes."""

    def __init__(self, store: JobStore, depot: Any) -> None:
        self.store = store
        self.depot = depot

    def input_path(self, job: Job) -> Path:
        """The input, fetched from the depot with the job's other input files (its last frame)."""
        job_dir = self.store.job_dir(job.id)
        path = job_dir / job.input_filename
        if not path.is_file():  # a retry on this node already has them (the input is written last)
            files: dict[str, bytes] = ray.get(self.depot.read_inputs.remote(job.id))
            job_dir.mkdir(parents=True, exist_ok=True)
            for name in sorted(files, key=lambda name: name == job.input_filename):
                with atomic_file(job_dir / Path(name).name) as out:
                    out.write(files[name])
        return path

    def publish(self, job: Job, video: Path, sha256: str, result: dict[str, Any]) -> Job:
        """Hand the video to the depot, which publishes it; the depot's errors are raised as they are (a
        database outage: the worker tries again with the same files)."""
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
        except RayTaskError as exc:
            if isinstance(exc.cause, StillmotionError):
                raise exc.cause from None
            raise
        for path in (video, sidecar):  # the depot holds the copy that counts
            path.unlink(missing_ok=True)
        if lost is not None:
            raise LeaseLost(lost)
        return self.store.get(job.id)


@ray.remote
class FileDepot:
    """The API node's data folder, as the actors see it: inputs out, finished videos in."""

    def __init__(self, settings_json: str) -> None:
        settings = Settings.model_validate_json(settings_json)
        setup_logging(settings, "depot")
        self.store = JobStore.open(settings)

    def read_inputs(self, job_id: str) -> dict[str, bytes]:
        """The job's input files (``input_files``) by name."""
        job = self.store.get(job_id)
        return {path.name: path.read_bytes() for path in input_files(self.store.job_dir(job.id), job)}

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
            _remove(path)
            return exc.message
        except BaseException:  # e.g. the database is unreachable: the actor sends the video again
            _remove(path)
            raise
        return None


def _remove(run_video: Path) -> None:
    """A run's video and sidecar that were not published: they must not stay in the job folder."""
    for leftover in (run_video, sidecar_path_for(run_video)):
        leftover.unlink(missing_ok=True)
