"""Carry SpeedOptions out on the UNet: regional or full torch.compile, a persistent compile cache, attention.

``apply_speed(modules, options, device, cache_dir)`` compiles and swaps attention in place and returns what
it did (for the output's metadata); ``undo_speed(modules)`` puts the eager UNet back. Regional compilation
compiles every repeated block of I2VGen-XL once per distinct shape (diffusers' ``compile_repeated_blocks``
does not apply: ``I2VGenXLUNet._repeated_blocks`` is empty in diffusers 0.42.1), so its cold start is a
fraction of a whole-model compile. ``CompileCache`` points inductor's and Triton's on-disk caches at
``<data_dir>/compile-cache`` and saves torch's mega-cache artifacts per (torch, device, dtype, shape), so a
restarted service compiles from cache. Everything here is exact (math); docs/speed.md has the details.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from stillmotion.speed.attention import restore_attention, set_attention
from stillmotion.speed.options import CompileScope, SpeedOptions

logger = logging.getLogger(__name__)

# The I2VGen-XL blocks worth compiling: each repeats (16 transformer blocks spatial + temporal, 22 resnets,
# 22 temporal convs) so one graph per shape serves many modules; the temporal encoder runs once per call
# but holds the largest activation peak (measurements/), where inductor's fusions save most memory traffic.
REGIONAL_BLOCKS: tuple[str, ...] = (
    "BasicTransformerBlock",
    "ResnetBlock2D",
    "TemporalConvLayer",
    "I2VGenXLTransformerTemporalEncoder",
)
RECOMPILE_LIMIT = 64  # per block class: levels x (spatial, temporal) x (batch 1, 2) x a few resolutions
_APPLIED = "_stillmotion_speed"  # attribute on the UNet: the compiled submodules, for undo_speed
ARTIFACT_SUFFIX = ".megacache"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def device_name(device: torch.device) -> str:
    """The accelerator's marketing name ("NVIDIA H100 80GB HBM3"), or the device type."""
    if device.type == "cuda" and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(device))
    return device.type


def cache_key(device: torch.device, dtype: torch.dtype | str, shape: Sequence[int] | None = None) -> str:
    """(torch version, device name, dtype[, latent shape]) as a file-name-safe string."""
    dtype_name = str(dtype).removeprefix("torch.")
    parts = [f"torch{torch.__version__}", device_name(device), dtype_name]
    if shape is not None:
        parts.append("x".join(str(n) for n in shape))
    return "_".join(_slug(p) for p in parts)


class CompileCache:
    """A compile cache under one folder: inductor FX graphs, Triton kernels and mega-cache artifacts."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def inductor_dir(self) -> Path:
        return self.root / "inductor"

    @property
    def triton_dir(self) -> Path:
        return self.root / "triton"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    def activate(self) -> None:
        """Point inductor and Triton at this folder (read at compile time, so before the first call)."""
        self.inductor_dir.mkdir(parents=True, exist_ok=True)
        self.triton_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.inductor_dir)
        os.environ["TRITON_CACHE_DIR"] = str(self.triton_dir)

    def load(self, prefix: str) -> int:
        """Hot-load every saved artifact whose key starts with ``prefix``; returns how many loaded."""
        loaded = 0
        for path in sorted(self.artifacts_dir.glob(f"{prefix}*{ARTIFACT_SUFFIX}")):
            try:
                torch.compiler.load_cache_artifacts(path.read_bytes())
                loaded += 1
            except Exception as error:  # a stale or torn file must not stop generation; inductor recompiles
                logger.warning("compile cache %s not loaded: %s", path.name, error)
        return loaded

    def save(self, key: str) -> Path | None:
        """Save what this process compiled so far under ``key`` (call after the first compiled step)."""
        result = torch.compiler.save_cache_artifacts()
        if result is None:
            return None
        artifacts, _info = result
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        path = self.artifacts_dir / f"{key}{ARTIFACT_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(artifacts)
        tmp.replace(path)  # atomic: a reader never sees half a file
        return path

    def files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()] if self.root.exists() else []


def compile_counters() -> dict[str, int]:
    """Inductor's FX-graph cache hits and misses in this process (to tell a warm start from a cold one)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {
        "fxgraph_cache_hit": int(inductor.get("fxgraph_cache_hit", 0)),
        "fxgraph_cache_miss": int(inductor.get("fxgraph_cache_miss", 0)),
    }


def measure_cold_start(call: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of the first call (compile included, device synchronised), and its result."""
    _synchronize(device)
    started = time.perf_counter()
    result = call()
    _synchronize(device)
    return time.perf_counter() - started, result


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def regional_blocks(model: torch.nn.Module, names: Sequence[str] = REGIONAL_BLOCKS) -> list[torch.nn.Module]:
    """The submodules regional compilation compiles (outermost only: no block inside another)."""
    found: list[torch.nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if type(module).__name__ in names:
            found.append(module)
            inside.update(id(m) for m in module.modules())
    return found


def apply_speed(
    modules: Mapping[str, torch.nn.Module],
    options: SpeedOptions,
    device: torch.device,
    cache_dir: Path,
    *,
    blocks: Sequence[str] = REGIONAL_BLOCKS,
    denoiser: str = "unet",
) -> dict[str, Any]:
    """Compile and re-route attention of ``modules[denoiser]`` as ``options`` say; returns what was applied.

    Call after ``memory.apply.apply_plan`` (the offload hooks must be in place first, so regional blocks
    sit inside them) and before the first UNet call. Compilation itself is lazy: the first step pays it.
    """
    unet: Any = modules[denoiser]
    undo_speed(modules, denoiser=denoiser)
    applied: dict[str, Any] = {**options.to_dict(), "compiled_modules": 0, "compile_cache": None}

    set_attention(unet, options.attention, options.pad_head_dim)

    if options.compile is not CompileScope.OFF:
        cache = CompileCache(cache_dir)
        cache.activate()
        dtype = next(unet.parameters()).dtype
        loaded = cache.load(cache_key(device, dtype))
        mode = "reduce-overhead" if options.cuda_graphs else options.compile_mode
        # dynamic=False: one specialised graph per shape, the fastest kernels; a new resolution recompiles
        # (and is then cached on disk).
        kwargs: dict[str, Any] = {"dynamic": False, "mode": mode}
        # One graph per (block class, shape): I2VGen-XL's transformer and resnet blocks see more distinct
        # shapes than dynamo's default limit of 8, past which it silently falls back to eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        targets = [unet] if options.compile is CompileScope.FULL else regional_blocks(unet, blocks)
        for target in targets:
            target.compile(**kwargs)
        setattr(unet, _APPLIED, targets)
        applied["compiled_modules"] = len(targets)
        applied["compile_cache"] = {"dir": str(cache_dir), "artifacts_loaded": loaded}
    logger.debug("speed options applied: %s", applied)  # internals: shown with --debug only
    return applied


def undo_speed(modules: Mapping[str, torch.nn.Module], *, denoiser: str = "unet") -> None:
    """Back to the eager denoiser with its own attention processors (compiled code dropped, caches kept)."""
    unet: Any = modules[denoiser]
    for target in getattr(unet, _APPLIED, None) or []:
        # nn.Module.compile() only sets this attribute; clearing it restores the eager __call__.
        target._compiled_call_impl = None
    setattr(unet, _APPLIED, None)
    restore_attention(unet)


def mark_step_begin(applied: Mapping[str, Any]) -> None:
    """Call before each UNet call when CUDA graphs are on: the previous step's outputs may be overwritten."""
    if applied.get("cuda_graphs"):
        torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
