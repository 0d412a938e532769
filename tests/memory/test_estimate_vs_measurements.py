"""The estimator against the H100 measurements (../shared/measurements, copied to tests/memory/data).

Every measured row that maps to one of our plans must be estimated within 10% of its peak reserved memory;
the table is printed (pytest -s) and reproduced in docs/memory.md. Rows that map to no plan of ours
(diffusers' enable_forward_chunking(chunk_size=1)) are listed as unmapped. The meta-device simulator is also
checked against the measured UNet activation peaks, since the chunked-plan coefficients come from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from stillmotion.memory.estimate import (
    denoiser_activation_gib,
    estimate_memory,
    phase_estimate,
    vae_decode_gib,
)
from stillmotion.memory.types import GroupOffloadType, MemoryPlan, Placement, Shape
from stillmotion.models.registry import I2VGENXL

DATA = Path(__file__).parent / "data"
TOLERANCE = 0.10
SPEC = I2VGENXL
GIB = 1024**3

_BASE = MemoryPlan(
    rung="resident",
    placement=Placement.RESIDENT,
    dtype="float16",
    release_encoders=False,
    decode_chunk_size=1,
    ff_chunk_size=None,
    split_guidance=False,
)
# Stock diffusers recipe -> (our equivalent plan, expandable segments on?)
RECIPES: dict[str, tuple[MemoryPlan, bool]] = {
    "fp16": (_BASE, False),
    "fp16-offload": (
        MemoryPlan(**{**_BASE.__dict__, "rung": "model_offload", "placement": Placement.MODEL_OFFLOAD}),
        False,
    ),
    "fp16-offload-exp": (
        MemoryPlan(**{**_BASE.__dict__, "rung": "model_offload", "placement": Placement.MODEL_OFFLOAD}),
        True,
    ),
    "fp16-group": (
        MemoryPlan(
            **{
                **_BASE.__dict__,
                "rung": "group_offload_leaf",
                "placement": Placement.GROUP_OFFLOAD,
                "group_offload_type": GroupOffloadType.LEAF_LEVEL,
            }
        ),
        False,
    ),
    "fp16-fp8-offload": (
        MemoryPlan(
            **{
                **_BASE.__dict__,
                "rung": "fp8_weights",
                "fp8_weights": True,
                "placement": Placement.MODEL_OFFLOAD,
            }
        ),
        False,
    ),
}


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _stock_cases() -> list[tuple[str, dict[str, Any], float]]:
    cases = []
    for row in _rows("h100-stock-diffusers-i2vgenxl.jsonl"):
        if row["recipe"] not in RECIPES:
            continue
        plan, expandable = RECIPES[row["recipe"]]
        shape = Shape(row["res"], row["res"], row["frames"], 9.0)
        est = estimate_memory(SPEC, shape, plan, expandable_segments=expandable)
        cases.append((f"{row['recipe']} {row['res']}p", row, est.peak_reserved_gib))
    return cases


def _component_cases() -> list[tuple[str, dict[str, Any], float]]:
    """Single UNet / VAE-decode calls with UNet + VAE resident, no expandable segments."""
    weights = (SPEC.params.denoiser + SPEC.params.vae) * 2 / GIB
    cases = []
    for row in _rows("h100-i2vgenxl-activation-memory.jsonl"):
        shape = Shape(row["res"], row["res"], row["frames"], 9.0)
        if row["component"] == "unet":
            act = denoiser_activation_gib(SPEC, shape, batch=row["batch"], ff_chunk_mib=None)
            phase = phase_estimate(SPEC, weights, act, 0.0, expandable=False)
        elif row["component"] == "vae_decode":
            act = vae_decode_gib(SPEC, shape, row["frames"], tiling=False, dtype="float16")
            phase = phase_estimate(SPEC, weights, 0.0, act, expandable=False)
        else:
            continue
        label = f"{row['component']} {row['res']}p f{row['frames']} b{row['batch']}"
        cases.append((label, {**row, "peak_reserved_gib": row["reserved_gib"]}, phase.reserved_gib))
    return cases


def _error(measured: float, estimated: float) -> float:
    return (estimated - measured) / measured


def _print_table(title: str, cases: list[tuple[str, dict[str, Any], float]]) -> None:
    sys.stdout.write(f"\n{title}\n{'case':32} {'measured':>9} {'estimate':>9} {'error':>7}\n")
    for label, row, est in cases:
        measured = row["peak_reserved_gib"]
        sys.stdout.write(f"{label:32} {measured:9.2f} {est:9.2f} {_error(measured, est):+7.1%}\n")


def test_stock_recipes_within_10_percent_of_measured_peak_reserved() -> None:
    cases = _stock_cases()
    _print_table("stock diffusers recipes (full pipeline, 16 frames)", cases)
    assert len(cases) == 15
    bad = [
        (label, round(_error(row["peak_reserved_gib"], est), 3))
        for label, row, est in cases
        if abs(_error(row["peak_reserved_gib"], est)) > TOLERANCE
    ]
    assert bad == []


def test_component_calls_within_10_percent_of_measured_peak_reserved() -> None:
    cases = _component_cases()
    _print_table("single calls (UNet / VAE decode, UNet + VAE resident)", cases)
    assert len(cases) == 39
    bad = [
        (label, round(_error(row["peak_reserved_gib"], est), 3))
        for label, row, est in cases
        if abs(_error(row["peak_reserved_gib"], est)) > TOLERANCE
    ]
    assert bad == []


def test_unet_activation_model_matches_measured_activation_peaks_within_2_percent() -> None:
    for row in _rows("h100-i2vgenxl-activation-memory.jsonl"):
        if row["component"] != "unet":
            continue
        shape = Shape(row["res"], row["res"], row["frames"])
        est = denoiser_activation_gib(SPEC, shape, batch=row["batch"], ff_chunk_mib=None)
        assert est == pytest.approx(row["act_peak_gib"], rel=0.02)  # 256p: 0.162 vs 0.164


@pytest.mark.parametrize(("res", "frames", "batch"), [(512, 16, 2), (1024, 16, 1), (256, 8, 1)])
def test_meta_simulator_reproduces_measured_unet_activation_peaks(res: int, frames: int, batch: int) -> None:
    measured = next(
        row["act_peak_gib"]
        for row in _rows("h100-i2vgenxl-activation-memory.jsonl")
        if row["component"] == "unet" and (row["res"], row["frames"], row["batch"]) == (res, frames, batch)
    )
    assert _simulate(_unet(), res, frames, batch) == pytest.approx(measured, abs=0.002)


def test_chunked_estimate_matches_the_simulator() -> None:
    """Chunked-plan coefficients (never measured on a GPU) agree with the simulator at the planner's caps."""
    from stillmotion.memory.chunking import disable_ff_chunking, enable_ff_chunking
    from stillmotion.memory.estimate import ff_chunk_mib_for

    unet = _unet()
    for res, frames, batch in [(512, 16, 2), (768, 16, 1)]:
        shape = Shape(res, res, frames)
        cap = ff_chunk_mib_for(SPEC, shape, batch=batch)
        enable_ff_chunking(unet, cap)
        simulated = _simulate(unet, res, frames, batch)
        disable_ff_chunking(unet)
        estimated = denoiser_activation_gib(SPEC, shape, batch=batch, ff_chunk_mib=cap)
        assert estimated == pytest.approx(simulated, rel=0.02), (res, frames, batch, cap)


_UNET: list[Any] = []


def _unet() -> Any:
    from stillmotion.bench.simulate import meta_unet

    if not _UNET:
        _UNET.append(meta_unet())
    return _UNET[0]


def _simulate(unet: Any, res: int, frames: int, batch: int) -> float:
    from stillmotion.bench.simulate import unet_activation_peak_bytes

    return unet_activation_peak_bytes(unet, res, res, frames, batch) / GIB
