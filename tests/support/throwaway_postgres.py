"""A throwaway PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp folder.

``ThrowawayPostgres.start()`` makes a cluster in a new temp folder, starts it on a free loopback port (its
socket in the same folder, so it touches nothing system-wide) and ``stop()`` kills it and deletes the
folder. For outage tests, ``kill()`` SIGKILLs the server (as a crash or ``kill -9`` would) and ``restart()``
starts it again with ``pg_ctl`` on the same port and data (it runs crash recovery first). It uses Debian's
server binaries (``scripts/install-postgres.sh`` installs them) and fails with a plain message when they are
missing or the server does not start: a test that needs PostgreSQL must never
pass without it. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user
that Debian's package creates (or ``nobody``), through ``runuser``. Durability settings are off
(``fsync=off``): the data is thrown away.

Written by hand because the Python helpers that do this (testing.postgresql, pytest-postgresql) are either
unmaintained or bring a fixture framework of their own; this is two commands and a cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PG_BIN_ENV = "STILLMOTION_PG_BIN"  # a folder with initdb and pg_ctl, when they are somewhere unusual
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "stillmotion"
# As root: Debian's package user, else the unprivileged user every Linux system has.
SERVER_USERS_WHEN_ROOT = ("postgres", "nobody")
START_TIMEOUT_S = 60
START_TRIES = 3  # a free port can be taken between choosing it and the server binding it
KILL_WAIT_S = 10
# Throwaway data: skip the durability costs a killed *server process* does not need (fsync: the kernel keeps
# written WAL through a kill -9; full-page writes guard against torn pages on a power cut), and leave room
# for a few services' connection pools. synchronous_commit stays on: off, a commit is acknowledged while its
# WAL still sits in the server's shared memory, which a kill -9 loses: the outage tests (kill -9 mid-burst)
# then saw acknowledged jobs vanish (404), a loss the product's PostgreSQL, with its defaults, never has.
SERVER_OPTIONS = "-c fsync=off -c full_page_writes=off -c max_connections=300 -c listen_addresses=127.0.0.1"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing, or the server did not start."""


def find_bin_dir() -> Path:
    """The folder with ``initdb`` and ``pg_ctl``: $STILLMOTION_PG_BIN, else the newest Debian install, else
    the one on PATH."""
    override = os.environ.get(PG_BIN_ENV)
    candidates = [Path(override)] if override else []
    debian = sorted(Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/")), key=_major_version, reverse=True)
    candidates += debian
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresUnavailable(
        "PostgreSQL's server programs (initdb, pg_ctl) were not found in "
        f"{override or DEBIAN_BIN_GLOB}. Install them with: bash scripts/install-postgres.sh "
        f"(Debian's postgresql package), or point {PG_BIN_ENV} at their folder."
    )


def _server_user() -> pwd.struct_passwd:
    """The unprivileged user a root process runs the server as (PostgreSQL refuses to run as root)."""
    for name in SERVER_USERS_WHEN_ROOT:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        f"running as root, PostgreSQL needs one of the users {', '.join(SERVER_USERS_WHEN_ROOT)} to run as; "
        "bash scripts/install-postgres.sh creates 'postgres'."
    )


def _major_version(folder: Path) -> int:
    try:
        return int(folder.parent.name)
    except ValueError:
        return 0


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ThrowawayPostgres:
    """One running throwaway cluster; ``url()`` names a database in it."""

    root: Path
    port: int
    bin_dir: Path
    run_as: str | None  # the OS user the server runs as, when we are root

    @classmethod
    def start(cls) -> ThrowawayPostgres:
        """initdb in a new temp folder and start the server; raises PostgresUnavailable saying why."""
        bin_dir = find_bin_dir()
        user = _server_user() if os.geteuid() == 0 else None
        run_as = None if user is None else user.pw_name
        root = Path(tempfile.mkdtemp(prefix="stillmotion-pg-"))
        try:
            if user is not None:
                os.chown(root, user.pw_uid, user.pw_gid)
            server = cls(root=root, port=0, bin_dir=bin_dir, run_as=run_as)
            server._run(
                "initdb", "-D", str(server.data_dir), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                "-E", "UTF8", "--locale=C",
            )  # fmt: skip
            server._start_on_a_free_port()
            return server
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` (psycopg driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a generated name: nothing to inject
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away) and delete its folder."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
        except PostgresUnavailable as exc:
            logger.error("%s", exc)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server's postmaster: from now on connections are refused (or reset) until
        ``restart()``. Its backends exit on their own once they notice (PostgreSQL's postmaster-death
        check)."""
        pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while _process_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the kernel: there is nothing to wait on for another's process

    def restart(self) -> None:
        """Start the killed server again on its port; returns once it takes connections (crash recovery
        done). Retried while the old backends still hold its shared memory."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self._pg_ctl_start()
                return
            except PostgresUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _pg_ctl_start(self) -> None:
        """``pg_ctl start`` on ``self.port``, waiting until it takes connections."""
        options = f"-p {self.port} -k {self.root} {SERVER_OPTIONS}"
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-w",
            "-t", str(START_TIMEOUT_S), "-o", options,
        )  # fmt: skip

    def _start_on_a_free_port(self) -> None:
        log = self.root / "server.log"
        for attempt in range(1, START_TRIES + 1):
            self.port = _free_port()
            try:
                self._pg_ctl_start()
                return
            except PostgresUnavailable:
                if attempt == START_TRIES:
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
                    raise PostgresUnavailable(f"PostgreSQL did not start; its log ends:\n{tail}") from None

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, check=False)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{program} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}"
            )


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A running throwaway cluster for the duration of the block; always stopped and deleted."""
    server = ThrowawayPostgres.start()
    try:
        yield server
    finally:
        server.stop()
