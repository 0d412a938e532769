"""The CLI's progress display: one clean bar per job over its denoising steps, an overall bar for a batch, and
every log line printed above the bars, never glued onto one.

``ProgressDisplay`` is a context manager: inside it, console logging goes through ``tqdm.write`` (which lifts
the bars, prints the line, and draws them again below). ``job(name)`` gives the engine hook of one job
(engine/hooks.py): the phases it passes through are logged at INFO ("decoding frames"), and its bar, made at
its first denoising step, counts the steps with the engine's estimate of the time left; it is closed when
denoising ends, so nothing draws it again after the job's last lines. ``job_done()`` moves the batch's bar.
No rate is shown: the first step's "rate" is an artefact (the bar starts when that step has already run).
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from typing import Any

from stillmotion.engine.hooks import EngineHooks
from stillmotion.engine.progress import ProgressEvent, Stage

logger = logging.getLogger("stillmotion.cli")

JOB_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"
BATCH_BAR = "{desc}: {n_fmt}/{total_fmt} jobs|{bar}| [{elapsed}]"


class JobProgress(EngineHooks):
    """One job's bar (position ``position`` among the display's bars) and its phase lines."""

    def __init__(self, name: str, position: int) -> None:
        self.name, self.position = name, position
        self._bar: Any = None
        self._stage: Stage | None = None

    def progress(self, event: ProgressEvent) -> None:
        if event.stage != self._stage:
            self._stage = event.stage
            # A phase's own line (the denoising has its bar; "done" is said by what the command prints).
            if event.stage not in (Stage.DENOISE, Stage.DONE) and event.message:
                logger.info("%s%s", f"{self.name}: " if self.name else "", event.message)
        if event.stage == Stage.DENOISE and event.step > 0:
            self._step(event)

    def _step(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=event.total_steps,
                desc=self.name or "denoising",
                bar_format=JOB_BAR,
                position=self.position,
                leave=self.position == 0,  # a batch's job bar gives way to the next job's
                file=sys.stderr,
                dynamic_ncols=True,
            )
        if event.eta_s is not None:
            self._bar.set_postfix_str(f"about {event.eta_s:.0f} s left", refresh=False)
        self._bar.update(event.step - self._bar.n)

    def phase_ended(self, phase: Stage) -> None:
        if phase == Stage.DENOISE:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ProgressDisplay:
    """The bars of one command (``jobs`` > 1: a batch, with an overall bar above the job's); does nothing
    when not ``enabled`` (``--json``: stdout carries the answer and stderr stays quiet)."""

    def __init__(self, enabled: bool, jobs: int = 1) -> None:
        self.enabled, self.jobs = enabled, jobs
        self._stack = ExitStack()
        self._overall: Any = None
        self._current: JobProgress | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._stack.enter_context(logging_redirect_tqdm())
            if self.jobs > 1:
                self._overall = tqdm(
                    total=self.jobs, desc="batch", bar_format=BATCH_BAR, position=0, file=sys.stderr
                )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._current is not None:
            self._current.close()
        if self._overall is not None:
            self._overall.close()
        self._stack.close()

    def job(self, name: str = "") -> EngineHooks:
        """The hook for the next job (its bar below the batch's)."""
        if not self.enabled:
            return EngineHooks()
        self._current = JobProgress(name, position=1 if self._overall is not None else 0)
        return self._current

    def job_done(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        if self._overall is not None:
            self._overall.update(1)
