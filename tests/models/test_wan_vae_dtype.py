"""Wan's VAE runs in float32 beside a 16-bit transformer, as diffusers' Wan examples load it.

Loading a Wan folder in bfloat16 keeps the VAE's float32 weights, a 16-bit plan keeps the VAE in float32 when
it places the networks, and the decode of 16-bit latents through it gives the frames of an all-float32 decode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanImageToVideoPipeline

from stillmotion.memory.apply import apply_plan
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import plan_memory
from stillmotion.memory.types import Shape
from stillmotion.models import tiny
from stillmotion.models.registry import get_spec
from stillmotion.models.wan import ROLES, WanComponents, WanConditioning, WanFamily, decode_latents


def _tiny_wan() -> WanComponents:
    return WanComponents(**tiny.build_tiny_wan_components(0))


def test_a_wan_folder_loaded_in_bfloat16_keeps_its_vae_in_float32(tmp_path: Path) -> None:
    parts = tiny.build_tiny_wan_components(0)
    expand = parts.pop("expand_timesteps")
    WanImageToVideoPipeline(**parts, expand_timesteps=expand).save_pretrained(tmp_path)
    loaded = WanFamily().load_folder(tmp_path, torch.bfloat16, None)
    assert loaded.vae.dtype == torch.float32
    assert loaded.transformer.dtype == torch.bfloat16
    assert loaded.text_encoder.dtype == torch.bfloat16
    # The float32 weights themselves, not bfloat16 ones cast back up.
    for name, weight in parts["vae"].state_dict().items():
        assert torch.equal(loaded.vae.state_dict()[name], weight), name


def test_a_16_bit_plan_keeps_the_vae_in_float32_and_decodes_exactly_as_float32() -> None:
    plan = plan_memory(get_spec("wan2.1-i2v-14b-480p"), Shape(480, 832, 81, 5.0), DeviceBudget.fixed(24))
    assert (plan.dtype, plan.vae_dtype, plan.to_dict()["vae_dtype"]) == ("bfloat16", "float32", "float32")
    ours, reference = _tiny_wan(), _tiny_wan()
    apply_plan(ours.modules(), plan, torch.device("cpu"), ROLES)
    assert ours.vae.dtype == torch.float32
    assert ours.transformer.dtype == torch.bfloat16 and ours.text_encoder.dtype == torch.bfloat16

    latents = torch.randn(1, 16, 3, 6, 10).to(torch.bfloat16)  # what a bfloat16 transformer leaves
    cond = WanConditioning(
        prompt_embeds=torch.zeros(1, 1, 1), negative_prompt_embeds=None, image_embeds=None, condition=latents
    )
    frames = decode_latents(ours, latents, cond, vae_tiling=False)
    assert torch.equal(frames, decode_latents(reference, latents.float(), cond, vae_tiling=False))
    assert frames.shape == (9, 48, 80, 3) and float(frames.std()) > 0.01
