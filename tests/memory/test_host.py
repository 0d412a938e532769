"""Host memory in every plan (issue 22.1): what loading, placing and running hold in RAM, checked against
the host like the device, with pinning on the fly where two copies do not fit, and a refusal naming it."""

from __future__ import annotations

import pytest

from stillmotion.errors import CannotFit
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.host import HOST_RUNTIME_GIB, decoded_video_gib
from stillmotion.memory.host_refusal import NominalQuantized
from stillmotion.memory.plan import ESTIMATE_MARGIN, build_plan, ladder, plan_memory
from stillmotion.memory.types import GIB, HostEstimate, MemoryPlan, Placement, Shape
from stillmotion.models.registry import get_spec

WAN = get_spec("wan2.1-i2v-14b-480p")
WAN_480P = Shape(480, 832, 81, 5.0, 50, 3.0)


def _host(plan: MemoryPlan) -> HostEstimate:
    assert plan.estimate is not None and plan.estimate.host is not None
    return plan.estimate.host


def _weights_gib(model: str, vae_bytes: int = 2) -> float:
    """Every component's 16-bit weights (the VAE at ``vae_bytes``), from the registry's parameter counts."""
    params = get_spec(model).params
    return (params.total - params.vae) * 2 / GIB + params.vae * vae_bytes / GIB


@pytest.mark.parametrize(
    ("host_gib", "outcome"),
    [
        (16, "refused"),  # the 14B transformer, UMT5-XXL and CLIP alone are ~43 GiB in bfloat16
        (32, "refused"),
        (64, "pinned on the fly"),  # one host copy fits, two do not
        (128, "pinned up front"),  # two copies while placing fit: the faster way
    ],
)
def test_wan_14b_on_a_12_gib_card_by_host_memory(host_gib: int, outcome: str) -> None:
    budget = DeviceBudget.fixed(12, host_gib=host_gib)
    if outcome == "refused":
        with pytest.raises(CannotFit) as refused:
            plan_memory(WAN, WAN_480P, budget)
        message = refused.value.message
        assert "of host memory (RAM)" in message and f"{host_gib:.2f} GiB available" in message
        assert refused.value.details["needed_host_gib"] > host_gib
        assert refused.value.details["smallest_machine"]["host_gib"] > host_gib
        return
    plan = plan_memory(WAN, WAN_480P, budget)
    host = _host(plan)
    assert plan.placement is Placement.GROUP_OFFLOAD and plan.dtype == "bfloat16" and not plan.approximate
    assert plan.weight_format is None  # 16-bit weights kept
    assert host.peak_gib * ESTIMATE_MARGIN <= host_gib
    assert plan.pin_on_the_fly is (outcome == "pinned on the fly")
    assert "host memory" in plan.reason


def test_loading_holds_every_weight_in_the_runs_dtypes() -> None:
    """The load stage holds all components as from_pretrained brings them in: Wan's VAE in float32."""
    plan = plan_memory(WAN, WAN_480P, DeviceBudget.fixed(80))
    assert _host(plan).load_gib == pytest.approx(_weights_gib("wan2.1-i2v-14b-480p", vae_bytes=4), rel=1e-9)
    i2v = plan_memory(get_spec("i2vgen-xl"), Shape(512, 512, 16), DeviceBudget.fixed(80))
    assert _host(i2v).load_gib == pytest.approx(_weights_gib("i2vgen-xl"), rel=1e-9)
    assert _host(i2v).run_gib == 0.0  # resident: nothing kept on the host once placed
    assert _host(i2v).peak_stage == "load"


def test_pinning_up_front_doubles_the_placing_stage_and_on_the_fly_costs_time() -> None:
    budget = DeviceBudget.fixed(12)
    rung = next(r for r in ladder() if r.name == "group_offload")
    up_front = build_plan(WAN, WAN_480P, budget, rung)
    on_the_fly = build_plan(WAN, WAN_480P, budget.with_host(int(64 * GIB)), rung)
    assert not up_front.pin_on_the_fly and on_the_fly.pin_on_the_fly
    assert _host(up_front).place_gib == pytest.approx(2 * _host(up_front).load_gib)
    assert _host(up_front).pinned_gib == pytest.approx(_host(up_front).load_gib)
    assert _host(on_the_fly).place_gib == pytest.approx(_host(on_the_fly).load_gib)
    assert _host(on_the_fly).pinned_gib == 0.0
    assert on_the_fly.estimate and up_front.estimate
    assert on_the_fly.estimate.s_per_step > up_front.estimate.s_per_step
    # The device sees the same plan either way.
    assert on_the_fly.estimate.peak_reserved_gib == pytest.approx(up_front.estimate.peak_reserved_gib)


def test_a_4_bit_transformer_cuts_the_host_figure_and_the_refusal_says_so() -> None:
    budget = DeviceBudget.fixed(12, host_gib=32)
    with pytest.raises(CannotFit) as refused:
        plan_memory(WAN, WAN_480P, budget)
    assert "4-bit GGUF transformer file" in refused.value.message and "which fits" in refused.value.message
    need = refused.value.details["quantized_host_gib"]
    shape = Shape(480, 832, 81, 5.0, 50, 3.0, quantized_denoiser=NominalQuantized(WAN.params.denoiser))
    plan = plan_memory(WAN, shape, budget)
    assert _host(plan).peak_gib * ESTIMATE_MARGIN == pytest.approx(need, abs=0.01)
    saved = WAN.params.denoiser * (2 - 4.5 / 8) / GIB
    full = plan_memory(WAN, WAN_480P, DeviceBudget.fixed(12, host_gib=64))
    assert _host(full).load_gib - _host(plan).load_gib == pytest.approx(saved, rel=1e-6)


def test_unknown_host_memory_and_a_cpu_device_are_not_checked_twice() -> None:
    """host_free_bytes 0 means unknown (a fixed card without --host-gb): the device alone decides. On a CPU
    the device budget is host memory already."""
    assert plan_memory(WAN, WAN_480P, DeviceBudget.fixed(12)).rung == "group_offload"
    tiny_host = DeviceBudget.fixed(200, "cpu").with_host(int(1 * GIB))
    assert plan_memory(WAN, Shape(64, 64, 5, 5.0), tiny_host).placement is Placement.RESIDENT


def test_the_decoded_video_and_runtime_are_counted() -> None:
    plan = plan_memory(get_spec("i2vgen-xl"), Shape(512, 512, 16), DeviceBudget.fixed(80))
    host = _host(plan)
    assert host.runtime_gib == HOST_RUNTIME_GIB
    assert host.video_gib == pytest.approx(16 * 3 * 512 * 512 * 5 / GIB)
    assert decoded_video_gib(Shape(480, 832, 81)) > decoded_video_gib(Shape(480, 832, 17))
    assert host.peak_gib == pytest.approx(HOST_RUNTIME_GIB + host.load_gib)


def test_model_offload_keeps_every_model_but_the_one_on_the_device() -> None:
    spec = get_spec("ltx-video")
    plan = plan_memory(spec, Shape(480, 704, 121, 3.0), DeviceBudget.fixed(80), strategy="model_offload")
    host = _host(plan)
    smallest = min(spec.params.denoiser, spec.params.vae, spec.params.text_encoder) * 2 / GIB
    assert host.run_gib == pytest.approx(host.load_gib - smallest)


def test_a_forced_plan_that_overflows_the_host_says_so() -> None:
    budget = DeviceBudget.fixed(80, host_gib=16)
    plan = plan_memory(WAN, WAN_480P, budget, strategy="model_offload")
    assert "DOES NOT FIT IN HOST MEMORY" in plan.reason
