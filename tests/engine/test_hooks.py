"""The engine's hooks: what a caller hears, in order; test faults arrive as a hook, never from the engine."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import torch

from stillmotion import faults
from stillmotion.engine.checkpoint import Checkpoint
from stillmotion.engine.engine import Engine
from stillmotion.engine.hooks import EngineHooks
from stillmotion.engine.progress import ProgressEvent, Stage
from stillmotion.engine.request import GenerationRequest
from stillmotion.media.image_input import InputImage
from tests.support.engine_calls import resolved

SMALL = dict(prompt="a calm lake", height=64, width=64, num_frames=8, num_inference_steps=3, seed=4)
ENGINE_PACKAGE = Path(__file__).resolve().parents[2] / "src" / "stillmotion" / "engine"


class Recorder(EngineHooks):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.checkpoints: list[Checkpoint] = []
        self.frames: list[torch.Tensor] = []

    def phase_started(self, phase: Stage) -> None:
        self.calls.append(f"+{phase.value}")

    def phase_ended(self, phase: Stage) -> None:
        self.calls.append(f"-{phase.value}")

    def step_started(self, step: int) -> None:
        self.calls.append(f"step {step}")

    def step_finished(self, step: int, checkpoint: Callable[[], Checkpoint]) -> None:
        self.calls.append(f"done {step}")
        if step == 2:
            self.checkpoints.append(checkpoint())

    def progress(self, event: ProgressEvent) -> None:
        self.calls.append(f"event {event.stage.value} {event.step}")

    def frames_decoded(self, frames: torch.Tensor) -> None:
        self.calls.append("frames")
        self.frames.append(frames)


def test_hooks_hear_every_phase_and_step_in_order(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    recorder = Recorder()
    request = resolved(engine, GenerationRequest(**SMALL), input_image)
    engine.generate(request, input_image, tmp_path / "v.mp4", [recorder])

    # Each step: started, its progress event, then its checkpoint offer.
    steps = [call for n in (1, 2, 3) for call in (f"step {n}", f"event denoise {n}", f"done {n}")]
    assert recorder.calls == [
        "event plan 0", "+plan", "-plan",
        "event load 0", "+load", "-load",
        "event encode 0", "+encode", "-encode",
        "+denoise", *steps, "-denoise",
        "event decode 3", "+decode", "-decode",
        "frames",
        "event write 3", "+write", "-write",
        "event done 3",
    ]  # fmt: skip
    (frames,) = recorder.frames
    assert tuple(frames.shape) == (8, 64, 64, 3) and frames.dtype == torch.float32
    (saved,) = recorder.checkpoints
    assert saved.steps_done == 2 and saved.latents.device.type == "cpu"


def test_a_fault_hook_fails_a_step_and_the_phases_start_again_on_a_cheaper_plan(
    engine: Engine, input_image: InputImage, tmp_path: Path
) -> None:
    recorder = Recorder()
    oom = faults.FaultHooks(faults.parse("oom@step:2").for_run())
    request = resolved(engine, GenerationRequest(**SMALL), input_image)
    result = engine.generate(request, input_image, tmp_path / "v.mp4", [oom, recorder])

    assert [(d["phase"], d["resumed_at_step"]) for d in result.downgrades] == [("denoise", 1)]
    phases = [call for call in recorder.calls if call[0] in "+-"]
    assert phases == [
        "+plan", "-plan", "+load", "-load", "+encode", "-encode",
        "+denoise", "-denoise",  # step 2 failed: the phase is left all the same
        "+load", "-load", "+encode", "-encode", "+denoise", "-denoise", "+decode", "-decode",
        "+write", "-write",
    ]  # fmt: skip
    # Step 1 ran once; the fault failed step 2 before the recorder heard it start, the retry resumed there.
    assert [call for call in recorder.calls if call.startswith("step")] == ["step 1", "step 2", "step 3"]


def test_the_engine_imports_no_fault_switches() -> None:
    for path in ENGINE_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(name.startswith("stillmotion.faults") for name in names), path.name
