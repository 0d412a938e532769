"""WorkerSupervisor: runs the worker as a child process and keeps it alive, inside the API process.

The worker runs in its own process and session, so a crash, a hang or a hard out-of-memory kill never takes
the API or the UI down. One monitor thread waits on the child: when it dies, the job it held goes back to
the queue as interrupted (attempts + 1, or failed once attempts are spent) and a new worker starts. The
same thread is the watchdog: a running job whose heartbeat (its last progress write) is older than
``settings.step_timeout_s`` means a hung step, so the worker's process group is killed and the job is
retried, or failed with ``timeout``. ``stop(grace_s)`` is the graceful shutdown (see ``stop``).

A database outage is nobody's crash: the worker waits it out itself, the watchdog does not count a silence
while the database could not be reached (the worker could not write its heartbeat), and a failed re-queue is
left to the restarted worker (it re-queues at its start, once the database answers) instead of backing off.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from stillmotion.config import Settings
from stillmotion.jobs.store.job_store import (
    TIMEOUT,
    WORKER_CRASHED_REPEATEDLY,
    WORKER_KILLED,
    DatabaseError,
    JobStore,
)
from stillmotion.jobs.workers import worker_state
from stillmotion.jobs.workers.disk_space import disk_low
from stillmotion.jobs.workers.worker import DEFAULT_WORKER_ID

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 1.0  # how often the monitor checks heartbeats (bounded below by step_timeout_s / 4)
RESTART_BACKOFF_S = 0.5  # first wait before restarting a worker that died holding no job
MAX_RESTART_BACKOFF_S = 30.0  # a worker that cannot even start (broken install) is retried this slowly
MAX_INTERRUPT_WAIT_S = 60.0  # after the grace period, one more step may take step_timeout_s, at most this
KILL_WAIT_S = 10.0


class WorkerSupervisor:
    """Starts, watches, restarts and stops one worker process (one per GPU)."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str = DEFAULT_WORKER_ID,
        store: JobStore | None = None,
        env: Mapping[str, str] | None = None,
        node: str | None = None,
        gpu: str | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.node = node  # where it runs and on which card, as /health shows them
        self.gpu = gpu
        self._own_store = store is None
        self.store = store or JobStore.open(settings)
        self._env = dict(os.environ if env is None else env)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._monitor: threading.Thread | None = None
        self._restarts = 0
        self._last_exit_code: int | None = None
        self._timed_out_job: str | None = None
        self._backoff_s = RESTART_BACKOFF_S
        self._watch_interval_s = min(WATCHDOG_INTERVAL_S, settings.step_timeout_s / 4)

    # ---- public API ----------------------------------------------------------------------------------

    def start(self) -> WorkerSupervisor:
        """Start the worker and its monitor thread; returns self."""
        with self._lock:
            if self._monitor is not None:
                raise RuntimeError("the supervisor is already started")
            self._spawn()
            self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)
            self._monitor.start()
        return self

    def stop(self, grace_s: float = 30.0) -> int | None:
        """Stop the worker gracefully; returns its exit code (0 for a clean stop).

        1. SIGTERM: the worker claims nothing more and finishes the current job if it can within ``grace_s``.
        2. A second SIGTERM: it stops at the next step boundary, re-queues the job (no attempt spent) and
           exits 0.
        3. A worker still alive one step later (``step_timeout_s``, at most ``MAX_INTERRUPT_WAIT_S``) is hung:
           its process group is killed and the job re-queued as interrupted.
        """
        with self._lock:  # the monitor restarts under this lock: after it, no new worker can appear
            self._stopping.set()
            proc = self._proc
        code: int | None = None
        if proc is not None:
            code = self._stop_process(proc, grace_s)
            self._last_exit_code = code
        if self._monitor is not None:
            self._monitor.join(timeout=KILL_WAIT_S)
        if self._own_store:
            self.store.close()
        return code

    def interrupt(self) -> None:
        """Stop now: the worker takes no more jobs, and the running one stops at its next step and goes back
        to the queue without spending an attempt (it resumes from its last saved step). ``stop`` then only
        waits for the worker to exit. The worker's SIGINT does this (jobs/workers/worker.py)."""
        with self._lock:
            self._stopping.set()  # the monitor must not restart the worker that is about to exit
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal(proc, signal.SIGINT)

    def status(self) -> dict[str, Any]:
        """alive, ready, restarting, pid, restarts, current_job_id, device, worker_id, node, gpu,
        last_exit_code and stopping.

        ``ready``: the worker process has finished starting (imports, engine) and takes jobs: it published
        its device state (jobs/workers/worker_state.py) under its own pid. ``restarting``: it is not alive and
        this supervisor will start it again (it is not stopping).
        """
        proc = self._proc
        alive = proc is not None and proc.poll() is None
        ready = False
        if alive and proc is not None:
            state = worker_state.read_state(worker_state.state_path(self.settings.data_dir, self.worker_id))
            ready = state is not None and state.get("pid") == proc.pid
        current: str | None = None
        try:
            running = self.store.running_jobs(self.worker_id)
            current = running[0].id if running else None
        except DatabaseError:  # status must answer even when the database does not (health says why)
            pass
        except Exception:  # nor may a bug stop it; the error is logged
            logger.exception("status: could not read the running job")
        return {
            "alive": alive,
            "ready": ready,
            "restarting": not alive and not self._stopping.is_set(),
            "pid": proc.pid if proc is not None and alive else None,
            "restarts": self._restarts,
            "current_job_id": current,
            "device": self.settings.device,
            "worker_id": self.worker_id,
            "node": self.node,
            "gpu": self.gpu,
            "last_exit_code": self._last_exit_code,
            "stopping": self._stopping.is_set(),
        }

    # ---- internals -----------------------------------------------------------------------------------

    def _spawn(self) -> None:
        # Settings travel on stdin (not argv, which any user can read in ps); the pipe then stays open so
        # the worker notices when this process dies and exits instead of running on as an orphan.
        settings_json = self.settings.model_dump_json(exclude={"api_token"})
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stillmotion.jobs.workers.worker",
                "--settings-from-stdin",
                "--worker-id",
                self.worker_id,
            ],
            stdin=subprocess.PIPE,
            env=self._env,
            start_new_session=True,  # its own process group: a Ctrl-C in our terminal is ours to relay
        )
        assert proc.stdin is not None
        proc.stdin.write(settings_json.encode() + b"\n")
        proc.stdin.flush()
        self._proc = proc
        logger.info("worker %s started (pid %d)", self.worker_id, proc.pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            try:
                code = proc.wait(timeout=self._watch_interval_s)
            except subprocess.TimeoutExpired:
                self._check_heartbeat(proc)
                continue
            if self._stopping.is_set():
                return
            self._last_exit_code = code
            delay = self._after_death(code)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._restarts += 1
                try:
                    self._spawn()
                except OSError:
                    logger.exception("could not start the worker; retrying")

    def _after_death(self, code: int) -> float:
        """Re-queue (or fail) what the dead worker held; returns how long to wait before restarting."""
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        timed_out, self._timed_out_job = self._timed_out_job, None
        if timed_out is not None:
            reason = (
                f"a step made no progress for step_timeout_s={self.settings.step_timeout_s:g}s; "
                "the watchdog killed the worker"
            )
            exhausted = TIMEOUT
            reason_code: str | None = TIMEOUT
        elif code == -signal.SIGKILL:
            # Not our watchdog: someone SIGKILLed it, most often the kernel's OOM killer (host RAM, F8).
            reason = (
                f"the worker process was killed (signal {signal.SIGKILL.value}), e.g. by the system running "
                "out of host memory"
            )
            exhausted = WORKER_CRASHED_REPEATEDLY
            reason_code = WORKER_KILLED
        else:
            reason = f"the worker process died ({how}) during the job"
            exhausted = WORKER_CRASHED_REPEATEDLY
            reason_code = None
        try:
            moved = self.store.requeue_interrupted(
                reason, worker_id=self.worker_id, exhausted_code=exhausted, reason_code=reason_code
            )
        except DatabaseError as exc:
            # Not the install's fault: the restarted worker re-queues its jobs itself once the database
            # answers (it waits for it), so restart it now rather than back off.
            logger.error("worker %s died (%s); its jobs are re-queued when the database answers (%s)",
                         self.worker_id, how, exc.code)  # fmt: skip
            return RESTART_BACKOFF_S
        except Exception:  # the restarted worker re-queues at its start-up too; keep supervising
            logger.exception("could not re-queue the jobs of the dead worker")
            moved = []
        logger.error("worker %s died (%s); %d job(s) re-queued or failed", self.worker_id, how, len(moved))
        if moved and not disk_low(self.settings):
            # The crash belongs to a job, and the attempt count bounds it: restart at once.
            self._backoff_s = RESTART_BACKOFF_S
            return 0.0
        # No job: the worker cannot start at all (bad install, bad settings), or the data disk is full and a
        # new worker could not record anything either. Back off, don't spin.
        delay = self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, MAX_RESTART_BACKOFF_S)
        return delay

    def _check_heartbeat(self, proc: subprocess.Popen[bytes]) -> None:
        if disk_low(self.settings) or self.store.db.unavailable_within(self.settings.step_timeout_s):
            # A worker on a full disk, or cut off from the database, cannot write its heartbeat; it waits
            # (worker._record) or carries on without it, so its silence is not a hung step.
            return
        try:
            running = self.store.running_jobs(self.worker_id)
        except DatabaseError:  # an outage must not kill the watchdog; the next round retries
            return
        except Exception:  # nor may a bug
            logger.exception("watchdog: could not read running jobs")
            return
        now = datetime.now(UTC)
        for job in running:
            beat = job.heartbeat_at or job.started_at
            if beat is None:
                continue
            silent_s = (now - beat).total_seconds()
            if silent_s > self.settings.step_timeout_s:
                logger.error(
                    "watchdog: job %s silent for %.1fs (> step_timeout_s=%g); killing worker pid %d",
                    job.id,
                    silent_s,
                    self.settings.step_timeout_s,
                    proc.pid,
                )
                self._timed_out_job = job.id
                _kill_group(proc)
                return

    def _stop_process(self, proc: subprocess.Popen[bytes], grace_s: float) -> int:
        interrupt_wait_s = min(self.settings.step_timeout_s, MAX_INTERRUPT_WAIT_S)
        for phase, wait_s in (("drain", grace_s), ("interrupt", interrupt_wait_s)):
            if proc.poll() is not None:
                break
            logger.info("stopping worker %s: %s (waiting up to %gs)", self.worker_id, phase, wait_s)
            _signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            logger.error("worker %s did not stop; killing it", self.worker_id)
            _kill_group(proc)
            proc.wait(timeout=KILL_WAIT_S)
            try:
                self.store.requeue_interrupted(
                    "the worker did not stop at shutdown", worker_id=self.worker_id
                )
            except DatabaseError as exc:  # the next start re-queues it
                logger.error("could not re-queue worker %s's job at shutdown (%s)", self.worker_id, exc.code)
        if proc.stdin is not None:
            proc.stdin.close()
        return proc.returncode


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and anything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.kill()
