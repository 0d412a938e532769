"""The data of memory planning: request shape, placements, per-phase estimates and the plan itself.

Plain frozen dataclasses and enums, no torch: ``plan.py`` and ``estimate.py`` build them, ``apply.py`` and the
engine read them, ``to_dict()`` puts them in job rows, logs and the output's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from stillmotion.memory.weight_formats import QuantizedWeights

GIB = 1024**3
# The estimate is multiplied by this before it is compared with the budget: the estimator is calibrated to a
# few percent on the measured cells (docs/memory.md), and 10% covers the unmeasured ones and fragmentation
# (ComfyUI uses the same margin). Host-memory figures take the same margin.
ESTIMATE_MARGIN = 1.10


class RequestShape(Protocol):
    """What the planner needs of a request (engine.request.ResolvedRequest satisfies it)."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def num_frames(self) -> int: ...
    @property
    def guidance_scale(self) -> float: ...
    @property
    def num_inference_steps(self) -> int: ...  # the expected time is for this many steps
    @property
    def flow_shift(self) -> float | None: ...  # a two-expert model's switch step depends on it
    @property
    def lora_bytes(self) -> int: ...  # the request's LoRA files together (0: none)
    @property
    def quantized_denoiser(self) -> QuantizedWeights | None: ...  # a GGUF transformer file (None: none)
    @property
    def quantized_denoiser_2(self) -> QuantizedWeights | None: ...  # a second expert's GGUF file


@dataclass(frozen=True)
class Shape:
    """A concrete RequestShape (for tests, the CLI's largest-fit search and the benchmark)."""

    height: int
    width: int
    num_frames: int
    guidance_scale: float = 9.0
    num_inference_steps: int = 50
    flow_shift: float | None = None
    lora_bytes: int = 0
    quantized_denoiser: QuantizedWeights | None = None
    quantized_denoiser_2: QuantizedWeights | None = None


class Placement(StrEnum):
    """Where the weights live while a request runs (strongest offload last)."""

    RESIDENT = "resident"  # every needed weight on the device
    MODEL_OFFLOAD = "model_offload"  # one whole model on the device at a time (accelerate hooks)
    GROUP_OFFLOAD = "group_offload"  # groups of layers streamed in as needed (diffusers group offloading)
    SEQUENTIAL_OFFLOAD = "sequential_offload"  # every layer copied in on use, synchronously (accelerate)


# Strength order of the placements: a recovery step never goes back up this list.
PLACEMENT_ORDER: tuple[Placement, ...] = (
    Placement.RESIDENT,
    Placement.MODEL_OFFLOAD,
    Placement.GROUP_OFFLOAD,
    Placement.SEQUENTIAL_OFFLOAD,
)


class GroupOffloadType(StrEnum):
    """diffusers' ``apply_group_offloading(offload_type=...)`` values."""

    BLOCK_LEVEL = "block_level"
    LEAF_LEVEL = "leaf_level"


@dataclass(frozen=True)
class PhaseEstimate:
    """Predicted peak of one phase, in GiB: weights on the device plus activations, allocated and reserved."""

    weights_gib: float
    activations_gib: float
    allocated_gib: float
    reserved_gib: float

    def to_dict(self) -> dict[str, float]:
        return {
            "weights_gib": round(self.weights_gib, 3),
            "activations_gib": round(self.activations_gib, 3),
            "allocated_gib": round(self.allocated_gib, 3),
            "reserved_gib": round(self.reserved_gib, 3),
        }


