"""Servers the tests start in subprocesses, on 127.0.0.1: a free port, waiting for one
to listen, and waiting for a file another process writes."""

from __future__ import annotations

import socket
import subprocess
import time

import trio


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
