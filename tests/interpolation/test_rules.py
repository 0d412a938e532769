"""The interpolation rule (N frames -> N x k at k x fps), its validation, and ffmpeg's minterpolate path."""

from __future__ import annotations

import numpy as np
import pytest

from stillmotion.errors import InvalidRequest
from stillmotion.media.interpolation import (
    Interpolator,
    Slot,
    assemble,
    in_between_slots,
    interpolation_slots,
    output_fps_problem,
    resolve_interpolation,
)
from stillmotion.media.minterpolate import minterpolate
from tests.interpolation.helpers import moving_square, square_center_x


@pytest.mark.parametrize(
    ("factor", "target_fps", "interpolator", "fps", "expected"),
    [
        (None, None, None, 8, (1, None)),
        (2, None, None, 8, (2, Interpolator.MINTERPOLATE)),
        (4, None, "rife", 8, (4, Interpolator.RIFE)),
        (None, 24, None, 8, (3, Interpolator.MINTERPOLATE)),
        (None, 32, "minterpolate", 16, (2, Interpolator.MINTERPOLATE)),
    ],
)
def test_resolve_interpolation_accepts(
    factor: object,
    target_fps: object,
    interpolator: object,
    fps: int,
    expected: tuple[int, Interpolator | None],
) -> None:
    assert resolve_interpolation(factor, target_fps, interpolator, fps) == expected


@pytest.mark.parametrize(
    ("factor", "target_fps", "interpolator", "fps", "field", "words"),
    [
        (5, None, None, 8, "interpolate", "allowed: 2, 3, 4"),
        (1, None, None, 8, "interpolate", "allowed"),
        (True, None, None, 8, "interpolate", "not supported"),
        (2, 16, None, 8, "interpolate_fps", "one or the other"),
        (None, 20, None, 8, "interpolate_fps", "choose 16, 24, 32"),
        (None, 8, None, 8, "interpolate_fps", "not 2, 3, 4 times fps=8"),
        (None, None, "rife", 8, "interpolator", "without interpolate"),
        (2, None, "film", 8, "interpolator", "minterpolate, rife"),
        (4, None, None, 60, "interpolate", "240 fps, over the limit of 120"),
    ],
)
def test_resolve_interpolation_refuses_naming_field_value_and_rule(
    factor: object, target_fps: object, interpolator: object, fps: int, field: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_interpolation(factor, target_fps, interpolator, fps)
    assert info.value.field == field
    assert words in info.value.message


def test_slots_keep_sources_fill_between_and_hold_the_last_frame() -> None:
    assert interpolation_slots(3, 2) == [
        Slot(0, 0, 0.0),
        Slot(1, 0, 0.5),
        Slot(2, 1, 0.0),
        Slot(3, 1, 0.5),
        Slot(4, 2, 0.0),
        Slot(5, 2, 0.0),  # the last frame held: the clip lasts 3 / fps, as before
    ]
    assert [s.timestep for s in interpolation_slots(2, 4)] == [0.0, 0.25, 0.5, 0.75, 0.0, 0.0, 0.0, 0.0]
    assert len(interpolation_slots(16, 4)) == 64
    assert len(in_between_slots(16, 4)) == 15 * 3


def test_gif_refuses_an_output_fps_it_cannot_play() -> None:
    assert output_fps_problem("gif", 64) is not None and "50 fps" in str(output_fps_problem("gif", 64))
    assert output_fps_problem("gif", 48) is None
    assert output_fps_problem("mp4", 120) is None


def test_minterpolate_moves_the_square_halfway_and_keeps_source_frames_exact() -> None:
    frames = moving_square(num_frames=6, step=4)
    in_between = minterpolate(frames, fps=8, factor=2)
    assert sorted(in_between) == [slot.index for slot in in_between_slots(6, 2)]
    out = assemble(frames, 2, in_between)
    assert out.shape == (12, 64, 64, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[2 * i], frames[i]) for i in range(6))  # sources bit for bit
    assert np.array_equal(out[11], frames[5])  # the held last frame
    for i in range(5):  # motion-compensated: the square sits between its neighbours, not blended in place
        middle = square_center_x(out[2 * i + 1])
        assert square_center_x(frames[i]) + 1 <= middle <= square_center_x(frames[i + 1]) - 1
