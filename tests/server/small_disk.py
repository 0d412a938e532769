"""A really small, really fillable disk for the disk-full cases (RELIABILITY F9, F10; issue 15.3-15.5).

``small_disk(path, size_mb)`` mounts a tmpfs of that size at ``path`` (root, i.e. CAP_SYS_ADMIN, is needed:
CI runs as root); where tmpfs cannot be mounted it tries an ext4 image on a loop device; where neither can,
the test is skipped with both reasons spelled out. ``fill(path, leave_mb)`` then writes a file until only
``leave_mb`` is left, or until the file system refuses another byte.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = ".filler"
_MIB = 1 << 20
_PAGE = 4096


def _mount_tmpfs(path: Path, size_mb: int) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "stillmotion-test", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )


def _mount_loop_image(path: Path, size_mb: int) -> None:
    image = path.with_name(path.name + ".img")
    with open(image, "wb") as f:
        f.truncate(size_mb * _MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True, text=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A file system of ``size_mb`` MiB mounted at ``path`` for the block (see the module docstring)."""
    path.mkdir(parents=True, exist_ok=True)
    failures = []
    for mount in (_mount_tmpfs, _mount_loop_image):
        try:
            mount(path, size_mb)
            break
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            failures.append(f"{mount.__name__}: {detail.strip()}")
    else:
        pytest.skip(
            "this case needs a really full disk, and no small file system could be mounted here (root, i.e. "
            "CAP_SYS_ADMIN, is needed; CI runs as root): " + "; ".join(failures)
        )
    try:
        yield path
    finally:
        # Lazy: a server the test started may still hold a file open while it exits.
        subprocess.run(["umount", "--lazy", str(path)], check=False, capture_output=True)


def free_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / _MIB


def fill(path: Path, leave_mb: float = 0.0) -> Path:
    """Write ``path/.filler`` until ``leave_mb`` is left (0: until ENOSPC refuses even a page)."""
    filler = path / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (_MIB, _PAGE):
            block = b"\xa5" * chunk
            while shutil.disk_usage(path).free - chunk >= leave_mb * _MIB:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def free_space(path: Path) -> None:
    """Undo ``fill``."""
    (path / FILLER).unlink(missing_ok=True)
