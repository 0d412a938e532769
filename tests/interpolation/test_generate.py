"""Interpolation end to end on the tiny model: exact frame count and fps, the recipe, refusals, cancel."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from stillmotion.cli import main
from stillmotion.config import Settings
from stillmotion.engine.engine import Engine
from stillmotion.engine.progress import CancelToken, ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest
from stillmotion.errors import Cancelled, InvalidRequest
from stillmotion.media.image_input import load_image_file
from stillmotion.media.video_output import read_metadata
from tests.interpolation.helpers import FAKE_COMMIT, save_rife_in_hub_cache
from tests.support.engine_calls import generate, resolved

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "seaside.jpg"
SMALL = {"prompt": "waves", "model": "tiny-i2vgen-xl", "height": 64, "width": 64, "num_frames": 8}


def frames_and_rate(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(video=0)), float(stream.average_rate)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """One engine, offline, whose hub cache holds random RIFE 4.6 weights in the hub's layout."""
    models = tmp_path_factory.mktemp("models")
    save_rife_in_hub_cache(models)
    data = tmp_path_factory.mktemp("data")
    return Engine(Settings(data_dir=data, device="cpu", models_dir=models, offline=True))


def test_cli_interpolate_2x_writes_twice_the_frames_at_twice_the_fps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out.mp4"
    args = ["--model", "tiny-i2vgen-xl", "--device", "cpu", "--image", str(EXAMPLE), "--prompt", "waves"]
    size = ["--num-frames", "8", "--num-inference-steps", "2", "--height", "64", "--width", "64"]
    assert main(["generate", *args, *size, "--interpolate", "2x", "--output", str(out)]) == 0
    assert frames_and_rate(out) == (16, 16.0)
    recipe = read_metadata(out)
    assert recipe["fps"] == 8 and recipe["num_frames"] == 8  # what the generator made
    assert recipe["interpolation"]["interpolator"] == "minterpolate"
    assert (recipe["interpolation"]["num_frames"], recipe["interpolation"]["fps"]) == (16, 16)
    assert json.loads(Path(f"{out}.json").read_text())["interpolation"]["factor"] == 2


def test_rife_4x_through_the_hub_loader_records_its_weights(engine: Engine, tmp_path: Path) -> None:
    image = load_image_file(EXAMPLE)
    request = GenerationRequest(**SMALL, num_inference_steps=1, interpolate=4, interpolator="rife", seed=7)
    result = generate(engine, request, image, tmp_path / "rife.mp4")
    assert frames_and_rate(result.video_path) == (32, 32.0)
    interpolation = result.metadata["interpolation"]
    assert interpolation["weights"]["commit"] == FAKE_COMMIT
    assert interpolation["weights"]["network"].startswith("RIFE 4.6")
    assert interpolation["plan"]["device_type"] == "cpu" and interpolation["fps"] == 32
    assert result.timings["interpolate_s"] > 0
    planned = engine.plan(resolved(engine, request))
    assert planned.interpolation is not None  # `stillmotion plan` shows the phase too


def test_gif_that_would_play_too_fast_is_refused_before_any_work(engine: Engine, tmp_path: Path) -> None:
    image = load_image_file(EXAMPLE)
    request = GenerationRequest(**SMALL, fps=16, interpolate=4)
    with pytest.raises(InvalidRequest, match="GIF plays at most 50 fps"):
        generate(engine, request, image, tmp_path / "fast.gif")
    assert not list(tmp_path.iterdir())


def test_cancel_while_interpolating_leaves_no_file(engine: Engine, tmp_path: Path) -> None:
    token = CancelToken()

    def on_progress(event: ProgressEvent) -> None:
        if event.stage is Stage.INTERPOLATE:
            token.cancel()

    request = GenerationRequest(**SMALL, num_inference_steps=1, interpolate=2)
    with pytest.raises(Cancelled):
        generate(
            engine,
            request,
            load_image_file(EXAMPLE),
            tmp_path / "x.mp4",
            on_progress=on_progress,
            cancel=token,
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_gif_and_webp_merge_the_held_copies_of_the_last_frame_as_both_docs_say(
    engine: Engine, tmp_path: Path, suffix: str
) -> None:
    """N frames made k times hold N·k−(k−1) pictures in a GIF or WebP (the k−1 held copies of the last frame
    merge into it), play exactly N/f seconds; an MP4 holds all N·k. docs/interpolation.md and docs/media.md
    state the same."""
    from PIL import Image

    image = load_image_file(EXAMPLE)
    request = GenerationRequest(**SMALL, num_inference_steps=1, interpolate=4, fps=8, seed=3)
    out = tmp_path / f"out{suffix}"
    result = generate(engine, request, image, out)
    assert result.metadata["interpolation"]["num_frames"] == 32  # the sequence made: N·k
    with Image.open(out) as video:
        durations = []
        for index in range(video.n_frames):
            video.seek(index)
            video.load()  # WebP sets a frame's duration when it is decoded
            durations.append(video.info["duration"])
    assert len(durations) == 8 * 4 - (4 - 1)
    assert sum(durations) == 1000  # 8 frames at 8 fps
    assert abs(durations[-1] - 4 * 1000 / 32) <= 10  # the last frame shows for 1/f, as in the source
    for doc in ("interpolation.md", "media.md"):
        text = (Path(__file__).resolve().parents[2] / "docs" / doc).read_text()
        assert "N·k−(k−1)" in text, f"docs/{doc} does not state the GIF/WebP frame count"
