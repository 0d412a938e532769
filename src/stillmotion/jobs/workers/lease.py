"""LeaseKeeper: renews the lease of the job a worker runs, in a thread, and says when it is lost.

A worker holds each running job under a lease (``JobStore.claim_next``) that lapses ``settings.lease_s``
after its last renewal; another worker's ``requeue_expired_leases`` then takes the job back. The keeper
renews every ``lease_s / 3``, so two renewals can fail before the lease lapses. It calls ``on_lost`` once:
when a renewal finds the job taken back, or when no renewal has succeeded for ``lease_s`` (the database is
unreachable): by then another worker may hold the job, so this one stops instead of racing it. The
worker's writes are fenced by the lease token anyway; stopping early only saves the work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from stillmotion.errors import StillmotionError
from stillmotion.jobs.store.job_store import Job, JobStore

logger = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 3


class LeaseKeeper:
    """``with LeaseKeeper(store, job, on_lost):`` renews ``job``'s lease for the duration of the block."""

    def __init__(self, store: JobStore, job: Job, on_lost: Callable[[str], None]) -> None:
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
        while not self._stop.wait(self.lease_s / RENEWALS_PER_LEASE):
            started = time.monotonic()
            try:
                if self.store.renew_lease(self.job_id, self.lease):
                    valid_until = started + self.lease_s
                    continue
                why = "the job was taken back (its lease had lapsed) or finished elsewhere"
            except StillmotionError as exc:
                if time.monotonic() < valid_until:
                    logger.warning("job %s: lease not renewed (%s); trying again", self.job_id, exc)
                    continue
                why = f"its lease could not be renewed for lease_s={self.lease_s:g}s ({type(exc).__name__})"
            if not self._stop.is_set():
                logger.error("job %s: lease lost: %s; stopping this run", self.job_id, why)
                self.on_lost(why)
            return
