"""Run the benchmark grid: each cell in its own process, one JSON line per cell in bench/results/<name>.jsonl.

A plan cell runs the product: ``Engine(settings).generate(...)`` (plan, load, encode, denoise, decode with
OOM recovery, check, write) on ``i2vgen-xl-random``, the full-size I2VGen-XL with seeded random weights
(models/random_full.py; built once, then loaded from its cached safetensors file), with the request resolved
first as every caller does. Before the engine starts the cell turns on expandable segments and caps the
process with ``torch.cuda.set_per_process_memory_fraction``. ``PhaseMeter`` is an engine hook
(engine/hooks.py): it reads peak allocated / reserved memory per phase (LOAD, ENCODE, DENOISE from the first
step, DECODE), records step times as CUDA events at the step boundaries the hooks report (no extra
synchronisation; the engine's own figure is kept beside them) and keeps the decoded frames; the run's time is
measured to the decoded frames, like the stock pipeline's, and the video goes to a temp folder. OOM
downgrades come from the engine's result. An optional warm-up run precedes ``--repeats`` timed runs
(BENCHMARKING 5.2.3-4); the step statistics exclude each run's first step and flag a coefficient of variation
over 2 %. The decoded frames go to a .npy file in the results folder's tmp area and the parent compares them
with the uncapped run's, and adds the UNet FLOPs per step (counted on ``meta``, bench/flops.py) and the MFU.
``--quick`` is the one-command subset; ``--deadline-s`` and ``--skip-done`` split the full grid into device
commands of at most 10 minutes. ``STILLMOTION_FAULTS`` installs the fault hook (stillmotion/faults.py), as
the CLI does.

A stock cell runs diffusers' deprecated ``I2VGenXLPipeline`` as-is with its documented memory recipe, on
the same cached random weights, prompt, image and seed, for the side-by-side.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from stillmotion.bench.scenarios import (
    BENCH_MODEL,
    ISSUE3_CAPS_GIB,
    ISSUE3_FRAMES,
    ISSUE3_SIZES,
    QUICK,
    STOCK_RECIPES,
    Scenario,
    grid,
)
from stillmotion.engine.hooks import EngineHooks
from stillmotion.engine.progress import Stage

logger = logging.getLogger("stillmotion.bench")

GIB = 1024**3
REFERENCE_STEPS = 50  # totals are extrapolated to the product's default step count
DEFAULT_CELL_TIMEOUT_S = 1800
PROMPT = "a lighthouse on a cliff, waves rolling in"  # content does not change memory or time
POLL_INTERVAL_S = 0.02
CV_LIMIT = 0.02  # BENCHMARKING 5.2.4: extrapolate a few steps to 50 only below 2 % per-step variation
DEFAULT_WARMUP_STEPS = 3  # BENCHMARKING 5.2.3: one full call of three steps warms an eager recipe up
DEADLINE_MARGIN_S = 30  # a cell is not started with less than this left before --deadline-s


# ----------------------------------------------------------------------------------------------- inputs


def bench_image(width: int, height: int, seed: int = 0) -> Any:
    """A smooth gradient with noise at the target size (decodes like a photo; no file in the repo)."""
    import numpy as np
    from PIL import Image

    from stillmotion.media.image_input import load_image_bytes

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return load_image_bytes(buffer.getvalue())


def bench_request(scenario: Scenario, seed: int, steps: int | None = None) -> Any:
    """The scenario's request (``steps`` instead of its step count, for a warm-up run)."""
    from stillmotion.engine.request import GenerationRequest

    return GenerationRequest(
        prompt=PROMPT,
        model=scenario.model,
        height=scenario.height,
        width=scenario.width,
        num_frames=scenario.num_frames,
        num_inference_steps=steps or scenario.num_inference_steps,
        guidance_scale=scenario.guidance_scale,
        seed=seed,
    )


def models_dir(scenario: Scenario, work_dir: Path) -> Path | None:
    """Random-weight models cache their weights under the work dir; hub models use the hub's own cache."""
    from stillmotion.models.registry import get_spec

    return work_dir / "models" if get_spec(scenario.model).random_weights else None


# ----------------------------------------------------------------------------------------------- measuring


class Poller:
    """Background sampling of device-level used memory (NVML view: context included) and host RSS."""

    def __init__(self, device: Any) -> None:
        self.cuda = device.type == "cuda"
        self.index = device.index or 0
        self.peak_device = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        import psutil
        import torch

        self.peak_rss = max(self.peak_rss, psutil.Process().memory_info().rss)
        if self.cuda:
            free, total = torch.cuda.mem_get_info(self.index)
            self.peak_device = max(self.peak_device, int(total - free))

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            self._sample()


