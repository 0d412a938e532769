"""The benchmark command on the tiny model, on CPU, so it cannot rot: one reference cell, then one cell with
an injected out-of-memory error that must recover (next rung, resumed step) and give the same latents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stillmotion.bench.run import main
from stillmotion.bench.scenarios import STOCK_RECIPES, grid


def test_issue3_grid_has_every_cell() -> None:
    cells = grid()
    assert len(cells) == 3 * 2 * (1 + 6 + len(STOCK_RECIPES))
    assert cells[0].name == "512x512x16-uncapped" and cells[0].cap_gib == 0
    assert {c.cap_gib for c in cells} == {0, 3, 4, 6, 8, 12, 24}


def test_bench_cpu_smoke_with_injected_oom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = [
        "--tiny",
        "--device",
        "cpu",
        "--sizes",
        "64",
        "--frames",
        "8",
        "--caps",
        "1",
        "--steps",
        "2",
        "--out-dir",
        str(tmp_path),
        "--work-dir",
        str(tmp_path / "work"),
        "--name",
        "smoke",
    ]
    assert main([*common, "--only", "uncapped"]) == 0
    monkeypatch.setenv("STILLMOTION_INJECT_OOM_AT_STEP", "1")
    assert main([*common, "--only", "cap1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "smoke.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["64x64x8-uncapped", "64x64x8-cap1"]
    reference, recovered = rows
    for row in rows:
        assert row["ok"] and row["command"].startswith("python -m stillmotion.bench")
        assert {"versions", "device", "plan", "per_step_s", "est_50_steps_s", "est_peak_reserved_gib"} <= set(
            row
        )
    assert reference["oom_retries"] == 0 and reference["reference"] is True
    assert recovered["oom_retries"] == 1
    assert len(recovered["downgrades"]) == 1 and recovered["downgrades"][0].startswith("step 1: resident -> ")
    assert recovered["final_plan"] != "resident"
    assert recovered["max_abs_diff_vs_uncapped"] <= 1e-6
