"""Denoising checkpoints: the latest finished step, saved so a restarted job resumes instead of restarting.

A checkpoint is what the engine keeps in memory for OOM resume (``RunState``), written to a file: the
latents after step N, the scheduler's per-run state (step index, a multistep solver's past model outputs)
and a fingerprint of what it belongs to (the resolved request and the dtype). The engine offers one after
each step through the ``step_finished`` hook (engine/hooks.py; the worker decides when to write it:
engine/engine.py never touches job folders); given one back, it resumes at step N + 1 and gives the frames
an uninterrupted run would.

Files are written atomically (temp file, fsync, rename) and read with ``torch.load(weights_only=True)``:
only tensors, numbers, strings and lists of them are stored, never pickled objects, so a file in a data
folder cannot run code. A file that is unreadable, or belongs to another request, is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stillmotion.atomic_file import atomic_file

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STORABLE = (torch.Tensor, int, float, bool, str, type(None))


@dataclass(frozen=True)
class Checkpoint:
    """The state after ``steps_done`` denoising steps of the generation ``fingerprint`` names."""

    fingerprint: str
    steps_done: int
    latents: torch.Tensor  # on the CPU
    scheduler_state: dict[str, Any]


# ``on_checkpoint(steps_done, make)``: called after every step; ``make()`` builds the checkpoint (a device-to-
# host copy, so it is only made when the caller will keep it: no sync per step otherwise).
CheckpointCallback = Callable[[int, Callable[[], Checkpoint]], None]


def fingerprint(request: dict[str, Any], dtype: str) -> str:
    """What a checkpoint belongs to: every field of the resolved request (seed included) and the dtype."""
    text = json.dumps({"request": request, "dtype": dtype}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _storable(value: object) -> bool:
    if isinstance(value, _STORABLE):
        return True
    return isinstance(value, list | tuple) and all(isinstance(v, _STORABLE) for v in value)


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The scheduler's per-run attributes: tensors, numbers and lists of them (its config is not state).

    Hand-written because diffusers has no scheduler state API; ``restore_scheduler`` puts them back on a
    fresh scheduler made for the same request, which already holds everything else.
    """
    state = {}
    for name, value in vars(scheduler).items():
        if name == "config" or name.startswith("__") or not _storable(value):
            continue
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().clone()
        elif isinstance(value, list | tuple):
            value = [v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for v in value]
        state[name] = value
    return state


def restore_scheduler(scheduler: Any, state: dict[str, Any]) -> None:
    """Put ``scheduler_state``'s attributes back (tensors onto the device the scheduler's own live on)."""
    for name, value in state.items():
        current = getattr(scheduler, name, None)
        if isinstance(value, torch.Tensor) and isinstance(current, torch.Tensor):
            value = value.to(current.device)
        setattr(scheduler, name, value)


def save(checkpoint: Checkpoint, path: Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically: a reader finds the previous one or this one, whole."""
    data = {
        "version": FORMAT_VERSION,
        "fingerprint": checkpoint.fingerprint,
        "steps_done": checkpoint.steps_done,
        "latents": checkpoint.latents,
        "scheduler": checkpoint.scheduler_state,
    }
    with atomic_file(path) as out:
        torch.save(data, out)


def load(path: Path, expected_fingerprint: str | None = None) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none, it is unreadable, or it belongs elsewhere."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint = Checkpoint(
            fingerprint=str(data["fingerprint"]),
            steps_done=int(data["steps_done"]),
            latents=data["latents"],
            scheduler_state=dict(data["scheduler"]),
        )
        if data.get("version") != FORMAT_VERSION or not isinstance(checkpoint.latents, torch.Tensor):
            raise ValueError(f"format {data.get('version')!r}")
    except Exception as exc:  # any damage (truncated, foreign, old): restart cleanly rather than fail the job
        logger.warning("ignoring the unreadable checkpoint %s (%s: %s)", path.name, type(exc).__name__, exc)
        return None
    if expected_fingerprint is not None and checkpoint.fingerprint != expected_fingerprint:
        logger.warning("ignoring the checkpoint %s: it belongs to another request", path.name)
        return None
    return checkpoint
