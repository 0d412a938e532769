"""Helpers shared by the server and browser tests: images made in the test, live servers, leftovers."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from stillmotion.config import Settings

BASE = "http://127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]


def png_bytes(width: int = 96, height: int = 64, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A small valid PNG with a gradient (so it is not trivially uniform)."""
    image = Image.new("RGB", (width, height), colour)
    for x in range(width):
        image.putpixel((x, height // 2), (x * 255 // max(width - 1, 1), 100, 255 - colour[2]))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test server: tiny model, CPU, loopback, no disk floor unless asked."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "default_model": "tiny-i2vgen-xl",
        "device": "cpu",
        "host": "127.0.0.1",
        "min_free_disk_mb": 0,
    }
    values.update(overrides)
    return Settings(**values)


def small_job_fields(**extra: str) -> dict[str, str]:
    fields = {
        "prompt": "a red square drifting",
        "height": "64",
        "width": "64",
        "num_frames": "8",
        "num_inference_steps": "2",
        "model": "tiny-i2vgen-xl",
    }
    fields.update(extra)
    return fields


def leftovers(settings: Settings) -> list[str]:
    """Files under the upload temp dir and the jobs dir (both must be empty after a refused request)."""
    found: list[str] = []
    for root in (settings.data_dir / "tmp", settings.jobs_dir):
        if root.exists():
            found += [str(p.relative_to(settings.data_dir)) for p in root.rglob("*")]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def live_server(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread (real sockets, real concurrency); yields the base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"{BASE}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def server_process(data_dir: Path, port: int, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m stillmotion.server.run`` (what ``stillmotion serve`` runs); always reaped."""
    environ = dict(os.environ)
    environ.update(
        {
            "STILLMOTION_DATA_DIR": str(data_dir),
            "STILLMOTION_DEFAULT_MODEL": "tiny-i2vgen-xl",
            "STILLMOTION_DEVICE": "cpu",
            "STILLMOTION_HOST": "127.0.0.1",
            "STILLMOTION_PORT": str(port),
            "STILLMOTION_MIN_FREE_DISK_MB": "0",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
    )
    environ.update(env)
    log = open(data_dir.parent / f"server-{port}.log", "ab")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillmotion.server.run"],
        env=environ,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_healthy(f"{BASE}:{port}", proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def wait_healthy(
    base: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 180
) -> dict[str, Any]:
    """Poll /api/v1/health until the service is settled: ok (its worker is ready) and the default model's
    readiness checked (that first check imports the model code in the API process); fail fast if the process
    died. Tests that measure the service measure it from here, not its start-up. The wait is a hang guard:
    a worker's start (importing torch and diffusers) took over 60 s on 2 cores busy with Ray's or Chromium's
    tests."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            last = httpx.get(f"{base}/api/v1/health", timeout=2).json()
            if last.get("ok") and last.get("default_model") is not None:
                return dict(last)
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    _dump_starting_workers(last)
    raise TimeoutError(f"server not healthy after {timeout_s}s: {last}")


def _dump_starting_workers(health: Any) -> None:
    """Ask each worker still starting to print its threads' stacks into the service's log (SIGUSR1,
    faulthandler in the worker): the log then says where it was stuck."""
    workers = health.get("workers", []) if isinstance(health, dict) else []
    for worker in workers:
        if worker.get("status") == "starting" and worker.get("pid"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(worker["pid"]), signal.SIGUSR1)


def wait_terminal(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """The job once it is terminal. A 503 (the database is briefly unreachable) is waited out, as a client
    following Retry-After would; any other non-200 answer fails at once, showing it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = client.get(f"/api/v1/jobs/{job_id}")
        if answer.status_code == 503 and int(answer.headers.get("Retry-After", "0")) > 0:
            time.sleep(0.5)
            continue
        assert answer.status_code == 200, f"GET job {job_id}: {answer.status_code} {answer.text}"
        job: dict[str, Any] = answer.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not finished after {timeout_s}s")


def wait_for(what: str, check: Any, timeout_s: float) -> Any:
    """``check()``'s first true value, polled every 0.25 s; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
