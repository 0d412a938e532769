"""The planner as a table for every family: card size + request -> rung, with the estimate shown (pure, no
GPU). Budgets are per-process caps in GiB with expandable segments on (the engine's allocator setting)."""

from __future__ import annotations

import pytest

from stillmotion.errors import CannotFit
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import ESTIMATE_MARGIN, plan_memory
from stillmotion.memory.types import Placement, Shape
from stillmotion.models.registry import get_spec

WAN_480P = Shape(480, 832, 81, 5.0)  # Wan 2.1's native video
WAN_720P = Shape(720, 1280, 81, 5.0)
TI2V_720P = Shape(704, 1280, 121, 5.0)
SVD_NATIVE = Shape(576, 1024, 25, 3.0)
LTX_NATIVE = Shape(512, 704, 121, 3.0)
LTX_720P = Shape(704, 1280, 121, 3.0)


@pytest.mark.parametrize(
    ("model", "shape", "gib", "rung"),
    [
        # 33 GB of bf16 transformer and an 11 GB UMT5-XXL: block-level group offload streams the 40 blocks.
        ("wan2.1-i2v-14b-480p", WAN_480P, 12, "group_offload"),
        ("wan2.1-i2v-14b-480p", WAN_480P, 24, "group_offload"),
        ("wan2.1-i2v-14b-480p", WAN_480P, 80, "resident"),
        ("wan2.1-i2v-14b-720p", WAN_720P, 24, "group_offload"),
        ("wan2.1-i2v-14b-720p", WAN_720P, 48, "model_offload"),
        ("wan2.2-ti2v-5b", TI2V_720P, 16, "group_offload"),
        ("wan2.2-ti2v-5b", TI2V_720P, 48, "resident"),
        ("svd-xt", SVD_NATIVE, 48, "resident"),  # decoding all 25 frames at once is the exact decode
        ("svd-xt", Shape(384, 704, 25, 3.0), 24, "resident"),
        ("ltx-video", LTX_NATIVE, 8, "group_offload"),
        ("ltx-video", LTX_NATIVE, 16, "release_encoders"),
        ("ltx-video", LTX_NATIVE, 24, "resident"),
        ("ltx-video", LTX_720P, 24, "release_encoders"),
    ],
)
def test_exact_ladder_per_family(model: str, shape: Shape, gib: float, rung: str) -> None:
    spec = get_spec(model)
    plan = plan_memory(spec, shape, DeviceBudget.fixed(gib))
    assert plan.rung == rung, plan.reason
    assert plan.estimate is not None
    assert plan.estimate.peak_reserved_gib * ESTIMATE_MARGIN <= gib
    assert f"estimated peak {plan.estimate.peak_reserved_gib:.2f} GiB" in plan.reason
    assert not plan.approximate
    assert plan.dtype == spec.half_dtype


def test_wan_14b_has_a_plan_for_12_and_24_gib_cards() -> None:
    spec = get_spec("wan2.1-i2v-14b-480p")
    for gib in (12, 24):
        plan = plan_memory(spec, WAN_480P, DeviceBudget.fixed(gib))
        assert plan.placement is Placement.GROUP_OFFLOAD and plan.release_encoders and plan.split_guidance
        assert plan.dtype == "bfloat16"
        assert plan.estimate is not None and plan.estimate.peak_reserved_gib * ESTIMATE_MARGIN <= 12
        # The transformer's blocks stream through: a small part of its 30.5 GiB is ever on the card.
        assert plan.estimate.denoise.weights_gib < 3


def test_wan_14b_at_720p_on_12_gib_needs_approximate_savings_and_says_so() -> None:
    spec = get_spec("wan2.1-i2v-14b-720p")
    with pytest.raises(CannotFit) as info:
        plan_memory(spec, WAN_720P, DeviceBudget.fixed(12))
    assert info.value.details["needed_gib"] > 12
    assert "would fit with approximate savings" in info.value.message
    assert info.value.details["fits_with_approximate"] is True
    plan = plan_memory(spec, WAN_720P, DeviceBudget.fixed(12), allow_approximate=True)
    assert plan.approximate and plan.vae_tiling and "approximate:" in plan.reason
    assert plan.estimate is not None and plan.estimate.peak_reserved_gib * ESTIMATE_MARGIN <= 12


def test_svd_decodes_every_frame_at_once_unless_approximate_chunks_are_allowed() -> None:
    spec = get_spec("svd-xt")
    with pytest.raises(CannotFit):
        plan_memory(spec, SVD_NATIVE, DeviceBudget.fixed(24))
    plan = plan_memory(spec, SVD_NATIVE, DeviceBudget.fixed(24), allow_approximate=True)
    assert 1 < plan.decode_chunk_size < 25
    assert plan.decode_chunk_approximate and plan.approximations == ["temporal_decode_chunks"]
    assert not plan.fp8_weights  # only the decode changes: the mildest approximation that fits
    exact = plan_memory(spec, SVD_NATIVE, DeviceBudget.fixed(48))
    assert exact.decode_chunk_size == 25 and not exact.approximate


def test_whole_video_vaes_tile_only_when_allowed() -> None:
    spec = get_spec("ltx-video")
    with pytest.raises(CannotFit):
        plan_memory(spec, LTX_720P, DeviceBudget.fixed(12))
    plan = plan_memory(spec, LTX_720P, DeviceBudget.fixed(12), allow_approximate=True)
    assert plan.rung == "tiled_decode" and plan.vae_tiling and not plan.fp8_weights
    assert plan.placement is Placement.GROUP_OFFLOAD


@pytest.mark.parametrize("model", ["wan2.1-i2v-14b-480p", "wan2.2-ti2v-5b", "svd-xt", "ltx-video"])
def test_more_memory_never_picks_a_slower_plan(model: str) -> None:
    spec = get_spec(model)
    shape = {"svd-xt": Shape(384, 704, 25, 3.0)}.get(
        model, Shape(384, 672, 17 if model != "ltx-video" else 25)
    )
    previous = None
    for gib in (6, 8, 12, 16, 24, 48, 80):
        try:
            plan = plan_memory(spec, shape, DeviceBudget.fixed(gib))
        except CannotFit:
            assert previous is None  # once something fits, more memory keeps fitting
            continue
        assert plan.estimate is not None
        if previous is not None:
            assert plan.estimate.slowdown <= previous + 1e-9
        previous = plan.estimate.slowdown
    assert previous is not None
