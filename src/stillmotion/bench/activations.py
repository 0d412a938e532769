"""Activation memory of every family's full-size networks, measured on the CPU:
``python -m stillmotion.bench.activations`` (one JSON line per measurement, bench/results/<name>.jsonl).

No GPU is lent to this project, so the memory facts of the families the H100 never ran (Wan, LTX, SVD) are
measured here, by the method validated on I2VGen-XL against the H100 rows (docs/memory.md, "Activation facts
measured on the CPU"; memory/activation_facts.py turns the rows into the registry's facts). Where to start:
``SUITE`` (what is measured, at which shape, and why), ``peak_allocated_bytes`` (the tracker), ``run``.

**The networks** are the real diffusers classes built from the shipped configs (models/configs/<model>), with
random weights. A transformer is built with ONE of its identical blocks plus everything around them (patch
and condition embeddings, rotary tables, output head): its call peaks inside a block, at the same bytes
whichever block, so one block at the full token count is the whole model's peak (the meta-device simulator
agrees: 1, 3 and all 40 Wan blocks peak alike). A UNet is built whole, as its levels differ. All parameters
are views of one random buffer the size of the largest parameter: the call's tensors and kernels are the real
ones, but a 14B block or a 1.5B UNet costs megabytes of RAM, so every measurement fits this machine.

**The tracker** counts PyTorch's CPU allocator exactly: ``torch.profiler`` with ``profile_memory=True``
records every allocation and free (size, time) of the c10 allocator, inside kernels too. The running sum
from just before the call is what ``torch.cuda.max_memory_allocated()`` minus the memory allocated before
the call reports on a GPU, which is how the H100 rows were taken. Sampling the process RSS instead (a thread
every 2 ms, baseline before the call) was tried and rejected: glibc keeps freed blocks in its arenas and
below the trim threshold, the profiler's own buffers grow the RSS, and short peaks fall between samples. On
I2VGen-XL's UNet at 256x256 x 8 frames the allocator count was 0.3271 GiB (fp32), the H100 0.328 (fp16,
doubled), the RSS peak 0.355 (+8.5%).

**The kernels.** This machine's CPUs have no 16-bit matrix units: a bfloat16 matmul runs at 0.5 GFLOP/s
against 53 in float32, so a 16-bit UNet call (21 TFLOP) would take half a day, and float32 doubles the
memory. So by default (``--kernels output-only``) matrix products, convolutions and attention allocate their
output, shaped as the real kernel's (its meta kernel), and compute nothing; every other op (norms,
activations, residual adds, rotary embeddings, padding, concatenation, the causal VAE caches) runs its real
CPU kernel in the real dtype. On a GPU those three hold little besides their output either: cuBLAS's
workspace is allocated once and counted with the weights, flash attention keeps its output and a
log-sum-exp. ``--kernels real`` computes everything (float32 here); the suite runs one small shape of every
network both ways, and they must agree (memory/activation_facts.py checks it).

What a CPU cannot show: cuDNN's convolution workspaces, which the GPU allocates from the same caching
allocator. The UNet (its peak is in a feed-forward) lands within 0.3% of the H100 rows it re-measures; the
VAE decode (its peak is at a convolution) is 25% below them at every size, a constant ratio that
memory/activation_facts.py fits on I2VGen-XL's VAE and applies to the decoders built of the same 2-D
convolutions (SVD-XT's); the causal 3-D VAEs of Wan and LTX-Video keep the CPU figure (docs/memory.md,
section 8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812  (the conventional name)
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from stillmotion.atomic_file import atomic_file
from stillmotion.models.registry import ModelSpec, get_spec

GIB = 1024**3
RESULTS_DIR = Path("bench") / "results"
DEFAULT_NAME = "activations-cpu"
KERNELS = ("output-only", "real")
COMPONENTS = ("denoiser", "vae_decode")
PROG = "python -m stillmotion.bench.activations"


@dataclass(frozen=True)
class Measurement:
    """One call to measure: a network of ``model`` at one shape, dtype and kernel mode."""

    model: str
    component: str  # "denoiser" (UNet or transformer) or "vae_decode"
    height: int
    width: int
    num_frames: int  # video frames (a causal VAE packs them into latent frames)
    batch: int = 1  # denoiser rows per call: 2 = the classifier-free-guidance batch
    dtype: str = "bfloat16"
    kernels: str = "output-only"
    ff_chunk_mib: int | None = None  # every feed-forward chunked to this cap (memory/chunking.py)
    why: str = ""

    def key(self) -> tuple[Any, ...]:
        """What makes two rows the same measurement (a rerun replaces the older row)."""
        return (self.model, self.component, self.height, self.width, self.num_frames, self.batch, self.dtype,
                self.kernels, self.ff_chunk_mib)  # fmt: skip


def _suite() -> list[Measurement]:
    """Every measurement the registry's facts come from, in the order they run (cheap checks first).

    Shapes are each family's reference size (models/registry.py) where the call fits in ~8 GiB; a VAE whose
    decode at full size would not (Wan's, in float32) is measured at a quarter or a sixteenth of the pixels
    (convolution memory is linear in pixels: checked at two sizes) and at two or three frame counts (a causal
    VAE decodes 4 frames at a time: its peak is a fixed part plus the frames decoded so far).
    """
    m = Measurement
    i2v, wan21, wan22, svd, ltx = "i2vgen-xl", "wan2.1-i2v-14b-480p", "wan2.2-ti2v-5b", "svd-xt", "ltx-video"
    a14b = "wan2.2-i2v-a14b"
    h100 = "an H100 row (validation)"
    suite = [
        # 1. I2VGen-XL, validation against ../shared/measurements (fp16, as the H100 ran).
        *_kernel_checks(i2v, (256, 256, 8), (256, 256, 2)),
        *(m(i2v, "vae_decode", s, s, f, 1, "float16", why=h100) for s, f in VAE_ROWS),
        *(m(i2v, "denoiser", s, s, f, b, "float16", why=h100) for s, f, b in UNET_ROWS),
        m(i2v, "denoiser", 512, 512, 16, 2, "float16", ff_chunk_mib=128, why="chunked (simulator: 0.517)"),
        # 2. Wan 2.1 I2V 14B: the transformer at 832x480 x 81 frames; the VAE in float32, as it runs.
        *_kernel_checks(wan21, (240, 416, 9), (120, 208, 5)),
        m(wan21, "denoiser", 480, 832, 81, 1, why="reference size"),
        m(wan21, "denoiser", 480, 832, 81, 1, ff_chunk_mib=16, why="chunked floor"),
        m(wan21, "vae_decode", 240, 416, 1, 1, "float32", why="one frame, 1/4 of the pixels"),
        m(wan21, "vae_decode", 240, 416, 9, 1, "float32", why="short video, 1/4 of the pixels"),
        m(wan21, "vae_decode", 240, 416, 81, 1, "float32", why="81 frames, 1/4 of the pixels"),
        m(wan21, "vae_decode", 120, 208, 81, 1, "float32", why="81 frames, 1/16 of the pixels (linearity)"),
        # 3. Wan 2.2 TI2V 5B: 1280x704 x 121 frames; its VAE (16x) at 1/16 of the pixels, in float32.
        *_kernel_checks(wan22, (352, 640, 9), (96, 160, 5)),
        m(wan22, "denoiser", 704, 1280, 121, 1, why="reference size"),
        m(wan22, "denoiser", 704, 1280, 121, 1, ff_chunk_mib=16, why="chunked floor"),
        m(wan22, "vae_decode", 176, 320, 1, 1, "float32", why="one frame, 1/16 of the pixels"),
        m(wan22, "vae_decode", 176, 320, 9, 1, "float32", why="short video, 1/16 of the pixels"),
        m(wan22, "vae_decode", 176, 320, 41, 1, "float32", why="41 frames, 1/16 of the pixels"),
        # 4. LTX-Video 2B: 704x480 x 121 frames, the transformer and the VAE at full size.
        *_kernel_checks(ltx, (256, 352, 25), (128, 160, 9)),
        m(ltx, "denoiser", 480, 704, 121, 1, why="reference size"),
        m(ltx, "denoiser", 480, 704, 121, 2, why="reference size, guidance batch"),
        m(ltx, "denoiser", 480, 704, 121, 1, ff_chunk_mib=16, why="chunked floor"),
        m(ltx, "vae_decode", 480, 704, 1, 1, why="one frame"),
        m(ltx, "vae_decode", 480, 704, 41, 1, why="short video"),
        m(ltx, "vae_decode", 480, 704, 121, 1, why="reference size"),
        # 5. SVD-XT: the UNet at 1024x576 x 25 frames; the temporal decoder at 1/4 of the pixels.
        *_kernel_checks(svd, (128, 224, 4), (128, 224, 2)),
        m(svd, "denoiser", 576, 1024, 25, 1, "float16", why="reference size"),
        m(svd, "denoiser", 576, 1024, 12, 1, "float16", why="half the frames (batch 2 fits only there)"),
        m(svd, "denoiser", 576, 1024, 12, 2, "float16", why="guidance batch"),
        m(svd, "denoiser", 576, 1024, 12, 1, "float16", ff_chunk_mib=16, why="chunked floor"),
        m(svd, "vae_decode", 288, 512, 1, 1, "float16", why="one frame, 1/4 of the pixels"),
        m(svd, "vae_decode", 288, 512, 4, 1, "float16", why="4 frames at once, 1/4 of the pixels"),
        m(svd, "vae_decode", 288, 512, 8, 1, "float16", why="8 frames at once, 1/4 of the pixels"),
        # 6. Wan 2.2 I2V A14B: an expert is Wan 2.1's transformer without the CLIP image cross-attention, at
        # the same token counts; both experts share one config. Its VAE is Wan 2.1's (the same config),
        # measured above (memory/activation_facts.py SAME_VAE).
        *_kernel_checks(a14b, (240, 416, 9), None),
        m(a14b, "denoiser", 480, 832, 81, 1, why="reference size"),
        m(a14b, "denoiser", 480, 832, 81, 1, ff_chunk_mib=16, why="chunked floor"),
    ]
    return suite


def _kernel_checks(
    model: str, denoiser: tuple[int, int, int], vae: tuple[int, int, int] | None
) -> list[Measurement]:
    """One small call of each network with the real kernels and with output-only ones (float32: the real
    arithmetic is fast enough on a CPU); tests/memory/test_activation_facts.py compares them. ``vae`` None:
    the model's VAE is another model's, checked there."""
    why = "real vs output-only kernels at one small shape"
    networks = [("denoiser", denoiser)] + ([] if vae is None else [("vae_decode", vae)])
    return [
        Measurement(model, component, *shape, dtype="float32", kernels=kernels, why=why)
        for component, shape in networks
        for kernels in ("real", "output-only")
    ]


# The H100 rows re-measured (../shared/measurements/h100-i2vgenxl-activation-memory.jsonl): every VAE decode
# and UNet cell whose call fits in ~6 GiB here, from 256 to 1024 pixels.
VAE_ROWS = [(256, 1), (256, 2), (256, 4), (512, 1), (512, 2), (512, 4), (1024, 1), (1024, 2)]
UNET_ROWS = [(256, 8, 1), (256, 16, 2), (512, 8, 1), (512, 16, 2), (1024, 8, 1)]
SUITE = _suite()


# -- The networks ---------------------------------------------------------------------------------------


def network_name(spec: ModelSpec, component: str) -> str:
    """The config folder of the measured network: the family's denoiser ("unet", "transformer") or "vae"."""
    from stillmotion.models.adapters import family_of

    return family_of(spec).roles.denoiser if component == "denoiser" else "vae"


def build_network(spec: ModelSpec, component: str, dtype: torch.dtype) -> tuple[torch.nn.Module, int, int]:
    """(network, blocks built, blocks in the real model): the real class from the shipped config.

    A transformer gets one block (``num_layers=1``); parameters become views of one shared random buffer.
    """
    import diffusers
    from accelerate import init_empty_weights

    from stillmotion.models.family import read_config
    from stillmotion.models.random_full import config_dir

    config = read_config(config_dir(spec) / network_name(spec, component))
    blocks = int(config.get("num_layers", 0))
    if blocks:
        config = {**config, "num_layers": 1}
    with init_empty_weights():  # parameters on meta, buffers (rotary tables) real
        module: torch.nn.Module = getattr(diffusers, config["_class_name"]).from_config(config)
    module.to(dtype=dtype)  # as memory/apply.py does: the buffers too
    share_random_weights(module, dtype)
    return module.eval(), min(blocks, 1), blocks


def share_random_weights(module: torch.nn.Module, dtype: torch.dtype, seed: int = 0) -> None:
    """Make every parameter a view of one random buffer (activations are the real ones; RAM stays small)."""
    params = list(module.named_parameters(remove_duplicate=False))
    largest = max(p.numel() for _, p in params)
    generator = torch.Generator().manual_seed(seed)
    shared = ((torch.rand(largest, generator=generator) - 0.5) * 0.04).to(dtype)
    for name, param in params:
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        weight = torch.nn.Parameter(shared[: param.numel()].view(param.shape), requires_grad=False)
        setattr(owner, leaf, weight)


def _materialize(value: Any) -> Any:
    """A CPU tensor for a meta one of the simulator's input builders: noise, or ones for ints and masks."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.dtype.is_floating_point:
        return torch.randn(value.shape, dtype=value.dtype)
    return torch.ones(value.shape, dtype=value.dtype)


def denoiser_call(spec: ModelSpec, network: torch.nn.Module, m: Measurement) -> Callable[[], Any]:
    """One denoiser forward with the inputs the family's pipeline feeds it (bench/simulate.py's shapes)."""
    from stillmotion.bench.meta_device import denoiser_inputs

    inputs = tree_map(_materialize, denoiser_inputs(spec, network, m.height, m.width, m.num_frames, m.batch))
    return lambda: network(**inputs, return_dict=False)


def vae_decode_call(spec: ModelSpec, vae: Any, m: Measurement) -> Callable[[], Any]:
    """``vae.decode`` of ``num_frames`` frames at once, as the family's decode step calls it."""
    from stillmotion.memory.estimate import latent_frames

    dtype = next(vae.parameters()).dtype
    factor, channels = spec.architecture.vae_scale_factor, spec.architecture.latent_channels
    h, w = m.height // factor, m.width // factor
    if spec.family == "i2vgen-xl":
        latents = torch.randn(m.num_frames, channels, h, w, dtype=dtype)
        return lambda: vae.decode(latents, return_dict=False)
    if spec.family == "svd":
        latents = torch.randn(m.num_frames, channels, h, w, dtype=dtype)
        return lambda: vae.decode(latents, num_frames=m.num_frames, return_dict=False)
    video = torch.randn(1, channels, latent_frames(spec, m.num_frames), h, w, dtype=dtype)  # whole video
    return lambda: vae.decode(video, return_dict=False)


