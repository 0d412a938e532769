"""Decode and validate an uploaded still image: the only way an image enters stillmotion.

``load_image_bytes()`` (or ``load_image_file()``) either returns a fully decoded RGB ``InputImage`` or
raises ``InvalidImage`` with a stable ``code``; nothing is ever half-decoded. The checks run cheapest
first: byte size, magic bytes, the header's dimensions and frame count (before a single pixel is
decoded), the decode itself, EXIF orientation, and the conversion to 8-bit RGB. docs/media.md lists the
rules and codes.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import struct
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from stillmotion.errors import InvalidImage

FIELD = "image"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_PILLOW_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# Pillow's exception messages are sometimes long (or embed object reprs); a user needs only the gist.
_MAX_REASON_CHARS = 160

# warnings.catch_warnings() swaps the process-wide filter list. Two of our threads doing it at once can
# restore each other's filters and leave DecompressionBombWarning an error for the whole process, so
# every catch_warnings() in this module holds this lock.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageLimits:
    """What an input image must satisfy; the defaults are what the API and CLI accept."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096  # decided from the header, before decoding
    min_side: int = 64
    max_aspect_ratio: float = 4.0  # long side / short side
    background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are composited on this

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.min_side < 1:
            raise ValueError(f"ImageLimits: max_bytes, max_pixels and min_side must be >= 1, got {self}")
        if not self.max_aspect_ratio >= 1.0:
            raise ValueError(f"ImageLimits: max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"ImageLimits: background must be three values in 0..255, got {self.background}")


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class InputImage:
    """A decoded, validated input image and what was done to it."""

    image: Image.Image  # RGB, EXIF orientation applied, fully loaded, metadata stripped
    sha256: str  # of the original bytes
    format: str  # "png" | "jpeg" | "webp"
    width: int  # after orientation
    height: int
    source_mode: str  # Pillow mode as decoded, e.g. "RGBA", "CMYK", "I;16", "P"
    notes: tuple[str, ...]  # conversions made, e.g. "alpha composited on #ffffff"


def sniff_format(head: bytes) -> str | None:
    """The format named by the magic bytes at the start of a file: "png", "jpeg", "webp", or None."""
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_JPEG_SOI):
        return "jpeg"
    # RIFF container: b"RIFF", 4-byte little-endian size, then the form type.
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def load_image_file(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> InputImage:
    """Read and validate an image file; the size on disk is checked before anything is read."""
    shown = os.fspath(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidImage(
                f"image={shown!r}: not a regular file", code="file_unreadable", field=FIELD, http_status=422
            )
        if info.st_size > limits.max_bytes:
            raise _too_many_bytes(info.st_size, limits)
        with open(path, "rb") as f:
            # Read one byte past the limit so a file that grew since stat() is still caught.
            data = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise InvalidImage(
            f"image={shown!r}: cannot read the file ({exc.strerror or exc})",
            code="file_unreadable",
            field=FIELD,
            http_status=422,
        ) from exc
    return load_image_bytes(data, limits)


def load_image_bytes(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> InputImage:
    """Validate and fully decode an uploaded image, or raise ``InvalidImage`` saying which rule it breaks."""
    # 1. From the bytes alone: empty, too big, not one of our formats.
    if not data:
        raise InvalidImage(
            "image: the file is empty (0 bytes)", code="empty_file", field=FIELD, http_status=422
        )
    if len(data) > limits.max_bytes:
        raise _too_many_bytes(len(data), limits)
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise InvalidImage(
            f"image: unsupported format (the file starts with {data[:8]!r}); "
            "only PNG, JPEG and WebP are accepted, judged by content, not by name or content type",
            code="unsupported_format",
            field=FIELD,
            http_status=415,
        )

    # 2. From the header: frame count and dimensions, before any pixel is decoded.
    image = _open_header(data, fmt, limits)
    try:
        _check_header(image, fmt, limits)

        # 3. Decode every pixel now, so a truncated file fails here and not later in the engine.
        try:
            image.load()
        except MemoryError:
            raise  # the machine is short of memory; the file may be fine
        except Exception as exc:  # Pillow raises many unrelated types on bad data; all mean "unusable".
            raise _decode_error(data, fmt, exc) from exc
        source_mode = image.mode

        # 4. Orientation and colour: upright 8-bit RGB with no metadata left.
        upright, orientation_notes = _apply_exif_orientation(image)
        try:
            rgb, colour_notes = convert_to_rgb(upright, limits.background)
        except (ValueError, OSError) as exc:
            raise InvalidImage(
                f"image: colour mode {source_mode!r} cannot be converted to RGB ({_reason(exc)})",
                code="image_corrupt",
                field=FIELD,
                http_status=422,
            ) from exc
    finally:
        image.close()
    rgb.info.clear()
    return InputImage(
        image=rgb,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        width=rgb.width,
        height=rgb.height,
        source_mode=source_mode,
        notes=orientation_notes + colour_notes,
    )


def convert_to_rgb(
    image: Image.Image, background: tuple[int, int, int]
) -> tuple[Image.Image, tuple[str, ...]]:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on ``background``.

    Returns the RGB image (``image`` itself when it was RGB already) and a note per conversion made.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image, ()
    if mode in _SIXTEEN_BIT_GREY_MODES:
        return _sixteen_bit_grey_to_rgb(image, background)
    if mode == "F":
        # Float images have no agreed range; like Pillow's own convert("L"), treat them as 0..255.
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB"), ("32-bit float greyscale clipped to 0..255",)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha_min, _ = rgba.getchannel("A").getextrema()
        if alpha_min == 255:
            return rgba.convert("RGB"), (f"opaque {mode} converted to RGB",)
        composited = Image.new("RGBA", rgba.size, (*background, 255))
        composited.alpha_composite(rgba)
        return composited.convert("RGB"), (f"{mode} alpha composited on {_hex(background)}",)
    if mode == "CMYK":
        # Pillow's JPEG decoder already undoes Adobe's inverted CMYK; this is the plain CMYK -> RGB formula
        # (no ICC colour management).
        return image.convert("RGB"), ("CMYK converted to RGB",)
    return image.convert("RGB"), (f"{mode} converted to RGB",)


def _sixteen_bit_grey_to_rgb(
    image: Image.Image, background: tuple[int, int, int]
) -> tuple[Image.Image, tuple[str, ...]]:
    """Scale 16-bit greyscale (and "I", read as 16-bit) to 8 bits so 65535 -> 255 instead of clipping."""
    # np.asarray honours the byte order of I;16B; int64 leaves room for "I" values outside 0..65535.
    values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    grey: npt.NDArray[np.uint8] = ((values * 255 + 32767) // 65535).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    notes = [f"16-bit greyscale ({image.mode}) scaled to 8-bit"]
    key = image.info.get("transparency")
    if isinstance(key, int):
        # A PNG tRNS chunk on greyscale names one grey value as fully transparent.
        rgb[values == key] = background
        notes.append(f"transparent grey value composited on {_hex(background)}")
    return Image.fromarray(rgb), tuple(notes)


def _open_header(data: bytes, fmt: str, limits: ImageLimits) -> Image.Image:
    """Image.open() reads only the header; Pillow's decompression-bomb warning becomes an error here."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        # Other header warnings (e.g. "Corrupt EXIF data" while a JPEG is opened) are not our verdict;
        # the EXIF step below decides about those.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[fmt]])
        except MemoryError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidImage(
                f"image: too many pixels ({_reason(exc)}); the limit is {_pixel_limit(limits)}",
                code="image_too_large",
                field=FIELD,
                http_status=422,
            ) from exc
        except Exception as exc:  # any parser failure on the header: truncated or corrupt, never a 500
            raise _decode_error(data, fmt, exc) from exc


def _check_header(image: Image.Image, fmt: str, limits: ImageLimits) -> None:
    """Reject animations and bad dimensions using only what the header declares."""
    # JPEG is left out on purpose: multi-picture JPEGs (MPO, e.g. with a depth map) are still photos.
    if fmt in ("png", "webp") and getattr(image, "is_animated", False):
        frames = getattr(image, "n_frames", "several")
        raise InvalidImage(
            f"image: animated {fmt.upper()} ({frames} frames) is not supported; upload a still image",
            code="animated_not_supported",
            field=FIELD,
            http_status=422,
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidImage(
            f"image: {width}x{height} = {width * height:,} pixels "
            f"is over the limit of {_pixel_limit(limits)}",
            code="image_too_large",
            field=FIELD,
            http_status=422,
        )
    # Aspect ratio before the minimum side, so a 10000x16 strip is reported for its shape.
    long_side, short_side = max(width, height), min(width, height)
    if short_side == 0 or long_side / short_side > limits.max_aspect_ratio:
        ratio = f"{long_side / short_side:.1f}:1" if short_side else "infinite"
        raise InvalidImage(
            f"image: {width}x{height} has an aspect ratio of {ratio}; "
            f"the long side may be at most {limits.max_aspect_ratio:g} times the short side",
            code="bad_aspect_ratio",
            field=FIELD,
            http_status=422,
        )
    if short_side < limits.min_side:
        raise InvalidImage(
            f"image: {width}x{height} is too small; each side must be at least {limits.min_side} pixels",
            code="image_too_small",
            field=FIELD,
            http_status=422,
        )


def _apply_exif_orientation(image: Image.Image) -> tuple[Image.Image, tuple[str, ...]]:
    """Turn the pixels upright per the EXIF orientation tag; unreadable EXIF is ignored, never fatal."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            orientation = image.getexif().get(ExifTags.Base.Orientation)
            upright = ImageOps.exif_transpose(image)
        except Exception:  # a corrupt EXIF block must not sink an otherwise good image
            return image.copy(), ("EXIF unreadable; orientation ignored",)
    notes: list[str] = []
    if caught:
        notes.append("EXIF partly unreadable; unreadable parts ignored")
    if isinstance(orientation, int) and 2 <= orientation <= 8:
        notes.append(f"EXIF orientation {orientation} applied")
    return upright, tuple(notes)


def _decode_error(data: bytes, fmt: str, exc: Exception) -> InvalidImage:
    """Tell a file that stops early (image_truncated) from one that is broken some other way."""
    if _is_truncated(data, fmt) or "image file is truncated" in str(exc):
        return InvalidImage(
            f"image: the {fmt.upper()} data ends early after {len(data):,} bytes; "
            "the file is truncated or incomplete (upload the whole file)",
            code="image_truncated",
            field=FIELD,
            http_status=422,
        )
    reason = "not a readable header" if isinstance(exc, UnidentifiedImageError) else _reason(exc)
    return InvalidImage(
        f"image: the {fmt.upper()} file is corrupt and cannot be decoded ({reason})",
        code="image_corrupt",
        field=FIELD,
        http_status=422,
    )


def _is_truncated(data: bytes, fmt: str) -> bool:
    """Whether the container structure says the file ends before its last part."""
    if fmt == "webp":
        # RIFF header: the little-endian size at offset 4 counts every byte after the first 8.
        if len(data) < 12:
            return True
        riff_size: int = struct.unpack_from("<I", data, 4)[0]
        return len(data) < 8 + riff_size
    if fmt == "png":
        # Walk the chunks (length, type, data, CRC); a complete file reaches IEND inside the data.
        pos = len(_PNG_SIGNATURE)
        while pos + 8 <= len(data):
            length: int = struct.unpack_from(">I", data, pos)[0]
            chunk_type = data[pos + 4 : pos + 8]
            pos += 12 + length
            if chunk_type == b"IEND":
                return pos > len(data)
        return True
    # JPEG: a complete file ends with the EOI marker (some writers pad with zeros after it).
    return not data.rstrip(b"\x00").endswith(_JPEG_EOI)


def _too_many_bytes(size: int, limits: ImageLimits) -> InvalidImage:
    return InvalidImage(
        f"image: {size:,} bytes ({size / 2**20:.1f} MiB) is over the upload limit of "
        f"{limits.max_bytes:,} bytes ({limits.max_bytes / 2**20:.1f} MiB)",
        code="file_too_large",
        field=FIELD,
        http_status=413,
    )


def _pixel_limit(limits: ImageLimits) -> str:
    side = math.isqrt(limits.max_pixels)
    square = f" (e.g. {side}x{side})" if side * side == limits.max_pixels else ""
    return f"{limits.max_pixels:,} pixels{square}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


__all__ = [
    "DEFAULT_LIMITS",
    "ImageLimits",
    "InputImage",
    "convert_to_rgb",
    "load_image_bytes",
    "load_image_file",
    "sniff_format",
]
