"""Streaming multipart parsing with the size limit enforced while the bytes arrive (RELIABILITY B15, F13).

FastAPI's ``UploadFile`` buffers a whole upload into the system temp dir before a route runs; here the one
file part goes straight to a temp file under ``data_dir/tmp`` and reading stops at the first byte over the
limit. The client's filename is ignored (B17). Whatever happens (a limit, a malformed body, a client that
disconnects, a disk that fills up: 507), ``read_multipart`` leaves no temp file behind unless it returns
successfully, and the caller owns ``ParsedForm.cleanup()`` after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from stillmotion.jobs.workers.disk_space import is_disk_full_error
from stillmotion.server.errors import ApiError
from stillmotion.service.live_status import out_of_space

MAX_FIELD_BYTES = (
    1 << 20
)  # one text field; the prompt rule (2000 chars) is checked later with a clear message
MAX_PARTS = 32
MAX_HEADER_BYTES = 64 * 1024  # per part header: room for absurd filenames, which are ignored (B17)
MULTIPART_OVERHEAD_BYTES = 2 << 20  # headers and text fields on top of the file limit
DEFAULT_UPLOAD_TIMEOUT_S = 300.0  # settings.upload_timeout_s: a slower whole upload is a slow-loris (B28)


@dataclass
class ParsedForm:
    """Text fields (every value given, in order) and the uploaded files: the image, and any second file part
    the route allows (``last_image``) in ``extra_files``."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file_field: str | None = None
    file_path: Path | None = None
    file_size: int = 0
    file_parts: int = 0
    extra_files: dict[str, Path] = field(default_factory=dict)

    def cleanup(self) -> None:
        """Remove the temp files (idempotent)."""
        for path in [self.file_path, *self.extra_files.values()]:
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self.file_path = None
        self.extra_files = {}


class _Collector:
    """Callbacks for python-multipart's push parser; file bytes are written as they come."""

    def __init__(self, tmp_dir: Path, file_fields: set[str], max_file_bytes: int) -> None:
        self.form = ParsedForm()
        self.tmp_dir = tmp_dir
        self.file_fields = file_fields
        self.max_file_bytes = max_file_bytes
        self.parts = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._text = bytearray()
        self._file: IO[bytes] | None = None
        self._part_size = 0
        self.error: ApiError | None = None

    # -- header callbacks
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(422, "too_many_parts", f"The form has more than {MAX_PARTS} parts.")
        self._headers = {}
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            raise ApiError(422, "invalid_request", "A form part has no name (Content-Disposition).")
        self._name = raw_name.decode("utf-8", errors="replace")
        # A part is a file when it carries a filename, whatever that filename says (it is never used).
        self._is_file = b"filename" in options or b"filename*" in options
        if self._is_file:
            self.form.file_parts += 1
            if self._name not in self.file_fields:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"{self._name}: unexpected file part; send the image as the file field "
                    f"{' or '.join(sorted(self.file_fields))!r}.",
                    field=self._name,
                )
            if self._name == self.form.file_field or self._name in self.form.extra_files:
                raise ApiError(
                    422, "invalid_request", f"{self._name}: give exactly one file.", field=self._name
                )
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.tmp_dir)
            if self._name == "image" or len(self.file_fields) == 1:
                self.form.file_path = Path(name)
                self.form.file_field = self._name
            else:
                self.form.extra_files[self._name] = Path(name)
            self._part_size = 0
            self._file = os.fdopen(fd, "wb")

    # -- body callbacks
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._is_file:
            self.form.file_size += size
            self._part_size += size
            if self._part_size > self.max_file_bytes:
                raise ApiError(
                    413,
                    "file_too_large",
                    f"{self._name}: the upload exceeds the limit of {self.max_file_bytes / 2**20:g} MB.",
                    field=self._name,
                )
            assert self._file is not None
            self._file.write(data[start:end])
        else:
            if len(self._text) + size > MAX_FIELD_BYTES:
                raise ApiError(
                    413,
                    "field_too_large",
                    f"{self._name}: the field exceeds {MAX_FIELD_BYTES // 1024} KB.",
                    field=self._name,
                )
            self._text += data[start:end]

    def on_part_end(self) -> None:
        assert self._name is not None
        if self._is_file:
            assert self._file is not None
            self._file.close()
            self._file = None
            return
        try:
            value = bytes(self._text).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(
                422, "invalid_request", f"{self._name}: the value is not valid UTF-8.", field=self._name
            ) from None
        self.form.fields.setdefault(self._name, []).append(value)

    @property
    def open_file(self) -> bool:
        return self._file is not None

    def close(self) -> None:
        """Close the temp file of an abandoned upload (its last buffered bytes may not fit: they go too)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


async def read_multipart(
    request: Request,
    *,
    tmp_dir: Path,
    file_fields: set[str],
    max_file_bytes: int,
    timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
) -> ParsedForm:
    """Parse a ``multipart/form-data`` body, streaming the file part to ``tmp_dir``; raise ``ApiError``.

    A body that takes longer than ``timeout_s`` to arrive is abandoned with 408 (B28); only this request's
    task waits on it, so other requests are served meanwhile.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    limit = max_file_bytes * len(file_fields) + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        # Refused before reading a byte of the body.
        raise ApiError(
            413,
            "file_too_large",
            f"The request body exceeds the limit of {max_file_bytes / 2**20:g} MB.",
            field="image",
        )
    if content_type == b"application/x-www-form-urlencoded":
        return await _read_urlencoded(request, timeout_s)
    if content_type != b"multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the request as multipart/form-data (a file field 'image' and the generation fields).",
            field="Content-Type",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed_body", "The multipart Content-Type has no boundary.")
    collector = _Collector(tmp_dir, file_fields, max_file_bytes)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(boundary, callbacks, max_header_size=MAX_HEADER_BYTES)  # type: ignore[arg-type]
    received = 0
    done = False
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise ApiError(
                        413,
                        "file_too_large",
                        f"The request body exceeds the limit of {max_file_bytes / 2**20:g} MB.",
                        field="image",
                    )
                parser.write(chunk)
        parser.finalize()
        if collector.open_file:  # the body ended inside the file part: a truncated upload
            raise ApiError(400, "malformed_body", "The multipart body ended early.")
        done = True
    except TimeoutError:
        raise _too_slow(timeout_s) from None
    except FormParserError:
        raise ApiError(400, "malformed_body", "The multipart body is malformed.") from None
    except OSError as exc:  # writing the temp file: a disk that filled up is 507, anything else a fault
        if is_disk_full_error(exc):
            raise out_of_space() from None
        raise
    finally:
        if not done:  # a limit, a bad body, a disconnect or a cancel: leave nothing behind (F13)
            collector.close()
            collector.form.cleanup()
    return collector.form


def _too_slow(timeout_s: float) -> ApiError:
    return ApiError(
        408,
        "request_timeout",
        f"The upload took longer than {timeout_s:g} s (STILLMOTION_UPLOAD_TIMEOUT_S) and was abandoned.",
    )


async def _read_urlencoded(request: Request, timeout_s: float) -> ParsedForm:
    """A form without a file (``POST /plan`` from simple clients); the same size and time rules apply."""
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FIELD_BYTES:
                    raise ApiError(413, "field_too_large", f"The form exceeds {MAX_FIELD_BYTES // 1024} KB.")
    except TimeoutError:
        raise _too_slow(timeout_s) from None
    form = ParsedForm()
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ApiError(422, "invalid_request", "The form is not valid UTF-8 url-encoded text.") from None
    for name, value in pairs:
        form.fields.setdefault(name, []).append(value)
    return form
