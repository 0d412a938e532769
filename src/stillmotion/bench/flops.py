"""Floating point work of one denoising step, counted on the ``meta`` device (no GPU, no memory, no weights).

``torch.utils.flop_counter.FlopCounterMode`` counts the matrix multiplications, convolutions and attention
of one forward of the full-size I2VGen-XL UNet built from its shipped config on ``meta``
(bench/meta_device.py).
Counts depend only on shapes, so they are computed once per (size, frames, batch) in the benchmark's parent
process and cached. One step is one UNet call on the guidance batch of 2, or two batch-1 calls when the plan
splits guidance: the same work. Plans that chunk the feed-forwards or offload weights do the same work too,
so every recipe is put on one axis: ``mfu = tflop_per_step / (per_step_s * PEAK_TFLOPS)``.

Counted at 512x512, 768x768 and 1024x1024 (16 frames, batch 2): 41.9, 104.9 and 213.8 TFLOP, the figures of
../shared/measurements/README.md (tests/bench/test_flops.py).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from stillmotion.bench.meta_device import denoiser_inputs, meta_networks, meta_unet, meta_unet_inputs

# Peak dense bf16/fp16 matrix throughput used for MFU: ~790 TFLOP/s, *measured* on the H100 80GB HBM3 this
# project benchmarks on (../shared/measurements/README.md, "the measured bf16 matrix peak of that card";
# BENCHMARKING.md 5.1 uses the same 790e12). It is below the datasheet's 989 TFLOP/s (dense, SXM), so MFU
# here is against what the card really reaches. The H200 has the same compute die: same constant.
PEAK_TFLOPS = 790.0
# Models whose network is the full-size I2VGen-XL UNet the count is for.
FULL_SIZE_MODELS = frozenset({"i2vgen-xl", "i2vgen-xl-random"})
CROSS_ATTENTION_DIM = 1024  # I2VGen-XL's text / image embedding width (unet config)


def call_flops(network: torch.nn.Module, inputs: dict[str, Any]) -> int:
    """FLOPs of one forward of ``network`` (on ``meta``) with the keyword arguments ``inputs``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(**inputs, return_dict=False)
    return int(counter.get_total_flops())


@functools.cache
def _unet() -> torch.nn.Module:
    return meta_unet()


@functools.cache
def unet_call_flops(height: int, width: int, num_frames: int, batch: int) -> int:
    """FLOPs of one full-size I2VGen-XL UNet forward at ``height x width`` pixels (latent / 8); cached."""
    unet = _unet()
    return call_flops(unet, meta_unet_inputs(unet, height, width, num_frames, batch, CROSS_ATTENTION_DIM))


def tflop_per_step(height: int, width: int, num_frames: int, guidance_scale: float) -> float:
    """TFLOP of one denoising step: the guidance batch of 2 (or split into two batch-1 calls), else 1."""
    batch = 2 if guidance_scale > 1.0 else 1
    return unet_call_flops(height, width, num_frames, batch) / 1e12


def mfu(tflop: float | None, per_step_s: float | None, peak_tflops: float = PEAK_TFLOPS) -> float | None:
    """Model FLOP utilisation: achieved TFLOP/s over the card's measured peak; None without a time."""
    if tflop is None or not per_step_s or per_step_s <= 0:
        return None
    return tflop / (per_step_s * peak_tflops)


@functools.cache
def _family_denoiser(model: str) -> torch.nn.Module:
    from stillmotion.models.adapters import family_of
    from stillmotion.models.registry import get_spec

    spec = get_spec(model)
    networks = meta_networks(spec, getattr(torch, spec.half_dtype))
    return networks[family_of(spec).roles.denoiser]


@functools.cache
def family_tflop_per_step(
    model: str, height: int, width: int, num_frames: int, guidance_scale: float
) -> float:
    """TFLOP of one denoising step of any full-size family (Wan, SVD, LTX) counted on ``meta``; cached."""
    from stillmotion.models.registry import get_spec

    denoiser = _family_denoiser(model)
    batch = 2 if guidance_scale > 1.0 else 1
    inputs = denoiser_inputs(get_spec(model), denoiser, height, width, num_frames, batch)
    return call_flops(denoiser, inputs) / 1e12
