"""``serve(settings)``: run the app under uvicorn on ``settings.host:settings.port``.

Refuses (exit 2) to bind a non-loopback address without ``STILLMOTION_API_TOKEN``: the API would otherwise
accept jobs from the whole network. ``python -m stillmotion.server.run`` serves with the environment's
settings (what ``stillmotion serve`` does).

The terminal says what happened, not every request: uvicorn logs through the process's own logging set-up
(one format, not uvicorn's own), and its access log keeps what a user did (``UserActions``): submissions,
cancels, deletions, downloads, opening the UI, and every refusal; it drops polling, health checks and the
web UI's own traffic (its assets, events and heartbeats: the service logs the jobs it accepts itself).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from stillmotion.config import Settings
from stillmotion.logging_setup import setup_logging
from stillmotion.server.app import SHUTDOWN_GRACE_S, begin_shutdown
from stillmotion.server.security import is_loopback

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 2
GRACEFUL_TIMEOUT_S = int(SHUTDOWN_GRACE_S) + 15  # the worker's own grace plus margin


# Reads that clients repeat to follow something: health checks, job and batch status, event streams.
POLLING = re.compile(r"^/api/v1/(health|jobs|jobs/[^/]+|jobs/[^/]+/events|batches/[^/]+)/?$")
# The web UI's own requests: its page assets and its event traffic (a click is logged by what it does).
UI_TRAFFIC = (
    "/gradio_api/",
    "/assets/",
    "/static/",
    "/theme.css",
    "/favicon.ico",
    "/manifest.json",
    "/config",
)


def is_user_action(method: str, path: str, status: int) -> bool:
    """Whether a request is worth a line in the terminal: a change, a download or a refusal, not a poll."""
    if status >= 400:
        return True
    path = path.partition("?")[0]
    if path.startswith(UI_TRAFFIC):
        return False
    return not (method in ("GET", "HEAD") and POLLING.match(path))


class UserActions(logging.Filter):
    """Keeps the access-log records of user actions (``is_user_action``); uvicorn's access records carry
    (client, method, path, HTTP version, status) as their arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _, method, path, _, status = args
        if not isinstance(status, int):
            return True
        return is_user_action(str(method), str(path), status)


def check_bind(settings: Settings) -> str | None:
    """Why this bind is refused, or None when it is allowed."""
    if is_loopback(settings.host) or settings.api_token:
        return None
    return (
        f"Refusing to listen on {settings.host}:{settings.port} without an API token: anyone on the network "
        "could submit jobs. Set STILLMOTION_API_TOKEN to a long random secret (clients send "
        "'Authorization: Bearer <token>'), or bind 127.0.0.1 (the default)."
    )


def serve(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code (2 when the bind is refused).

    Logs go to ``logs/<node>/server.log`` and the console in the service's one format (logging_setup.py),
    uvicorn's own lines included."""
    setup_logging(settings, "server")
    refusal = check_bind(settings)
    if refusal is not None:
        logger.error("%s", refusal)
        sys.stderr.write(f"stillmotion serve: {refusal}\n")
        return EXIT_REFUSED

    import uvicorn

    from stillmotion.server.app import create_app

    _Server = _server_class()

    app = create_app(settings)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, UserActions) for f in access.filters):
        access.addFilter(UserActions())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's lines go through this process's handlers, in the service's format
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
        proxy_headers=False,
        server_header=False,
    )
    server = _Server(config, app)
    url_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    logger.info(
        "stillmotion UI at http://%s:%d/ ; API at /api/v1 ; docs at /api/v1/docs", url_host, settings.port
    )
    server.run()
    return EXIT_OK if server.started else 1


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """How the service stops, said at once (uvicorn itself would re-raise the signal after a graceful
        shutdown, exit status -15; a clean stop is 0 here):

        - Ctrl-C (SIGINT), or a second signal: stop now. The running job stops at its next step and goes back
          to the queue; the next start resumes it from its last saved step (nothing is lost but that step).
        - SIGTERM (systemd, docker stop): drain. No new job starts; the running one may finish within the
          grace period, then it is stopped the same way.
        """

        def __init__(self, config: Any, app: Any) -> None:
            super().__init__(config)
            self.app_state = app.state

        def on_signal(self, sig: int, frame: FrameType | None) -> None:
            begin_shutdown(self.app_state)
            supervisor = getattr(self.app_state, "workers", None)
            if sig == signal.SIGINT or self.should_exit:
                logger.warning(
                    "stopping now: the running job (if any) stops at its next step and goes back to the "
                    "queue; the next start resumes it from its last saved step"
                )
                if supervisor is not None:  # not from the signal handler itself: it takes a lock
                    threading.Thread(target=supervisor.interrupt, name="interrupt", daemon=True).start()
            else:
                logger.warning(
                    "SIGTERM: draining: no new job starts and the running one may finish (up to %gs); send "
                    "SIGTERM again or press Ctrl-C to stop it at its next step instead",
                    SHUTDOWN_GRACE_S,
                )
            self.handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def main() -> int:
    return serve(Settings())


if __name__ == "__main__":
    sys.exit(main())
