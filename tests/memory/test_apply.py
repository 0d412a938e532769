"""apply_plan / reset_placement on the tiny real model (CPU): every placement gives the same UNet output, and
reset leaves no hook behind so the next plan applies cleanly (the OOM-recovery path)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from stillmotion.memory.apply import (
    apply_plan,
    held_host_bytes,
    needs_reload,
    release_encoders,
    reset_placement,
)
from stillmotion.memory.chunking import ff_chunking_enabled
from stillmotion.memory.types import GroupOffloadType, MemoryPlan, Placement
from stillmotion.models.i2vgen_xl import ROLES
from tests.memory.conftest import _tiny_once_cache, run_unet

CPU = torch.device("cpu")
BASE = MemoryPlan(
    rung="resident",
    placement=Placement.RESIDENT,
    dtype="float32",
    release_encoders=False,
    decode_chunk_size=1,
    ff_chunk_size=None,
    split_guidance=False,
)

EXACT_PLANS = {
    "resident": BASE,
    "release_encoders": replace(BASE, rung="release_encoders", release_encoders=True),
    "ff_chunks": replace(BASE, rung="ff_chunks", release_encoders=True, ff_chunk_size=1),
    "model_offload": replace(
        BASE, rung="model_offload", placement=Placement.MODEL_OFFLOAD, release_encoders=True, ff_chunk_size=1
    ),
    "group_offload": replace(
        BASE,
        rung="group_offload",
        placement=Placement.GROUP_OFFLOAD,
        release_encoders=True,
        group_offload_type=GroupOffloadType.BLOCK_LEVEL,
    ),
    "group_offload_leaf": replace(
        BASE,
        rung="group_offload_leaf",
        placement=Placement.GROUP_OFFLOAD,
        release_encoders=True,
        ff_chunk_size=1,
        group_offload_type=GroupOffloadType.LEAF_LEVEL,
    ),
    "sequential_offload": replace(
        BASE,
        rung="sequential_offload",
        placement=Placement.SEQUENTIAL_OFFLOAD,
        release_encoders=True,
        ff_chunk_size=1,
    ),
}


# Short of host memory: one host copy, each group pinned as it loads (the same output).
EXACT_PLANS["group_offload_pinned_on_the_fly"] = replace(EXACT_PLANS["group_offload"], pin_on_the_fly=True)


def _models(tiny: dict[str, Any]) -> dict[str, torch.nn.Module]:
    return {name: tiny[name] for name in ("unet", "vae", "text_encoder", "image_encoder")}


def _hooks_left(modules: dict[str, torch.nn.Module]) -> list[str]:
    left = []
    for name, module in modules.items():
        for sub_name, sub in module.named_modules():
            if hasattr(sub, "_hf_hook"):
                left.append(f"{name}.{sub_name}: accelerate")
            registry = getattr(sub, "_diffusers_hook", None)
            if registry is not None and registry.hooks:
                left.append(f"{name}.{sub_name}: {list(registry.hooks)}")
    return left


@pytest.mark.parametrize("name", list(EXACT_PLANS))
def test_every_exact_placement_gives_the_resident_output(
    name: str, tiny: dict[str, Any], unet_inputs: dict[str, torch.Tensor]
) -> None:
    modules = _models(tiny)
    expected = run_unet(modules["unet"], unet_inputs)
    plan = EXACT_PLANS[name]
    apply_plan(modules, plan, CPU, ROLES)
    release_encoders(modules, plan, ROLES)
    got = run_unet(modules["unet"], unet_inputs)
    assert (got - expected).abs().max().item() <= 1e-6, name
    reset_placement(modules)
    assert _hooks_left(modules) == []
    assert not ff_chunking_enabled(modules["unet"])
    assert all(p.device == CPU for m in modules.values() for p in m.parameters())
    assert torch.equal(run_unet(modules["unet"], unet_inputs), expected)


def test_held_host_bytes_counts_each_weight_in_host_memory_once(tiny: dict[str, Any]) -> None:
    """What the engine adds back to the host budget: its loaded weights and buffers, a shared one once, and
    nothing that is not in host memory."""
    modules = _models(tiny)
    tensors = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for m in modules.values()
        for t in (*m.parameters(), *m.buffers())
    }
    total = held_host_bytes(modules.values())
    assert total == sum(tensors.values()) > 0
    assert held_host_bytes([*modules.values(), modules["unet"]]) == total  # listed twice, counted once
    on_meta = torch.nn.Linear(64, 64, device="meta")
    assert held_host_bytes([on_meta]) == 0


def test_recovery_path_reapplies_a_cheaper_plan_after_reset(
    tiny: dict[str, Any], unet_inputs: dict[str, torch.Tensor]
) -> None:
    modules = _models(tiny)
    expected = run_unet(modules["unet"], unet_inputs)
    for name in ("resident", "model_offload", "group_offload_leaf", "sequential_offload"):
        apply_plan(modules, EXACT_PLANS[name], CPU, ROLES)
        assert (run_unet(modules["unet"], unet_inputs) - expected).abs().max().item() <= 1e-6, name
        reset_placement(modules)
    assert _hooks_left(modules) == []


def test_fp8_storage_is_applied_and_changes_the_output_a_little(
    tiny: dict[str, Any], unet_inputs: dict[str, torch.Tensor]
) -> None:
    modules = _models(tiny)
    expected = run_unet(modules["unet"], unet_inputs)
    plan = replace(BASE, rung="fp8_weights", fp8_weights=True)
    apply_plan(modules, plan, CPU, ROLES)
    dtypes = {p.dtype for p in modules["unet"].parameters()}
    assert torch.float8_e4m3fn in dtypes
    got = run_unet(modules["unet"], unet_inputs)
    diff = (got - expected).abs().max().item()
    assert 0 < diff < 0.5 * expected.abs().max().item()
    reset_placement(modules)
    # diffusers cannot undo fp8 storage: the casting hooks stay and the engine is told to reload the UNet.
    assert needs_reload(modules, BASE, ROLES)
    assert not needs_reload(modules, plan, ROLES)
    assert not needs_reload(_models(_tiny_once_cache()), BASE, ROLES)


def test_plan_dtype_is_applied(tiny: dict[str, Any]) -> None:
    modules = _models(tiny)
    apply_plan(modules, replace(BASE, dtype="bfloat16"), CPU, ROLES)
    assert {p.dtype for m in modules.values() for p in m.parameters()} == {torch.bfloat16}
