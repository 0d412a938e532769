"""The CLI's progress display (cli_progress.py): one clean bar per job, an overall bar for a batch, log lines
above the bars and never glued onto one, no artefact rate, the bar not drawn again after the job's last lines.

Driven with the engine's own progress events, on the real stderr the CLI writes to (captured).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from stillmotion.cli_progress import ProgressDisplay
from stillmotion.engine.hooks import EngineHooks
from stillmotion.engine.progress import ProgressEvent, Stage


@contextmanager
def console() -> Iterator[None]:
    """The CLI's console logging (cli.main's format), on stderr as it is now (captured by capsys)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_job(hook: EngineHooks, steps: int = 3) -> None:
    """What the engine tells a hook in one generation."""
    hook.progress(ProgressEvent(Stage.LOAD, 0, steps, 0.1, None, "loading the model"))
    hook.phase_started(Stage.DENOISE)
    for step in range(1, steps + 1):
        hook.progress(ProgressEvent(Stage.DENOISE, step, steps, 0.001 * step, 2.0 * (steps - step + 1)))
    hook.phase_ended(Stage.DENOISE)
    hook.progress(ProgressEvent(Stage.DECODE, steps, steps, 1.0, 0.5, "decoding frames"))
    hook.progress(ProgressEvent(Stage.DONE, steps, steps, 1.2, None, "done"))


def segments(text: str) -> list[str]:
    """What the terminal shows line by line: bars redraw themselves after a carriage return."""
    return [part for part in re.split(r"[\r\n]", text) if part.strip()]


def test_one_clean_bar_with_the_logs_above_it(capsys: pytest.CaptureFixture[str]) -> None:
    with console(), ProgressDisplay(enabled=True) as display:
        run_job(display.job())
    shown = segments(capsys.readouterr().err)
    logs = [part for part in shown if "INFO" in part]
    assert logs == ["INFO loading the model", "INFO decoding frames"], shown  # each on its own line
    bars = [i for i, part in enumerate(shown) if "steps [" in part]
    assert bars and "3/3 steps" in shown[bars[-1]], shown
    assert bars[-1] < shown.index("INFO decoding frames"), "the bar was drawn again after the job's lines"
    assert not any("/s" in part for part in shown), shown  # no rate (the first step's is an artefact)
    assert any("about 2 s left" in part for part in shown), shown  # the engine's estimate


def test_a_batch_has_an_overall_bar_and_one_per_job(capsys: pytest.CaptureFixture[str]) -> None:
    with console(), ProgressDisplay(enabled=True, jobs=2) as display:
        for name in ("line 1", "line 2"):
            run_job(display.job(name))
            display.job_done()
    shown = segments(capsys.readouterr().err)
    assert any("2/2 jobs" in part for part in shown), shown
    assert any(part.startswith("line 2:") and "steps" in part for part in shown), shown
    assert "INFO line 2: decoding frames" in shown


def test_json_output_shows_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with console(), ProgressDisplay(enabled=False) as display:
        run_job(display.job())
    assert capsys.readouterr().err == ""
