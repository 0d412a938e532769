"""Denoising checkpoints: the latest finished step, saved so a restarted job resumes instead of restarting.

A checkpoint is what the engine keeps in memory for OOM resume (``RunState``), written to a file: the
latents after step N, the scheduler's per-run state (step index, a multistep solver's past model outputs)
and a fingerprint of what it belongs to (the resolved request and the dtype). The engine offers one after
each step through the ``step_finished`` hook (engine/hooks.py; the worker decides when to write it:
engine/engine.py never touches job folders); given one back, it resumes at step N + 1 and gives the frames
an uninterrupted run would.

Files are written atomically (temp file, fsync, rename) and read with ``torch.load(weights_only=True)``:
only tensors, numbers, strings and lists of them are stored, never pickled objects, so a file in a data
folder cannot run code. A file that is unreadable, or belongs to another request, is ignored; so is one whose
contents do not fit the job it names (``mismatch``: latents of another shape or dtype, scheduler attributes
that no scheduler of this request has, a schedule that is not the one recomputed for it): the job then
starts from step 0, with a warning, rather than fail or make a different video.
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
_KEYS = frozenset({"version", "fingerprint", "steps_done", "latents", "scheduler"})
_STORABLE = (torch.Tensor, int, float, bool, str, type(None))

# What a scheduler changes as it steps, by attribute (hand-written from the step methods of diffusers'
# DDIM, Euler, flow-match Euler and UniPC schedulers the families use: there is no scheduler state API).
# Everything else a checkpoint holds must equal what a fresh scheduler made for the same request holds: the
# schedule (timesteps, sigmas) and the numbers its config gives. Any other attribute is foreign.
_STEP_INDEX = "_step_index"  # the steps taken: the checkpoint's steps_done
_COUNTERS = frozenset({"lower_order_nums", "this_order"})  # a multistep solver's order so far: 0..steps_done
_FLAGS = frozenset({"is_scale_input_called"})
_LIKE_LATENTS = frozenset({"last_sample"})  # None, or a tensor shaped like the latents
_HISTORIES = frozenset({"model_outputs", "timestep_list"})  # fixed-length lists: latents-like, timesteps
_ADDED_BY_STEPPING = frozenset({"this_order"})  # absent on a fresh scheduler


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


def mismatch(saved: Checkpoint, latents: torch.Tensor, scheduler: Any) -> str | None:
    """Why ``saved`` cannot continue the generation whose fresh starting ``latents`` and ``scheduler`` (made
    for the same request, before any step) are given; None when it can.

    The fingerprint says which request a file belongs to, not that its contents are sound: this checks the
    contents against the job itself, so a wrong file is never resumed from.
    """
    problem = _tensor_problem("the latents", saved.latents, latents.shape, latents.dtype)
    if problem is not None:
        return problem
    fresh = scheduler_state(scheduler)
    missing = sorted(set(fresh) - set(saved.scheduler_state))
    if missing:
        return f"the scheduler state lacks {', '.join(missing)}"
    for name, value in saved.scheduler_state.items():
        problem = _state_problem(name, value, fresh, saved.steps_done, latents)
        if problem is not None:
            return problem
    return None


def _state_problem(
    name: str, value: object, fresh: dict[str, Any], steps_done: int, latents: torch.Tensor
) -> str | None:
    """What is wrong with the scheduler attribute ``name`` = ``value`` after ``steps_done`` steps, if any."""
    if name not in fresh and name not in _ADDED_BY_STEPPING:
        return f"the scheduler attribute {name!r} is not one a scheduler of this request has"
    if name == _STEP_INDEX:
        ok = _whole(value) == steps_done
        return None if ok else f"the scheduler's step index {value!r} is not the {steps_done} steps done"
    if name in _COUNTERS:
        count = _whole(value)
        ok = count is not None and 0 <= count <= steps_done
        return None if ok else f"the scheduler's {name} {value!r} is not a count of 0 to {steps_done}"
    if name in _FLAGS:
        return None if isinstance(value, bool) else f"the scheduler's {name} {value!r} is not true or false"
    if name in _LIKE_LATENTS:
        return None if value is None else _tensor_problem(f"the scheduler's {name}", value, latents.shape)
    if name in _HISTORIES:
        return _history_problem(name, value, fresh, latents)
    return None if _same(value, fresh[name]) else f"the scheduler's {name} differs from this request's"


def _history_problem(name: str, value: object, fresh: dict[str, Any], latents: torch.Tensor) -> str | None:
    """A multistep solver's history: as long as a fresh one, each entry None, or like the latents (past
    outputs) or one timestep of the schedule's dtype (``timestep_list``)."""
    length = len(fresh[name])
    if not isinstance(value, list) or len(value) != length:
        return f"the scheduler's {name} is not a list of {length} entries"
    timesteps = name == "timestep_list"
    shape = torch.Size([]) if timesteps else latents.shape
    dtype = fresh["timesteps"].dtype if timesteps else None
    for entry in value:
        if entry is not None:
            problem = _tensor_problem(f"an entry of the scheduler's {name}", entry, shape, dtype)
            if problem is not None:
                return problem
    return None


def _tensor_problem(
    what: str, value: object, shape: torch.Size, dtype: torch.dtype | None = None
) -> str | None:
    """``value`` must be a finite tensor of ``shape`` and ``dtype`` (None: of any floating-point dtype)."""
    if not isinstance(value, torch.Tensor):
        return f"{what} is not a tensor"
    right_dtype = value.is_floating_point() if dtype is None else value.dtype == dtype
    if value.shape != shape or not right_dtype:
        expected = f"{tuple(shape)} {dtype or 'floating point'}"
        return f"{what} are {tuple(value.shape)} {value.dtype}, where this request's are {expected}"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return f"{what} are not all finite"
    return None


def _same(value: object, fresh: object) -> bool:
    """Equal in type and value: tensors element by element (dtype and shape too), lists entry by entry."""
    if isinstance(fresh, torch.Tensor):
        return (
            isinstance(value, torch.Tensor)
            and value.dtype == fresh.dtype
            and value.shape == fresh.shape
            and torch.equal(value.cpu(), fresh.cpu())
        )
    if isinstance(fresh, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(fresh)
            and all(_same(v, f) for v, f in zip(value, fresh, strict=True))
        )
    return type(value) is type(fresh) and value == fresh


def _whole(value: object) -> int | None:
    """``value`` if it is a whole number (True and False are not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        if not isinstance(data, dict) or set(data) != _KEYS:
            raise ValueError(f"keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
        checkpoint = Checkpoint(
            fingerprint=str(data["fingerprint"]),
            steps_done=int(data["steps_done"]),
            latents=data["latents"],
            scheduler_state=dict(data["scheduler"]),
        )
        if data.get("version") != FORMAT_VERSION or not isinstance(checkpoint.latents, torch.Tensor):
            raise ValueError(f"format {data.get('version')!r}")
        foreign = [
            k for k, v in checkpoint.scheduler_state.items() if not isinstance(k, str) or not _storable(v)
        ]
        if foreign:
            raise ValueError(f"scheduler entries that are not tensors, numbers or lists: {foreign}")
    except Exception as exc:  # any damage (truncated, foreign, old): restart cleanly rather than fail the job
        logger.warning("ignoring the unreadable checkpoint %s (%s: %s)", path.name, type(exc).__name__, exc)
        return None
    if expected_fingerprint is not None and checkpoint.fingerprint != expected_fingerprint:
        logger.warning("ignoring the checkpoint %s: it belongs to another request", path.name)
        return None
    return checkpoint
