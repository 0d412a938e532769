"""Stand-in for the service process in kill tests: runs a WorkerSupervisor until SIGTERM.

Usage: python service_host.py DATA_DIR  (other settings come from STILLMOTION_* variables).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from stillmotion.config import Settings
from stillmotion.jobs.supervisor import WorkerSupervisor

STOP_GRACE_S = 5.0


def main() -> int:
    settings = Settings(data_dir=Path(sys.argv[1]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    supervisor = WorkerSupervisor(settings).start()
    stop.wait()
    return supervisor.stop(grace_s=STOP_GRACE_S) or 0


if __name__ == "__main__":
    sys.exit(main())
