"""Run the benchmark grid: each cell in its own process, one JSON line per cell in bench/results/<name>.jsonl.

A plan cell runs the product: ``Engine(settings).render(...)`` (steps 1-5 of ``Engine.generate``: plan, load,
encode, denoise, decode, OOM recovery) on ``i2vgen-xl-random``, the full-size I2VGen-XL with seeded random
weights (models/random_full.py; built once, then loaded from its cached safetensors file). Before the engine
starts the cell turns on expandable segments and caps the process with
``torch.cuda.set_per_process_memory_fraction``. Peak allocated / reserved memory is read per phase from the
engine's own progress events (LOAD, ENCODE, DENOISE, DECODE), plus the first UNet call as the end of the
encode phase; seconds per step and OOM downgrades come from the engine's result. The decoded frames go to a
.npy file in the results folder's tmp area and the parent compares them with the uncapped run's.

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
    Scenario,
    grid,
)

logger = logging.getLogger("stillmotion.bench")

GIB = 1024**3
REFERENCE_STEPS = 50  # totals are extrapolated to the product's default step count
DEFAULT_CELL_TIMEOUT_S = 1800
PROMPT = "a lighthouse on a cliff, waves rolling in"  # content does not change memory or time
POLL_INTERVAL_S = 0.02


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


def bench_request(scenario: Scenario, seed: int) -> Any:
    from stillmotion.engine.request import GenerationRequest

    return GenerationRequest(
        prompt=PROMPT,
        model=scenario.model,
        height=scenario.height,
        width=scenario.width,
        num_frames=scenario.num_frames,
        num_inference_steps=scenario.num_inference_steps,
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


class PhaseMeter:
    """Peak allocated / reserved memory and wall time per phase, switched by the engine's progress events.

    ``on_progress`` is the engine's callback: LOAD, ENCODE and DECODE start their phase; the denoise phase
    starts at the first UNet call after ENCODE (a self-removing global forward pre-hook, since the first
    DENOISE event only arrives after step 1). Every switch synchronises the device, reads the peaks of the
    phase that ends and resets them. A phase repeated after an OOM retry keeps its maxima and adds its time.
    DENOISE events also stamp synchronised step boundaries (``step_gaps``).
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.phases: dict[str, dict[str, float]] = {}
        self.current: str | None = None
        self.started = 0.0
        self.resident_gib: float | None = None
        self.step_stamps: list[float] = []
        self.step_gaps: list[float] = []
        self._hook: Any = None

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

    def on_progress(self, event: Any) -> None:
        from stillmotion.engine.progress import Stage

        if event.stage is Stage.LOAD:
            self._disarm()
            self.step_stamps = []  # a retry: gaps across the reload are not step times
            self.enter("load")
        elif event.stage is Stage.ENCODE:
            self.enter("encode")
            self._arm_unet_hook()
        elif event.stage is Stage.DENOISE:
            self.enter("denoise")
            self.sync()
            now = time.perf_counter()
            if self.step_stamps:
                self.step_gaps.append(now - self.step_stamps[-1])
            self.step_stamps.append(now)
        elif event.stage is Stage.DECODE:
            self._disarm()
            self.enter("decode")

    def unet_started(self, module: Any) -> None:
        self._disarm()
        self.enter("denoise")

    def finish(self) -> None:
        self._disarm()
        self.enter(None)

    def peak(self, key: str) -> float | None:
        values = [p[key] for p in self.phases.values() if key in p]
        return max(values) if values else None

    def _arm_unet_hook(self) -> None:
        import torch
        from diffusers import I2VGenXLUNet

        self._disarm()

        def hook(module: torch.nn.Module, args: Any) -> None:
            if isinstance(module, I2VGenXLUNet):
                self.unet_started(module)

        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(hook)

    def _disarm(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _median_after_first(values: list[float]) -> float | None:
    values = values[1:] if len(values) > 1 else values
    return round(statistics.median(values), 4) if values else None


def _estimate_vs_measured(plan: Any, meter: PhaseMeter) -> dict[str, Any]:
    est = plan.estimate
    if est is None:
        return {}
    out: dict[str, Any] = {
        "est_peak_reserved_gib": round(est.peak_reserved_gib, 3),
        "est_peak_alloc_gib": round(est.peak_allocated_gib, 3),
    }
    for name in ("encode", "denoise", "decode"):
        phase = getattr(est, name)
        measured = meter.phases.get(name, {})
        out[f"est_{name}_reserved_gib"] = round(phase.reserved_gib, 3)
        out[f"est_{name}_alloc_gib"] = round(phase.allocated_gib, 3)
        if measured.get("peak_reserved_gib", 0.0) > 0:
            out[f"err_{name}_reserved"] = round(phase.reserved_gib / measured["peak_reserved_gib"] - 1, 4)
    measured_peak = meter.peak("peak_reserved_gib")
    if measured_peak:
        out["err_peak_reserved"] = round(est.peak_reserved_gib / measured_peak - 1, 4)
    return out


def _memory_fields(meter: PhaseMeter, poller: Poller) -> dict[str, Any]:
    return {
        "phases": meter.phases,
        "peak_alloc_gib": meter.peak("peak_alloc_gib"),
        "peak_reserved_gib": meter.peak("peak_reserved_gib"),
        "peak_nvml_gib": round(poller.peak_device / GIB, 3) if poller.cuda else None,
        "resident_gib": meter.resident_gib,
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


def run_plan_cell(scenario: Scenario, args: argparse.Namespace, frames_path: Path) -> dict[str, Any]:
    """Engine.render on the scenario, as a user's generation would run (same planner, same recovery)."""
    import numpy as np

    from stillmotion.config import Settings
    from stillmotion.engine.engine import Engine
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
    request = bench_request(scenario, args.seed)
    image = bench_image(scenario.width, scenario.height)
    try:
        planned = engine.plan(request, (image.width, image.height), strategy=scenario.strategy)
    except CannotFit as exc:  # refused up front, before any weight is loaded: handled, not failed
        return {"ok": True, "refused": exc.message, "refused_details": exc.details}
    record: dict[str, Any] = {"budget": planned.budget.to_dict(), "plan": planned.plan.to_dict()}
    meter = PhaseMeter(engine.device)
    with Poller(engine.device) as poller:
        rendered = engine.render(request, image, on_progress=meter.on_progress, strategy=scenario.strategy)
        meter.finish()
    frames = rendered.frames.numpy()
    frames_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(frames_path, frames)
    timings = rendered.timings
    per_step = timings.get("per_step_s", 0.0)
    pre = timings.get("load_s", 0.0) + timings.get("encode_s", 0.0)
    decode = timings.get("decode_s", 0.0)
    downgrades = list(rendered.downgrades)
    synced = _median_after_first(meter.step_gaps) if meter.cuda else None
    record.update(_memory_fields(meter, poller))
    record.update(
        {
            "ok": True,
            "dtype": rendered.plan.dtype,
            "backend": _attention_backend(engine.device),
            "final_plan": rendered.plan.rung,
            "downgrades": downgrades,
            "oom_retries": len(downgrades),
            "oom_phase": downgrades[0]["phase"] if downgrades else None,
            "steps": scenario.num_inference_steps,
            "timings": timings,
            "per_step_s": round(per_step, 4),
            "per_step_synced_s": synced,
            "pre_s": round(pre, 3),
            "decode_s": round(decode, 3),
            "total_s": round(rendered.clock.elapsed, 3),
            "cold_start_s": round(timings.get("load_s", 0.0), 3),
            # The engine's step clock does not synchronise the device; the synchronised gap is the honest one.
            "est_50_steps_s": round(pre + REFERENCE_STEPS * (synced or per_step) + decode, 2),
            "nan": bool(np.isnan(frames).any()),
            "warnings": rendered.warnings,
        }
    )
    record.update(_estimate_vs_measured(rendered.plan, meter))
    engine.unload()
    return record


# ------------------------------------------------------------------------------------------- stock recipes


def run_stock_cell(scenario: Scenario, args: argparse.Namespace, frames_path: Path) -> dict[str, Any]:
    """diffusers' own I2VGenXLPipeline, as-is, with its documented memory recipe, on the same weights."""
    import numpy as np
    import torch
    from diffusers import I2VGenXLPipeline

    from stillmotion.models.loader import load_components
    from stillmotion.models.registry import get_spec

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    spec = get_spec(scenario.model)
    request = bench_request(scenario, args.seed)
    image = bench_image(scenario.width, scenario.height)
    resolved = request.resolve(spec, (image.width, image.height))
    meter = PhaseMeter(device)
    with Poller(device) as poller:
        meter.enter("load")
        components = load_components(spec, dtype, cache_dir=models_dir(scenario, Path(args.work_dir)))
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
        stamps: list[float] = []

        def unet_called(*_: Any) -> None:  # one batched-CFG UNet call per step
            meter.enter("denoise")
            meter.sync()
            stamps.append(time.perf_counter())

        def decode_started(*_: Any) -> None:
            meter.enter("decode")

        components.unet.register_forward_pre_hook(unet_called)
        components.vae.decoder.register_forward_pre_hook(decode_started)
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
            num_inference_steps=resolved.num_inference_steps,
            guidance_scale=resolved.guidance_scale,
            decode_chunk_size=1,
            output_type="np",
            generator=torch.Generator("cpu").manual_seed(args.seed),
        )
        meter.finish()
        total = time.perf_counter() - started
    frames = np.asarray(output.frames[0], dtype=np.float32)
    frames_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(frames_path, frames)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    per_step = _median_after_first(gaps) or 0.0
    pre = meter.phases.get("encode", {}).get("s", 0.0)
    decode = meter.phases.get("decode", {}).get("s", 0.0)
    return {
        "ok": True,
        "dtype": str(dtype).removeprefix("torch."),
        "backend": _attention_backend(device),
        **_memory_fields(meter, poller),
        "oom_retries": 0,
        "steps": scenario.num_inference_steps,
        "per_step_s": per_step,
        "pre_s": round(pre, 3),
        "decode_s": round(decode, 3),
        "total_s": round(total, 3),
        "cold_start_s": meter.phases.get("load", {}).get("s"),
        "est_50_steps_s": round(pre + REFERENCE_STEPS * per_step + decode, 2),
        "nan": bool(np.isnan(frames).any()),
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
        "tflop_per_step": None,  # not measured yet (FlopCounterMode over one UNet call)
        "mfu": None,
        **body,
    }


def run_grid(scenarios: list[Scenario], args: argparse.Namespace, out_path: Path, command: str) -> int:
    """Parent: one subprocess per cell; every cell writes exactly one line, crashes included."""
    header = {"command": command, **environment(args.device)}
    failures = 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
        frames_path = _tmp_dir(args) / f"{scenario.name}-{os.getpid()}.npy"
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
        ]
        try:
            proc = subprocess.run(
                child, capture_output=True, text=True, timeout=args.cell_timeout_s, check=False
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode == 0 and lines:
                row = json.loads(lines[-1])
            else:
                row = {
                    "scenario": scenario.to_dict(),
                    "ok": False,
                    "error": f"cell process exited with {proc.returncode}",
                    "stderr_tail": proc.stderr[-2000:],
                }
        except subprocess.TimeoutExpired:
            row = {
                "scenario": scenario.to_dict(),
                "ok": False,
                "error": f"timeout after {args.cell_timeout_s} s",
            }
        if row.get("ok") and "refused" not in row:
            row.update(_compare_cell(scenario, frames_path, args))
        frames_path.unlink(missing_ok=True)
        row = {"name": scenario.name, **header, **row}
        failures += 0 if row.get("ok") else 1
        with out_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        summary = (
            f"{scenario.name}: ok={row.get('ok')} "
            f"plan={row.get('final_plan') or str(row.get('refused', ''))[:60]} "
            f"reserved={row.get('peak_reserved_gib')} est={row.get('est_peak_reserved_gib')} "
            f"s/step={row.get('per_step_s')} diff={row.get('max_abs_diff_vs_uncapped')}\n"
        )
        sys.stdout.write(summary)
        sys.stdout.flush()
    return failures


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
    parser.add_argument(
        "--sizes", default=",".join(map(str, ISSUE3_SIZES)), help="square sizes, e.g. 512,768"
    )
    parser.add_argument("--frames", default=",".join(map(str, ISSUE3_FRAMES)))
    parser.add_argument(
        "--caps",
        default=",".join(f"{c:g}" for c in ISSUE3_CAPS_GIB),
        help="per-process caps in GiB (the uncapped reference always runs first)",
    )
    parser.add_argument(
        "--steps", type=int, default=4, help="denoising steps measured; totals extrapolate to 50"
    )
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
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cell is not None:
        scenario = Scenario(**json.loads(args.cell))
        sys.stdout.write(json.dumps(run_cell(scenario, args)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scenarios = grid(
        _ints(args.sizes),
        _ints(args.frames),
        _floats(args.caps),
        steps=args.steps,
        stock=not args.no_stock,
        model=args.model,
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
    command = "python -m stillmotion.bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    out_path = Path(args.out_dir) / f"{args.name}.jsonl"
    failures = run_grid(scenarios, args, out_path, command)
    sys.stdout.write(f"{len(scenarios)} cells, {failures} failed -> {out_path}\n")
    return 1 if failures else 0
