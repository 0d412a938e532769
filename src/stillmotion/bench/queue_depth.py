"""Enqueue and status latency at a deep queue (RELIABILITY L1): ``python -m stillmotion.bench.queue_depth``.

Fills a fresh data folder's queue with ``--depth`` pending jobs (straight into the store), then times
``--submits`` real ``POST /api/v1/jobs`` uploads and ``--reads`` ``GET /api/v1/jobs/{id}`` reads through the
whole app (no worker, so the queue only grows), and prints p50 / p99 / max of each as JSON. RELIABILITY's
targets are an enqueue p99 under 100 ms and a status p99 under 50 ms at 10,000 pending jobs; this prints the
figures, the tests only check the behaviour (a latency figure on 2 busy CI cores is noise, not a verdict).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from stillmotion.bench.service_load import percentiles
from stillmotion.config import Settings

PENDING_REQUEST: dict[str, Any] = {
    "prompt": "x",
    "negative_prompt": None,
    "model": "tiny-i2vgen-xl",
    "resolution": "512p",
    "height": None,
    "width": None,
    "num_frames": 8,
    "num_inference_steps": 2,
    "guidance_scale": None,
    "fps": None,
    "seed": 1,
}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def measure(data_dir: Path, depth: int, submits: int, reads: int) -> dict[str, Any]:
    """The figures for one run over a new data folder ``data_dir`` (see the module docstring)."""
    from fastapi.testclient import TestClient

    from stillmotion.server.app import create_app

    settings = Settings(
        data_dir=data_dir,
        default_model="tiny-i2vgen-xl",
        device="cpu",
        min_free_disk_mb=0,
        max_queue_size=depth + submits + 1,
    )
    fields = {
        "prompt": "a red square",
        "height": "64",
        "width": "64",
        "num_frames": "8",
        "model": "tiny-i2vgen-xl",
    }
    with TestClient(create_app(settings, start_worker=False), base_url="http://127.0.0.1:7860") as client:
        store = client.app.state.store  # type: ignore[attr-defined]
        ids = [str(uuid.uuid4()) for _ in range(depth)]
        for job_id in ids:
            store.create(job_id=job_id, request=PENDING_REQUEST, input_filename="input.png")
        image = _png()
        enqueue, status, codes = [], [], []
        for _ in range(submits):
            started = time.perf_counter()
            response = client.post(
                "/api/v1/jobs", files={"image": ("a.png", image, "image/png")}, data=fields
            )
            enqueue.append(time.perf_counter() - started)
            codes.append(response.status_code)
        for job_id in ids[:: max(1, depth // reads)][:reads]:
            started = time.perf_counter()
            codes.append(client.get(f"/api/v1/jobs/{job_id}").status_code)
            status.append(time.perf_counter() - started)
        total = client.get("/api/v1/jobs", params={"limit": 1}).json()["total"]
        last_position = client.get(f"/api/v1/jobs/{ids[-1]}").json()["queue_position"] if ids else None
    return {
        "depth": depth,
        "submits": submits,
        "reads": len(status),
        "codes": sorted(set(codes)),
        "total": total,
        "last_pending_position": last_position,
        "enqueue_s": percentiles(enqueue),
        "status_s": percentiles(status),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stillmotion.bench.queue_depth", description=__doc__)
    parser.add_argument("--depth", type=int, default=10_000, help="pending jobs before measuring")
    parser.add_argument("--submits", type=int, default=200)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stillmotion-queue-") as folder:
        figures = measure(Path(folder) / "data", args.depth, args.submits, args.reads)
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
