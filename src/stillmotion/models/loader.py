"""Load a model's components: a random build (tiny or full size), a local folder, or a Hugging Face repo id.

Downloads go through ``huggingface_hub.snapshot_download`` (a progress bar per file, resumable, only the
files this dtype needs), then every component loads from that local snapshot. Hub and file errors become
``ModelUnavailable`` with what to do next, never a traceback from the hub client.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch

from stillmotion.errors import ModelUnavailable
from stillmotion.models import hub_probe
from stillmotion.models.adapters import family_of
from stillmotion.models.family import Components
from stillmotion.models.gguf import GgufWeights
from stillmotion.models.registry import ModelSpec

logger = logging.getLogger(__name__)

CONFIG_PATTERNS = [
    "model_index.json",
    "*/*.json",
    "tokenizer/*.txt",
    "tokenizer/*.json",
    "tokenizer/*.model",  # T5's sentencepiece model, beside its tokenizer.json
]
# transformers save a network as model*.safetensors, diffusers as diffusion_pytorch_model*.safetensors; large
# networks come in shards (name-00001-of-00004.safetensors, with a .index.json that CONFIG_PATTERNS covers).
TRANSFORMERS_STEM = "model"
DIFFUSERS_STEM = "diffusion_pytorch_model"


def download_command(spec: ModelSpec, dtype: torch.dtype) -> str:
    """The one command that fetches exactly what a run of ``spec`` in ``dtype`` needs into a folder.

    huggingface_hub's own CLI (``hf``; ``huggingface-cli`` is gone from current releases), with the pinned
    revision and only this dtype's weights, into a diffusers-format folder named after the model.
    """
    assert spec.repo_id is not None
    folder = spec.repo_id.split("/")[-1]
    revision = f" --revision {spec.revision}" if spec.revision else ""
    include = " ".join(f"'{pattern}'" for pattern in hub_patterns(spec, dtype))
    return f"hf download {spec.repo_id}{revision} --local-dir {folder} --include {include}"


def offline_help(spec: ModelSpec, dtype: torch.dtype) -> str:
    """What to do when ``spec`` cannot be downloaded here, for any surface (each adds how to choose it)."""
    return (
        f"Download it once on a machine with internet access: `{download_command(spec, dtype)}`, copy the "
        f"folder here and use it as the model; or use a model that needs no download."
    )


def weight_variant(spec: ModelSpec, dtype: torch.dtype) -> str | None:
    """The checkpoint variant to fetch: the repo's half-precision files for a half-precision run, if any."""
    if dtype in (torch.float16, torch.bfloat16) and "fp16" in spec.variants:
        return "fp16"
    return None


def weight_patterns(spec: ModelSpec, variant: str | None) -> dict[str, list[str]]:
    """Per network, the file patterns of its weights for ``variant`` (one file or shards)."""
    roles = family_of(spec).roles
    suffix = f".{variant}" if variant else ""
    patterns = {}
    networks = [roles.denoiser, *(name for name in roles.offload_order if name != roles.denoiser)]
    for name in networks:  # the denoiser first: it names the model in messages about missing files
        role = roles.param_role(name)  # a second expert counts as "denoiser_2"
        if not getattr(spec.params, role):  # a network this model does not have (Wan 2.2 TI2V: no CLIP)
            continue
        stem = TRANSFORMERS_STEM if name in roles.encoders else DIFFUSERS_STEM
        patterns[name] = [f"{name}/{stem}{suffix}.safetensors", f"{name}/{stem}{suffix}-*-of-*.safetensors"]
    return patterns


def hub_patterns(spec: ModelSpec, dtype: torch.dtype, without: frozenset[str] = frozenset()) -> list[str]:
    """Every file a run in ``dtype`` needs: configs, tokenizer, and only the weights of that variant; none of
    the networks in ``without`` (a transformer whose weights come from a GGUF file)."""
    weights = weight_patterns(spec, weight_variant(spec, dtype))
    return CONFIG_PATTERNS + [
        pattern for name, patterns in weights.items() if name not in without for pattern in patterns
    ]


def missing_weights(spec: ModelSpec, folder: Path) -> list[str]:
    """Networks of ``spec`` with no weight file in ``folder`` in any variant (checked on disk only)."""
    missing: list[str] = []
    for variant in (None, "fp16"):
        absent = [
            name
            for name, patterns in weight_patterns(spec, variant).items()
            if not any(any(folder.glob(pattern)) for pattern in patterns)
        ]
        if not absent:
            return []
        missing = missing or absent
    return [weight_patterns(spec, None)[name][0] for name in missing]


def is_cached(spec: ModelSpec, dtype: torch.dtype, cache_dir: Path | None = None) -> bool:
    """Whether every file this dtype needs is already in the local Hugging Face cache (no network)."""
    if spec.tiny or spec.local_path is not None:
        return True
    if spec.random_weights:  # built offline when missing: never a download
        return True
    return _is_cached_snapshot(spec, dtype, cache_dir)


