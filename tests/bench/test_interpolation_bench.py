"""The interpolation benchmark runs the engine's post-step and prints one JSON row per interpolator."""

from __future__ import annotations

import json

import pytest

from stillmotion.bench.interpolation import main, panning_clip


def test_it_prints_a_row_per_interpolator_with_exact_frame_counts(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--height", "64", "--width", "64", "--num-frames", "4", "--factor", "3", "--repeats", "1"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["interpolator"] for row in rows] == ["minterpolate", "rife"]
    for row in rows:
        assert (row["frames_in"], row["frames_out"], row["in_between_frames"]) == (4, 12, 8)
        assert row["median_s"] > 0 and row["plan"]["device_type"] == "cpu"


def test_the_clip_pans_across_the_photo() -> None:
    clip = panning_clip(32, 48, 3)
    assert clip.shape == (3, 32, 48, 3)
    assert (clip[1, :, :-6] == clip[0, :, 6:]).all()  # each frame the previous one moved 6 px left
