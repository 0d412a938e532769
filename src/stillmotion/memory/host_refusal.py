"""The refusal when the device could run a request but host memory (RAM) cannot hold any plan for it.

It says what the plans for this card need, what the machine has, the smallest machine (card and host) that
some plan fits, and, for a model that takes a GGUF transformer, what a typical 4-bit file would need.
Pure: the planner (memory/plan.py) hands in the plans it built.
"""

from __future__ import annotations

from dataclasses import dataclass

from stillmotion.errors import CannotFit
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.types import ESTIMATE_MARGIN, GIB, MemoryPlan, RequestShape

# A typical 4-bit GGUF transformer (Q4_K_M): about 4.5 bits a weight with its scales (llama.cpp's figures).
NOMINAL_Q4_BITS_PER_WEIGHT = 4.5


@dataclass(frozen=True)
class NominalQuantized:
    """A 4-bit GGUF file of ``params`` weights that the user does not have yet: for the refusal's hint."""

    params: int

    @property
    def label(self) -> str:
        return f"GGUF Q4_K (nominal, {NOMINAL_Q4_BITS_PER_WEIGHT:g} bits a weight)"

    def weight_bytes(self, dtype: str) -> int:
        return int(self.params * NOMINAL_Q4_BITS_PER_WEIGHT / 8)


def host_need_gib(plan: MemoryPlan) -> float:
    """The host memory ``plan`` needs, margin included (0 when it has no estimate)."""
    if plan.estimate is None or plan.estimate.host is None:
        return 0.0
    return plan.estimate.host.peak_gib * ESTIMATE_MARGIN


def device_need_gib(plan: MemoryPlan) -> float:
    """The device memory ``plan`` needs, margin included."""
    return 0.0 if plan.estimate is None else plan.estimate.peak_reserved_gib * ESTIMATE_MARGIN


def host_memory_refusal(
    request: RequestShape,
    budget: DeviceBudget,
    on_device: list[MemoryPlan],
    plans: list[MemoryPlan],
    *,
    quantized_need_gib: float | None = None,
    int8_plan: MemoryPlan | None = None,
) -> CannotFit:
    """``on_device``: the plans that fit the device (none fits the host); ``plans``: every plan built;
    ``int8_plan``: the int8-storage plan that would fit were approximate savings allowed, if any."""
    least = min(on_device, key=host_need_gib)
    smallest = min(plans, key=lambda plan: host_need_gib(plan) + device_need_gib(plan))
    available = budget.host_free_bytes / GIB
    details: dict[str, object] = {
        "needed_host_gib": round(host_need_gib(least), 2),
        "host_available_gib": round(available, 2),
        "budget_gib": round(budget.budget_bytes / GIB, 2),
        "rung": least.rung,
        "smallest_machine": {
            "gpu_gib": round(device_need_gib(smallest), 2),
            "host_gib": round(host_need_gib(smallest), 2),
            "rung": smallest.rung,
        },
    }
    assert least.estimate is not None and least.estimate.host is not None
    host = least.estimate.host
    message = (
        f"{request.width}x{request.height} x {request.num_frames} frames needs at least "
        f"{host_need_gib(least):.2f} GiB of host memory (RAM) with the plan that fits this "
        f"{budget.budget_bytes / GIB:.2f} GiB budget ({least.rung}: {host.load_gib:.1f} GiB of weights "
        f"loaded, {host.runtime_gib:.1f} GiB runtime, {ESTIMATE_MARGIN:.2f}x margin), but this machine has "
        f"{available:.2f} GiB available. Smallest machine any plan fits: a card with "
        f"{device_need_gib(smallest):.1f} GiB free and {host_need_gib(smallest):.1f} GiB of host memory "
        f"({smallest.rung})."
    )
    if quantized_need_gib is not None:
        details["quantized_host_gib"] = round(quantized_need_gib, 2)
        verdict = "which fits" if quantized_need_gib <= available else "still more than this machine has"
        message += (
            " A 4-bit GGUF transformer file (transformer_gguf, APPROXIMATE) would need about "
            f"{quantized_need_gib:.1f} GiB of host memory on this card, {verdict}."
        )
    if int8_plan is not None:
        details["fits_with_int8"] = {"rung": int8_plan.rung, "host_gib": round(host_need_gib(int8_plan), 2)}
        message += (
            f" With approximate savings allowed (--allow-approximate, or STILLMOTION_ALLOW_APPROXIMATE=1 for "
            f"the service), int8 weights would fit: {int8_plan.rung}, {host_need_gib(int8_plan):.1f} GiB of "
            "host memory."
        )
    message += " Free host memory, or plan for another machine with --gpu-gb and --host-gb."
    return CannotFit(message, details=details)
