"""Engine behaviour a user notices: progress, cancel, the embedding cache, outputs, OOM recovery."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import torch

from stillmotion.engine.engine import Engine
from stillmotion.engine.progress import CancelToken, ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest
from stillmotion.errors import Cancelled, InvalidRequest, OutOfMemory
from stillmotion.faults import FAULTS_ENV
from stillmotion.media.image_input import InputImage
from stillmotion.media.video_output import read_metadata
from tests.support.engine_calls import generate, render

SMALL = dict(height=64, width=64, num_frames=8, num_inference_steps=3)


def test_generate_writes_a_playable_mp4_with_its_recipe(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    result = generate(engine, GenerationRequest(prompt="a calm lake", seed=7, **SMALL), input_image, out)

    assert result.video_path == out and out.stat().st_size > 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = list(container.decode(stream))
    assert len(decoded) == 8 and decoded[0].width == 64 and decoded[0].format.name == "yuv420p"

    recipe = read_metadata(out)
    sidecar = json.loads(result.sidecar_path.read_text())
    for meta in (recipe, sidecar):
        assert meta["prompt"] == "a calm lake"
        assert meta["seed"] == 7
        assert meta["model"] == "tiny-i2vgen-xl"
        assert (meta["height"], meta["width"], meta["num_frames"]) == (64, 64, 8)
        assert meta["num_inference_steps"] == 3 and meta["guidance_scale"] == 9.0 and meta["fps"] == 8
        assert meta["input_image_sha256"] == input_image.sha256
        assert meta["runtime"]["plan"]["rung"] == result.plan.rung
        assert meta["versions"]["torch"] == torch.__version__
    assert sidecar["sha256"] == result.sha256


def test_a_seed_is_drawn_and_recorded_when_absent(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    result = generate(engine, GenerationRequest(prompt="x", **SMALL), input_image, tmp_path / "a.mp4")
    assert 0 <= result.request.seed < 2**32
    assert read_metadata(result.video_path)["seed"] == result.request.seed


def test_progress_reports_every_step_in_order_with_an_eta(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    events: list[ProgressEvent] = []
    generate(
        engine,
        GenerationRequest(prompt="x", seed=1, **SMALL),
        input_image,
        tmp_path / "p.mp4",
        on_progress=events.append,
    )
    steps = [e.step for e in events if e.stage is Stage.DENOISE]
    assert steps == [1, 2, 3]
    assert all(e.total_steps == 3 for e in events)
    assert [e.stage for e in events][-3:] == [Stage.DECODE, Stage.WRITE, Stage.DONE]
    denoise = [e for e in events if e.stage is Stage.DENOISE]
    assert denoise[-1].eta_s is not None and denoise[-1].eta_s >= 0
    assert events[-1].stage is Stage.DONE and events[-1].eta_s is None  # done: nothing left to wait for


def test_cancel_stops_within_one_step_and_writes_nothing(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    token = CancelToken()
    steps: list[int] = []

    def on_progress(event: ProgressEvent) -> None:
        if event.stage is Stage.DENOISE:
            steps.append(event.step)
            if event.step == 2:
                token.cancel()

    out = tmp_path / "cancelled.mp4"
    with pytest.raises(Cancelled):
        generate(
            engine,
            GenerationRequest(prompt="x", seed=1, **{**SMALL, "num_inference_steps": 6}),
            input_image,
            out,
            on_progress=on_progress,
            cancel=token,
        )
    assert steps == [1, 2]
    assert list(tmp_path.iterdir()) == []


def test_second_run_with_same_prompt_and_image_skips_the_encoders(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    request = GenerationRequest(prompt="clouds drifting", seed=3, **SMALL)
    first = generate(engine, request, input_image, tmp_path / "1.mp4")
    misses = engine.cache.misses
    second = generate(engine, request, input_image, tmp_path / "2.mp4")

    assert not any("cache hit" in w for w in first.warnings)
    assert any("cache hit" in w for w in second.warnings)
    assert engine.cache.misses == misses and engine.cache.hits >= 3
    # Cached embeddings give the identical frames.
    engine.cache.clear()
    fresh = render(engine, request, input_image).frames
    cached = render(engine, request, input_image).frames
    assert torch.equal(fresh, cached)

    other = generate(
        engine, GenerationRequest(prompt="other words", seed=3, **SMALL), input_image, tmp_path / "3.mp4"
    )
    assert not any("cache hit" in w for w in other.warnings)


def test_oom_at_a_step_resumes_on_a_cheaper_plan_with_identical_frames(
    engine: Engine, input_image: InputImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = GenerationRequest(prompt="a fox", seed=5, **{**SMALL, "num_inference_steps": 5})
    clean = render(engine, request, input_image)

    monkeypatch.setenv(FAULTS_ENV, "oom@step:3")
    events: list[ProgressEvent] = []
    resumed = render(engine, request, input_image, on_progress=events.append)

    assert len(resumed.downgrades) == 1
    downgrade = resumed.downgrades[0]
    assert downgrade["phase"] == "denoise" and downgrade["resumed_at_step"] == 2
    assert downgrade["from"] == clean.plan.rung and downgrade["to"] == resumed.plan.rung != clean.plan.rung
    # Steps 1-2 ran once; step 3 onwards ran after the downgrade: no restart from step 1.
    assert [e.step for e in events if e.stage is Stage.DENOISE] == [1, 2, 3, 4, 5]
    assert float((clean.frames - resumed.frames).abs().max()) <= 1e-5


@pytest.mark.parametrize("phase", ["load", "encode", "decode"])
def test_oom_in_other_phases_is_recovered_and_recorded(
    engine: Engine, input_image: InputImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    monkeypatch.setenv(FAULTS_ENV, f"oom@{phase}")
    result = generate(engine, GenerationRequest(prompt="x", seed=2, **SMALL), input_image, tmp_path / "o.mp4")
    assert [d["phase"] for d in result.downgrades] == [phase]
    assert read_metadata(result.video_path)["runtime"]["downgrades"][0]["phase"] == phase


def test_oom_on_every_rung_fails_clearly(
    engine: Engine, input_image: InputImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def always_oom(*args: object, **kwargs: object) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr("stillmotion.models.i2vgen_xl.predict_noise", always_oom)
    with pytest.raises(OutOfMemory) as info:
        generate(engine, GenerationRequest(prompt="x", seed=2, **SMALL), input_image, tmp_path / "never.mp4")
    assert "no cheaper plan" in info.value.message
    assert len(info.value.details["downgrades"]) >= 1
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_fail_before_any_work(engine: Engine, input_image: InputImage, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as info:
        generate(
            engine,
            GenerationRequest(
                prompt="x", num_frames=99, **{k: v for k, v in SMALL.items() if k != "num_frames"}
            ),
            input_image,
            tmp_path / "x.mp4",
        )
    assert info.value.field == "num_frames"
    with pytest.raises(InvalidRequest) as info:
        generate(engine, GenerationRequest(prompt="x", **SMALL), input_image, tmp_path / "x.avi")
    assert info.value.field == "output"
    assert engine._loaded is None  # nothing was loaded for a request that could not run


def test_a_cut_prompt_is_named_and_the_models_own_negative_prompt_never_warns(
    engine: Engine, input_image: InputImage
) -> None:
    """The tiny tokenizer reads one token per character (77 at most, like CLIP)."""
    short = render(engine, GenerationRequest(prompt="waves roll in", seed=1, **SMALL), input_image)
    assert not [w for w in short.warnings if "tokens long" in w]  # the default negative prompt is 131 chars

    long_negative = "blurry, " * 20
    cut = render(
        engine,
        GenerationRequest(prompt="w" * 100, negative_prompt=long_negative, seed=1, **SMALL),
        input_image,
    )
    warned = [w for w in cut.warnings if "tokens long" in w]
    assert [w.split(" ", 1)[0] for w in warned] == ["prompt", "negative_prompt"]
    assert "prompt is 102 tokens long and tiny-i2vgen-xl reads only the first 77" in warned[0]
