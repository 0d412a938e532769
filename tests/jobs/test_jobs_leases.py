"""Leases: a job whose worker stops renewing its lease goes back to the queue once (attempt counted, poison
guard kept), and the worker that lost it can no longer write anything about the job (fencing).

Two stores on one database stand for two workers on two machines. Time is a ``Clock`` the test moves, so
nothing here waits for a lease to run out; every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from jobs_helpers import Clock, add_job
from tests.backends import ON_EVERY_BACKEND

from stillmotion.errors import InvalidTransition
from stillmotion.jobs.store.job_store import WORKER_CRASHED_REPEATEDLY, JobStore, LeaseLost
from stillmotion.jobs.store.states import JobStatus
from stillmotion.jobs.workers.lease import LeaseKeeper

pytestmark = ON_EVERY_BACKEND

LEASE_S = 30.0


def _two_workers(open_store: Callable[..., JobStore], **settings: object) -> tuple[JobStore, JobStore, Clock]:
    clock = Clock()
    first = open_store(clock=clock, lease_s=LEASE_S, **settings)
    second = open_store(clock=clock, lease_s=LEASE_S, **settings)
    return first, second, clock


def test_a_lapsed_lease_requeues_the_job_once_and_fences_the_old_holder(
    open_store: Callable[..., JobStore],
) -> None:
    first, second, clock = _two_workers(open_store)
    add_job(first, "j")
    held = first.claim_next("node-a-gpu0")
    assert held is not None and held.lease_token is not None
    assert held.lease_expires_at == clock() + timedelta(seconds=LEASE_S)

    clock.advance(LEASE_S - 1)
    assert second.requeue_expired_leases() == []  # still valid: nobody takes it
    clock.advance(2)
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


def test_a_renewed_lease_is_never_taken_back(open_store: Callable[..., JobStore]) -> None:
    first, second, clock = _two_workers(open_store)
    add_job(first, "j")
    held = first.claim_next("a")
    assert held is not None and held.lease_token is not None
    for _ in range(5):  # five lease lengths in all, renewed every two thirds of one
        clock.advance(LEASE_S * 2 / 3)
        assert first.renew_lease("j", held.lease_token)
        assert second.requeue_expired_leases() == []
    assert second.get("j").status == JobStatus.RUNNING


def test_lease_expiry_counts_attempts_and_keeps_the_poison_guard(open_store: Callable[..., JobStore]) -> None:
    first, second, clock = _two_workers(open_store, max_attempts=2)
    add_job(first, "poison")
    add_job(first, "next")
    assert first.claim_next("a").id == "poison"  # type: ignore[union-attr]
    clock.advance(LEASE_S + 1)
    (requeued,) = second.requeue_expired_leases()
    assert requeued.status == JobStatus.QUEUED and requeued.attempts == 2
    assert second.claim_next("b").id == "poison"  # type: ignore[union-attr]  # FIFO: still first
    clock.advance(LEASE_S + 1)
    (failed,) = first.requeue_expired_leases()
    assert failed.status == JobStatus.FAILED and failed.error_code == WORKER_CRASHED_REPEATEDLY
    assert failed.attempts == 2
    assert first.claim_next("a").id == "next"  # type: ignore[union-attr]  # the queue moves on


def test_writes_on_a_finished_job_say_so_not_lease_lost(open_store: Callable[..., JobStore]) -> None:
    store, _, _ = _two_workers(open_store)
    add_job(store, "j")
    held = store.claim_next("a")
    assert held is not None
    store.finish_failed("j", "oom", "x", lease=held.lease_token)
    with pytest.raises(InvalidTransition) as info:
        store.finish_succeeded("j", "v.mp4", "00" * 32, {}, lease=held.lease_token)
    assert not isinstance(info.value, LeaseLost) and "failed" in info.value.message


def test_lease_keeper_renews_and_reports_a_lost_lease(open_store: Callable[..., JobStore]) -> None:
    # Real time for the keeper's thread (a short lease); the other worker's clock runs an hour ahead, so
    # for it the lease has long lapsed: it takes the job back at once, without any waiting.
    worker = open_store(lease_s=0.6)
    ahead = open_store(lease_s=0.6, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
    add_job(worker, "j")
    held = worker.claim_next("a")
    assert held is not None and held.lease_expires_at is not None
    lost = threading.Event()
    reasons: list[str] = []

    def on_lost(why: str) -> None:
        reasons.append(why)
        lost.set()

    with LeaseKeeper(worker, held, on_lost):
        first_expiry = held.lease_expires_at
        for _ in range(100):  # renewed every lease_s / 3; wait for one renewal (generous on busy machines)
            if (worker.get("j").lease_expires_at or first_expiry) > first_expiry:
                break
            lost.wait(0.1)
        assert (worker.get("j").lease_expires_at or first_expiry) > first_expiry
        assert not lost.is_set()
        (taken,) = ahead.requeue_expired_leases()
        assert taken.status == JobStatus.QUEUED
        assert lost.wait(30), "the keeper did not notice that the job was taken back"
    assert "taken back" in reasons[0]
