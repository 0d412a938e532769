"""Progress events and the cancel token: one event type, one token.

The engine calls ``on_progress(ProgressEvent)`` once per stage change and once per denoising step, and
checks ``CancelToken`` before every step; a cancel raises ``Cancelled`` within one step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from stillmotion.errors import Cancelled


class Stage(StrEnum):
    PLAN = "plan"
    LOAD = "load"
    ENCODE = "encode"
    DENOISE = "denoise"
    DECODE = "decode"
    INTERPOLATE = "interpolate"
    WRITE = "write"
    DONE = "done"


@dataclass(frozen=True)
class ProgressEvent:
    """Where a generation is: ``step`` of ``total_steps`` finished denoising steps, and the ETA."""

    stage: Stage
    step: int
    total_steps: int
    elapsed_s: float
    eta_s: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage.value,
            "step": self.step,
            "total_steps": self.total_steps,
            "elapsed_s": round(self.elapsed_s, 3),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 3),
            "message": self.message,
        }


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken:
    """A thread-safe cancel flag; ``raise_if_cancelled()`` is called by the engine before each step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("Generation cancelled by the user; nothing was written.")
