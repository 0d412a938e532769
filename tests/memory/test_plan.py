"""The planner as a table: budget + request -> rung (pure, no GPU). Budgets are per-process caps in GiB with
expandable segments on (the engine's allocator setting)."""

from __future__ import annotations

import pytest

from stillmotion.errors import CannotFit, InvalidRequest
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import ESTIMATE_MARGIN, ladder, plan_memory
from stillmotion.memory.types import GIB, Placement, Shape
from stillmotion.models.registry import I2VGENXL

SPEC = I2VGENXL


@pytest.mark.parametrize(
    ("gib", "size", "frames", "rung"),
    [
        (80, 512, 16, "resident"),
        (24, 1024, 16, "resident"),
        (8, 512, 16, "release_encoders"),
        (6, 512, 16, "ff_chunks"),
        (6, 512, 32, "split_guidance"),
        (5, 768, 16, "group_offload"),
        (4, 512, 16, "group_offload"),
        (6, 1024, 16, "group_offload"),
        (3, 768, 16, "group_offload_leaf"),
        (4, 1024, 16, "group_offload_leaf"),
        (2.5, 512, 16, "group_offload_leaf"),
    ],
)
def test_ladder_table(gib: float, size: int, frames: int, rung: str) -> None:
    plan = plan_memory(SPEC, Shape(size, size, frames), DeviceBudget.fixed(gib))
    assert plan.rung == rung, plan.reason
    assert plan.estimate is not None
    assert plan.estimate.peak_reserved_gib * ESTIMATE_MARGIN <= gib
    assert not plan.approximate
    assert plan.dtype == "float16"


def test_every_chosen_plan_fits_and_more_memory_never_picks_a_slower_plan() -> None:
    shape = Shape(768, 768, 16)
    previous = None
    for gib in (3, 4, 5, 6, 8, 12, 16, 24, 40):
        plan = plan_memory(SPEC, shape, DeviceBudget.fixed(gib))
        assert plan.estimate is not None
        if previous is not None:
            assert plan.estimate.slowdown <= previous + 1e-9
        previous = plan.estimate.slowdown


def test_three_gib_cannot_fit_1024p_and_says_what_would() -> None:
    with pytest.raises(CannotFit) as info:
        plan_memory(SPEC, Shape(1024, 1024, 16), DeviceBudget.fixed(3))
    error = info.value
    assert "Largest that fits" in error.message
    # The largest preset below 1024p ("720p": the area of 720x1280, 960x960 for a square image).
    assert error.details["largest_size"] == {"width": 960, "height": 960}
    assert error.details["largest_num_frames"] == 15
    assert error.details["needed_gib"] > 3
    # And the suggestions really fit.
    plan_memory(SPEC, Shape(960, 960, 16), DeviceBudget.fixed(3))
    plan_memory(SPEC, Shape(1024, 1024, 15), DeviceBudget.fixed(3))


def test_nothing_fits_in_three_quarters_of_a_gib() -> None:
    with pytest.raises(CannotFit) as info:
        plan_memory(SPEC, Shape(512, 512, 16), DeviceBudget.fixed(0.75))
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    ("size", "host_gib", "rung"),
    [(512, 20, "resident"), (1024, 32, "ff_chunks"), (1024, 20, "split_guidance")],
)
def test_cpu_plans_float32_in_the_host_memory_available(size: int, host_gib: float, rung: str) -> None:
    plan = plan_memory(SPEC, Shape(size, size, 16), DeviceBudget.fixed(host_gib, device_type="cpu"))
    assert (plan.rung, plan.placement, plan.dtype) == (rung, Placement.RESIDENT, "float32")
    assert not plan.release_encoders  # nowhere to release them to: every weight stays in host memory
    assert plan.estimate is not None and plan.estimate.peak_reserved_gib * 1.1 <= host_gib
    assert "host memory available" in plan.reason


