"""``atomic_file(path)``: write a file so that a reader finds the previous one or the new one, whole.

Temp file in the same folder, fsync, ``os.replace``; on any error the temp file is removed and ``path`` is
untouched. For small files whose loss mid-write would mislead a reader (checkpoints, videos handed over from
another machine).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """``with atomic_file(path) as out: out.write(...)``: ``path`` appears, complete, when the block ends."""
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
