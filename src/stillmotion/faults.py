"""Chaos testing: ``STILLMOTION_FAULTS``, the one place test faults are defined, parsed and fired.

Never set it in production. The faults reach a generation as an engine hook (engine/hooks.py), never as code
in the engine: ``hooks(job_id, attempt)`` returns ``[FaultHooks]`` when the variable is set (else nothing),
and the worker (for each job's attempt, so ``@attempt`` and ``@job`` qualifiers match), the CLI and the
benchmark install it with their own hooks. The hook fires a phase's faults as the phase starts (load,
encode, decode, write) and a step's before the step. Nothing else in the package reads the variable.

Grammar: comma-separated ``ACTION@TRIGGER[@attempt:N|all][@job:ID]``.

- actions: ``kill`` (SIGKILL this process: a crash or the host's OOM killer), ``hang`` (never return: the
  watchdog's case), ``slow`` (sleep 1 s), ``oom`` (raise ``torch.OutOfMemoryError``, so the engine's recovery
  runs), ``enospc`` (``os.fsync`` raises ENOSPC while the phase runs: a disk that fills up mid-write);
- triggers: ``step:N`` (before denoising step N, 1-based), ``step:all``, ``load``, ``encode``, ``decode``,
  ``write``;
- a fault fires on attempt 1 only unless ``@attempt:N`` or ``@attempt:all`` says otherwise (so a retry can
  succeed), for every job unless ``@job:ID``; within one generation each fault fires once, except
  ``step:all``, which fires at every step (``oom@step:all`` fails every plan of the ladder).

Examples: ``oom@step:3``, ``oom@decode``, ``kill@step:2``, ``kill@step:1@attempt:all@job:abc``,
``enospc@write``.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from stillmotion.engine.hooks import EngineHooks
from stillmotion.engine.progress import Stage

logger = logging.getLogger(__name__)

FAULTS_ENV = "STILLMOTION_FAULTS"
ACTIONS = frozenset({"kill", "hang", "slow", "oom", "enospc"})
PHASES = frozenset({"load", "encode", "decode", "write"})
SLOW_S = 1.0


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``action`` at ``phase`` (``"step"`` with ``step`` N, or None for every step)."""

    action: str
    phase: str  # "step" or one of PHASES
    step: int | None = None  # for phase "step": None means every step
    attempt: int | None = 1  # None: every attempt
    job_id: str | None = None  # None: every job

    def applies(self, job_id: str | None, attempt: int) -> bool:
        return (self.attempt is None or self.attempt == attempt) and self.job_id in (None, job_id)


@dataclass(frozen=True)
class FaultSet:
    """The parsed switches of this process (usually empty)."""

    faults: tuple[Fault, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.faults)

    def for_run(self) -> FaultRun:
        """The faults of one generation, for the job and attempt of the current ``job_scope``."""
        job_id, attempt = _SCOPE.get()
        return FaultRun([f for f in self.faults if f.applies(job_id, attempt)])


@dataclass
class FaultRun:
    """The faults that may still fire in one generation (each once, except ``step:all``)."""

    pending: list[Fault] = field(default_factory=list)
    # enospc lasts until its phase ends: how to undo it, per phase
    _restore: dict[str, functools.partial[None]] = field(default_factory=dict, init=False, repr=False)

    def step(self, number: int) -> None:
        """Before denoising step ``number`` (1-based)."""
        for fault in list(self.pending):
            if fault.phase == "step" and fault.step in (None, number):
                if fault.step is not None:
                    self.pending.remove(fault)
                _fire(fault, f"step {number}")

    def enter(self, name: str) -> None:
        """Phase ``name`` starts: fire its faults; ``enospc`` lasts until ``leave(name)``."""
        for fault in list(self.pending):
            if fault.phase != name:
                continue
            self.pending.remove(fault)
            if fault.action == "enospc":
                self._restore.setdefault(name, _fail_fsync())
            else:
                _fire(fault, name)

    def leave(self, name: str) -> None:
        """Phase ``name`` ended (finished or failed): undo what lasts for it."""
        restore = self._restore.pop(name, None)
        if restore is not None:
            restore()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Around a phase: fires its faults on entry; ``enospc`` lasts until the phase ends."""
        try:
            self.enter(name)
            yield
        finally:
            self.leave(name)


class FaultHooks(EngineHooks):
    """One generation's faults as an engine hook: a phase's fire as it starts, a step's before the step."""

    def __init__(self, run: FaultRun) -> None:
        self.run = run

    def phase_started(self, phase: Stage) -> None:
        if phase.value in PHASES:
            self.run.enter(phase.value)

    def phase_ended(self, phase: Stage) -> None:
        self.run.leave(phase.value)

    def step_started(self, step: int) -> None:
        self.run.step(step)


