"""GPU-only checks (marker ``gpu``, skipped by default): real CUDA memory, real out-of-memory recovery.

Run on a CUDA machine with ``pytest -m gpu tests/gpu``. They use the built-in full-size random-weight model
(``i2vgen-xl-random``: no download) so they measure the real architecture's memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest
from stillmotion.media.image_input import load_image_file
from tests.support.engine_calls import generate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "seaside.jpg"
GIB = 1024**3


def _request(**overrides: object) -> GenerationRequest:
    fields: dict[str, object] = dict(
        prompt="waves",
        model="i2vgen-xl-random",
        height=512,
        width=512,
        num_frames=16,
        num_inference_steps=3,
        seed=1,
    )
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


def test_planned_run_stays_under_its_budget_and_memory_returns_to_baseline(tmp_path: Path) -> None:
    baseline = torch.cuda.memory_allocated()
    engine = Engine(Settings(data_dir=tmp_path, vram_budget_gb=6.0))
    torch.cuda.reset_peak_memory_stats()
    result = generate(engine, _request(), load_image_file(EXAMPLE), tmp_path / "v.mp4")
    peak = torch.cuda.max_memory_reserved()
    assert result.video_path.exists() and not result.downgrades
    assert peak <= 6.0 * GIB, f"peak reserved {peak / GIB:.2f} GiB over the 6 GiB budget ({result.plan.rung})"
    estimate = result.plan.to_dict()["estimate"]
    assert estimate  # the plan carried its estimate
    engine.unload()
    assert torch.cuda.memory_allocated() - baseline < 64 * 1024**2


def test_a_real_out_of_memory_steps_down_and_finishes(tmp_path: Path) -> None:
    """Another program grabs the card's free memory after step 1: step 2 hits a real CUDA OOM. The engine
    steps down a rung and resumes; the hog lets go when the retry starts loading."""
    from stillmotion.engine.progress import ProgressEvent, Stage

    hog: list[torch.Tensor] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.stage is Stage.DENOISE and event.step == 1 and not hog:
            free, _ = torch.cuda.mem_get_info()
            hog.append(torch.empty(max(free - 256 * 1024**2, 0), dtype=torch.uint8, device="cuda"))
        elif event.stage is Stage.LOAD and hog:
            hog.clear()

    engine = Engine(Settings(data_dir=tmp_path))
    result = generate(
        engine, _request(), load_image_file(EXAMPLE), tmp_path / "v.mp4", on_progress=on_progress
    )
    assert result.downgrades, "expected at least one out-of-memory recovery"
    assert result.downgrades[0]["resumed_at_step"] >= 1
    assert result.video_path.exists()
    engine.unload()
