"""Speed options for the denoising step, and the pure rule that picks them for a memory plan.

``choose_speed(plan, device_type, allow_compile)`` is pure and table-tested (tests/speed/test_options.py);
``compile.apply_speed`` carries the chosen ``SpeedOptions`` out. Every option here is exact (math) except
``preview``, which is approximate, opt-in and labelled. Rules that rest on a guess rather than a GPU
measurement say "to measure" (issue 5); docs/speed.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from stillmotion.memory.types import GroupOffloadType, MemoryPlan, Placement


class CompileScope(StrEnum):
    """What torch.compile covers."""

    OFF = "off"
    REGIONAL = "regional"  # each repeated block (transformer, resnet, temporal conv) compiled once, reused
    FULL = "full"  # the whole UNet as one graph (longest cold start; the only scope CUDA graphs use)


class AttentionBackend(StrEnum):
    """Which scaled-dot-product kernel runs the UNet's attention (all exact up to reduction order)."""

    DEFAULT = "default"  # leave diffusers' processors alone: PyTorch picks per call
    AUTO = "auto"  # per head width: attention.AUTO_POLICY
    MATH = "math"
    FLASH = "flash"
    EFFICIENT = "efficient"
    CUDNN = "cudnn"


DEFAULT_PREVIEW_STEPS = 12  # same DDIM schedule, fewer steps: a fast, approximate look at the motion


@dataclass(frozen=True)
class SpeedOptions:
    """How to run the UNet fast. Only ``preview`` changes the result by design."""

    compile: CompileScope = CompileScope.OFF
    compile_mode: str | None = None  # torch.compile mode; None = inductor default
    attention: AttentionBackend = AttentionBackend.DEFAULT
    pad_head_dim: int | None = None  # exact re-layout: zero-pad narrow heads (5/10/20) to a multiple of this
    cuda_graphs: bool = False  # FULL compile in "reduce-overhead" mode; needs a resident, unhooked UNet
    dtype: str | None = None  # "float16" / "bfloat16" preference; None = keep the memory plan's dtype
    preview: bool = False  # APPROXIMATE: ``preview_steps`` DDIM steps instead of the requested number
    preview_steps: int = DEFAULT_PREVIEW_STEPS
    reason: str = ""  # one line: why these options

    def __post_init__(self) -> None:
        if self.cuda_graphs and self.compile is not CompileScope.FULL:
            raise ValueError(f"cuda_graphs=True needs compile='full', not compile={self.compile.value!r}")
        if self.pad_head_dim is not None and self.pad_head_dim < 2:
            raise ValueError(f"pad_head_dim={self.pad_head_dim} must be >= 2 or None")
        if self.preview_steps < 1:
            raise ValueError(f"preview_steps={self.preview_steps} must be >= 1")
        if self.dtype not in (None, "float16", "bfloat16", "float32"):
            raise ValueError(f"dtype={self.dtype!r} is not float16, bfloat16, float32 or None")

    @property
    def approximate(self) -> bool:
        return self.preview

    @property
    def approximations(self) -> list[str]:
        return [f"preview_steps={self.preview_steps}"] if self.preview else []

    def num_inference_steps(self, requested: int) -> int:
        """The steps to run: the request's, or fewer in preview mode (same DDIM schedule, coarser)."""
        return min(requested, self.preview_steps) if self.preview else requested

    def with_preview(self, steps: int = DEFAULT_PREVIEW_STEPS) -> SpeedOptions:
        """The same options in the opt-in approximate preview mode."""
        return replace(self, preview=True, preview_steps=steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compile": self.compile.value,
            "compile_mode": self.compile_mode,
            "attention": self.attention.value,
            "pad_head_dim": self.pad_head_dim,
            "cuda_graphs": self.cuda_graphs,
            "dtype": self.dtype,
            "preview": self.preview,
            "preview_steps": self.preview_steps if self.preview else None,
            "approximate": self.approximate,
            "approximations": self.approximations,
            "reason": self.reason,
        }


