"""Estimator: the peak GPU memory of a request under a plan, per phase, from the model's facts alone.

Pure arithmetic over ``ModelSpec.params`` (bytes per dtype), ``ModelSpec.memory`` (MemoryFacts) and the
request's shape; no torch, no weights. For each phase (encode, denoise, decode):

    allocated = weights on the device + activations (+ the denoising loop's small extras)
    reserved  = allocated x reserved_ratio_expandable               (expandable segments on: the engine's)
              = weights + activations x reserved_act_ratio + extra    (off: the stock diffusers setting)

Denoiser (UNet or transformer) activations are linear in latent elements (batch x latent frames x latent
pixels), halved by running the two guidance halves one after the other, and cut to
``denoiser_ff_floor_fraction`` by feed-forward chunking once the chunk cap is small enough. Weights are
counted per role (denoiser, vae, text_encoder, image_encoder; a family without one counts 0). docs/memory.md
has the derivation and the calibration error table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from stillmotion.memory import experts, host
from stillmotion.memory.types import (
    GIB,
    GroupOffloadType,
    MemoryEstimate,
    MemoryPlan,
    PhaseEstimate,
    Placement,
    RequestShape,
)
from stillmotion.memory.weight_formats import (
    BYTES_PER_PARAM,
    INT8_STEP_FACTOR,
    QuantizedWeights,
    weight_bytes,
)
from stillmotion.models.memory_facts import DecodeChunking
from stillmotion.models.registry import INT8_ROLES, ModelSpec

MIB = 1024**2
# The step count the expected total time is given for (the model's default and the targets).
REFERENCE_STEPS = 50
ENCODERS = ("text_encoder", "image_encoder")
DENOISERS = (
    "denoiser",
    "denoiser_2",
)  # the second: a two-expert model's low-noise expert (memory/experts.py)
ROLES = (*DENOISERS, "vae", *ENCODERS)


def act_scale(dtype: str) -> float:
    """Activation bytes relative to the 16-bit facts."""
    return BYTES_PER_PARAM[dtype] / 2


def latent_frames(spec: ModelSpec, num_frames: int) -> int:
    """Frames of the latent video: a causal VAE packs ``temporal_compression`` frames after the first."""
    step = spec.architecture.temporal_compression
    return num_frames if step == 1 else (num_frames - 1) // step + 1


def latent_tokens(spec: ModelSpec, request: RequestShape, batch: int) -> int:
    """Latent elements of one denoiser call: batch x latent frames x latent height x latent width."""
    factor = spec.architecture.vae_scale_factor
    frames = latent_frames(spec, request.num_frames)
    return batch * frames * (request.height // factor) * (request.width // factor)


def guidance_batch(request: RequestShape, split_guidance: bool) -> int:
    """Rows of one denoiser call: 2 with classifier-free guidance unless the halves run one by one."""
    return 1 if split_guidance or request.guidance_scale <= 1.0 else 2


def denoiser_activation_gib(
    spec: ModelSpec, request: RequestShape, *, batch: int, ff_chunk_mib: int | None, dtype: str = "float16"
) -> float:
    """Allocated activation peak of one denoiser call (GiB)."""
    facts = spec.memory
    tokens = latent_tokens(spec, request, batch)
    full = facts.denoiser_act_gib_per_unit * tokens
    if ff_chunk_mib is None or facts.denoiser_ff_proj_width == 0:
        return full * act_scale(dtype)
    # The widest feed-forward sets the peak until its chunks are small enough, then the floor does.
    proj_gib = tokens * facts.denoiser_ff_proj_width * 2 / GIB
    out_gib = tokens * facts.denoiser_ff_out_width * 2 / GIB
    chunks = max(1, math.ceil(proj_gib * GIB / (ff_chunk_mib * MIB)))
    if chunks == 1:
        chunked = full
    else:
        # GEGLU holds its projection (P) plus gelu(gate) and the product (P/2 each): 2P unchunked, 2P/n
        # chunked, plus the preallocated output.
        chunked = full - 2 * proj_gib + 2 * proj_gib / chunks + out_gib
    return max(chunked, facts.denoiser_ff_floor_fraction * full) * act_scale(dtype)


def ff_chunk_mib_for(spec: ModelSpec, request: RequestShape, *, batch: int) -> int:
    """Largest power-of-two cap (MiB) bringing the denoiser to its chunked floor: fewest, largest chunks."""
    full = spec.memory.denoiser_act_gib_per_unit * latent_tokens(spec, request, batch)
    floor_mib = spec.memory.denoiser_ff_floor_fraction * full * 1024
    # 2 x cap (projection + gelu + product of one chunk) must sit under the floor with room for the rest.
    cap = max(1, int(floor_mib / 4))
    return int(2 ** math.floor(math.log2(cap)))


def vae_decode_gib(spec: ModelSpec, request: RequestShape, chunk: int, *, tiling: bool, dtype: str) -> float:
    facts = spec.memory
    pixels = request.height * request.width
    if tiling and facts.vae_tile_side:
        pixels = min(pixels, facts.vae_tile_side**2)
    if facts.decode_chunking is DecodeChunking.WHOLE_VIDEO:
        chunk = request.num_frames  # the VAE decodes the whole latent video; the plan's chunk does not apply
    single = facts.vae_decode_single_gib_per_pixel * pixels
    per_frames = facts.vae_decode_gib_per_pixel_frame * pixels * chunk
    act = max(single, facts.vae_decode_fixed_gib_per_pixel * pixels + per_frames)
    # The decoded frames are gathered on the device (3 channels, in the VAE's dtype).
    frames = request.num_frames * 3 * request.height * request.width * BYTES_PER_PARAM[dtype] / GIB
    return act * act_scale(dtype) + frames


def _weights_gib(
    spec: ModelSpec,
    role: str,
    dtype: str,
    *,
    fp8: bool = False,
    quantized: Mapping[str, QuantizedWeights] | None = None,
    int8: bool = False,
) -> float:
    """Weights of ``role``: a quantized file's own bytes (a denoiser's, ``quantized`` by role), int8
    storage (its linear layers), else per parameter."""
    params = spec.params.bytes(role, 1)
    denoiser = role in DENOISERS
    file = (quantized or {}).get(role)
    linear = getattr(spec.params.linear, role) if int8 and role in INT8_ROLES else None
    return weight_bytes(params, dtype, fp8=fp8 and denoiser, quantized=file, int8_linear=linear) / GIB


def quantized_files(request: RequestShape) -> dict[str, QuantizedWeights]:
    """The request's quantized denoiser files by role ("denoiser", a second expert's "denoiser_2")."""
    files = {"denoiser": request.quantized_denoiser, "denoiser_2": request.quantized_denoiser_2}
    return {role: file for role, file in files.items() if file is not None}


def _stored_weights_gib(
    spec: ModelSpec, plan: MemoryPlan, role: str, quantized: Mapping[str, QuantizedWeights], *, fp8: bool
) -> float:
    """All of ``role``'s weights as the plan stores them (its dtype, the VAE's, fp8, int8 or a quantized
    file)."""
    dtype = plan.effective_vae_dtype if role == "vae" else plan.dtype
    return _weights_gib(spec, role, dtype, fp8=fp8, quantized=quantized, int8=plan.int8_weights)


def _placed_weights_gib(
    spec: ModelSpec, plan: MemoryPlan, role: str, quantized: Mapping[str, QuantizedWeights]
) -> float:
    """Weights of ``role`` on the device while it runs, under the plan's placement."""
    full = _stored_weights_gib(spec, plan, role, quantized, fp8=plan.fp8_weights)
    facts = spec.memory
    leaf = facts.group_leaf_resident_gib
    if role in ENCODERS and facts.encoder_leaf_resident_gib:
        leaf = facts.encoder_leaf_resident_gib
    if plan.placement is Placement.GROUP_OFFLOAD:
        if plan.group_offload_type is GroupOffloadType.BLOCK_LEVEL and role in DENOISERS:
            return full * facts.group_block_resident_fraction
        return min(full, leaf)
    if plan.placement is Placement.SEQUENTIAL_OFFLOAD:
        return min(full, leaf / 2)  # one layer at a time, no prefetch
    return full


