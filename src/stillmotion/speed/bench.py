"""The GPU benchmark of issue 5: one UNet denoising call, stock eager vs stillmotion's speed options.

``python -m stillmotion.speed`` builds the full-size I2VGen-XL UNet from the shipped configs with seeded
random weights (scaled by 0.5 so fp16 stays finite, as in ../shared/measurements), and for each dtype and
square size (16 frames, guidance batch 2) times the stock eager call and each variant with CUDA events after
warm-up; the first call of a compiled variant is reported separately as ``cold_start_s``. Each row carries the
FLOPs (``FlopCounterMode``), the achieved TFLOP/s next to the 790 TFLOP/s ceiling, and the max-abs and
relative-L2 difference from the stock output. ``--attention-sweep`` times every SDPA backend, with and
without head padding, on the attention shapes the UNet really uses. One JSON line per run goes to
``bench/results/speed-<name>.jsonl``. Without CUDA it exits 2, except ``--device cpu --tiny`` (a smoke test).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stillmotion.speed.attention import AttentionShape, record_attention_shapes, sdpa
from stillmotion.speed.compile import (
    apply_speed,
    compile_counters,
    device_name,
    measure_cold_start,
    undo_speed,
)
from stillmotion.speed.options import EAGER, AttentionBackend, CompileScope, SpeedOptions

logger = logging.getLogger(__name__)

PEAK_TFLOPS = 790.0  # measured bf16 dense matrix peak of the reference H100 (../shared/measurements)
WEIGHT_SCALE = 0.5  # random fp16 weights stay finite (../shared/measurements)
PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Another change moves the configs from bench/ to models/; accept either.
CONFIG_DIRS = (
    PACKAGE_DIR / "models" / "configs" / "i2vgen-xl",
    PACKAGE_DIR / "bench" / "configs" / "i2vgen-xl",
)

VARIANTS: dict[str, SpeedOptions] = {
    "stock": EAGER,
    "pad8": SpeedOptions(pad_head_dim=8),
    "auto": SpeedOptions(attention=AttentionBackend.AUTO),
    "regional": SpeedOptions(compile=CompileScope.REGIONAL),
    "regional-pad8": SpeedOptions(compile=CompileScope.REGIONAL, pad_head_dim=8),
    "regional-autotune": SpeedOptions(
        compile=CompileScope.REGIONAL, compile_mode="max-autotune-no-cudagraphs"
    ),
    "full": SpeedOptions(compile=CompileScope.FULL),
    "full-cudagraphs": SpeedOptions(compile=CompileScope.FULL, cuda_graphs=True),
}
SWEEP_BACKENDS = (
    AttentionBackend.DEFAULT,
    AttentionBackend.MATH,
    AttentionBackend.FLASH,
    AttentionBackend.EFFICIENT,
    AttentionBackend.CUDNN,
)
SWEEP_PADS: tuple[int | None, ...] = (None, 8, 16)


def config_dir() -> Path:
    """The shipped I2VGen-XL config folder (models/configs or, before the move, bench/configs)."""
    for folder in CONFIG_DIRS:
        if (folder / "unet" / "config.json").exists():
            return folder
    raise FileNotFoundError(f"no i2vgen-xl/unet/config.json under {[str(p) for p in CONFIG_DIRS]}")


def build_unet(tiny: bool, seed: int, dtype: torch.dtype, device: torch.device) -> Any:
    """The UNet with seeded random weights (scaled by 0.5), in ``dtype`` on ``device``, eval mode."""
    from diffusers import I2VGenXLUNet

    if tiny:
        from stillmotion.models.tiny import build_tiny_components

        unet = build_tiny_components(seed)["unet"]
    else:
        torch.manual_seed(seed)
        config = json.loads((config_dir() / "unet" / "config.json").read_text())
        with torch.device(device):  # initialise on the GPU: seconds instead of a minute on the CPU
            unet = I2VGenXLUNet.from_config(config)
        with torch.no_grad():
            for param in unet.parameters():
                param.mul_(WEIGHT_SCALE)
    return unet.to(device=device, dtype=dtype).eval()


@dataclass(frozen=True)
class UNetInputs:
    """One guided UNet call's inputs (batch 2: unconditional and conditional halves)."""

    latents: torch.Tensor
    timestep: torch.Tensor
    text: torch.Tensor
    fps: torch.Tensor
    image_latents: torch.Tensor
    image_embeds: torch.Tensor

    @classmethod
    def random(cls, unet: Any, size: int, frames: int, seed: int, device: torch.device) -> UNetInputs:
        dtype = next(unet.parameters()).dtype
        gen = torch.Generator().manual_seed(seed)
        latent = (2, unet.config.in_channels, frames, size // 8, size // 8)
        context = unet.config.cross_attention_dim

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

        return cls(
            latents=randn(*latent),
            timestep=torch.tensor(500, device=device),
            text=randn(2, 77, context),
            fps=torch.tensor([16, 16], device=device),
            image_latents=randn(*latent),
            image_embeds=randn(2, 1, context),
        )

    def call(self, unet: Any) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = unet(
                self.latents,
                self.timestep,
                encoder_hidden_states=self.text,
                fps=self.fps,
                image_latents=self.image_latents,
                image_embeddings=self.image_embeds,
                return_dict=False,
            )[0]
        return out


def count_flops(call: Callable[[], Any]) -> int:
    """Floating-point operations of one call (matmuls, convolutions, attention), by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return int(counter.get_total_flops())


def time_calls(call: Callable[[], Any], device: torch.device, iters: int) -> list[float]:
    """Seconds per call: CUDA events on a GPU (no host sync inside the timed region), else perf_counter."""
    times: list[float] = []
    for _ in range(iters):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    return times


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    """Max-abs and relative-L2 difference in float32, and whether anything is not finite."""
    out32, ref32 = out.float(), ref.float()
    diff = out32 - ref32
    return {
        "max_abs_diff_vs_stock": float(diff.abs().max()),
        "rel_l2_vs_stock": float(diff.norm() / ref32.norm().clamp_min(1e-30)),
        "nan": bool(not torch.isfinite(out32).all()),
    }


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1024**3 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@dataclass(frozen=True)
class RunContext:
    """What every row carries: the command, the device and versions."""

    command: str
    device: torch.device
    tiny: bool
    frames: int
    warmup: int
    iters: int
    cache_dir: Path

    def base(self) -> dict[str, Any]:
        import diffusers

        return {
            "command": self.command,
            "device": device_name(self.device),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "diffusers": diffusers.__version__,
            "model": "tiny-i2vgen-xl" if self.tiny else "i2vgen-xl",
            "frames": self.frames,
            "batch": 2,
            "warmup": self.warmup,
            "iters": self.iters,
            "ceiling_tflops": PEAK_TFLOPS,
        }


def run_variant(
    ctx: RunContext, unet: Any, inputs: UNetInputs, name: str, flops: int, ref: torch.Tensor
) -> dict[str, Any]:
    """Apply one variant, time it, compare it with the stock output, undo it."""
    options = VARIANTS[name]
    modules = {"unet": unet}
    torch._dynamo.reset()  # in-memory compiled code only; the on-disk cache under cache_dir stays
    before = compile_counters()
    _reset_peak(ctx.device)
    applied = apply_speed(modules, options, ctx.device, ctx.cache_dir)
    try:

        def call() -> torch.Tensor:
            if options.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
                return inputs.call(unet).clone()  # the graph's output buffer is reused by the next replay
            return inputs.call(unet)

        cold_s, _ = measure_cold_start(call, ctx.device)
        for _ in range(max(0, ctx.warmup - 1)):
            call()
        times = time_calls(call, ctx.device, ctx.iters)
        out = call()
    finally:
        undo_speed(modules)
    after = compile_counters()
    median = statistics.median(times)
    return {
        "variant": name,
        "speed": applied,
        "per_step_s": round(median, 6),
        "per_step_min_s": round(min(times), 6),
        "per_step_max_s": round(max(times), 6),
        "cold_start_s": round(cold_s, 3),
        "fxgraph_cache_hit": after["fxgraph_cache_hit"] - before["fxgraph_cache_hit"],
        "fxgraph_cache_miss": after["fxgraph_cache_miss"] - before["fxgraph_cache_miss"],
        "tflop_per_step": round(flops / 1e12, 4),
        "tflops": round(flops / median / 1e12, 2),
        "mfu": round(flops / median / (PEAK_TFLOPS * 1e12), 4),
        "peak_alloc_gib": _peak_gib(ctx.device),
        **compare(out, ref),
        "ok": True,
    }


def attention_sweep(
    ctx: RunContext, shapes: Sequence[AttentionShape], dtype: torch.dtype
) -> Iterator[dict[str, Any]]:
    """Every backend x padding on each attention shape; difference from the float32 math kernel."""
    gen = torch.Generator().manual_seed(0)
    for shape in shapes:
        q_shape = (shape.batch, shape.heads, shape.q_len, shape.head_dim)
        kv_shape = (shape.batch, shape.heads, shape.kv_len, shape.head_dim)
        q, k, v = (torch.randn(s, generator=gen).to(ctx.device, dtype) for s in (q_shape, kv_shape, kv_shape))
        ref = sdpa(q.float(), k.float(), v.float(), backend=AttentionBackend.MATH)
        for backend in SWEEP_BACKENDS:
            for pad in SWEEP_PADS:
                row: dict[str, Any] = {
                    "kind": "attention",
                    **shape.to_dict(),
                    "backend": backend.value,
                    "pad": pad,
                }
                call = functools.partial(sdpa, q, k, v, backend=backend, pad_head_dim=pad)
                try:
                    out = call()
                    time_calls(call, ctx.device, ctx.warmup)
                    times = time_calls(call, ctx.device, ctx.iters)
                    row |= {"time_s": statistics.median(times), **compare(out, ref), "ok": True}
                except RuntimeError as error:  # "No available kernel": the backend refuses this shape
                    row |= {"ok": False, "error": str(error).splitlines()[0][:200]}
                yield row


def run(args: argparse.Namespace, command: str) -> int:
    device = torch.device(args.device)
    cache_dir = (
        Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="stillmotion-compile-"))
    )
    ctx = RunContext(command, device, args.tiny, args.frames, args.warmup, args.iters, cache_dir)
    name = args.name or ("tiny-cpu" if args.tiny and device.type == "cpu" else _short(device_name(device)))
    out_path = Path(args.results_dir) / f"speed-{name}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    summary: list[str] = []
    with out_path.open("a") as sink:

        def emit(row: dict[str, Any]) -> None:
            sink.write(json.dumps({**ctx.base(), **row}) + "\n")
            sink.flush()

        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            unet = build_unet(args.tiny, args.seed, dtype, device)
            for size in args.sizes:
                inputs = UNetInputs.random(unet, size, args.frames, args.seed, device)
                common = {"res": size, "dtype": dtype_name}
                call = functools.partial(inputs.call, unet)
                flops = count_flops(call)
                ref = call()
                if args.attention_sweep:
                    shapes = record_attention_shapes(unet, call)
                    for row in attention_sweep(ctx, shapes, dtype):
                        emit({**common, **row})
                stock_s: float | None = None
                for variant in args.variants:
                    try:
                        row = run_variant(ctx, unet, inputs, variant, flops, ref)
                    except (
                        Exception
                    ) as error:  # one failing variant (OOM, compile error) must not end the run
                        logger.exception("variant %s at %d %s failed", variant, size, dtype_name)
                        row = {
                            "variant": variant,
                            "ok": False,
                            "error": f"{type(error).__name__}: {error}"[:500],
                        }
                    if variant == "stock" and row["ok"]:
                        stock_s = row["per_step_s"]
                    if stock_s is not None and row["ok"]:
                        row["time_vs_stock"] = round(row["per_step_s"] / stock_s, 4)
                    emit({**common, **row})
                    summary.append(_summary_line(size, dtype_name, row))
                del inputs, ref
            del unet
            if device.type == "cuda":
                torch.cuda.empty_cache()
    sys.stdout.write("\n".join([f"results: {out_path}", *summary]) + "\n")
    return 0


def _short(name: str) -> str:
    for word in ("H200", "H100", "A100", "L40S", "L4", "A10G", "B200"):
        if word in name:
            return word.lower()
    return name.lower().replace(" ", "-")


def _summary_line(size: int, dtype: str, row: dict[str, Any]) -> str:
    if not row["ok"]:
        return f"{size:>5} {dtype:<9} {row['variant']:<18} FAILED {row['error'][:80]}"
    return (
        f"{size:>5} {dtype:<9} {row['variant']:<18} {row['per_step_s']:.4f} s/step "
        f"x{row.get('time_vs_stock', float('nan')):.3f} {row['tflops']:7.1f} TFLOP/s "
        f"cold {row['cold_start_s']:.1f} s maxabs {row['max_abs_diff_vs_stock']:.3g} "
        f"relL2 {row['rel_l2_vs_stock']:.3g}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stillmotion.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (only with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random UNet: a smoke test")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="square pixel sizes")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument(
        "--dtypes", nargs="+", default=["float16", "bfloat16"], choices=["float16", "bfloat16", "float32"]
    )
    parser.add_argument(
        "--variants", nargs="+", default=["stock", "regional", "full-cudagraphs"], choices=list(VARIANTS)
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="calls before timing (the first is the cold start)"
    )
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--attention-sweep", action="store_true", help="also time every SDPA backend per shape"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="compile cache (default: a fresh folder, i.e. cold)"
    )
    parser.add_argument("--results-dir", default="bench/results")
    parser.add_argument("--name", default=None, help="results go to <results-dir>/speed-<name>.jsonl")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [64] if args.tiny else [512, 768, 1024]
    if args.frames is None:
        args.frames = 4 if args.tiny else 16
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; 2 when the device is missing or the request makes no sense."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.stderr.write(
            "stillmotion.speed: no CUDA device here. This benchmark measures GPU speed (issue 5): run it "
            "on a GPU machine, or use --device cpu --tiny for a smoke test.\n"
        )
        return 2
    if args.device == "cpu" and not args.tiny:
        sys.stderr.write(
            "stillmotion.speed: --device cpu only with --tiny (the full UNet would take hours).\n"
        )
        return 2
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m stillmotion.speed", *(shlex.quote(a) for a in given)])
    return run(args, command)
