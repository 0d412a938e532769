"""What two experts and LoRAs add to a plan's estimate. Pure arithmetic, no torch; estimate.py calls these.

Two experts (Wan 2.2 A14B, ``ModelSpec.experts``): ``denoiser`` runs the high-noise steps, ``denoiser_2`` the
low-noise ones (models/experts.py says where the switch falls).

- Resident plans keep both experts on the device for the whole run: twice the denoiser weights.
- Every offloading plan has one expert on the device at a time: model offload moves the whole high-noise
  expert out and the low-noise one in at the switch (accelerate's hooks offload the previous model first, so
  the peak is one expert, never both); group and sequential offload stream the running expert's layers.
- The switch is a phase of its own under model offload: one expert's bytes cross from host memory to the
  device once, at ``HOST_TO_DEVICE_GIB_S`` (PRIOR: pageable copies on PCIe 4/5, no GPU measured it here).
- Host memory: both experts stay in host memory whatever the placement (stillmotion loads whole models;
  disk streaming is the host-memory planner's business, issue 22) — ``host_note`` says so in the plan.

LoRAs (``RequestShape.lora_bytes``): their weights sit with the denoiser they are loaded into, fused or not
(diffusers keeps the A/B matrices to unfuse); unfused (the fp8 rungs, which cannot take a merge) each
adapted layer also computes x·A·B on the side: about one extra projection output of the widest layer at a
time, i.e. the feed-forward projection width per latent element.
"""

from __future__ import annotations

from stillmotion.memory.types import GIB, MemoryPlan, Placement, RequestShape
from stillmotion.models.experts import high_noise_steps
from stillmotion.models.registry import ModelSpec

HOST_TO_DEVICE_GIB_S = 10.0  # PRIOR: one expert (26.6 GiB bf16) crosses in about 2.7 s


def two_experts(spec: ModelSpec) -> bool:
    return spec.experts is not None and spec.params.denoiser_2 > 0


def denoising_weights_gib(spec: ModelSpec, plan: MemoryPlan, denoiser: float, denoiser_2: float) -> float:
    """The denoisers' weights on the device while denoising: both when resident, else the larger one."""
    if plan.placement is Placement.RESIDENT:
        return denoiser + denoiser_2
    return max(denoiser, denoiser_2)


def switch_steps(spec: ModelSpec, request: RequestShape) -> tuple[int, int] | None:
    """(high-noise steps, low-noise steps) of a two-expert model; None for one denoiser."""
    if spec.experts is None:
        return None
    steps = request.num_inference_steps
    high = high_noise_steps(spec.experts, steps, request.flow_shift)
    return high, steps - high


def expert_switch_s(spec: ModelSpec, request: RequestShape, plan: MemoryPlan, denoiser_2_gib: float) -> float:
    """Seconds the switch costs: the low-noise expert loaded under model offload (when both experts run)."""
    split = switch_steps(spec, request)
    if split is None or not all(split) or plan.placement is not Placement.MODEL_OFFLOAD:
        return 0.0
    return denoiser_2_gib / HOST_TO_DEVICE_GIB_S


def lora_weights_gib(request: RequestShape, dtype_bytes: int) -> float:
    """LoRA weights on the device, in the plan's dtype (files are mostly 16-bit)."""
    return request.lora_bytes * dtype_bytes / 2 / GIB


def lora_activation_gib(spec: ModelSpec, request: RequestShape, plan: MemoryPlan, tokens: int) -> float:
    """Unfused LoRAs (fp8 rungs): one side output of the widest projection at a time, 16-bit."""
    if not request.lora_bytes or not plan.fp8_weights:
        return 0.0
    return tokens * spec.memory.denoiser_ff_proj_width * 2 / GIB


def host_note(spec: ModelSpec, plan: MemoryPlan, weight_gib: float) -> str:
    """One line for the plan: where the experts live and how the device sees them."""
    both = f"both experts ({2 * weight_gib:.1f} GiB) are kept in host memory"
    if plan.placement is Placement.RESIDENT:
        return f"two experts: both on the device for the whole run; {both} only while loading"
    if plan.placement is Placement.MODEL_OFFLOAD:
        return f"two experts: one on the device at a time, swapped once at the switch; {both}"
    return f"two experts: the running expert's layers are streamed in; {both}"
