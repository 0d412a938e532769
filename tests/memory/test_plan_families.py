"""The planner as a table for every family: card size + request -> rung, with the estimate shown (pure, no
GPU). Budgets are per-process caps in GiB with expandable segments on (the engine's allocator setting).

Where a row sits at a boundary the activation measurements set, a test below derives that boundary from the
recorded rows themselves (bench/results/activations-cpu.jsonl through memory/activation_facts.py, the
allocator ratio of ../shared/measurements), not from the planner's own output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stillmotion.bench.activations import read_rows
from stillmotion.errors import CannotFit
from stillmotion.memory import activation_facts
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import ESTIMATE_MARGIN, plan_memory
from stillmotion.memory.types import GIB, Placement, Shape
from stillmotion.models.registry import ModelSpec, get_spec

WAN_480P = Shape(480, 832, 81, 5.0)  # Wan 2.1's native video
WAN_720P = Shape(720, 1280, 81, 5.0)
TI2V_720P = Shape(704, 1280, 121, 5.0)
SVD_NATIVE = Shape(576, 1024, 25, 3.0)
LTX_NATIVE = Shape(512, 704, 121, 3.0)
LTX_720P = Shape(704, 1280, 121, 3.0)
SVD_512P = Shape(384, 704, 25, 3.0)


@pytest.mark.parametrize(
    ("model", "shape", "gib", "rung"),
    [
        # 33 GB of bf16 transformer and an 11 GB UMT5-XXL: block-level group offload streams the 40 blocks.
        ("wan2.1-i2v-14b-480p", WAN_480P, 12, "group_offload"),
        ("wan2.1-i2v-14b-480p", WAN_480P, 24, "group_offload"),
        ("wan2.1-i2v-14b-480p", WAN_480P, 80, "resident"),
        ("wan2.1-i2v-14b-720p", WAN_720P, 24, "group_offload"),
        ("wan2.1-i2v-14b-720p", WAN_720P, 48, "model_offload"),
        # The float32 VAE decodes 1280x704 x 121 whole: test_ti2v_720p_boundaries_are_the_measured_decode
        ("wan2.2-ti2v-5b", TI2V_720P, 24, "group_offload"),
        ("wan2.2-ti2v-5b", TI2V_720P, 64, "resident"),
        ("svd-xt", SVD_NATIVE, 48, "resident"),  # decoding all 25 frames at once is the exact decode
        # test_svd_512p_boundaries_are_the_measured_decode
        ("svd-xt", SVD_512P, 24, "release_encoders"),
        ("svd-xt", SVD_512P, 32, "resident"),
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


def test_wan_14b_at_720p_needs_approximate_savings_on_20_gib_and_says_so() -> None:
    # The float32 VAE decodes 1280x720 x 81 frames in 17 GiB of activations: a tiled decode fits 20 GiB.
    spec = get_spec("wan2.1-i2v-14b-720p")
    with pytest.raises(CannotFit) as info:
        plan_memory(spec, WAN_720P, DeviceBudget.fixed(20))
    assert info.value.details["needed_gib"] > 20
    assert "would fit with approximate savings" in info.value.message
    assert info.value.details["fits_with_approximate"] is True
    plan = plan_memory(spec, WAN_720P, DeviceBudget.fixed(20), allow_approximate=True)
    assert plan.approximate and plan.vae_tiling and "approximate:" in plan.reason
    assert plan.estimate is not None and plan.estimate.peak_reserved_gib * ESTIMATE_MARGIN <= 20


def test_wan_14b_at_720p_on_12_gib_says_nothing_fits_even_approximate() -> None:
    # Tiling helps the decode only: the float32 VAE still encodes the image and 80 black frames whole.
    spec = get_spec("wan2.1-i2v-14b-720p")
    with pytest.raises(CannotFit) as info:
        plan_memory(spec, WAN_720P, DeviceBudget.fixed(12), allow_approximate=True)
    assert "848x480 at 81 frames" in info.value.message
    with pytest.raises(CannotFit) as exact:
        plan_memory(spec, WAN_720P, DeviceBudget.fixed(12))
    assert exact.value.details.get("fits_with_approximate") is not True
    assert "would fit with approximate savings" not in exact.value.message


# -- Boundaries from the measurements -----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
MEASURED = activation_facts.derive_facts(
    read_rows(ROOT / "bench" / "results" / "activations-cpu.jsonl"),
    read_rows(Path(__file__).parent / "data" / "h100-i2vgenxl-activation-memory.jsonl"),
)


def _measured_decode_gib(model: str, shape: Shape) -> float:
    """The decode of all ``shape``'s frames at once, from the recorded CPU rows alone: activations in the
    VAE's dtype (the facts are per 16-bit activation) plus the decoded frames gathered in it."""
    spec = get_spec(model)
    vae_bytes = 4 if spec.memory.vae_dtype == "float32" else 2
    pixels = shape.height * shape.width
    act = activation_facts.vae_decode_gib(MEASURED[model], pixels, shape.num_frames) * vae_bytes / 2
    return act + shape.num_frames * 3 * pixels * vae_bytes / GIB


