"""PLACEHOLDER (the memory engineer replaces this file): what the device has."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceBudget:
    device_type: str
    total_bytes: int
    free_bytes: int
    budget_bytes: int
    reserve_bytes: int

    @classmethod
    def measure(cls, device: torch.device, vram_budget_gb: float | None = None,
                reserve_vram_gb: float = 0.5) -> DeviceBudget:
        return cls(device_type=device.type, total_bytes=0, free_bytes=0, budget_bytes=0, reserve_bytes=0)
