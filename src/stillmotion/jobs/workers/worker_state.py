"""What a worker tells the API process about its device: ``<data_dir>/worker-<id>.json``.

The API plans for the web UI with its own device measurement, but the worker keeps the model's weights (and
PyTorch's cache) on the GPU between jobs, so the API sees less free memory than the worker will have. The
worker publishes, at start and after every job, its last measured ``DeviceBudget.to_dict()`` and the bytes
its PyTorch allocator holds on the device (``torch.cuda.memory_reserved``: reusable by its next job). The
API adds those bytes back (``budget_with_worker``) when the worker is alive and on the same device. On the
CPU nothing changes: the worker reports 0 reusable bytes and CPU budgets are never adjusted.

The file is written atomically (temp file, fsync, ``os.replace``), so a reader sees the old or the new
state, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported only where a budget is measured, not by the API at start
    from stillmotion.memory.device import DeviceBudget

GIB = 1024**3
logger = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_WORKER_ID = "worker-0"  # the one worker (one per GPU); re-exported by worker.py


def state_path(data_dir: Path, worker_id: str) -> Path:
    return data_dir / f"{worker_id}.state.json"


def device_key(device_type: str, index: int | None) -> str:
    """``cuda`` and ``cuda:0`` name the same card (an unindexed device is the current one, index 0)."""
    if device_type == "cuda":
        return f"cuda:{index or 0}"
    return device_type


def publish(
    path: Path,
    *,
    pid: int,
    device: str,
    budget: dict[str, Any] | None,
    reusable_bytes: int,
    model: str | None,
) -> None:
    """Atomically write the worker's device state to ``path``."""
    data = {
        "version": STATE_VERSION,
        "pid": pid,
        "device": device,
        "budget": budget,
        "reusable_bytes": int(reusable_bytes),
        "model": model,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> dict[str, Any] | None:
    """The published state, or None when there is none or it is unreadable (never raises)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return None
    return data


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _with_worker_host(budget: DeviceBudget, state: dict[str, Any]) -> DeviceBudget:
    """The host memory the worker measured for its next job (its loaded weights count as available there),
    when that is more than this process sees."""
    published = (state.get("budget") or {}).get("host_free_gib")
    if not isinstance(published, int | float) or isinstance(published, bool) or budget.host_free_bytes <= 0:
        return budget
    return budget.with_host(max(budget.host_free_bytes, int(published * GIB)))


def budget_with_worker(budget: DeviceBudget, device: str, state: dict[str, Any] | None) -> DeviceBudget:
    """``budget`` (measured by the API process on ``device``) plus the memory the worker will reuse.

    Unchanged unless the budget is a CUDA one, the worker published a state for the same device, and the
    worker's process is alive. The reserve and a user's ``vram_budget_gb`` cap still apply; the result never
    exceeds the card's total minus the reserve.
    """
    if budget.device_type != "cuda" or state is None:
        return budget
    if state.get("device") != device or not pid_alive(state.get("pid")):
        return budget
    budget = _with_worker_host(budget, state)
    reusable = state.get("reusable_bytes")
    if not isinstance(reusable, int) or isinstance(reusable, bool) or reusable <= 0:
        return budget
    free = min(budget.free_bytes + reusable, budget.total_bytes)
    allowed = free - budget.reserve_bytes
    if budget.user_budget_bytes is not None:
        allowed = min(allowed, budget.user_budget_bytes)
    return replace(budget, free_bytes=free, budget_bytes=max(budget.budget_bytes, allowed, 0))
