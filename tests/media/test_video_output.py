"""Video writing: what browsers need from the MP4, the recipe inside every format, and atomic writes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from stillmotion.errors import InvalidRequest, OutputWriteFailed
from stillmotion.media import video_output
from stillmotion.media.video_output import (
    VIDEO_FORMATS,
    format_for_path,
    read_metadata,
    sidecar_path_for,
    write_video,
)

RECIPE: dict[str, Any] = {
    "prompt": 'a cat on a "windy" hill, café, 猫 ' + "long " * 4000,  # non-ASCII, quotes, ~20 KB
    "seed": 1234,
    "model": "i2vgen-xl",
    "plan": {"strategy": "group_offload", "vae_tiling": False},
    "guidance_scale": 9.0,
}


def random_frames(
    num_frames: int = 8, height: int = 64, width: int = 96, seed: int = 0
) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def solid_frames(
    colours: list[tuple[int, int, int]], height: int = 64, width: int = 64
) -> npt.NDArray[np.uint8]:
    frames = np.empty((len(colours), height, width, 3), dtype=np.uint8)
    for frame, colour in zip(frames, colours, strict=True):
        frame[...] = colour
    return frames


def folder_listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- MP4 ------------------------------------------------------------------------------------------


def test_mp4_is_browser_playable_h264(tmp_path: Path) -> None:
    video = write_video(random_frames(12, 64, 96), tmp_path / "out.mp4", fps=8, metadata=RECIPE)
    assert (video.format, video.num_frames, video.width, video.height, video.fps) == ("mp4", 12, 96, 64, 8)
    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (96, 64)
        assert stream.average_rate == 8
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(decoded) == 12
    assert decoded[0].shape == (64, 96, 3)
    # +faststart: the index (moov) precedes the media data, so playback starts before the download ends.
    data = video.path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_mp4_colours_survive_the_round_trip(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (255, 255, 255), (0, 0, 0)]
    video = write_video(solid_frames(colours), tmp_path / "colours.mp4", fps=8, metadata={})
    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.colorspace == 1  # tagged BT.709, so players don't guess
        centres = [frame.to_ndarray(format="rgb24")[32, 32] for frame in container.decode(stream)]
    for actual, expected in zip(centres, colours, strict=True):
        assert np.abs(actual.astype(int) - np.array(expected)).max() <= 6, (actual, expected)


@pytest.mark.parametrize("size", [(63, 64), (64, 63)])
def test_mp4_rejects_odd_sizes_and_writes_nothing(tmp_path: Path, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(random_frames(2, *size), tmp_path / "odd.mp4", fps=8, metadata={})
    assert folder_listing(tmp_path) == []


def test_odd_sizes_are_fine_for_gif_and_webp(tmp_path: Path) -> None:
    for fmt in ("gif", "webp"):
        video = write_video(random_frames(2, 63, 65), tmp_path / f"odd.{fmt}", fps=8, metadata={})
        with Image.open(video.path) as image:
            assert image.size == (65, 63)


# --- the recipe inside every format, and the sidecar ----------------------------------------------


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
def test_metadata_round_trips_through_the_video_file(tmp_path: Path, fmt: str) -> None:
    video = write_video(random_frames(), tmp_path / f"clip.{fmt}", fps=8, metadata=RECIPE)
    video.sidecar_path.unlink()  # proves the recipe comes from the video, not the sidecar
    assert read_metadata(video.path) == RECIPE


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
def test_sidecar_holds_the_recipe_and_the_videos_checksum(tmp_path: Path, fmt: str) -> None:
    video = write_video(random_frames(), tmp_path / f"clip.{fmt}", fps=8, metadata=RECIPE)
    assert video.sidecar_path == tmp_path / f"clip.{fmt}.json"
    data = video.path.read_bytes()
    assert video.sha256 == hashlib.sha256(data).hexdigest()
    assert video.size_bytes == len(data) == video.path.stat().st_size
    sidecar = json.loads(video.sidecar_path.read_text(encoding="utf-8"))
    assert sidecar == {**RECIPE, "sha256": video.sha256, "size_bytes": video.size_bytes}
    assert folder_listing(tmp_path) == [f"clip.{fmt}", f"clip.{fmt}.json"]


def test_gif_loops_forever_with_timing_from_fps(tmp_path: Path) -> None:
    video = write_video(random_frames(8), tmp_path / "clip.gif", fps=8, metadata={})
    with Image.open(video.path) as image:
        assert image.info["loop"] == 0
        assert getattr(image, "n_frames", 1) == 8
        durations = []
        for index in range(8):
            image.seek(index)
            durations.append(image.info["duration"])
    assert sum(durations) == 1000  # 8 frames at 8 fps: one second, though GIF counts in 10 ms steps
    assert set(durations) <= {120, 130}


def test_webp_is_animated_and_loops_forever(tmp_path: Path) -> None:
    video = write_video(random_frames(8), tmp_path / "clip.webp", fps=16, metadata={})
    with Image.open(video.path) as image:
        assert getattr(image, "is_animated", False)
        assert getattr(image, "n_frames", 1) == 8
        assert image.info["loop"] == 0
        durations = []
        for index in range(8):
            image.seek(index)
            image.load()  # WebP fills in a frame's timing when it is decoded
            durations.append(image.info["duration"])
    assert sum(durations) == 500  # 8 frames at 16 fps
    assert set(durations) <= {62, 63}


def test_parent_folders_are_created(tmp_path: Path) -> None:
    video = write_video(random_frames(2), tmp_path / "jobs" / "abc" / "video.mp4", fps=8, metadata={})
    assert video.path.is_file()


def test_final_file_gets_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        video = write_video(random_frames(2), tmp_path / "clip.mp4", fps=8, metadata={})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(video.path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE(video.sidecar_path.stat().st_mode) == 0o644


def test_read_metadata_without_a_recipe_is_an_input_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain.gif"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(InvalidRequest) as caught:
        read_metadata(plain)
    assert caught.value.code == "no_metadata"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(InvalidRequest) as caught:
        read_metadata(broken)
    assert caught.value.code == "no_metadata"


# --- paths and arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [("a.mp4", "mp4"), ("a.GIF", "gif"), ("dir.x/a.WebP", "webp")])
def test_format_for_path(name: str, fmt: str) -> None:
    assert format_for_path(Path(name)) == fmt


@pytest.mark.parametrize("name", ["a.avi", "a.mov", "a", "a.mp4.json", "a.png"])
def test_format_for_path_rejects_other_suffixes(name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        format_for_path(Path(name))
    assert caught.value.field == "output"
    assert ".mp4, .gif, .webp" in caught.value.message


def test_sidecar_path_for() -> None:
    assert sidecar_path_for(Path("out/out.mp4")) == Path("out/out.mp4.json")


@pytest.mark.parametrize(
    ("frames", "fps", "metadata", "match"),
    [
        (random_frames().astype(np.float32), 8, {}, "uint8"),
        (random_frames()[..., :2], 8, {}, "shape"),
        (random_frames()[:0], 8, {}, "shape"),
        (random_frames(), 0, {}, "fps"),
        (random_frames(), 8.0, {}, "fps"),
        (random_frames(), 8, {"guidance_scale": float("nan")}, "JSON"),
        (random_frames(), 8, {"when": object()}, "JSON"),
    ],
)
def test_bad_arguments_raise_before_writing(
    tmp_path: Path, frames: Any, fps: Any, metadata: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        write_video(frames, tmp_path / "clip.mp4", fps=fps, metadata=metadata)
    assert folder_listing(tmp_path) == []


def test_gif_refuses_more_fps_than_browsers_play(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="50 fps"):
        write_video(random_frames(2), tmp_path / "fast.gif", fps=60, metadata={})


# --- atomic writes and failures (RELIABILITY.md F9, I3) -------------------------------------------


def raise_errno(code: int) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
@pytest.mark.parametrize(
    ("code", "expected"),
    [(errno.ENOSPC, "disk_full"), (errno.EDQUOT, "disk_full"), (errno.EIO, "output_write_failed")],
)
def test_failed_fsync_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, code: int, expected: str
) -> None:
    monkeypatch.setattr(os, "fsync", raise_errno(code))
    target = tmp_path / f"clip.{fmt}"
    with pytest.raises(OutputWriteFailed) as caught:
        write_video(random_frames(), target, fps=8, metadata=RECIPE)
    assert caught.value.code == expected
    assert caught.value.http_status == (507 if expected == "disk_full" else 500)
    assert str(target) in caught.value.message
    assert folder_listing(tmp_path) == []  # no video, no sidecar, no .tmp


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_disk_full_midway_through_encoding_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    def half_written(self: Image.Image, fp: Any, *args: object, **kwargs: object) -> None:
        fp.write(b"GIF89a partial frames")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(OutputWriteFailed) as caught:
        write_video(random_frames(), tmp_path / f"clip.{fmt}", fps=8, metadata={})
    assert caught.value.code == "disk_full"
    assert folder_listing(tmp_path) == []


def test_disk_full_inside_the_mp4_encoder_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_encode = video_output._encode_mp4

    def encode_then_fail(frames: npt.NDArray[np.uint8], path: Path, fps: int, recipe: str) -> None:
        real_encode(frames, path, fps, recipe)
        assert path.name.startswith(".clip.mp4.") and path.suffix == ".tmp"
        assert path.stat().st_size > 0
        raise av.error.OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video_output, "_encode_mp4", encode_then_fail)
    with pytest.raises(OutputWriteFailed) as caught:
        write_video(random_frames(), tmp_path / "clip.mp4", fps=8, metadata={})
    assert caught.value.code == "disk_full"
    assert folder_listing(tmp_path) == []


def test_sidecar_failure_removes_the_video_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_output, "_write_synced", raise_errno(errno.ENOSPC))
    with pytest.raises(OutputWriteFailed) as caught:
        write_video(random_frames(), tmp_path / "clip.mp4", fps=8, metadata={})
    assert caught.value.code == "disk_full"
    assert folder_listing(tmp_path) == []


def test_failed_rename_of_the_sidecar_leaves_nothing_at_the_final_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    renames: list[tuple[str, str]] = []

    def replace_once(src: Any, dst: Any) -> None:
        renames.append((os.fspath(src), os.fspath(dst)))
        if len(renames) == 2:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_once)
    with pytest.raises(OutputWriteFailed) as caught:
        write_video(random_frames(), tmp_path / "clip.mp4", fps=8, metadata={})
    assert caught.value.code == "output_write_failed"
    assert folder_listing(tmp_path) == []
    # Both were written as hidden temp files in the destination folder, video first.
    for (src, dst), final in zip(renames, ["clip.mp4", "clip.mp4.json"], strict=True):
        assert Path(src).parent == tmp_path
        assert Path(src).name.startswith(".") and src.endswith(".tmp")
        assert Path(dst) == tmp_path / final


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsync'd descriptors")
def test_temp_files_are_synced_before_the_renames_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync, real_replace = os.fsync, os.replace
    events: list[tuple[str, str]] = []

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def recording_replace(src: Any, dst: Any) -> None:
        events.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    write_video(random_frames(2), tmp_path / "clip.mp4", fps=8, metadata={})

    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "fsync", "replace", "replace", "fsync"]
    video_tmp, sidecar_tmp, folder = events[0][1], events[1][1], events[4][1]
    assert Path(video_tmp).name.startswith(".clip.mp4.") and video_tmp.endswith(".tmp")
    assert Path(sidecar_tmp).name.startswith(".clip.mp4.json.") and sidecar_tmp.endswith(".tmp")
    assert [dst for kind, dst in events if kind == "replace"] == [
        str(tmp_path / "clip.mp4"),
        str(tmp_path / "clip.mp4.json"),
    ]
    assert Path(folder) == tmp_path


def test_failed_overwrite_keeps_the_existing_output_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "clip.mp4"
    first = write_video(random_frames(seed=1), target, fps=8, metadata={"seed": 1})
    video_before, sidecar_before = target.read_bytes(), first.sidecar_path.read_bytes()

    monkeypatch.setattr(os, "fsync", raise_errno(errno.ENOSPC))
    with pytest.raises(OutputWriteFailed):
        write_video(random_frames(seed=2), target, fps=8, metadata={"seed": 2})

    assert target.read_bytes() == video_before
    assert first.sidecar_path.read_bytes() == sidecar_before
    assert read_metadata(target) == {"seed": 1}
    assert folder_listing(tmp_path) == ["clip.mp4", "clip.mp4.json"]


def test_successful_overwrite_replaces_both_files(tmp_path: Path) -> None:
    target = tmp_path / "clip.webp"
    write_video(random_frames(seed=1), target, fps=8, metadata={"seed": 1})
    second = write_video(random_frames(seed=2), target, fps=8, metadata={"seed": 2})
    assert read_metadata(target) == {"seed": 2}
    assert (
        json.loads(second.sidecar_path.read_text())["sha256"]
        == hashlib.sha256(target.read_bytes()).hexdigest()
    )


def test_interrupt_cleans_up_and_is_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(video_output, "_hash_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_video(random_frames(), tmp_path / "clip.gif", fps=8, metadata={})
    assert folder_listing(tmp_path) == []


def test_unwritable_folder_is_output_write_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OutputWriteFailed) as caught:
        write_video(random_frames(2), blocker / "clip.mp4", fps=8, metadata={})
    assert caught.value.code == "output_write_failed"
    assert folder_listing(tmp_path) == ["file"]
