"""Wan 2.2 I2V A14B's two experts: equal to WanImageToVideoPipeline with ``transformer_2`` and
``boundary_ratio`` wherever the boundary falls, with ``guidance_scale_2`` and a last frame; exact resume
across the switch (an out-of-memory error before, at and after the boundary step); the switch step the planner
computes without a scheduler is the scheduler's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

from stillmotion.engine.engine import Engine
from stillmotion.engine.progress import ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest
from stillmotion.engine.resolve import resolve
from stillmotion.errors import InvalidRequest
from stillmotion.faults import FAULTS_ENV
from stillmotion.media.image_input import InputImage, load_image_bytes
from stillmotion.models import tiny
from stillmotion.models.experts import flow_timesteps, high_noise_steps
from stillmotion.models.registry import get_spec
from tests.engine.conftest import make_png
from tests.support.engine_calls import render

MODEL = "tiny-wan2.2-i2v-a14b"
TOLERANCE = 1e-4


def _request(steps: int, **changes: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "prompt": "waves roll in",
        "negative_prompt": "blurry",
        "model": MODEL,
        "height": 48,
        "width": 64,
        "num_frames": 9,
        "num_inference_steps": steps,
        "guidance_scale": 4.0,
        "seed": 17,
    }
    return GenerationRequest(**(fields | changes))


def _pipeline(image: InputImage, steps: int, last: InputImage | None = None, **call: Any) -> np.ndarray:
    parts = tiny.build_tiny_wan_components(0, experts=True)
    parts.pop("expand_timesteps")
    pipe = WanImageToVideoPipeline(**{name: part for name, part in parts.items() if part is not None})
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        image=image.image,
        last_image=None if last is None else last.image,
        prompt="waves roll in",
        negative_prompt="blurry",
        height=48,
        width=64,
        num_frames=9,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(17),
        output_type="np",
        **({"guidance_scale": 4.0} | call),
    )
    return np.asarray(out.frames[0])


@pytest.mark.parametrize(
    ("steps", "guidance_scale_2", "high_steps"),
    [(3, None, 1), (4, 2.0, 2), (8, 6.0, 3)],
    ids=["switch-after-1-of-3", "switch-after-2-of-4", "switch-after-3-of-8"],
)
def test_two_experts_match_the_pipeline_wherever_the_boundary_falls(
    engine: Engine, input_image: InputImage, steps: int, guidance_scale_2: float | None, high_steps: int
) -> None:
    rendered = render(engine, _request(steps, guidance_scale_2=guidance_scale_2), input_image)
    assert rendered.request.experts is not None
    assert rendered.request.experts["high_noise_steps"] == high_steps
    reference = _pipeline(input_image, steps, guidance_scale_2=guidance_scale_2)
    ours = rendered.frames.numpy()
    assert float(ours.std()) > 0.01
    assert float(np.abs(ours - reference).max()) <= TOLERANCE


def test_a_last_frame_matches_the_pipeline(engine: Engine, input_image: InputImage) -> None:
    last = load_image_bytes(make_png(seed=3))
    request = resolve(
        _request(4, last_image="given"), engine.settings, (96, 80), last_image_sha256=last.sha256
    )
    ours = render_resolved(engine, request, input_image, last)
    reference = _pipeline(input_image, 4, last)
    without = _pipeline(input_image, 4)
    assert float(np.abs(ours - without).max()) > 1e-3  # the last frame changes the video
    assert float(np.abs(ours - reference).max()) <= TOLERANCE


def render_resolved(engine: Engine, request: Any, image: InputImage, last: InputImage) -> np.ndarray:
    import tempfile
    from pathlib import Path

    from tests.support.engine_calls import KeepFrames

    keep = KeepFrames()
    with tempfile.TemporaryDirectory() as folder:
        engine.generate(request, image, Path(folder) / "out.mp4", [keep], last_image=last)
    assert keep.frames is not None
    return keep.frames.numpy()


def test_a_last_frame_is_refused_where_the_model_cannot_take_one(engine: Engine) -> None:
    request = _request(4, model="tiny-wan2.1-i2v", last_image="end.png")
    with pytest.raises(InvalidRequest, match="last_image cannot be used with tiny-wan2.1-i2v"):
        resolve(request, engine.settings, (96, 80), last_image_sha256="0" * 64)


@pytest.mark.parametrize(
    "oom_step", [2, 3, 4], ids=["before-the-switch", "at-the-switch", "after-the-switch"]
)
def test_resume_after_oom_is_exact_across_the_expert_switch(
    engine: Engine, input_image: InputImage, monkeypatch: pytest.MonkeyPatch, oom_step: int
) -> None:
    request = _request(5)  # timesteps 999, 923 | 818, 667, 429: step 3 is the first low-noise step
    clean = render(engine, request, input_image)
    assert clean.request.experts is not None and clean.request.experts["switch_after_step"] == 2

    monkeypatch.setenv(FAULTS_ENV, f"oom@step:{oom_step}")
    events: list[ProgressEvent] = []
    resumed = render(engine, request, input_image, on_progress=events.append)
    assert [(d["phase"], d["resumed_at_step"]) for d in resumed.downgrades] == [("denoise", oom_step - 1)]
    assert [e.step for e in events if e.stage is Stage.DENOISE] == [1, 2, 3, 4, 5]
    assert float((clean.frames - resumed.frames).abs().max()) <= 1e-5


@pytest.mark.parametrize("shift", [3.0, 5.0, 12.0])
def test_the_planners_switch_step_is_the_schedulers(shift: float) -> None:
    experts = get_spec("wan2.2-i2v-a14b").experts
    assert experts is not None
    for steps in range(1, 61):
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=shift,
        )
        scheduler.set_timesteps(steps)
        assert flow_timesteps(steps, shift) == scheduler.timesteps.tolist()
        high = sum(1 for t in scheduler.timesteps if t >= experts.boundary_ratio * 1000)
        assert high_noise_steps(experts, steps, shift) == high
