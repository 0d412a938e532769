"""Calling the engine as its callers do: resolve the request first, then ``Engine.generate`` with hooks.

``generate`` installs the fault hook when ``STILLMOTION_FAULTS`` is set, as the CLI does, so a test sets the
variable to inject a fault. ``render`` generates into a temporary folder and returns the decoded frames (what
the ``frames_decoded`` hook saw) with the result, for tests that compare frames.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stillmotion import faults
from stillmotion.engine.checkpoint import Checkpoint, CheckpointCallback
from stillmotion.engine.engine import Engine
from stillmotion.engine.hooks import Callbacks, EngineHooks
from stillmotion.engine.progress import CancelToken, ProgressCallback
from stillmotion.engine.request import GenerationRequest, ResolvedRequest
from stillmotion.engine.resolve import resolve
from stillmotion.engine.result import GenerationResult
from stillmotion.media.image_input import InputImage
from stillmotion.memory.plan import MemoryPlan


class KeepFrames(EngineHooks):
    """Keeps the decoded frames of a generation."""

    def __init__(self) -> None:
        self.frames: torch.Tensor | None = None

    def frames_decoded(self, frames: torch.Tensor) -> None:
        self.frames = frames


@dataclass(frozen=True)
class Rendered:
    """A generation's decoded frames, float32 (frames, height, width, 3) in [0, 1], and its result."""

    frames: torch.Tensor
    result: GenerationResult

    @property
    def request(self) -> ResolvedRequest:
        return self.result.request

    @property
    def plan(self) -> MemoryPlan:
        return self.result.plan

    @property
    def downgrades(self) -> tuple[dict[str, Any], ...]:
        return self.result.downgrades

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.result.warnings


def resolved(engine: Engine, request: GenerationRequest, image: InputImage | None = None) -> ResolvedRequest:
    """``request`` resolved under the engine's settings, for ``image``'s size."""
    return resolve(request, engine.settings, None if image is None else (image.width, image.height))


def generate(
    engine: Engine,
    request: GenerationRequest,
    image: InputImage,
    output_path: Path,
    *,
    on_progress: ProgressCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    hooks: tuple[EngineHooks, ...] = (),
    cancel: CancelToken | None = None,
    strategy: str | None = None,
    resume: Checkpoint | None = None,
) -> GenerationResult:
    """Resolve ``request``, then generate with the fault hook (when set), ``hooks`` and the callbacks."""
    every = [*faults.hooks(), *hooks, Callbacks(on_progress=on_progress, on_checkpoint=on_checkpoint)]
    return engine.generate(
        resolved(engine, request, image),
        image,
        output_path,
        every,
        cancel=cancel,
        strategy=strategy,
        resume=resume,
    )


def render(engine: Engine, request: GenerationRequest, image: InputImage, **options: Any) -> Rendered:
    """``generate`` into a temporary folder; the decoded frames and the result (its video is gone)."""
    keep = KeepFrames()
    with tempfile.TemporaryDirectory() as folder:
        result = generate(engine, request, image, Path(folder, "render.mp4"), hooks=(keep,), **options)
    assert keep.frames is not None
    return Rendered(keep.frames, result)
