"""The benchmark's derived fields without running a model: FLOPs on meta, MFU, step statistics, presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stillmotion.bench import run
from stillmotion.bench.flops import PEAK_TFLOPS, mfu, tflop_per_step, unet_call_flops
from stillmotion.bench.run import StepMarks, flop_fields, main, step_statistics
from stillmotion.bench.scenarios import QUICK, Scenario

# ../shared/measurements/README.md: one UNet call, batch 2 x 16 frames, counted with FlopCounterMode.
MEASURED_TFLOP = {512: 41.9, 768: 104.9, 1024: 213.8}


@pytest.mark.parametrize("size", sorted(MEASURED_TFLOP))
def test_flop_count_matches_the_measured_figures(size: int) -> None:
    assert unet_call_flops(size, size, 16, 2) / 1e12 == pytest.approx(MEASURED_TFLOP[size], rel=0.02)


def test_flops_per_step_follow_the_guidance_batch() -> None:
    guided = tflop_per_step(512, 512, 16, 9.0)
    assert guided == pytest.approx(41.9, rel=0.02)
    # Split guidance runs two batch-1 calls: the same work as one batch-2 call; no guidance is one call.
    assert 2 * unet_call_flops(512, 512, 16, 1) == pytest.approx(unet_call_flops(512, 512, 16, 2), rel=1e-3)
    assert tflop_per_step(512, 512, 16, 1.0) == pytest.approx(guided / 2, rel=1e-3)
    assert tflop_per_step(512, 512, 32, 9.0) == pytest.approx(2 * guided, rel=0.05)  # temporal attn grows


def test_mfu() -> None:
    assert PEAK_TFLOPS == 790.0
    # The stock eager step at 512p (measurements: 0.2135 s, 196 TFLOP/s) is about a quarter of the peak.
    assert mfu(41.87, 0.2135) == pytest.approx(41.87 / 0.2135 / 790)
    assert mfu(41.87, 0.2135) == pytest.approx(0.248, abs=0.001)
    assert mfu(None, 0.2) is None and mfu(41.9, None) is None and mfu(41.9, 0.0) is None


def test_flop_fields_per_model() -> None:
    full = Scenario("512x512x16-uncapped", 512, 512, 16, 4)
    row = flop_fields(full, 0.2135)
    assert row["tflop_per_step"] == pytest.approx(41.9, rel=0.02)
    assert row["mfu"] == pytest.approx(0.248, abs=0.001) and row["tflops_achieved"] == pytest.approx(
        196, abs=1
    )
    assert flop_fields(full, None)["mfu"] is None
    tiny = Scenario("64x64x8-uncapped", 64, 64, 8, 2, model="tiny-i2vgen-xl")
    assert flop_fields(tiny, 0.1) == {"tflop_per_step": None, "mfu": None}


def test_step_statistics_flags_unsteady_steps() -> None:
    steady = step_statistics([5.0], [1.0, 1.01, 0.99, 1.0])
    assert (
        steady["per_step_s"] == 1.0 and steady["per_step_min_s"] == 0.99 and steady["per_step_max_s"] == 1.01
    )
    assert (
        steady["per_step_cv"] < run.CV_LIMIT
        and not steady["extrapolation_flagged"]
        and steady["note"] is None
    )
    assert (
        steady["first_step_s"] == [5.0] and steady["per_step_n"] == 4
    )  # the first step is not in the median
    shaky = step_statistics([5.0], [1.0, 1.2, 0.9, 1.0])
    assert shaky["per_step_cv"] > 0.02 and shaky["extrapolation_flagged"]
    assert "coefficient of variation" in shaky["note"] and "50-step" in shaky["note"]
    single = step_statistics([5.0], [1.0])
    assert (
        single["per_step_cv"] is None
        and single["extrapolation_flagged"]
        and "cannot be judged" in single["note"]
    )
    only_first = step_statistics([5.0], [])
    assert only_first["per_step_s"] == 5.0 and only_first["extrapolation_flagged"]


def test_step_marks_exclude_the_first_step_of_every_segment() -> None:
    marks = StepMarks(cuda=False)
    marks.segments = [[0.0, 3.0, 4.0, 5.5], [10.0, 12.0, 13.0]]  # a run, then a resume after an OOM retry
    first, kept = marks.step_times()
    assert first == [3.0, 2.0] and kept == [1.0, 1.5, 1.0]
    marks.segments, marks.open = [], False
    marks.mark()  # no open segment (before the first UNet call, after decode): nothing is recorded
    marks.start()
    marks.mark()
    marks.close()
    marks.mark()
    assert [len(s) for s in marks.segments] == [2]


def test_quick_preset_contents() -> None:
    names = [c.name for c in QUICK.cells()]
    assert names == [
        "512x512x16-uncapped", "512x512x16-cap4", "512x512x16-cap6", "512x512x16-stock-model-offload",
        "1024x1024x16-uncapped", "1024x1024x16-cap4", "1024x1024x16-cap6", "1024x1024x16-stock-model-offload",
    ]  # fmt: skip
    assert {c.num_inference_steps for c in QUICK.cells()} == {QUICK.steps} == {6}
    assert QUICK.warmup_steps >= 3 and QUICK.deadline_s <= 570  # BENCHMARKING 5.2.3; a 600 s device command
    args = run.parse_args(["--quick"])
    assert [c.name for c in run.select(args)] == names
    assert (args.steps, args.warmup_steps, args.deadline_s) == (6, 3, 540.0)
    overridden = run.parse_args(["--quick", "--sizes", "512", "--steps", "8", "--deadline-s", "300"])
    assert [c.name for c in run.select(overridden)] == names[:4]
    assert (overridden.steps, overridden.deadline_s) == (8, 300.0)
    default = run.parse_args([])
    assert len(run.select(default)) == 54 and default.warmup_steps == 3 and default.deadline_s is None


def test_deadline_skips_cells_and_skip_done_resumes(tmp_path: Path) -> None:
    common = ["--tiny", "--device", "cpu", "--sizes", "64", "--frames", "8", "--caps", "1", "--no-stock"]
    common += ["--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work"), "--name", "dl"]
    assert main([*common, "--deadline-s", "1"]) == 0  # under the margin: nothing starts, nothing fails
    rows = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["64x64x8-uncapped", "64x64x8-cap1"]
    assert all(r["ok"] is None and r["skipped"].startswith("deadline") for r in rows)
    with (tmp_path / "dl.jsonl").open("a") as handle:  # pretend the reference finished earlier
        handle.write(json.dumps({"name": "64x64x8-uncapped", "ok": True}) + "\n")
    assert run._done_names(tmp_path / "dl.jsonl") == {"64x64x8-uncapped"}