def phase_estimate(
    spec: ModelSpec, weights: float, denoiser_act: float, vae_act: float, *, expandable: bool
) -> PhaseEstimate:
    facts = spec.memory
    act = denoiser_act + vae_act
    weights += facts.workspace_gib
    allocated = weights + act
    if expandable:
        reserved = allocated * facts.reserved_ratio_expandable
    else:
        reserved = (
            weights
            + denoiser_act * facts.reserved_act_ratio_denoiser
            + vae_act * facts.reserved_act_ratio_vae
            + facts.reserved_extra_gib
        )
    return PhaseEstimate(
        weights_gib=weights, activations_gib=act, allocated_gib=allocated, reserved_gib=reserved
    )


def estimate_memory(
    spec: ModelSpec, request: RequestShape, plan: MemoryPlan, *, expandable_segments: bool = True
) -> MemoryEstimate:
    """Predicted peak allocated and reserved GiB per phase, and the expected speed, of ``plan``."""
    facts = spec.memory
    dtype, vae_dtype = plan.dtype, plan.effective_vae_dtype
    quantized = quantized_files(request)
    w = {name: _placed_weights_gib(spec, plan, name, quantized) for name in ROLES}
    pixels = request.height * request.width

    # 1. encode: two prompts through the text encoder, the image through the image encoder and the VAE.
    vae_encode = facts.vae_encode_gib_per_pixel + facts.vae_encode_gib_per_pixel_frame * request.num_frames
    encode_act = facts.encoder_act_gib * act_scale(dtype) + vae_encode * pixels * act_scale(vae_dtype)
    encoders = max(w["text_encoder"], w["image_encoder"])
    if plan.placement is Placement.RESIDENT and not plan.release_encoders:
        encode_weights = sum(w.values())
    elif plan.placement is Placement.RESIDENT:
        # The encoders' offload hooks bring in one at a time; the denoiser(s) and the VAE stay.
        encode_weights = w["denoiser"] + w["denoiser_2"] + w["vae"] + encoders
    else:
        # Offload hooks bring in one model at a time (the denoiser not at all), except the VAE encode, which
        # runs while the image encoder is still loaded.
        encode_weights = max(w["text_encoder"], w["image_encoder"] + w["vae"])
    encode = phase_estimate(spec, encode_weights, 0.0, encode_act, expandable=expandable_segments)

    # 2. denoise: the denoiser at its activation peak.
    batch = guidance_batch(request, plan.split_guidance)
    act = denoiser_activation_gib(spec, request, batch=batch, ff_chunk_mib=plan.ff_chunk_size, dtype=dtype)
    act += act * facts.loop_extra_fraction + facts.loop_extra_gib
    # Both experts of a two-expert model when resident, else one at a time (memory/experts.py).
    denoisers = experts.denoising_weights_gib(spec, plan, w["denoiser"], w["denoiser_2"])
    lora = experts.lora_weights_gib(request, BYTES_PER_PARAM[dtype])
    lora_act = experts.lora_activation_gib(spec, request, plan, latent_tokens(spec, request, batch))
    act += lora_act * act_scale(dtype)
    if plan.placement is Placement.MODEL_OFFLOAD:
        denoise_weights = denoisers + (0.0 if plan.release_encoders else w["vae"])
    elif plan.placement is Placement.RESIDENT:
        denoise_weights = denoisers + w["vae"]
        if not plan.release_encoders:
            denoise_weights += w["text_encoder"] + w["image_encoder"]
    else:  # group or sequential offload: idle models are off the device
        denoise_weights = denoisers
    denoise_weights += lora
    denoise = phase_estimate(spec, denoise_weights, act, 0.0, expandable=expandable_segments)

    # 3. decode: the VAE on ``decode_chunk_size`` frames at once (or the whole video).
    chunk = plan.decode_chunk_size
    decode_act = vae_decode_gib(spec, request, chunk, tiling=plan.vae_tiling, dtype=vae_dtype)
    decode_weights = denoise_weights if plan.placement is Placement.RESIDENT else w["vae"]
    decode = phase_estimate(spec, decode_weights, 0.0, decode_act, expandable=expandable_segments)

    # 4. host memory: what loading, placing and running keep in RAM (memory/host.py).
    # fp8 storage casts after loading (the load holds 16-bit weights); int8 quantizes while loading.
    stored = {role: _stored_weights_gib(spec, plan, role, quantized, fp8=plan.fp8_weights) for role in ROLES}
    loaded = {role: _stored_weights_gib(spec, plan, role, quantized, fp8=False) for role in ROLES}
    host_memory = host.host_estimate(request, plan, stored, loaded=loaded)

    s_per_step, total_s = expected_time(spec, request, plan)
    baseline = expected_time(spec, request, _resident_like(plan))[1]
    switch = experts.expert_switch_s(spec, request, plan, w["denoiser_2"])
    split = experts.switch_steps(spec, request)
    two = experts.two_experts(spec)
    return MemoryEstimate(
        encode=encode,
        denoise=denoise,
        decode=decode,
        expandable_segments=expandable_segments,
        s_per_step=s_per_step,
        slowdown=total_s / baseline if baseline > 0 else 1.0,
        expected_total_s=total_s + (request.num_inference_steps - REFERENCE_STEPS) * s_per_step + switch,
        expert_switch_s=switch,
        switch_after_step=split[0] if split is not None and all(split) else None,
        lora_gib=lora + lora_act,
        experts_note=experts.host_note(
            spec, plan, _weights_gib(spec, "denoiser", dtype, quantized=quantized, int8=plan.int8_weights)
        )
        if two
        else "",
        host=host_memory,
    )