@dataclass(frozen=True)
class HostEstimate:
    """Predicted peak host memory (GiB) of a plan, per stage (memory/host.py says what each holds)."""

    runtime_gib: float  # the process before any weight
    load_gib: float  # every component loaded into host memory, before placement
    place_gib: float  # while the plan is applied (group offload's pinned copies beside the loaded ones)
    run_gib: float  # weights the placement keeps in host memory while the job runs
    pinned_gib: float  # of those, page-locked (group offload with CUDA streams)
    video_gib: float  # the decoded video

    @property
    def peak_gib(self) -> float:
        return self.runtime_gib + max(self.load_gib, self.place_gib, self.run_gib + self.video_gib)

    @property
    def peak_stage(self) -> str:
        stages = {"load": self.load_gib, "place": self.place_gib, "run": self.run_gib + self.video_gib}
        return max(stages, key=lambda name: stages[name])

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_gib": round(self.peak_gib, 3),
            "peak_stage": self.peak_stage,
            "runtime_gib": round(self.runtime_gib, 3),
            "load_gib": round(self.load_gib, 3),
            "place_gib": round(self.place_gib, 3),
            "run_gib": round(self.run_gib, 3),
            "pinned_gib": round(self.pinned_gib, 3),
            "video_gib": round(self.video_gib, 3),
        }


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peaks per phase plus the expected speed of a plan (from estimate.estimate_memory)."""

    encode: PhaseEstimate
    denoise: PhaseEstimate
    decode: PhaseEstimate
    expandable_segments: bool
    s_per_step: float  # expected seconds per denoising step on the reference GPU (H100)
    slowdown: float  # expected time of the whole run relative to the fastest (resident) plan
    # Expected seconds of this request (its steps, its guidance batch, an expert switch) on the reference GPU.
    expected_total_s: float = 0.0
    expert_switch_s: float = 0.0  # two experts under model offload: loading the low-noise one
    switch_after_step: int | None = None  # two experts: the last high-noise step (None: one denoiser)
    lora_gib: float = 0.0  # LoRA weights (and unfused side outputs) counted in the denoise phase
    experts_note: str = ""  # two experts: where they live (memory/experts.py host_note)
    host: HostEstimate | None = None  # host memory (memory/host.py)

    @property
    def peak_reserved_gib(self) -> float:
        return max(self.encode.reserved_gib, self.denoise.reserved_gib, self.decode.reserved_gib)

    @property
    def peak_allocated_gib(self) -> float:
        return max(self.encode.allocated_gib, self.denoise.allocated_gib, self.decode.allocated_gib)

    @property
    def peak_phase(self) -> str:
        phases = {"encode": self.encode, "denoise": self.denoise, "decode": self.decode}
        return max(phases, key=lambda name: phases[name].reserved_gib)

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_reserved_gib": round(self.peak_reserved_gib, 3),
            "peak_allocated_gib": round(self.peak_allocated_gib, 3),
            "peak_phase": self.peak_phase,
            "encode": self.encode.to_dict(),
            "denoise": self.denoise.to_dict(),
            "decode": self.decode.to_dict(),
            "expandable_segments": self.expandable_segments,
            "s_per_step_h100": round(self.s_per_step, 4),
            "expected_slowdown": round(self.slowdown, 3),
            "expected_total_s_h100": round(self.expected_total_s, 1),
            "expert_switch_s": round(self.expert_switch_s, 2),
            "switch_after_step": self.switch_after_step,
            "lora_gib": round(self.lora_gib, 3),
            "experts": self.experts_note or None,
            "host": None if self.host is None else self.host.to_dict(),
        }


@dataclass(frozen=True)
class MemoryPlan:
    """How one request runs: placement, dtype and the exact (or labelled approximate) memory savers.

    The engine carries out ``split_guidance``, ``decode_chunk_size`` and ``vae_tiling``; ``apply.apply_plan``
    carries out placement, dtype, fp8 storage and feed-forward chunking.
    """

    rung: str  # the ladder rung's name (plan.RUNGS); a forced ``strategy=`` uses the same names
    placement: Placement
    dtype: str  # "float16", "bfloat16" or "float32"
    release_encoders: bool  # move the text/image encoders off the device right after encoding
    decode_chunk_size: int  # frames the VAE decodes at once
    # Feed-forward chunking: the most MiB one chunk's first feed-forward projection may produce (the GEGLU
    # output); None = off. Chunks split the tokens, so the result is exact up to matmul reduction order.
    ff_chunk_size: int | None
    split_guidance: bool  # run the unconditional and conditional UNet halves one after the other
    fp8_weights: bool = False  # APPROXIMATE: UNet weights stored as float8_e4m3fn, computed in ``dtype``
    # APPROXIMATE: the denoiser(s) and the text encoder quantized to int8 weight-only while they load
    # (torchao, models/int8.py): about half their host and device memory; never with fp8_weights.
    int8_weights: bool = False
    vae_tiling: bool = False  # APPROXIMATE: spatially tiled VAE decode (tile seams may show)
    # APPROXIMATE for temporal decoders (SVD): each decode chunk sees only its own frames (flicker may show).
    decode_chunk_approximate: bool = False
    group_offload_type: GroupOffloadType | None = None  # only for GROUP_OFFLOAD
    # GROUP_OFFLOAD only: pin each group as it is loaded (diffusers' low_cpu_mem_usage=True) instead of every
    # weight up front; exact, one host copy instead of two while placing, slower per step (memory/host.py).
    pin_on_the_fly: bool = False
    # APPROXIMATE, chosen by the request (its transformer_gguf), not by the planner: the denoiser's weights
    # come from a quantized file of this format ("GGUF Q8_0"); the request's approximations label it.
    weight_format: str | None = None
    # The VAE's dtype when it is not ``dtype`` (Wan: float32 beside a bfloat16 transformer); None = ``dtype``.
    vae_dtype: str | None = None
    estimate: MemoryEstimate | None = None
    reason: str = ""  # one line: why this plan

    @property
    def effective_vae_dtype(self) -> str:
        """The dtype the VAE runs in under this plan."""
        return self.vae_dtype or self.dtype

    @property
    def approximate(self) -> bool:
        """True when the plan changes the math (never chosen unless the user allowed it)."""
        return self.fp8_weights or self.int8_weights or self.vae_tiling or self.decode_chunk_approximate

    @property
    def approximations(self) -> list[str]:
        flags = (
            ("fp8_weights", self.fp8_weights),
            ("int8_weights", self.int8_weights),
            ("vae_tiling", self.vae_tiling),
            ("temporal_decode_chunks", self.decode_chunk_approximate),
        )
        return [name for name, on in flags if on]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "placement": self.placement.value,
            "group_offload_type": None if self.group_offload_type is None else self.group_offload_type.value,
            "pin_on_the_fly": self.pin_on_the_fly,
            "dtype": self.dtype,
            "vae_dtype": self.effective_vae_dtype,
            "release_encoders": self.release_encoders,
            "decode_chunk_size": self.decode_chunk_size,
            "ff_chunk_size": self.ff_chunk_size,
            "split_guidance": self.split_guidance,
            "fp8_weights": self.fp8_weights,
            "int8_weights": self.int8_weights,
            "vae_tiling": self.vae_tiling,
            "decode_chunk_approximate": self.decode_chunk_approximate,
            "weight_format": self.weight_format,
            "approximate": self.approximate,
            "estimate": {} if self.estimate is None else self.estimate.to_dict(),
            "reason": self.reason,
        }
