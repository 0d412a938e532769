"""Frame checks: NaN is an error; black and frozen clips are flagged; ordinary video is not."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from stillmotion.errors import BadOutput
from stillmotion.media.checks import (
    BLACK_MAX_MEAN_LUMA,
    FROZEN_MAX_MEAN_DIFF,
    check_frames,
    to_uint8,
)


def random_video(num_frames: int = 8, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).random((num_frames, 32, 48, 3), dtype=np.float32)


def test_ordinary_video_is_not_flagged() -> None:
    report = check_frames(random_video())
    assert report.warnings == ()
    assert report.mean_brightness == pytest.approx(0.5, abs=0.02)
    assert report.mean_motion == pytest.approx(1 / 3, abs=0.02)  # E|U1 - U2| for independent uniforms


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_anywhere_raises(bad: float) -> None:
    frames = random_video()
    frames[5, 3, 7, 1] = bad
    with pytest.raises(BadOutput) as caught:
        check_frames(frames)
    assert caught.value.code == "nan_output"
    assert "frame 5" in caught.value.message


def test_all_black_is_flagged() -> None:
    # Dark noise with a mean luma of 90% of the threshold: it moves, but a viewer sees black.
    frames = random_video() * (BLACK_MAX_MEAN_LUMA * 1.8)
    report = check_frames(frames)
    assert report.warnings == ("black",)
    assert report.mean_brightness < BLACK_MAX_MEAN_LUMA


def test_zeros_are_black_and_frozen() -> None:
    assert check_frames(np.zeros((4, 16, 16, 3), dtype=np.float32)).warnings == ("black", "frozen")


def test_dark_scene_with_highlights_is_not_black() -> None:
    frames = random_video() * 0.01
    frames[:, :8, :8, :] = 1.0  # a lit window in a night scene
    assert "black" not in check_frames(frames).warnings


def test_one_bright_frame_means_not_black() -> None:
    frames = np.zeros((4, 16, 16, 3), dtype=np.float32)
    frames[2] = 0.5
    assert "black" not in check_frames(frames).warnings


def test_identical_frames_are_frozen() -> None:
    frames = np.repeat(random_video(1), 8, axis=0)
    report = check_frames(frames)
    assert report.warnings == ("frozen",)
    assert report.mean_motion == 0.0


def test_sub_quantization_jitter_is_still_frozen() -> None:
    rng = np.random.default_rng(1)
    frames = np.repeat(random_video(1), 8, axis=0) + rng.uniform(-0.4, 0.4, (8, 32, 48, 3)) / 255
    assert check_frames(frames.astype(np.float32)).warnings == ("frozen",)


def test_one_moving_pair_means_not_frozen() -> None:
    frames = np.repeat(random_video(1), 8, axis=0)
    frames[4:] = random_video(1, seed=2)
    report = check_frames(frames)
    assert "frozen" not in report.warnings
    assert report.mean_motion > FROZEN_MAX_MEAN_DIFF


def test_single_frame_is_never_frozen() -> None:
    report = check_frames(random_video(1))
    assert report.warnings == ()
    assert report.mean_motion == 0.0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtypes_are_accepted(dtype: type[np.floating[npt.NBitBase]]) -> None:
    assert check_frames(random_video().astype(dtype)).warnings == ()


@pytest.mark.parametrize("shape", [(8, 32, 48), (8, 32, 48, 4), (0, 32, 48, 3)])
def test_wrong_shape_is_a_value_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        check_frames(np.zeros(shape, dtype=np.float32))


def test_to_uint8_rounds_and_clips() -> None:
    levels = np.arange(256, dtype=np.float64) / 255
    frames = np.broadcast_to(levels[None, None, :, None], (1, 1, 256, 3)).astype(np.float32)
    assert to_uint8(frames)[0, 0, :, 0].tolist() == list(range(256))  # k/255 -> k exactly

    values = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 254.6 / 255, 1.0, 1.5], dtype=np.float32)
    frames = np.broadcast_to(values[None, None, :, None], (1, 1, 7, 3))
    out = to_uint8(frames)
    assert out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 0, 1, 255, 255, 255]


def test_to_uint8_refuses_nan() -> None:
    frames = random_video(2)
    frames[1, 0, 0, 0] = np.nan
    with pytest.raises(BadOutput) as caught:
        to_uint8(frames)
    assert caught.value.code == "nan_output"
