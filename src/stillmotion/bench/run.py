"""Run the benchmark grid: each cell in its own process, one JSON line per cell in bench/results/<name>.jsonl.

Per cell (``--cell``): turn on expandable segments, cap the process with
``torch.cuda.set_per_process_memory_fraction``, build the full-size I2VGen-XL from the copied configs with
random weights (scaled by 0.5 so fp16 stays finite; cached once per seed so the cells load in seconds), plan
with ``plan_memory`` and carry the plan out with ``apply_plan``, then run encode -> denoise -> decode with a
peak-memory reading per phase. An out-of-memory error steps to ``recovery.next_plan`` and resumes from the
last finished step (counted in ``oom_retries``). The final latents are compared with the uncapped run's.

The engine (stillmotion.engine.engine.Engine) was not available when this was written, so the loop below
drives the UNet and VAE directly with the same memory modules the engine uses (plan, apply, recovery); it
keeps the guidance arithmetic and the I2VGen-XL image-latent conditioning of diffusers' pipeline.
Stock recipes run diffusers' deprecated ``I2VGenXLPipeline`` with its documented memory settings.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stillmotion.bench.scenarios import ISSUE3_CAPS_GIB, ISSUE3_FRAMES, ISSUE3_SIZES, Scenario, grid

logger = logging.getLogger("stillmotion.bench")

GIB = 1024**3
CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "i2vgen-xl"
WEIGHT_SCALE = 0.5  # as in ../shared/measurements: random fp16 weights stay finite
REFERENCE_STEPS = 50
DEFAULT_CELL_TIMEOUT_S = 1800


# ----------------------------------------------------------------------------------------------- components


def build_full_components(seed: int, cache_dir: Path | None) -> dict[str, Any]:
    """Full-size I2VGen-XL networks, seeded random weights (fp16, CPU); cached as one file per seed."""
    import torch
    from diffusers import AutoencoderKL, I2VGenXLUNet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    def read(name: str) -> dict[str, Any]:
        return dict(json.loads((CONFIG_DIR / name / "config.json").read_text()))

    builders: dict[str, Callable[[], Any]] = {
        "unet": lambda: I2VGenXLUNet.from_config(read("unet")),
        "vae": lambda: AutoencoderKL.from_config(read("vae")),
        "text_encoder": lambda: CLIPTextModel(
            CLIPTextConfig.from_json_file(CONFIG_DIR / "text_encoder" / "config.json")
        ),
        "image_encoder": lambda: CLIPVisionModelWithProjection(
            CLIPVisionConfig.from_json_file(CONFIG_DIR / "image_encoder" / "config.json")
        ),
    }
    cache = None if cache_dir is None else cache_dir / f"i2vgen-xl-random-seed{seed}-fp16.pt"
    state: dict[str, Any] | None = None
    if cache is not None and cache.exists():
        state = torch.load(cache, mmap=True, weights_only=True)
    modules: dict[str, Any] = {}
    from accelerate import init_empty_weights

    for offset, (name, build) in enumerate(builders.items()):
        if state is not None:
            with init_empty_weights():
                module = build()
            module.load_state_dict(state[name], assign=True)
        else:
            torch.manual_seed(seed + offset)
            module = build()
            with torch.no_grad():
                for param in module.parameters():
                    param.mul_(WEIGHT_SCALE)
            module = module.to(torch.float16)
        modules[name] = module.eval()
    if cache is not None and state is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({name: m.state_dict() for name, m in modules.items()}, tmp)
        tmp.replace(cache)
    return modules


def build_components(tiny: bool, seed: int, cache_dir: Path | None) -> tuple[dict[str, Any], Any, Any]:
    """(networks, scheduler, spec)."""
    from diffusers import DDIMScheduler

    from stillmotion.models.registry import I2VGENXL, TINY_I2VGENXL

    if tiny:
        from stillmotion.models.tiny import build_tiny_components

        parts = build_tiny_components(seed)
        nets = {name: parts[name] for name in ("unet", "vae", "text_encoder", "image_encoder")}
        return nets, parts["scheduler"], TINY_I2VGENXL
    scheduler = DDIMScheduler.from_pretrained(str(CONFIG_DIR / "scheduler"))
    return build_full_components(seed, cache_dir), scheduler, I2VGENXL


# ----------------------------------------------------------------------------------------------- measuring


class PhaseMeter:
    """Peak allocated/reserved per phase (CUDA) and wall time, with a device sync at each boundary."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.phases: dict[str, dict[str, float]] = {}

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        import torch

        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            entry = {"s": round(time.perf_counter() - start, 4)}
            if self.cuda:
                entry["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
                entry["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(self.device) / GIB, 3)
            previous = self.phases.get(name)
            if previous is not None:  # a phase repeated after an OOM retry: keep the maxima, add the time
                entry["s"] += previous["s"]
                for key in ("peak_alloc_gib", "peak_reserved_gib"):
                    if key in entry:
                        entry[key] = max(entry[key], previous.get(key, 0.0))
            self.phases[name] = entry


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ----------------------------------------------------------------------------------------------- our plans


def run_plan_cell(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from stillmotion.errors import CannotFit
    from stillmotion.memory.apply import apply_plan, release_encoders, reset_placement
    from stillmotion.memory.device import DeviceBudget
    from stillmotion.memory.plan import plan_memory
    from stillmotion.memory.recovery import next_plan
    from stillmotion.memory.types import Shape

    device = torch.device(args.device)
    nets, scheduler, spec = build_components(args.tiny, args.seed, _cache_dir(args))
    budget = DeviceBudget.measure(device, vram_budget_gb=scenario.cap_gib or None)
    shape = Shape(scenario.height, scenario.width, scenario.num_frames, scenario.guidance_scale)
    record: dict[str, Any] = {"budget": budget.to_dict()}
    try:
        plan = plan_memory(
            spec, shape, budget, strategy=scenario.strategy, allow_approximate=scenario.allow_approximate
        )
    except CannotFit as exc:
        return {**record, "ok": True, "refused": exc.message, "refused_details": exc.details}
    record["plan"] = plan.to_dict()
    meter = PhaseMeter(device)
    inject_at = int(os.environ.get("STILLMOTION_INJECT_OOM_AT_STEP", "-1"))
    downgrades: list[str] = []
    dtype = getattr(torch, plan.dtype)
    h, w = scenario.height // 8, scenario.width // 8
    gen = torch.Generator("cpu").manual_seed(args.seed)

    with meter.phase("load"):
        apply_plan(nets, plan, device)
    exec_device = device

    # 1. encode: two prompts, the image through the image encoder and the VAE.
    with meter.phase("encode"), torch.no_grad():
        vocab = nets["text_encoder"].config.vocab_size
        ids = torch.randint(0, vocab, (2, 77), generator=gen).to(exec_device)
        text = nets["text_encoder"](ids)[0]
        size = nets["image_encoder"].config.image_size
        pixels = torch.randn(1, 3, size, size, generator=gen).to(exec_device, dtype)
        image_emb = nets["image_encoder"](pixels).image_embeds
        image = torch.randn(1, 3, scenario.height, scenario.width, generator=gen).to(exec_device, dtype)
        first = nets["vae"].encode(image).latent_dist.mode() * nets["vae"].config.scaling_factor
        first = first.unsqueeze(2)
        masks = [
            torch.ones_like(first) * ((i + 1) / (scenario.num_frames - 1))
            for i in range(scenario.num_frames - 1)
        ]
        image_latents = torch.cat([first, *masks], dim=2)
        text_cfg = text  # [uncond, cond]
        image_emb_cfg = torch.cat([torch.zeros_like(image_emb), image_emb])
        image_latents_cfg = torch.cat([image_latents, image_latents])
        release_encoders(nets, plan)

    # 2. denoise, with OOM recovery that resumes from the last finished step.
    scheduler.set_timesteps(scenario.num_inference_steps, device=exec_device)
    latents = torch.randn(1, 4, scenario.num_frames, h, w, generator=gen).to(exec_device, dtype)
    fps = torch.tensor([16, 16], device=exec_device)
    step_times: list[float] = []
    step = 0
    retries = 0
    injected = False
    with meter.phase("denoise"):
        while step < len(scheduler.timesteps):
            t = scheduler.timesteps[step]
            failed = False
            try:
                if step == inject_at and not injected:
                    injected = True
                    raise torch.OutOfMemoryError(
                        "CUDA out of memory (injected by STILLMOTION_INJECT_OOM_AT_STEP)"
                    )
                meter.sync()
                start = time.perf_counter()
                latents = _denoise_step(
                    nets["unet"],
                    scheduler,
                    latents,
                    t,
                    fps,
                    text_cfg,
                    image_emb_cfg,
                    image_latents_cfg,
                    scenario.guidance_scale,
                    plan.split_guidance,
                )
                meter.sync()
                step_times.append(time.perf_counter() - start)
                step += 1
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc):
                    raise
                failed = True
            if failed:  # outside the except block: the failed attempt's tensors are gone
                gc.collect()
                following = next_plan(spec, shape, plan, budget, allow_approximate=scenario.allow_approximate)
                if following is None:
                    return {
                        **record,
                        "ok": False,
                        "oom_retries": retries,
                        "error": "out of memory on every rung",
                    }
                reset_placement(nets)
                apply_plan(nets, following, device)
                downgrades.append(f"step {step}: {plan.rung} -> {following.rung}")
                plan = following
                retries += 1

    # 3. decode in chunks of decode_chunk_size frames.
    with meter.phase("decode"), torch.no_grad():
        vae = nets["vae"]
        if plan.vae_tiling:
            vae.enable_tiling()
        flat = latents[0].permute(1, 0, 2, 3) / vae.config.scaling_factor
        frames = [
            vae.decode(flat[i : i + plan.decode_chunk_size]).sample
            for i in range(0, flat.shape[0], plan.decode_chunk_size)
        ]
        video = torch.cat(frames)
    record.update(_timings(meter, step_times))
    record.update(
        {
            "ok": True,
            "oom_retries": retries,
            "downgrades": downgrades,
            "final_plan": plan.rung,
            "nan": bool(torch.isnan(video).any().item()),
        }
    )
    record.update(_estimate_vs_measured(plan, meter))
    record.update(_compare_with_reference(scenario, latents, args))
    reset_placement(nets)
    return record


def _denoise_step(
    unet: Any,
    scheduler: Any,
    latents: Any,
    t: Any,
    fps: Any,
    text: Any,
    image_emb: Any,
    image_latents: Any,
    guidance: float,
    split: bool,
) -> Any:
    import torch

    with torch.no_grad():
        if split:  # the two guidance halves one after the other: exact, half the activations
            halves = [
                unet(
                    latents,
                    t,
                    fps=fps[i : i + 1],
                    image_latents=image_latents[i : i + 1],
                    image_embeddings=image_emb[i : i + 1],
                    encoder_hidden_states=text[i : i + 1],
                    return_dict=False,
                )[0]
                for i in (0, 1)
            ]
            uncond, cond = halves
        else:
            both = unet(
                torch.cat([latents, latents]),
                t,
                fps=fps,
                image_latents=image_latents,
                image_embeddings=image_emb,
                encoder_hidden_states=text,
                return_dict=False,
            )[0]
            uncond, cond = both.chunk(2)
        noise = uncond + guidance * (cond - uncond)
        # I2VGen-XL's scheduler steps on (batch x frames) images.
        b, c, f, h, w = latents.shape
        flat_latents = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        flat_noise = noise.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        stepped = scheduler.step(flat_noise, t, flat_latents).prev_sample
        return stepped[None].reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def _timings(meter: PhaseMeter, step_times: list[float]) -> dict[str, Any]:
    per_step = statistics.median(step_times[1:] if len(step_times) > 1 else step_times) if step_times else 0.0
    pre = meter.phases.get("load", {}).get("s", 0.0) + meter.phases.get("encode", {}).get("s", 0.0)
    decode = meter.phases.get("decode", {}).get("s", 0.0)
    steps = len(step_times)
    total = pre + sum(step_times) + decode
    return {
        "phases": meter.phases,
        "steps": steps,
        "per_step_s": round(per_step, 4),
        "pre_s": round(pre, 3),
        "decode_s": round(decode, 3),
        "total_s": round(total, 3),
        "est_50_steps_s": round(total + (REFERENCE_STEPS - steps) * per_step, 2),
        "peak_alloc_gib": max((p.get("peak_alloc_gib", 0.0) for p in meter.phases.values()), default=0.0),
        "peak_reserved_gib": max(
            (p.get("peak_reserved_gib", 0.0) for p in meter.phases.values()), default=0.0
        ),
    }


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
        if "peak_reserved_gib" in measured and measured["peak_reserved_gib"] > 0:
            out[f"err_{name}_reserved"] = round(phase.reserved_gib / measured["peak_reserved_gib"] - 1, 4)
    return out


def _reference_path(scenario: Scenario, args: argparse.Namespace) -> Path:
    return (
        Path(args.work_dir)
        / f"reference-{scenario.shape_key}-seed{args.seed}-steps{scenario.num_inference_steps}.pt"
    )


def _compare_with_reference(scenario: Scenario, latents: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    path = _reference_path(scenario, args)
    final = latents.detach().float().cpu()
    if scenario.cap_gib == 0 and scenario.recipe == "plan" and scenario.strategy is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(final, path)
        return {"reference": True, "max_abs_diff_vs_uncapped": 0.0, "rel_l2_vs_uncapped": 0.0}
    if not path.exists():
        return {"max_abs_diff_vs_uncapped": None}
    ref = torch.load(path, weights_only=True)
    diff = (final - ref).abs().max().item()
    rel = ((final - ref).norm() / ref.norm().clamp_min(1e-12)).item()
    return {"max_abs_diff_vs_uncapped": diff, "rel_l2_vs_uncapped": rel}


# ------------------------------------------------------------------------------------------- stock recipes


def run_stock_cell(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    """diffusers' own I2VGenXLPipeline with its documented memory recipe (for comparison)."""
    import torch
    from diffusers import I2VGenXLPipeline
    from PIL import Image
    from transformers import CLIPImageProcessor

    from stillmotion.models.tiny import build_tiny_tokenizer

    device = torch.device(args.device)
    nets, scheduler, _ = build_components(args.tiny, args.seed, _cache_dir(args))
    processor = (
        CLIPImageProcessor.from_pretrained(str(CONFIG_DIR / "feature_extractor")) if not args.tiny else None
    )
    pipe = I2VGenXLPipeline(
        tokenizer=build_tiny_tokenizer(),
        feature_extractor=processor or CLIPImageProcessor(),
        scheduler=scheduler,
        **nets,
    )
    if scenario.recipe == "stock-model-offload":
        pipe.enable_model_cpu_offload(device=device)
    elif scenario.recipe == "stock-group-leaf":
        from diffusers.hooks import apply_group_offloading

        for net in nets.values():
            apply_group_offloading(
                net, onload_device=device, offload_type="leaf_level", use_stream=device.type == "cuda"
            )
    else:
        raise SystemExit(f"unknown recipe {scenario.recipe!r}")
    meter = PhaseMeter(device)
    stamps: list[float] = []

    def stamp(*_: Any) -> None:
        meter.sync()
        stamps.append(time.perf_counter())

    nets["unet"].register_forward_pre_hook(stamp)
    image = Image.new("RGB", (scenario.width, scenario.height), (120, 90, 60))
    with meter.phase("call"):
        pipe(
            prompt="benchmark",
            image=image,
            height=scenario.height,
            width=scenario.width,
            num_frames=scenario.num_frames,
            num_inference_steps=scenario.num_inference_steps,
            guidance_scale=scenario.guidance_scale,
            decode_chunk_size=1,
            output_type="pt",
            generator=torch.Generator("cpu").manual_seed(args.seed),
        )
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    per_step = statistics.median(gaps[1:] if len(gaps) > 1 else gaps) if gaps else 0.0
    total = meter.phases["call"]["s"]
    return {
        "ok": True,
        "phases": meter.phases,
        "steps": scenario.num_inference_steps,
        "per_step_s": round(per_step, 4),
        "total_s": round(total, 3),
        "est_50_steps_s": round(total + (REFERENCE_STEPS - scenario.num_inference_steps) * per_step, 2),
        "peak_alloc_gib": meter.phases["call"].get("peak_alloc_gib"),
        "peak_reserved_gib": meter.phases["call"].get("peak_reserved_gib"),
        "max_abs_diff_vs_uncapped": None,  # diffusers draws its own noise: not comparable bit for bit
    }


# ----------------------------------------------------------------------------------------------- processes


def _cache_dir(args: argparse.Namespace) -> Path | None:
    return None if args.tiny else Path(args.work_dir) / "weights"


def environment(device: str) -> dict[str, Any]:
    import torch

    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers", "accelerate"):
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

    alloc_conf = (
        configure_allocator() if scenario.recipe == "plan" else os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    )
    import torch

    if args.device.startswith("cuda") and scenario.cap_gib > 0:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, scenario.cap_gib * GIB / total), 0)
    start = time.perf_counter()
    try:
        body = run_plan_cell(scenario, args) if scenario.recipe == "plan" else run_stock_cell(scenario, args)
    except torch.OutOfMemoryError as exc:  # an OOM that escaped recovery: recorded as a failure, not hidden
        body = {"ok": False, "error": f"unhandled out of memory: {str(exc)[:300]}"}
    return {
        "scenario": scenario.to_dict(),
        "alloc_conf": alloc_conf,
        "wall_s": round(time.perf_counter() - start, 2),
        **body,
    }


def run_grid(scenarios: list[Scenario], args: argparse.Namespace, out_path: Path, command: str) -> int:
    """Parent: one subprocess per cell; every cell writes exactly one line, crashes included."""
    header = {"command": command, **environment(args.device)}
    failures = 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios:
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
        ]
        if args.tiny:
            child.append("--tiny")
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
        row = {"name": scenario.name, **header, **row}
        failures += 0 if row.get("ok") else 1
        with out_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        summary = (
            f"{scenario.name}: ok={row.get('ok')} "
            f"plan={row.get('final_plan') or row.get('refused', '')[:60]} "
            f"reserved={row.get('peak_reserved_gib')} est={row.get('est_peak_reserved_gib')} "
            f"s/step={row.get('per_step_s')}\n"
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
    parser.add_argument("--strategy", default=None, help="force a rung in every plan cell")
    parser.add_argument("--allow-approximate", action="store_true")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny-i2vgen-xl instead of the full size (smoke test)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work-dir",
        default=os.path.join(tempfile.gettempdir(), "stillmotion-bench"),
        help="weight cache and reference latents",
    )
    parser.add_argument("--cell-timeout-s", type=int, default=DEFAULT_CELL_TIMEOUT_S)
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # internal: run one cell, print JSON
    return parser.parse_args(argv)


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
        stock=not args.no_stock and not args.tiny,
    )
    if args.strategy or args.allow_approximate:
        from dataclasses import replace

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
