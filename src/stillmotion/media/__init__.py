"""Media in and out: decode and validate input images, check generated frames, write videos.

Start with ``image_input.load_image_bytes()`` (uploads), ``checks.check_frames()`` (NaN, black, frozen)
and ``video_output.write_video()`` (atomic MP4/GIF/WebP with the recipe inside). docs/media.md lists the
accepted formats, limits and error codes.
"""

from stillmotion.media.checks import FrameReport, check_frames, to_uint8
from stillmotion.media.image_input import (
    DEFAULT_LIMITS,
    ImageLimits,
    InputImage,
    load_image_bytes,
    load_image_file,
    sniff_format,
)
from stillmotion.media.video_output import (
    VIDEO_FORMATS,
    VideoFile,
    format_for_path,
    read_metadata,
    sidecar_path_for,
    write_video,
)

__all__ = [
    "DEFAULT_LIMITS",
    "VIDEO_FORMATS",
    "FrameReport",
    "ImageLimits",
    "InputImage",
    "VideoFile",
    "check_frames",
    "format_for_path",
    "load_image_bytes",
    "load_image_file",
    "read_metadata",
    "sidecar_path_for",
    "sniff_format",
    "to_uint8",
    "write_video",
]
