"""PLACEHOLDER (the memory engineer replaces this file): the next cheaper plan after an OOM."""

from __future__ import annotations

from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import MemoryPlan, RequestShape
from stillmotion.models.registry import ModelSpec


def next_plan(spec: ModelSpec, request: RequestShape, failed: MemoryPlan, budget: DeviceBudget,
              *, allow_approximate: bool = False) -> MemoryPlan | None:
    return None
