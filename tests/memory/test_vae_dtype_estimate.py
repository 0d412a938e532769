"""The planner counts Wan's float32 VAE: its weights at 4 bytes a parameter and its activations at float32."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.estimate import estimate_memory
from stillmotion.memory.plan import plan_memory
from stillmotion.memory.types import GIB, Shape
from stillmotion.models.registry import get_spec

WAN_480P = Shape(480, 832, 81, 5.0)


@pytest.mark.parametrize("model", ["wan2.1-i2v-14b-480p", "wan2.2-ti2v-5b"])
def test_wan_plans_run_and_count_the_vae_in_float32(model: str) -> None:
    spec = get_spec(model)
    plan = plan_memory(spec, WAN_480P, DeviceBudget.fixed(80), strategy="model_offload")
    assert (plan.dtype, plan.vae_dtype) == ("bfloat16", "float32")
    assert plan.estimate is not None
    as_16_bit = estimate_memory(spec, WAN_480P, replace(plan, vae_dtype=None))
    workspace = spec.memory.workspace_gib
    vae_weights = plan.estimate.decode.weights_gib - workspace
    assert vae_weights == pytest.approx(spec.params.vae * 4 / GIB)
    assert vae_weights == pytest.approx(2 * (as_16_bit.decode.weights_gib - workspace))
    assert plan.estimate.decode.activations_gib == pytest.approx(2 * as_16_bit.decode.activations_gib)
    # The VAE encode runs in float32 too; the text and image encoders stay in bfloat16.
    vae_encode = as_16_bit.encode.activations_gib - spec.memory.encoder_act_gib
    assert plan.estimate.encode.activations_gib == pytest.approx(spec.memory.encoder_act_gib + 2 * vae_encode)


@pytest.mark.parametrize("model", ["i2vgen-xl", "svd-xt", "ltx-video"])
def test_other_families_run_the_vae_in_the_plans_dtype(model: str) -> None:
    spec = get_spec(model)
    plan = plan_memory(spec, Shape(320, 512, 9, 3.0), DeviceBudget.fixed(80))
    assert plan.vae_dtype is None and plan.to_dict()["vae_dtype"] == spec.half_dtype


def test_on_a_cpu_everything_is_float32_anyway() -> None:
    plan = plan_memory(get_spec("wan2.1-i2v-14b-480p"), Shape(64, 64, 5, 5.0), DeviceBudget.fixed(200, "cpu"))
    assert (plan.dtype, plan.vae_dtype, plan.effective_vae_dtype) == ("float32", None, "float32")
