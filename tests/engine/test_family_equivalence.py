"""Every family's adapter against diffusers' own pipeline: same tiny weights, same seed, fp32 on the CPU.

One engine flow (engine/engine.py) runs Wan 2.1 I2V, Wan 2.2 TI2V, SVD-XT and LTX-Video through their
adapters (models/wan.py, svd.py, ltx.py); here each tiny build's frames must equal those of
WanImageToVideoPipeline, StableVideoDiffusionPipeline and LTXImageToVideoPipeline within 1e-4, with guidance
batched, guidance split and guidance off, at a non-square size. (I2VGen-XL: tests/engine/test_equivalence.py.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import LTXImageToVideoPipeline, StableVideoDiffusionPipeline, WanImageToVideoPipeline

from stillmotion.engine.engine import Engine
from stillmotion.engine.request import GenerationRequest, ResolvedRequest
from stillmotion.media.image_input import InputImage
from stillmotion.models import tiny
from tests.support.engine_calls import render

TOLERANCE = 1e-4  # fp32 on the CPU: only reduction order may differ


@dataclass(frozen=True)
class Case:
    model: str
    height: int  # non-square, and each a multiple of the family's size rule
    width: int
    num_frames: int  # each family's frame rule: Wan 4k+1, LTX 8k+1, SVD any
    prompt: bool  # SVD takes none


CASES = [
    Case("tiny-wan2.1-i2v", 48, 80, 9, prompt=True),
    Case("tiny-wan2.2-ti2v", 64, 96, 9, prompt=True),
    Case("tiny-wan2.2-i2v-a14b", 48, 80, 9, prompt=True),  # two experts (tests/engine/test_two_experts.py)
    Case("tiny-svd-xt", 64, 96, 6, prompt=False),
    Case("tiny-ltx-video", 64, 96, 9, prompt=True),
]


def reference_frames(
    case: Case, image: InputImage, req: ResolvedRequest, decode_chunk_size: int
) -> np.ndarray:
    """The family's diffusers pipeline on the same tiny weights (seed 0), the same request and seed."""
    generator = torch.Generator().manual_seed(req.seed)
    call: dict[str, Any] = {
        "image": image.image,
        "height": req.height,
        "width": req.width,
        "num_frames": req.num_frames,
        "num_inference_steps": req.num_inference_steps,
        "generator": generator,
        "output_type": "np",
    }
    pipe: Any
    if case.model.startswith("tiny-wan"):
        parts = tiny.build_tiny_wan_components(
            0, ti2v=case.model == "tiny-wan2.2-ti2v", experts=case.model == "tiny-wan2.2-i2v-a14b"
        )
        expand = parts.pop("expand_timesteps")
        parts = {name: part for name, part in parts.items() if part is not None}
        pipe = WanImageToVideoPipeline(**parts, expand_timesteps=expand)
        call |= {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt,
            "guidance_scale": req.guidance_scale,
        }
    elif case.model == "tiny-svd-xt":
        pipe = StableVideoDiffusionPipeline(**tiny.build_tiny_svd_components(0))
        call |= {
            "min_guidance_scale": 1.0,
            "max_guidance_scale": req.guidance_scale,
            "fps": req.fps,
            "decode_chunk_size": decode_chunk_size,
        }
    else:
        pipe = LTXImageToVideoPipeline(**tiny.build_tiny_ltx_components(0))
        call |= {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt,
            "guidance_scale": req.guidance_scale,
            "frame_rate": req.fps,
        }
    pipe.set_progress_bar_config(disable=True)
    return np.asarray(pipe(**call).frames[0])


@pytest.mark.parametrize("case", CASES, ids=[case.model for case in CASES])
@pytest.mark.parametrize(
    ("guidance_scale", "strategy"),
    [(4.0, None), (4.0, "split_guidance"), (1.0, None)],
    ids=["guided-batched", "guided-split", "unguided"],
)
def test_frames_match_the_family_pipeline(
    engine: Engine, input_image: InputImage, case: Case, guidance_scale: float, strategy: str | None
) -> None:
    request = GenerationRequest(
        prompt="a red kite over the dunes" if case.prompt else "",
        negative_prompt="blurry" if case.prompt else None,
        model=case.model,
        height=case.height,
        width=case.width,
        num_frames=case.num_frames,
        num_inference_steps=4,
        guidance_scale=guidance_scale,
        fps=8,
        seed=1234,
    )
    rendered = render(engine, request, input_image, strategy=strategy)
    assert rendered.plan.split_guidance is (strategy == "split_guidance")
    ours = rendered.frames.numpy()
    reference = reference_frames(case, input_image, rendered.request, rendered.plan.decode_chunk_size)

    assert ours.shape == reference.shape == (case.num_frames, case.height, case.width, 3)
    assert float(ours.std()) > 0.01  # not a blank video that would match anything
    assert float(np.abs(ours - reference).max()) <= TOLERANCE
