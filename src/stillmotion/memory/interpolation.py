"""The interpolation phase's memory plan. Pure: request shape + interpolator + budget -> plan, no torch.cuda.

Interpolation runs after the video is decoded and after the generator has left the device (the engine resets
its placement first, so its weights are back in host memory), so it is planned against the whole budget the
generation was planned against, like any phase:

- ``rife``: the network's weights plus ``RIFE_ACT_VALUES_PER_PIXEL`` x padded pixels per in-between frame, for
  a batch of in-between frames computed at once. The planner picks the largest batch (a power of two up to
  MAX_BATCH) that fits; if not even one frame fits on the device it moves the network to the CPU when host
  memory holds it (adapts), and refuses with ``CannotFit`` otherwise.
- ``minterpolate``: ffmpeg on the CPU; host memory for the output frames and the filter's working frames.

Only the planner decides; engine/interpolate.py carries the plan out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stillmotion.errors import CannotFit
from stillmotion.media.interpolation import Interpolator
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import ESTIMATE_MARGIN, HALF_PRECISION_DEVICES
from stillmotion.memory.types import GIB
from stillmotion.memory.weight_formats import BYTES_PER_PARAM
from stillmotion.models.rife import PAD_MULTIPLE, parameter_count

MAX_BATCH = 8
# PRIOR (not yet measured on a GPU): the tensors alive at the finest scale of one in-between frame, counted
# from the network (both frames padded, timestep, flow, mask, both warps and their sampling grids, the last
# block's input and upsampled output: about 70 values per pixel), rounded up for the allocator's slack.
RIFE_ACT_VALUES_PER_PIXEL = 96
RIFE_WORKSPACE_GIB = 0.1  # cuDNN convolution workspace
# minterpolate keeps a few frames for motion search (current, neighbours, motion vectors) besides its output.
MINTERPOLATE_WORKING_FRAMES = 8


@dataclass(frozen=True)
class InterpolationPlan:
    """How the interpolation phase runs: where, in what precision, how many in-between frames at once."""

    interpolator: Interpolator
    factor: int
    device_type: str  # where it runs ("cpu" for minterpolate, or when the device cannot hold RIFE)
    dtype: str
    batch_size: int  # in-between frames computed at once (RIFE)
    estimate_gib: float  # peak memory of the phase, before ESTIMATE_MARGIN
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "interpolator": self.interpolator.value,
            "factor": self.factor,
            "device_type": self.device_type,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "estimate_gib": round(self.estimate_gib, 3),
            "reason": self.reason,
        }


def rife_estimate_gib(height: int, width: int, batch_size: int, dtype: str) -> float:
    """Peak GiB of RIFE for ``batch_size`` in-between frames at once: weights + activations + workspace."""
    padded = math.ceil(height / PAD_MULTIPLE) * PAD_MULTIPLE * math.ceil(width / PAD_MULTIPLE) * PAD_MULTIPLE
    element = BYTES_PER_PARAM[dtype]
    weights = parameter_count() * element
    activations = RIFE_ACT_VALUES_PER_PIXEL * padded * element * batch_size
    return (weights + activations) / GIB + RIFE_WORKSPACE_GIB


def minterpolate_estimate_gib(height: int, width: int, num_frames: int, factor: int) -> float:
    """Host GiB of the ffmpeg path: the output frames (RGB) plus the filter's working frames (YUV 4:4:4)."""
    frame_bytes = height * width * 3
    return (num_frames * factor + MINTERPOLATE_WORKING_FRAMES) * frame_bytes / GIB


def plan_interpolation(
    interpolator: Interpolator,
    factor: int,
    height: int,
    width: int,
    num_frames: int,
    budget: DeviceBudget,
) -> InterpolationPlan:
    """The interpolation phase's plan on ``budget``, or ``CannotFit`` saying what would."""
    if interpolator is Interpolator.MINTERPOLATE:
        need = minterpolate_estimate_gib(height, width, num_frames, factor)
        host = _host_gib(budget)
        if host is not None and need * ESTIMATE_MARGIN > host:
            raise _refusal(interpolator, need, host, "host memory", width, height)
        return InterpolationPlan(
            interpolator,
            factor,
            "cpu",
            "uint8",
            1,
            need,
            f"ffmpeg minterpolate on the CPU, {need:.2f} GiB of host memory",
        )

    dtype = "float16" if budget.device_type in HALF_PRECISION_DEVICES else "float32"  # RIFE runs in fp16
    in_between = max(1, (num_frames - 1) * (factor - 1))
    batch = _largest_batch(height, width, dtype, budget.budget_bytes / GIB, limit=min(MAX_BATCH, in_between))
    if batch is not None:
        need = rife_estimate_gib(height, width, batch, dtype)
        where = f"on the {budget.device_type} after the generator is released"
        reason = f"RIFE {where}, {batch} frame(s) at once, {need:.2f} GiB x {ESTIMATE_MARGIN:.2f} margin"
        return InterpolationPlan(
            interpolator, factor, budget.device_type, dtype, batch, need, reason + _against(budget)
        )
    host = _host_gib(budget)
    cpu_batch = _largest_batch(height, width, "float32", host if host is not None else math.inf, limit=1)
    if budget.device_type != "cpu" and cpu_batch is not None:
        need = rife_estimate_gib(height, width, 1, "float32")
        budget_gib = budget.budget_bytes / GIB
        reason = f"RIFE on the CPU: one frame needs more than the {budget_gib:.2f} GiB device budget"
        return InterpolationPlan(interpolator, factor, "cpu", "float32", 1, need, reason)
    raise _refusal(
        interpolator,
        rife_estimate_gib(height, width, 1, dtype),
        budget.budget_bytes / GIB,
        "budget",
        width,
        height,
    )


def _largest_batch(height: int, width: int, dtype: str, available_gib: float, *, limit: int) -> int | None:
    batch, best = 1, None
    while batch <= limit:
        if rife_estimate_gib(height, width, batch, dtype) * ESTIMATE_MARGIN > available_gib:
            break
        best, batch = batch, batch * 2
    return best


def _host_gib(budget: DeviceBudget) -> float | None:
    """Host memory available, or None when not measured (a fixed budget for another card)."""
    if budget.device_type == "cpu":
        return budget.budget_bytes / GIB
    return budget.host_free_bytes / GIB if budget.host_free_bytes else None


def _against(budget: DeviceBudget) -> str:
    return f" vs {budget.budget_bytes / GIB:.2f} GiB available"


def _refusal(
    interpolator: Interpolator, need_gib: float, have_gib: float, what: str, width: int, height: int
) -> CannotFit:
    other = "minterpolate" if interpolator is Interpolator.RIFE else "a smaller size"
    return CannotFit(
        f"interpolator={interpolator.value} at {width}x{height} needs {need_gib * ESTIMATE_MARGIN:.2f} GiB, "
        f"but the {what} is {have_gib:.2f} GiB; try {other}, or fewer frames.",
        field="interpolator",
        details={"needed_gib": round(need_gib * ESTIMATE_MARGIN, 2), "available_gib": round(have_gib, 2)},
    )
