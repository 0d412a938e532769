"""The benchmark command: polite refusal without CUDA, and the CPU smoke run writes complete JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stillmotion.speed.bench import CONFIG_DIRS, config_dir, main


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal on a machine without CUDA")
def test_refuses_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "512"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_cpu_needs_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--device", "cpu"]) == 2
    assert "--tiny" in capsys.readouterr().err


def test_config_dir_is_found() -> None:
    assert config_dir() in CONFIG_DIRS
    assert (config_dir() / "unet" / "config.json").exists()


def test_tiny_cpu_smoke(tmp_path: Path) -> None:
    argv = ["--device", "cpu", "--tiny", "--dtypes", "float32", "--variants", "stock", "pad8"]
    argv += ["--warmup", "1", "--iters", "1", "--results-dir", str(tmp_path), "--name", "smoke"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "speed-smoke.jsonl").read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["stock", "pad8"]
    for row in rows:
        assert row["ok"] and row["res"] == 64 and row["frames"] == 4 and row["batch"] == 2
        assert row["command"].startswith("python -m stillmotion.speed --device cpu --tiny")
        assert row["tflop_per_step"] > 0 and row["ceiling_tflops"] == 790.0
        assert row["per_step_s"] > 0 and not row["nan"]
        assert row["max_abs_diff_vs_stock"] < 1e-4 and row["rel_l2_vs_stock"] < 1e-5
    assert rows[0]["max_abs_diff_vs_stock"] == 0.0  # stock against itself
    assert rows[1]["speed"]["pad_head_dim"] == 8
