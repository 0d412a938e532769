"""The benchmark command on the tiny model, on CPU, so it cannot rot.

End to end (one process per cell, as on a GPU box): the uncapped reference, one capped cell with an injected
out-of-memory error that the engine must recover from (next rung, resumed step, same frames), and one stock
diffusers cell on the same weights and seed. In process: the per-phase meter follows the engine's events.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from stillmotion.bench import run
from stillmotion.bench.run import compare_frames, main
from stillmotion.bench.scenarios import BENCH_MODEL, STOCK_RECIPES, Scenario, grid

TIME_FIELDS = ("versions", "device", "per_step_s", "est_50_steps_s", "total_s", "pre_s", "decode_s")
STEP_FIELDS = (
    "per_step_min_s",
    "per_step_max_s",
    "per_step_cv",
    "per_step_n",
    "extrapolation_flagged",
    "note",
)
MEMORY_FIELDS = ("peak_alloc_gib", "peak_reserved_gib", "peak_nvml_gib", "resident_gib", "host_rss_gib")


def test_issue3_grid_has_every_cell() -> None:
    cells = grid()
    assert len(cells) == 3 * 2 * (1 + 6 + len(STOCK_RECIPES))
    assert cells[0].name == "512x512x16-uncapped" and cells[0].cap_gib == 0 and cells[0].is_reference
    assert {c.cap_gib for c in cells} == {0, 3, 4, 6, 8, 12, 24}
    assert {c.model for c in cells} == {BENCH_MODEL} == {"i2vgen-xl-random"}
    assert sum(c.is_reference for c in cells) == 6


def test_bench_cpu_smoke_with_injected_oom_and_stock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = [
        "--tiny", "--device", "cpu", "--sizes", "64", "--frames", "8", "--caps", "1", "--steps", "2",
        "--warmup-steps", "1",
        "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work"), "--name", "smoke",
    ]  # fmt: skip
    assert main([*common, "--only", "uncapped"]) == 0
    assert main([*common, "--only", "stock-model-offload"]) == 0
    monkeypatch.setenv("STILLMOTION_FAULTS", "oom@step:2")
    assert main([*common, "--only", "cap1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "smoke.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["64x64x8-uncapped", "64x64x8-stock-model-offload", "64x64x8-cap1"]
    reference, stock, recovered = rows
    for row in rows:
        assert row["ok"] and row["command"].startswith("python -m stillmotion.bench --tiny")
        assert row["model"] == "tiny-i2vgen-xl" and row["nan"] is False
        assert set(TIME_FIELDS) <= row.keys() and set(MEMORY_FIELDS) <= row.keys()
        assert row["per_step_s"] > 0 and row["host_rss_gib"] > 0
        assert set(STEP_FIELDS) <= row.keys() and row["repeats"] == 1 and row["warmup_runs"] == 1
        assert row["warmup_s"] > 0 and row["per_step_min_s"] <= row["per_step_s"] <= row["per_step_max_s"]
        assert (
            row["extrapolation_flagged"] and "steadiness cannot be judged" in row["note"]
        )  # 2 steps: too few
        assert row["tflop_per_step"] is None and row["mfu"] is None  # the tiny model is another network
    for row in (reference, recovered):
        assert {"load", "encode", "denoise", "decode"} == set(row["phases"])
        assert {"plan", "final_plan", "est_peak_reserved_gib", "timings", "per_step_engine_s"} <= set(row)
        assert row["timings"]["per_step_s"] == pytest.approx(row["per_step_engine_s"], abs=1e-4)
    assert reference["per_step_n"] == 1 and len(reference["first_step_s"]) == 1  # step 1 excluded
    # The recovered run's loop has two segments (before and after the reload), each with its first step.
    assert len(recovered["first_step_s"]) == 2 and recovered["per_step_n"] == 0
    assert reference["reference"] is True and reference["oom_retries"] == 0
    # The engine's recovery: one downgrade at step 2, resumed after the one finished step, same frames.
    assert recovered["oom_retries"] == 1 and recovered["oom_phase"] == "denoise"
    (downgrade,) = recovered["downgrades"]
    assert downgrade["from"] == "resident" and downgrade["resumed_at_step"] == 1
    assert recovered["final_plan"] == downgrade["to"] != "resident"
    assert recovered["max_abs_diff_vs_uncapped"] <= 1e-5  # exact plans: fp32 reduction order only
    # Stock diffusers on the same tiny weights and seed gives the engine's frames (fp32 CPU: reduction order).
    assert stock["recipe"] == "stock-model-offload"
    assert stock["max_abs_diff_vs_uncapped"] <= 1e-4 and stock["psnr_vs_uncapped"] > 60
    leftovers = sorted(p.name for p in (tmp_path / "tmp" / "smoke").iterdir())
    assert leftovers == ["reference-tiny-i2vgen-xl-64x64x8-seed0-steps2.npy"]


def test_plan_cell_measures_phases_warmup_and_repeats(tmp_path: Path) -> None:
    scenario = Scenario("64x64x8-uncapped", 64, 64, 8, 3, model="tiny-i2vgen-xl")
    args = argparse.Namespace(
        device="cpu", seed=0, work_dir=str(tmp_path / "work"), repeats=2, warmup_steps=1
    )
    order: list[str | None] = []
    original = run.PhaseMeter.enter

    def spy(meter: run.PhaseMeter, name: str | None) -> None:
        if name != meter.current:
            order.append(name)
        original(meter, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run.PhaseMeter, "enter", spy)
        record = run.run_plan_cell(scenario, args, tmp_path / "frames.npy")
    assert order == ["load", "encode", "denoise", "decode", None] * 3  # one warm-up render, two timed
    assert record["ok"] and record["steps"] == 3 and record["repeats"] == 2 and record["warmup_runs"] == 1
    # Two timed runs of 3 steps: steps 2 and 3 of each are timed, step 1 of each is reported apart.
    assert record["per_step_n"] == 4 and len(record["step_times_s"]) == 4 and len(record["first_step_s"]) == 2
    assert record["per_step_s"] == pytest.approx(float(np.median(record["step_times_s"])), abs=1e-4)
    assert record["per_step_cv"] is not None and record["per_step_engine_s"] > 0
    assert record["extrapolation_flagged"] == (record["per_step_cv"] > run.CV_LIMIT)
    assert record["repeat_max_abs_diff"] == 0.0  # same seed, same process: the same frames
    assert record["total_min_s"] <= record["total_s"] <= record["total_max_s"]
    frames = np.load(tmp_path / "frames.npy")
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.float32


def test_compare_frames() -> None:
    a = np.zeros((2, 4, 4, 3), np.float32)
    assert compare_frames(a, a.copy()) == {
        "max_abs_diff_vs_uncapped": 0.0, "psnr_vs_uncapped": None, "bitwise_equal_to_uncapped": True,
    }  # fmt: skip
    b = a + 0.01
    result = compare_frames(b, a)
    assert result["max_abs_diff_vs_uncapped"] == pytest.approx(0.01)
    assert result["psnr_vs_uncapped"] == pytest.approx(40.0, abs=0.01)
    assert compare_frames(a[:1], a)["max_abs_diff_vs_uncapped"] is None