def parse(text: str) -> FaultSet:
    """Parse the ``STILLMOTION_FAULTS`` grammar (see the module docstring); ValueError names the bad item."""
    return _parse(text.strip())


@functools.lru_cache(maxsize=8)
def _parse(text: str) -> FaultSet:
    faults = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        action, *qualifiers = item.split("@")
        if action not in ACTIONS or not qualifiers:
            raise ValueError(f"{FAULTS_ENV}: {item!r} is not action@trigger (actions: {sorted(ACTIONS)})")
        trigger, *rest = qualifiers
        step: int | None = None
        if trigger in PHASES:
            phase = trigger
        else:
            kind, _, value = trigger.partition(":")
            if kind != "step" or not value or not (value == "all" or value.isdigit()):
                raise ValueError(
                    f"{FAULTS_ENV}: {item!r}: trigger must be step:N, step:all or one of {sorted(PHASES)}"
                )
            phase, step = "step", None if value == "all" else int(value)
        attempt: int | None = 1
        job_id = None
        for qualifier in rest:
            key, _, value = qualifier.partition(":")
            if key == "attempt" and (value == "all" or value.isdigit()):
                attempt = None if value == "all" else int(value)
            elif key == "job" and value:
                job_id = value
            else:
                raise ValueError(f"{FAULTS_ENV}: {item!r}: unknown qualifier {qualifier!r}")
        faults.append(Fault(action, phase, step, attempt, job_id))
    return FaultSet(tuple(faults))


def active() -> FaultSet:
    """The switches set for this process (parsed once per value of ``STILLMOTION_FAULTS``)."""
    return parse(os.environ.get(FAULTS_ENV, ""))


_SCOPE: contextvars.ContextVar[tuple[str | None, int]] = contextvars.ContextVar(
    "stillmotion_fault_scope", default=(None, 1)
)


@contextlib.contextmanager
def job_scope(job_id: str | None, attempt: int) -> Iterator[None]:
    """Generations inside run as ``job_id``'s attempt ``attempt`` (for ``@job`` / ``@attempt``)."""
    token = _SCOPE.set((job_id, attempt))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def hooks(job_id: str | None = None, attempt: int = 1) -> list[EngineHooks]:
    """The hooks to install for one generation (of ``job_id``'s attempt ``attempt``, when a worker runs a
    job): the fault hook when ``STILLMOTION_FAULTS`` is set, else none."""
    switches = active()
    if not switches:
        return []
    with job_scope(job_id, attempt):
        return [FaultHooks(switches.for_run())]


def _fire(fault: Fault, where: str) -> None:
    logger.warning("fault switch %s fires at %s", fault.action, where)
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.action == "hang":
        threading.Event().wait()  # never set: a step that never returns
    elif fault.action == "slow":
        time.sleep(SLOW_S)
    elif fault.action == "oom":
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {FAULTS_ENV} at {where})")
    elif fault.action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_fsync() -> functools.partial[None]:
    """Make ``os.fsync`` fail with ENOSPC (the video writer fsyncs its temp file before the rename)."""
    saved = os.fsync

    def no_space(fd: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = no_space
    return functools.partial(setattr, os, "fsync", saved)
