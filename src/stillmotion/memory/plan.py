"""PLACEHOLDER (the memory engineer replaces this file): the MemoryPlan contract the engine relies on."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from stillmotion.memory.device import DeviceBudget
from stillmotion.models.registry import ModelSpec


class RequestShape(Protocol):
    """What the planner needs of a request (engine.request.ResolvedRequest satisfies it)."""

    height: int
    width: int
    num_frames: int
    guidance_scale: float


class Placement(StrEnum):
    RESIDENT = "resident"
    MODEL_OFFLOAD = "model_offload"
    GROUP_OFFLOAD = "group_offload"
    SEQUENTIAL_OFFLOAD = "sequential_offload"


@dataclass(frozen=True)
class MemoryPlan:
    rung: str
    placement: Placement
    dtype: str
    release_encoders: bool
    decode_chunk_size: int
    ff_chunk_size: int | None
    split_guidance: bool
    fp8_weights: bool = False
    vae_tiling: bool = False
    estimate: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def approximate(self) -> bool:
        return self.fp8_weights or self.vae_tiling

    def to_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung, "placement": self.placement.value, "dtype": self.dtype,
            "release_encoders": self.release_encoders, "decode_chunk_size": self.decode_chunk_size,
            "ff_chunk_size": self.ff_chunk_size, "split_guidance": self.split_guidance,
            "fp8_weights": self.fp8_weights, "vae_tiling": self.vae_tiling, "approximate": self.approximate,
            "estimate": self.estimate, "reason": self.reason,
        }


def plan_memory(
    spec: ModelSpec,
    request: RequestShape,
    budget: DeviceBudget,
    *,
    allow_approximate: bool = False,
    strategy: str | None = None,
) -> MemoryPlan:
    dtype = "float32" if budget.device_type == "cpu" else "float16"
    return MemoryPlan(rung="resident", placement=Placement.RESIDENT, dtype=dtype, release_encoders=False,
                      decode_chunk_size=request.num_frames, ff_chunk_size=None, split_guidance=False,
                      reason="placeholder")