def _resident_like(plan: MemoryPlan) -> MemoryPlan:
    from dataclasses import replace

    return replace(
        plan,
        placement=Placement.RESIDENT,
        group_offload_type=None,
        ff_chunk_size=None,
        split_guidance=False,
        fp8_weights=False,
        int8_weights=False,
        vae_tiling=False,
        decode_chunk_approximate=False,
        decode_chunk_size=1,
    )


def expected_time(spec: ModelSpec, request: RequestShape, plan: MemoryPlan) -> tuple[float, float]:
    """(seconds per step, seconds for REFERENCE_STEPS steps) on the reference GPU (H100, fp16, eager)."""
    facts = spec.memory
    tokens = latent_tokens(spec, request, guidance_batch(request, False))
    step = facts.step_s_fixed + facts.step_s_per_unit * tokens
    if plan.split_guidance and request.guidance_scale > 1.0:
        step *= facts.split_guidance_step_factor
    if plan.ff_chunk_size is not None:
        step *= facts.ff_chunk_step_factor
    if plan.fp8_weights:
        step *= facts.fp8_step_factor
    if plan.int8_weights:
        step *= INT8_STEP_FACTOR
    fixed = facts.pre_s + facts.decode_s_per_pixel_frame * request.height * request.width * request.num_frames
    if plan.placement is Placement.MODEL_OFFLOAD:
        fixed += facts.model_offload_fixed_s
    elif plan.placement is Placement.GROUP_OFFLOAD:
        leaf = plan.group_offload_type is not GroupOffloadType.BLOCK_LEVEL
        step += facts.group_leaf_step_overhead_s if leaf else facts.group_block_step_overhead_s
        denoiser = _stored_weights_gib(spec, plan, "denoiser", quantized_files(request), fp8=plan.fp8_weights)
        step += host.pin_on_the_fly_s_per_step(plan, denoiser)
    elif plan.placement is Placement.SEQUENTIAL_OFFLOAD:
        step += facts.sequential_step_overhead_s
    return step, fixed + REFERENCE_STEPS * step
