"""``troupe serve --workers N``: N server processes on one listening socket and one store.

The supervisor (this module, the process the user started) binds the address once and
starts N ``troupe serve`` processes with the same arguments, each given the listening
socket (``--listen-fd``, an inherited descriptor; hypercorn's own ``--workers`` shares
its sockets the same way). Each worker accepts connections from it as they come, and
runs the runs of its connections; the store (PostgreSQL, or SQLite for finished runs and
threads) lets every worker stream, join and cancel the runs of the others.

A shared socket rather than one ``SO_REUSEPORT`` socket per worker: connections waiting
in the listen backlog are not lost when a worker dies (a ``SO_REUSEPORT`` socket's
backlog dies with its process), and ``--port 0`` needs no port reserved.

Faults:

- a worker that exits before it first serves (it could not open the store, import the
  target, ...) stops the whole server: its own one-line message is on stderr, and the
  supervisor exits with its status after stopping the others;
- a worker that dies while serving (killed, crashed) is reported on stderr and started
  again; its runs in flight are ended (or resumed) by the sweep of the others and of
  the new worker (the journal's owners and orphans). Workers dying (or failing to start
  again) more than :data:`MAX_RESTARTS` times within :data:`RESTART_WINDOW` seconds stop
  the server (exit status 1), rather than restarting forever;
- SIGTERM or SIGINT: every worker is sent SIGTERM and drains as one ``troupe serve``
  does (its runs are cancelled, their clients get their ``cancelled`` end); a worker
  still running :data:`STOP_TIMEOUT` seconds later is killed;
- the supervisor dies (SIGKILL): each worker's stdin is a pipe from it, and a worker
  that reads its end drains and stops (no worker outlives its supervisor).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Final

import trio

STOP_TIMEOUT: Final = 30.0
"""Seconds the workers get to drain and stop after SIGTERM (their drain takes up to 10,
their connections' last writes 5 more) before they are killed."""
START_TIMEOUT: Final = 60.0
"""Seconds a worker may take to start serving."""
MAX_RESTARTS: Final = 5
RESTART_WINDOW: Final = 60.0
"""A worker dying more than :data:`MAX_RESTARTS` times within this many seconds stops the
server."""
READY: Final = b"troupe: serving on "
"""How a worker says it serves (the first line of its stdout)."""


class WorkerFailed(Exception):
    """A worker could not start, or workers keep dying; ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound and listening, inheritable by the workers.

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(4096)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def _how(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Supervisor:
    """Runs the workers (see the module's docstring).

    Args:
        command: a worker's command line, without ``--listen-fd``.
        workers: how many.
        sock: the listening socket they share.
    """

    def __init__(self, command: Sequence[str], workers: int, sock: socket.socket) -> None:
        self.command = [*command, "--listen-fd", str(sock.fileno())]
        self.workers = workers
        self.sock = sock
        self.stopping = False
        self.processes: dict[int, trio.Process] = {}
        self._deaths: deque[float] = deque()

    async def run(self) -> None:
        """Start the workers, say where they serve, and supervise them until SIGTERM or
        SIGINT (then stop them) or a failure (then stop them and raise it).

        Raises:
            WorkerFailed: a worker could not start, or workers keep dying.
        """
        failure: list[WorkerFailed] = []
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_when_signalled() -> None:
                    # From the start: a signal that came while the workers were still
                    # starting (up to START_TIMEOUT each) waited until every one served
                    # (the server said it served, then stopped).
                    async for _ in signals:
                        break
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_when_signalled)

                async def watch(
                    index: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                ) -> None:
                    serving = trio.Event()
                    try:
                        await self._keep(index, serving, task_status)
                    except WorkerFailed as exc:
                        failure.append(exc)
                        nursery.cancel_scope.cancel()
                        if not serving.is_set():
                            task_status.started()

                try:
                    for index in range(self.workers):
                        await nursery.start(watch, index)
                        if failure:
                            break
                except BaseException:
                    nursery.cancel_scope.cancel()
                    raise
                if failure:
                    nursery.cancel_scope.cancel()
                else:
                    url = _url(self.sock)
                    pids = ", ".join(str(p.pid) for p in self.processes.values())
                    print(f"troupe: serving on {url} ({self.workers} workers: pids {pids})")
                    print(f"troupe: the run viewer is at {url}/", flush=True)
        with trio.CancelScope(shield=True):
            await self._stop_all()
        if failure:
            raise failure[0]

    async def _keep(
        self, index: int, serving: trio.Event, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run worker ``index``, starting it again when it dies (see the module's
        docstring); ``serving`` is set and ``task_status.started()`` called once it
        first serves."""
        while True:
            process = await trio.lowlevel.open_process(
                self.command,
                stdin=subprocess.PIPE,  # its lifeline: it stops when this end closes
                stdout=subprocess.PIPE,
                pass_fds=(self.sock.fileno(),),
            )
            self.processes[index] = process
            ready = await self._ready(process)
            if ready:
                if not serving.is_set():
                    serving.set()
                    task_status.started()
                async with trio.open_nursery() as drain:
                    drain.start_soon(self._discard, process)
                    code = await process.wait()
                    drain.cancel_scope.cancel()
            else:
                code = await process.wait()
                if not serving.is_set():  # its first start: the whole server's fails
                    raise WorkerFailed(
                        f"troupe serve: worker {index + 1} (pid {process.pid}) did not start "
                        f"({_how(code)})",
                        code if code > 0 else 1,
                    )
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - RESTART_WINDOW:
                self._deaths.popleft()
            if len(self._deaths) > MAX_RESTARTS:
                raise WorkerFailed(
                    f"troupe serve: workers died {len(self._deaths)} times within "
                    f"{RESTART_WINDOW:g} s (the last, worker {index + 1}, {_how(code)}): "
                    "stopping",
                    1,
                )
            what = "died" if ready else "did not start again"
            print(
                f"troupe serve: worker {index + 1} (pid {process.pid}) {what} ({_how(code)}); "
                "starting another (its runs in flight are ended or resumed by the others)",
                file=sys.stderr,
                flush=True,
            )

    @staticmethod
    async def _ready(process: trio.Process) -> bool:
        """Read the worker's stdout until it says it serves; ``False`` if it ended first
        (or took :data:`START_TIMEOUT` seconds: it is killed)."""
        assert process.stdout is not None
        buffer = b""
        with trio.move_on_after(START_TIMEOUT):
            while True:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    return False
                *lines, buffer = (buffer + chunk).split(b"\n")
                if any(line.startswith(READY) for line in lines):
                    return True
        process.kill()
        return False

    @staticmethod
    async def _discard(process: trio.Process) -> None:
        """Read what the worker still writes to its stdout (so that it never blocks)."""
        assert process.stdout is not None
        while await process.stdout.receive_some(4096):
            pass

    async def _stop_all(self) -> None:
        """SIGTERM to every worker; kill those still running after :data:`STOP_TIMEOUT`."""
        self.stopping = True
        running = [p for p in self.processes.values() if p.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT):
            for process in running:
                await process.wait()
        for process in running:
            if process.returncode is None:
                print(
                    f"troupe serve: worker pid {process.pid} did not stop within "
                    f"{STOP_TIMEOUT:g} s: killed",
                    file=sys.stderr,
                )
                process.kill()
                await process.wait()
