"""What the device has: the only module that asks torch about device memory. Called per job, never at import.

``DeviceBudget.measure`` reads the free device memory now (``torch.cuda.mem_get_info``) plus what this process
already holds in PyTorch's cache (reusable by the next plan), takes off a reserve for the CUDA context's
growth, cuDNN/cuBLAS workspaces outside the allocator and other processes (``reserve_vram_gb``, default
0.5 GiB), honours a per-process memory fraction if one is set, and caps the result at the user's
``vram_budget_gb``. ``measure_budget(device, settings)`` is how the engine, the worker and the service read
it: the one place the deployment's ``vram_budget_gb`` and ``reserve_vram_gb`` apply. ``configure_allocator``
turns on expandable segments before CUDA starts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from stillmotion.memory.types import GIB

if TYPE_CHECKING:
    from stillmotion.config import Settings

logger = logging.getLogger(__name__)

ALLOC_CONF_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
# Expandable segments map memory in place instead of carving fixed segments: reserved stays within ~2.5% of
# allocated (measured 1.020-1.027) instead of 1.2-1.6x, so the estimate holds and less memory is wasted.
EXPANDABLE_SEGMENTS = "expandable_segments:True"
DEFAULT_RESERVE_VRAM_GB = 0.5


def configure_allocator() -> str | None:
    """Set ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` unless the user set an allocator config.

    Call it before CUDA is initialised (the allocator reads the variable once, at its first allocation); the
    engine calls it when it is created. Returns the config in effect. A user's own setting is never changed.
    """
    for name in ALLOC_CONF_VARS:
        if os.environ.get(name):
            return os.environ[name]
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        logger.warning(
            "CUDA is already initialised: expandable segments cannot be turned on for this process"
        )
        return None
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = EXPANDABLE_SEGMENTS
    return EXPANDABLE_SEGMENTS


def expandable_segments_enabled() -> bool:
    """Whether the allocator config in the environment turns expandable segments on."""
    for name in ALLOC_CONF_VARS:
        conf = os.environ.get(name, "")
        for item in conf.split(","):
            key, _, value = item.partition(":")
            if key.strip() == "expandable_segments":
                return value.strip().lower() == "true"
    return False


def host_free_bytes() -> int:
    """Host memory available now (psutil's ``available``: free plus reclaimable caches)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return 0


def measure_budget(device: torch.device, settings: Settings) -> DeviceBudget:
    """What ``device`` gives a job now, under the settings' ``vram_budget_gb`` and ``reserve_vram_gb``; the
    deployment's ``host_budget_gb`` replaces the host memory measured."""
    budget = DeviceBudget.measure(
        device, vram_budget_gb=settings.vram_budget_gb, reserve_vram_gb=settings.reserve_vram_gb
    )
    if settings.host_budget_gb is None:
        return budget
    return budget.with_host(int(settings.host_budget_gb * GIB))


@dataclass(frozen=True)
class DeviceBudget:
    """The memory a job may use on its device (bytes), and the facts that decided it."""

    device_type: str  # "cuda", "cpu" or "mps"
    total_bytes: int  # the device's total memory
    free_bytes: int  # free now, plus what this process's PyTorch cache already holds
    budget_bytes: int  # what a plan may use: min(free - reserve, per-process cap, user's budget)
    reserve_bytes: int  # kept back for the CUDA context, workspaces and other processes
    name: str = ""
    host_free_bytes: int = 0  # offloaded weights and pinned buffers live here
    expandable_segments: bool = True  # whether the allocator runs with expandable segments (see estimate)
    user_budget_bytes: int | None = None

    @property
    def budget_gib(self) -> float:
        return self.budget_bytes / GIB

    def to_dict(self) -> dict[str, object]:
        return {
            "device_type": self.device_type,
            "name": self.name,
            "total_gib": round(self.total_bytes / GIB, 2),
            "free_gib": round(self.free_bytes / GIB, 2),
            "budget_gib": round(self.budget_bytes / GIB, 2),
            "reserve_gib": round(self.reserve_bytes / GIB, 2),
            "host_free_gib": round(self.host_free_bytes / GIB, 2),
            "expandable_segments": self.expandable_segments,
            "user_budget_gib": None
            if self.user_budget_bytes is None
            else round(self.user_budget_bytes / GIB, 2),
        }

    @classmethod
    def fixed(
        cls,
        gib: float,
        device_type: str = "cuda",
        *,
        total_gib: float | None = None,
        expandable_segments: bool = True,
        name: str = "fixed",
        user_budget_gb: float | None = None,
        host_gib: float | None = None,
    ) -> DeviceBudget:
        """``gib`` GiB free (tests, ``stillmotion plan --gpu-gb``, benchmark caps), capped by the user's
        ``vram_budget_gb`` when given: the budget is the smaller of the two, as on a measured card.
        ``host_gib``: host memory available (None: unknown, not checked)."""
        free = int(gib * GIB)
        user = None if user_budget_gb is None else int(user_budget_gb * GIB)
        total = int((total_gib if total_gib is not None else gib) * GIB)
        return cls(
            device_type=device_type,
            total_bytes=total,
            free_bytes=free,
            budget_bytes=free if user is None else min(free, user),
            reserve_bytes=0,
            name=name,
            host_free_bytes=0 if host_gib is None else int(host_gib * GIB),
            expandable_segments=expandable_segments,
            user_budget_bytes=user,
        )

    def with_host(self, host_free_bytes: int) -> DeviceBudget:
        """The same device with ``host_free_bytes`` of host memory available (``--host-gb``, or what this
        process already holds added back)."""
        return replace(self, host_free_bytes=max(0, host_free_bytes))

    @classmethod
    def measure(
        cls,
        device: torch.device,
        vram_budget_gb: float | None = None,
        reserve_vram_gb: float = DEFAULT_RESERVE_VRAM_GB,
    ) -> DeviceBudget:
        """Measure ``device`` now; ``vram_budget_gb`` caps the budget, ``reserve_vram_gb`` is kept back."""
        user = None if vram_budget_gb is None else int(vram_budget_gb * GIB)
        host_free = host_free_bytes()
        if device.type == "cuda":
            queried = None
            if not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
                # A process that has not touched CUDA yet (the API server planning for the UI) asks the
                # driver through nvidia-smi: creating a CUDA context would hold ~0.3-0.5 GiB of the card.
                queried = _query_nvidia_smi(device.index or 0)
            if queried is not None:
                free_now, total, name = queried
                fraction = 1.0
            else:
                index = device.index if device.index is not None else torch.cuda.current_device()
                free, total = torch.cuda.mem_get_info(index)
                cached = int(torch.cuda.memory_reserved(index))  # ours, reusable by this job
                free_now = int(free) + cached
                name = torch.cuda.get_device_name(index)
                fraction = _memory_fraction(index)
            reserve = int(reserve_vram_gb * GIB)
            budget = free_now - reserve
            if fraction < 1.0:  # set_per_process_memory_fraction caps the caching allocator, not the card
                budget = min(budget, int(fraction * total))
            if user is not None:
                budget = min(budget, user)
            return cls(
                device_type="cuda",
                total_bytes=int(total),
                free_bytes=free_now,
                budget_bytes=max(0, budget),
                reserve_bytes=reserve,
                name=name,
                host_free_bytes=host_free,
                expandable_segments=expandable_segments_enabled(),
                user_budget_bytes=user,
            )
        # CPU and MPS share host memory: the budget is what the host has available.
        budget = host_free if user is None else min(host_free, user)
        total = _host_total_bytes()
        return cls(
            device_type=device.type,
            total_bytes=total,
            free_bytes=host_free,
            budget_bytes=budget,
            reserve_bytes=0,
            name=device.type,
            host_free_bytes=host_free,
            expandable_segments=False,
            user_budget_bytes=user,
        )


def _query_nvidia_smi(index: int) -> tuple[int, int, str] | None:
    """(free bytes, total bytes, name) of GPU ``index`` from nvidia-smi, without a CUDA context, or None."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    query = [
        "nvidia-smi",
        f"--id={index}",
        "--query-gpu=memory.free,memory.total,name",
        "--format=csv,noheader,nounits",
    ]
    try:
        line = subprocess.run(query, capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        free_mib, total_mib, name = (part.strip() for part in line.split(",", 2))
        return int(float(free_mib)) * 1024**2, int(float(total_mib)) * 1024**2, name
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _memory_fraction(index: int) -> float:
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if getter is None:
        return 1.0
    try:
        return float(getter(index))
    except (RuntimeError, TypeError):
        return 1.0


def _host_total_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover
        return 0
