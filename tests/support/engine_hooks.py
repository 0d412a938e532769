"""Wrappers around the real engine that let a test act at an exact moment of a generation: ``StepHook`` at
a progress event (before the worker sees it), ``CheckpointHook`` as a checkpoint is offered (before the
worker saves it). Both keep the engine's interface (``worker.EngineLike``) and nest: wrap a hook in another.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stillmotion.engine.checkpoint import Checkpoint, CheckpointCallback
from stillmotion.engine.progress import CancelToken, ProgressCallback, ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest
from stillmotion.engine.result import GenerationResult, PlanReport
from stillmotion.jobs.workers.worker import EngineLike
from stillmotion.media.image_input import InputImage


class StepHook:
    """Runs ``action`` at the progress event of ``stage`` and ``step``, before the worker sees the event."""

    def __init__(self, engine: EngineLike, stage: Stage, step: int, action: Callable[[], None]) -> None:
        self.engine, self.stage, self.step, self.action = engine, stage, step, action
        self.events: list[ProgressEvent] = []

    def plan(self, request: GenerationRequest, image_size: tuple[int, int] | None = None) -> PlanReport:
        return self.engine.plan(request, image_size)

    def generate(
        self,
        request: GenerationRequest,
        image: InputImage,
        output_path: Path,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        **more: Any,  # resume, on_checkpoint: passed on as they are
    ) -> GenerationResult:
        assert on_progress is not None

        def wrapped(event: ProgressEvent) -> None:
            self.events.append(event)
            if event.stage == self.stage and event.step == self.step:
                self.action()
            on_progress(event)

        return self.engine.generate(request, image, output_path, on_progress=wrapped, cancel=cancel, **more)


class CheckpointHook:
    """Runs ``action`` as the checkpoint after denoising step ``step`` is offered, before the worker saves
    it."""

    def __init__(self, engine: EngineLike, step: int, action: Callable[[], None]) -> None:
        self.engine, self.step, self.action = engine, step, action

    def plan(self, request: GenerationRequest, image_size: tuple[int, int] | None = None) -> PlanReport:
        return self.engine.plan(request, image_size)

    def generate(
        self,
        request: GenerationRequest,
        image: InputImage,
        output_path: Path,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        *,
        on_checkpoint: CheckpointCallback | None = None,
        **more: Any,  # resume: passed on as it is
    ) -> GenerationResult:
        assert on_checkpoint is not None

        def wrapped(steps_done: int, make: Callable[[], Checkpoint]) -> None:
            if steps_done == self.step:
                self.action()
            on_checkpoint(steps_done, make)

        return self.engine.generate(
            request, image, output_path, on_progress=on_progress, cancel=cancel, on_checkpoint=wrapped, **more
        )
