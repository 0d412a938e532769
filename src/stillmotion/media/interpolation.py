"""Frame interpolation, the rules: which interpolators exist, which factors, and which frames come out.

The rule (the same for every interpolator): ``factor`` k turns N frames at ``fps`` into **N x k frames at
fps x k**, so the clip lasts exactly as long as before. Output frame j shows the moment j / k in source
frames: every source frame i is kept unchanged at j = i x k, the k - 1 frames after it are in-between frames
towards frame i + 1, and the k - 1 frames after the last source frame repeat it (there is nothing to move
towards), so the last frame is held for its full 1 / fps as in the source. ``interpolation_slots`` spells
this out; ``assemble`` builds the output from the source frames and the interpolator's in-between frames.

Interpolation changes the video by design, so it is opt-in (``interpolate`` or ``interpolate_fps``) and
recorded in the output's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from stillmotion.errors import InvalidRequest
from stillmotion.media.video_output import GIF_MAX_FPS

FACTORS = (2, 3, 4)
# Players and browsers handle this; beyond it frames are dropped on most screens anyway.
MAX_OUTPUT_FPS = 120


class Interpolator(StrEnum):
    """``minterpolate``: ffmpeg's motion-compensated filter, on the CPU, always available offline.
    ``rife``: the learned RIFE 4.6 network (models/rife.py), weights from the Hugging Face hub."""

    MINTERPOLATE = "minterpolate"
    RIFE = "rife"


DEFAULT_INTERPOLATOR = Interpolator.MINTERPOLATE  # needs no download, so it works offline


@dataclass(frozen=True)
class Slot:
    """Output frame ``index`` shows source frame ``source`` moved ``timestep`` (0..1) towards the next."""

    index: int
    source: int
    timestep: float

    @property
    def is_source(self) -> bool:
        return self.timestep == 0.0


def resolve_interpolation(
    factor: object, target_fps: object, interpolator: object, fps: int
) -> tuple[int, Interpolator | None]:
    """(factor, interpolator) from the request's fields, or ``InvalidRequest`` naming the field and the rule.

    Factor 1 and no interpolator mean off. ``target_fps`` must be ``fps`` times an allowed factor.
    """
    allowed = ", ".join(f"{f}" for f in FACTORS)
    if factor is not None and target_fps is not None:
        raise InvalidRequest(
            f"interpolate={factor!r} and interpolate_fps={target_fps!r} given; one or the other.",
            field="interpolate_fps",
        )
    if target_fps is not None:
        if isinstance(target_fps, bool) or not isinstance(target_fps, int):
            raise InvalidRequest(
                f"interpolate_fps={target_fps!r} must be a whole number.", field="interpolate_fps"
            )
        if target_fps % fps or target_fps // fps not in FACTORS:
            choices = ", ".join(str(fps * f) for f in FACTORS)
            raise InvalidRequest(
                f"interpolate_fps={target_fps} is not {allowed} times fps={fps}; choose {choices}.",
                field="interpolate_fps",
            )
        factor = target_fps // fps
    if factor is None:
        if interpolator is not None:
            raise InvalidRequest(
                f"interpolator={interpolator!r} given without interpolate or interpolate_fps; "
                "say how many times the frames (e.g. interpolate=2).",
                field="interpolator",
            )
        return 1, None
    if isinstance(factor, bool) or not isinstance(factor, int) or factor not in FACTORS:
        raise InvalidRequest(
            f"interpolate={factor!r} is not supported; allowed: {allowed} (times the frames and the fps).",
            field="interpolate",
        )
    if fps * factor > MAX_OUTPUT_FPS:
        raise InvalidRequest(
            f"interpolate={factor} at fps={fps} gives {fps * factor} fps, over the limit of "
            f"{MAX_OUTPUT_FPS}: lower fps or the factor.",
            field="interpolate",
        )
    names = [i.value for i in Interpolator]
    if interpolator is None:
        return factor, DEFAULT_INTERPOLATOR
    if interpolator not in names:
        raise InvalidRequest(
            f"interpolator={interpolator!r} is not one of {', '.join(names)}.", field="interpolator"
        )
    return factor, Interpolator(str(interpolator))


def interpolation_slots(num_frames: int, factor: int) -> list[Slot]:
    """The N x k output frames of the rule above, in order."""
    slots = []
    for index in range(num_frames * factor):
        source, offset = divmod(index, factor)
        if source >= num_frames - 1:  # the last source frame and its held copies
            slots.append(Slot(index, num_frames - 1, 0.0))
        else:
            slots.append(Slot(index, source, offset / factor))
    return slots


def in_between_slots(num_frames: int, factor: int) -> list[Slot]:
    """The slots an interpolator must fill: every one that is not a source frame or a held copy."""
    return [slot for slot in interpolation_slots(num_frames, factor) if not slot.is_source]


def assemble(
    frames: npt.NDArray[np.uint8], factor: int, in_between: dict[int, npt.NDArray[np.uint8]]
) -> npt.NDArray[np.uint8]:
    """The output video: source frames kept bit for bit, ``in_between[index]`` in the other slots."""
    count, height, width, channels = frames.shape
    out = np.empty((count * factor, height, width, channels), dtype=np.uint8)
    for slot in interpolation_slots(count, factor):
        out[slot.index] = frames[slot.source] if slot.is_source else in_between[slot.index]
    return out


def output_fps_problem(fmt: str, fps: int) -> str | None:
    """Why a video format cannot play ``fps`` (GIF: at most GIF_MAX_FPS), or None."""
    if fmt == "gif" and fps > GIF_MAX_FPS:
        return f"GIF plays at most {GIF_MAX_FPS} fps and this video would have {fps}; write .mp4 or .webp"
    return None
