"""PLACEHOLDER (the memory engineer replaces this file): carries a MemoryPlan out."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from stillmotion.memory.plan import MemoryPlan

ENCODERS = ("text_encoder", "image_encoder")


def apply_plan(modules: Mapping[str, torch.nn.Module], plan: MemoryPlan, device: torch.device) -> None:
    dtype = getattr(torch, plan.dtype)
    for module in modules.values():
        module.to(device=device, dtype=dtype)


def release_encoders(modules: Mapping[str, torch.nn.Module], plan: MemoryPlan) -> None:
    if plan.release_encoders:
        for name in ENCODERS:
            modules[name].to("cpu")


def reset_placement(modules: Mapping[str, torch.nn.Module]) -> None:
    for module in modules.values():
        module.to("cpu")
