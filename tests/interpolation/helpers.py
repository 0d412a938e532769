"""Helpers for the interpolation tests: a moving-square clip, RIFE weights saved as the hub stores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from stillmotion.config import RIFE_REPO_ID
from stillmotion.models.rife import IFNet
from stillmotion.models.rife_loader import RIFE_FILENAME

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def moving_square(num_frames: int = 8, size: int = 64, step: int = 4) -> npt.NDArray[np.uint8]:
    """A white 12-pixel square moving ``step`` pixels right per frame over a dark textured background."""
    rng = np.random.default_rng(0)
    background = rng.integers(20, 60, (size, size, 3), dtype=np.uint8)
    frames = np.repeat(background[None], num_frames, axis=0)
    for i in range(num_frames):
        x = 4 + i * step
        frames[i, 26:38, x : x + 12] = 255
    return frames


def square_center_x(frame: npt.NDArray[np.uint8]) -> float:
    """Horizontal centre of the bright pixels."""
    xs = np.nonzero(frame[..., 0] > 160)[1]
    return float(xs.mean())


def save_rife_in_hub_cache(
    cache_dir: Path,
    *,
    seed: int = 0,
    revision: str = "main",
    prefix: str = "",
    extra: dict[str, torch.Tensor] | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Random weights of the real RIFE 4.6 network, saved where ``snapshot_download`` looks for them.

    The hub cache layout: ``models--OWNER--NAME/snapshots/<commit>/<file>`` plus ``refs/<revision>`` naming
    the commit. ``prefix="module."`` saves them as Practical-RIFE's own (DistributedDataParallel) checkpoints;
    ``extra`` adds keys that are not IFNet's (later releases carry a ``teacher.*`` network), ``drop`` leaves
    out some of IFNet's.
    """
    torch.manual_seed(seed)
    state = IFNet().state_dict()
    repo = cache_dir / f"models--{RIFE_REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    stored = {key: value for key, value in state.items() if key not in drop} | (extra or {})
    torch.save({prefix + key: value for key, value in stored.items()}, snapshot / RIFE_FILENAME)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(FAKE_COMMIT)
    return state
