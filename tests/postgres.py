"""A throwaway PostgreSQL cluster for tests and benchmarks.

PostgreSQL is installed on these machines from Debian's packages: ``pg_config --bindir``
names the directory of ``initdb`` and ``pg_ctl``, which are not on PATH. A cluster is made
in a temporary directory (trust authentication, user ``postgres``), listens on a free
port of 127.0.0.1 and on a socket in that directory, and is removed when stopped. The
server refuses to run as root, so as root every command runs as the ``postgres`` user
through ``runuser`` (and the directory belongs to that user).

The pytest fixture ``postgres_cluster`` (``tests/conftest.py``) starts one per session,
only when a test asks for it; where PostgreSQL or psycopg is missing the test skips, or
fails when ``TROUPE_POSTGRES_REQUIRED=1`` (as ``.ci/run`` sets).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

START_TIMEOUT: Final = 30
"""Seconds ``pg_ctl`` waits for the server to accept connections."""


class ClusterUnavailable(Exception):
    """PostgreSQL's programs are not installed, or a cluster could not be started; the
    message says which."""


def bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``.

    Raises:
        ClusterUnavailable: PostgreSQL's server programs are not installed.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        done = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=30
        )
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ClusterUnavailable(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed "
        "(Debian: apt-get install postgresql)"
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """One PostgreSQL server in a temporary directory.

    Attributes:
        port: its TCP port on 127.0.0.1.
        fsync: whether the server syncs its commits (off makes tests faster; on for
            figures comparable with a store that syncs).
    """

    _names = itertools.count()

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = bindir()
        self.fsync = fsync
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="troupe-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = 0
        self._started = False
        try:
            self.sockets.mkdir()
            if self.as_root:
                try:
                    user = pwd.getpwnam("postgres")
                except KeyError:
                    raise ClusterUnavailable(
                        "running as root, and there is no postgres user to run the server"
                    ) from None
                for path in (self.root, self.sockets):
                    os.chown(path, user.pw_uid, user.pw_gid)
            self._run(
                "initdb",
                [
                    *("-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"),
                    *("--no-locale", "--no-sync", "--no-instructions"),
                ],
            )
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _run(self, program: str, args: Sequence[str], timeout: float = 120) -> str:
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise ClusterUnavailable(f"{program} took more than {timeout} s") from None
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ClusterUnavailable(
                f"{program} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log}"
            )
        return done.stdout

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )

    def start(self) -> None:
        """Start the server: on its port if it ran before, else on a free port (another,
        if that one was taken meanwhile)."""
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            try:
                self._pg_ctl("start", "-l", str(self.log))
            except ClusterUnavailable:
                if attempt == 2:
                    raise
                continue
            self._started = True
            return

    def _pg_ctl(self, action: str, *args: str) -> None:
        wait = ("-w", "-t", str(START_TIMEOUT))
        self._run("pg_ctl", [action, "-D", str(self.data), *wait, "-o", self._options(), *args])

    def restart(self) -> None:
        """Stop the server (dropping every connection) and start it on the same port."""
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.log))

    def stop_server(self) -> None:
        """Stop the server, keeping its data (:meth:`start` starts it again)."""
        self._run("pg_ctl", ["stop", "-D", str(self.data), "-m", "fast", "-w"], 30)
        self._started = False

    def stop(self) -> None:
        """Stop the server (at once, if a fast stop fails) and remove its directory."""
        try:
            if self._started:
                try:
                    self._run("pg_ctl", ["stop", "-D", str(self.data), "-m", "fast", "-w"], 30)
                except ClusterUnavailable:
                    self._run("pg_ctl", ["stop", "-D", str(self.data), "-m", "immediate"], 30)
                self._started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"troupe_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_cluster(*, fsync: bool = False) -> Cluster:
    """A started throwaway cluster (stop it with :meth:`Cluster.stop`).

    Raises:
        ClusterUnavailable: PostgreSQL is not installed, or would not start.
    """
    cluster = Cluster(fsync=fsync)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
