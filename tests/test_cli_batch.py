"""``stillmotion generate --batch``: a JSONL file or a folder of images, each entry its own video."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stillmotion.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seaside.jpg"
SHARED = ["--model", "tiny-i2vgen-xl", "--device", "cpu", "--num-frames", "8", "--num-inference-steps", "1"]
SMALL = ["--height", "64", "--width", "64"]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STILLMOTION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STILLMOTION_OFFLINE", "1")
    monkeypatch.setenv("STILLMOTION_MODELS_DIR", str(tmp_path / "empty-hub-cache"))


def test_a_folder_of_images_makes_one_video_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("b.jpg", "a.jpg"):
        shutil.copy(EXAMPLE, images / name)
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "videos"
    code = main(
        ["generate", "--batch", str(images), "--prompt", "waves", *SHARED, *SMALL, "--output", str(out)]
    )
    assert code == 0
    assert capsys.readouterr().out.split() == [str(out / "001-a.mp4"), str(out / "002-b.mp4")]
    assert json.loads((out / "002-b.mp4.json").read_text())["prompt"] == "waves"


def test_a_bad_entry_stops_the_batch_before_any_video(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "batch.jsonl"
    lines = [{"prompt": "waves"}, {"prompt": "rain"}, {"prompt": "snow", "seed": -1}]
    batch.write_text("\n".join(json.dumps(line) for line in lines))
    out = tmp_path / "videos"
    code = main(
        ["generate", "--batch", str(batch), "--image", str(EXAMPLE), *SHARED, *SMALL, "--output", str(out)]
    )
    assert code == 2
    assert "batch line 3: seed=-1 is out of range" in capsys.readouterr().err
    assert not out.exists()


def test_one_failing_entry_does_not_stop_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(EXAMPLE, tmp_path / "photo.jpg")
    batch = tmp_path / "batch.jsonl"
    lines = [
        {
            "image": "photo.jpg",
            "prompt": "waves",
            "interpolate": 2,
            "interpolator": "rife",
            "output": "rife.mp4",
        },
        {"image": "photo.jpg", "prompt": "waves", "interpolate": 2, "output": "ffmpeg.mp4"},
    ]
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "videos"
    code = main(["generate", "--batch", str(batch), *SHARED, *SMALL, "--output", str(out), "--json"])
    assert code == 1  # one failed
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["ok"] is False and first["error"]["code"] == "model_unavailable"  # offline, no RIFE weights
    assert second["ok"] is True and Path(second["video_path"]) == out / "ffmpeg.mp4"
    assert sorted(p.name for p in out.iterdir()) == ["ffmpeg.mp4", "ffmpeg.mp4.json"]


def _write_batch(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (
            [{"output": "same.mp4"}, {"output": "same.mp4"}],
            "batch line 2: output='same.mp4' is also line 1's",
        ),
        (
            [{"output": "Clip.mp4"}, {"output": "clip.mp4"}],
            "batch line 2: output='clip.mp4' is also line 1's",
        ),
        ([{}, {"output": "001-seaside.mp4"}], "batch line 2: output='001-seaside.mp4' is also line 1's"),
    ],
    ids=["same name", "same name but for case", "a default name"],
)
def test_two_entries_writing_one_file_stop_the_batch_before_any_video(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[dict[str, object]], words: str
) -> None:
    batch = _write_batch(tmp_path / "batch.jsonl", [{"prompt": "waves", **line} for line in lines])
    out = tmp_path / "videos"
    code = main(
        ["generate", "--batch", str(batch), "--image", str(EXAMPLE), *SHARED, *SMALL, "--output", str(out)]
    )
    assert code == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_variations_of_an_entry_with_an_output_get_distinct_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = _write_batch(tmp_path / "batch.jsonl", [{"prompt": "waves", "output": "clip.gif"}])
    out = tmp_path / "videos"
    code = main(
        ["generate", "--batch", str(batch), "--image", str(EXAMPLE), *SHARED, *SMALL]
        + ["--seed", "5", "--variations", "3", "--output", str(out)]
    )
    assert code == 0
    names = ["clip-1.gif", "clip-2.gif", "clip-3.gif"]
    assert capsys.readouterr().out.split() == [str(out / name) for name in names]
    assert [json.loads((out / f"{name}.json").read_text())["seed"] for name in names] == [5, 6, 7]


def test_an_entry_whose_format_cannot_play_its_fps_stops_the_batch_before_any_video(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIF plays at most 50 fps: the second entry (30 fps made 60 by 2x) is refused before the first runs."""
    fast = {"prompt": "rain", "output": "fast.gif", "fps": 30, "interpolate": 2}
    batch = _write_batch(tmp_path / "batch.jsonl", [{"prompt": "waves", "output": "fine.gif"}, fast])
    out = tmp_path / "videos"
    code = main(
        ["generate", "--batch", str(batch), "--image", str(EXAMPLE), *SHARED, *SMALL, "--output", str(out)]
    )
    assert code == 2
    assert "batch line 2: fps=60" in capsys.readouterr().err
    assert not out.exists()
