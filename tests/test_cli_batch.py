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
