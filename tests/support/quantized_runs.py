"""Shared by the quantized-weights tests (GGUF files, int8 storage): the tiny Wan 2.1 I2V request they run,
and the PSNR of a quantized run's frames against the 16-bit-weights run's."""

from __future__ import annotations

import math
from typing import Any

import torch

from stillmotion.engine.request import GenerationRequest

MODEL = "tiny-wan2.1-i2v"


def wan_request(**changes: Any) -> GenerationRequest:
    """A small tiny-Wan job (5 frames, 3 steps, a fixed seed); ``changes`` replace its fields."""
    fields: dict[str, Any] = {
        "prompt": "a lighthouse in the fog",
        "model": MODEL,
        "height": 48,
        "width": 80,
        "num_frames": 5,
        "num_inference_steps": 3,
        "guidance_scale": 4.0,
        "seed": 7,
    }
    return GenerationRequest(**(fields | changes))


def psnr(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of frames in [0, 1]; inf for identical frames."""
    mse = float(torch.mean((frames.float() - reference.float()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
