"""How long a request will take on this machine, learned from the jobs it already ran. Pure: no I/O.

Speed depends on the device far more than on anything the planner knows (an H100 and a laptop GPU differ
10x), so the figure comes from this service's own finished jobs of the same model on the same device: the
denoising time per latent token and step, and the decode time per output pixel per frame, each the median
over those jobs, scaled to the new request; the rest (encoders, writing) is their median as measured. With no
such job yet there is no figure: the first job measures the device.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LATENT_FACTOR = 8
MAX_HISTORY = 20  # the most recent jobs are the ones that describe the device as it is now


@dataclass(frozen=True)
class ExpectedTime:
    """Expected seconds for the whole job and for its decode, and how many earlier jobs they rest on."""

    seconds: float
    jobs: int
    decode_s: float = 0.0  # part of ``seconds``: the VAE decode, which has no steps to count down by

    @property
    def basis(self) -> str:
        return f"measured on this machine from {self.jobs} earlier job{'s' if self.jobs != 1 else ''}"


def _tokens(request: Mapping[str, Any]) -> int:
    batch = 2 if float(request.get("guidance_scale") or 0) > 1.0 else 1
    latent = (int(request["height"]) // LATENT_FACTOR) * (int(request["width"]) // LATENT_FACTOR)
    return batch * int(request["num_frames"]) * latent


def _pixel_frames(request: Mapping[str, Any]) -> int:
    return int(request["height"]) * int(request["width"]) * int(request["num_frames"])


def _usable(result: Mapping[str, Any] | None, model: str, device: str | None) -> bool:
    if not isinstance(result, Mapping):
        return False
    request, timings = result.get("request"), result.get("timings")
    if not isinstance(request, Mapping) or not isinstance(timings, Mapping):
        return False
    if request.get("model") != model or (device is not None and result.get("device") != device):
        return False
    if result.get("downgrades"):  # an OOM recovery's time says nothing about a normal run
        return False
    needed = ("denoise_s", "decode_s", "total_s")
    return (
        all(isinstance(timings.get(k), int | float) for k in needed)
        and int(request["num_inference_steps"]) > 0
    )


def expected_time(
    request: Mapping[str, Any], results: Iterable[Mapping[str, Any] | None], *, device: str | None = None
) -> ExpectedTime | None:
    """Expected seconds of ``request`` (a resolved request dict) from earlier job ``results`` (newest first).

    ``results`` are ``GenerationResult.to_dict()`` values of finished jobs; only those of the same model (and
    ``device`` when given) without out-of-memory downgrades count. None when none does.
    """
    model = str(request["model"])
    history = [r for r in results if r is not None and _usable(r, model, device)][:MAX_HISTORY]
    if not history:
        return None
    per_token_step, per_pixel_frame, rest = [], [], []
    for result in history:
        past, timings = result["request"], result["timings"]
        per_token_step.append(timings["denoise_s"] / (_tokens(past) * int(past["num_inference_steps"])))
        per_pixel_frame.append(timings["decode_s"] / _pixel_frames(past))
        rest.append(max(0.0, timings["total_s"] - timings["denoise_s"] - timings["decode_s"]))
    decode = statistics.median(per_pixel_frame) * _pixel_frames(request)
    seconds = (
        statistics.median(per_token_step) * _tokens(request) * int(request["num_inference_steps"])
        + decode
        + statistics.median(rest)
    )
    return ExpectedTime(seconds=seconds, jobs=len(history), decode_s=decode)


def time_left(
    progress: Mapping[str, Any], expected: ExpectedTime | None, decoding_for_s: float
) -> float | None:
    """Seconds a running job still needs, its decode counted, or None while unknown.

    ``progress`` is the job's last progress event (``ProgressEvent.to_dict``); ``expected`` this machine's
    figure for the job, if it has one; ``decoding_for_s`` how long the decode has run (read only in that
    stage). While denoising, the steps left take the engine's measured time per step and the decode its
    measured share; while decoding, what remains of that share. Without a measurement the engine's own ETA
    stands while it denoises (it counts the decode as one step), and nothing is promised after.
    """
    stage, eta = progress.get("stage"), progress.get("eta_s")
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    if stage == "denoise" and isinstance(eta, int | float):
        if expected is None:
            return float(eta)
        per_step = eta / (total - step + 1) if total >= step else 0.0  # the engine's ETA: steps left + 1
        return per_step * (total - step) + expected.decode_s
    if stage == "decode" and expected is not None and expected.decode_s > decoding_for_s:
        return expected.decode_s - decoding_for_s
    return None  # the decode took longer than measured before, or the job is writing: no promise


def queue_wait(position: int, ready_workers: int, per_job_s: float) -> float:
    """Seconds until the job at queue ``position`` (1 = next) starts, at most about: every ready worker is
    taken to have just started a job, and the jobs ahead are shared among them, one round at a time."""
    if position < 1 or ready_workers < 1:
        raise ValueError(f"position={position} and ready_workers={ready_workers} must both be at least 1")
    rounds = (position - 1) // ready_workers + 1
    return rounds * per_job_s


def format_duration(seconds: float | None) -> str:
    """'45 s', '1 min 5 s', '2 h 3 min': how a person reads a wait ('' for None)."""
    if seconds is None:
        return ""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
