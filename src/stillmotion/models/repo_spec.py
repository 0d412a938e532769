"""An unregistered Hugging Face repo id: which family it is, read from its own ``model_index.json``.

``registry.get_spec("someone/finetune")`` can only guess from the name form. ``find_spec`` settles it before
a job is queued, planned or run: the repo's ``model_index.json`` (and, for Wan, its transformer's config)
from the local Hugging Face cache, else from the hub, picks the family the way a local folder's files do. A
repo that does not exist, is not a diffusers pipeline, or is no image-to-video model stillmotion runs is
refused at once with a clear message; one that cannot be had here (offline, hub unreachable, not cached) is
``ModelUnavailable`` up front rather than a job that fails minutes later.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from stillmotion import bounded_json
from stillmotion.errors import ModelUnavailable, UnknownModel
from stillmotion.models.registry import ModelSpec, get_spec, spec_for_index

_settled: dict[tuple[str, str | None], ModelSpec] = {}  # repo resolutions that succeeded, per cache folder
_lock = threading.Lock()


def find_spec(
    name: str, *, cache_dir: Path | None = None, offline: bool = False, folders: bool = True
) -> ModelSpec:
    """``get_spec(name)``, with an unregistered repo id's family read from the repo itself."""
    spec = get_spec(name, folders=folders)
    if not spec.unverified:
        return spec
    key = (spec.name, None if cache_dir is None else str(cache_dir))
    with _lock:
        known = _settled.get(key)
    if known is not None:
        return known
    index = _repo_json(spec.name, "model_index.json", cache_dir=cache_dir, offline=offline)
    transformer = None
    if str(index.get("_class_name", "")).startswith("Wan"):
        transformer = _repo_json(spec.name, "transformer/config.json", cache_dir=cache_dir, offline=offline)
    base = spec_for_index(index, transformer, spec.name)
    settled = replace(base, name=spec.name, repo_id=spec.name, revision=None, aliases=(), unverified=False)
    with _lock:
        _settled[key] = settled
    return settled


def _repo_json(repo: str, filename: str, *, cache_dir: Path | None, offline: bool) -> dict[str, Any]:
    """One small JSON file of ``repo``: from the local cache, else (online) from the hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from stillmotion.models import hub_probe

    cache = str(cache_dir) if cache_dir else None
    try:
        path = hf_hub_download(repo, filename, cache_dir=cache, local_files_only=True)
    except LocalEntryNotFoundError:
        if offline or not hub_probe.hub_reachable():
            why = (
                "offline mode is on"
                if offline
                else "the Hugging Face hub cannot be reached from this machine"
            )
            raise ModelUnavailable(
                f"model={repo!r} is not in this machine's model cache and {why}, so it cannot be used here. "
                f"Download it once on a machine with internet access (`hf download {repo} --local-dir "
                f"{repo.split('/')[-1]}`), copy the folder here and use it as the model; or use a model "
                "that needs no download.",
                field="model",
                details={"model": repo},
            ) from None
        try:
            path = hf_hub_download(repo, filename, cache_dir=cache)
        except (RepositoryNotFoundError, GatedRepoError):
            raise UnknownModel(
                f"model={repo!r}: the Hugging Face hub has no such repo, or it is private or gated (log in "
                "with `hf auth login` after accepting its terms).",
                field="model",
            ) from None
        except EntryNotFoundError:
            raise UnknownModel(
                f"model={repo!r} has no {filename}: it is not a diffusers pipeline repo.", field="model"
            ) from None
        except OSError as exc:  # connection errors, timeouts, a full disk
            raise ModelUnavailable(
                f"model={repo!r}: reading its {filename} from the hub failed ({exc}).", field="model"
            ) from None
    try:
        data = bounded_json.read_json_file(Path(path))
    except (OSError, ValueError) as exc:
        raise UnknownModel(f"model={repo!r}: its {filename} is unreadable ({exc}).", field="model") from None
    if not isinstance(data, dict):
        raise UnknownModel(f"model={repo!r}: its {filename} is not a JSON object.", field="model")
    return data
