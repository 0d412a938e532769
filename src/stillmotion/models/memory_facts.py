"""Measured memory facts of a model family, used by the memory estimator without loading weights.

Values come from ../shared/measurements (H100, fp16, diffusers 0.42.1) and our own runs; see
docs/memory.md for how each number was derived.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryFacts:
    """Per-family coefficients of the activation-memory model (GiB, fp16)."""

    # UNet activation peak per (batch x frames x latent pixel), full feed-forward, no chunking.
    unet_act_gib_per_unit: float
    # VAE decode activation peak per decoded frame per output pixel.
    vae_decode_gib_per_pixel_frame: float
    # VAE encode activation peak per input pixel.
    vae_encode_gib_per_pixel: float
