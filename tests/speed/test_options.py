"""choose_speed as a table: memory plan x device -> speed options (pure, no GPU)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import RUNG_NAMES, plan_memory
from stillmotion.memory.types import GroupOffloadType, MemoryPlan, Placement, Shape
from stillmotion.models.registry import I2VGENXL
from stillmotion.speed.options import (
    AttentionBackend,
    CompileScope,
    SpeedOptions,
    choose_speed,
    conflicts,
)

BASE = MemoryPlan(
    rung="resident",
    placement=Placement.RESIDENT,
    dtype="float16",
    release_encoders=False,
    decode_chunk_size=16,
    ff_chunk_size=None,
    split_guidance=False,
)
BLOCK = GroupOffloadType.BLOCK_LEVEL
LEAF = GroupOffloadType.LEAF_LEVEL
REGIONAL = SpeedOptions(compile=CompileScope.REGIONAL)
GRAPHS = SpeedOptions(compile=CompileScope.FULL, cuda_graphs=True)


@pytest.mark.parametrize(
    ("changes", "device", "allow", "scope", "why"),
    [
        ({}, "cuda", True, CompileScope.REGIONAL, "resident"),
        ({"release_encoders": True}, "cuda", True, CompileScope.REGIONAL, "resident"),
        ({"split_guidance": True}, "cuda", True, CompileScope.REGIONAL, "resident"),
        ({"placement": Placement.MODEL_OFFLOAD}, "cuda", True, CompileScope.REGIONAL, "model offload"),
        ({"placement": Placement.GROUP_OFFLOAD, "group_offload_type": BLOCK}, "cuda", True,
         CompileScope.REGIONAL, "block-level"),
        ({"placement": Placement.GROUP_OFFLOAD, "group_offload_type": LEAF}, "cuda", True, CompileScope.OFF,
         "leaf-level"),
        ({"placement": Placement.SEQUENTIAL_OFFLOAD}, "cuda", True, CompileScope.OFF, "sequential"),
        ({"ff_chunk_size": 512}, "cuda", True, CompileScope.OFF, "chunking"),
        ({"fp8_weights": True}, "cuda", True, CompileScope.OFF, "approximate"),
        ({}, "cuda", False, CompileScope.OFF, "not allowed"),
        ({}, "cpu", True, CompileScope.OFF, "cpu"),
        ({}, "mps", True, CompileScope.OFF, "mps"),
    ],
)  # fmt: skip
def test_choose_speed_table(
    changes: dict[str, object], device: str, allow: bool, scope: CompileScope, why: str
) -> None:
    plan = replace(BASE, **changes)  # type: ignore[arg-type]
    options = choose_speed(plan, device, allow)
    assert options.compile is scope, options.reason
    assert why in options.reason
    # Exact by default: never a preview, never CUDA graphs or a backend swap until measured (issue 5).
    assert not options.approximate and not options.cuda_graphs
    assert options.attention is AttentionBackend.DEFAULT and options.dtype is None
    assert conflicts(options, plan) == []


@pytest.mark.parametrize("rung", RUNG_NAMES)
def test_every_planner_rung_gets_options_that_compose(rung: str) -> None:
    shape, budget = Shape(512, 512, 16), DeviceBudget.fixed(80)
    plan = plan_memory(I2VGENXL, shape, budget, strategy=rung, allow_approximate=True)
    options = choose_speed(plan, "cuda", allow_compile=True)
    assert conflicts(options, plan) == [], (rung, options)


@pytest.mark.parametrize(
    ("options", "changes", "problem"),
    [
        (REGIONAL, {"placement": Placement.SEQUENTIAL_OFFLOAD}, "per-layer"),
        (SpeedOptions(compile=CompileScope.REGIONAL),
         {"placement": Placement.GROUP_OFFLOAD, "group_offload_type": LEAF}, "per-layer"),
        (SpeedOptions(compile=CompileScope.FULL), {"placement": Placement.MODEL_OFFLOAD}, "full compile"),
        (SpeedOptions(compile=CompileScope.REGIONAL), {"fp8_weights": True}, "fp8"),
        (GRAPHS, {"placement": Placement.MODEL_OFFLOAD},
         "fixed weight addresses"),
        (GRAPHS, {"split_guidance": True}, "split guidance"),
    ],
)  # fmt: skip
def test_conflicts(options: SpeedOptions, changes: dict[str, object], problem: str) -> None:
    problems = conflicts(options, replace(BASE, **changes))  # type: ignore[arg-type]
    assert any(problem in p for p in problems), problems


def test_full_compile_with_cuda_graphs_composes_only_when_resident_and_batched() -> None:
    assert conflicts(SpeedOptions(compile=CompileScope.FULL, cuda_graphs=True), BASE) == []


def test_cuda_graphs_need_full_compile() -> None:
    with pytest.raises(ValueError, match="cuda_graphs"):
        SpeedOptions(compile=CompileScope.REGIONAL, cuda_graphs=True)


def test_preview_is_opt_in_and_labelled() -> None:
    exact = choose_speed(BASE, "cuda", allow_compile=True)
    assert not exact.preview and exact.num_inference_steps(50) == 50
    preview = exact.with_preview(10)
    assert preview.approximate
    assert preview.num_inference_steps(50) == 10
    assert preview.num_inference_steps(4) == 4  # never more steps than asked for
    record = preview.to_dict()
    assert record["approximate"] is True and record["approximations"] == ["preview_steps=10"]
    assert exact.to_dict()["approximate"] is False
