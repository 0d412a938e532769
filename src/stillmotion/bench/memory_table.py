"""``python -m stillmotion.bench.memory_table``: docs/models.md's tables of what each model needs per machine.

For each real model, its default request from a 16:9 image, planned by the same planner as ``stillmotion
plan --gpu-gb G --host-gb H`` for cards with 8, 12, 16 and 24 GiB free and hosts with 16, 32 and 64 GiB of
memory available. A cell is the chosen rung with its GPU and host peaks (GiB, before the 10% margin), or why
nothing fits: ``GPU`` (the card is too small whatever the host) or ``host`` (the card would do, the RAM would
not; with the RAM the plan needs). Pure planning: no weights, no torch.cuda. tests/test_docs_tables.py checks
that docs/models.md holds exactly this output.
"""

from __future__ import annotations

import sys

from stillmotion.engine.request import GenerationRequest
from stillmotion.errors import CannotFit
from stillmotion.memory.device import DeviceBudget
from stillmotion.memory.plan import ESTIMATE_MARGIN, plan_memory
from stillmotion.models.registry import ModelSpec, list_specs

GPUS_GIB = (8, 12, 16, 24)
HOSTS_GIB = (16, 32, 64)
IMAGE_16_9 = (1280, 720)
BEGIN = "<!-- memory tables: python -m stillmotion.bench.memory_table -->"
END = "<!-- end of memory tables -->"
# How each model's GPU figures were obtained (docs/memory.md); host figures are estimated for every model.
GPU_BASIS = {
    "i2vgen-xl": "GPU: calibrated on H100 measurements of the full-size UNet (1% median error, memory.md)",
}
DEFAULT_GPU_BASIS = (
    "GPU: ESTIMATED (activations measured on the CPU on the full-size networks, docs/memory.md section 8; "
    "no GPU has checked them)"
)


def cell(spec: ModelSpec, gpu_gib: int, host_gib: int) -> str:
    """One machine's answer for the model's default request."""
    request = GenerationRequest(model=spec.name).resolve(spec, IMAGE_16_9, need_prompt=False)
    budget = DeviceBudget.fixed(gpu_gib, host_gib=host_gib)
    try:
        plan = plan_memory(spec, request, budget)
    except CannotFit as refused:
        if "needed_host_gib" in refused.details:
            int8 = refused.details.get("fits_with_int8")
            with_int8 = f"; int8 fits: {int8['host_gib']:.0f}" if isinstance(int8, dict) else ""
            return f"no: host (needs {refused.details['needed_host_gib']:.0f}{with_int8})"
        return f"no: GPU (needs {refused.details['needed_gib']:.1f})"
    assert plan.estimate is not None and plan.estimate.host is not None
    pinned = ", pins on the fly" if plan.pin_on_the_fly else ""
    return f"{plan.rung}{pinned}: {plan.estimate.peak_reserved_gib:.1f} / {plan.estimate.host.peak_gib:.1f}"


def table(spec: ModelSpec) -> str:
    request = GenerationRequest(model=spec.name).resolve(spec, IMAGE_16_9, need_prompt=False)
    lines = [
        f"**{spec.name}**, {request.width}x{request.height} x {request.num_frames} frames, "
        f"{request.num_inference_steps} steps ({spec.params.total / 1e9:.1f}B parameters). "
        f"{GPU_BASIS.get(spec.name, DEFAULT_GPU_BASIS)}; host: ESTIMATED (memory/host.py).",
        "",
        "| GPU free \\ host RAM | " + " | ".join(f"{host} GiB" for host in HOSTS_GIB) + " |",
        "| --- |" + " --- |" * len(HOSTS_GIB),
    ]
    for gpu in GPUS_GIB:
        lines.append(f"| {gpu} GiB | " + " | ".join(cell(spec, gpu, host) for host in HOSTS_GIB) + " |")
    return "\n".join(lines)


def tables() -> str:
    """Every real model's table, between the markers docs/models.md keeps them in."""
    intro = (
        "Each cell: the plan's rung, then its estimated GPU / host peak in GiB before the "
        f"{ESTIMATE_MARGIN:.2f}x margin the planner adds; `no: GPU` or `no: host` says which memory is short "
        "and what the cheapest plan needs (margin included). Exact plans only (no `--allow-approximate`); "
        "`int8 fits: N` where int8 weights (torchao, APPROXIMATE) would fit that host, needing N GiB."
    )
    specs = [spec for spec in list_specs() if not (spec.tiny or spec.random_weights)]
    return "\n\n".join([BEGIN, intro, *(table(spec) for spec in specs), END])


if __name__ == "__main__":
    sys.stdout.write(tables() + "\n")
