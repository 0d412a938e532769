"""Each family's request rules as a table: the error names the field, the value, the rule and the model.

Wan takes 4k+1 frames at multiples of 16 (Wan 2.2 TI2V: 32), LTX-Video 8k+1 frames at multiples of 32, SVD
any frame count up to 25 at multiples of 8 and no prompt at all (a prompt is refused, never ignored).
"""

from __future__ import annotations

import pytest

from stillmotion.engine.request import GenerationRequest, describe_rules
from stillmotion.errors import InvalidRequest
from stillmotion.models.registry import get_spec, list_specs

LANDSCAPE = (1920, 1080)


@pytest.mark.parametrize(
    ("model", "fields", "field", "words"),
    [
        ("wan2.1-i2v-14b-480p", {"num_frames": 16}, "num_frames", "num_frames=16 is not 4k+1 for wan2.1-i2v"),
        ("wan2.1-i2v-14b-480p", {"num_frames": 16}, "num_frames", "try 17"),
        ("wan2.1-i2v-14b-480p", {"num_frames": 83}, "num_frames", "allowed: 5 to 81"),
        ("wan2.1-i2v-14b-480p", {"height": 488, "width": 832}, "height", "not a multiple of 16"),
        ("wan2.1-i2v-14b-480p", {"height": 488, "width": 832}, "height", "2x2 patches"),
        ("wan2.1-i2v-14b-720p", {"num_frames": 80}, "num_frames", "try 81"),
        ("wan2.2-ti2v-5b", {"height": 720, "width": 1280}, "height", "720 is not a multiple of 32"),
        ("wan2.2-ti2v-5b", {"num_frames": 120}, "num_frames", "try 121"),
        ("ltx-video", {"num_frames": 100}, "num_frames", "num_frames=100 is not 8k+1 for ltx-video; try 97"),
        ("ltx-video", {"height": 500, "width": 704}, "height", "not a multiple of 32"),
        ("ltx-video", {"num_frames": 265}, "num_frames", "allowed: 9 to 257"),
        ("svd-xt", {"prompt": "a cat runs"}, "prompt", "svd-xt has no text encoder"),
        (
            "svd-xt",
            {"prompt": "", "negative_prompt": "blurry"},
            "negative_prompt",
            "leave negative_prompt empty",
        ),
        ("svd-xt", {"prompt": "", "num_frames": 26}, "num_frames", "allowed: 2 to 25"),
        ("svd-xt", {"prompt": "", "height": 580, "width": 1024}, "height", "not a multiple of 8"),
        ("tiny-wan2.1-i2v", {"num_frames": 10}, "num_frames", "try 9"),
        ("tiny-ltx-video", {"num_frames": 10}, "num_frames", "try 9"),
    ],
)
def test_each_family_rule_names_the_field_value_and_rule(
    model: str, fields: dict[str, object], field: str, words: str
) -> None:
    request = GenerationRequest(**{"prompt": "waves", "model": model, **fields})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as info:
        request.resolve(get_spec(model), LANDSCAPE)
    assert info.value.field == field
    assert words in info.value.message
    assert info.value.http_status == 422


@pytest.mark.parametrize("spec", list_specs(), ids=lambda spec: spec.name)
def test_every_models_defaults_keep_its_own_rules(spec: object) -> None:
    """A request that leaves everything out resolves, and its size and frames keep the model's rules."""
    from stillmotion.models.registry import ModelSpec

    assert isinstance(spec, ModelSpec)
    prompt = "waves" if spec.limits.accepts_prompt else ""
    req = GenerationRequest(prompt=prompt, model=spec.name).resolve(spec, LANDSCAPE)
    assert (req.num_frames - 1) % spec.limits.frame_step == 0
    assert req.height % spec.limits.size_multiple == 0 and req.width % spec.limits.size_multiple == 0
    assert spec.limits.min_frames <= req.num_frames <= spec.limits.max_frames


def test_svd_runs_without_a_prompt_and_says_so_in_its_rules() -> None:
    spec = get_spec("svd-xt")
    req = GenerationRequest().resolve(spec, LANDSCAPE)
    assert (req.prompt, req.negative_prompt) == ("", "")
    assert (req.height, req.width, req.num_frames, req.fps) == (576, 1024, 25, 7)  # the model's native video
    assert any("svd-xt animates the image alone" in rule for rule in describe_rules(spec))


def test_rules_in_words_state_the_frame_rule_and_size_multiple() -> None:
    rules = " ".join(describe_rules(get_spec("wan2.1-i2v-14b-480p")))
    assert "4k+1 (5, 9, 13, ...)" in rules and "multiples of 16" in rules
    rules = " ".join(describe_rules(get_spec("ltx-video")))
    assert "8k+1 (9, 17, 25, ...)" in rules and "multiples of 32" in rules
    assert "k+1" not in " ".join(describe_rules(get_spec("i2vgen-xl")))
