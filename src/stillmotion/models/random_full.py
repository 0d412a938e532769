"""Full-size random-weight models (e.g. i2vgen-xl-random): each family's real architecture, built offline.

For memory and speed testing (``stillmotion.bench``, ``stillmotion generate --model i2vgen-xl-random``): the
networks are built from the configs shipped in ``models/configs/<config_name>`` (verbatim where the model's
repo was readable, written by hand from the published configs otherwise; each folder's SOURCES.md says
which), so parameter counts, shapes and therefore memory and time per step are the real model's. Its videos
are noise. Weights are drawn with each class's own initialisation from a fixed seed, scaled by 0.5 (as
../shared/measurements did, so fp16 activations stay finite), then cast to the requested dtype. Building takes
minutes of CPU time (the 14B Wan transformer: 65 GB of float32 while it is drawn), so the result is cached as
one safetensors file per (configs, seed, dtype), written atomically; later loads take seconds to minutes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stillmotion.models.adapters import family_of
from stillmotion.models.family import Components, NetworkBuilders
from stillmotion.models.registry import ModelSpec

logger = logging.getLogger(__name__)

CONFIGS_ROOT = Path(__file__).resolve().parent / "configs"
WEIGHTS_SEED = 0  # one fixed seed: every run (engine, bench plan cells, stock cells) loads the same weights
WEIGHT_SCALE = 0.5  # as in ../shared/measurements: random fp16 weights stay finite through 50 steps


def config_dir(spec: ModelSpec) -> Path:
    """The shipped full-size configs of ``spec``'s architecture (models/configs/<config_name>)."""
    assert spec.config_name is not None, f"{spec.name} has no shipped configs"
    return CONFIGS_ROOT / spec.config_name


def cache_subdir(spec: ModelSpec) -> str:
    """The folder of ``spec``'s weight files under the models folder, e.g. ``i2vgen-xl-random``."""
    return f"{spec.config_name}-random"


def module_builders(spec: ModelSpec) -> NetworkBuilders:
    """One constructor per network, in the family's order (the seed offset is the index)."""
    return family_of(spec).network_builders(config_dir(spec))


def empty_modules(spec: ModelSpec) -> dict[str, torch.nn.Module]:
    """The networks with parameters on the meta device: shapes and counts, no memory."""
    modules = {}
    for name, build in module_builders(spec).items():
        with init_empty_weights():
            module = build()
        # transformers ties T5's embeddings in __init__, but not under init_empty_weights (which re-registers
        # parameters as it goes): tie them after it.
        tie_weights = getattr(module, "tie_weights", None)
        if callable(tie_weights):
            tie_weights()
        modules[name] = module
    return modules


def config_hash(spec: ModelSpec) -> str:
    """Short digest of the network configs: a changed config never loads a stale weights file."""
    digest = hashlib.sha256()
    for name in module_builders(spec):
        digest.update((config_dir(spec) / name / "config.json").read_bytes())
    return digest.hexdigest()[:10]


def weights_path(spec: ModelSpec, cache_dir: Path, seed: int, dtype: torch.dtype) -> Path:
    """The cache file of one (configs, seed, dtype), under ``<cache_dir>/<config_name>-random/``."""
    dtype_name = str(dtype).removeprefix("torch.")
    name = f"{config_hash(spec)}-seed{seed}-scale{WEIGHT_SCALE:g}-{dtype_name}.safetensors"
    return cache_dir / cache_subdir(spec) / name


def default_cache_dir() -> Path:
    """Where the weights go without a models_dir: ``$STILLMOTION_DATA_DIR/models`` (default data/models).

    The engine passes ``settings.models_dir``; this fallback mirrors Settings.data_dir's default.
    """
    return Path(os.environ.get("STILLMOTION_DATA_DIR") or "data") / "models"


def _build(
    spec: ModelSpec, seed: int, dtype: torch.dtype, weight_scale: float = WEIGHT_SCALE
) -> dict[str, torch.nn.Module]:
    """Build the networks with seeded random weights: fp32 init, scaled, then cast (one at a time)."""
    modules: dict[str, torch.nn.Module] = {}
    for offset, (name, build) in enumerate(module_builders(spec).items()):
        torch.manual_seed(seed + offset)
        module = build()
        with torch.no_grad():
            for param in module.parameters():
                param.mul_(weight_scale)
        modules[name] = module.to(dtype).eval()
    return modules


def _load(spec: ModelSpec, path: Path) -> dict[str, torch.nn.Module]:
    state = load_file(str(path))
    modules = empty_modules(spec)
    for name, module in modules.items():
        prefix = f"{name}."
        part = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        # Tied weights (T5's shared embedding) were saved once: load the rest, then tie them again.
        result = module.load_state_dict(part, strict=False, assign=True)
        if result.unexpected_keys:
            raise ValueError(f"{path}: {name} has unknown weights {result.unexpected_keys[:3]}")
        tie_weights = getattr(module, "tie_weights", None)
        if callable(tie_weights):
            tie_weights()
        left = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if left:
            raise ValueError(f"{path}: {name} has no weights for {left[:3]}")
        module.eval()
    return modules


def _save(modules: dict[str, torch.nn.Module], path: Path, seed: int) -> None:
    """Write every state dict into one safetensors file: temp file in the same folder, fsync, rename.

    A tied weight (two names, one tensor: T5's shared embedding) is written once; ``_load`` ties it again.
    """
    state: dict[str, torch.Tensor] = {}
    saved: set[int] = set()
    for name, module in modules.items():
        for key, tensor in module.state_dict().items():
            if tensor.data_ptr() in saved:
                continue
            saved.add(tensor.data_ptr())
            state[f"{name}.{key}"] = tensor.detach().contiguous()
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
    spec: ModelSpec,
    seed: int = WEIGHTS_SEED,
    dtype: torch.dtype = torch.float16,
    cache_dir: Path | None = None,
) -> dict[str, torch.nn.Module]:
    """The networks, on the CPU in ``dtype``: from the cache file if there is one, else built and cached."""
    path = weights_path(spec, cache_dir or default_cache_dir(), seed, dtype)
    if path.is_file():
        try:
            return _load(spec, path)
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # truncated or stale: rebuild
            logger.warning("ignoring unreadable random-weights cache %s (%s)", path, exc)
    logger.info("building random full-size %s weights (seed %d, %s) -> %s", spec.name, seed, dtype, path)
    modules = _build(spec, seed, dtype)
    try:
        _save(modules, path, seed)
    except OSError as exc:  # a read-only or full disk costs a rebuild next time, not this run
        logger.warning("could not cache random weights at %s: %s", path, exc)
    return modules


def build_random_components(
    spec: ModelSpec,
    seed: int = WEIGHTS_SEED,
    dtype: torch.dtype = torch.float16,
    cache_dir: Path | None = None,
) -> Components:
    """All components: random networks plus the family's offline tokenizer, image processor and scheduler."""
    networks = build_random_networks(spec, seed, dtype, cache_dir)
    components: Components = family_of(spec).assemble(networks, config_dir(spec))
    return components
