"""The registry of model families: data, not inheritance.

``get_spec(name)`` accepts a registered name, a known Hugging Face repo id, any other ``owner/name`` repo id
(assumed to be an I2VGen-XL fine-tune, checked when loading), or a local folder with a ``model_index.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stillmotion import bounded_json
from stillmotion.errors import UnknownModel
from stillmotion.models.memory_facts import DecodeChunking, MemoryFacts

I2VGENXL_NEGATIVE_PROMPT = (
    "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, "
    "disconnected limbs, Ugly faces, incomplete arms"
)

# Resolution presets: the output area is about side**2 pixels, the input's aspect ratio is kept. "480p" and
# "720p" are the areas of 16:9 frames of that height (480x854, 720x1280), the sizes video models train at.
RESOLUTION_PRESETS: dict[str, int] = {"512p": 512, "480p": 640, "768p": 768, "720p": 960, "1024p": 1024}


@dataclass(frozen=True)
class Defaults:
    """What a request gets for every parameter it leaves out."""

    resolution: str = "512p"
    num_frames: int = 16
    num_inference_steps: int = 50
    guidance_scale: float = 9.0
    fps: int = 8
    negative_prompt: str = I2VGENXL_NEGATIVE_PROMPT
    # LTX-Video's decode options (a timestep-conditioned VAE, 0.9.1 and later); None: the model has none.
    decode_timestep: float | None = None
    decode_noise_scale: float | None = None


@dataclass(frozen=True)
class Limits:
    """The rules a request must keep; ``GenerationRequest.validate`` raises one error per rule."""

    min_frames: int = 8
    max_frames: int = 32
    # num_frames must be frame_step x k + 1: a causal video VAE packs frame_step frames per latent frame after
    # the first (Wan 4, LTX 8); 1 = any count.
    frame_step: int = 1
    min_side: int = 256
    max_side: int = 1536
    max_pixels: int = 1536 * 1024
    # Explicit sizes must be multiples of this: the VAE's downsampling (x the transformer's patch size).
    size_multiple: int = 8
    size_rule: str = "the VAE's downsampling factor"  # why size_multiple, for error messages
    preset_multiple: int = 64  # presets snap to this, so every UNet level divides evenly
    accepts_prompt: bool = True  # False: the model animates the image alone (no text encoder)
    min_inference_steps: int = 1
    steps_rule: str = ""  # why min_inference_steps is above 1, for error messages
    max_inference_steps: int = 500
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 30.0
    min_fps: int = 1
    max_fps: int = 60
    max_prompt_chars: int = 2000


@dataclass(frozen=True)
class LinearWeights:
    """Weights of the layers int8 storage quantizes per role (memory/weight_formats.py, models/int8.py): the
    linear layers (``int8.convertible_weights``: not a diffusers model's float32-kept ones), so the rest of
    each role (a UNet's convolutions, T5's token embedding, norms, biases) keeps the run's dtype. Counted on
    the meta device from the shipped configs (tests/memory/test_int8.py); 0 = not counted (int8 then saves
    nothing in the plan)."""

    denoiser: int = 0
    denoiser_2: int = 0
    text_encoder: int = 0


# The roles int8 storage quantizes (memory/weight_formats.py, models/int8.py): LinearWeights' fields.
INT8_ROLES: tuple[str, ...] = ("denoiser", "denoiser_2", "text_encoder")


@dataclass(frozen=True)
class ComponentParams:
    """Parameter counts per role (exact, counted on the meta device from the shipped configs); 0 = absent."""

    denoiser: int  # the UNet or the transformer (a two-expert model: the high-noise expert)
    vae: int
    text_encoder: int = 0
    image_encoder: int = 0
    denoiser_2: int = 0  # a two-expert model's second (low-noise) expert; 0 = one denoiser
    linear: LinearWeights = LinearWeights()

    def bytes(self, role: str, bytes_per_param: int) -> int:
        return int(getattr(self, role)) * bytes_per_param

    @property
    def total(self) -> int:
        return self.denoiser + self.denoiser_2 + self.vae + self.text_encoder + self.image_encoder


@dataclass(frozen=True)
class Architecture:
    """Shape facts the estimator and the engine need before any weight is loaded."""

    latent_channels: int = 4
    vae_scale_factor: int = 8  # pixels per latent pixel, per side
    temporal_compression: int = 1  # frames per latent frame after the first (1: one latent per frame)
    unet_block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    text_max_length: int = 77


@dataclass(frozen=True)
class TwoExperts:
    """A two-expert model (Wan 2.2 A14B): ``transformer`` denoises the high-noise steps, ``transformer_2`` the
    low-noise ones, switching where the timestep falls below ``boundary_ratio`` x the training timesteps (as
    diffusers' WanImageToVideoPipeline does). ``flow_shift`` is the scheduler's, so the planner can tell at
    which step the switch falls (models/experts.py) without building the scheduler."""

    boundary_ratio: float
    flow_shift: float
    num_train_timesteps: int = 1000


@dataclass(frozen=True)
class FastChoice:
    """A model's "fast" choice: a step-distilled LoRA (per expert for a two-expert model) and the settings its
    model card gives. APPROXIMATE: the video is the distilled LoRA's, not the base model's; labelled so in the
    UI, the CLI and the recipe."""

    label: str  # what the surfaces show, e.g. "Fast (LightX2V Lightning 4-step, approximate)"
    loras: tuple[tuple[str, str], ...]  # (reference, expert: "both", "high" or "low")
    num_inference_steps: int
    guidance_scale: float  # 1.0: the distilled model runs without the guidance batch
    flow_shift: float  # the scheduler shift the LoRA was distilled with
    source: str  # where the settings come from (the LoRA's model card)


@dataclass(frozen=True)
class ModelSpec:
    """One model: where its weights come from, its defaults, limits and memory facts."""

    name: str
    family: str
    repo_id: str | None
    revision: str | None
    local_path: Path | None
    defaults: Defaults
    limits: Limits
    params: ComponentParams
    architecture: Architecture
    memory: MemoryFacts
    description: str = ""
    # Weight variants the repo publishes besides the full-precision files ("fp16": *.fp16.safetensors).
    variants: tuple[str, ...] = ("fp16",)
    # The 16-bit dtype a GPU runs it in: the dtype its weights were published and trained in (T5-family text
    # encoders overflow in float16, so Wan and LTX run in bfloat16).
    half_dtype: str = "float16"
    config_name: str | None = None  # shipped full-size configs: models/configs/<config_name> (random builds)
    tiny: bool = False  # built in memory with random weights, no download
    random_weights: bool = False  # full size, seeded random weights built offline (models/random_full.py)
    aliases: tuple[str, ...] = field(default=())
    # An unregistered owner/name: the family above is a guess until its model_index.json is read
    # (models/repo_spec.find_spec, before a job is queued or run).
    unverified: bool = False
    experts: TwoExperts | None = None  # a two-expert model (Wan 2.2 A14B); None: one denoiser
    fast: FastChoice | None = None  # the step-distilled "fast" choice, where one is published
    # Takes a last frame (diffusers' ``last_image``): the transformer is conditioned on the VAE latents of the
    # first and last frame only (no CLIP image embedding of the pair, which Wan 2.1 I2V would need).
    accepts_last_image: bool = False

    def defaults_for(self, fast: bool) -> Defaults:
        """The defaults a request gets; with ``fast``, the steps and guidance of the fast choice's card."""
        if not fast or self.fast is None:
            return self.defaults
        return replace(
            self.defaults,
            num_inference_steps=self.fast.num_inference_steps,
            guidance_scale=self.fast.guidance_scale,
        )

    @property
    def accepts_loras(self) -> bool:
        """LoRAs are supported for the Wan family (its pipeline's LoRA loader reads them: models/lora.py)."""
        return self.family == "wan"

    @property
    def accepts_gguf(self) -> bool:
        """A GGUF transformer file may replace the transformer (models/gguf.py): Wan and LTX-Video models; a
        two-expert model (Wan 2.2 A14B) takes one per expert (``transformer_2_gguf``)."""
        return self.family in ("wan", "ltx")

    @property
    def source(self) -> str:
        """Where the weights come from, for logs and metadata."""
        if self.tiny:
            return "built-in random weights"
        if self.random_weights:
            return "built-in random weights (full size, cached after the first build)"
        if self.local_path is not None:
            return str(self.local_path)
        return f"{self.repo_id}@{self.revision or 'main'}"


# -- Variants: every family's real spec is written once below; its tiny and random builds derive from it ----


def tiny_variant(spec: ModelSpec, *, name: str, label: str, num_frames: int, **changes: Any) -> ModelSpec:
    """``spec``'s architecture at tiny sizes with random weights built in memory (models/tiny.py): no
    download, seconds on a CPU. Small defaults (512p preset, ``num_frames``: the smallest count the family's
    frame rule allows from 8, 4 steps) and sides down to 32 pixels; the rest of the limits and the memory
    facts are ``spec``'s. ``changes`` replaces further fields (a tiny UNet's block widths)."""
    tiny = replace(
        spec,
        name=name,
        repo_id=None,
        revision=None,
        defaults=replace(spec.defaults, resolution="512p", num_frames=num_frames, num_inference_steps=4),
        limits=replace(spec.limits, min_side=32),
        params=ComponentParams(denoiser=0, vae=0),  # a few kB of weights: nothing for the planner to place
        description=f"The {label} architecture at tiny sizes with random weights: for tests and offline "
        "demos. Its videos are noise.",
        tiny=True,
        aliases=(),
    )
    return replace(tiny, **changes)


def random_variant(spec: ModelSpec, *, name: str, label: str, note: str = "") -> ModelSpec:
    """``spec`` at full size with seeded random weights, built offline from the shipped configs
    (models/random_full.py): the same networks, parameter counts and memory facts, so the same plans and
    estimates; for GPU memory and speed testing (the benchmark) without a download."""
    description = (
        f"The full-size {label} architecture with seeded random weights, built offline: for GPU memory and "
        "speed testing. Its videos are noise."
    )
    return replace(
        spec,
        name=name,
        repo_id=None,
        revision=None,
        description=f"{description} {note}" if note else description,
        random_weights=True,
        aliases=(),
    )


I2VGENXL_MEMORY = MemoryFacts(
    # The measured coefficients are what stillmotion.memory.calibrate fits on all of ../shared/measurements
    # (tests/memory/test_estimate_vs_measurements.py holds them to it, and checks fits on held-out rows).
    # Sources: ../shared/measurements (H100, fp16, diffusers 0.42.1); the meta-device simulator
    # (stillmotion.bench.simulate); PRIOR = not yet checked on a GPU. Derivations: docs/memory.md.
    # 2.588 GiB for batch 2 x 16 frames x 64x64 latent (512p); linear in tokens to 0.1% over all 24 cells.
    denoiser_act_gib_per_unit=2.588 / (2 * 16 * 64 * 64),
    # Simulator: with every feed-forward chunked, the peak is 0.516-0.517 of the unchunked one on every shape.
    denoiser_ff_floor_fraction=0.517,
    # transformer_in: width 8 heads x 64 = 512, GEGLU projection 2 x 4 x 512.
    denoiser_ff_proj_width=4096,
    denoiser_ff_out_width=512,
    # Pipeline runs peak 1.5% above the bare UNet call (fp16-group / fp16-offload-exp rows).
    loop_extra_fraction=0.015,
    loop_extra_gib=0.02,
    # 0.5 GiB per 512x512 frame for 2-8 frames at once; 0.596 GiB for one frame (cuDNN workspace).
    vae_decode_gib_per_pixel_frame=0.5 / (512 * 512),
    vae_decode_single_gib_per_pixel=0.596 / (512 * 512),
    vae_tile_side=768,  # vae/config.json sample_size
    # 0.375 GiB for one 512x512 image.
    vae_encode_gib_per_pixel=0.375 / (512 * 512),
    encoder_act_gib=0.1,  # PRIOR: ViT-H/14 on one 224x224 image and 2 x 77 text tokens
    # Resident above the parameter bytes, mean over the activation rows (2.857-2.877 GiB resident for 2.802
    # GiB of fp16 UNet + VAE parameters).
    workspace_gib=0.0589,
    # Parameter split of the UNet (unmatched group 13%, largest pair of neighbouring up blocks 46%).
    group_block_resident_fraction=0.6,
    group_leaf_resident_gib=0.06,  # largest leaf 56 MiB, running + prefetched
    reserved_ratio_expandable=1.027,  # the largest of the measured 1.020-1.027 (fp16-offload-exp)
    # reserved - resident = 1.323 x UNet activations + 1.996 x VAE activations + 0.193 GiB: least squares on
    # relative error over the unet and vae_decode rows of the activation table (memory/calibrate.py).
    reserved_act_ratio_denoiser=1.323,
    reserved_act_ratio_vae=1.996,
    reserved_extra_gib=0.193,
    # s/step 0.2304 at 512p and 0.9044 at 1024p (batch 2 x 16 frames, fp16 recipe).
    step_s_fixed=0.0057,
    step_s_per_unit=(0.9044 - 0.2304) / (2 * 16 * (128 * 128 - 64 * 64)),
    pre_s=2.0,
    decode_s_per_pixel_frame=1.46 / (16 * 1024 * 1024),
    split_guidance_step_factor=1.08,  # PRIOR
    ff_chunk_step_factor=1.03,  # PRIOR (CPU: see docs/memory.md)
    fp8_step_factor=1.10,  # PRIOR: diffusers reports +8-13% for layerwise casting
    model_offload_fixed_s=3.0,  # measured: fp16-offload minus fp16, 50 steps, 512p
    group_block_step_overhead_s=0.05,  # PRIOR
    group_leaf_step_overhead_s=0.15,  # measured: fp16-group minus fp16 per step (0.136-0.162 s)
    sequential_step_overhead_s=1.0,  # PRIOR
)

I2VGENXL = ModelSpec(
    name="i2vgen-xl",
    family="i2vgen-xl",
    repo_id="ali-vilab/i2vgen-xl",
    # "Update config.json of UNet to include attention_head_dim (#12)": the last commit that changed a
    # diffusers file of the repo (see shared/model-configs/NOTES.md).
    revision="39e1979ea27be737b0278c06755e321f2b4360d5",
    local_path=None,
    defaults=Defaults(),
    limits=Limits(),
    params=ComponentParams(
        denoiser=1_420_469_224,
        vae=83_653_863,
        text_encoder=352_984_064,
        image_encoder=632_076_800,
        linear=LinearWeights(denoiser=587_981_056, text_encoder=301_989_888),
    ),
    architecture=Architecture(),
    memory=I2VGENXL_MEMORY,
    description="I2VGen-XL (Alibaba, 2023): image + text to 16-32 frames, trained at 1280x704.",
    config_name="i2vgen-xl",
    aliases=("ali-vilab/i2vgen-xl",),
)

TINY_I2VGENXL = tiny_variant(
    I2VGENXL,
    name="tiny-i2vgen-xl",
    label="I2VGen-XL",
    num_frames=8,
    architecture=replace(I2VGENXL.architecture, unet_block_out_channels=(8, 16)),  # models/tiny.py's UNet
    config_name=None,
)

# -- Memory facts of the other families: measured on the CPU, never on a GPU --------------------------------
# Marked CPU: the denoiser's activations and chunked floor and the VAE decode, measured on the full-size
# networks by `python -m stillmotion.bench.activations` (the method lands within 1.6% of 38 of I2VGen-XL's 39
# H100 rows, the 39th 14.6% high; docs/memory.md, "Activation facts measured on the CPU"). The rest is
# `python -m stillmotion.bench.simulate <model>` (the meta-device simulator) at the model's native shape: VAE
# encode and offload residency; and
# - allocator behaviour (reserved / allocated), workspace and loop extras: I2VGen-XL's, the same PyTorch;
# - speed (PRIOR, it only ranks the rungs): FLOPs per step from the meta device at ASSUMED_MFU (UNets at
#   the 23.6% I2VGen-XL measured), offload overheads scaled from I2VGen-XL's by the denoiser's bytes.
UNET_STEP_S_PER_TFLOP = 0.2304 / 41.87  # I2VGen-XL: 0.2304 s/step measured for 41.87 TFLOP (23.6% MFU)
TRANSFORMER_STEP_S_PER_TFLOP = 1 / (0.4 * 790.0)  # PRIOR: 40% of the H100's measured 790 TFLOP/s


def _with_offload_costs(facts: MemoryFacts, denoiser_gb: float) -> MemoryFacts:
    """I2VGen-XL's offload costs (2.84 GB UNet) scaled by the denoiser's 16-bit bytes (PRIOR)."""
    scale = denoiser_gb / 2.84
    return replace(
        facts,
        model_offload_fixed_s=I2VGENXL_MEMORY.model_offload_fixed_s * scale,
        group_block_step_overhead_s=I2VGENXL_MEMORY.group_block_step_overhead_s * scale,
        group_leaf_step_overhead_s=I2VGENXL_MEMORY.group_leaf_step_overhead_s * scale,
        sequential_step_overhead_s=I2VGENXL_MEMORY.sequential_step_overhead_s * scale,
    )


# What the families without measurements share with I2VGen-XL: the allocator and PyTorch's workspaces.
_UNMEASURED = MemoryFacts(
    denoiser_act_gib_per_unit=0.0,  # each family sets its own below
    loop_extra_fraction=I2VGENXL_MEMORY.loop_extra_fraction,
    workspace_gib=I2VGENXL_MEMORY.workspace_gib,
    reserved_ratio_expandable=I2VGENXL_MEMORY.reserved_ratio_expandable,
    reserved_act_ratio_denoiser=I2VGENXL_MEMORY.reserved_act_ratio_denoiser,
    reserved_act_ratio_vae=I2VGENXL_MEMORY.reserved_act_ratio_vae,
    reserved_extra_gib=I2VGENXL_MEMORY.reserved_extra_gib,
    split_guidance_step_factor=1.02,  # PRIOR: two half batches of a large transformer
    ff_chunk_step_factor=1.03,  # PRIOR
    fp8_step_factor=1.10,  # PRIOR: diffusers reports +8-13% for layerwise casting
)

# Wan 2.1 I2V 14B at 480x832 x 81 frames (21 x 60 x 104 latent elements per row).
# CPU = measured by `python -m stillmotion.bench.activations` (bench/results/activations-cpu.jsonl, derived by
# memory/activation_facts.py, held to it by tests/memory/test_activation_facts.py); the rest as above.
WAN21_14B_MEMORY = _with_offload_costs(
    replace(
        _UNMEASURED,
        # CPU: 3.47 GiB per call of one row (one block at the full token count; the simulator said 4.09).
        denoiser_act_gib_per_unit=2.650e-5,
        # CPU: chunking every feed-forward to 16 MiB leaves the peak where it is (1.000): it is outside them.
        denoiser_ff_floor_fraction=1.0,
        denoiser_ff_proj_width=13824 / 4,  # ffn 13824 per token, a token is 2x2 latent pixels
        denoiser_ff_out_width=5120 / 4,
        loop_extra_gib=0.05,
        vae_dtype="float32",  # as diffusers' Wan examples load it (models/wan.py VAE_DTYPE)
        decode_chunking=DecodeChunking.WHOLE_VIDEO,
        # CPU, in float32 at 240x416 (1/4 of the pixels; 120x208 agrees per pixel to 0.2%) x 1, 9 and 81
        # frames, halved to the 16-bit convention: 7.6 GiB of float32 activations at 480x832 x 81 (the
        # simulator's bf16 figure was 4.5). PRIOR: no GPU convolution workspace on top (docs/memory.md).
        vae_decode_fixed_gib_per_pixel=9.068e-6,
        vae_decode_gib_per_pixel_frame=5.704e-9,
        vae_decode_single_gib_per_pixel=3.227e-6,
        vae_tile_side=256,  # AutoencoderKLWan's tile_sample_min_height / width
        # Simulator (not yet measured on the CPU): the image and 80 black frames through the causal encoder,
        # 3.0 GiB at 480x832 in 16 bits (x2 in float32).
        vae_encode_gib_per_pixel=7.638e-6,
        vae_encode_gib_per_pixel_frame=5.82e-9,
        encoder_act_gib=0.2,  # PRIOR: UMT5-XXL on 2 x 512 tokens, CLIP on one image
        group_block_resident_fraction=0.064,  # 40 blocks of 0.4B: the unmatched group and 2 blocks
        group_leaf_resident_gib=0.342,
        encoder_leaf_resident_gib=1.987,  # UMT5's 256k x 4096 embedding, 2 GiB, is one leaf
        step_s_fixed=0.05,
        step_s_per_unit=3372.8 * TRANSFORMER_STEP_S_PER_TFLOP / (2 * 131040),  # 3373 TFLOP per guided step
        pre_s=3.0,
        decode_s_per_pixel_frame=5e-7,  # PRIOR
    ),
    32.8,
)

# Wan 2.2 TI2V 5B at 704x1280 x 121 frames (31 x 44 x 80 latent elements per row).
WAN22_5B_MEMORY = _with_offload_costs(
    replace(
        _UNMEASURED,
        denoiser_act_gib_per_unit=4.640e-5,  # CPU: 5.06 GiB per call of one row (the simulator agrees)
        denoiser_ff_floor_fraction=0.990,  # CPU: feed-forwards chunked to 16 MiB
        denoiser_ff_proj_width=14336 / 4,
        denoiser_ff_out_width=3072 / 4,
        loop_extra_gib=0.05,
        vae_dtype="float32",  # as diffusers' Wan examples load it (models/wan.py VAE_DTYPE)
        decode_chunking=DecodeChunking.WHOLE_VIDEO,
        # CPU, in float32 at 176x320 (1/16 of the pixels) x 1, 9 and 41 frames, halved: 19.4 GiB of float32
        # activations at 704x1280 x 121 (the simulator's bf16: 10.7). PRIOR: no GPU workspace (as Wan 2.1).
        vae_decode_fixed_gib_per_pixel=1.0050e-5,
        vae_decode_gib_per_pixel_frame=5.675e-9,
        vae_decode_single_gib_per_pixel=2.7105e-6,
        vae_tile_side=256,
        vae_encode_gib_per_pixel=9.87e-7,  # simulator: the image alone
        encoder_act_gib=0.2,  # PRIOR
        group_block_resident_fraction=0.0835,
        group_leaf_resident_gib=0.164,
        encoder_leaf_resident_gib=1.987,
        step_s_fixed=0.05,
        step_s_per_unit=1041.3 * TRANSFORMER_STEP_S_PER_TFLOP / (2 * 109120),
        pre_s=3.0,
        decode_s_per_pixel_frame=5e-7,  # PRIOR
    ),
    10.0,
)

# SVD-XT at 576x1024 x 25 frames (25 x 72 x 128 latent elements per row).
SVD_XT_MEMORY = _with_offload_costs(
    replace(
        _UNMEASURED,
        # CPU: 3.71 GiB for one row at 576x1024 x 25 (the whole UNet), x1.047 for the batch of 2 (measured
        # at 12 frames, where two rows fit this machine: a batch of 2 holds 4.7% more than twice one row).
        denoiser_act_gib_per_unit=1.6849e-5,
        denoiser_ff_floor_fraction=0.556,  # CPU: feed-forwards chunked to 16 MiB, 576x1024 x 12
        denoiser_ff_proj_width=2 * 4 * 320,  # the GEGLUs of the full-resolution blocks
        denoiser_ff_out_width=320,
        loop_extra_gib=0.02,
        # The temporal decoder, all 25 frames at once by default (exact). CPU at 288x512 (1/4 of the pixels)
        # x 1, 4 and 8 frames: 0.28 GiB per frame, no fixed part; times I2VGen-XL's H100/CPU convolution
        # workspace ratio (x1.335 per frame, x1.589 for one; the same 2-D convolutions): 1.5 GiB per 1024x576.
        decode_chunking=DecodeChunking.APPROXIMATE,
        vae_decode_gib_per_pixel_frame=2.5455e-6,
        vae_decode_single_gib_per_pixel=3.0312e-6,
        vae_encode_gib_per_pixel=1.437e-6,  # simulator
        encoder_act_gib=0.1,  # PRIOR: ViT-H/14 on one image
        group_block_resident_fraction=0.575,
        group_leaf_resident_gib=0.058,
        encoder_leaf_resident_gib=0.024,
        step_s_fixed=I2VGENXL_MEMORY.step_s_fixed,
        step_s_per_unit=159.9 * UNET_STEP_S_PER_TFLOP / (2 * 230400),  # 159.9 TFLOP per guided step
        pre_s=2.0,
        decode_s_per_pixel_frame=I2VGENXL_MEMORY.decode_s_per_pixel_frame,  # PRIOR: the same SD VAE decoder
        split_guidance_step_factor=I2VGENXL_MEMORY.split_guidance_step_factor,  # a UNet, like I2VGen-XL
    ),
    3.05,
)

# LTX-Video 2B at 512x704 x 121 frames (16 x 16 x 22 latent elements per row).
LTX_VIDEO_MEMORY = _with_offload_costs(
    replace(
        _UNMEASURED,
        # CPU at 480x704 x 121 (5280 latent elements): 0.585 GiB per row, exactly 2x for two (simulator: +7%).
        denoiser_act_gib_per_unit=1.1072e-4,
        denoiser_ff_floor_fraction=1.0,  # CPU: feed-forwards chunked to 16 MiB
        denoiser_ff_proj_width=4 * 2048,  # one token per latent element (patch size 1)
        denoiser_ff_out_width=2048,
        loop_extra_gib=0.02,
        decode_chunking=DecodeChunking.WHOLE_VIDEO,
        # CPU at 480x704 x 1, 41 and 121 frames (3.83 GiB for 121; the simulator agreed to 0.2% per frame).
        # PRIOR: no GPU convolution workspace on top (as Wan 2.1).
        vae_decode_fixed_gib_per_pixel=1.863e-8,
        vae_decode_gib_per_pixel_frame=9.360e-8,
        vae_decode_single_gib_per_pixel=1.4156e-7,
        vae_tile_side=512,  # AutoencoderKLLTXVideo's tile_sample_min_height / width
        vae_encode_gib_per_pixel=1.546e-7,  # simulator
        encoder_act_gib=0.2,  # PRIOR: T5-XXL on 2 x 128 tokens
        group_block_resident_fraction=0.092,
        group_leaf_resident_gib=0.119,
        encoder_leaf_resident_gib=0.276,
        step_s_fixed=0.02,
        step_s_per_unit=52.73 * TRANSFORMER_STEP_S_PER_TFLOP / (2 * 5632),
        pre_s=2.0,
        decode_s_per_pixel_frame=2e-8,  # PRIOR
    ),
    3.85,
)

RANDOM_I2VGENXL = random_variant(
    I2VGENXL,
    name="i2vgen-xl-random",
    label="I2VGen-XL",
    note="Same parameter counts as i2vgen-xl, so the same memory estimates.",
)

# -- Wan (models/wan.py) --------------------------------------------------------------------------------
# The English negative prompt of diffusers' Wan examples (a translation of Wan's own default).
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, "
    "still picture, messy background, three legs, many people in the background, walking backwards"
)
WAN21_LIMITS = Limits(
    min_frames=5,
    max_frames=81,  # the length Wan 2.1 was trained at (5 s at 16 fps)
    frame_step=4,  # the causal VAE packs 4 frames per latent frame after the first
    min_side=256,
    max_side=1280,
    max_pixels=1280 * 720,
    size_multiple=16,
    size_rule="the VAE's 8x downsampling times the transformer's 2x2 patches",
    preset_multiple=16,
    max_prompt_chars=2000,
)
WAN21_I2V_480P = ModelSpec(
    name="wan2.1-i2v-14b-480p",
    family="wan",
    repo_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    # A commit of the diffusers repo seen in a file URL of its transformer shards
    # (../shared/model-configs/NOTES.md, section 4).
    revision="7eb2e28a1a610bb8c3f7a056e7c1f63a0230744b",
    local_path=None,
    defaults=Defaults(
        resolution="480p",
        num_frames=81,
        num_inference_steps=50,
        guidance_scale=5.0,
        fps=16,
        negative_prompt=WAN_NEGATIVE_PROMPT,
    ),
    limits=WAN21_LIMITS,
    # Counted on the meta device from models/configs/wan2.1-i2v-14b (tests/models/test_families.py).
    params=ComponentParams(
        denoiser=16_394_878_784,
        vae=126_892_531,
        text_encoder=5_680_910_336,
        image_encoder=630_766_080,
        linear=LinearWeights(denoiser=16_361_062_400, text_encoder=4_630_511_616),
    ),
    architecture=Architecture(
        latent_channels=16, vae_scale_factor=8, temporal_compression=4, text_max_length=512
    ),
    memory=WAN21_14B_MEMORY,
    description="Wan 2.1 I2V 14B, 480P (Alibaba, 2025): image + text to 81 frames at 832x480, 16 fps. "
    "About 33 GB of bf16 transformer weights and an 11 GB UMT5-XXL text encoder: offloaded on most cards.",
    half_dtype="bfloat16",
    variants=(),  # the Wan-AI diffusers repos publish one precision per network
    config_name="wan2.1-i2v-14b",
    aliases=("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",),
)
WAN21_I2V_720P = replace(
    WAN21_I2V_480P,
    name="wan2.1-i2v-14b-720p",
    repo_id="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
    revision=None,  # no commit of this repo could be read offline: the hub's main branch until one is pinned
    defaults=replace(WAN21_I2V_480P.defaults, resolution="720p"),
    description="Wan 2.1 I2V 14B, 720P: the 480P model's architecture trained for 1280x720; same limits.",
    aliases=("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",),
)
TINY_WAN21_I2V = tiny_variant(WAN21_I2V_480P, name="tiny-wan2.1-i2v", label="Wan 2.1 I2V", num_frames=9)
RANDOM_WAN21_I2V = random_variant(
    WAN21_I2V_480P,
    name="wan2.1-i2v-14b-random",
    label="Wan 2.1 I2V 14B",
    note="Building it needs ~70 GB of host RAM once.",
)

WAN22_TI2V_LIMITS = replace(
    WAN21_LIMITS,
    max_frames=121,  # 5 s at 24 fps
    size_multiple=32,
    size_rule="the VAE's 16x downsampling times the transformer's 2x2 patches",
    preset_multiple=32,
)
WAN22_TI2V_5B = ModelSpec(
    name="wan2.2-ti2v-5b",
    family="wan",
    repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    revision=None,  # no commit of this repo could be read offline: the hub's main branch until one is pinned
    local_path=None,
    defaults=Defaults(
        resolution="720p",
        num_frames=121,
        num_inference_steps=50,
        guidance_scale=5.0,
        fps=24,
        negative_prompt=WAN_NEGATIVE_PROMPT,
    ),
    limits=WAN22_TI2V_LIMITS,
    params=ComponentParams(
        denoiser=4_999_787_712,
        vae=704_688_668,
        text_encoder=5_680_910_336,
        linear=LinearWeights(denoiser=4_986_568_704, text_encoder=4_630_511_616),
    ),
    architecture=Architecture(
        latent_channels=48, vae_scale_factor=16, temporal_compression=4, text_max_length=512
    ),
    memory=WAN22_5B_MEMORY,
    description="Wan 2.2 TI2V 5B (Alibaba, 2025): image + text to 121 frames at 1280x704, 24 fps; a "
    "16x-compressing VAE and no CLIP encoder.",
    half_dtype="bfloat16",
    variants=(),
    config_name="wan2.2-ti2v-5b",
    aliases=("Wan-AI/Wan2.2-TI2V-5B-Diffusers",),
)
# Wan 2.2 I2V A14B: two 14B experts (high noise, low noise) of Wan 2.1's transformer without its CLIP image
# projection; the Wan 2.1 VAE (the same config, float32) and UMT5. Memory facts: Wan 2.1 I2V 14B's but for
# the expert's own CPU measurement: 3.467 GiB per call of one row at 480x832 x 81 (Wan 2.1's block 3.472:
# the same widths and tokens, no CLIP image tokens), chunking leaves it (1.000). Both experts share one
# config; the VAE decode is Wan 2.1's measured one (the same VAE config). Each expert is 28.6 GB in bf16, one
# on the device at a time on small cards (memory/experts.py).
WAN22_A14B_MEMORY = _with_offload_costs(replace(WAN21_14B_MEMORY, denoiser_act_gib_per_unit=2.646e-5), 28.58)
WAN22_I2V_A14B = ModelSpec(
    name="wan2.2-i2v-a14b",
    family="wan",
    repo_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
    # A commit of the repo seen offline (../shared/model-configs/NOTES.md, section 3).
    revision="348da65e49490f2254f199e3d206fe9b7366b437",
    local_path=None,
    # Wan 2.2's own I2V settings (its generate config): 40 steps, guidance 3.5 for both experts, 16 fps.
    defaults=Defaults(
        resolution="480p",
        num_frames=81,
        num_inference_steps=40,
        guidance_scale=3.5,
        fps=16,
        negative_prompt=WAN_NEGATIVE_PROMPT,
    ),
    limits=WAN21_LIMITS,
    # Counted on the meta device from models/configs/wan2.2-i2v-a14b (tests/models/test_families.py).
    params=ComponentParams(
        denoiser=14_288_901_184,
        denoiser_2=14_288_901_184,
        vae=126_892_531,
        text_encoder=5_680_910_336,
        linear=LinearWeights(denoiser=14_255_718_400, denoiser_2=14_255_718_400, text_encoder=4_630_511_616),
    ),
    architecture=Architecture(
        latent_channels=16, vae_scale_factor=8, temporal_compression=4, text_max_length=512
    ),
    memory=WAN22_A14B_MEMORY,
    description="Wan 2.2 I2V A14B (Alibaba, 2025): image + text to 81 frames at 480p or 720p, 16 fps; two "
    "14B experts, one for the high-noise steps and one for the low-noise steps (28.6 GB of bf16 weights "
    "each), "
    "the Wan 2.1 VAE and UMT5-XXL. Takes a last frame too.",
    half_dtype="bfloat16",
    variants=(),
    config_name="wan2.2-i2v-a14b",
    aliases=("Wan-AI/Wan2.2-I2V-A14B-Diffusers",),
    # diffusers' convert_wan_to_diffusers.py builds the pipeline with boundary_ratio 0.9 and flow_shift 3.0.
    experts=TwoExperts(boundary_ratio=0.9, flow_shift=3.0),
    fast=FastChoice(
        label="Fast: LightX2V Lightning 4-step LoRAs (approximate: not the base model's output)",
        loras=(
            (
                "lightx2v/Wan2.2-Lightning/Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/high_noise_model.safetensors",
                "high",
            ),
            (
                "lightx2v/Wan2.2-Lightning/Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/low_noise_model.safetensors",
                "low",
            ),
        ),
        num_inference_steps=4,
        guidance_scale=1.0,
        flow_shift=5.0,
        source="the lightx2v/Wan2.2-Lightning model card (4 steps, guidance 1.0, shift 5.0)",
    ),
    accepts_last_image=True,
)
TINY_WAN22_I2V_A14B = tiny_variant(
    WAN22_I2V_A14B,
    name="tiny-wan2.2-i2v-a14b",
    label="Wan 2.2 I2V A14B (two experts)",
    num_frames=9,
    fast=None,  # the published LoRAs fit the full-size experts only
)
RANDOM_WAN22_I2V_A14B = random_variant(
    WAN22_I2V_A14B,
    name="wan2.2-i2v-a14b-random",
    label="Wan 2.2 I2V A14B",
    note="Building it needs ~120 GB of host RAM once (two 14B experts).",
)

TINY_WAN22_TI2V = tiny_variant(WAN22_TI2V_5B, name="tiny-wan2.2-ti2v", label="Wan 2.2 TI2V", num_frames=9)
RANDOM_WAN22_TI2V = random_variant(WAN22_TI2V_5B, name="wan2.2-ti2v-5b-random", label="Wan 2.2 TI2V 5B")

# -- Stable Video Diffusion (models/svd.py) --------------------------------------------------------------
SVD_XT = ModelSpec(
    name="svd-xt",
    family="svd",
    repo_id="stabilityai/stable-video-diffusion-img2vid-xt",
    # A commit whose unet folder lists both the fp16 and fp32 weights; the diffusers files have not changed
    # since "Add diffusers weights (#22)" (../shared/model-configs/NOTES.md, section 2).
    revision="73f66ee1e2809f07cfac237618b88379a1b866e6",
    local_path=None,
    # guidance_scale is the last frame's guidance (the pipeline's max_guidance_scale; the first frame's is 1).
    defaults=Defaults(
        resolution="768p",
        num_frames=25,
        num_inference_steps=25,
        guidance_scale=3.0,
        fps=7,
        negative_prompt="",
    ),
    limits=Limits(
        min_frames=2,
        max_frames=25,  # the length SVD-XT was trained at
        min_side=256,
        max_side=1536,
        max_pixels=1024 * 1024,
        size_multiple=8,
        preset_multiple=64,
        max_fps=30,
        accepts_prompt=False,
    ),
    params=ComponentParams(
        denoiser=1_524_623_082,
        vae=97_742_847,
        image_encoder=632_076_800,
        linear=LinearWeights(denoiser=826_040_320),
    ),
    architecture=Architecture(latent_channels=4, vae_scale_factor=8, text_max_length=0),
    memory=SVD_XT_MEMORY,
    description="Stable Video Diffusion XT (Stability AI, 2023): an image alone (no prompt) to 25 frames at "
    "1024x576.",
    config_name="svd-xt",
    aliases=("stabilityai/stable-video-diffusion-img2vid-xt",),
)
TINY_SVD_XT = tiny_variant(SVD_XT, name="tiny-svd-xt", label="SVD-XT", num_frames=8)
RANDOM_SVD_XT = random_variant(SVD_XT, name="svd-xt-random", label="SVD-XT")

# -- LTX-Video (models/ltx.py) --------------------------------------------------------------------------
LTX_NEGATIVE_PROMPT = (
    "worst quality, inconsistent motion, blurry, jittery, distorted"  # diffusers' LTX examples
)
LTX_VIDEO = ModelSpec(
    name="ltx-video",
    family="ltx",
    repo_id="Lightricks/LTX-Video",
    revision=None,  # no commit of this repo could be read offline (its configs came from refs/pr/91)
    local_path=None,
    defaults=Defaults(
        resolution="480p",
        num_frames=121,
        num_inference_steps=50,
        guidance_scale=3.0,
        fps=25,
        negative_prompt=LTX_NEGATIVE_PROMPT,
        # diffusers' LTX-Video examples for timestep-conditioned VAEs (0.9.1 and later); the 0.9.0 VAE of
        # this registered build decodes without them.
        decode_timestep=0.03,
        decode_noise_scale=0.025,
    ),
    limits=Limits(
        min_frames=9,
        max_frames=257,
        frame_step=8,  # the VAE packs 8 frames per latent frame after the first
        min_side=256,
        max_side=1280,
        max_pixels=1280 * 720,
        size_multiple=32,
        size_rule="the VAE's 32x downsampling",
        preset_multiple=32,
        # One step has only sigma 1.0, which the stretch of the schedule to end at shift_terminal turns into
        # NaN (diffusers' LTX pipelines fail the same way).
        min_inference_steps=2,
        steps_rule="its schedule is stretched to end at shift_terminal, which one step cannot do",
    ),
    params=ComponentParams(
        denoiser=1_923_385_472,
        vae=419_193_649,
        text_encoder=4_762_310_656,
        linear=LinearWeights(denoiser=1_922_039_808, text_encoder=4_630_511_616),
    ),
    architecture=Architecture(
        latent_channels=128, vae_scale_factor=32, temporal_compression=8, text_max_length=128
    ),
    memory=LTX_VIDEO_MEMORY,
    description="LTX-Video 0.9 2B (Lightricks, 2024): image + text to up to 257 frames, 25 fps; fast, with a "
    "32x / 8x compressing VAE and a T5-XXL text encoder.",
    half_dtype="bfloat16",
    variants=(),
    config_name="ltx-video",
    aliases=("Lightricks/LTX-Video",),
)
TINY_LTX_VIDEO = tiny_variant(LTX_VIDEO, name="tiny-ltx-video", label="LTX-Video", num_frames=9)
RANDOM_LTX_VIDEO = random_variant(LTX_VIDEO, name="ltx-video-random", label="LTX-Video 2B")

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        I2VGENXL,
        TINY_I2VGENXL,
        RANDOM_I2VGENXL,
        WAN21_I2V_480P,
        WAN21_I2V_720P,
        TINY_WAN21_I2V,
        RANDOM_WAN21_I2V,
        WAN22_TI2V_5B,
        TINY_WAN22_TI2V,
        RANDOM_WAN22_TI2V,
        WAN22_I2V_A14B,
        TINY_WAN22_I2V_A14B,
        RANDOM_WAN22_I2V_A14B,
        SVD_XT,
        TINY_SVD_XT,
        RANDOM_SVD_XT,
        LTX_VIDEO,
        TINY_LTX_VIDEO,
        RANDOM_LTX_VIDEO,
    )
}

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def list_specs() -> list[ModelSpec]:
    """Registered models, default first."""
    return list(MODELS.values())


