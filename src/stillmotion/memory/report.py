"""Render a MemoryPlan as text for ``stillmotion plan`` and the logs."""

from __future__ import annotations

from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.types import ESTIMATE_MARGIN, GIB, MemoryPlan
from stillmotion.memory.weight_formats import INT8_LABEL


def budget_text(budget: DeviceBudget) -> str:
    """'budget 8.00 GiB: the smaller of 24.00 GiB free and your cap of 8.00 GiB' (both always shown)."""
    free = budget.free_bytes / GIB
    memory = "host memory available" if budget.device_type == "cpu" else "free"
    text = f"budget {budget.budget_bytes / GIB:.2f} GiB"
    parts = [f"{free:.2f} GiB {memory}"]
    if budget.reserve_bytes:
        parts[0] += f" less a {budget.reserve_bytes / GIB:.2f} GiB reserve"
    if budget.user_budget_bytes is not None:
        cap = budget.user_budget_bytes / GIB
        parts.append(f"your cap of {cap:.2f} GiB (--vram-budget-gb / STILLMOTION_VRAM_BUDGET_GB)")
        return f"{text}: the smaller of {' and '.join(parts)}"
    return f"{text} ({parts[0]})"


def host_text(plan: MemoryPlan, budget: DeviceBudget) -> str:
    """'host memory: peak 46.22 GiB (run) ...': the host estimate per stage against what the host has."""
    assert plan.estimate is not None and plan.estimate.host is not None
    host = plan.estimate.host
    available = (
        f"{budget.host_free_bytes / GIB:.2f} GiB available"
        if budget.host_free_bytes > 0
        else "host memory unknown, not checked"
    )
    pinning = ", pinned on the fly" if plan.pin_on_the_fly else ""
    return (
        f"host memory (RAM): peak {host.peak_gib:.2f} GiB ({host.peak_stage}); "
        f"runtime {host.runtime_gib:.1f}, weights loaded {host.load_gib:.2f}, "
        f"while placing {host.place_gib:.2f}, kept while running "
        f"{host.run_gib:.2f} (pinned {host.pinned_gib:.2f}{pinning}), decoded video {host.video_gib:.2f}; "
        f"with the {ESTIMATE_MARGIN:.2f}x margin {host.peak_gib * ESTIMATE_MARGIN:.2f} GiB vs {available} "
        "(ESTIMATED)"
    )


def format_plan(plan: MemoryPlan, budget: DeviceBudget) -> str:
    """Rung, why, estimated peak per phase (GiB), expected slowdown and approximations, one fact per line."""
    knobs = [f"placement {plan.placement.value}"]
    if plan.group_offload_type is not None:
        knobs[-1] += f" ({plan.group_offload_type.value})"
    knobs.append(plan.dtype)
    if plan.release_encoders:
        knobs.append("encoders released after encoding")
    if plan.ff_chunk_size is not None:
        knobs.append(f"feed-forward chunks <= {plan.ff_chunk_size} MiB")
    if plan.split_guidance:
        knobs.append("guidance halves one after the other")
    knobs.append(f"VAE decodes {plan.decode_chunk_size} frame(s) at a time")
    if plan.fp8_weights:
        knobs.append("UNet weights stored in float8 (APPROXIMATE)")
    if plan.int8_weights:
        knobs.append(f"denoiser and text encoder weights {INT8_LABEL}, quantized while loading (APPROXIMATE)")
    if plan.vae_tiling:
        knobs.append("tiled VAE decode (APPROXIMATE)")
    if plan.weight_format is not None:
        knobs.append(f"transformer weights {plan.weight_format} from the request's file (APPROXIMATE)")
    lines = [
        f"plan: {plan.rung}",
        f"why: {plan.reason}" if plan.reason else "why: -",
        f"device: {budget.device_type} {budget.name}".rstrip() + f", {budget_text(budget)}",
        "uses: " + "; ".join(knobs),
    ]
    est = plan.estimate
    if est is not None:
        lines.append(
            f"estimated peak reserved GiB (allocated): encode {est.encode.reserved_gib:.2f} "
            f"({est.encode.allocated_gib:.2f}), denoise {est.denoise.reserved_gib:.2f} "
            f"({est.denoise.allocated_gib:.2f}), decode {est.decode.reserved_gib:.2f} "
            f"({est.decode.allocated_gib:.2f})"
        )
        lines.append(
            f"peak {est.peak_reserved_gib:.2f} GiB in {est.peak_phase}; "
            f"with the {ESTIMATE_MARGIN:.2f}x margin "
            f"{est.peak_reserved_gib * ESTIMATE_MARGIN:.2f} GiB"
            + ("" if est.expandable_segments else " (expandable segments OFF: reserved runs higher)")
        )
        lines.append(
            f"expected slowdown: {est.slowdown:.2f}x the all-resident plan "
            f"(~{est.s_per_step:.2f} s/step on an H100)"
        )
        lines.append(f"expected time: ~{est.expected_total_s:.0f} s on an H100 (ESTIMATED, not measured)")
        if est.experts_note:
            switch = (
                f"expert switch after step {est.switch_after_step}: transformer -> transformer_2"
                if est.switch_after_step
                else "no expert switch at this step count"
            )
            cost = (
                f", +{est.expert_switch_s:.1f} s to load the low-noise expert" if est.expert_switch_s else ""
            )
            lines.append(f"{switch}{cost}; {est.experts_note}")
        if est.lora_gib:
            lines.append(f"LoRAs: {est.lora_gib:.2f} GiB counted in the denoise phase")
        if est.host is not None and budget.device_type != "cpu":
            lines.append(host_text(plan, budget))
    lines.append(
        "approximate: "
        + (", ".join(plan.approximations) if plan.approximate else "no (exact plan)")
        + (f"; the transformer's weights are {plan.weight_format}" if plan.weight_format else "")
    )
    return "\n".join(lines)
