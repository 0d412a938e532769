"""The state machine: every allowed move, every forbidden one, and the status guard that settles races."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from jobs_helpers import add_job
from sqlalchemy import select

from stillmotion.errors import InvalidTransition
from stillmotion.jobs.store.job_store import JobStore
from stillmotion.jobs.store.schema import job_events
from stillmotion.jobs.store.states import ALLOWED, TERMINAL, JobStatus, is_allowed, transition

Q, R, S, F, C = (
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
EXPECTED_MOVES = {(Q, R), (Q, C), (R, S), (R, F), (R, C), (R, Q)}
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))


def test_every_status_has_a_row_and_terminal_ones_lead_nowhere() -> None:
    assert set(ALLOWED) == set(JobStatus)
    assert TERMINAL == {S, F, C}
    for status in TERMINAL:
        assert ALLOWED[status] == frozenset()


@pytest.mark.parametrize(("current", "to"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_allowed_table(current: JobStatus, to: JobStatus) -> None:
    assert is_allowed(current, to) is ((current, to) in EXPECTED_MOVES)


@pytest.mark.parametrize(
    ("current", "to"),
    [p for p in ALL_PAIRS if p not in EXPECTED_MOVES],
    ids=[f"{a}->{b}" for a, b in ALL_PAIRS if (a, b) not in EXPECTED_MOVES],
)
def test_forbidden_move_raises_and_writes_nothing(store: JobStore, current: JobStatus, to: JobStatus) -> None:
    add_job(store, "job1")
    now = datetime.now(UTC)
    with pytest.raises(InvalidTransition) as info, store.db.transaction() as conn:
        transition(conn, "job1", current, to, now=now)
    assert info.value.http_status == 409
    assert store.get("job1").status == Q


def test_stale_expected_status_loses_the_race(store: JobStore) -> None:
    add_job(store, "job1")
    now = datetime.now(UTC)
    with store.db.transaction() as conn:
        assert transition(conn, "job1", Q, R, now=now)
        # A second actor still believing the job is queued must not move it again.
        assert not transition(conn, "job1", Q, C, now=now)
        kinds = conn.execute(select(job_events.c.kind).where(job_events.c.job_id == "job1")).scalars().all()
    assert kinds == ["created", "running"]
    assert store.get("job1").status == R
