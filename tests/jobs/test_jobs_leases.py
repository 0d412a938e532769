"""Leases: a job whose worker stops renewing its lease goes back to the queue once (attempt counted, poison
guard kept), and the worker that lost it can no longer write anything about the job (fencing).

Two stores on one database stand for two workers on two machines. Leases are timed by the database's clock,
so a test lets a lease lapse by moving its expiry into the past (``lapse_lease``) rather than waiting for it;
every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from jobs_helpers import add_job, lapse_lease
from tests.backends import ON_EVERY_BACKEND

from stillmotion.errors import InvalidTransition
from stillmotion.jobs.store.job_store import WORKER_CRASHED_REPEATEDLY, JobStore, LeaseLost
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.lease import LeaseKeeper, LeaseReaper

pytestmark = ON_EVERY_BACKEND

LEASE_S = 30.0


def _two_workers(open_store: Callable[..., JobStore], **settings: object) -> tuple[JobStore, JobStore]:
    first = open_store(lease_s=LEASE_S, **settings)
    second = open_store(lease_s=LEASE_S, **settings)
    return first, second


def test_a_lapsed_lease_requeues_the_job_once_and_fences_the_old_holder(
    open_store: Callable[..., JobStore],
) -> None:
    first, second = _two_workers(open_store)
    add_job(first, "j")
    before = first.database_time()
    held = first.claim_next("node-a-gpu0")
    assert held is not None and held.lease_token is not None and held.lease_expires_at is not None
    after = first.database_time()
    # Granted for lease_s by the database's clock.
    assert before + timedelta(seconds=LEASE_S) <= held.lease_expires_at <= after + timedelta(seconds=LEASE_S)

    assert second.requeue_expired_leases() == []  # still valid: nobody takes it
    lapse_lease(first, "j")
    (taken,) = second.requeue_expired_leases()  # node a stopped renewing: back to the queue
    assert taken.status == JobStatus.QUEUED and taken.attempts == 2 and taken.lease_token is None
    assert first.requeue_expired_leases() == [] and second.requeue_expired_leases() == []  # once only

    again = second.claim_next("node-b-gpu0")
    assert again is not None and again.lease_token not in (None, held.lease_token)
    stale = held.lease_token
    # Node a comes back to life: none of its writes count any more.
    assert first.renew_lease("j", stale) is False
    assert first.update_progress("j", {"stage": "denoise", "step": 2}, lease=stale) is False
    assert first.heartbeat("j", lease=stale) is False
    with pytest.raises(LeaseLost):
        first.add_event("j", "downgrade", {"to": "x"}, lease=stale)
    published: list[str] = []
    with pytest.raises(LeaseLost):
        first.finish_succeeded(
            "j", "v.mp4", "00" * 32, {}, lease=stale, publish=lambda: published.append("a")
        )
    assert published == []  # the stale run never touches the job's final file
    with pytest.raises(LeaseLost):
        first.finish_failed("j", "oom", "x", lease=stale)
    with pytest.raises(LeaseLost):
        first.finish_cancelled("j", lease=stale)
    assert first.requeue("j", reason="x", lease=stale) is None

    # The current holder's writes do count, and its success ends the lease.
    assert second.renew_lease("j", again.lease_token or "")
    done = second.finish_succeeded("j", "v.mp4", "11" * 32, {}, lease=again.lease_token)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 2
    assert done.lease_token is None and done.lease_expires_at is None
    kinds = [e["kind"] for e in second.events("j")]
    assert kinds == ["created", "running", "interrupted", "running", "succeeded"]
    interrupted = next(e for e in second.events("j") if e["kind"] == "interrupted")
    assert interrupted["detail"]["reason_code"] == "lease_expired"


def test_a_renewal_extends_the_lease_from_the_database_clock(open_store: Callable[..., JobStore]) -> None:
    first, second = _two_workers(open_store)
    add_job(first, "j")
    held = first.claim_next("a")
    assert held is not None and held.lease_token is not None
    for _ in range(3):
        lapse_lease(first, "j")  # the last renewal was long ago (as the table says)...
        before = first.database_time()
        assert first.renew_lease("j", held.lease_token)  # ...and this one comes just in time
        expires = first.get("j").lease_expires_at
        assert expires is not None and expires >= before + timedelta(seconds=LEASE_S)
        assert second.requeue_expired_leases() == []
    assert second.get("j").status == JobStatus.RUNNING


def test_lease_expiry_counts_attempts_and_keeps_the_poison_guard(open_store: Callable[..., JobStore]) -> None:
    first, second = _two_workers(open_store, max_attempts=2)
    add_job(first, "poison")
    add_job(first, "next")
    assert first.claim_next("a").id == "poison"  # type: ignore[union-attr]
    lapse_lease(first, "poison")
    (requeued,) = second.requeue_expired_leases()
    assert requeued.status == JobStatus.QUEUED and requeued.attempts == 2
    assert second.claim_next("b").id == "poison"  # type: ignore[union-attr]  # FIFO: still first
    lapse_lease(first, "poison")
    (failed,) = first.requeue_expired_leases()
    assert failed.status == JobStatus.FAILED and failed.error_code == WORKER_CRASHED_REPEATEDLY
    assert failed.attempts == 2
    assert first.claim_next("a").id == "next"  # type: ignore[union-attr]  # the queue moves on


def test_writes_on_a_finished_job_say_so_not_lease_lost(open_store: Callable[..., JobStore]) -> None:
    store, _ = _two_workers(open_store)
    add_job(store, "j")
    held = store.claim_next("a")
    assert held is not None
    store.finish_failed("j", "oom", "x", lease=held.lease_token)
    with pytest.raises(InvalidTransition) as info:
        store.finish_succeeded("j", "v.mp4", "00" * 32, {}, lease=held.lease_token)
    assert not isinstance(info.value, LeaseLost) and "failed" in info.value.message


def test_lease_keeper_renews_and_reports_a_lost_lease(open_store: Callable[..., JobStore]) -> None:
    # Real time for the keeper's thread (a short lease); the service takes the job back by hand (a requeue
    # without a lease, as the supervisor of a worker it saw die does), without any waiting.
    worker = open_store(lease_s=0.6)
    other = open_store(lease_s=0.6)
    add_job(worker, "j")
    held = worker.claim_next("a")
    assert held is not None and held.lease_expires_at is not None
    lost = threading.Event()
    reasons: list[str] = []
    unreachable: list[bool] = []

    def on_lost(why: str, cut_off: bool) -> None:
        reasons.append(why)
        unreachable.append(cut_off)
        lost.set()

    with LeaseKeeper(worker, held, on_lost):
        first_expiry = held.lease_expires_at
        for _ in range(100):  # renewed every lease_s / 3; wait for one renewal (generous on busy machines)
            if (worker.get("j").lease_expires_at or first_expiry) > first_expiry:
                break
            lost.wait(0.1)
        assert (worker.get("j").lease_expires_at or first_expiry) > first_expiry
        assert not lost.is_set()
        taken = other.requeue("j", reason="its worker looked dead")
        assert taken is not None and taken.status == JobStatus.QUEUED
        assert lost.wait(30), "the keeper did not notice that the job was taken back"
    assert "taken back" in reasons[0] and unreachable == [False]


SKEW_S = 20.0
REAL_LEASE_S = 4.0  # real time: renewed every 1.3 s, so a busy machine still renews well in time


@pytest.mark.timeout(120)
def test_a_reaper_with_a_skewed_clock_takes_back_the_dead_job_in_time_and_never_the_healthy_one(
    open_store: Callable[..., JobStore],
) -> None:
    """Every worker is busy (each holds a job); only the reaper (what the API process runs) looks at leases,
    and its machine's clock is 20 s ahead. Leases are timed by the database, so it takes back the job whose
    worker died (stopped renewing) within 1.5 leases, and never the one whose worker renews."""
    healthy_worker = open_store(lease_s=REAL_LEASE_S)
    dead_worker = open_store(lease_s=REAL_LEASE_S)
    skewed = open_store(lease_s=REAL_LEASE_S, clock=lambda: datetime.now(UTC) + timedelta(seconds=SKEW_S))
    add_job(healthy_worker, "healthy")
    add_job(healthy_worker, "dead")
    healthy = healthy_worker.claim_next("healthy-worker")
    assert healthy is not None and healthy.id == "healthy"
    lost = threading.Event()
    with LeaseKeeper(healthy_worker, healthy, lambda why, cut_off: lost.set()):
        dead = dead_worker.claim_next("dead-worker")  # ...which then dies: nobody renews its lease
        died_at = time.monotonic()
        assert dead is not None and dead.id == "dead"
        reaper = LeaseReaper(skewed).start()
        try:
            while skewed.get("dead").status == JobStatus.RUNNING:
                assert time.monotonic() - died_at < 60, "the dead worker's job was never taken back"
                time.sleep(0.05)  # polling the outcome; the reaper works on its own clock
            taken_after_s = time.monotonic() - died_at
            # Watch the healthy job for two more leases: its worker renews, so it stays where it is.
            assert not lost.wait(2 * REAL_LEASE_S), "the healthy job's lease was taken back"
        finally:
            reaper.stop()
    assert taken_after_s <= 1.5 * REAL_LEASE_S, f"the dead job came back after {taken_after_s:.1f}s"
    back = skewed.get("dead")
    assert back.status == JobStatus.QUEUED and back.attempts == 2
    still = skewed.get("healthy")
    assert still.status == JobStatus.RUNNING and still.lease_token == healthy.lease_token
    assert [e["kind"] for e in skewed.events("healthy")] == ["created", "running"]
