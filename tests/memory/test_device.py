"""DeviceBudget and the allocator switch (no GPU needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from stillmotion.memory import device
from stillmotion.memory.device import DeviceBudget, configure_allocator, expandable_segments_enabled
from stillmotion.memory.types import GIB


def test_fixed_budget() -> None:
    budget = DeviceBudget.fixed(4, total_gib=24)
    assert (budget.budget_bytes, budget.total_bytes, budget.device_type) == (4 * GIB, 24 * GIB, "cuda")
    assert budget.to_dict()["budget_gib"] == 4.0


def test_measure_cpu_uses_host_memory_and_the_user_cap() -> None:
    budget = DeviceBudget.measure(torch.device("cpu"))
    assert budget.device_type == "cpu" and budget.budget_bytes > 0
    capped = DeviceBudget.measure(torch.device("cpu"), vram_budget_gb=0.25)
    assert (
        capped.budget_bytes == min(budget.host_free_bytes, int(0.25 * GIB))
        or capped.budget_bytes <= 0.25 * GIB
    )


def test_configure_allocator_sets_expandable_segments_only_when_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in device.ALLOC_CONF_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not expandable_segments_enabled()
    assert configure_allocator() == "expandable_segments:True"
    assert expandable_segments_enabled()
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert configure_allocator() == "max_split_size_mb:128"
    assert not expandable_segments_enabled()


def test_measure_is_not_called_at_import() -> None:
    import importlib

    module = importlib.reload(device)
    assert not hasattr(module, "BUDGET")


def test_a_process_without_cuda_context_measures_through_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server plans for the UI without creating a CUDA context (it would hold part of the card)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '6144, 8192, NVIDIA GeForce RTX 4060'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    budget = DeviceBudget.measure(torch.device("cuda"), reserve_vram_gb=0.5)
    assert budget.device_type == "cuda" and budget.name == "NVIDIA GeForce RTX 4060"
    assert budget.total_bytes == 8 * GIB and budget.free_bytes == 6 * GIB
    assert budget.budget_bytes == int(5.5 * GIB)
    assert not torch.cuda.is_initialized()
