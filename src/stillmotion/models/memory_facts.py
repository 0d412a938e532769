"""Measured memory and speed facts of a model family, used by the memory estimator without loading weights.

Values come from ../shared/measurements (H100, fp16, diffusers 0.42.1), from the meta-device simulator
(stillmotion.bench.simulate, which reproduces those measurements to the MiB), from the CPU measurements of the
full-size networks (stillmotion.bench.activations, bench/results/activations-cpu.jsonl) and, where marked
PRIOR, from reasoning that no measurement has checked yet. docs/memory.md explains how each was derived.
All activation coefficients are for 16-bit activations; the estimator scales them for float32 (a plan in
float32, or a VAE kept in float32: ``vae_dtype``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DecodeChunking(StrEnum):
    """What decoding ``decode_chunk_size`` frames at a time means for a family's VAE."""

    EXACT = "exact"  # a per-frame 2-D decoder (I2VGen-XL): chunks only change the batch size
    APPROXIMATE = "approximate"  # a temporal decoder (SVD): a chunk sees only its own frames; labelled
    WHOLE_VIDEO = "whole_video"  # a causal 3-D VAE (Wan, LTX) decodes the whole latent video; no chunk knob


@dataclass(frozen=True)
class MemoryFacts:
    """Per-family coefficients of the memory and speed model (GiB and seconds unless the name says else).

    "Latent element" below = batch x latent frames x latent height x latent width (one position of the
    latent video, before a transformer's patching); "denoiser" = the UNet or the transformer.
    """

    # --- denoiser activations (allocated, above weights and inputs) ---
    # Peak per latent element, no chunking.
    denoiser_act_gib_per_unit: float
    # Peak with every feed-forward chunked small enough, as a fraction of the unchunked peak (what is left:
    # attention projections, resnets, skip connections).
    denoiser_ff_floor_fraction: float = 1.0
    # Width per latent element of the widest feed-forward projection at full resolution (I2VGen-XL: the GEGLU
    # of transformer_in, 2 x 4 x 512; a transformer: its ffn width / patch area) and of that feed-forward's
    # output; they set the peak before the floor is reached.
    denoiser_ff_proj_width: float = 0
    denoiser_ff_out_width: float = 0
    # Extra tensors of the denoising loop (latents, embeddings, guidance arithmetic), as a fraction of the
    # denoiser activation peak, plus a constant.
    loop_extra_fraction: float = 0.0
    loop_extra_gib: float = 0.0

    # --- VAE ---
    # The dtype the VAE runs in on a GPU when it is not the plan's 16-bit dtype (Wan: float32, as diffusers'
    # Wan examples load it); None = the plan's dtype. Its weights and activations are counted at this size.
    vae_dtype: str | None = None
    decode_chunking: DecodeChunking = DecodeChunking.EXACT
    # Decode peak per output pixel per frame decoded at once (for WHOLE_VIDEO: per frame of the video) ...
    vae_decode_gib_per_pixel_frame: float = 0.0
    # ... plus this per output pixel whatever the frame count (a causal VAE's per-step working set) ...
    vae_decode_fixed_gib_per_pixel: float = 0.0
    # ... and at least this for a single frame (convolution workspaces make it larger per frame).
    vae_decode_single_gib_per_pixel: float = 0.0
    # Tiled decode: tiles of this many pixels per side (diffusers' tile_sample_min_size).
    vae_tile_side: int = 0
    # Encode peak per input pixel, plus per pixel per frame for VAEs that encode a whole conditioning video.
    vae_encode_gib_per_pixel: float = 0.0
    vae_encode_gib_per_pixel_frame: float = 0.0
    # Text + image encoder activations (one image, the prompt and the negative prompt).
    encoder_act_gib: float = 0.0

    # --- weights on the device besides parameter bytes ---
    # cuBLAS workspace and other allocator-owned constants (measured: resident minus parameter bytes).
    workspace_gib: float = 0.0
    # Fraction of the denoiser's weights on the device at its peak under block-level group offload with
    # streams (the unmatched top-level group plus the running and the prefetched block).
    group_block_resident_fraction: float = 1.0
    # Weights on the device under leaf-level group offload with streams (running + prefetched layers) ...
    group_leaf_resident_gib: float = 0.0
    # ... and for the encoders when their largest layer is larger (T5's 256k-token embedding); 0 = the same.
    encoder_leaf_resident_gib: float = 0.0

    # --- reserved / allocated ---
    # With PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: reserved = allocated x this.
    reserved_ratio_expandable: float = 1.0
    # Without it: reserved = weights + activations x ratio (per component) + constant.
    reserved_act_ratio_denoiser: float = 1.0
    reserved_act_ratio_vae: float = 1.0
    reserved_extra_gib: float = 0.0

    # --- speed (H100, fp16, eager) ---
    # Seconds per denoising step with batch 2: a + b x latent tokens of one batch-2 step.
    step_s_fixed: float = 0.0
    step_s_per_unit: float = 0.0
    # Set-up and encoders, and VAE decode per output pixel per frame.
    pre_s: float = 0.0
    decode_s_per_pixel_frame: float = 0.0
    # Time factors and overheads of each saver (PRIOR where docs/memory.md says so).
    split_guidance_step_factor: float = 1.0
    ff_chunk_step_factor: float = 1.0
    fp8_step_factor: float = 1.0
    model_offload_fixed_s: float = 0.0
    group_block_step_overhead_s: float = 0.0
    group_leaf_step_overhead_s: float = 0.0
    sequential_step_overhead_s: float = 0.0
