"""A checkpoint file is checked against the job before it is resumed from; anything off starts from step 0.

A file in the job's folder with the right fingerprint can still hold the wrong contents (a damaged disk, an
old release, a hand-edited file): latents of another shape or dtype, scheduler attributes no scheduler of this
request has, a replaced schedule. Each is ignored with a warning and the job runs from step 0 to the frames
of an uninterrupted run: never a failed job, never a silently different video.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from stillmotion.config import Settings
from stillmotion.engine import checkpoint
from stillmotion.engine.checkpoint import Checkpoint
from stillmotion.engine.engine import Engine
from stillmotion.engine.progress import ProgressEvent, Stage
from stillmotion.media.image_input import load_image_bytes
from tests.engine.conftest import make_png
from tests.engine.test_family_resume import _request
from tests.support.engine_calls import Rendered, render

Tamper = Callable[[Checkpoint], Checkpoint]


def _with_state(saved: Checkpoint, **changes: Any) -> Checkpoint:
    return dataclasses.replace(saved, scheduler_state={**saved.scheduler_state, **changes})


def _replace_history(saved: Checkpoint) -> Checkpoint:
    outputs = [torch.zeros(3, 3) if v is not None else None for v in saved.scheduler_state["model_outputs"]]
    return _with_state(saved, model_outputs=outputs)


TAMPERED: dict[str, tuple[str, Tamper]] = {
    # name: (model, what the file holds instead)
    "latents of another shape": (
        "tiny-i2vgen-xl",
        lambda s: dataclasses.replace(s, latents=s.latents[:, :, :3]),
    ),
    "latents of another dtype": (
        "tiny-i2vgen-xl",
        lambda s: dataclasses.replace(s, latents=s.latents.double()),
    ),
    "latents not finite": (
        "tiny-i2vgen-xl",
        lambda s: dataclasses.replace(s, latents=s.latents * float("nan")),
    ),
    "a key no scheduler has": ("tiny-i2vgen-xl", lambda s: _with_state(s, step=0)),
    "replaced timesteps": (
        "tiny-i2vgen-xl",
        lambda s: _with_state(s, timesteps=s.scheduler_state["timesteps"] - 7),
    ),
    "replaced sigmas": ("tiny-svd-xt", lambda s: _with_state(s, sigmas=s.scheduler_state["sigmas"] * 0.5)),
    "a step index off": ("tiny-ltx-video", lambda s: _with_state(s, _step_index=40)),
    "a solver history of another shape": ("tiny-wan2.1-i2v", _replace_history),
    "a counter of another type": ("tiny-wan2.1-i2v", lambda s: _with_state(s, lower_order_nums="2")),
    "the step count replaced": ("tiny-wan2.1-i2v", lambda s: _with_state(s, num_inference_steps=50)),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One engine for the module: a resumed run makes its own state, whatever the engine ran before."""
    data_dir = tmp_path_factory.mktemp("data")
    return Engine(Settings(data_dir=data_dir, default_model="tiny-i2vgen-xl", device="cpu"))


IMAGE = load_image_bytes(make_png())


@cache
def _clean_run_and_step_2(engine: Engine, model: str) -> tuple[Rendered, Checkpoint]:
    """An uninterrupted run of ``model`` and the checkpoint it offered after step 2 (once per model)."""
    kept: list[Checkpoint] = []

    def keep_step_2(steps_done: int, make: Callable[[], Checkpoint]) -> None:
        if steps_done == 2:
            kept.append(make())

    return render(engine, _request(model, seed=11), IMAGE, on_checkpoint=keep_step_2), kept[0]


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_checkpoint_that_does_not_fit_the_job_is_ignored_and_the_job_starts_from_step_0(
    engine: Engine, tmp_path: Path, case: str
) -> None:
    model, tamper = TAMPERED[case]
    clean, saved = _clean_run_and_step_2(engine, model)
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(tamper(saved), path)  # the fingerprint is right: only the contents are off
    read_back = checkpoint.load(path)

    events: list[ProgressEvent] = []
    restarted = render(engine, _request(model, seed=11), IMAGE, on_progress=events.append, resume=read_back)

    assert [e.step for e in events if e.stage is Stage.DENOISE] == [1, 2, 3, 4, 5]  # from step 0
    ignored = [w for w in restarted.warnings if "checkpoint" in w]
    assert len(ignored) == 1 and "ignored" in ignored[0] and "step 0" in ignored[0], restarted.warnings
    assert not any("resumed" in w for w in restarted.warnings)
    assert float((clean.frames - restarted.frames).abs().max()) <= 1e-5


@pytest.mark.parametrize("model", ["tiny-i2vgen-xl", "tiny-wan2.1-i2v"])
def test_a_checkpoint_that_fits_still_resumes(engine: Engine, tmp_path: Path, model: str) -> None:
    """The checks leave a sound file alone: it resumes at step 3 (the control for the cases above)."""
    clean, saved = _clean_run_and_step_2(engine, model)
    path = tmp_path / "checkpoint.pt"
    checkpoint.save(saved, path)
    events: list[ProgressEvent] = []
    resumed = render(
        engine, _request(model, seed=11), IMAGE, on_progress=events.append, resume=checkpoint.load(path)
    )
    assert [e.step for e in events if e.stage is Stage.DENOISE] == [3, 4, 5]
    assert any("resumed after denoising step 2" in w for w in resumed.warnings)
    assert float((clean.frames - resumed.frames).abs().max()) <= 1e-5


def test_a_file_with_keys_of_another_format_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    latents = torch.zeros(1, 4, 2, 2)
    good = {"version": checkpoint.FORMAT_VERSION, "fingerprint": "f", "steps_done": 1, "latents": latents}
    torch.save({**good, "scheduler": {}}, path)
    assert checkpoint.load(path) is not None
    torch.save({**good, "scheduler": {}, "extra": 1}, path)
    assert checkpoint.load(path) is None
    torch.save({**good, "scheduler": {"timesteps": {"nested": torch.zeros(1)}}}, path)
    assert checkpoint.load(path) is None