def _decode_phase_needs_gib(spec: ModelSpec, weights_gib: float, decode_gib: float) -> float:
    """What a card must have for a decode beside ``weights_gib``: PyTorch's workspace, the allocator's
    reserved / allocated ratio (both measured on the H100, memory/calibrate.py) and the planner's margin."""
    facts = spec.memory
    return (
        (weights_gib + facts.workspace_gib + decode_gib) * facts.reserved_ratio_expandable * ESTIMATE_MARGIN
    )


def _weights_gib(spec: ModelSpec, *roles: str) -> float:
    vae_bytes = 4 if spec.memory.vae_dtype == "float32" else 2
    return sum(spec.params.bytes(role, vae_bytes if role == "vae" else 2) for role in roles) / GIB


def test_ti2v_720p_boundaries_are_the_measured_decode() -> None:
    # The float32 VAE decodes 1280x704 x 121 frames whole: 19.4 GiB of activations measured on the CPU, and
    # 1.2 GiB of float32 frames. Before, the simulator's bf16 10.7 GiB let 16 GiB and 48 GiB (resident) fit.
    spec = get_spec("wan2.2-ti2v-5b")
    decode = _measured_decode_gib(spec.name, TI2V_720P)
    assert 20 < decode < 21
    # The decode alone, with no weights on the card, needs more than 16 GiB; beside the VAE's whole 2.6 GiB of
    # float32 weights more than 24, so 24 fits only with the VAE streamed in groups (group offload).
    alone = _decode_phase_needs_gib(spec, 0.0, decode)
    assert 16 < alone < 24 < _decode_phase_needs_gib(spec, _weights_gib(spec, "vae"), decode)
    with pytest.raises(CannotFit) as info:
        plan_memory(spec, TI2V_720P, DeviceBudget.fixed(16))
    assert info.value.details["needed_gib"] >= round(alone, 1)
    plan = plan_memory(spec, TI2V_720P, DeviceBudget.fixed(24))
    assert plan.placement is Placement.GROUP_OFFLOAD and plan.estimate is not None
    assert plan.estimate.decode.activations_gib == pytest.approx(decode, rel=0.01)
    # Resident, every network stays beside the decode: more than 48 GiB, within 64.
    resident = _decode_phase_needs_gib(spec, _weights_gib(spec, "denoiser", "vae", "text_encoder"), decode)
    assert 48 < resident < 64
    assert plan_memory(spec, TI2V_720P, DeviceBudget.fixed(48)).rung != "resident"
    assert plan_memory(spec, TI2V_720P, DeviceBudget.fixed(64)).rung == "resident"


def test_svd_512p_boundaries_are_the_measured_decode() -> None:
    # The temporal decoder decodes all 25 frames at once (the exact decode): 0.69 GiB a frame at 704x384, the
    # CPU rows times the H100 / CPU convolution workspace ratio of I2VGen-XL's VAE (x1.335; the simulator's
    # ratio was x1.066). Resident keeps the image encoder beside it: just over 24 GiB; released, under.
    spec = get_spec("svd-xt")
    decode = _measured_decode_gib(spec.name, SVD_512P)
    assert 17 < decode < 18
    resident = _decode_phase_needs_gib(spec, _weights_gib(spec, "denoiser", "vae", "image_encoder"), decode)
    released = _decode_phase_needs_gib(spec, _weights_gib(spec, "denoiser", "vae"), decode)
    assert released < 24 < resident < 32
    at_24 = plan_memory(spec, SVD_512P, DeviceBudget.fixed(24))
    assert (at_24.rung, at_24.placement, at_24.decode_chunk_size) == (
        "release_encoders",
        Placement.RESIDENT,
        25,
    )
    assert at_24.estimate is not None
    assert at_24.estimate.decode.activations_gib == pytest.approx(decode, rel=0.01)
    assert plan_memory(spec, SVD_512P, DeviceBudget.fixed(32)).rung == "resident"


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
    shape = {"svd-xt": SVD_512P}.get(model, Shape(384, 672, 17 if model != "ltx-video" else 25))
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
