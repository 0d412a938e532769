"""i2vgen-xl-random: the full-size I2VGen-XL architecture with seeded random weights, built offline.

For memory and speed testing (``stillmotion.bench``, ``stillmotion generate --model i2vgen-xl-random``): the
networks are built from the configs shipped in ``models/configs/i2vgen-xl`` (verbatim from
ali-vilab/i2vgen-xl), so parameter counts, shapes and therefore memory and time per step are the real
model's. Its videos are noise. Weights are drawn with each class's own initialisation from a fixed seed,
scaled by 0.5 (as ../shared/measurements did, so fp16 activations stay finite), then cast to the requested
dtype. Building takes a minute of CPU time, so the result is cached as one safetensors file per
(seed, dtype), written atomically; later loads take seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLUNet
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from stillmotion.models.i2vgen_xl import MODULE_NAMES, I2VGenXLComponents
from stillmotion.models.tiny import build_tiny_tokenizer

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "i2vgen-xl"
WEIGHTS_SEED = 0  # one fixed seed: every run (engine, bench plan cells, stock cells) loads the same weights
WEIGHT_SCALE = 0.5  # as in ../shared/measurements: random fp16 weights stay finite through 50 steps
CACHE_SUBDIR = "i2vgen-xl-random"


def _read(config_dir: Path, name: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((config_dir / name / "config.json").read_text())
    return config


def module_builders(config_dir: Path | None = None) -> dict[str, Callable[[], torch.nn.Module]]:
    """One constructor per weight-carrying component, in MODULE_NAMES order (the seed offset is the index)."""
    config_dir = config_dir or CONFIG_DIR
    builders: dict[str, Callable[[], torch.nn.Module]] = {
        "unet": lambda: I2VGenXLUNet.from_config(_read(config_dir, "unet")),
        "vae": lambda: AutoencoderKL.from_config(_read(config_dir, "vae")),
        "text_encoder": lambda: CLIPTextModel(
            CLIPTextConfig.from_json_file(config_dir / "text_encoder" / "config.json")
        ),
        "image_encoder": lambda: CLIPVisionModelWithProjection(
            CLIPVisionConfig.from_json_file(config_dir / "image_encoder" / "config.json")
        ),
    }
    assert tuple(builders) == MODULE_NAMES
    return builders


def empty_modules(config_dir: Path | None = None) -> dict[str, torch.nn.Module]:
    """The four networks with parameters on the meta device: shapes and counts, no memory."""
    modules = {}
    for name, build in module_builders(config_dir).items():
        with init_empty_weights():
            modules[name] = build()
    return modules


def config_hash(config_dir: Path | None = None) -> str:
    """Short digest of the four network configs: a changed config never loads a stale weights file."""
    config_dir = config_dir or CONFIG_DIR
    digest = hashlib.sha256()
    for name in MODULE_NAMES:
        digest.update((config_dir / name / "config.json").read_bytes())
    return digest.hexdigest()[:10]


def weights_path(cache_dir: Path, seed: int, dtype: torch.dtype, config_dir: Path | None = None) -> Path:
    """The cache file of one (configs, seed, dtype), under ``<cache_dir>/i2vgen-xl-random/``."""
    dtype_name = str(dtype).removeprefix("torch.")
    name = f"{config_hash(config_dir)}-seed{seed}-scale{WEIGHT_SCALE:g}-{dtype_name}.safetensors"
    return cache_dir / CACHE_SUBDIR / name


def default_cache_dir() -> Path:
    """Where the weights go without a models_dir: ``$STILLMOTION_DATA_DIR/models`` (default data/models).

    The engine passes ``settings.models_dir``; this fallback mirrors Settings.data_dir's default.
    """
    return Path(os.environ.get("STILLMOTION_DATA_DIR") or "data") / "models"


def _build(
    config_dir: Path, seed: int, dtype: torch.dtype, weight_scale: float = WEIGHT_SCALE
) -> dict[str, torch.nn.Module]:
    """Build the networks with seeded random weights: fp32 init, scaled, then cast (one at a time)."""
    modules: dict[str, torch.nn.Module] = {}
    for offset, (name, build) in enumerate(module_builders(config_dir).items()):
        torch.manual_seed(seed + offset)
        module = build()
        with torch.no_grad():
            for param in module.parameters():
                param.mul_(weight_scale)
        modules[name] = module.to(dtype).eval()
    return modules


def _load(config_dir: Path, path: Path) -> dict[str, torch.nn.Module]:
    state = load_file(str(path))
    modules = empty_modules(config_dir)
    for name, module in modules.items():
        prefix = f"{name}."
        part = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        module.load_state_dict(part, strict=True, assign=True)
        left = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if left:
            raise ValueError(f"{path}: {name} has no weights for {left[:3]}")
        module.eval()
    return modules


def _save(modules: dict[str, torch.nn.Module], path: Path, seed: int) -> None:
    """Write every state dict into one safetensors file: temp file in the same folder, fsync, rename."""
    state = {
        f"{name}.{key}": tensor.detach().contiguous()
        for name, module in modules.items()
        for key, tensor in module.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        save_file(state, str(tmp), metadata={"seed": str(seed), "weight_scale": f"{WEIGHT_SCALE:g}"})
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_random_networks(
    seed: int = WEIGHTS_SEED,
    dtype: torch.dtype = torch.float16,
    cache_dir: Path | None = None,
    config_dir: Path | None = None,
) -> dict[str, torch.nn.Module]:
    """The networks, on the CPU in ``dtype``: from the cache file if there is one, else built and cached."""
    config_dir = config_dir or CONFIG_DIR
    path = weights_path(cache_dir or default_cache_dir(), seed, dtype, config_dir)
    if path.is_file():
        try:
            return _load(config_dir, path)
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # truncated or stale: rebuild
            logger.warning("ignoring unreadable random-weights cache %s (%s)", path, exc)
    logger.info("building random full-size I2VGen-XL weights (seed %d, %s) -> %s", seed, dtype, path)
    modules = _build(config_dir, seed, dtype)
    try:
        _save(modules, path, seed)
    except OSError as exc:  # a read-only or full disk costs a rebuild next time, not this run
        logger.warning("could not cache random weights at %s: %s", path, exc)
    return modules


def build_random_components(
    seed: int = WEIGHTS_SEED,
    dtype: torch.dtype = torch.float16,
    cache_dir: Path | None = None,
    config_dir: Path | None = None,
) -> I2VGenXLComponents:
    """All seven components: random networks, byte-level tokenizer, the shipped processor and scheduler."""
    config_dir = config_dir or CONFIG_DIR
    networks = build_random_networks(seed, dtype, cache_dir, config_dir)
    scheduler_config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    return I2VGenXLComponents(
        **networks,
        tokenizer=build_tiny_tokenizer(),  # byte-level, 77 tokens like the real one; ids fit the vocab
        feature_extractor=CLIPImageProcessor.from_pretrained(
            str(config_dir / "feature_extractor"), local_files_only=True
        ),
        scheduler=DDIMScheduler.from_config(scheduler_config),
    )
