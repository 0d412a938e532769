"""GenerationRequest.resolve: one clear error per broken rule, documented preset snapping, defaults."""

from __future__ import annotations

import math

import pytest

from stillmotion.engine.request import MAX_SEED, GenerationRequest
from stillmotion.errors import InvalidRequest
from stillmotion.models.registry import I2VGENXL, TINY_I2VGENXL

LANDSCAPE = (1920, 1080)


def resolve(**fields: object) -> object:
    return GenerationRequest(**{"prompt": "waves", **fields}).resolve(I2VGENXL, LANDSCAPE)  # type: ignore[arg-type]


def test_defaults_are_the_models() -> None:
    req = GenerationRequest(prompt="  waves  ").resolve(I2VGENXL, LANDSCAPE)
    assert req.prompt == "waves"
    assert (req.num_frames, req.num_inference_steps, req.guidance_scale, req.fps) == (16, 50, 9.0, 8)
    assert req.negative_prompt == I2VGENXL.defaults.negative_prompt
    assert req.resolution == "512p" and 0 <= req.seed <= MAX_SEED


@pytest.mark.parametrize(
    ("preset", "image", "expected"),
    [
        ("512p", (1000, 1000), (512, 512)),
        ("1024p", (1000, 1000), (1024, 1024)),
        ("512p", (1920, 1080), (384, 704)),  # 16:9 keeps its shape, about 512^2 pixels
        ("768p", (1080, 1920), (1024, 576)),  # portrait
        ("512p", (4000, 1000), (256, 1024)),  # clamped to the minimum side
    ],
)
def test_presets_keep_the_aspect_ratio_and_snap_to_64(
    preset: str, image: tuple[int, int], expected: tuple[int, int]
) -> None:
    req = GenerationRequest(prompt="x", resolution=preset).resolve(I2VGENXL, image)
    assert (req.height, req.width) == expected
    assert req.height % 64 == 0 and req.width % 64 == 0
    side = int(preset[:-1])
    if expected[0] > I2VGENXL.limits.min_side:
        assert abs(math.log(req.height * req.width / side**2)) < 0.2  # about the preset's area


def test_explicit_size_overrides_presets_and_is_never_changed() -> None:
    req = GenerationRequest(prompt="x", height=328, width=600).resolve(I2VGENXL, LANDSCAPE)
    assert (req.height, req.width, req.resolution) == (328, 600, None)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   "}, "prompt", "empty"),
        ({"prompt": "x" * 2001}, "prompt", "2000"),
        ({"prompt": "bad\x00byte"}, "prompt", "U+0000"),
        ({"negative_prompt": "esc\x1b[31m"}, "negative_prompt", "U+001B"),
        ({"prompt": 5}, "prompt", "text"),
        ({"num_frames": 7}, "num_frames", "8 to 32"),
        ({"num_frames": 33}, "num_frames", "8 to 32"),
        ({"num_frames": 16.0}, "num_frames", "whole number"),
        ({"num_frames": True}, "num_frames", "whole number"),
        ({"num_inference_steps": 0}, "num_inference_steps", "1 to 500"),
        ({"num_inference_steps": 10**9}, "num_inference_steps", "1 to 500"),
        ({"guidance_scale": float("nan")}, "guidance_scale", "1 to 30"),
        ({"guidance_scale": float("inf")}, "guidance_scale", "1 to 30"),
        ({"guidance_scale": -5}, "guidance_scale", "1 to 30"),
        ({"fps": 0}, "fps", "1 to 60"),
        ({"seed": -1}, "seed", "0 to 4294967295"),
        ({"seed": 2**64}, "seed", "0 to 4294967295"),
        ({"seed": 1.5}, "seed", "whole number"),
        ({"seed": "abc"}, "seed", "whole number"),
        ({"resolution": "4k"}, "resolution", "512p"),
        ({"height": 512}, "width", "both"),
        ({"height": 500, "width": 512}, "height", "multiple of 8"),
        ({"height": 128, "width": 512}, "height", "256 to 1536"),
        ({"height": 1536, "width": 1536}, "height", "pixels"),
        ({"resolution": "512p", "height": 512, "width": 512}, "resolution", "one or the other"),
    ],
)
def test_each_broken_rule_names_the_field_value_and_rule(
    fields: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve(**fields)
    assert info.value.field == field
    assert words in info.value.message
    assert info.value.code == "invalid_request" and info.value.http_status == 422


def test_unknown_fields_are_rejected_not_dropped() -> None:
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest.from_dict({"prompt": "x", "strength": 0.5})
    assert info.value.field == "strength"
    assert GenerationRequest.from_dict({"prompt": "x", "seed": 3}).seed == 3


def test_tiny_model_allows_small_sizes() -> None:
    req = GenerationRequest(prompt="x", height=64, width=64).resolve(TINY_I2VGENXL, None)
    assert (req.height, req.width, req.num_frames) == (64, 64, 8)
