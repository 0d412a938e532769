"""Engine hooks: what a caller hears from a generation while it runs, and where it steps in.

``Engine.generate(..., hooks=[...])`` calls each hook, in order, at these points:

- ``phase_started(phase)`` / ``phase_ended(phase)`` around each phase: ``PLAN``, ``LOAD`` (load and place the
  weights), ``ENCODE``, ``DENOISE``, ``DECODE``, then ``INTERPOLATE`` (when asked for) and ``WRITE``.
  ``phase_ended`` comes whenever the phase is left, also when it failed; after an out-of-memory error the
  phases start again from ``LOAD`` on a cheaper plan;
- ``step_started(step)`` before denoising step ``step`` (1-based), ``step_finished(step, checkpoint)`` after
  it: ``checkpoint()`` builds the checkpoint of that step (a device-to-host copy, so only made when the hook
  keeps it; engine/checkpoint.py);
- ``progress(event)`` for every ``ProgressEvent`` (a stage change, a finished step, interpolated frames);
- ``frames_decoded(frames)`` once, with the decoded frames as float32 (frames, height, width, 3) in [0, 1].

A hook steers the run through the ``CancelToken`` its caller passed to ``generate`` (the engine checks it
before every step), or by raising: an exception from a hook ends the generation (the test fault hook,
stillmotion/faults.py, raises out-of-memory errors this way, which the engine recovers from).

Subclass ``EngineHooks`` and override what you need; ``Callbacks`` wraps plain progress and checkpoint
callables. Implemented by the worker (progress to the store, checkpoints to the job's folder), the CLI (the
progress bar), the benchmark (phases, step times, frames) and the fault switches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from stillmotion.engine.progress import ProgressCallback, ProgressEvent, Stage

if TYPE_CHECKING:  # torch loads with the engine; the worker and the fault switches import this module first
    import torch

    from stillmotion.engine.checkpoint import Checkpoint, CheckpointCallback


class EngineHooks:
    """The hooks protocol: every method does nothing until a subclass overrides it."""

    def phase_started(self, phase: Stage) -> None:
        """``phase`` begins."""

    def phase_ended(self, phase: Stage) -> None:
        """``phase`` is left, finished or failed."""

    def step_started(self, step: int) -> None:
        """Denoising step ``step`` (1-based) is about to run."""

    def step_finished(self, step: int, checkpoint: Callable[[], Checkpoint]) -> None:
        """Denoising step ``step`` finished; ``checkpoint()`` makes its checkpoint, should one be kept."""

    def progress(self, event: ProgressEvent) -> None:
        """A progress event: stage, finished steps, ETA."""

    def frames_decoded(self, frames: torch.Tensor) -> None:
        """The decoded frames, float32 (frames, height, width, 3) in [0, 1], before checks and writing."""


class Callbacks(EngineHooks):
    """Plain callables as hooks: ``on_progress(event)`` and ``on_checkpoint(steps_done, make)``."""

    def __init__(
        self, on_progress: ProgressCallback | None = None, on_checkpoint: CheckpointCallback | None = None
    ) -> None:
        self.on_progress = on_progress
        self.on_checkpoint = on_checkpoint

    def progress(self, event: ProgressEvent) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def step_finished(self, step: int, checkpoint: Callable[[], Checkpoint]) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(step, checkpoint)


class HookList(EngineHooks):
    """Several hooks as one: each event goes to each hook, in the order given."""

    def __init__(self, hooks: Sequence[EngineHooks]) -> None:
        self.hooks = tuple(hooks)

    def phase_started(self, phase: Stage) -> None:
        for hook in self.hooks:
            hook.phase_started(phase)

    def phase_ended(self, phase: Stage) -> None:
        for hook in self.hooks:
            hook.phase_ended(phase)

    def step_started(self, step: int) -> None:
        for hook in self.hooks:
            hook.step_started(step)

    def step_finished(self, step: int, checkpoint: Callable[[], Checkpoint]) -> None:
        for hook in self.hooks:
            hook.step_finished(step, checkpoint)

    def progress(self, event: ProgressEvent) -> None:
        for hook in self.hooks:
            hook.progress(event)

    def frames_decoded(self, frames: torch.Tensor) -> None:
        for hook in self.hooks:
            hook.frames_decoded(frames)
