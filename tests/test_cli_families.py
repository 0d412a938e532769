"""The command line with every family: tiny models write an MP4 offline on CPU, and ``plan --model X
--gpu-gb N`` answers offline for each full-size family, with the estimate."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from stillmotion.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seaside.jpg"


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline, as on a machine without the hub


@pytest.mark.parametrize(
    ("model", "frames", "prompt"),
    [
        ("tiny-wan2.1-i2v", 9, ["--prompt", "waves roll in"]),
        ("tiny-svd-xt", 6, []),  # no text encoder: no prompt
        ("tiny-ltx-video", 9, ["--prompt", "waves roll in"]),
    ],
)
def test_generate_with_each_tiny_family_writes_an_mp4_offline_on_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, frames: int, prompt: list[str]
) -> None:
    out = tmp_path / f"{model}.mp4"
    args = ["--model", model, "--image", str(EXAMPLE), "--device", "cpu", "--offline", "--output", str(out)]
    size = ["--height", "64", "--width", "96", "--num-frames", str(frames), "--num-inference-steps", "2"]
    assert main(["generate", *args, *size, *prompt]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with av.open(str(out)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == frames and (decoded[0].width, decoded[0].height) == (96, 64)
    recipe = json.loads(Path(f"{out}.json").read_text())
    assert recipe["model"] == model and recipe["num_frames"] == frames


@pytest.mark.parametrize(
    ("model", "gib"),
    [
        ("wan2.1-i2v-14b-480p", "12"),
        ("wan2.1-i2v-14b-480p", "24"),
        ("wan2.1-i2v-14b-720p", "24"),
        ("wan2.2-ti2v-5b", "24"),
        ("svd-xt", "48"),
        ("ltx-video", "12"),
    ],
)
def test_plan_for_a_card_answers_offline_for_each_family(
    capsys: pytest.CaptureFixture[str], model: str, gib: str
) -> None:
    prompt = [] if model == "svd-xt" else ["--prompt", "waves"]
    assert main(["plan", "--model", model, "--gpu-gb", gib, "--host-gb", "128", *prompt, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["request"]["model"] == model
    estimate = report["plan"]["estimate"]
    assert 0 < estimate["peak_reserved_gib"] * 1.1 <= float(gib)
    assert 0 < estimate["host"]["peak_gib"] * 1.1 <= 128
    assert report["plan"]["approximate"] is False


def test_plan_that_fits_only_approximately_says_how(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["plan", "--model", "wan2.2-ti2v-5b", "--gpu-gb", "12", "--host-gb", "64", "--prompt", "waves"]
    assert main(base) == 3
    assert "would fit with approximate savings" in capsys.readouterr().err
    assert main([*base, "--allow-approximate"]) == 0
    text = capsys.readouterr().out
    assert "plan: tiled_decode" in text and "estimated peak" in text
    assert "approximate: vae_tiling" in text


def test_the_deployments_host_budget_replaces_the_measured_ram(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """STILLMOTION_HOST_BUDGET_GB plans for that much RAM (docs/memory.md section 9); --host-gb wins."""
    base = ["plan", "--model", "wan2.1-i2v-14b-480p", "--gpu-gb", "12", "--json"]
    monkeypatch.setenv("STILLMOTION_HOST_BUDGET_GB", "16")
    assert main(base) == 3
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["details"]["host_available_gib"] == 16.0 and "of host memory (RAM)" in error["message"]
    assert main([*base, "--host-gb", "64"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["pin_on_the_fly"] is True and plan["estimate"]["host"]["peak_gib"] * 1.1 <= 64
    monkeypatch.setenv("STILLMOTION_HOST_BUDGET_GB", "0")
    assert main(base) == 2  # not a budget: refused naming the setting
    said = capsys.readouterr()
    assert "host_budget_gb" in said.out + said.err
