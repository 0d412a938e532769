"""Write generated frames as MP4 (H.264), GIF or WebP, atomically, with the generation recipe inside.

``write_video()`` is the only way a video reaches its final path. It encodes into a hidden temp file in
the same folder, fsyncs it, writes a JSON sidecar the same way, then renames both into place and fsyncs
the folder, so a reader sees either the old files or the complete new ones, never a partial file. On any
failure the temp files are removed and ``OutputWriteFailed`` (``disk_full`` or ``output_write_failed``)
is raised. The recipe (the metadata JSON) is stored inside the video too, and ``read_metadata()`` reads
it back from there: the MP4 ``comment`` tag, the GIF comment, the WebP EXIF ImageDescription.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc
from PIL import ExifTags, Image

from stillmotion.errors import InvalidRequest, OutputWriteFailed

VIDEO_FORMATS = ("mp4", "gif", "webp")

# Visually lossless for generated content at a few MB per clip; libx264's default (23) smears fine texture.
MP4_CRF = 18
WEBP_QUALITY = 90
# GIF stores frame delays in 1/100 s, and browsers play delays under 20 ms as 100 ms, so GIF can't go
# faster than 50 fps.
GIF_DELAY_STEP_MS = 10
GIF_MAX_FPS = 50

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_WEBP_RECIPE_TAG = ExifTags.Base.ImageDescription


@dataclass(frozen=True)
class VideoFile:
    """A video written by ``write_video()``, with its sidecar and what a job row records about it."""

    path: Path
    sidecar_path: Path
    format: str  # one of VIDEO_FORMATS
    sha256: str
    size_bytes: int
    num_frames: int
    width: int
    height: int
    fps: int


def format_for_path(path: Path) -> str:
    """The video format named by the path's suffix; raises ``InvalidRequest`` for anything else."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in VIDEO_FORMATS:
        raise InvalidRequest(
            f"output={str(path)!r}: unsupported video suffix {Path(path).suffix!r}; "
            f"use one of {', '.join('.' + f for f in VIDEO_FORMATS)}",
            field="output",
        )
    return fmt


