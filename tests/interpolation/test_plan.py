"""The interpolation phase is planned like any phase: it fits, adapts (smaller batches, CPU) or refuses."""

from __future__ import annotations

import pytest

from stillmotion.errors import CannotFit
from stillmotion.media.interpolation import Interpolator
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.interpolation import MAX_BATCH, plan_interpolation, rife_estimate_gib
from stillmotion.memory.types import GIB

RIFE, MINTERPOLATE = Interpolator.RIFE, Interpolator.MINTERPOLATE


def cpu_budget(gib: float) -> DeviceBudget:
    return DeviceBudget.fixed(gib, "cpu")


def cuda_budget(gib: float, host_gib: float) -> DeviceBudget:
    budget = DeviceBudget.fixed(gib, "cuda")
    return DeviceBudget(**{**vars(budget), "host_free_bytes": int(host_gib * GIB)})


@pytest.mark.parametrize(
    ("budget", "height", "expected_device", "expected_batch"),
    [
        (cuda_budget(40, 64), 512, "cuda", MAX_BATCH),  # a big card: the most frames at once
        (cuda_budget(0.2, 64), 512, "cuda", 1),  # small: one frame at a time
        (cuda_budget(0.05, 64), 512, "cpu", 1),  # not even the weights: adapts to the CPU
        (cpu_budget(8), 1024, "cpu", MAX_BATCH),
    ],
)
def test_rife_plan_adapts_to_the_budget(
    budget: DeviceBudget, height: int, expected_device: str, expected_batch: int
) -> None:
    plan = plan_interpolation(RIFE, 4, height, height, 16, budget)
    assert (plan.device_type, plan.batch_size) == (expected_device, expected_batch)
    assert plan.estimate_gib == pytest.approx(rife_estimate_gib(height, height, plan.batch_size, plan.dtype))
    assert plan.to_dict()["reason"]


def test_rife_dtype_follows_the_device() -> None:
    assert plan_interpolation(RIFE, 2, 512, 512, 16, cuda_budget(40, 64)).dtype == "float16"
    assert plan_interpolation(RIFE, 2, 512, 512, 16, cpu_budget(8)).dtype == "float32"


def test_a_batch_never_exceeds_the_frames_to_make() -> None:
    assert plan_interpolation(RIFE, 2, 64, 64, 3, cpu_budget(8)).batch_size == 2  # 2 in-between frames


def test_rife_refuses_when_neither_device_nor_host_holds_one_frame() -> None:
    with pytest.raises(CannotFit) as info:
        plan_interpolation(RIFE, 2, 1024, 1024, 16, cuda_budget(0.05, 0.05))
    assert "interpolator=rife" in info.value.message and "minterpolate" in info.value.message
    with pytest.raises(CannotFit):
        plan_interpolation(RIFE, 2, 512, 512, 16, cpu_budget(0.05))


def test_minterpolate_runs_on_the_cpu_against_host_memory() -> None:
    plan = plan_interpolation(MINTERPOLATE, 4, 512, 512, 16, cuda_budget(0.01, 8))
    assert plan.device_type == "cpu"  # whatever the GPU has
    with pytest.raises(CannotFit, match="host memory"):
        plan_interpolation(MINTERPOLATE, 4, 1024, 1024, 32, cpu_budget(0.1))