EAGER = SpeedOptions(reason="eager: no speed options")


def conflicts(options: SpeedOptions, plan: MemoryPlan) -> list[str]:
    """Why ``options`` cannot run under ``plan`` (empty when they compose); apply-time checks use it."""
    problems: list[str] = []
    hooked_leaves = plan.placement is Placement.SEQUENTIAL_OFFLOAD or (
        plan.placement is Placement.GROUP_OFFLOAD
        and plan.group_offload_type is not GroupOffloadType.BLOCK_LEVEL
    )
    if options.compile is not CompileScope.OFF and hooked_leaves:
        # Offload hooks on every layer sit inside each compiled block: a graph break per layer (the group
        # offload hooks are torch.compiler.disable'd), so compiling buys nothing and costs the cold start.
        problems.append(f"compile under {plan.placement.value} with per-layer hooks")
    if options.compile is CompileScope.FULL and plan.placement is not Placement.RESIDENT:
        # The offload hooks wrap the UNet's own forward: a whole-model graph would trace weight transfers.
        problems.append(f"full compile under {plan.placement.value}")
    if options.compile is not CompileScope.OFF and plan.fp8_weights:
        # Layerwise-casting hooks on every layer: the same per-layer graph breaks as leaf offload.
        problems.append("compile with fp8 layerwise casting")
    if options.cuda_graphs:
        if plan.placement is not Placement.RESIDENT:
            problems.append("CUDA graphs need fixed weight addresses (offload moves the weights)")
        if plan.split_guidance:
            # Two replays per step: the second overwrites the first's static output buffer.
            problems.append("CUDA graphs with split guidance (two replays per step share one output)")
    return problems


def choose_speed(plan: MemoryPlan, device_type: str, allow_compile: bool) -> SpeedOptions:
    """The fastest exact options known to compose with ``plan``; conservative where unmeasured."""
    if device_type != "cuda":
        # On CPU (and MPS) the cold start of inductor dwarfs any gain on short runs; the step is matmul-bound.
        return SpeedOptions(reason=f"{device_type}: eager (speed options are tuned for CUDA)")
    if plan.approximate:
        # fp8 storage adds layerwise-casting hooks on every layer (see conflicts()).
        return SpeedOptions(reason="approximate memory plan: eager")
    if not allow_compile:
        return SpeedOptions(reason="compile not allowed: eager, default attention")
    if plan.ff_chunk_size is not None:
        # Exact under compile (tested on CPU), but the plan chose chunking to cap the activation peak, and
        # inductor's buffer reuse around the chunk loop is unmeasured. To measure: the peak with compile.
        return SpeedOptions(reason="feed-forward chunking: eager until compiled peak memory is measured")
    if plan.placement is Placement.SEQUENTIAL_OFFLOAD:
        return SpeedOptions(reason="sequential offload: per-layer hooks, eager")
    if (
        plan.placement is Placement.GROUP_OFFLOAD
        and plan.group_offload_type is not GroupOffloadType.BLOCK_LEVEL
    ):
        return SpeedOptions(reason="leaf-level group offload: per-layer hooks, eager")

    # Regional, not full: a fraction of the cold start (one graph per distinct block, reused across the 16
    # transformer blocks) and no trace through offload hooks, which sit on the UNet or its top-level children,
    # outside the compiled blocks. CUDA graphs stay off until measured (they need FULL + RESIDENT + no split
    # guidance; conflicts() has the rules). Attention stays PyTorch's own choice until the per-shape sweep
    # (python -m stillmotion.speed --attention-sweep) fills attention.AUTO_POLICY. All three: to measure.
    where = {
        Placement.RESIDENT: "resident",
        Placement.MODEL_OFFLOAD: "model offload (hook outside the compiled blocks)",
        Placement.GROUP_OFFLOAD: "block-level group offload (hooks outside the compiled blocks)",
    }[plan.placement]
    return SpeedOptions(compile=CompileScope.REGIONAL, reason=f"regional compile, {where}")