def test_cpu_refuses_what_the_host_memory_cannot_hold() -> None:
    """Never "fits" for a plan that cannot fit: the CPU is planned like a card, against host memory."""
    with pytest.raises(CannotFit) as info:
        plan_memory(SPEC, Shape(1024, 1024, 32), DeviceBudget.fixed(20, device_type="cpu"))
    message = info.value.message
    assert "host memory available (running on the CPU)" in message and "Largest that fits" in message


@pytest.mark.parametrize("name", [rung.name for rung in ladder()])
def test_strategy_forces_each_exact_rung(name: str) -> None:
    plan = plan_memory(SPEC, Shape(512, 512, 16), DeviceBudget.fixed(80), strategy=name)
    assert plan.rung == name
    assert plan.reason.startswith(f"forced strategy {name}")


def test_forced_rung_that_does_not_fit_says_so() -> None:
    plan = plan_memory(SPEC, Shape(1024, 1024, 16), DeviceBudget.fixed(4), strategy="resident")
    assert "DOES NOT FIT" in plan.reason


def test_unknown_strategy_lists_the_names() -> None:
    with pytest.raises(InvalidRequest) as info:
        plan_memory(SPEC, Shape(512, 512, 16), DeviceBudget.fixed(8), strategy="turbo")
    assert "group_offload_leaf" in info.value.message


def test_approximate_rungs_only_when_allowed() -> None:
    assert all(not rung.approximate for rung in ladder())
    with pytest.raises(InvalidRequest):
        plan_memory(SPEC, Shape(512, 512, 16), DeviceBudget.fixed(8), strategy="fp8_weights")
    forced = plan_memory(
        SPEC, Shape(512, 512, 16), DeviceBudget.fixed(8), strategy="fp8_weights", allow_approximate=True
    )
    assert forced.approximate and forced.to_dict()["approximate"] is True


def test_vae_tiling_is_chosen_only_when_allowed_and_labelled() -> None:
    # 1024p x 8 frames: the decode of one 1024x1024 frame (2.4 GiB) is the floor of every exact plan.
    shape = Shape(1024, 1024, 8)
    with pytest.raises(CannotFit):
        plan_memory(SPEC, shape, DeviceBudget.fixed(2.5))
    plan = plan_memory(SPEC, shape, DeviceBudget.fixed(2.5), allow_approximate=True)
    assert plan.rung == "vae_tiling" and plan.vae_tiling and plan.approximate
    assert "approximate: fp8_weights, vae_tiling" in plan.reason


def test_decode_chunk_never_raises_the_peak_and_shrinks_with_the_budget() -> None:
    big = plan_memory(SPEC, Shape(512, 512, 16), DeviceBudget.fixed(80))
    small = plan_memory(SPEC, Shape(512, 512, 16), DeviceBudget.fixed(2.5))
    assert big.decode_chunk_size > small.decode_chunk_size == 1
    for plan in (big, small):
        assert plan.estimate is not None
        assert (
            plan.estimate.decode.reserved_gib
            <= max(plan.estimate.denoise.reserved_gib, plan.estimate.encode.reserved_gib) + 1e-9
            or plan.decode_chunk_size == 1
        )


def test_plan_to_dict_is_json_and_keeps_the_contract_keys() -> None:
    import json

    plan = plan_memory(SPEC, Shape(512, 512, 16), DeviceBudget.fixed(4))
    data = json.loads(json.dumps(plan.to_dict()))
    for key in (
        "rung",
        "placement",
        "dtype",
        "release_encoders",
        "decode_chunk_size",
        "ff_chunk_size",
        "split_guidance",
        "fp8_weights",
        "vae_tiling",
        "approximate",
        "estimate",
        "reason",
    ):
        assert key in data
    assert set(data["estimate"]) >= {"encode", "denoise", "decode", "peak_reserved_gib", "expected_slowdown"}


def test_budget_in_bytes_is_respected_exactly() -> None:
    budget = DeviceBudget.fixed(4)
    assert budget.budget_bytes == 4 * GIB
