"""LTX-Video's decode options: ``decode_timestep`` and ``decode_noise_scale`` for timestep-conditioned VAEs.

LTX-Video 0.9.1 and later decode at a timestep, after mixing a little noise into the latents; diffusers'
examples run them at decode_timestep=0.03, decode_noise_scale=0.025, the defaults here. The tiny build with
such a VAE (its own ``timestep_conditioning`` option; the registered tiny build is 0.9.0's) must give the
frames of ``LTXImageToVideoPipeline`` run with the same settings, at the defaults and at other values, and
an out-of-memory retry or a checkpoint resume must draw the decode noise where an uninterrupted run does.
Other families have no such option and refuse it by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from diffusers import LTXImageToVideoPipeline

from stillmotion.config import Settings
from stillmotion.engine.checkpoint import Checkpoint
from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest
from stillmotion.errors import InvalidRequest
from stillmotion.faults import FAULTS_ENV
from stillmotion.media.image_input import InputImage
from stillmotion.models import tiny
from stillmotion.models.registry import get_spec
from tests.support.engine_calls import render, resolved

TOLERANCE = 1e-4  # fp32 on the CPU, as tests/engine/test_family_equivalence.py


BUILD = tiny.build_tiny_ltx_components


@pytest.fixture(scope="module")
def ltx091(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine whose tiny-ltx-video has a timestep-conditioned VAE, as LTX-Video 0.9.1 and later."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny, "build_tiny_ltx_components", functools.partial(BUILD, timestep_conditioning=True))
        data_dir = tmp_path_factory.mktemp("data")
        yield Engine(Settings(data_dir=data_dir, default_model="tiny-i2vgen-xl", device="cpu"))


def _request(**options: float) -> GenerationRequest:
    return GenerationRequest(
        prompt="a red kite over the dunes",
        model="tiny-ltx-video",
        height=64,
        width=96,
        num_frames=9,
        num_inference_steps=4,
        guidance_scale=3.0,
        seed=21,
        **options,  # type: ignore[arg-type]
    )


def _pipeline_frames(image: InputImage, request: GenerationRequest, **decode: float) -> np.ndarray:
    """diffusers' pipeline on the same tiny weights (seed 0), the same request and seed."""
    pipe = LTXImageToVideoPipeline(**BUILD(0, timestep_conditioning=True))
    pipe.set_progress_bar_config(disable=True)
    assert request.seed is not None
    output = pipe(
        image=image.image,
        prompt=request.prompt,
        negative_prompt=get_spec("tiny-ltx-video").defaults.negative_prompt,
        height=request.height,
        width=request.width,
        num_frames=request.num_frames,
        num_inference_steps=request.num_inference_steps,
        guidance_scale=request.guidance_scale,
        frame_rate=get_spec("tiny-ltx-video").defaults.fps,
        generator=torch.Generator().manual_seed(request.seed),
        output_type="np",
        **decode,
    )
    return np.asarray(output.frames[0])


def test_the_defaults_are_diffusers_examples_and_equal_the_pipeline(
    ltx091: Engine, input_image: InputImage
) -> None:
    request = _request()
    rendered = render(ltx091, request, input_image)
    reference = _pipeline_frames(input_image, request, decode_timestep=0.03, decode_noise_scale=0.025)
    ours = rendered.frames.numpy()
    assert float(np.abs(ours - reference).max()) <= TOLERANCE
    assert rendered.result.metadata["decode_timestep"] == 0.03  # recorded in the recipe
    assert rendered.result.metadata["decode_noise_scale"] == 0.025
    # The options matter: the pipeline's own defaults (no decode noise) give another video.
    plain = _pipeline_frames(input_image, request)
    assert float(np.abs(ours - plain).max()) > 10 * TOLERANCE


def test_other_values_equal_the_pipeline_with_the_same_values(
    ltx091: Engine, input_image: InputImage
) -> None:
    request = _request(decode_timestep=0.05, decode_noise_scale=0.2)
    ours = render(ltx091, request, input_image).frames.numpy()
    reference = _pipeline_frames(input_image, request, decode_timestep=0.05, decode_noise_scale=0.2)
    assert float(np.abs(ours - reference).max()) <= TOLERANCE


def test_a_resumed_run_draws_the_decode_noise_where_an_uninterrupted_one_does(
    ltx091: Engine, input_image: InputImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = _request(decode_noise_scale=0.5)  # much noise: any other draw shows
    saved: list[Checkpoint] = []

    def keep_step_2(steps_done: int, make: Callable[[], Checkpoint]) -> None:
        if steps_done == 2:
            saved.append(make())

    clean = render(ltx091, request, input_image, on_checkpoint=keep_step_2)
    from_file = render(Engine(ltx091.settings), request, input_image, resume=saved[0])
    assert any("resumed after denoising step 2" in w for w in from_file.warnings)
    monkeypatch.setenv(FAULTS_ENV, "oom@step:3")
    after_oom = render(ltx091, request, input_image)
    assert after_oom.downgrades
    for resumed in (from_file, after_oom):
        assert float((clean.frames - resumed.frames).abs().max()) <= 1e-5


@pytest.mark.parametrize("model", ["tiny-i2vgen-xl", "tiny-wan2.1-i2v", "tiny-svd-xt"])
def test_other_families_refuse_the_options_by_name(engine: Engine, model: str) -> None:
    request = GenerationRequest(
        prompt="" if model == "tiny-svd-xt" else "waves", model=model, decode_timestep=0.05
    )
    with pytest.raises(InvalidRequest) as info:
        resolved(engine, request)
    assert info.value.field == "decode_timestep"
    assert f"decode_timestep=0.05 is not an option of {model}" in info.value.message


def test_the_options_are_bounded(engine: Engine) -> None:
    for name, value in (("decode_timestep", -0.1), ("decode_noise_scale", 1.5)):
        request = GenerationRequest(prompt="waves", model="tiny-ltx-video", **{name: value})  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match=f"{name}={value} is out of range; allowed: 0 to 1"):
            resolved(engine, request)
