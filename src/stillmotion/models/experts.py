"""Two-expert models (Wan 2.2 A14B): the step at which the high-noise expert hands over to the low-noise one.

diffusers' WanImageToVideoPipeline runs ``transformer`` while the timestep is at or above ``boundary_ratio`` x
``num_train_timesteps`` and ``transformer_2`` below it. The adapter (models/wan.py) decides by the timestep
itself; the planner (memory/experts.py) needs the same answer before any scheduler exists, so this file
computes the timesteps of Wan's scheduler (UniPC on flow sigmas, as ``UniPCMultistepScheduler.set_timesteps``
with ``use_flow_sigmas``) in plain Python. tests/models/test_experts.py holds it equal to the scheduler's.
"""

from __future__ import annotations

from stillmotion.models.registry import TwoExperts


def flow_timesteps(num_inference_steps: int, flow_shift: float, num_train_timesteps: int = 1000) -> list[int]:
    """The timesteps of UniPC with flow sigmas: sigmas evenly spaced from 1 (np.linspace(1, 1/T, n + 1)[:-1]),
    shifted by ``flow_shift``, times T and truncated to whole numbers (the scheduler's int64), highest
    first."""
    n = num_inference_steps
    sigmas = [1 + (1 / num_train_timesteps - 1) * i / n for i in range(n)]
    shifted = [flow_shift * s / (1 + (flow_shift - 1) * s) for s in sigmas]
    shifted[0] = min(shifted[0], 1 - 1e-6)  # the scheduler keeps the first sigma off 1 (log of 0)
    return [int(sigma * num_train_timesteps) for sigma in shifted]


def high_noise_steps(experts: TwoExperts, num_inference_steps: int, flow_shift: float | None = None) -> int:
    """How many of the first steps the high-noise expert runs (the rest run on the low-noise one).

    ``flow_shift``: the request's scheduler shift when it is not the model's (a step-distilled LoRA's)."""
    shift = experts.flow_shift if flow_shift is None else flow_shift
    boundary = experts.boundary_ratio * experts.num_train_timesteps
    timesteps = flow_timesteps(num_inference_steps, shift, experts.num_train_timesteps)
    return sum(1 for t in timesteps if t >= boundary)
