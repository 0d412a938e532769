"""Free space on the data disk, and the one rule for "too full to take work".

The API's admission check and /health (through ``service/live_status.py``), the worker (before it claims a
job, and after a job ran out of space) and the supervisor's watchdog all ask ``disk_low()``, so they agree on
when the service is out of room. ``is_disk_full_error()`` recognises the errors a full disk raises, whichever
layer raised them (an OS write, the video writer, SQLite).
"""

from __future__ import annotations

import errno
import shutil

from stillmotion.config import Settings
from stillmotion.errors import StillmotionError

# Below this nothing useful can be written (a database page, a log line), whatever min_free_disk_mb says.
FULL_DISK_FLOOR_MB = 1.0
DISK_FULL = "disk_full"  # the error code of a job that ran out of space (the video writer's code too)
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_CODES = frozenset({DISK_FULL, "database_full"})


def free_disk_mb(settings: Settings) -> float:
    """Free space on the disk holding the data folder, in MiB (one statfs, no walk)."""
    path = settings.data_dir if settings.data_dir.exists() else settings.data_dir.parent
    return shutil.disk_usage(path).free / 2**20


def disk_floor_mb(settings: Settings) -> float:
    """The free space new work needs: ``settings.min_free_disk_mb``, never less than a full disk's floor."""
    return max(settings.min_free_disk_mb, FULL_DISK_FLOOR_MB)


def disk_low(settings: Settings, free_mb: float | None = None) -> bool:
    """Whether the data disk is below the floor (measured now unless ``free_mb`` is given)."""
    return (free_disk_mb(settings) if free_mb is None else free_mb) < disk_floor_mb(settings)


def low_disk_message(settings: Settings, free_mb: float) -> str:
    """What a refused submission and /health say: the figures, never the server's paths."""
    return (
        f"Only {free_mb:.0f} MB free on the data disk; new jobs need at least {disk_floor_mb(settings):g} MB "
        "(STILLMOTION_MIN_FREE_DISK_MB). Free some space; jobs already queued run once there is room."
    )


def is_disk_full_error(exc: BaseException) -> bool:
    """True for an error that means "no space left": ENOSPC/EDQUOT, or our disk_full/database_full codes."""
    if isinstance(exc, StillmotionError):
        return exc.code in DISK_FULL_CODES
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
