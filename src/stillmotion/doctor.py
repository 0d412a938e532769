"""``stillmotion doctor``: what this machine has for stillmotion, in one report.

Device and memory, library versions, whether the video encoder works, whether the default model's weights
are already cached, and whether the data folder is writable; then the warnings that matter before a first
job: without an NVIDIA GPU only the tiny models are practical, and what each real model needs (``gpu_needs``,
from the memory planner's estimates). Read-only: it downloads and loads nothing.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import psutil
import torch

import stillmotion
from stillmotion.config import Settings
from stillmotion.errors import StillmotionError

GIB = 1024**3
LIBRARIES = ("torch", "diffusers", "transformers", "accelerate", "av", "Pillow", "numpy")


def collect(settings: Settings) -> dict[str, Any]:
    """Every check as plain data; ``format_report`` renders it for people."""
    needs = gpu_needs()
    return {
        "stillmotion": stillmotion.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "device": _device(settings),
        "host_ram_gib": round(psutil.virtual_memory().total / GIB, 1),
        "host_ram_free_gib": round(psutil.virtual_memory().available / GIB, 1),
        "video_encoder": _video_encoder(),
        "data_dir": _data_dir(settings),
        "models_disk": _models_disk(settings),
        "default_model": _model(settings),
        "gpu_needs": needs,
        "warnings": _warnings(needs, psutil.virtual_memory().total / GIB),
    }


def format_report(report: dict[str, Any]) -> str:
    device = report["device"]
    lines = [
        f"stillmotion {report['stillmotion']} on Python {report['python']} ({report['platform']})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"device: {device['selected']} ({device.get('name', '')})",
    ]
    if "total_vram_gib" in device:
        lines.append(f"GPU memory: {device['free_vram_gib']} GiB free of {device['total_vram_gib']} GiB")
    lines += [
        f"host memory: {report['host_ram_free_gib']} GiB free of {report['host_ram_gib']} GiB",
        f"video encoder (H.264): {report['video_encoder']}",
        f"data folder: {report['data_dir']['path']} ({report['data_dir']['status']})",
        f"model weights folder: {report['models_disk']['path']} ({report['models_disk']['status']})",
        f"default model: {report['default_model']['name']}: {report['default_model']['weights']}",
    ]
    lines += [f"WARNING: {warning}" for warning in report["warnings"]]
    return "\n".join(lines)


def gpu_needs() -> list[dict[str, Any]]:
    """What each real model needs on an NVIDIA GPU for its default request (square input), from the memory
    planner's estimates with its safety margin: ``min_gib``, its cheapest plan (weights offloaded to host
    memory, slower), and ``resident_gib``, everything on the GPU (the fastest plan); ``min_host_gib``, the
    least host memory (RAM) any of its plans needs (memory/host.py)."""
    from stillmotion.engine.request import GenerationRequest
    from stillmotion.memory.device import DeviceBudget
    from stillmotion.memory.plan import ESTIMATE_MARGIN, build_plan, smallest_estimate_gib, usable_rungs
    from stillmotion.models.registry import list_specs

    budget = DeviceBudget.fixed(80.0, "cuda", name="an 80 GiB card")  # room for every plan to be built
    needs = []
    for spec in list_specs():
        if spec.tiny or spec.random_weights:
            continue
        request = GenerationRequest(model=spec.name).resolve(spec, None, need_prompt=False)
        least = smallest_estimate_gib(spec, request, budget, allow_approximate=False)
        fastest = usable_rungs(spec, allow_approximate=False)[0]
        resident = build_plan(spec, request, budget, fastest, allow_approximate=False).estimate
        assert resident is not None
        # A host of 1 byte: every plan takes its least host memory (group offload pins on the fly).
        short = budget.with_host(1)
        host = [
            build_plan(spec, request, short, rung, allow_approximate=False).estimate
            for rung in usable_rungs(spec, allow_approximate=False)
        ]
        needs.append(
            {
                "model": spec.name,
                "request": f"{request.width}x{request.height}, {request.num_frames} frames",
                "min_gib": round(least * ESTIMATE_MARGIN, 1),
                "resident_gib": round(resident.peak_reserved_gib * ESTIMATE_MARGIN, 1),
                "min_host_gib": round(
                    min(e.host.peak_gib for e in host if e and e.host) * ESTIMATE_MARGIN, 1
                ),
            }
        )
    return needs


def _warnings(needs: list[dict[str, Any]], host_ram_gib: float) -> list[str]:
    """What to know before a first job on this machine."""
    warnings = []
    short = [n for n in needs if n["min_host_gib"] > host_ram_gib]
    if short:
        each = "; ".join(f"{n['model']} {n['min_host_gib']:g} GiB" for n in short)
        warnings.append(
            f"host memory: this machine has {host_ram_gib:.1f} GiB of RAM, less than these models need with "
            f"16-bit weights, whatever the GPU: {each}. A GGUF transformer (transformer_gguf) needs less for "
            "Wan 2.1 I2V, Wan 2.2 TI2V and LTX-Video; `stillmotion plan --host-gb N` shows a plan's figure."
        )
    if not torch.cuda.is_available():
        each = "; ".join(f"{n['model']} {n['min_gib']:g} GiB ({n['resident_gib']:g} GiB all on the GPU)"
                         for n in needs)  # fmt: skip
        warnings.append(
            "no NVIDIA GPU: only the tiny models (tiny-*) are practical here, in seconds; a real model on "
            f"the CPU takes hours per video. The real models need a GPU with at least: {each}."
        )
    return warnings


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _device(settings: Settings) -> dict[str, Any]:
    from stillmotion.engine.engine import select_device

    try:
        device = select_device(settings.device)
    except StillmotionError as exc:
        return {"selected": "unavailable", "error": exc.message}
    info: dict[str, Any] = {"selected": str(device), "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        info.update(
            name=torch.cuda.get_device_name(device),
            free_vram_gib=round(free / GIB, 2),
            total_vram_gib=round(total / GIB, 2),
            cuda=torch.version.cuda,
        )
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def _video_encoder() -> str:
    import av

    try:
        av.codec.Codec("libx264", "w")
    except Exception as exc:  # PyAV raises several types for a missing encoder
        return f"missing ({exc})"
    return "ok (libx264)"


def _data_dir(settings: Settings) -> dict[str, str]:
    path = settings.data_dir.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return {"path": str(path), "status": f"not writable: {exc.strerror}"}
    free_gib = psutil.disk_usage(str(path)).free / GIB
    return {"path": str(path), "status": f"writable, {free_gib:.1f} GiB free"}


def _models_disk(settings: Settings) -> dict[str, str]:
    """Where model weights are downloaded (the models folder, or the Hugging Face cache) and its free disk."""
    if settings.models_dir is not None:
        path = settings.models_dir.resolve()
    else:
        hf_home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        path = Path(os.environ.get("HF_HUB_CACHE") or os.path.join(hf_home, "hub"))
    probe = path
    while not probe.exists() and probe != probe.parent:  # not created yet: the disk it will be on
        probe = probe.parent
    free_gib = psutil.disk_usage(str(probe)).free / GIB
    return {"path": str(path), "status": f"{free_gib:.1f} GiB free"}


def _model(settings: Settings) -> dict[str, str]:
    from stillmotion.models.loader import is_cached
    from stillmotion.models.registry import get_spec

    try:
        spec = get_spec(settings.default_model)
    except StillmotionError as exc:
        return {"name": settings.default_model, "weights": exc.message}
    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    if spec.tiny or spec.random_weights:
        return {"name": spec.name, "weights": "built in (random weights, no download)"}
    cached = is_cached(spec, dtype, cache_dir=settings.models_dir)
    where = os.environ.get("HF_HOME", "the Hugging Face cache")
    state = f"cached in {where}" if cached else "not downloaded yet (downloads on first use)"
    return {"name": spec.name, "weights": f"{spec.source}: {state}"}
