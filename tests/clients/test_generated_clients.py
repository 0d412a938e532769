"""Clients generated from the live /openapi.json work: the Java client (openapi-generator-cli, java/native,
compiled with javac against Debian's jars) and the Python client (openapi-python-client), each running its
example program (examples/java, examples/python-client) against a real `stillmotion serve` with a token.

The programs plan a request and submit a job with every numeric field set (a seed over 2^31 included), poll it
to its end and download the video; this test then reads the video's frames and size. A spec change that breaks
either generator or its client fails here. Needs java, javac and the jars scripts/install-java-client.sh
installs (the Makefile's `javaclient` target, a prerequisite of `make test`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest

from tests.server.helpers import BASE, REPO_ROOT, free_port, png_bytes, server_process

pytestmark = pytest.mark.timeout(900)

TOKEN = "generated-clients-token-0123456789"
BIN = Path(sys.executable).parent
# What the programs ask for (examples/java/GenerateVideo.java, examples/python-client/generate_video.py).
HEIGHT, WIDTH, FRAMES, INTERPOLATE = 64, 96, 8, 2


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """A live service with a token: (base URL, its OpenAPI document fetched with the token, an image)."""
    tmp = tmp_path_factory.mktemp("clients")
    port = free_port()
    with server_process(tmp / "data", port, STILLMOTION_API_TOKEN=TOKEN):
        base = f"{BASE}:{port}"
        assert httpx.get(f"{base}/openapi.json").status_code == 401  # only /health is open
        spec = httpx.get(f"{base}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert spec.status_code == 200
        spec_file = tmp / "openapi.json"
        spec_file.write_bytes(spec.content)
        image = tmp / "photo.png"
        image.write_bytes(png_bytes(96, 64))
        yield base, spec_file, image


def _tool(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    assert found, f"{name} is not installed: `make test` installs it (pyproject's dev extra, scripts/)"
    return found


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **env}
    done = subprocess.run(command, capture_output=True, text=True, env=environ, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, f"{command[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _check_video(path: Path) -> None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame for frame in container.decode(stream)]
    assert len(frames) == FRAMES * INTERPOLATE
    assert (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)


def _check_job(stdout: str) -> None:
    job = json.loads(stdout.strip().splitlines()[-1])
    assert job["status"] == "succeeded"
    asked = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES, "seed": 4_000_000_000}
    assert {key: job["request"][key] for key in asked} == asked


def test_the_generated_java_client_runs_a_job_end_to_end(
    service: tuple[str, Path, Path], tmp_path: Path
) -> None:
    base, spec, image = service
    for tool in ("java", "javac"):
        _tool(tool)
    build = tmp_path / "java-client"
    _run(
        ["bash", "examples/java/generate-client.sh", str(spec), str(build)],
        OPENAPI_GENERATOR_CLI=_tool("openapi-generator-cli"),
    )
    video = tmp_path / "java.mp4"
    classpath = (build / "classpath").read_text().strip()
    done = _run(
        ["java", "-cp", classpath, "GenerateVideo", base, str(image), str(video)], STILLMOTION_API_TOKEN=TOKEN
    )
    _check_job(done.stdout)
    _check_video(video)


def test_the_generated_python_client_runs_a_job_end_to_end(
    service: tuple[str, Path, Path], tmp_path: Path
) -> None:
    base, spec, image = service
    build = tmp_path / "python-client"
    _run(
        ["bash", "examples/python-client/generate-client.sh", str(spec), str(build)],
        OPENAPI_PYTHON_CLIENT=_tool("openapi-python-client"),
    )
    video = tmp_path / "python.mp4"
    done = _run(
        [sys.executable, "examples/python-client/generate_video.py", base, str(image), str(video)],
        STILLMOTION_API_TOKEN=TOKEN,
        PYTHONPATH=str(build),
    )
    _check_job(done.stdout)
    _check_video(video)