def fetch_snapshot(
    spec: ModelSpec,
    dtype: torch.dtype,
    *,
    cache_dir: Path | None,
    offline: bool,
    without: frozenset[str] = frozenset(),
) -> Path:
    """Download (or find in the cache) the files of ``spec`` for ``dtype``, except the weights of the networks
    in ``without``; return the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    assert spec.repo_id is not None
    where = f"{spec.repo_id}@{spec.revision or 'main'}"
    if not offline and not _is_cached_snapshot(spec, dtype, cache_dir) and not hub_probe.hub_reachable():
        # Fail in seconds with a plain message instead of the hub client's minute of retries.
        raise ModelUnavailable(
            f"model={where!r} is not downloaded yet and the Hugging Face hub cannot be reached from this "
            f"machine. {offline_help(spec, dtype)}",
            field="model",
            details={"model": spec.name},
        )
    try:
        folder = snapshot_download(
            spec.repo_id,
            revision=spec.revision,
            allow_patterns=hub_patterns(spec, dtype, without),
            cache_dir=str(cache_dir) if cache_dir else None,
            local_files_only=offline,
        )
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelUnavailable(
            f"model={spec.repo_id!r}: the Hugging Face hub has no such repo, or it needs a login "
            f"(`hf auth login`, after accepting its terms on huggingface.co).",
            field="model",
            details={"model": spec.name},
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelUnavailable(
            f"model={where!r}: that revision does not exist on the hub.", field="model"
        ) from exc
    except LocalEntryNotFoundError as exc:
        reason = (
            "offline mode is on and it is not in the local cache"
            if offline
            else ("the Hugging Face hub cannot be reached and it is not in the local cache")
        )
        raise ModelUnavailable(
            f"model={where!r} is not available: {reason}. {offline_help(spec, dtype)}",
            field="model",
            details={"model": spec.name},
        ) from exc
    except OSError as exc:  # connection errors, full disk, permissions
        raise ModelUnavailable(
            f"model={where!r} could not be downloaded: {exc}. {offline_help(spec, dtype)}",
            field="model",
            details={"model": spec.name},
        ) from exc
    return Path(folder)


def _is_cached_snapshot(spec: ModelSpec, dtype: torch.dtype, cache_dir: Path | None) -> bool:
    try:
        fetch_snapshot(spec, dtype, cache_dir=cache_dir, offline=True)
    except ModelUnavailable:
        return False
    return True


def load_components(
    spec: ModelSpec,
    dtype: torch.dtype,
    *,
    cache_dir: Path | None = None,
    offline: bool = False,
    transformer_gguf: GgufWeights | None = None,
    transformer_2_gguf: GgufWeights | None = None,
    int8: bool = False,
) -> Components:
    """All components of ``spec`` on the CPU in ``dtype`` (the memory plan places them afterwards); with
    ``transformer_gguf`` (and a two-expert model's ``transformer_2_gguf``), that transformer from its file
    (models/gguf.py), the rest from the model; with
    ``int8``, the denoiser(s) and the text encoder in int8 storage (models/int8.py), quantized while a
    folder loads, or right after a random network is built."""
    family = family_of(spec)
    components: Components
    files = {
        name: file
        for name, file in (("transformer", transformer_gguf), ("transformer_2", transformer_2_gguf))
        if file is not None
    }
    if spec.tiny:
        components = family.build_tiny(spec, seed=0)
        if dtype != torch.float32:  # built in float32
            for module in components.modules().values():
                module.to(dtype=dtype)
        for name, file in files.items():
            transformer = _tiny_gguf_transformer(components, family, file, dtype, name)
            components = replace(cast(Any, components), **{name: transformer})
        return _quantize_built(components, family) if int8 else components
    if spec.random_weights:
        from stillmotion.models.random_full import build_random_components

        # Cached as a safetensors file per (seed, dtype) under the models folder; built on the first use.
        components = build_random_components(spec, dtype=dtype, cache_dir=cache_dir)
        return _quantize_built(components, family) if int8 else components
    without = frozenset(files)
    folder = spec.local_path or fetch_snapshot(
        spec, dtype, cache_dir=cache_dir, offline=offline, without=without
    )
    variant = weight_variant(spec, dtype) if spec.local_path is None else _local_variant(spec, folder, dtype)
    logger.info("loading %s from %s (%s, variant=%s)", spec.name, folder, dtype, variant)
    try:
        if files:
            from stillmotion.models.gguf import load_gguf_transformer

            given = {}
            for name, file in files.items():
                logger.info("%s: %s from %s", name, file.label, file.path)
                given[name] = load_gguf_transformer(file, family, folder, dtype, subfolder=name)
            components = family.load_folder_with_denoisers(folder, dtype, variant, given)
        else:
            components = family.load_folder(folder, dtype, variant, int8=int8)
        for module in components.modules().values():
            module.eval()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(
            f"model={spec.name!r}: the files in {folder} could not be loaded ({type(exc).__name__}: {exc}). "
            "They may be incomplete or corrupt: delete the folder (or its hub cache entry), download again.",
            field="model",
        ) from exc
    return components


def _quantize_built(components: Components, family: Any) -> Components:
    """A built model's int8 roles quantized in place (the loaders' layers, models/int8.py)."""
    from stillmotion.models.int8 import INT8_ROLES, quantize_built

    for name, module in components.modules().items():
        if family.roles.param_role(name) in INT8_ROLES:
            quantize_built(module)
    return components


def _local_variant(spec: ModelSpec, folder: Path, dtype: torch.dtype) -> str | None:
    """Use fp16 files from a local folder only if it has them for the denoiser."""
    if dtype not in (torch.float16, torch.bfloat16):
        return None
    denoiser = family_of(spec).roles.denoiser
    patterns = weight_patterns(spec, "fp16")[denoiser]
    return "fp16" if any(any(folder.glob(pattern)) for pattern in patterns) else None


def _tiny_gguf_transformer(
    components: Components, family: Any, weights: GgufWeights, dtype: torch.dtype, name: str
) -> torch.nn.Module:
    """A tiny model's transformer ``name`` from a GGUF file, its config from the tiny build (written to a
    folder, as a real model's config folder is)."""
    import tempfile

    from stillmotion.models.gguf import load_gguf_transformer

    built: Any = components.modules()[name]
    with tempfile.TemporaryDirectory(prefix="stillmotion-gguf-config-") as folder:
        built.save_config(Path(folder) / name)
        transformer: torch.nn.Module = load_gguf_transformer(
            weights, family, Path(folder), dtype, subfolder=name
        )
    return transformer
