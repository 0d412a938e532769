"""Wrappers around the real engine that let a test act at an exact moment of a generation: ``StepHook`` at
a progress event (before the worker sees it), ``CheckpointHook`` as a checkpoint is offered (before the
worker saves it). Both keep the engine's interface (``worker.EngineLike``) and nest: wrap a hook in another.
Each puts an engine hook (engine/hooks.py) in front of the caller's, so it acts before the worker does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stillmotion.engine.checkpoint import Checkpoint
from stillmotion.engine.hooks import Callbacks, EngineHooks
from stillmotion.engine.progress import ProgressEvent, Stage
from stillmotion.engine.request import ResolvedRequest
from stillmotion.engine.result import GenerationResult, PlanReport
from stillmotion.jobs.workers.worker import EngineLike
from stillmotion.media.image_input import InputImage


class _HookedEngine:
    """The engine's interface with one engine hook (``callbacks()``) put in front of the caller's."""

    def __init__(self, engine: EngineLike) -> None:
        self.engine = engine

    def callbacks(self) -> Callbacks:
        raise NotImplementedError

    def plan(self, request: ResolvedRequest) -> PlanReport:
        return self.engine.plan(request)

    def generate(
        self,
        request: ResolvedRequest,
        image: InputImage,
        output_path: Path,
        hooks: Sequence[EngineHooks] = (),
        **more: Any,  # cancel, resume: passed on as they are
    ) -> GenerationResult:
        return self.engine.generate(request, image, output_path, [self.callbacks(), *hooks], **more)


class StepHook(_HookedEngine):
    """Runs ``action`` at the progress event of ``stage`` and ``step``, before the worker sees the event."""

    def __init__(self, engine: EngineLike, stage: Stage, step: int, action: Callable[[], None]) -> None:
        super().__init__(engine)
        self.stage, self.step, self.action = stage, step, action
        self.events: list[ProgressEvent] = []

    def callbacks(self) -> Callbacks:
        def act(event: ProgressEvent) -> None:
            self.events.append(event)
            if event.stage == self.stage and event.step == self.step:
                self.action()

        return Callbacks(on_progress=act)


class CheckpointHook(_HookedEngine):
    """Runs ``action`` as the checkpoint after denoising step ``step`` is offered, before the worker saves
    it."""

    def __init__(self, engine: EngineLike, step: int, action: Callable[[], None]) -> None:
        super().__init__(engine)
        self.step, self.action = step, action

    def callbacks(self) -> Callbacks:
        def act(steps_done: int, make: Callable[[], Checkpoint]) -> None:
            if steps_done == self.step:
                self.action()

        return Callbacks(on_checkpoint=act)
