"""A model's full-size networks and the inputs of one call, on the ``meta`` device: no memory, no weights.

What the benchmark's two offline counters share: the activation simulator (bench/simulate.py) tracks the
bytes of these calls, the FLOP counter (bench/flops.py) counts their work. The networks come from the shipped
configs (models/configs/<config_name>, via models/random_full.py); the inputs are the shapes each family's
pipeline feeds them (models/<family>.py), so the counts are those of the engine's calls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from stillmotion.models.registry import ModelSpec

# The configs of ali-vilab/i2vgen-xl shipped with the package (models/configs/i2vgen-xl).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "models" / "configs" / "i2vgen-xl"


def meta_unet(config_dir: Path = CONFIG_DIR, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    """The UNet built from its config with every parameter on ``meta`` (no memory, no weights)."""
    from accelerate import init_empty_weights
    from diffusers import I2VGenXLUNet

    config = json.loads((config_dir / "unet" / "config.json").read_text())
    with init_empty_weights():
        unet = I2VGenXLUNet.from_config(config)
    return unet.to(dtype=dtype)  # type: ignore[no-any-return]


def meta_vae(config_dir: Path = CONFIG_DIR, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    config = json.loads((config_dir / "vae" / "config.json").read_text())
    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    return vae.to(dtype=dtype)  # type: ignore[no-any-return]


def meta_unet_inputs(
    unet: torch.nn.Module,
    height: int,
    width: int,
    num_frames: int,
    batch: int,
    cross_attention_dim: int = 1024,
) -> dict[str, torch.Tensor]:
    """Keyword arguments of one UNet forward at ``height x width`` pixels (latent / 8), on ``meta``."""
    dtype = next(unet.parameters()).dtype
    h, w = height // 8, width // 8

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, device="meta", dtype=dtype)

    return {
        "sample": empty(batch, 4, num_frames, h, w),
        "timestep": torch.tensor(500, device="meta"),
        "fps": torch.full((batch,), 16, device="meta", dtype=torch.int64),
        "image_latents": empty(batch, 4, num_frames, h, w),
        "image_embeddings": empty(batch, cross_attention_dim),
        "encoder_hidden_states": empty(batch, 77, cross_attention_dim),
    }


FAMILY_TEXT_TOKENS = {"wan": 512, "ltx": 128}  # padded prompt lengths (the pipelines' max_sequence_length)
CLIP_TOKENS = 257  # ViT-H/14 on 224 x 224: 16 x 16 patches + the class token


def _wan_expands_timesteps(spec: ModelSpec) -> bool:
    """The pipeline's ``expand_timesteps`` (model_index.json): one timestep per token (Wan 2.2 TI2V), not
    per row. Not the transformer's ``image_dim``: Wan 2.2 A14B has no CLIP image input and one per row."""
    from stillmotion.models.random_full import config_dir

    index = json.loads((config_dir(spec) / "model_index.json").read_text())
    return bool(index.get("expand_timesteps", False))


def meta_networks(spec: ModelSpec, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.nn.Module]:
    """Every network of ``spec`` with parameters and buffers on ``meta`` (no memory, no weights)."""
    from stillmotion.models.random_full import empty_modules

    # Buffers too (Wan's rotary tables are buffers): an op mixing a CPU buffer and meta activations fails.
    return {name: module.to(device="meta", dtype=dtype) for name, module in empty_modules(spec).items()}


def meta_tensor(dtype: torch.dtype, *shape: int) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` on ``meta``: shapes and dtypes, no memory."""
    return torch.empty(*shape, device="meta", dtype=dtype)


def denoiser_inputs(
    spec: ModelSpec, denoiser: torch.nn.Module, height: int, width: int, num_frames: int, batch: int
) -> dict[str, Any]:
    """Keyword arguments of one denoiser call of ``spec``'s family, on ``meta``."""
    from stillmotion.memory.estimate import latent_frames

    dtype = next(denoiser.parameters()).dtype
    config: Any = getattr(denoiser, "config", None)
    factor = spec.architecture.vae_scale_factor
    frames = latent_frames(spec, num_frames)
    h, w = height // factor, width // factor
    if spec.family == "i2vgen-xl":
        return meta_unet_inputs(denoiser, height, width, num_frames, batch, config.cross_attention_dim)
    if spec.family == "svd":
        return {
            "sample": meta_tensor(dtype, batch, frames, config.in_channels, h, w),
            "timestep": torch.tensor(1.0, device="meta"),
            "encoder_hidden_states": meta_tensor(dtype, batch, 1, config.cross_attention_dim),
            "added_time_ids": meta_tensor(dtype, batch, 3),
        }
    if spec.family == "wan":
        patch = config.patch_size
        expand = _wan_expands_timesteps(spec)  # Wan 2.2 TI2V: one timestep per token
        tokens = frames * (h // patch[1]) * (w // patch[2])
        inputs = {
            "hidden_states": meta_tensor(dtype, batch, config.in_channels, frames, h, w),
            "timestep": meta_tensor(torch.float32, batch, tokens)
            if expand
            else meta_tensor(torch.float32, batch),
            "encoder_hidden_states": meta_tensor(dtype, batch, FAMILY_TEXT_TOKENS["wan"], config.text_dim),
        }
        if config.image_dim is not None:  # Wan 2.1 I2V's CLIP image tokens (Wan 2.2 has none)
            inputs["encoder_hidden_states_image"] = meta_tensor(dtype, batch, CLIP_TOKENS, config.image_dim)
        return inputs
    if spec.family == "ltx":
        tokens = frames * h * w
        text = FAMILY_TEXT_TOKENS["ltx"]
        return {
            "hidden_states": meta_tensor(dtype, batch, tokens, config.in_channels),
            "encoder_hidden_states": meta_tensor(dtype, batch, text, config.caption_channels),
            "timestep": meta_tensor(torch.float32, batch, tokens),
            "encoder_attention_mask": torch.ones(batch, text, device="meta", dtype=torch.bool),
            "num_frames": frames,
            "height": h,
            "width": w,
            "rope_interpolation_scale": (spec.architecture.temporal_compression / 25, factor, factor),
        }
    raise ValueError(f"no meta inputs for family {spec.family!r}")
