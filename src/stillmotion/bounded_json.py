"""JSON from outside, parsed with a bound on its size and nesting: ``loads`` and ``read_json_file``.

Python's ``json`` recurses once per nested array or object, so 100,000 ``[`` raise ``RecursionError`` (not a
``ValueError``: callers that catch bad JSON would let it through as a crash). Every JSON that a user, a
client or a downloaded repo hands us goes through here instead: batch ``items`` and CLI batch files, a
model's ``model_index.json`` and component configs. Over a limit is a ``JsonLimitError``, a ``ValueError``,
so the callers' existing "not valid JSON" handling names the field or file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# Generous for what we read (a diffusers config nests 3-4 levels, a batch item 2) and far below the
# interpreter's recursion limit.
MAX_DEPTH = 64
MAX_BYTES = 4 << 20  # a model_index.json is a few hundred bytes; a config a few KB

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class JsonLimitError(ValueError):
    """JSON over the size or nesting bound (the message says which)."""


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """``json.loads`` that refuses more than ``max_bytes`` or nesting deeper than ``max_depth``."""
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise JsonLimitError(f"larger than {max_bytes} bytes")
        text = text.decode("utf-8")
    if len(text) > max_bytes:
        raise JsonLimitError(f"larger than {max_bytes} bytes")
    check_depth(text, max_depth)
    return json.loads(text)


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``JsonLimitError`` when arrays and objects nest deeper than ``max_depth`` (strings skipped)."""
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > max_depth:
            raise JsonLimitError(f"nested deeper than {max_depth} levels")


def read_json_file(path: Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file's value, read no further than the size bound (OSError, ValueError as ``json`` raises)."""
    with path.open("rb") as file:
        data = file.read(max_bytes + 1)
    return loads(data, max_depth=max_depth, max_bytes=max_bytes)
