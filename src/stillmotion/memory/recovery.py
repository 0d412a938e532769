"""After an out-of-memory error: the next cheaper plan, or None at the bottom of the ladder.

"Cheaper" means a rung further down the ladder whose estimated peak is strictly lower than the failed plan's,
or whose placement offloads strictly more. Among those, the fastest that fits the budget wins; when none fits
(the estimate was already wrong once), the one with the lowest estimate is tried. Every call moves strictly
down, so the engine's retries are bounded by the ladder's length.
"""

from __future__ import annotations

from dataclasses import replace

from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.estimate import quantized_files
from stillmotion.memory.plan import (
    MemoryPlan,
    RequestShape,
    build_plan,
    fastest_fitting,
    int8_rungs,
    split_strategy,
    usable_rungs,
)
from stillmotion.memory.types import PLACEMENT_ORDER
from stillmotion.models.registry import ModelSpec


def next_plan(
    spec: ModelSpec,
    request: RequestShape,
    failed: MemoryPlan,
    budget: DeviceBudget,
    *,
    allow_approximate: bool = False,
) -> MemoryPlan | None:
    """The plan to retry with after ``failed`` ran out of memory; None when nothing cheaper is left."""
    # The whole ladder, whatever the device: on a CPU PyTorch never raises out-of-memory (the OS kills the
    # process instead), so the only OOMs there are the test switches, and walking the full ladder exercises
    # the same placements and resumes a GPU would.
    approximate = allow_approximate or failed.approximate
    int8 = failed.int8_weights  # an int8 plan steps down among the int8 plans (its weights stay loaded)
    rungs = (
        int8_rungs(spec, request)
        if int8
        else usable_rungs(spec, allow_approximate=approximate, quantized=bool(quantized_files(request)))
    )
    names = [rung.name for rung in rungs]
    failed_rung = split_strategy(failed.rung)[0]
    start = names.index(failed_rung) + 1 if failed_rung in names else 0
    failed_peak = failed.estimate.peak_reserved_gib if failed.estimate is not None else float("inf")
    failed_rank = PLACEMENT_ORDER.index(failed.placement)
    candidates = []
    for rung in rungs[start:]:
        plan = build_plan(spec, request, budget, rung, allow_approximate=approximate, int8=int8)
        assert plan.estimate is not None
        cheaper = plan.estimate.peak_reserved_gib < failed_peak
        stronger = PLACEMENT_ORDER.index(plan.placement) > failed_rank
        if cheaper or stronger:
            candidates.append((rung, plan))
    if not candidates:
        return None
    chosen = fastest_fitting(candidates, budget)
    if chosen is None:
        chosen = min(
            candidates, key=lambda item: item[1].estimate.peak_reserved_gib if item[1].estimate else 0.0
        )
    _, plan = chosen
    rung = next(r for r in rungs if r.name == split_strategy(plan.rung)[0])
    return replace(plan, reason=f"after out-of-memory in {failed.rung}: {plan.rung}: {rung.summary}")
