"""A poster frame (the first frame, small) for a finished video: what the history shows for each job.

Made on first request and kept beside the video, written atomically (temp file, rename), so a reader sees a
whole JPEG or none. A video that cannot be read gives no poster, never an error: it is a convenience.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import av
from PIL import Image

logger = logging.getLogger(__name__)

POSTER_SIDE = 64  # the longer side, in pixels: a thumbnail in a table row
JPEG_QUALITY = 85


def poster_path(video: Path) -> Path:
    return video.with_name(video.name + ".poster.jpg")


def ensure_poster(video: Path) -> Path | None:
    """The poster of ``video`` (made now if missing); None when the video is gone or unreadable."""
    target = poster_path(video)
    if target.is_file():
        return target
    try:
        with av.open(str(video)) as container:
            frame = next(container.decode(video=0))
            image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]
    except (OSError, StopIteration, av.FFmpegError) as exc:
        logger.warning("no poster for %s: %s", video.name, exc)
        return None
    image.thumbnail((POSTER_SIDE, POSTER_SIDE))
    handle, tmp_name = tempfile.mkstemp(dir=video.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
        os.replace(tmp_name, target)
    except OSError as exc:
        logger.warning("could not write the poster of %s: %s", video.name, exc)
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return target
