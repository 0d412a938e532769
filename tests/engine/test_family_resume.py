"""Out-of-memory resume is exact for every family, multistep schedulers included.

Wan's UniPC keeps past model outputs, SVD's Euler and LTX's flow-match Euler keep a step index: the engine
snapshots the scheduler with the latents after every finished step, and a retry resumes from that pair. The
resumed frames must equal an uninterrupted run's (I2VGen-XL's DDIM: tests/engine/test_engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stillmotion.engine import checkpoint
from stillmotion.engine.checkpoint import Checkpoint
from stillmotion.engine.engine import Engine
from stillmotion.engine.progress import ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest
from stillmotion.faults import FAULTS_ENV
from stillmotion.media.image_input import InputImage
from tests.support.engine_calls import render

MODELS = {
    # model: (height, width, frames, takes a prompt)
    "tiny-wan2.1-i2v": (48, 64, 9, True),
    "tiny-wan2.2-ti2v": (64, 64, 9, True),
    # Five steps at shift 3: timesteps 999, 923 | 818, 667, 429: the experts switch after step 2.
    "tiny-wan2.2-i2v-a14b": (48, 64, 9, True),
    "tiny-svd-xt": (64, 64, 4, False),
    "tiny-ltx-video": (64, 64, 9, True),
}


def _request(model: str, *, seed: int) -> GenerationRequest:
    """Five steps with guidance at the model's tiny size (the default model's: 64x64, 8 frames)."""
    height, width, frames, prompt = MODELS.get(model, (64, 64, 8, True))
    return GenerationRequest(
        prompt="a fox runs" if prompt else "",
        model=model,
        height=height,
        width=width,
        num_frames=frames,
        num_inference_steps=5,
        guidance_scale=4.0,
        seed=seed,
    )


@pytest.mark.parametrize("model", list(MODELS))
def test_oom_mid_loop_resumes_with_the_frames_of_an_uninterrupted_run(
    engine: Engine, input_image: InputImage, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    request = _request(model, seed=5)
    clean = render(engine, request, input_image)

    monkeypatch.setenv(FAULTS_ENV, "oom@step:3")
    events: list[ProgressEvent] = []
    resumed = render(engine, request, input_image, on_progress=events.append)

    assert [(d["phase"], d["resumed_at_step"]) for d in resumed.downgrades] == [("denoise", 2)]
    assert resumed.plan.rung != clean.plan.rung
    # Steps 1-2 ran once; step 3 onwards ran after the downgrade: no restart from step 1.
    assert [e.step for e in events if e.stage is Stage.DENOISE] == [1, 2, 3, 4, 5]
    assert float((clean.frames - resumed.frames).abs().max()) <= 1e-5


@pytest.mark.parametrize("model", ["tiny-i2vgen-xl", *MODELS])
def test_a_checkpoint_file_resumes_a_new_engine_with_the_same_frames(
    engine: Engine, input_image: InputImage, tmp_path: Path, model: str
) -> None:
    """What a worker does across a restart: keep the checkpoint after step 2 in a file, then a fresh engine
    (a new process has nothing in memory) resumes from it at step 3 and ends with the uninterrupted frames."""
    request = _request(model, seed=7)
    path = tmp_path / "checkpoint.pt"

    def keep_step_2(steps_done: int, make: Callable[[], Checkpoint]) -> None:
        if steps_done == 2:
            checkpoint.save(make(), path)

    clean = render(engine, request, input_image, on_checkpoint=keep_step_2)
    saved = checkpoint.load(path)
    assert saved is not None and saved.steps_done == 2

    restarted = Engine(engine.settings)
    events: list[ProgressEvent] = []
    resumed = render(restarted, request, input_image, on_progress=events.append, resume=saved)
    assert [e.step for e in events if e.stage is Stage.DENOISE] == [3, 4, 5]  # steps 1-2 not run again
    assert any("resumed after denoising step 2" in w for w in resumed.warnings)
    assert float((clean.frames - resumed.frames).abs().max()) <= 1e-5
    other = GenerationRequest(**{**request.to_dict(), "seed": 8})  # another request: never resumed from it
    started = render(restarted, other, input_image, on_progress=events.append, resume=saved)
    assert not any("resumed" in w for w in started.warnings)


def test_a_damaged_checkpoint_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint at all")
    assert checkpoint.load(path) is None
    assert checkpoint.load(tmp_path / "absent.pt") is None
