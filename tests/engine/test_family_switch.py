"""One model resident at a time, whatever the family: switching models frees the previous one's weights."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import av

from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest
from stillmotion.media.image_input import InputImage
from stillmotion.media.video_output import read_metadata
from tests.support.engine_calls import generate

SMALL = dict(height=64, width=64, num_inference_steps=2, seed=3)


def test_switching_families_unloads_the_previous_model(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    wan = generate(
        engine,
        GenerationRequest(prompt="a kite", model="tiny-wan2.1-i2v", num_frames=9, **SMALL),
        input_image,
        tmp_path / "wan.mp4",
    )
    assert engine._loaded is not None and engine._loaded[0] == "tiny-wan2.1-i2v"
    transformer = weakref.ref(engine._loaded[2].modules()["transformer"])

    svd = generate(
        engine,
        GenerationRequest(model="tiny-svd-xt", num_frames=4, **SMALL),
        input_image,
        tmp_path / "svd.mp4",
    )
    gc.collect()
    assert engine._loaded is not None and engine._loaded[0] == "tiny-svd-xt"
    assert transformer() is None  # the Wan weights are gone, not kept beside SVD's

    for result, frames, model in ((wan, 9, "tiny-wan2.1-i2v"), (svd, 4, "tiny-svd-xt")):
        with av.open(str(result.video_path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == frames
        meta = read_metadata(result.video_path)
        assert meta["model"] == model and meta["num_frames"] == frames
    assert read_metadata(svd.video_path)["prompt"] == ""
