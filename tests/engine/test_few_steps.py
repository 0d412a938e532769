"""Every family at 1 and 2 denoising steps: it runs (to the frames of its diffusers pipeline), or the request
is refused up front with the rule and the nearest count that works, never a crash after loading.

LTX-Video's schedule is stretched so that its last sigma is ``shift_terminal`` (0.1 in the real and the tiny
configs): a single step has only sigma 1.0, which the stretch turns into NaN, and the pipeline fails the same
way. So LTX-Video takes 2 steps or more; the others run at 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diffusers import LTXImageToVideoPipeline

from stillmotion.cli import main
from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest, describe_rules
from stillmotion.errors import InvalidRequest
from stillmotion.media.image_input import InputImage
from stillmotion.models import tiny
from stillmotion.models.registry import get_spec, list_specs
from tests.engine.conftest import make_png
from tests.engine.test_family_equivalence import CASES, Case, reference_frames
from tests.support.engine_calls import render, resolved

I2VGENXL = Case("tiny-i2vgen-xl", 64, 64, 8, prompt=True)  # its pipeline is compared in test_equivalence.py


def _request(case: Case, steps: int) -> GenerationRequest:
    return GenerationRequest(
        prompt="a red kite over the dunes" if case.prompt else "",
        model=case.model,
        height=case.height,
        width=case.width,
        num_frames=case.num_frames,
        num_inference_steps=steps,
        guidance_scale=4.0,
        seed=3,
    )


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("case", [I2VGENXL, *CASES], ids=lambda case: case.model)
def test_each_family_runs_at_few_steps_or_refuses_up_front(
    engine: Engine, input_image: InputImage, case: Case, steps: int
) -> None:
    request = _request(case, steps)
    if steps < get_spec(case.model).limits.min_inference_steps:
        with pytest.raises(InvalidRequest) as info:
            resolved(engine, request, input_image)
        assert info.value.field == "num_inference_steps"
        assert f"num_inference_steps={steps} is out of range for {case.model}" in info.value.message
        assert "shift_terminal" in info.value.message and "try 2" in info.value.message
        return
    rendered = render(engine, request, input_image)
    ours = rendered.frames.numpy()
    assert np.isfinite(ours).all() and float(ours.std()) > 0.01
    if case is not I2VGENXL:
        reference = reference_frames(case, input_image, rendered.request, rendered.plan.decode_chunk_size)
        assert float(np.abs(ours - reference).max()) <= 1e-4


def test_only_ltx_video_needs_two_steps_and_its_rules_say_so() -> None:
    needs_two = {spec.name for spec in list_specs() if spec.limits.min_inference_steps == 2}
    assert needs_two == {"ltx-video", "tiny-ltx-video", "ltx-video-random"}
    assert all(spec.limits.min_inference_steps in (1, 2) for spec in list_specs())
    ltx = [rule for rule in describe_rules(get_spec("ltx-video")) if rule.startswith("num_inference_steps")]
    assert ltx == [
        "num_inference_steps: 2 to 500 (its schedule is stretched to end at shift_terminal, which "
        "one step cannot do)"
    ]
    assert "num_inference_steps: 1 to 500" in describe_rules(get_spec("wan2.2-ti2v-5b"))


def test_the_ltx_pipeline_itself_cannot_take_one_step(input_image: InputImage) -> None:
    """Why the rule exists: diffusers' own LTX pipeline fails at 1 step (if it ever runs, lift the rule)."""
    pipe = LTXImageToVideoPipeline(**tiny.build_tiny_ltx_components(0))
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(IndexError):
        pipe(
            image=input_image.image, prompt="a kite", height=64, width=64, num_frames=9, num_inference_steps=1
        )


def test_the_cli_refuses_one_ltx_step_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command of the report: exit 2 with the rule, nothing written."""
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))
    image, output = tmp_path / "in.png", tmp_path / "out.mp4"
    image.write_bytes(make_png())
    code = main(
        ["generate", "--model", "tiny-ltx-video", "--image", str(image), "--prompt", "a kite"]
        + ["--num-inference-steps", "1", "--output", str(output)]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "num_inference_steps=1" in error and "try 2" in error, error
    assert not output.exists()
