"""End to end through the real service: ``python -m stillmotion.server.run`` in a subprocess, the real worker
supervisor and the tiny model. curl-style submit -> poll -> download -> decode; client disconnects (F13,
F14); SIGTERM mid-job (F4); pollers and event streams while jobs run (L3, scaled, the load from its own
process)."""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.server.helpers import (
    BASE,
    free_port,
    leftovers,
    png_bytes,
    server_process,
    small_job_fields,
    wait_terminal,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("e2e") / "data"
    port = free_port()
    # One torch thread for the worker leaves the other core of a 2-core CI box to the API (L3 latency).
    with server_process(data_dir, port, OMP_NUM_THREADS="1"):
        yield f"{BASE}:{port}", data_dir


def _submit(http: httpx.Client, **fields: str) -> dict[str, Any]:
    response = http.post(
        "/api/v1/jobs",
        files={"image": ("photo.png", png_bytes(), "image/png")},
        data=small_job_fields(**fields),
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_submit_poll_download_decode(service: tuple[str, Path]) -> None:
    base, _ = service
    with httpx.Client(base_url=base, timeout=30) as http:
        job = _submit(http, seed="42")
        done = wait_terminal(http, job["id"])
        assert done["status"] == "succeeded", done
        assert done["plan"] and done["result"]["sha256"]
        assert done["progress"]["total_steps"] == 2
        video = http.get(done["links"]["video"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        with av.open(io.BytesIO(video.content)) as container:
            frames = list(container.decode(video=0))
        assert len(frames) == 8
        assert (frames[0].width, frames[0].height) == (64, 64)
        listed = http.get("/api/v1/jobs").json()
        assert job["id"] in [j["id"] for j in listed["jobs"]]


def test_f14_closing_the_event_stream_never_affects_the_job(service: tuple[str, Path]) -> None:
    base, _ = service
    with httpx.Client(base_url=base, timeout=30) as http:
        job = _submit(http, num_inference_steps="4")
        with http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    break  # read one event, then hang up mid-stream
        done = wait_terminal(http, job["id"])
        assert done["status"] == "succeeded"
        assert http.get("/api/v1/health").json()["ok"] is True


def test_f13_disconnect_mid_upload_leaves_nothing(service: tuple[str, Path]) -> None:
    base, data_dir = service
    port = int(base.rsplit(":", 1)[1])
    with httpx.Client(base_url=base, timeout=30) as http:
        before = http.get("/api/v1/jobs").json()["total"]
        boundary = "XyZ"
        head = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + png_bytes()
            + b"\0" * 200_000
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
                f"boundary={boundary}\r\nContent-Length: {len(head) * 2}\r\n\r\n".encode()
                + head
            )
            time.sleep(0.5)  # the server is now mid-body, with part of the file in a temp file
        deadline = time.monotonic() + 10
        while (
            (data_dir / "tmp").exists() and list((data_dir / "tmp").iterdir()) and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert not list((data_dir / "tmp").iterdir())
        assert http.get("/api/v1/jobs").json()["total"] == before
        assert http.get("/api/v1/health").json()["ok"] is True


def test_b15_oversized_upload_is_refused_while_streaming(service: tuple[str, Path]) -> None:
    """The 413 arrives while the client is still sending: the server never buffers the whole body."""
    base, data_dir = service
    port = int(base.rsplit(":", 1)[1])
    boundary = "XyZ"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    total = 60 * 2**20  # 60 MB against the default 20 MB limit, declared without a Content-Length
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        answer = b""
        sock.settimeout(0.01)
        chunk = head + b"\0" * (256 * 1024 - len(head))
        while sent < total:
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            chunk = b"\0" * (256 * 1024)
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
        sock.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
        except (ConnectionResetError, TimeoutError):
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < total, "the server read the whole body before refusing it"
    assert not list((data_dir / "tmp").iterdir())


# L3's latency figures are printed, not asserted (a latency bound flakes on a busy machine): measured with
# the load in its own process (stillmotion.bench.service_load) on the 2-core CI machine, status p99 is
# 0.02-0.06 s alone and 0.3-0.9 s beside a second full pytest run; 7 s was seen with five test runs beside it.
# What this test holds is that every poll and stream is answered, in order, while the jobs run; a blocked
# event loop is caught by tests/server/test_load.py (health answers while every worker thread is stuck).


def test_l3_pollers_and_event_streams_while_jobs_run(service: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = service
    with httpx.Client(base_url=base, timeout=30) as http:
        # Ten steps each: the jobs run while the 50 pollers start (spread over their first second).
        jobs = [_submit(http, num_inference_steps="10")["id"] for _ in range(3)]
    # 50 pollers at 1 Hz and 10 event streams, generated by another process (RELIABILITY L3, scaled).
    out = tmp_path / "load.json"
    command = [
        sys.executable, "-m", "stillmotion.bench.service_load", "--base", base, "--jobs", ",".join(jobs),
        "--pollers", "50", "--rate", "1", "--streams", "10", "--duration", "240", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=280, capture_output=True)
    figures = json.loads(out.read_text())
    with httpx.Client(base_url=base, timeout=30) as http:
        finals = [http.get(f"/api/v1/jobs/{job_id}").json() for job_id in jobs]
    assert [f["status"] for f in finals] == ["succeeded"] * 3
    assert figures["errors"] == [] and set(figures["codes"]) == {"200", "stream-200"}, figures["codes"]
    assert figures["poll_latency_s"]["n"] >= 50
    logging.getLogger(__name__).warning("L3 status latency under load: %s", figures["poll_latency_s"])
    assert len(figures["streams"]) == 10
    for events in figures["streams"]:
        assert events and events[-1]["status"] == "succeeded"
        order = {"queued": 0, "running": 1, "succeeded": 2}
        assert [order[e["status"]] for e in events] == sorted(order[e["status"]] for e in events)
        steps = [
            e["progress"]["step"]
            for e in events
            if e["status"] == "running" and e["progress"] and e["progress"]["stage"] == "denoise"
        ]
        assert steps == sorted(steps)


def test_f4_sigterm_mid_job_finishes_or_requeues(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"{BASE}:{port}"
    with server_process(data_dir, port) as proc, httpx.Client(base_url=base, timeout=30) as http:
        job = _submit(http, num_inference_steps="30")
        deadline = time.monotonic() + 60
        while http.get(f"/api/v1/jobs/{job['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    # Restart on the same data: the job is not lost, not cancelled, and completes.
    with server_process(data_dir, port), httpx.Client(base_url=base, timeout=30) as http:
        done = wait_terminal(http, job["id"], timeout_s=180)
        assert done["status"] == "succeeded"
        assert leftovers_clean(data_dir)


def leftovers_clean(data_dir: Path) -> bool:
    tmp = data_dir / "tmp"
    return not tmp.exists() or not list(tmp.iterdir())


__all__ = ["leftovers"]
