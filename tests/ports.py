"""Servers the tests start in subprocesses, on 127.0.0.1: a free port, waiting for one
to listen, and waiting for a file another process writes."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import trio

ROOT = Path(__file__).resolve().parent.parent


class Served:
    """A server process of a test: what it wrote to stderr, once it has ended."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.stderr = b""


STOP_TIMEOUT = 20.0
"""Seconds a server of a test has to end after SIGTERM (``troupe serve`` drains within
15: its runs' last events in 10, its connections' last writes in 5)."""


@contextlib.contextmanager
def serving(
    args: list[str],
    port: int,
    env: dict[str, str] | None = None,
    stderr: IO[bytes] | None = None,
    stop_timeout: float = STOP_TIMEOUT,
) -> Iterator[Served]:
    """``args`` run from the repository's root until it listens on ``port``; on leaving,
    SIGTERM, and its stderr kept in what this yields (or written to ``stderr``, a file:
    a server left running long writes more than a pipe holds). A server still running
    ``stop_timeout`` seconds after SIGTERM is killed; either way it is reaped (no test
    leaves one behind, holding its port).

    Raises:
        RuntimeError: it ended, or did not listen within 30 s; or it did not stop within
            ``stop_timeout`` of SIGTERM (unless the block raised: its error is kept).
    """
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if stderr is None else stderr,
    )
    served = Served(process)
    stopped = False
    try:
        wait_for_port(port, process)
        yield served
    finally:
        process.terminate()
        try:
            served.stderr = process.communicate(timeout=stop_timeout)[1] or b""
            stopped = True
        except subprocess.TimeoutExpired:
            process.kill()
            served.stderr = process.communicate()[1] or b""
        except BaseException:  # (a Ctrl-C while it drains)
            process.kill()
            process.communicate()
            raise
    if not stopped:  # (reached only if the block itself ended well)
        raise RuntimeError(
            f"{args!r} did not stop within {stop_timeout:g} s of SIGTERM: killed "
            f"(its stderr: {served.stderr[-2000:]!r})"
        )


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Return once ``port`` takes connections.

    Raises:
        RuntimeError: ``process`` ended first, or ``seconds`` went by.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no server on port {port}: {process.args!r}") from None
            time.sleep(0.05)


async def wait_for_file(path: object, seconds: float = 10) -> None:
    """Return once another process has written ``path``.

    Raises:
        TimeoutError: ``seconds`` went by first.
    """
    with trio.fail_after(seconds):
        while not await trio.Path(str(path)).exists():  # noqa: ASYNC110  # no event to wait on
            await trio.sleep(0.02)
