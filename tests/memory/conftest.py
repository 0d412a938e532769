"""Shared fixtures: the tiny I2VGen-XL (real diffusers/transformers classes, random weights), inputs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from stillmotion.models.tiny import CROSS_ATTENTION_DIM, build_tiny_components


@pytest.fixture
def tiny() -> dict[str, Any]:
    """A fresh copy of the tiny model's four networks (tests may hook, cast and move them)."""
    return copy.deepcopy(_tiny_once_cache())


_CACHE: dict[str, Any] = {}


def _tiny_once_cache() -> dict[str, Any]:
    if not _CACHE:
        components = build_tiny_components(seed=0)
        _CACHE.update({name: components[name] for name in ("unet", "vae", "text_encoder", "image_encoder")})
    return _CACHE


@pytest.fixture
def unet_inputs() -> dict[str, torch.Tensor]:
    """One batch-2 (guidance) UNet call: 4 frames of a 16x16 latent (128x128 pixels)."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "sample": randn(2, 4, 4, 16, 16),
        "timestep": torch.tensor(500),
        "fps": torch.tensor([8, 8]),
        "image_latents": randn(2, 4, 4, 16, 16),
        "image_embeddings": randn(2, CROSS_ATTENTION_DIM),
        "encoder_hidden_states": randn(2, 77, CROSS_ATTENTION_DIM),
    }


def run_unet(unet: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = unet(
            inputs["sample"],
            inputs["timestep"],
            fps=inputs["fps"],
            image_latents=inputs["image_latents"],
            image_embeddings=inputs["image_embeddings"],
            encoder_hidden_states=inputs["encoder_hidden_states"],
            return_dict=False,
        )[0]
    assert isinstance(out, torch.Tensor)
    return out