def get_spec(name: str, *, folders: bool = True) -> ModelSpec:
    """Resolve a model name, repo id or local folder to its spec; raise UnknownModel listing the choices.

    ``folders=False`` never looks at the file system (the service passes the folders it allows itself)."""
    name = name.strip()
    if name in MODELS:
        return MODELS[name]
    for spec in MODELS.values():
        if name in spec.aliases:
            return spec
    path = Path(name).expanduser()
    if folders and _is_dir(path):
        return _spec_for_folder(path)
    if _REPO_ID.match(name) and not name.startswith((".", "/")):
        _check_hub_id(name)
        # An unregistered repo (a fine-tune or a mirror): its family is not known from the name alone, so the
        # spec says so; models/repo_spec.find_spec reads the repo's model_index.json to settle it.
        return replace(I2VGENXL, name=name, repo_id=name, revision=None, aliases=(), unverified=True)
    known = ", ".join(sorted(MODELS))
    folder = "an existing local folder" if folders else "a model folder under the server's model folders"
    raise UnknownModel(
        f"model={name[:200]!r} is not a registered model ({known}), {folder}, "
        "or a Hugging Face repo id of the form owner/name.",
        field="model",
    )


def _check_hub_id(name: str) -> None:
    """UnknownModel naming the rule when ``name`` breaks the Hugging Face hub's own repo id rules (length,
    characters, no "--", "..", ".git"), checked up front rather than by the hub library mid-request."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        rule = str(exc).rsplit(": '", 1)[0]  # the hub's rule, without the id it repeats
        raise UnknownModel(
            f"model={name[:100]!r} is not a valid Hugging Face repo id: {rule}", field="model"
        ) from None


# The diffusers pipelines whose folders stillmotion runs, and the spec whose defaults, limits and memory facts
# a folder of that pipeline gets (Wan folders are told apart by their transformer: models/wan.py).
FOLDER_SPECS: dict[str, ModelSpec] = {
    "I2VGenXLPipeline": I2VGENXL,
    "StableVideoDiffusionPipeline": SVD_XT,
    "WanImageToVideoPipeline": WAN21_I2V_480P,  # or WAN22_I2V_A14B, told apart below
    "WanPipeline": WAN22_TI2V_5B,
    "LTXImageToVideoPipeline": LTX_VIDEO,
    "LTXPipeline": LTX_VIDEO,
}


def spec_for_index(index: dict[str, Any], transformer_config: dict[str, Any] | None, where: str) -> ModelSpec:
    """The registered spec whose family a diffusers ``model_index.json`` (and, for Wan, its transformer's
    config) describes; UnknownModel naming ``where`` for anything stillmotion does not run."""
    supported = ", ".join(FOLDER_SPECS)
    class_name = index.get("_class_name")
    base = FOLDER_SPECS.get(class_name) if isinstance(class_name, str) else None
    if class_name in ("WanImageToVideoPipeline", "WanPipeline"):
        # Wan 2.1 I2V conditions on CLIP (image_dim); Wan 2.2 TI2V on the image's latent (expand_timesteps);
        # a Wan text-to-video checkpoint does neither.
        image_dim = (transformer_config or {}).get("image_dim")
        base = WAN21_I2V_480P if image_dim else WAN22_TI2V_5B if index.get("expand_timesteps") else None
        if index.get("boundary_ratio") is not None and class_name == "WanImageToVideoPipeline":
            base = WAN22_I2V_A14B  # two experts: transformer and transformer_2 (Wan 2.2 I2V A14B)
    if base is None:
        raise UnknownModel(
            f"model={where!r} holds a {class_name!r} that is not an image-to-video model stillmotion "
            f"runs; it runs {supported} (Wan: I2V or TI2V checkpoints).",
            field="model",
        )
    return base


def _is_dir(path: Path) -> bool:
    """Path.is_dir that says False for a name the OS cannot even look up (too long: ENAMETOOLONG)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _spec_for_folder(path: Path) -> ModelSpec:
    index_file = path / "model_index.json"
    supported = ", ".join(FOLDER_SPECS)
    if not index_file.is_file():
        raise UnknownModel(
            f"model={str(path)!r} is a folder without model_index.json; point it at a diffusers-format "
            f"folder of one of {supported} (e.g. a snapshot of ali-vilab/i2vgen-xl).",
            field="model",
        )
    try:
        index = bounded_json.read_json_file(index_file)
        transformer = path / "transformer" / "config.json"
        config = bounded_json.read_json_file(transformer) if transformer.is_file() else None
    except (OSError, ValueError) as exc:
        raise UnknownModel(
            f"model={str(path)!r}: a config file is unreadable ({exc}).", field="model"
        ) from exc
    base = spec_for_index(index, config, str(path))
    return replace(
        base,
        name=str(path.resolve()),
        repo_id=None,
        revision=None,
        local_path=path.resolve(),
        aliases=(),
        tiny=False,
        random_weights=False,
    )