def sidecar_path_for(path: Path) -> Path:
    """Where the JSON sidecar of a video lives: ``out.mp4`` -> ``out.mp4.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_video(
    frames: npt.NDArray[np.uint8], path: Path, fps: int, metadata: Mapping[str, Any]
) -> VideoFile:
    """Encode uint8 frames (F, H, W, 3) to ``path`` (format by suffix), atomically, with a JSON sidecar.

    Raises ValueError for frames, fps or metadata the encoders can't take (caller bugs), and
    ``OutputWriteFailed`` when writing fails; nothing is left at the final paths or in temp files then.
    """
    # 1. Check the arguments before touching the disk.
    path = Path(path)
    fmt = format_for_path(path)
    _check_frames(frames, fmt, fps)
    recipe = _recipe_json(metadata)
    sidecar = sidecar_path_for(path)

    temps: list[Path] = []
    placed: list[Path] = []
    try:
        # 2. Encode into a hidden temp file beside the final path, and fsync it.
        path.parent.mkdir(parents=True, exist_ok=True)
        video_tmp = _new_temp(path)
        temps.append(video_tmp)
        if fmt == "mp4":
            _encode_mp4(frames, video_tmp, fps, recipe)
        else:
            _encode_animation(frames, video_tmp, fmt, fps, recipe)
        _fsync_file(video_tmp)
        sha256, size_bytes = _hash_file(video_tmp)

        # 3. The sidecar: the same recipe plus the video's checksum, also via a synced temp file.
        sidecar_tmp = _new_temp(sidecar)
        temps.append(sidecar_tmp)
        sidecar_json = {**metadata, "sha256": sha256, "size_bytes": size_bytes}
        sidecar_bytes = (
            json.dumps(sidecar_json, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        ).encode()
        _write_synced(sidecar_tmp, sidecar_bytes)

        # 4. Rename into place (atomic on one filesystem), video first, then make the renames durable.
        os.replace(video_tmp, path)
        temps.remove(video_tmp)
        placed.append(path)
        os.replace(sidecar_tmp, sidecar)
        temps.remove(sidecar_tmp)
        placed.append(sidecar)
        _fsync_dir(path.parent)
    except BaseException as exc:
        # Cleanup also runs for KeyboardInterrupt and the like; only ordinary errors are translated.
        for leftover in temps + placed:
            _remove_quietly(leftover)
        if isinstance(exc, Exception):
            raise _write_error(path, exc) from exc
        raise

    num_frames, height, width, _ = frames.shape
    return VideoFile(
        path=path,
        sidecar_path=sidecar,
        format=fmt,
        sha256=sha256,
        size_bytes=size_bytes,
        num_frames=num_frames,
        width=width,
        height=height,
        fps=fps,
    )


def read_metadata(path: Path) -> dict[str, Any]:
    """The recipe stored inside the video file itself (not the sidecar); ``InvalidRequest`` if none."""
    path = Path(path)
    fmt = format_for_path(path)
    text: str | bytes | None
    try:
        if fmt == "mp4":
            with av.open(str(path), mode="r") as container:
                text = container.metadata.get("comment")
        else:
            with Image.open(path) as image:
                if fmt == "gif":
                    text = image.info.get("comment")
                else:
                    text = image.getexif().get(_WEBP_RECIPE_TAG)
        recipe = json.loads(text) if text else None
    except (OSError, ValueError, SyntaxError, av.FFmpegError) as exc:
        raise InvalidRequest(
            f"video={str(path)!r}: cannot read its stillmotion recipe ({exc})",
            code="no_metadata",
            field="video",
        ) from exc
    if not isinstance(recipe, dict):
        raise InvalidRequest(
            f"video={str(path)!r}: this {fmt} file carries no stillmotion recipe",
            code="no_metadata",
            field="video",
        )
    return recipe


def _check_frames(frames: npt.NDArray[np.uint8], fmt: str, fps: int) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be a uint8 numpy array, got {type(frames).__name__} {getattr(frames, 'dtype', '')}"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must have shape (F, H, W, 3) with F, H, W >= 1, got {frames.shape}")
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    _, height, width, _ = frames.shape
    if fmt == "mp4" and (width % 2 or height % 2):
        # yuv420p stores colour at half resolution, so H.264 in browsers needs even sides.
        raise ValueError(f"MP4 needs even width and height, got {width}x{height}")
    if fmt == "gif" and fps > GIF_MAX_FPS:
        raise ValueError(f"GIF plays at most {GIF_MAX_FPS} fps in browsers, got fps={fps}; use mp4 or webp")


def _recipe_json(metadata: Mapping[str, Any]) -> str:
    """Compact ASCII JSON: every container here stores ASCII text safely; non-ASCII becomes \\u escapes."""
    try:
        return json.dumps(dict(metadata), ensure_ascii=True, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serializable without NaN or infinity: {exc}") from exc


def _encode_mp4(frames: npt.NDArray[np.uint8], path: Path, fps: int, recipe: str) -> None:
    """H.264 yuv420p with BT.709 tags and the moov atom first, so browsers start playing at once."""
    _, height, width, _ = frames.shape
    # The temp name ends in .tmp, so the muxer is named explicitly.
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        container.metadata["comment"] = recipe
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(MP4_CRF)}
        # Convert with the BT.709 matrix and say so in the stream; untagged H.264 is guessed per player.
        codec = stream.codec_context
        codec.colorspace = int(Colorspace.ITU709)
        codec.color_primaries = int(ColorPrimaries.BT709)
        codec.color_trc = int(ColorTrc.BT709)
        codec.color_range = int(ColorRange.MPEG)
        for frame in frames:
            rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            yuv = rgb.reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
            )
            container.mux(stream.encode(yuv))
        container.mux(stream.encode(None))


def _encode_animation(frames: npt.NDArray[np.uint8], path: Path, fmt: str, fps: int, recipe: str) -> None:
    """GIF or animated WebP via Pillow, looping forever.

    Both encoders merge identical consecutive frames into one longer frame, so the file may hold fewer
    frames than given; the playing time is unchanged.
    """
    images = [Image.fromarray(np.ascontiguousarray(frame)) for frame in frames]
    options: dict[str, Any] = {"save_all": True, "append_images": images[1:], "loop": 0}
    if fmt == "gif":
        options |= {"duration": _frame_durations_ms(len(images), fps, GIF_DELAY_STEP_MS), "comment": recipe}
    else:
        exif = Image.Exif()
        exif[_WEBP_RECIPE_TAG] = recipe
        options |= {
            "duration": _frame_durations_ms(len(images), fps, 1),
            "exif": exif,
            "quality": WEBP_QUALITY,
        }
    with open(path, "wb") as f:
        images[0].save(f, format=fmt.upper(), **options)


def _frame_durations_ms(num_frames: int, fps: int, step_ms: int) -> list[int]:
    """Per-frame delays on the format's time grid whose sum stays on time (8 fps GIF: 120, 130, 120, ...)."""
    ends = [round(i * 1000 / fps / step_ms) * step_ms for i in range(num_frames + 1)]
    return [max(step_ms, b - a) for a, b in zip(ends, ends[1:], strict=False)]


def _new_temp(final: Path) -> Path:
    """Create ``.<name>.<random>.tmp`` beside ``final``; O_EXCL so two writers never share one."""
    while True:
        candidate = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 minus the umask: the final file gets the permissions of any normally created file.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    # The encoders open and close the file themselves, so sync it through a fresh descriptor.
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable; only POSIX can open a folder for fsync."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # the original error matters more than a failed cleanup


def _write_error(path: Path, exc: Exception) -> OutputWriteFailed:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if getattr(exc, "errno", None) in _DISK_FULL_ERRNOS:
        return OutputWriteFailed(
            f"output={str(path)!r}: the disk holding {str(path.parent)!r} is full ({reason}); "
            "nothing was written. Free some space and retry.",
            code="disk_full",
            field="output",
            http_status=507,
        )
    return OutputWriteFailed(
        f"output={str(path)!r}: cannot write the video ({type(exc).__name__}: {reason}); nothing was written",
        code="output_write_failed",
        field="output",
    )
