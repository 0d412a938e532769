"""Load the RIFE 4.6 weights from the Hugging Face hub (repo id + revision), the way every model here loads.

``huggingface_hub.snapshot_download`` fetches only the weights file of the pinned revision into the hub cache
(resumable, cached, ``local_files_only`` when offline), then ``torch.load(weights_only=True)`` reads the
state dict (a ``.pth`` of tensors: no pickled code runs) or ``safetensors`` reads a ``.safetensors`` file,
and IFNet takes its weights as Practical-RIFE's loader gives them (``module.`` stripped, other networks'
keys ignored), but only when every one of them is there, in the 4.6 shapes. The snapshot folder's name is
the commit actually loaded; the recipe records it. Hub and file errors become ``ModelUnavailable``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stillmotion.config import RIFE_REPO_ID, RIFE_REVISION
from stillmotion.errors import ModelUnavailable

if TYPE_CHECKING:  # torch is imported when weights load, not when this module is
    import torch

    from stillmotion.models.rife import IFNet

logger = logging.getLogger(__name__)

# The default repo and revision are settings (config.py: STILLMOTION_RIFE_REPO_ID, STILLMOTION_RIFE_REVISION).
RIFE_FILENAME = "rife46.pth"
RIFE_VERSION = "4.6"


@dataclass(frozen=True)
class RifeWeights:
    """Where the weights come from."""

    repo_id: str = RIFE_REPO_ID
    revision: str = RIFE_REVISION
    filename: str = RIFE_FILENAME


@dataclass(frozen=True)
class LoadedRife:
    """The network (on the CPU, eval mode, float32) and the exact commit its weights came from."""

    net: IFNet
    weights: RifeWeights
    commit: str
    path: Path

    def to_dict(self) -> dict[str, str]:
        return {
            "network": f"RIFE {RIFE_VERSION} (IFNet)",
            "repo_id": self.weights.repo_id,
            "revision": self.weights.revision,
            "commit": self.commit,
            "filename": self.weights.filename,
        }


def load_rife(weights: RifeWeights, *, cache_dir: Path | None = None, offline: bool = False) -> LoadedRife:
    """Download (or find in the cache) and load the weights; ``ModelUnavailable`` says why not."""
    from stillmotion.models.rife import IFNet

    path = _fetch(weights, cache_dir=cache_dir, offline=offline)
    try:
        net = IFNet()
        net.load_state_dict(_ifnet_weights(_read_state_dict(path), net), strict=True)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ModelUnavailable(
            f"interpolator weights {path} are not RIFE {RIFE_VERSION} weights or are damaged "
            f"({type(exc).__name__}: {str(exc)[:200]}). Delete the file from the hub cache and retry.",
            field="interpolator",
        ) from exc
    net.eval().requires_grad_(False)
    logger.info("loaded RIFE %s from %s", RIFE_VERSION, path)
    return LoadedRife(net=net, weights=weights, commit=path.parent.name, path=path)


def _ifnet_weights(state: dict[str, torch.Tensor], net: IFNet) -> dict[str, torch.Tensor]:
    """IFNet's weights out of a RIFE checkpoint, as Practical-RIFE's own loader reads it: the ``module.``
    prefix of its DistributedDataParallel saves stripped, keys of other networks ignored (later releases
    carry a ``teacher.*`` network). Unlike that loader, every IFNet weight must be there (ValueError naming
    the missing ones); shapes are checked by ``load_state_dict``."""
    stripped = {key.removeprefix("module."): value for key, value in state.items()}
    wanted = net.state_dict().keys()
    missing = [key for key in wanted if key not in stripped]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"IFNet weights missing ({len(missing)} of {len(wanted)}): {shown}")
    ignored = len(stripped) - len(wanted)
    if ignored:
        logger.info("RIFE checkpoint: %d entries that are not IFNet's are ignored", ignored)
    return {key: stripped[key] for key in wanted}


def check_available(weights: RifeWeights, *, cache_dir: Path | None = None, offline: bool = False) -> None:
    """Raise ``ModelUnavailable`` now, as loading would later, when the weights are not in the local cache and
    cannot be downloaded from here (offline mode, or the hub out of reach). Downloads nothing: the service
    calls it before a job asking for RIFE is queued or planned, as it does for a model."""
    from stillmotion.models import hub_probe

    try:
        _fetch(weights, cache_dir=cache_dir, offline=offline, cache_only=True)
    except ModelUnavailable:
        if offline or not hub_probe.hub_reachable():
            raise  # else the first run downloads them


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise ValueError(f"expected a state dict, found {type(loaded).__name__}")
    return loaded


def _fetch(weights: RifeWeights, *, cache_dir: Path | None, offline: bool, cache_only: bool = False) -> Path:
    """The weights file in the hub cache, downloaded first unless ``offline`` or ``cache_only``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{weights.repo_id}@{weights.revision}"
    advice = (
        "Download it once on a connected machine (`hf download "
        f"{weights.repo_id} {weights.filename} --revision {weights.revision}`) into the same cache, "
        "or use interpolator=minterpolate, which needs no download."
    )
    try:
        folder = snapshot_download(
            weights.repo_id,
            revision=weights.revision,
            allow_patterns=[weights.filename],
            cache_dir=str(cache_dir) if cache_dir else None,
            local_files_only=offline or cache_only,
        )
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        reason = "the hub has no such repo or revision, or it needs a login"
        raise ModelUnavailable(
            f"interpolator weights {where}: {reason}. {advice}", field="interpolator"
        ) from exc
    except (LocalEntryNotFoundError, OSError) as exc:
        reason = "they are not in the local cache" + (
            " (offline mode)" if offline else " and the hub is unreachable"
        )
        raise ModelUnavailable(
            f"interpolator weights {where}: {reason}. {advice}", field="interpolator"
        ) from exc
    path = Path(folder) / weights.filename
    if not path.is_file():
        raise ModelUnavailable(
            f"interpolator weights {where}: the snapshot has no {weights.filename}. {advice}",
            field="interpolator",
        )
    return path