class StepMarks:
    """Denoising-step boundaries: CUDA events on the current stream, or the host clock on the CPU.

    An event is recorded at each boundary without synchronising, so the engine's loop runs as it does for a
    user (it never synchronises either) and an event gap is the GPU's own time for that step, launch stalls
    and waits on offload copies included. The events are read once the run is over. Boundaries come in
    segments: one per start of the denoising loop (a fresh render, or a resume after an OOM retry); the first
    step of every segment carries lazy initialisation and first transfers and is excluded from the statistics
    (BENCHMARKING 5.1).
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.segments: list[list[Any]] = []
        self.open = False

    def start(self) -> None:
        self.segments.append([self._mark()])
        self.open = True

    def mark(self) -> None:
        if self.open:
            self.segments[-1].append(self._mark())

    def close(self) -> None:
        self.open = False

    def _mark(self) -> Any:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            return event
        return time.perf_counter()

    def _gap(self, a: Any, b: Any) -> float:
        return float(a.elapsed_time(b)) / 1000 if self.cuda else float(b - a)

    def step_times(self) -> tuple[list[float], list[float]]:
        """(first step of each segment, every other step) in seconds; call once the device is synchronised."""
        first: list[float] = []
        kept: list[float] = []
        for marks in self.segments:
            gaps = [self._gap(a, b) for a, b in zip(marks, marks[1:], strict=False)]
            first.extend(gaps[:1])
            kept.extend(gaps[1:])
        return first, kept


class PhaseMeter(EngineHooks):
    """Peak allocated / reserved memory and wall time per phase, switched by the engine's hooks.

    As an engine hook (engine/hooks.py): LOAD, ENCODE and DECODE start their phase; the denoise phase starts
    with the first step after ENCODE; the end of DECODE ends the measured run (checks and writing are not
    timed, as the stock pipeline has none). Every phase switch synchronises the device, reads the peaks of
    the phase that ends and resets them. A phase repeated after an OOM retry keeps its maxima and adds its
    time. The step hooks mark step boundaries (``steps``), without synchronising. The stock cell drives the
    same meter by hand (``enter``, ``steps``), from the pipeline's module hooks.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.phases: dict[str, dict[str, float]] = {}
        self.current: str | None = None
        self.started = 0.0
        self.resident_gib: float | None = None
        self.steps = StepMarks(self.cuda)
        self.frames: Any = None  # the decoded frames, float32 (frames, height, width, 3)
        self.decoded_at: float | None = None  # perf_counter when they were

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def enter(self, name: str | None) -> None:
        """End the current phase (reading its peaks) and start ``name`` (None: just end)."""
        import torch

        if name == self.current:
            return
        self.sync()
        now = time.perf_counter()
        if self.current is not None:
            entry = {"s": round(now - self.started, 4)}
            if self.cuda:
                entry["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
                entry["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(self.device) / GIB, 3)
            previous = self.phases.get(self.current)
            if previous is not None:
                entry["s"] = round(entry["s"] + previous["s"], 4)
                for key in ("peak_alloc_gib", "peak_reserved_gib"):
                    if key in entry:
                        entry[key] = max(entry[key], previous.get(key, 0.0))
            self.phases[self.current] = entry
        if name == "encode" and self.cuda:  # what the plan left on the device: the resident weights
            self.resident_gib = round(torch.cuda.memory_allocated(self.device) / GIB, 3)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.current, self.started = name, time.perf_counter()

    # -- the engine's hooks

    def phase_started(self, phase: Stage) -> None:
        if phase is Stage.LOAD:
            self.steps.close()  # a retry: the step that failed has no end; the resume starts a new segment
            self.enter("load")
        elif phase is Stage.ENCODE:
            self.enter("encode")
        elif phase is Stage.DECODE:
            self.steps.close()
            self.enter("decode")

    def phase_ended(self, phase: Stage) -> None:
        if phase is Stage.DECODE:
            self.enter(None)

    def step_started(self, step: int) -> None:
        if not self.steps.open:  # the first step of a run, or of the resume after an OOM retry
            self.enter("denoise")
            self.steps.start()

    def step_finished(self, step: int, checkpoint: Any) -> None:
        self.steps.mark()

    def frames_decoded(self, frames: Any) -> None:
        self.frames, self.decoded_at = frames, time.perf_counter()

    def finish(self) -> None:
        self.steps.close()
        self.enter(None)

    def peak(self, key: str) -> float | None:
        values = [p[key] for p in self.phases.values() if key in p]
        return max(values) if values else None


def merge_phases(every: list[PhaseMeter], timed: list[PhaseMeter]) -> dict[str, dict[str, float]]:
    """Per phase: peak memory over every run of the process (warm-up included: the process reached it), and
    the median seconds over the timed runs."""
    merged: dict[str, dict[str, float]] = {}
    for meter in every:
        for name, entry in meter.phases.items():
            target = merged.setdefault(name, {})
            for key in ("peak_alloc_gib", "peak_reserved_gib"):
                if key in entry:
                    target[key] = max(target.get(key, 0.0), entry[key])
    for name, target in merged.items():
        seconds = [m.phases[name]["s"] for m in timed if name in m.phases]
        target["s"] = round(statistics.median(seconds), 4) if seconds else 0.0
    return merged


def step_statistics(first: list[float], kept: list[float]) -> dict[str, Any]:
    """Median and min-max of the timed steps (first step of each run excluded) and their steadiness.

    ``per_step_cv`` is the sample standard deviation over the mean. Above ``CV_LIMIT`` (or with fewer than
    two timed steps, where it cannot be judged) ``extrapolation_flagged`` is true and ``note`` says why:
    BENCHMARKING 5.2.4 allows extrapolating a few steps to 50 only for steady steps.
    """
    values = kept or first  # no step but the first timed: report it rather than nothing (flagged below)
    out: dict[str, Any] = {
        "per_step_s": round(statistics.median(values), 4) if values else None,
        "per_step_min_s": round(min(values), 4) if values else None,
        "per_step_max_s": round(max(values), 4) if values else None,
        "per_step_n": len(kept),
        "per_step_cv": None,
        "first_step_s": [round(t, 4) for t in first],
        "step_times_s": [round(t, 4) for t in kept],
        "extrapolation_flagged": True,
        "note": None,
    }
    if len(kept) < 2:
        out["note"] = (
            f"only {len(kept)} timed step(s) after excluding each run's first"
            + ("" if kept else " (per_step_s is the first step's time)")
            + f": steadiness cannot be judged, est_{REFERENCE_STEPS}_steps_s is unvalidated "
            "(use more --steps or --repeats)"
        )
        return out
    cv = statistics.stdev(kept) / statistics.mean(kept)
    out["per_step_cv"] = round(cv, 4)
    out["extrapolation_flagged"] = cv > CV_LIMIT
    if cv > CV_LIMIT:
        out["note"] = (
            f"per-step coefficient of variation {cv:.1%} > {CV_LIMIT:.0%}: "
            f"est_{REFERENCE_STEPS}_steps_s extrapolates unsteady steps; validate with a real "
            f"{REFERENCE_STEPS}-step run"
        )
    return out


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _estimate_vs_measured(plan: Any, phases: dict[str, dict[str, float]]) -> dict[str, Any]:
    est = plan.estimate
    if est is None:
        return {}
    out: dict[str, Any] = {
        "est_peak_reserved_gib": round(est.peak_reserved_gib, 3),
        "est_peak_alloc_gib": round(est.peak_allocated_gib, 3),
    }
    for name in ("encode", "denoise", "decode"):
        phase = getattr(est, name)
        measured = phases.get(name, {})
        out[f"est_{name}_reserved_gib"] = round(phase.reserved_gib, 3)
        out[f"est_{name}_alloc_gib"] = round(phase.allocated_gib, 3)
        if measured.get("peak_reserved_gib", 0.0) > 0:
            out[f"err_{name}_reserved"] = round(phase.reserved_gib / measured["peak_reserved_gib"] - 1, 4)
    measured_peak = max((p.get("peak_reserved_gib", 0.0) for p in phases.values()), default=0.0)
    if measured_peak:
        out["err_peak_reserved"] = round(est.peak_reserved_gib / measured_peak - 1, 4)
    return out


def _memory_summary(
    phases: dict[str, dict[str, float]], timed: list[PhaseMeter], poller: Poller
) -> dict[str, Any]:
    def peak(key: str) -> float | None:
        values = [p[key] for p in phases.values() if key in p]
        return max(values) if values else None

    resident = [m.resident_gib for m in timed if m.resident_gib is not None]
    return {
        "peak_alloc_gib": peak("peak_alloc_gib"),
        "peak_reserved_gib": peak("peak_reserved_gib"),
        "peak_nvml_gib": round(poller.peak_device / GIB, 3) if poller.cuda else None,
        "resident_gib": resident[0] if resident else None,
        "host_rss_gib": round(poller.peak_rss / GIB, 3),
    }


def _attention_backend(device: Any) -> str:
    import torch

    if device.type != "cuda":
        return "sdpa-cpu"
    enabled = [
        name
        for name, on in (
            ("flash", torch.backends.cuda.flash_sdp_enabled()),  # type: ignore[no-untyped-call]
            ("mem_efficient", torch.backends.cuda.mem_efficient_sdp_enabled()),  # type: ignore[no-untyped-call]
            ("math", torch.backends.cuda.math_sdp_enabled()),  # type: ignore[no-untyped-call]
        )
        if on
    ]
    return "sdpa(" + ",".join(enabled) + ")"


# ----------------------------------------------------------------------------------------------- our plans


def _runs(args: argparse.Namespace) -> list[int | None]:
    """Step overrides per call: the warm-up call's steps (if any), then None for each timed repeat."""
    warmup = int(getattr(args, "warmup_steps", 0) or 0)
    return ([warmup] if warmup > 0 else []) + [None] * max(1, int(getattr(args, "repeats", 1) or 1))


def _repeat_diff(frames: list[Any]) -> dict[str, Any]:
    """Determinism across the timed repeats (same seed, same process): max abs difference from the first."""
    import numpy as np

    if len(frames) < 2:
        return {}
    worst = max(float(np.abs(f.astype(np.float64) - frames[0]).max()) for f in frames[1:])
    return {"repeat_max_abs_diff": worst}


def _timing_fields(
    every: list[PhaseMeter], timed: list[PhaseMeter], totals: list[float], warmup_s: float | None
) -> dict[str, Any]:
    first: list[float] = []
    kept: list[float] = []
    for meter in timed:
        a, b = meter.steps.step_times()
        first.extend(a)
        kept.extend(b)
    return {
        **step_statistics(first, kept),
        "repeats": len(timed),
        "warmup_runs": len(every) - len(timed),
        "warmup_s": None if warmup_s is None else round(warmup_s, 3),
        "total_s": _median(totals),
        "total_min_s": round(min(totals), 3) if totals else None,
        "total_max_s": round(max(totals), 3) if totals else None,
    }


def run_plan_cell(scenario: Scenario, args: argparse.Namespace, frames_path: Path) -> dict[str, Any]:
    """Engine.generate on the scenario, as a user's generation runs (same planner, same recovery), with the
    request resolved first and ``PhaseMeter`` as a hook.

    With ``--warmup-steps N`` a first full run of N steps (same shape) warms the process up; then
    ``--repeats`` timed runs. Every run re-plans, as a user's would; the weights stay loaded.
    """
    import numpy as np

    from stillmotion import faults
    from stillmotion.config import Settings
    from stillmotion.engine.engine import Engine
    from stillmotion.engine.resolve import resolve
    from stillmotion.errors import CannotFit

    work = Path(args.work_dir)
    settings = Settings(
        data_dir=work / "data",
        models_dir=models_dir(scenario, work),
        default_model=scenario.model,
        device=args.device,
        offline=True,
        vram_budget_gb=scenario.cap_gib or None,  # on CUDA the per-process fraction gives the same cap
        allow_approximate=scenario.allow_approximate,
    )
    engine = Engine(settings)
    image = bench_image(scenario.width, scenario.height)
    size = (image.width, image.height)
    request = resolve(bench_request(scenario, args.seed), settings, size)
    try:
        planned = engine.plan(request, strategy=scenario.strategy)
    except CannotFit as exc:  # refused up front, before any weight is loaded: handled, not failed
        return {"ok": True, "refused": exc.message, "refused_details": exc.details}
    record: dict[str, Any] = {"budget": planned.budget.to_dict(), "plan": planned.plan.to_dict()}
    every: list[PhaseMeter] = []
    timed: list[tuple[PhaseMeter, Any]] = []
    totals: list[float] = []
    warmup_s: float | None = None
    cold_start: float | None = None
    with Poller(engine.device) as poller, tempfile.TemporaryDirectory() as videos:
        for index, steps in enumerate(_runs(args)):
            meter = PhaseMeter(engine.device)
            call = (
                request
                if steps is None
                else resolve(bench_request(scenario, args.seed, steps), settings, size)
            )
            output = Path(videos, f"run-{index}.mp4")
            started = time.perf_counter()
            result = engine.generate(
                call, image, output, [*faults.hooks(), meter], strategy=scenario.strategy
            )
            meter.finish()
            every.append(meter)
            if cold_start is None:  # the first run of the process loads (and at first builds) the weights
                cold_start = result.timings.get("load_s", 0.0)
            assert meter.decoded_at is not None
            if steps is None:
                timed.append((meter, result))
                totals.append(meter.decoded_at - started)
            else:
                warmup_s = meter.decoded_at - started
                meter.frames = None  # only the timed runs' frames are compared; host memory is measured
    meters = [m for m, _ in timed]
    results = [r for _, r in timed]
    frames = [m.frames.numpy() for m in meters]
    frames_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(frames_path, frames[0])
    last = results[-1]
    engine_steps = [r.timings["per_step_s"] for r in results if "per_step_s" in r.timings]
    pre = _median([r.timings.get("encode_s", 0.0) for r in results]) or 0.0
    decode = _median([r.timings.get("decode_s", 0.0) for r in results]) or 0.0
    downgrades = list(last.downgrades)
    fields_ = _timing_fields(every, meters, totals, warmup_s)
    per_step = fields_["per_step_s"] if fields_["per_step_s"] is not None else _median(engine_steps)
    fields_["per_step_s"] = per_step
    phases = merge_phases(every, meters)
    record.update({"phases": phases, **_memory_summary(phases, meters, poller)})
    record.update(
        {
            "ok": True,
            "dtype": last.plan.dtype,
            "backend": _attention_backend(engine.device),
            "final_plan": last.plan.rung,
            "final_plans": [r.plan.rung for r in results],
            "downgrades": downgrades,
            "oom_retries": len(downgrades),
            "oom_phase": downgrades[0]["phase"] if downgrades else None,
            "steps": scenario.num_inference_steps,
            "timings": last.timings,
            **fields_,
            # The engine's own figure (its step clock, or its CUDA events where it records them).
            "per_step_engine_s": _median(engine_steps),
            "pre_s": round(pre, 3),
            "load_s": round(_median([r.timings.get("load_s", 0.0) for r in results]) or 0.0, 3),
            "decode_s": round(decode, 3),
            "cold_start_s": round(cold_start or 0.0, 3),
            "est_50_steps_s": round(pre + REFERENCE_STEPS * (per_step or 0.0) + decode, 2),
            "nan": any(bool(np.isnan(f).any()) for f in frames),
            "warnings": list(last.warnings),
            **_repeat_diff(frames),
        }
    )
    record.update(_estimate_vs_measured(last.plan, phases))
    engine.unload()
    return record


# ------------------------------------------------------------------------------------------- stock recipes


def run_stock_cell(scenario: Scenario, args: argparse.Namespace, frames_path: Path) -> dict[str, Any]:
    """diffusers' own I2VGenXLPipeline, as-is, with its documented memory recipe, on the same weights.

    Warm-up and repeats as for plan cells: pipeline calls on the same pipeline object. Step boundaries are the
    UNet calls (one batched-guidance call per step), so a run of n steps times steps 2 .. n-1.
    """
    import numpy as np
    import torch
    from diffusers import I2VGenXLPipeline

    from stillmotion.models.i2vgen_xl import I2VGenXLComponents
    from stillmotion.models.loader import load_components
    from stillmotion.models.registry import get_spec

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    spec = get_spec(scenario.model)
    request = bench_request(scenario, args.seed)
    image = bench_image(scenario.width, scenario.height)
    resolved = request.resolve(spec, (image.width, image.height))
    every: list[PhaseMeter] = []
    timed: list[PhaseMeter] = []
    totals: list[float] = []
    frames: list[Any] = []
    warmup_s: float | None = None
    with Poller(device) as poller:
        meter = PhaseMeter(device)
        meter.enter("load")
        components = load_components(spec, dtype, cache_dir=models_dir(scenario, Path(args.work_dir)))
        if not isinstance(components, I2VGenXLComponents):
            raise SystemExit(
                f"stock recipes run I2VGenXLPipeline; {scenario.model} is not an I2VGen-XL model"
            )
        parts = {f.name: getattr(components, f.name) for f in fields(components)}
        text_encoder = parts["text_encoder"]
        if not hasattr(text_encoder, "text_model"):
            # transformers 5 flattened CLIPTextModel; the deprecated pipeline still reads .text_model. Alias
            # it without registering a submodule (a registered self-reference would recurse in .to()).
            object.__setattr__(text_encoder, "text_model", text_encoder)
        pipe = I2VGenXLPipeline(**parts)
        pipe.set_progress_bar_config(disable=True)
        if scenario.recipe == "stock-model-offload":
            pipe.enable_model_cpu_offload(device=device)
        elif scenario.recipe == "stock-group-leaf":
            from diffusers.hooks import apply_group_offloading

            for net in components.modules().values():
                apply_group_offloading(
                    net, onload_device=device, offload_type="leaf_level", use_stream=device.type == "cuda"
                )
        else:
            raise SystemExit(f"unknown recipe {scenario.recipe!r}")
        meter.enter(None)
        cold_start = meter.phases["load"]["s"]
        current = [meter]

        def unet_called(*_: Any) -> None:  # one batched-CFG UNet call per step
            if current[0].current != "denoise":
                current[0].enter("denoise")
                current[0].steps.start()
            else:
                current[0].steps.mark()

        def decode_started(*_: Any) -> None:
            current[0].steps.close()
            current[0].enter("decode")

        components.unet.register_forward_pre_hook(unet_called)
        components.vae.decoder.register_forward_pre_hook(decode_started)
        for index, steps in enumerate(_runs(args)):
            meter = meter if index == 0 else PhaseMeter(device)  # the first call's meter holds the load
            current[0] = meter
            meter.enter("encode")
            started = time.perf_counter()
            # Same seeds as the engine: the pipeline draws the VAE posterior sample from the global RNG.
            torch.manual_seed(args.seed)
            output = pipe(
                prompt=resolved.prompt,
                negative_prompt=resolved.negative_prompt,
                image=image.image,
                height=resolved.height,
                width=resolved.width,
                target_fps=resolved.fps,
                num_frames=resolved.num_frames,
                num_inference_steps=steps or resolved.num_inference_steps,
                guidance_scale=resolved.guidance_scale,
                decode_chunk_size=1,
                output_type="np",
                generator=torch.Generator("cpu").manual_seed(args.seed),
            )
            meter.finish()
            elapsed = time.perf_counter() - started
            every.append(meter)
            if steps is None:
                timed.append(meter)
                totals.append(elapsed)
                frames.append(np.asarray(output.frames[0], dtype=np.float32))
            else:
                warmup_s = elapsed
    frames_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(frames_path, frames[0])
    phases = merge_phases(every, timed)
    pre = _median([m.phases.get("encode", {}).get("s", 0.0) for m in timed]) or 0.0
    decode = _median([m.phases.get("decode", {}).get("s", 0.0) for m in timed]) or 0.0
    fields_ = _timing_fields(every, timed, totals, warmup_s)
    return {
        "ok": True,
        "dtype": str(dtype).removeprefix("torch."),
        "backend": _attention_backend(device),
        "phases": phases,
        **_memory_summary(phases, timed, poller),
        "oom_retries": 0,
        "steps": scenario.num_inference_steps,
        **fields_,
        "pre_s": round(pre, 3),
        "decode_s": round(decode, 3),
        "cold_start_s": round(cold_start, 3),
        "est_50_steps_s": round(pre + REFERENCE_STEPS * (fields_["per_step_s"] or 0.0) + decode, 2),
        "nan": any(bool(np.isnan(f).any()) for f in frames),
        **_repeat_diff(frames),
    }


# ----------------------------------------------------------------------------------------------- comparing


def compare_frames(frames: Any, reference: Any) -> dict[str, Any]:
    """Max abs difference and PSNR (frames in [0, 1]); PSNR is None when the frames are bit-identical."""
    import numpy as np

    if frames.shape != reference.shape:
        return {"max_abs_diff_vs_uncapped": None, "compare_error": f"{frames.shape} vs {reference.shape}"}
    diff = frames.astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return {
        "max_abs_diff_vs_uncapped": float(np.abs(diff).max()),
        "psnr_vs_uncapped": None if mse == 0 else round(10 * math.log10(1.0 / mse), 2),
        "bitwise_equal_to_uncapped": mse == 0 and bool(np.array_equal(frames, reference)),
    }


def _tmp_dir(args: argparse.Namespace) -> Path:
    return Path(args.out_dir, "tmp", args.name)


def _reference_path(scenario: Scenario, args: argparse.Namespace) -> Path:
    model = scenario.model.replace("/", "_")
    return _tmp_dir(args) / (
        f"reference-{model}-{scenario.shape_key}-seed{args.seed}-steps{scenario.num_inference_steps}.npy"
    )


def _compare_cell(scenario: Scenario, frames_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """In the parent: keep the reference cell's frames, compare any other cell's with them, then delete."""
    import numpy as np

    if not frames_path.exists():
        return {}
    reference = _reference_path(scenario, args)
    if scenario.is_reference:
        frames_path.replace(reference)
        return {"reference": True, "max_abs_diff_vs_uncapped": 0.0, "psnr_vs_uncapped": None}
    try:
        if not reference.exists():
            return {"max_abs_diff_vs_uncapped": None, "compare_error": "no uncapped run of this shape yet"}
        return compare_frames(np.load(frames_path), np.load(reference))
    finally:
        frames_path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- processes


def environment(device: str) -> dict[str, Any]:
    import torch

    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers", "accelerate", "stillmotion"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    info: dict[str, Any] = {"versions": versions, "host": platform.node()}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = {
            "name": props.name,
            "total_gib": round(props.total_memory / GIB, 2),
            "cuda": torch.version.cuda,
        }
    else:
        info["device"] = {"name": device}
    return info


def run_cell(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    """In the child process: allocator first, then the cap, then the run."""
    from stillmotion.memory.device import configure_allocator

    # Our plans run with the allocator config the engine sets; stock recipes with whatever the user has.
    alloc_conf = (
        configure_allocator() if scenario.recipe == "plan" else os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    )
    import torch

    if args.device.startswith("cuda") and scenario.cap_gib > 0:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, scenario.cap_gib * GIB / total), 0)
    frames_path = Path(args.frames_out)
    start = time.perf_counter()
    try:
        if scenario.recipe == "plan":
            body = run_plan_cell(scenario, args, frames_path)
        else:
            body = run_stock_cell(scenario, args, frames_path)
    except torch.OutOfMemoryError as exc:  # stock recipes have no recovery: recorded, not hidden
        body = {"ok": False, "error": f"unhandled out of memory: {str(exc)[:300]}"}
    except Exception as exc:  # the engine's OutOfMemory (every rung failed) and anything else
        from stillmotion.errors import StillmotionError

        if not isinstance(exc, StillmotionError):
            raise
        body = {"ok": False, "error": f"{exc.code}: {exc.message}"[:500]}
    return {
        "scenario": scenario.to_dict(),
        "recipe": scenario.recipe,
        "model": scenario.model,
        "res": f"{scenario.width}x{scenario.height}",
        "frames": scenario.num_frames,
        "alloc_conf": alloc_conf,
        "wall_s": round(time.perf_counter() - start, 2),
        **body,
    }


def flop_fields(scenario: Scenario, per_step_s: float | None) -> dict[str, Any]:
    """``tflop_per_step`` (counted on meta, cached per shape) and ``mfu`` for the full-size architecture.

    Other models (the tiny CPU model) are a different network: null, not a wrong number.
    """
    from stillmotion.bench.flops import (
        FULL_SIZE_MODELS,
        PEAK_TFLOPS,
        family_tflop_per_step,
        mfu,
        tflop_per_step,
    )
    from stillmotion.models.registry import get_spec

    shape = (scenario.height, scenario.width, scenario.num_frames, scenario.guidance_scale)
    spec = get_spec(scenario.model)
    if scenario.model in FULL_SIZE_MODELS:
        tflop = tflop_per_step(*shape)
    elif spec.family != "i2vgen-xl" and not spec.tiny and spec.config_name is not None:
        tflop = family_tflop_per_step(scenario.model, *shape)  # Wan, SVD, LTX at full size
    else:
        return {"tflop_per_step": None, "mfu": None}
    ratio = mfu(tflop, per_step_s)
    return {
        "tflop_per_step": round(tflop, 3),
        "tflops_achieved": None if not per_step_s else round(tflop / per_step_s, 1),
        "mfu": None if ratio is None else round(ratio, 4),
        "mfu_peak_tflops": PEAK_TFLOPS,
    }


def _done_names(out_path: Path) -> set[str]:
    """Cells already finished in this results file (ok, or refused up front): ``--skip-done`` resumes."""
    if not out_path.exists():
        return set()
    names = set()
    for line in out_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("ok") and "name" in row:
            names.add(row["name"])
    return names


def run_grid(scenarios: list[Scenario], args: argparse.Namespace, out_path: Path, command: str) -> int:
    """Parent: one subprocess per cell; every cell writes exactly one line, crashes and skips included.

    With ``--deadline-s`` no cell starts with less than ``DEADLINE_MARGIN_S`` left, a started cell is cut at
    the deadline, and the cells left are written as ``skipped`` (not failed): re-running the same command
    with ``--skip-done`` picks them up.
    """
    header = {"command": command, **environment(args.device)}
    failures = 0
    began = time.perf_counter()
    deadline = getattr(args, "deadline_s", None)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        timeout = float(args.cell_timeout_s)
        skipped = None
        if deadline:
            left = deadline - (time.perf_counter() - began)
            timeout = min(timeout, left)
            if left < DEADLINE_MARGIN_S:
                skipped = f"deadline: {deadline:g} s for the command, {max(left, 0):.0f} s left"
        frames_path = _tmp_dir(args) / f"{scenario.name}-{os.getpid()}.npy"
        if skipped is not None:
            row: dict[str, Any] = {"scenario": scenario.to_dict(), "ok": None, "skipped": skipped}
        else:
            row = _run_child(scenario, args, frames_path, timeout)
        if row.get("ok") and "refused" not in row:
            row.update(_compare_cell(scenario, frames_path, args))
            row.update(flop_fields(scenario, row.get("per_step_s")))
        frames_path.unlink(missing_ok=True)
        row = {"name": scenario.name, **header, **row}
        failures += 0 if row.get("ok") or "skipped" in row else 1
        with out_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        summary = (
            f"{scenario.name}: ok={row.get('ok')} "
            f"plan={row.get('final_plan') or str(row.get('refused') or row.get('skipped') or '')[:60]} "
            f"reserved={row.get('peak_reserved_gib')} est={row.get('est_peak_reserved_gib')} "
            f"s/step={row.get('per_step_s')} cv={row.get('per_step_cv')} mfu={row.get('mfu')} "
            f"diff={row.get('max_abs_diff_vs_uncapped')} wall={row.get('wall_s')}\n"
        )
        sys.stdout.write(summary)
        sys.stdout.flush()
    return failures


def _run_child(
    scenario: Scenario, args: argparse.Namespace, frames_path: Path, timeout: float
) -> dict[str, Any]:
    child = [
        sys.executable,
        "-m",
        "stillmotion.bench",
        "--cell",
        json.dumps(scenario.to_dict()),
        "--device",
        args.device,
        "--seed",
        str(args.seed),
        "--work-dir",
        str(args.work_dir),
        "--frames-out",
        str(frames_path),
        "--repeats",
        str(args.repeats),
        "--warmup-steps",
        str(args.warmup_steps),
    ]
    try:
        proc = subprocess.run(child, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"scenario": scenario.to_dict(), "ok": False, "error": f"timeout after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        row: dict[str, Any] = json.loads(lines[-1])
        return row
    return {
        "scenario": scenario.to_dict(),
        "ok": False,
        "error": f"cell process exited with {proc.returncode}",
        "stderr_tail": proc.stderr[-2000:],
    }


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stillmotion.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="grid", help="results file: <out-dir>/<name>.jsonl (appended)")
    parser.add_argument("--out-dir", default="bench/results")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--model", default=BENCH_MODEL, help="registered model (default: %(default)s)")
    parser.add_argument("--sizes", default=None, help="square sizes, e.g. 512,768 (default: 512,768,1024)")
    parser.add_argument("--frames", default=None, help="frame counts (default: 16,32)")
    parser.add_argument(
        "--caps",
        default=None,
        help="per-process caps in GiB (default: 3,4,6,8,12,24; the uncapped reference always runs first)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the one-command subset (512,1024 x 16 frames x uncapped, 4, 6 GiB + stock model offload, "
        "6 steps, 3 warm-up steps, 540 s deadline); explicit options override it",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="denoising steps timed per run (default 4); totals extrapolate",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help=f"steps of one full warm-up call before timing, 0 = none (default {DEFAULT_WARMUP_STEPS})",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs per cell, in its process (default 1)"
    )
    parser.add_argument(
        "--deadline-s", type=float, default=None, help="start no cell after this many seconds (quick: 540)"
    )
    parser.add_argument("--skip-done", action="store_true", help="skip cells with an ok line in the file")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock diffusers recipes")
    parser.add_argument("--only", default="", help="run only cells whose name contains this")
    parser.add_argument("--strategy", default=None, help="force a rung in every capped plan cell")
    parser.add_argument("--allow-approximate", action="store_true")
    parser.add_argument(
        "--tiny", action="store_true", help="shorthand for --model tiny-i2vgen-xl (CPU smoke test)"
    )
    parser.add_argument("--seed", type=int, default=0, help="generation seed (the weights' seed is fixed)")
    parser.add_argument(
        "--work-dir",
        default=os.path.join(tempfile.gettempdir(), "stillmotion-bench"),
        help="the random-weights cache (models/) and the engine's data folder",
    )
    parser.add_argument("--cell-timeout-s", type=int, default=DEFAULT_CELL_TIMEOUT_S)
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # internal: run one cell, print JSON
    parser.add_argument("--frames-out", default=None, help=argparse.SUPPRESS)  # internal: the cell's frames
    args = parser.parse_args(argv)
    if args.tiny:
        args.model = "tiny-i2vgen-xl"
    preset = QUICK if args.quick else None
    if args.steps is None:
        args.steps = preset.steps if preset else 4
    if args.warmup_steps is None:
        args.warmup_steps = preset.warmup_steps if preset else DEFAULT_WARMUP_STEPS
    if args.deadline_s is None and preset:
        args.deadline_s = preset.deadline_s
    return args


def select(args: argparse.Namespace) -> list[Scenario]:
    """The cells the options ask for, in run order (each shape's uncapped reference first)."""
    preset = QUICK if args.quick else None
    sizes = _ints(args.sizes) if args.sizes else (preset.sizes if preset else ISSUE3_SIZES)
    frames = _ints(args.frames) if args.frames else (preset.frames if preset else ISSUE3_FRAMES)
    caps = _floats(args.caps) if args.caps else (preset.caps_gib if preset else ISSUE3_CAPS_GIB)
    scenarios = grid(
        sizes,
        frames,
        caps,
        steps=args.steps,
        stock=not args.no_stock,
        model=args.model,
        stock_recipes=preset.stock_recipes if preset else STOCK_RECIPES,
    )
    if args.strategy or args.allow_approximate:
        scenarios = [
            replace(s, strategy=args.strategy, allow_approximate=args.allow_approximate)
            if s.recipe == "plan" and s.cap_gib > 0
            else s
            for s in scenarios
        ]
    if args.only:
        scenarios = [s for s in scenarios if args.only in s.name]
    return scenarios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cell is not None:
        scenario = Scenario(**json.loads(args.cell))
        sys.stdout.write(json.dumps(run_cell(scenario, args)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scenarios = select(args)
    command = "python -m stillmotion.bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    out_path = Path(args.out_dir) / f"{args.name}.jsonl"
    if args.skip_done:
        done = _done_names(out_path)
        scenarios = [s for s in scenarios if s.name not in done]
    failures = run_grid(scenarios, args, out_path, command)
    sys.stdout.write(f"{len(scenarios)} cells, {failures} failed -> {out_path}\n")
    return 1 if failures else 0
