"""int8 weight storage in the planner (issue 22.2): the least lossy format that fits, int8 only where no
16-bit plan does, its bytes counted from the linear layers it converts, forced and refused by rule."""

from __future__ import annotations

import pytest

from stillmotion.errors import CannotFit, InvalidRequest
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.estimate import estimate_memory
from stillmotion.memory.host_refusal import NominalQuantized
from stillmotion.memory.plan import ESTIMATE_MARGIN, build_plan, ladder, plan_memory
from stillmotion.memory.recovery import next_plan
from stillmotion.memory.types import GIB, MemoryPlan, Placement, Shape
from stillmotion.models import int8
from stillmotion.models.adapters import family_of
from stillmotion.models.random_full import empty_modules
from stillmotion.models.registry import get_spec

WAN = get_spec("wan2.1-i2v-14b-480p")
WAN_480P = Shape(480, 832, 81, 5.0, 50, 3.0)
SHIPPED = ("i2vgen-xl", "wan2.1-i2v-14b-480p", "wan2.2-ti2v-5b", "wan2.2-i2v-a14b", "svd-xt", "ltx-video")


def _host_gib(plan: MemoryPlan) -> float:
    assert plan.estimate is not None and plan.estimate.host is not None
    return plan.estimate.host.peak_gib


@pytest.mark.parametrize("model", SHIPPED)
def test_the_converted_weights_per_role_are_counted_from_the_shipped_configs(model: str) -> None:
    """ComponentParams.linear holds what int8 converts (every linear layer but a diffusers model's
    float32-kept ones), counted here on the meta device from the full-size configs."""
    spec = get_spec(model)
    roles = family_of(spec).roles
    for name, module in empty_modules(spec).items():
        role = roles.param_role(name)
        if role in int8.INT8_ROLES:
            assert int8.convertible_weights(module) == getattr(spec.params.linear, role), (model, role)


@pytest.mark.parametrize(
    ("host_gib", "outcome"),
    [
        (16, "refused"),  # even int8 needs ~29 GiB: UMT5's token embedding and CLIP stay 16-bit
        (32, "int8"),  # 16-bit needs ~51 GiB; int8 ~29 GiB
        (64, "16-bit"),  # the least lossy format that fits: int8 is not chosen for speed or room
    ],
)
def test_wan_14b_on_a_12_gib_card_with_approximate_allowed(host_gib: int, outcome: str) -> None:
    budget = DeviceBudget.fixed(12, host_gib=host_gib)
    if outcome == "refused":
        with pytest.raises(CannotFit) as refused:
            plan_memory(WAN, WAN_480P, budget, allow_approximate=True)
        assert refused.value.details["needed_host_gib"] > host_gib
        assert refused.value.details["smallest_machine"]["rung"].endswith("+int8")
        return
    plan = plan_memory(WAN, WAN_480P, budget, allow_approximate=True)
    assert _host_gib(plan) * ESTIMATE_MARGIN <= host_gib
    assert plan.int8_weights is (outcome == "int8")
    assert plan.rung.endswith("+int8") is (outcome == "int8")
    if outcome == "int8":
        assert plan.approximate and "int8_weights" in plan.approximations
        assert "int8 weight-only (torchao)" in plan.reason and "no 16-bit plan fits" in plan.reason
        assert plan.placement is Placement.GROUP_OFFLOAD and not plan.fp8_weights


def test_without_approximate_the_host_refusal_says_int8_would_fit() -> None:
    with pytest.raises(CannotFit) as refused:
        plan_memory(WAN, WAN_480P, DeviceBudget.fixed(12, host_gib=32))
    details = refused.value.details
    assert details["fits_with_int8"]["rung"].endswith("+int8")
    assert details["fits_with_int8"]["host_gib"] <= 32
    assert (
        "--allow-approximate" in refused.value.message and "int8 weights would fit" in refused.value.message
    )


def test_int8_stores_the_converted_weights_in_one_byte_and_loads_them_so() -> None:
    budget = DeviceBudget.fixed(80, host_gib=256)
    rung = next(r for r in ladder() if r.name == "group_offload")
    plain = build_plan(WAN, WAN_480P, budget, rung)
    quantized = build_plan(WAN, WAN_480P, budget, rung, int8=True)
    params = WAN.params
    saved = (params.linear.denoiser + params.linear.text_encoder) * (2 - 1) / GIB  # bfloat16 -> int8
    assert plain.estimate is not None and plain.estimate.host is not None
    assert quantized.estimate is not None and quantized.estimate.host is not None
    # int8 quantizes while loading: the load holds the int8 weights, never the 16-bit ones.
    assert plain.estimate.host.load_gib - quantized.estimate.host.load_gib == pytest.approx(saved)
    assert quantized.estimate.expected_total_s > plain.estimate.expected_total_s  # dequantizing costs time
    assert estimate_memory(WAN, WAN_480P, quantized).host == quantized.estimate.host


@pytest.mark.parametrize(
    ("strategy", "changes", "rule"),
    [
        ("group_offload+int8", {}, "allow approximate savings first"),
        ("sequential_offload+int8", {"allow": True}, "sequential offload"),
        ("fp8_weights+int8", {"allow": True}, "fp8 or in int8, not both"),
        ("group_offload+int4", {"allow": True}, "is not a plan rung"),
        ("group_offload+int8", {"allow": True, "lora_bytes": 10**6}, "LoRAs cannot be merged"),
        ("group_offload+int8", {"allow": True, "gguf": True}, "GGUF file"),
    ],
)
def test_a_forced_int8_strategy_is_refused_by_rule(
    strategy: str, changes: dict[str, object], rule: str
) -> None:
    lora_bytes = changes.get("lora_bytes", 0)
    assert isinstance(lora_bytes, int)
    gguf = NominalQuantized(WAN.params.denoiser) if changes.get("gguf") else None
    shape = Shape(480, 832, 81, 5.0, 50, 3.0, lora_bytes=lora_bytes, quantized_denoiser=gguf)
    with pytest.raises(InvalidRequest, match=rule) as refused:
        plan_memory(WAN, shape, DeviceBudget.fixed(24), strategy=strategy, allow_approximate=bool(changes))
    assert refused.value.field == "strategy"


def test_int8_is_never_planned_with_loras_or_a_gguf_file() -> None:
    budget = DeviceBudget.fixed(12, host_gib=32)
    for shape in (
        Shape(480, 832, 81, 5.0, 50, 3.0, lora_bytes=300 * 2**20),
        Shape(480, 832, 81, 5.0, 50, 3.0, quantized_denoiser=NominalQuantized(WAN.params.denoiser)),
    ):
        try:
            plan = plan_memory(WAN, shape, budget, allow_approximate=True)
        except CannotFit:
            continue
        assert not plan.int8_weights


def test_after_an_oom_an_int8_plan_steps_down_among_int8_plans() -> None:
    budget = DeviceBudget.fixed(24, host_gib=256)
    failed = plan_memory(WAN, WAN_480P, budget, strategy="resident+int8", allow_approximate=True)
    seen = [failed.rung]
    plan: MemoryPlan | None = failed
    while plan is not None:
        plan = next_plan(WAN, WAN_480P, plan, budget, allow_approximate=True)
        if plan is not None:
            assert plan.int8_weights and plan.rung.endswith("+int8")
            assert plan.placement is not Placement.SEQUENTIAL_OFFLOAD
            seen.append(plan.rung)
    assert len(seen) == len(set(seen)) > 1  # strictly down, and bounded
