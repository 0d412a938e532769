"""The test-only fault switches (STILLMOTION_FAULTS): grammar, scoping to a job and attempt, firing rules."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from stillmotion import faults
from stillmotion.faults import Fault


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("kill@step:3", (Fault("kill", "step", 3, 1, None),)),
        (
            "kill@step:1@attempt:all, hang@step:2@job:abc",
            (Fault("kill", "step", 1, None, None), Fault("hang", "step", 2, 1, "abc")),
        ),
        ("enospc@write", (Fault("enospc", "write", None, 1, None),)),
        ("slow@step:all@attempt:2", (Fault("slow", "step", None, 2, None),)),
        ("oom@load,oom@decode", (Fault("oom", "load"), Fault("oom", "decode"))),
    ],
)
def test_grammar(text: str, expected: tuple[Fault, ...]) -> None:
    assert faults.parse(text).faults == expected


@pytest.mark.parametrize(
    "bad", ["explode@step:1", "kill", "kill@stage:1", "kill@step:x", "kill@step:1@color:red", "oom@attempt:1"]
)
def test_bad_items_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match="STILLMOTION_FAULTS"):
        faults.parse(bad)


def test_a_step_fault_fires_once_per_generation_and_step_all_every_step() -> None:
    run = faults.parse("oom@step:2").for_run()
    run.step(1)
    with pytest.raises(torch.OutOfMemoryError, match="step 2"):
        run.step(2)
    run.step(2)  # the resumed step after recovery runs clean
    every = faults.parse("oom@step:all").for_run()
    for step in (1, 2, 3):
        with pytest.raises(torch.OutOfMemoryError):
            every.step(step)


def test_phase_faults_and_enospc_lasts_for_the_phase_only(tmp_path: object) -> None:
    run = faults.parse("oom@decode,enospc@write").for_run()
    with pytest.raises(torch.OutOfMemoryError), run.phase("decode"):
        pass
    with run.phase("decode"):  # once per generation
        pass
    saved = os.fsync
    with run.phase("write"):
        with pytest.raises(OSError) as info:
            os.fsync(0)
        assert info.value.errno == errno.ENOSPC
    assert os.fsync is saved


def test_attempt_and_job_qualifiers_follow_the_job_scope() -> None:
    switches = faults.parse("kill@step:1@job:abc,oom@step:2,slow@step:3@attempt:all")
    assert [f.action for f in switches.for_run().pending] == ["oom", "slow"]  # no job: attempt 1
    with faults.job_scope("abc", 1):
        assert [f.action for f in switches.for_run().pending] == ["kill", "oom", "slow"]
    with faults.job_scope("abc", 2):
        assert [f.action for f in switches.for_run().pending] == ["slow"]


def test_active_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.FAULTS_ENV, raising=False)
    assert not faults.active()
    monkeypatch.setenv(faults.FAULTS_ENV, "oom@encode")
    assert faults.active().faults == (Fault("oom", "encode"),)
