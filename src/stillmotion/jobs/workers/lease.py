"""Leases from the workers' side: ``LeaseKeeper`` renews the running job's lease, ``LeaseReaper`` takes back
the jobs whose lease lapsed.

A worker holds each running job under a lease (``JobStore.claim_next``) that lapses ``settings.lease_s``
after its last renewal, by the database's clock. The keeper renews every ``lease_s / 3``, and every second
after a renewal failed, so an outage is ridden out whenever the database answers again within the lease. It
calls ``on_lost(why, unreachable)`` once: when a renewal finds the job taken back (``unreachable=False``), or
when no renewal has succeeded for ``lease_s`` because the database could not be reached
(``unreachable=True``): by then another worker may hold the job, so this one stops instead of racing it, and
hands the job back, uncharged, once the database answers again. The worker's writes are fenced by the lease
token anyway; stopping early only saves the work.

The reaper runs in every idle worker (``reap_if_due``) and in a thread of the API process (``start``), so a
dead worker's job comes back within ``lease_s + lease_s / 4`` even while every worker is busy. After this
process saw the database unreachable it reaps nothing for ``lease_s``: leases lapsed during the outage
because nobody could renew them, and their holders get that long to renew or hand their jobs back, so an
outage never costs a job an attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from stillmotion.errors import StillmotionError
from stillmotion.jobs.store.job_store import DatabaseError, Job, JobStore

logger = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 3
RETRY_S = 1.0  # after a renewal failed, the next try comes this soon
REAPS_PER_LEASE = 4  # the API process's reaper looks this often per lease: a dead job waits < 1.25 leases

# on_lost(why, unreachable): ``unreachable`` when the lease could not be renewed because the database could
# not be reached (the job is still this worker's to hand back), False when the job was taken back.
OnLost = Callable[[str, bool], None]


class LeaseKeeper:
    """``with LeaseKeeper(store, job, on_lost):`` renews ``job``'s lease for the duration of the block."""

    def __init__(self, store: JobStore, job: Job, on_lost: OnLost) -> None:
        if job.lease_token is None:
            raise ValueError(f"job {job.id} has no lease: keep only jobs returned by claim_next")
        self.store = store
        self.job_id = job.id
        self.lease = job.lease_token
        self.on_lost = on_lost
        self.lease_s = store.settings.lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job.id[:8]}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        valid_until = time.monotonic() + self.lease_s  # claim_next has just granted a whole lease
        every_s = self.lease_s / RENEWALS_PER_LEASE
        delay = every_s
        while not self._stop.wait(delay):
            started = time.monotonic()
            try:
                if self.store.renew_lease(self.job_id, self.lease):
                    valid_until, delay = started + self.lease_s, every_s
                    continue
                if self.store.get(self.job_id).is_terminal:
                    return  # finished (most often by this very run, just before the keeper was stopped)
                why, unreachable = "the job was taken back (its lease had lapsed)", False
            except StillmotionError as exc:
                if time.monotonic() < valid_until:
                    # Soon, not a third of a lease later: outages can come back to back.
                    delay = min(RETRY_S, every_s)
                    logger.warning(
                        "job %s: lease not renewed (%s); trying again in %gs", self.job_id, exc.code, delay
                    )
                    continue
                why = f"its lease could not be renewed for lease_s={self.lease_s:g}s ({exc.code})"
                unreachable = True
            if not self._stop.is_set():
                logger.error("job %s: lease lost: %s; stopping this run", self.job_id, why)
                self.on_lost(why, unreachable)
            return


class LeaseReaper:
    """Takes back lapsed leases (``JobStore.requeue_expired_leases``); see the module docstring."""

    def __init__(self, store: JobStore, *, interval_s: float | None = None) -> None:
        self.store = store
        self.lease_s = store.settings.lease_s
        self.interval_s = interval_s if interval_s is not None else self.lease_s / REAPS_PER_LEASE
        self._next = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def reap(self) -> list[Job]:
        """Re-queue (or fail) every job whose lease lapsed, unless the database was unreachable from here in
        the last ``lease_s`` (then nothing: the holders go first). Raises ``DatabaseError``."""
        if self.store.db.unavailable_within(self.lease_s):
            return []
        return self.store.requeue_expired_leases()

    def reap_if_due(self) -> None:
        """``reap()`` at most every ``interval_s`` (called by a worker between jobs)."""
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.interval_s
            self.reap()

    def start(self) -> LeaseReaper:
        """Reap every ``interval_s`` in a thread of its own until ``stop()``; returns self."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lease-reaper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.reap()
            except DatabaseError as exc:  # an outage: the next round tries again (logged once per outage)
                if not self._failing:
                    logger.warning("lease reaper: %s; trying again every %gs", exc.code, self.interval_s)
                self._failing = True
            except Exception:  # a bug must not end the reaper: the next round tries again
                logger.exception("lease reaper: unexpected error")
            else:
                self._failing = False
