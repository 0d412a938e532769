"""OOM recovery as a table: each step cheaper (lower estimate or stronger offload); None at the end."""

from __future__ import annotations

import pytest

from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import plan_memory
from stillmotion.memory.recovery import next_plan
from stillmotion.memory.types import PLACEMENT_ORDER, MemoryPlan, Shape
from stillmotion.models.registry import I2VGENXL

SPEC = I2VGENXL


def _walk(
    shape: Shape, budget: DeviceBudget, start: MemoryPlan, allow_approximate: bool = False
) -> list[MemoryPlan]:
    chain = [start]
    while (
        following := next_plan(SPEC, shape, chain[-1], budget, allow_approximate=allow_approximate)
    ) is not None:
        chain.append(following)
        assert len(chain) < 20, "recovery must terminate"
    return chain


@pytest.mark.parametrize(
    ("gib", "size", "first", "second"),
    [
        (80, 512, "resident", "release_encoders"),
        (6, 512, "ff_chunks", "group_offload"),  # split_guidance: same encode-phase peak, skipped
        (4, 512, "group_offload", "group_offload_leaf"),
        (6, 1024, "group_offload", "group_offload_leaf"),
        (4, 1024, "group_offload_leaf", "sequential_offload"),
    ],
)
def test_next_plan_table(gib: float, size: int, first: str, second: str) -> None:
    shape, budget = Shape(size, size, 16), DeviceBudget.fixed(gib)
    plan = plan_memory(SPEC, shape, budget)
    assert plan.rung == first
    following = next_plan(SPEC, shape, plan, budget)
    assert following is not None and following.rung == second
    assert following.reason.startswith(f"after out-of-memory in {first}")


def test_every_step_is_strictly_cheaper_and_the_walk_ends_at_sequential_offload() -> None:
    shape, budget = Shape(512, 512, 16), DeviceBudget.fixed(80)
    chain = _walk(shape, budget, plan_memory(SPEC, shape, budget))
    for before, after in zip(chain, chain[1:], strict=False):
        assert before.estimate is not None and after.estimate is not None
        cheaper = after.estimate.peak_reserved_gib < before.estimate.peak_reserved_gib
        stronger = PLACEMENT_ORDER.index(after.placement) > PLACEMENT_ORDER.index(before.placement)
        assert cheaper or stronger, (before.rung, after.rung)
        assert not after.approximate
    assert chain[-1].rung == "sequential_offload"
    assert next_plan(SPEC, shape, chain[-1], budget) is None


def test_approximate_rungs_join_only_when_allowed() -> None:
    # 8 frames at 1024p: the one-frame decode is the floor, which only tiling lowers.
    shape, budget = Shape(1024, 1024, 8), DeviceBudget.fixed(80)
    start = plan_memory(SPEC, shape, budget)
    assert not any(p.approximate for p in _walk(shape, budget, start))
    assert _walk(shape, budget, start, allow_approximate=True)[-1].rung == "vae_tiling"


def test_recovery_prefers_a_fitting_plan_over_the_next_in_line() -> None:
    # Resident failed on a 4 GiB card: jump straight to a rung that fits, not to release_encoders.
    shape, budget = Shape(512, 512, 16), DeviceBudget.fixed(4)
    resident = plan_memory(SPEC, shape, DeviceBudget.fixed(80))
    following = next_plan(SPEC, shape, resident, budget)
    assert following is not None and following.rung == plan_memory(SPEC, shape, budget).rung
