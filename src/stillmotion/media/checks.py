"""Spot unusable or suspicious generated frames before they are written.

``check_frames()`` runs on the decoded float frames: NaN or infinite values are an error (``BadOutput``,
code ``nan_output``: an fp16 overflow, usually), while an all-black or motionless clip is only a warning,
recorded with the job, because a dark or still scene can be what the user asked for. ``to_uint8()``
then turns the frames into the bytes the encoders take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stillmotion.errors import BadOutput

# A frame whose mean luma is under 2% (about 5/255) is black to a viewer: failed generations (a
# safety filter, a VAE decoding zeros) come out at or just above 0, while real night scenes keep
# highlights that lift the mean above this.
BLACK_MAX_MEAN_LUMA = 0.02
# Consecutive frames whose mean absolute difference is under one 8-bit level (1/255) become nearly
# the same bytes once quantized: the video does not move. Flagged only when every pair is this still.
FROZEN_MAX_MEAN_DIFF = 1.0 / 255.0
# Rec. 709 luma weights, the same the MP4 writer tags its colours with.
_LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)


@dataclass(frozen=True)
class FrameReport:
    """What ``check_frames()`` found; ``warnings`` holds "black" and/or "frozen"."""

    warnings: tuple[
        str, ...
    ]  # "black": all frames nearly black; "frozen": consecutive frames nearly identical
    mean_brightness: float  # mean Rec. 709 luma over all frames, 0..1
    mean_motion: float  # mean absolute difference between consecutive frames, 0..1 (0 for one frame)


def check_frames(frames: npt.NDArray[np.floating[Any]]) -> FrameReport:
    """Check float frames in [0, 1] of shape (F, H, W, 3); raise ``BadOutput`` on any NaN or infinity."""
    _check_shape(frames)
    _raise_if_not_finite(frames)

    # One frame at a time keeps the peak at one frame's worth of float64, not the whole clip's.
    luma_per_frame = [float(np.mean(frame @ _LUMA_WEIGHTS)) for frame in frames]
    motion_per_pair = [
        float(np.mean(np.abs(frames[i + 1].astype(np.float64) - frames[i]))) for i in range(len(frames) - 1)
    ]

    warnings: list[str] = []
    if max(luma_per_frame) < BLACK_MAX_MEAN_LUMA:
        warnings.append("black")
    if motion_per_pair and max(motion_per_pair) < FROZEN_MAX_MEAN_DIFF:
        warnings.append("frozen")
    return FrameReport(
        warnings=tuple(warnings),
        mean_brightness=float(np.mean(luma_per_frame)),
        mean_motion=float(np.mean(motion_per_pair)) if motion_per_pair else 0.0,
    )


def to_uint8(frames: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    """Float frames in [0, 1] -> uint8, clipped and rounded (as diffusers' ``numpy_to_pil`` does)."""
    _raise_if_not_finite(frames)
    scaled: npt.NDArray[np.float32] = np.clip(frames, 0.0, 1.0).astype(np.float32)
    scaled *= 255.0
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def _check_shape(frames: npt.NDArray[np.floating[Any]]) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must have shape (F, H, W, 3) with F >= 1, got {frames.shape}")
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be a float array in [0, 1], got dtype {frames.dtype}")


def _raise_if_not_finite(frames: npt.NDArray[np.floating[Any]]) -> None:
    bad_frames = [i for i, frame in enumerate(frames) if not np.isfinite(frame).all()]
    if bad_frames:
        raise BadOutput(
            f"frames: {len(bad_frames)} of {len(frames)} frames contain NaN or infinite values "
            f"(first: frame {bad_frames[0]}); the generation is numerically broken, often an fp16 overflow. "
            "Retry with another seed or in float32.",
            code="nan_output",
        )
