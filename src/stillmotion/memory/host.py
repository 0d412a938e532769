"""Host memory of a plan: what the process holds in RAM while it loads, places and runs. Pure: no torch.

The engine loads each component with ``from_pretrained`` into host memory, in the plan's dtype, before the
plan places any of them (engine ``_load_and_place``, memory/apply.py), so every plan first holds all the
weights at once. What the host keeps afterwards depends on the placement:

    resident            nothing (every weight on the device); released encoders come back to the host
    model_offload       every model but the one on the device (accelerate hooks move whole models)
    group_offload       every model (diffusers group offloading keeps the host copy); with CUDA streams
                        each copy is pinned when the plan is applied, and until a layer first runs its old
                        pageable copy is still there: twice the weights, unless the plan pins on the fly
                        (diffusers' ``low_cpu_mem_usage=True``: one copy, each group pinned as it is
                        loaded, which costs time every step: ``PIN_ON_THE_FLY_S_PER_GIB``)
    sequential_offload  every model (accelerate's ``cpu_offload`` keeps the host state dict)

plus the decoded video (float32 frames and their uint8 copy for the encoder) and the runtime before any
weight (``HOST_RUNTIME_GIB``). Weights are counted as anonymous memory: a memory-mapped safetensors file
whose tensors need no conversion can make the true load figure lower, never higher.

On a CPU the device is the host, so the device estimate already is the host figure and this module's
figure is not checked separately (``plan.fits``).
"""

from __future__ import annotations

from collections.abc import Mapping

from stillmotion.memory.types import GIB, HostEstimate, MemoryPlan, Placement, RequestShape

# ASSUMED (not measured here: no GPU): a CUDA PyTorch process's resident size before any weight (Python,
# torch, diffusers, the CUDA libraries' host side); typically 2-3 GiB, the upper end taken.
HOST_RUNTIME_GIB = 3.0
# ASSUMED: seconds per GiB to pin a group's weights on the fly (page-locked copy at ~12 GiB/s).
PIN_ON_THE_FLY_S_PER_GIB = 0.08
# float32 frames out of the VAE plus their uint8 copy for the video encoder: bytes per pixel-channel.
DECODED_FRAME_BYTES = 4 + 1
ENCODER_ROLES = ("text_encoder", "image_encoder")


def decoded_video_gib(request: RequestShape) -> float:
    """The decoded video in host memory (float32 frames and the uint8 copy the encoder writes)."""
    return request.num_frames * 3 * request.height * request.width * DECODED_FRAME_BYTES / GIB


def host_estimate(
    request: RequestShape, plan: MemoryPlan, weights: Mapping[str, float], *, loaded: Mapping[str, float]
) -> HostEstimate:
    """Peak host memory of ``plan``: ``weights`` are each role's GiB as the plan stores them (fp8 included),
    ``loaded`` as ``from_pretrained`` brings them in (before any fp8 cast); LoRA files load with the model."""
    lora = request.lora_bytes / GIB
    load = sum(loaded.values()) + lora
    total = sum(weights.values()) + lora
    present = [gib for gib in weights.values() if gib > 0]
    if plan.placement is Placement.RESIDENT:
        held = sum(weights[role] for role in ENCODER_ROLES) if plan.release_encoders else 0.0
    elif plan.placement is Placement.MODEL_OFFLOAD:
        held = total - min(present, default=0.0)  # the smallest model is the one on the device, at best
    else:
        held = total
    # Group offload pins every host copy up front (CUDA streams) unless the plan pins on the fly; while it
    # applies, the old pageable copies are still there.
    pinned = total if plan.placement is Placement.GROUP_OFFLOAD and not plan.pin_on_the_fly else 0.0
    return HostEstimate(
        runtime_gib=HOST_RUNTIME_GIB,
        load_gib=load,
        place_gib=total + pinned,
        run_gib=held,
        pinned_gib=pinned,
        video_gib=decoded_video_gib(request),
    )


def pin_on_the_fly_s_per_step(plan: MemoryPlan, denoiser_gib: float) -> float:
    """Seconds each step spends pinning the denoiser's groups when the plan pins on the fly."""
    if plan.placement is not Placement.GROUP_OFFLOAD or not plan.pin_on_the_fly:
        return 0.0
    return denoiser_gib * PIN_ON_THE_FLY_S_PER_GIB