# -- The tracker and the kernels ------------------------------------------------------------------------


def peak_allocated_bytes(call: Callable[[], Any]) -> int:
    """Peak bytes held by PyTorch's CPU allocator during ``call``, above what it held just before.

    Every allocation and free of the c10 allocator is a "[memory]" event of the profiler, in order; their
    running sum from the start is the live memory the call added, output included.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = cast(Any, prof).profiler.kineto_results.events()
    memory = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    if not memory:
        raise RuntimeError("the profiler recorded no allocation: is profile_memory supported here?")
    live = peak = 0
    for event in memory:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


_ATEN = torch.ops.aten
HEAVY_OPS = {
    _ATEN.mm.default,
    _ATEN.addmm.default,
    _ATEN.bmm.default,
    _ATEN.baddbmm.default,
    _ATEN.convolution.default,
}


def _to_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _allocate_like(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype)
    return value


class OutputOnlyKernels(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Matrix products and convolutions allocate their real output (the meta kernel's shape, strides and
    dtype) and compute nothing; every other op runs its real kernel."""

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in HEAVY_OPS:
            return tree_map(_allocate_like, func(*tree_map(_to_meta, args), **tree_map(_to_meta, kwargs)))
        return func(*args, **kwargs)


class OutputOnlyAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` allocates its output and computes nothing (flash attention's memory
    on a GPU: the output; its log-sum-exp is a few MiB)."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query = args[0] if args else kwargs["query"]
            value = args[2] if len(args) > 2 else kwargs["value"]  # diffusers' dispatcher passes keywords
            return torch.empty((*query.shape[:-1], value.shape[-1]), dtype=query.dtype)
        return func(*args, **kwargs)


# -- One measurement ------------------------------------------------------------------------------------


def run(m: Measurement) -> dict[str, Any]:
    """Build the network, run the call once under the tracker, and return the measurement's row."""
    from stillmotion.memory.estimate import latent_frames, latent_tokens
    from stillmotion.memory.types import Shape

    spec = get_spec(m.model)
    dtype = getattr(torch, m.dtype)
    torch.manual_seed(0)
    network, built, total = build_network(spec, m.component, dtype)
    if m.ff_chunk_mib is not None:
        from stillmotion.memory.chunking import enable_ff_chunking

        enable_ff_chunking(network, m.ff_chunk_mib)
    if m.component == "denoiser":
        call = denoiser_call(spec, network, m)
    else:
        call = vae_decode_call(spec, network, m)
    torch.set_flush_denormal(True)  # random weights: denormal floats would slow real kernels many times
    started = time.perf_counter()
    try:
        with torch.no_grad():
            if m.kernels == "real":
                peak = peak_allocated_bytes(call)
            else:
                with OutputOnlyAttention(), OutputOnlyKernels():  # type: ignore[no-untyped-call]
                    peak = peak_allocated_bytes(call)
    finally:
        torch.set_flush_denormal(False)  # PyTorch's default
    seconds = time.perf_counter() - started
    shape = Shape(m.height, m.width, m.num_frames)
    row: dict[str, Any] = {
        "measurement": "activation_peak",
        **{k: v for k, v in asdict(m).items() if k != "why"},
        "latent_frames": latent_frames(spec, m.num_frames),
        "units": latent_tokens(spec, shape, m.batch) if m.component == "denoiser" else m.height * m.width,
        "blocks_built": built,
        "blocks_total": total,
        "act_peak_bytes": peak,
        "act_peak_gib": round(peak / GIB, 5),
        "seconds": round(seconds, 1),
        "why": m.why,
    }
    return row


# -- The command ----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "system": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    import diffusers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


def _max_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux reports KiB


def measure_in_child(m: Measurement) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter: its memory is all returned when it exits, and its peak RSS
    is this measurement's alone."""
    command = [sys.executable, "-m", "stillmotion.bench.activations", "--child", json.dumps(asdict(m))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {m} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    fields = {name: row[name] for name in Measurement.__dataclass_fields__ if name != "why"}
    return Measurement(**fields).key()


def write_row(path: Path, row: dict[str, Any]) -> None:
    """Add ``row`` to the results file, replacing an older row of the same measurement."""
    rows = [old for old in read_rows(path) if row_key(old) != row_key(row)] + [row]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as out:
        out.write("".join(json.dumps(r) + "\n" for r in rows).encode())


def _shape(text: str) -> tuple[int, int, int]:
    try:
        height, width, frames = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--shape={text!r} must be HEIGHTxWIDTHxFRAMES, e.g. 480x832x81"
        ) from None
    return height, width, frames


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", action="append", help="only this model (repeatable); default: the whole suite"
    )
    parser.add_argument("--component", choices=COMPONENTS, help="only this network")
    parser.add_argument("--kernels", choices=KERNELS, help="only this kernel mode")
    parser.add_argument("--shape", type=_shape, help="measure this one shape of --model instead of the suite")
    parser.add_argument("--batch", type=int, default=1, help="denoiser rows per call (with --shape)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument(
        "--ff-chunk-mib", type=int, help="chunk every feed-forward to this cap (with --shape)"
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help="results file: <results-dir>/<name>.jsonl")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--in-process", action="store_true", help="no child process per measurement")
    parser.add_argument("--list", action="store_true", help="print the measurements and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected(args: argparse.Namespace) -> list[Measurement]:
    """The suite filtered by --model / --component / --kernels, or the one --shape measurement."""
    if args.shape is not None:
        if not args.model or len(args.model) != 1 or args.component is None:
            raise SystemExit(f"{PROG}: --shape needs exactly one --model and a --component")
        height, width, frames = args.shape
        one = Measurement(args.model[0], args.component, height, width, frames, args.batch, args.dtype,
                          args.kernels or "output-only", args.ff_chunk_mib, why="--shape")  # fmt: skip
        return [one]
    chosen = [m for m in SUITE if not args.model or m.model in args.model]
    chosen = [m for m in chosen if args.component in (None, m.component)]
    return [m for m in chosen if args.kernels in (None, m.kernels)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:  # one measurement, its row on stdout (measure_in_child)
        row = run(Measurement(**json.loads(args.child)))
        row["process_max_rss_gib"] = round(_max_rss_gib(), 3)
        sys.stdout.write(json.dumps(row) + "\n")
        return 0
    measurements = selected(args)
    if args.list:
        for m in measurements:
            sys.stdout.write(json.dumps(asdict(m)) + "\n")
        return 0
    for model in {m.model for m in measurements}:
        get_spec(model)  # an unknown name fails before anything runs
    path = args.results_dir / f"{args.name}.jsonl"
    context = {
        "command": " ".join([PROG, *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        **versions(),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for m in measurements:
        if args.in_process:
            row = run(m)
            row["process_max_rss_gib"] = round(_max_rss_gib(), 3)
        else:
            row = measure_in_child(m)
        row |= context
        write_row(path, row)
        sys.stdout.write(json.dumps({k: row[k] for k in ("model", "component", "height", "width",
                         "num_frames", "batch", "dtype", "kernels", "ff_chunk_mib", "act_peak_gib",
                         "seconds", "process_max_rss_gib")}) + "\n")  # fmt: skip
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
