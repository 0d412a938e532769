"""RunState: one generation while it runs, the small object the engine's steps share.

``Engine.generate`` (engine/engine.py) makes one per call and hands it to each of its steps instead of a
dozen arguments. It holds what the generation is (request, model spec and family), where it is (``phase``,
the clock and ETA, the latest finished denoising step with its scheduler snapshot, so an out-of-memory retry
or a checkpoint resumes from it), what it has gathered so far (timings, warnings, downgrades), and how it
talks to its caller (the hooks, engine/hooks.py, and the cancel token). ``in_phase`` is how a step runs: its
progress event, its hooks and its time, in one ``with``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from stillmotion.engine import checkpoint
from stillmotion.engine.checkpoint import Checkpoint
from stillmotion.engine.hooks import EngineHooks, HookList
from stillmotion.engine.progress import CancelToken, ProgressCallback, ProgressEvent, Stage
from stillmotion.engine.request import ResolvedRequest
from stillmotion.engine.result import GenerationResult
from stillmotion.media.video_output import VideoFile
from stillmotion.memory.plan import MemoryPlan
from stillmotion.models.family import ModelFamily
from stillmotion.models.registry import ModelSpec

logger = logging.getLogger(__name__)

_BEFORE_DENOISING = (Stage.PLAN, Stage.LOAD, Stage.ENCODE)


def snapshot_scheduler(scheduler: Any) -> Any:
    """A copy of ``scheduler`` that later steps cannot change.

    Hand-written because diffusers has no scheduler state API. A shallow copy suffices: schedulers replace
    their tensors rather than write into them, and keep step history in lists (UniPC's ``model_outputs``),
    which are copied here.
    """
    copied = copy.copy(scheduler)
    for name, value in vars(scheduler).items():
        if isinstance(value, list):
            setattr(copied, name, list(value))
    return copied


class Clock:
    """Sends progress events and computes the ETA from the measured step times."""

    def __init__(self, emit: ProgressCallback, total_steps: int) -> None:
        self.emit = emit
        self.total_steps = total_steps
        self.start = time.perf_counter()
        self.step_times: list[float] = []
        self.gpu_step_times: list[float] = []  # CUDA-event times, read once the loop is over

    def stage(self, stage: Stage, step: int = 0, message: str = "") -> None:
        eta = None if stage is Stage.DONE else self._eta(step)  # nothing is left once it is done
        self.emit(ProgressEvent(stage, step, self.total_steps, self.elapsed, eta, message))

    def step_done(self, step: int, duration_s: float) -> None:
        self.step_times.append(duration_s)
        self.emit(ProgressEvent(Stage.DENOISE, step, self.total_steps, self.elapsed, self._eta(step)))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def per_step_s(self) -> float | None:
        # Skip the first step when there are others: it carries lazy initialisation. On CUDA the host's
        # clock only sees kernel launches, so the GPU's own event times are preferred once available.
        measured = self.gpu_step_times or self.step_times
        times = measured[1:] or measured
        return sum(times) / len(times) if times else None

    def _eta(self, steps_done: int) -> float | None:
        per_step = self.per_step_s
        if per_step is None:
            return None
        return per_step * (self.total_steps - steps_done + 1)  # +1: the decode costs about one step


class GpuStepTimer:
    """CUDA events at step boundaries, read after the loop: true GPU step times with no sync per step."""

    def __init__(self, device: torch.device) -> None:
        self._events: list[Any] = []
        if device.type == "cuda":
            self._events.append(torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
            self._events[0].record()

    def step_done(self) -> None:
        if self._events:
            event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            self._events.append(event)

    def durations_s(self) -> list[float]:
        if len(self._events) < 2:
            return []
        self._events[-1].synchronize()  # once, after the last step
        return [a.elapsed_time(b) / 1000 for a, b in zip(self._events, self._events[1:], strict=False)]


@dataclass
class RunState:
    """One generation as it runs (module docstring). Make it with ``RunState.start``."""

    request: ResolvedRequest
    spec: ModelSpec
    family: ModelFamily[Any, Any]
    hooks: EngineHooks
    cancel: CancelToken
    clock: Clock
    phase: Stage = Stage.PLAN  # the phase running now, named in an out-of-memory report
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: load_s, encode_s, ...
    warnings: list[str] = field(default_factory=list)
    downgrades: list[dict[str, Any]] = field(default_factory=list)  # one per out-of-memory recovery
    # The latest finished denoising step. ``scheduler`` is a snapshot taken with ``latents`` after the same
    # step: multistep solvers (Wan's UniPC) keep past model outputs and every scheduler keeps its step
    # index, so the pair resumes exactly. A checkpoint read back from a file waits in ``saved`` until the
    # denoising starts: it is checked against a fresh scheduler and latents of this request first.
    latents: torch.Tensor | None = None
    scheduler: Any = None
    steps_done: int = 0
    saved: Checkpoint | None = None
    noise_drawn: torch.Tensor | None = None  # the seeded generator's state after the initial latents
    checkpoint_id: str = ""  # checkpoint.fingerprint of this generation

    @classmethod
    def start(
        cls,
        request: ResolvedRequest,
        spec: ModelSpec,
        family: ModelFamily[Any, Any],
        hooks: Sequence[EngineHooks],
        cancel: CancelToken | None,
    ) -> RunState:
        """The clock starts now."""
        every = HookList(hooks)
        clock = Clock(every.progress, request.num_inference_steps)
        return cls(request, spec, family, every, cancel or CancelToken(), clock)

    def stage(self, stage: Stage, message: str) -> None:
        """A progress event for ``stage``: before denoising it says where the run would resume, after it that
        every step is done."""
        step = self.steps_done if stage in _BEFORE_DENOISING else self.request.num_inference_steps
        self.clock.stage(stage, step, message)

    @contextlib.contextmanager
    def in_phase(self, phase: Stage, message: str | None = None, *, timed: bool = True) -> Iterator[None]:
        """Run ``phase``: its progress event (when there is a ``message``), ``phase_started`` and, however it
        ends, ``phase_ended``; when it finishes, its time is added to ``timings`` (``<phase>_s``)."""
        self.phase = phase
        if message is not None:
            self.stage(phase, message)
        started = time.perf_counter()
        try:
            self.hooks.phase_started(phase)
            yield
        finally:
            self.hooks.phase_ended(phase)
        if timed:  # retries add up: an out-of-memory retry loads and encodes again
            key = f"{phase.value}_s"
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - started

    def resume_from(self, saved: Checkpoint | None, fingerprint: str) -> None:
        """This generation is ``fingerprint``; continue after ``saved``'s step if it is one of this same
        request (saved before a restart), as an out-of-memory retry does."""
        self.checkpoint_id = fingerprint
        if saved is None:
            return
        if saved.fingerprint == fingerprint and 0 < saved.steps_done < self.request.num_inference_steps:
            self.saved, self.steps_done = saved, saved.steps_done  # where the run would resume, if it fits
        else:
            logger.warning("not resuming: the checkpoint belongs to another request or step count")

    def start_denoising(self, scheduler: Any, latents: torch.Tensor) -> None:
        """The denoising begins with ``scheduler`` and ``latents`` made fresh for this request; or, when a
        checkpoint was read back from a file, from its step, if its contents fit these (engine/checkpoint.py
        ``mismatch``). One that does not fit is ignored with a warning: the run starts from step 0."""
        saved, self.saved = self.saved, None
        if saved is not None:
            problem = checkpoint.mismatch(saved, latents, scheduler)
            if problem is None:
                checkpoint.restore_scheduler(scheduler, saved.scheduler_state)
                latents = saved.latents
                self.warnings.append(
                    f"resumed after denoising step {saved.steps_done}, saved before a restart"
                )
                logger.info("resuming from the checkpoint after step %d", saved.steps_done)
            else:
                self.steps_done = 0
                warning = (
                    f"ignored the checkpoint saved after step {saved.steps_done} ({problem}); "
                    "started from step 0"
                )
                self.warnings.append(warning)
                logger.warning("%s", warning)
        self.latents = latents
        self.scheduler = snapshot_scheduler(scheduler)

    def keep_step(self, step: int, latents: torch.Tensor, scheduler: Any) -> None:
        """Denoising step ``step`` finished with ``latents``: keep them with a snapshot of ``scheduler``."""
        self.latents, self.steps_done = latents, step
        self.scheduler = snapshot_scheduler(scheduler)

    def checkpoint(self) -> Checkpoint:
        """The checkpoint of the step kept now (a copy to the host: made only when it will be kept)."""
        assert self.latents is not None
        return Checkpoint(
            fingerprint=self.checkpoint_id,
            steps_done=self.steps_done,
            latents=self.latents.detach().cpu(),
            scheduler_state=checkpoint.scheduler_state(self.scheduler),
        )

    def finish(self, video: VideoFile, plan: MemoryPlan, recipe: dict[str, Any]) -> GenerationResult:
        """The last progress event (DONE) and the result: the video, the plan that made it, and how."""
        timings = {**self.timings, "total_s": self.clock.elapsed}
        self.stage(Stage.DONE, "done")
        return GenerationResult(
            video_path=video.path,
            sidecar_path=video.sidecar_path,
            sha256=video.sha256,
            request=self.request,
            plan=plan,
            downgrades=tuple(self.downgrades),
            warnings=tuple(self.warnings),
            timings={name: round(seconds, 4) for name, seconds in timings.items()},
            metadata=recipe,
        )
