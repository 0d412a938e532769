"""Load a model's components: a random build (tiny or full size), a local folder, or a Hugging Face repo id.

Downloads go through ``huggingface_hub.snapshot_download`` (a progress bar per file, resumable, only the
files this dtype needs), then every component loads from that local snapshot. Hub and file errors become
``ModelUnavailable`` with what to do next, never a traceback from the hub client.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import torch

from stillmotion.errors import ModelUnavailable
from stillmotion.models.i2vgen_xl import I2VGenXLComponents, check_components
from stillmotion.models.registry import ModelSpec
from stillmotion.models.tiny import build_tiny_components

logger = logging.getLogger(__name__)

CONFIG_PATTERNS = ["model_index.json", "*/*.json", "tokenizer/*.txt", "tokenizer/*.json"]
WEIGHT_FILES = {
    "unet": "unet/diffusion_pytorch_model{variant}.safetensors",
    "vae": "vae/diffusion_pytorch_model{variant}.safetensors",
    "text_encoder": "text_encoder/model{variant}.safetensors",
    "image_encoder": "image_encoder/model{variant}.safetensors",
}

HUB_PROBE_TIMEOUT_S = 5.0

OFFLINE_HELP = (
    "To run without the hub: download the model once on a connected machine "
    "(`huggingface-cli download ali-vilab/i2vgen-xl`) and pass its folder with --model /path/to/i2vgen-xl, "
    "or try the pipeline end to end with --model tiny-i2vgen-xl (random weights, no download)."
)


def weight_variant(dtype: torch.dtype) -> str | None:
    """The checkpoint variant to fetch: half-precision files for a half-precision run."""
    return "fp16" if dtype in (torch.float16, torch.bfloat16) else None


def hub_patterns(dtype: torch.dtype) -> list[str]:
    variant = weight_variant(dtype)
    suffix = f".{variant}" if variant else ""
    return CONFIG_PATTERNS + [pattern.format(variant=suffix) for pattern in WEIGHT_FILES.values()]


def is_cached(spec: ModelSpec, dtype: torch.dtype, cache_dir: Path | None = None) -> bool:
    """Whether every file this dtype needs is already in the local Hugging Face cache (no network)."""
    if spec.tiny or spec.local_path is not None:
        return True
    if spec.random_weights:  # built offline when missing: never a download
        return True
    return _is_cached_snapshot(spec, dtype, cache_dir)


def fetch_snapshot(spec: ModelSpec, dtype: torch.dtype, *, cache_dir: Path | None, offline: bool) -> Path:
    """Download (or find in the cache) the files of ``spec`` for ``dtype``; return the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    assert spec.repo_id is not None
    where = f"{spec.repo_id}@{spec.revision or 'main'}"
    if not offline and not _is_cached_snapshot(spec, dtype, cache_dir) and not _hub_reachable():
        # Fail in seconds with a plain message instead of the hub client's minute of retries.
        raise ModelUnavailable(
            f"model={where!r} is not downloaded yet and the Hugging Face hub cannot be reached from this "
            f"machine. {OFFLINE_HELP}",
            field="model",
        )
    try:
        folder = snapshot_download(
            spec.repo_id,
            revision=spec.revision,
            allow_patterns=hub_patterns(dtype),
            cache_dir=str(cache_dir) if cache_dir else None,
            local_files_only=offline,
        )
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelUnavailable(
            f"model={spec.repo_id!r}: the Hugging Face hub has no such repo, or it needs a login "
            f"(`huggingface-cli login`). {OFFLINE_HELP}",
            field="model",
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
            f"model={where!r} is not available: {reason}. {OFFLINE_HELP}", field="model"
        ) from exc
    except OSError as exc:  # connection errors, full disk, permissions
        raise ModelUnavailable(
            f"model={where!r} could not be downloaded: {exc}. {OFFLINE_HELP}", field="model"
        ) from exc
    return Path(folder)


def _is_cached_snapshot(spec: ModelSpec, dtype: torch.dtype, cache_dir: Path | None) -> bool:
    try:
        fetch_snapshot(spec, dtype, cache_dir=cache_dir, offline=True)
    except ModelUnavailable:
        return False
    return True


def _hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connection to the hub's host: enough to tell 'offline' from 'online'."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def load_components(
    spec: ModelSpec, dtype: torch.dtype, *, cache_dir: Path | None = None, offline: bool = False
) -> I2VGenXLComponents:
    """All components of ``spec`` on the CPU in ``dtype`` (the memory plan places them afterwards)."""
    if spec.tiny:
        parts = build_tiny_components(seed=0)
        components = I2VGenXLComponents(**parts)
        if dtype != torch.float32:  # built in float32
            for module in components.modules().values():
                module.to(dtype=dtype)
        return components
    if spec.random_weights:
        from stillmotion.models.random_full import build_random_components

        # Cached as a safetensors file per (seed, dtype) under the models folder; built on the first use.
        return build_random_components(dtype=dtype, cache_dir=cache_dir)
    folder = spec.local_path or fetch_snapshot(spec, dtype, cache_dir=cache_dir, offline=offline)
    variant = weight_variant(dtype) if spec.local_path is None else _local_variant(folder, dtype)
    logger.info("loading %s from %s (%s, variant=%s)", spec.name, folder, dtype, variant)
    try:
        components = _from_folder(folder, dtype, variant)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(
            f"model={spec.name!r}: the files in {folder} could not be loaded ({type(exc).__name__}: {exc}). "
            "They may be incomplete or corrupt: delete the folder (or its hub cache entry), download again.",
            field="model",
        ) from exc
    return components


def _local_variant(folder: Path, dtype: torch.dtype) -> str | None:
    """Use fp16 files from a local folder only if it has them."""
    variant = weight_variant(dtype)
    if variant and (folder / WEIGHT_FILES["unet"].format(variant=f".{variant}")).exists():
        return variant
    return None


def _from_folder(folder: Path, dtype: torch.dtype, variant: str | None) -> I2VGenXLComponents:
    from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLUNet
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    common = {"torch_dtype": dtype, "variant": variant, "local_files_only": True}
    src = str(folder)
    components = I2VGenXLComponents(
        unet=I2VGenXLUNet.from_pretrained(src, subfolder="unet", **common),
        vae=AutoencoderKL.from_pretrained(src, subfolder="vae", **common),
        text_encoder=CLIPTextModel.from_pretrained(src, subfolder="text_encoder", **common),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(src, subfolder="image_encoder", **common),
        tokenizer=CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", local_files_only=True),
        feature_extractor=CLIPImageProcessor.from_pretrained(
            src, subfolder="feature_extractor", local_files_only=True
        ),
        scheduler=DDIMScheduler.from_pretrained(src, subfolder="scheduler", local_files_only=True),
    )
    check_components(components)
    for module in components.modules().values():
        module.eval()
    return components
