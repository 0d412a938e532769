"""Throughput with 1, 2, 3 ... Ray worker actors: ``python -m stillmotion.bench.scale`` (docs/scale.md).

For each actor count N it starts a local Ray cluster of N nodes with one logical GPU each
(``ray.cluster_utils.Cluster``: the actors run on the CPUs) and the service itself (``create_app`` with
``ray_address``) over the PostgreSQL job store named by ``--database-url`` (one you run; docs/scale.md says
how to start a throwaway one), waits until the N actors are ready (model loaded), submits ``--jobs``
tiny-model jobs through the REST API and times them from the first submission to the last finish. One JSON
line per N: jobs per minute, the median seconds per job as the workers measured them
(``result.timings.total_s``) and the ideal figure N x 60 / that median, to show what the queue costs.

Not a test: the figures depend on the machine (on a CPU box the actors share the same cores, so N actors
need N free cores to scale). ``--steps`` and ``--size`` set the job; the defaults are the tests' tiny job.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEADLINE_S = 900.0


def measure(actors: int, jobs: int, steps: int, size: int, database_url: str) -> dict[str, Any]:
    """One run with ``actors`` actors; returns its figures."""
    import ray
    from fastapi.testclient import TestClient
    from ray.cluster_utils import Cluster

    from stillmotion.config import Settings
    from stillmotion.server.app import create_app

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    for _ in range(actors - 1):
        cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    data_dir = Path(tempfile.mkdtemp(prefix="stillmotion-bench-scale-"))
    settings = Settings(
        data_dir=data_dir,
        default_model="tiny-i2vgen-xl",
        device="cpu",
        database_url=database_url,
        ray_address=cluster.address,
        min_free_disk_mb=0,
    )
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1:7860") as client:
            _until(lambda: client.get("/api/v1/health").json()["ready_workers"] == actors, "actors ready")
            image = _png(size)
            fields = {
                "prompt": "waves rolling in",
                "model": "tiny-i2vgen-xl",
                "height": str(size),
                "width": str(size),
                "num_frames": "8",
                "num_inference_steps": str(steps),
            }
            started = time.monotonic()
            ids = []
            for seed in range(jobs):
                response = client.post(
                    "/api/v1/jobs",
                    files={"image": ("in.png", image, "image/png")},
                    data={**fields, "seed": str(seed)},
                )
                response.raise_for_status()
                ids.append(response.json()["id"])
            done = _until(lambda: _finished(client, ids), "every job finished")
            elapsed = time.monotonic() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    per_job = [float(job["result"]["timings"]["total_s"]) for job in done if job.get("result")]
    median_job_s = statistics.median(per_job) if per_job else float("nan")
    return {
        "actors": actors,
        "jobs": jobs,
        "succeeded": sum(1 for job in done if job["status"] == "succeeded"),
        "elapsed_s": round(elapsed, 2),
        "jobs_per_min": round(jobs * 60 / elapsed, 2),
        "median_job_s": round(median_job_s, 3),
        "ideal_jobs_per_min": round(actors * 60 / median_job_s, 2),
        "steps": steps,
        "size": size,
        "cpus": os.cpu_count(),
    }


def _png(size: int) -> bytes:
    """The job's input: a gradient, generated here (no file to ship)."""
    from PIL import Image

    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _finished(client: Any, ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = [client.get(f"/api/v1/jobs/{job_id}").json() for job_id in ids]
    return jobs if all(job["status"] in ("succeeded", "failed", "cancelled") for job in jobs) else None


def _until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"gave up after {DEADLINE_S:g}s waiting for {what}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stillmotion.bench.scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--actors", default="1,2,3", help="actor counts to measure, comma-separated")
    parser.add_argument("--jobs", type=int, default=12, help="jobs per run")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per job")
    parser.add_argument("--size", type=int, default=64, help="height and width of each job, in pixels")
    parser.add_argument(
        "--database-url",
        required=True,
        help="the job store: a PostgreSQL database you run, as a SQLAlchemy URL "
        "(postgresql+psycopg://USER@HOST:PORT/DB; docs/scale.md says how to start a throwaway server)",
    )
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.actors.split(",")]
    for count in counts:
        figures = measure(count, args.jobs, args.steps, args.size, args.database_url)
        sys.stdout.write(json.dumps(figures) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
