"""What a generation (or a dry-run plan) returns: the output, the plan actually used, and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillmotion.engine.request import ResolvedRequest
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.interpolation import InterpolationPlan
from stillmotion.memory.plan import MemoryPlan


@dataclass(frozen=True)
class GenerationResult:
    """One finished video and how it was made."""

    video_path: Path
    sidecar_path: Path
    sha256: str
    request: ResolvedRequest
    plan: MemoryPlan  # the plan that finished the job (after any OOM downgrade)
    downgrades: tuple[dict[str, Any], ...]  # one entry per OOM recovery: from, to, phase, step
    warnings: tuple[str, ...]  # e.g. "black", "frozen", "embedding cache hit"
    timings: dict[str, float]  # load_s, encode_s, denoise_s, per_step_s, decode_s, write_s, total_s
    metadata: dict[str, Any] = field(default_factory=dict)  # the recipe written into the video

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_path": str(self.video_path),
            "sidecar_path": str(self.sidecar_path),
            "sha256": self.sha256,
            "request": self.request.to_dict(),
            "plan": self.plan.to_dict(),
            "downgrades": list(self.downgrades),
            "warnings": list(self.warnings),
            "timings": self.timings,
            # Where it ran, so timings are compared like with like (service/expected_time.py).
            "device": (self.metadata.get("runtime") or {}).get("device_name"),
        }


@dataclass(frozen=True)
class PlanReport:
    """A dry run: the resolved request, the device budget and the chosen plan; no weights loaded."""

    request: ResolvedRequest
    budget: DeviceBudget
    plan: MemoryPlan
    interpolation: InterpolationPlan | None = None  # the opt-in post-step's phase, when asked for

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.to_dict(),
            "budget": vars(self.budget),
            "plan": self.plan.to_dict(),
            "interpolation": None if self.interpolation is None else self.interpolation.to_dict(),
        }
