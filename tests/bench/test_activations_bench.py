"""``python -m stillmotion.bench.activations`` on tiny shapes: the tracker, the kernels and the results file.

The full-size measurements take most of an hour (docs/memory.md); here the same code path runs the real
full-size configs at a few latent pixels, in this process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from stillmotion.bench.activations import SUITE, main, peak_allocated_bytes
from stillmotion.memory.activation_facts import SAME_VAE

MIB = 1024**2


def _measure(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    assert main([*args, "--in-process", "--results-dir", str(tmp_path), "--name", "tiny"]) == 0
    lines = (tmp_path / "tiny.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_tracker_counts_the_allocators_peak_above_the_start() -> None:
    before = torch.ones(4 * MIB, dtype=torch.uint8)  # held before the call: not counted

    def call() -> torch.Tensor:
        a = torch.ones(3 * MIB, dtype=torch.uint8)
        b = torch.ones(2 * MIB, dtype=torch.uint8)
        del a
        c = torch.ones(1 * MIB, dtype=torch.uint8) + b[: 1 * MIB]  # a temporary of 1 MiB, then c
        return c

    assert peak_allocated_bytes(call) == 5 * MIB  # a and b together; later b + the temporary + c = 4 MiB
    assert before.numel() == 4 * MIB


def test_one_transformer_block_at_a_tiny_shape_writes_a_row_with_its_context(tmp_path: Path) -> None:
    args = ["--model", "ltx-video", "--component", "denoiser", "--shape", "64x96x9"]
    (row,) = _measure(tmp_path, *args)
    assert row["act_peak_gib"] > 0 and row["act_peak_bytes"] > 0
    assert (row["blocks_built"], row["blocks_total"]) == (1, 28)  # one of LTX-Video's 28 blocks
    assert (row["latent_frames"], row["units"]) == (2, 2 * 2 * 3)  # 8 frames a latent frame, 32x32 pixels
    assert row["command"].startswith("python -m stillmotion.bench.activations --model ltx-video")
    assert row["machine"]["cores"] >= 1 and row["torch"] == torch.__version__ and row["diffusers"]
    assert row["kernels"] == "output-only" and row["dtype"] == "bfloat16"

    # A rerun of the same measurement replaces its row; another measurement adds one.
    _measure(tmp_path, *args)
    rows = _measure(tmp_path, *args, "--batch", "2")
    assert [r["batch"] for r in rows] == [1, 2]
    assert rows[1]["act_peak_bytes"] > rows[0]["act_peak_bytes"]


def test_output_only_kernels_hold_what_the_real_kernels_hold(tmp_path: Path) -> None:
    # The real arithmetic in float32 (fast on any CPU) against outputs allocated and left uncomputed.
    args = ["--model", "ltx-video", "--component", "denoiser", "--shape", "64x64x9", "--dtype", "float32"]
    (real,) = _measure(tmp_path, *args, "--kernels", "real")
    output_only = _measure(tmp_path, *args, "--kernels", "output-only")[-1]
    assert real["kernels"] == "real" and output_only["kernels"] == "output-only"
    assert output_only["act_peak_bytes"] == real["act_peak_bytes"]


def test_a_vae_decode_of_each_kind_runs(tmp_path: Path) -> None:
    # A per-frame 2-D decoder and a causal 3-D one (whole video) at a few latent pixels.
    _measure(tmp_path, "--model", "i2vgen-xl", "--component", "vae_decode", "--shape", "32x32x2")
    rows = _measure(tmp_path, "--model", "ltx-video", "--component", "vae_decode", "--shape", "64x64x9")
    assert [r["model"] for r in rows] == ["i2vgen-xl", "ltx-video"]
    assert all(r["act_peak_gib"] > 0 and r["blocks_total"] == 0 for r in rows)


def test_the_suite_lists_every_family_and_checks_kernels_for_each() -> None:
    models = {m.model for m in SUITE}
    assert models == {
        "i2vgen-xl",
        "wan2.1-i2v-14b-480p",
        "wan2.2-ti2v-5b",
        "ltx-video",
        "svd-xt",
        "wan2.2-i2v-a14b",
    }
    for model in models:
        # Wan 2.2 A14B's VAE is Wan 2.1's (the same config): measured and checked there.
        for component in ("denoiser",) if model in SAME_VAE else ("denoiser", "vae_decode"):
            real = [m for m in SUITE if (m.model, m.component, m.kernels) == (model, component, "real")]
            assert real, f"{model} {component} has no real-kernel check"
    assert len({m.key() for m in SUITE}) == len(SUITE)
