"""Input image validation: every rule of RELIABILITY.md 3.3 (B1-B13) with fixtures made here by Pillow."""

from __future__ import annotations

import hashlib
import io
import resource
import struct
import sys
import time
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile

from stillmotion.errors import InvalidImage
from stillmotion.media import image_input
from stillmotion.media.image_input import (
    ImageLimits,
    convert_to_rgb,
    load_image_bytes,
    load_image_file,
    sniff_format,
)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: compresses badly, so a cut at 50% really lands in the middle of the pixel data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR (and CRC) declaring width x height, and no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def rejected(data: bytes, limits: ImageLimits | None = None) -> InvalidImage:
    with pytest.raises(InvalidImage) as caught:
        load_image_bytes(data, limits or ImageLimits())
    assert caught.value.field == "image"
    return caught.value


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


# --- magic bytes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (encode(Image.new("RGB", (8, 8)), "PNG")[:16], "png"),
        (encode(Image.new("RGB", (8, 8)), "JPEG")[:16], "jpeg"),
        (encode(Image.new("RGB", (8, 8)), "WEBP")[:16], "webp"),
        (b"PK\x03\x04\x14\x00\x00\x00", None),  # ZIP
        (b"<!DOCTYPE html><html>", None),
        (b"GIF89a\x01\x00\x01\x00", None),
        (b"BM6\x00\x00\x00\x00\x00", None),
        (b"MZ\x90\x00\x03\x00\x00\x00", None),  # Windows EXE
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),  # RIFF, but audio
        (b"RIFF\x24\x00", None),
        (b"\x89PNG", None),
        (b"", None),
    ],
)
def test_sniff_format_reads_magic_bytes_only(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


# --- B1, B15: empty and oversized files -----------------------------------------------------------


def test_empty_file_is_rejected() -> None:
    error = rejected(b"")
    assert (error.code, error.http_status) == ("empty_file", 422)
    assert "0 bytes" in error.message


def test_file_over_max_bytes_is_413_and_states_the_limit() -> None:
    data = encode(noise(64, 64), "PNG")
    error = rejected(data, ImageLimits(max_bytes=len(data) - 1))
    assert (error.code, error.http_status) == ("file_too_large", 413)
    assert f"{len(data) - 1:,}" in error.message


def test_load_image_file_checks_size_on_disk_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:
        f.truncate(60 * 2**20)  # sparse: 60 MiB on paper, nothing written

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was opened although stat() already showed it is too large")

    monkeypatch.setattr(image_input, "open", no_reading, raising=False)
    with pytest.raises(InvalidImage) as caught:
        load_image_file(big)
    assert (caught.value.code, caught.value.http_status) == ("file_too_large", 413)


def test_load_image_file_reads_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    data = encode(noise(96, 64), "JPEG")
    path.write_bytes(data)
    result = load_image_file(path)
    assert (result.format, result.width, result.height) == ("jpeg", 96, 64)
    assert result.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("target", ["missing.png", "."])
def test_load_image_file_unreadable_path_is_an_input_error(tmp_path: Path, target: str) -> None:
    with pytest.raises(InvalidImage) as caught:
        load_image_file(tmp_path / target)
    assert (caught.value.code, caught.value.http_status) == ("file_unreadable", 422)


# --- B2: not an image we accept, whatever the name says -------------------------------------------


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.txt", "not an image")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        zip_bytes,
        lambda: b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
        lambda: b"MZ\x90\x00" + bytes(200),
        lambda: encode(noise(64, 64), "GIF"),
        lambda: encode(noise(64, 64), "BMP"),
        lambda: encode(noise(64, 64), "TIFF"),
    ],
    ids=["zip", "html", "exe", "gif", "bmp", "tiff"],
)
def test_other_formats_renamed_png_are_415(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(make())
    with pytest.raises(InvalidImage) as caught:
        load_image_file(path)
    assert (caught.value.code, caught.value.http_status) == ("unsupported_format", 415)
    assert "PNG, JPEG and WebP" in caught.value.message


def test_animated_gif_is_unsupported_format() -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue")]
    error = rejected(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    assert error.code == "unsupported_format"


# --- B3: truncated and corrupt --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9])
def test_truncated_files_are_image_truncated(fmt: str, fraction: float) -> None:
    data = encode(noise(320, 240), fmt)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    error = rejected(data[: int(len(data) * fraction)])
    assert (error.code, error.http_status) == ("image_truncated", 422)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES  # never switched on, not even for a moment left behind


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_file_cut_inside_the_header_is_truncated(fmt: str) -> None:
    data = encode(noise(320, 240), fmt)
    assert rejected(data[:20]).code == "image_truncated"


def test_png_with_damaged_pixel_data_is_corrupt() -> None:
    data = bytearray(encode(noise(128, 128), "PNG"))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # complete file, broken IDAT (CRC mismatch)
    error = rejected(bytes(data))
    assert (error.code, error.http_status) == ("image_corrupt", 422)


def test_jpeg_with_garbage_scan_data_is_corrupt() -> None:
    data = bytearray(encode(noise(128, 128), "JPEG"))
    start = len(data) // 3
    data[start : start + 200] = b"\xff" * 200  # a marker storm where entropy-coded data should be
    error = rejected(bytes(data))
    assert error.code == "image_corrupt"


def test_png_with_garbage_header_is_corrupt() -> None:
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\x00" * 13) + png_chunk(b"IEND", b"")
    assert rejected(data).code == "image_corrupt"


# --- B4, B5: too many pixels, decided from the header ---------------------------------------------


def test_bomb_header_20000x20000_fails_fast_without_allocating() -> None:
    data = png_header_only(20000, 20000)
    assert len(data) < 100
    rss_before = max_rss_bytes()
    started = time.perf_counter()
    error = rejected(data)
    elapsed_s = time.perf_counter() - started
    assert (error.code, error.http_status) == ("image_too_large", 422)
    assert "16,777,216 pixels" in error.message
    assert elapsed_s < 1.0
    # Decoding would need 1.2 GB (20000 * 20000 * 3); the peak RSS must not move by a fraction of that.
    assert max_rss_bytes() - rss_before < 200 * 2**20


def test_pillow_bomb_warning_range_is_an_error_and_warnings_stay_as_they_were() -> None:
    filters_before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping load_image_bytes fails the test
        error = rejected(png_header_only(10000, 10000))  # over Pillow's warning limit, under its error limit
    assert error.code == "image_too_large"
    assert warnings.filters == filters_before


def test_pillow_bomb_limit_applies_even_when_our_limit_is_higher() -> None:
    error = rejected(png_header_only(20000, 20000), ImageLimits(max_pixels=20000 * 20000))
    assert error.code == "image_too_large"


def test_pillow_bomb_warning_is_an_error_even_when_our_limit_is_higher() -> None:
    error = rejected(png_header_only(10000, 10000), ImageLimits(max_pixels=20000 * 20000))
    assert error.code == "image_too_large"
    assert "decompression bomb" in error.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_8000x8000_is_too_large_without_decoding(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (
        png_header_only(8000, 8000) if fmt == "PNG" else encode(Image.new("RGB", (8000, 8000), "gray"), fmt)
    )

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded before the header's size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    error = rejected(data)
    assert (error.code, error.http_status) == ("image_too_large", 422)
    assert "8000x8000" in error.message
    assert "16,777,216 pixels (e.g. 4096x4096)" in error.message


def test_exactly_max_pixels_is_accepted() -> None:
    result = load_image_bytes(encode(noise(128, 64), "PNG"), ImageLimits(max_pixels=128 * 64))
    assert (result.width, result.height) == (128, 64)


# --- B6, B7: too small, bad aspect ratio ----------------------------------------------------------


@pytest.mark.parametrize("side", [1, 8, 63])
def test_small_images_are_rejected_with_the_minimum(side: int) -> None:
    error = rejected(encode(Image.new("RGB", (side, side), "red"), "PNG"))
    assert (error.code, error.http_status) == ("image_too_small", 422)
    assert "at least 64 pixels" in error.message


def test_min_side_is_inclusive() -> None:
    assert load_image_bytes(encode(Image.new("RGB", (64, 64), "red"), "PNG")).width == 64


@pytest.mark.parametrize("size", [(10000, 16), (16, 10000), (260, 64)])
def test_extreme_aspect_ratio_is_rejected_with_the_maximum(size: tuple[int, int]) -> None:
    error = rejected(encode(Image.new("L", size, 128), "PNG"))
    assert (error.code, error.http_status) == ("bad_aspect_ratio", 422)
    assert "at most 4 times" in error.message


def test_aspect_ratio_limit_is_inclusive() -> None:
    result = load_image_bytes(encode(Image.new("RGB", (256, 64), "red"), "PNG"))
    assert (result.width, result.height) == (256, 64)


# --- B11: animations ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_png_and_webp_are_rejected(fmt: str) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
    error = rejected(encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100))
    assert (error.code, error.http_status) == ("animated_not_supported", 422)
    assert "3 frames" in error.message


# --- B8, B10: colour modes ------------------------------------------------------------------------


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


def centre(result: image_input.InputImage) -> tuple[int, int, int]:
    return pixel(result.image, (result.width // 2, result.height // 2))


def assert_close(actual: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 3) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (actual, expected)


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((0, 255, 255, 0), (255, 0, 0)),  # magenta + yellow = red
        ((255, 0, 0, 0), (0, 255, 255)),  # cyan
        ((0, 0, 0, 0), (255, 255, 255)),  # paper
        ((0, 0, 0, 128), (127, 127, 127)),  # half black ink
    ],
)
def test_cmyk_jpeg_golden_colours(cmyk: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> None:
    data = encode(Image.new("CMYK", (64, 64), cmyk), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).info.get("adobe")  # stored the Adobe (inverted) way
    result = load_image_bytes(data)
    assert result.image.mode == "RGB"
    assert result.source_mode == "CMYK"
    assert_close(centre(result), rgb)
    assert "CMYK converted to RGB" in result.notes


def test_transparent_rgba_becomes_the_background_colour() -> None:
    result = load_image_bytes(encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), "PNG"))
    assert centre(result) == (255, 255, 255)
    assert result.source_mode == "RGBA"
    assert any("#ffffff" in note for note in result.notes)


def test_background_colour_is_configurable_and_alpha_blends() -> None:
    image = Image.new("RGBA", (64, 64), (255, 0, 0, 128))  # half-transparent red
    result = load_image_bytes(encode(image, "PNG"), ImageLimits(background=(0, 0, 255)))
    assert_close(centre(result), (128, 0, 127), tolerance=2)
    assert any("#0000ff" in note for note in result.notes)


def test_transparent_webp_is_composited() -> None:
    result = load_image_bytes(encode(Image.new("RGBA", (64, 64), (0, 255, 0, 0)), "WEBP", lossless=True))
    assert centre(result) == (255, 255, 255)


def test_opaque_alpha_is_dropped_without_compositing() -> None:
    result = load_image_bytes(encode(Image.new("RGBA", (64, 64), (10, 20, 30, 255)), "PNG"))
    assert centre(result) == (10, 20, 30)
    assert not any("composited" in note for note in result.notes)


def test_la_is_composited() -> None:
    image = Image.new("LA", (64, 64), (0, 0))
    image.putpixel((0, 0), (90, 255))
    result = load_image_bytes(encode(image, "PNG"))
    assert result.source_mode == "LA"
    assert centre(result) == (255, 255, 255)
    assert result.image.getpixel((0, 0)) == (90, 90, 90)


def test_palette_with_trns_is_composited() -> None:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([10, 20, 30, 200, 0, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 1)
    data = encode(image, "PNG", transparency=0)
    result = load_image_bytes(data)
    assert result.source_mode == "P"
    assert centre(result) == (255, 255, 255)  # index 0 is transparent
    assert result.image.getpixel((0, 0)) == (200, 0, 0)  # index 1 is opaque red


def test_rgb_png_with_colour_key_is_composited() -> None:
    result = load_image_bytes(encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG", transparency=(1, 2, 3)))
    assert centre(result) == (255, 255, 255)


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    values = np.zeros((64, 64), dtype=np.uint16)
    values[0, 0], values[0, 1], values[0, 2], values[0, 3] = 65535, 32896, 257, 1000
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    result = load_image_bytes(encode(image, "PNG"))
    assert result.source_mode.startswith("I")
    assert [result.image.getpixel((x, 0)) for x in range(4)] == [(255,) * 3, (128,) * 3, (1,) * 3, (4,) * 3]
    assert centre(result) == (0, 0, 0)


def test_16_bit_greyscale_with_trns_is_composited() -> None:
    values = np.full((64, 64), 1000, dtype=np.uint16)
    values[0, 0] = 65535
    data = encode(Image.fromarray(values), "PNG", transparency=1000)
    result = load_image_bytes(data, ImageLimits(background=(0, 0, 255)))
    assert centre(result) == (0, 0, 255)
    assert pixel(result.image, (0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_convert_to_rgb_scales_every_16_bit_layout(mode: str) -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    if mode == "I;16B":
        image = Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes())
    elif mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        image = Image.fromarray(values)
    assert image.mode == mode
    rgb, notes = convert_to_rgb(image, (255, 255, 255))
    assert np.asarray(rgb)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert notes


def test_convert_to_rgb_float_and_bilevel() -> None:
    floats = Image.fromarray(np.array([[-3.0, 0.4, 127.6, 300.0, np.nan]], dtype=np.float32))
    rgb, _ = convert_to_rgb(floats, (255, 255, 255))
    assert np.asarray(rgb)[0, :, 1].tolist() == [0, 0, 128, 255, 0]
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    rgb, _ = convert_to_rgb(bilevel, (255, 255, 255))
    assert np.asarray(rgb)[0, :, 2].tolist() == [0, 255]


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale_and_bilevel_png_become_rgb(mode: str) -> None:
    result = load_image_bytes(encode(Image.new(mode, (64, 64), 1 if mode == "1" else 77), "PNG"))
    assert result.image.mode == "RGB"
    assert centre(result) == ((255,) * 3 if mode == "1" else (77,) * 3)


# --- EXIF: orientation, huge and corrupt blocks (B13) ---------------------------------------------


def left_red_right_blue(width: int = 120, height: int = 80) -> Image.Image:
    image = Image.new("RGB", (width, height), "blue")
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


def test_exif_orientation_6_swaps_width_and_height() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: display rotated 90 degrees clockwise
    result = load_image_bytes(encode(left_red_right_blue(), "JPEG", exif=exif, quality=95))
    assert (result.width, result.height) == (80, 120)
    assert result.image.size == (80, 120)
    # The stored left (red) half is on top once rotated clockwise.
    assert_close(pixel(result.image, (40, 20)), (255, 0, 0), tolerance=8)
    assert_close(pixel(result.image, (40, 100)), (0, 0, 255), tolerance=8)
    assert "EXIF orientation 6 applied" in result.notes
    assert result.image.info == {}


def test_64_kb_exif_block_is_accepted() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.ImageDescription] = "x" * 65000
    data = encode(left_red_right_blue(), "JPEG", exif=exif)
    assert len(exif.tobytes()) > 64000
    result = load_image_bytes(data)
    assert (result.width, result.height) == (80, 120)
    assert "exif" not in result.image.info


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize(
    "exif_bytes",
    [
        b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 100,  # IFD entry count points past the end
        b"Exif\x00\x00" + bytes(50),  # no TIFF header at all
        b"\x01\x02not exif at all",
    ],
    ids=["bad-ifd", "zeros", "garbage"],
)
def test_corrupt_exif_is_ignored_not_fatal(fmt: str, exif_bytes: bytes) -> None:
    data = encode(noise(96, 64), fmt, exif=exif_bytes, **({"lossless": True} if fmt == "WEBP" else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Corrupt EXIF data" warning must not escape either
        result = load_image_bytes(data)
    assert (result.width, result.height) == (96, 64)
    assert result.image.info == {}


# --- the result itself ----------------------------------------------------------------------------


def test_result_is_loaded_rgb_with_hash_and_no_metadata() -> None:
    image = noise(96, 64)
    data = encode(image, "PNG", icc_profile=b"\x00" * 128)
    result = load_image_bytes(data)
    assert result.format == "png"
    assert result.source_mode == "RGB"
    assert result.notes == ()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.image.mode == "RGB"
    assert result.image.info == {}
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(image))  # lossless stays exact


def test_error_payload_names_the_field() -> None:
    payload = rejected(encode(Image.new("RGB", (8, 8)), "PNG")).to_dict()
    assert payload["code"] == "image_too_small"
    assert payload["field"] == "image"
    assert "8x8" in payload["message"]


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="aspect"):
        ImageLimits(max_aspect_ratio=0.5)
    with pytest.raises(ValueError, match="background"):
        ImageLimits(background=(0, 0, 256))
