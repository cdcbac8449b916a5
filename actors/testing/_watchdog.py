"""A hang watchdog: ``trio.fail_after`` cannot see a shielded wait, so a thread watches
the clock instead, and on a hang writes trio's task tree (every task and where each one
waits) before ending the process, which is the only way out of a wait nothing can
cancel.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import CoroutineType, FrameType
from typing import Any, Final, TypeVar

import trio

T = TypeVar("T")

HANG_EXIT_CODE: Final = 3
"""The process's exit status after a hang."""


def hang_dir() -> str:
    """Where hang reports go: ``TROUPE_HANG_DIR``, default ``.hangs``."""
    return os.environ.get("TROUPE_HANG_DIR", ".hangs")


def task_tree() -> str:
    """Every task of the current trio run, indented by nursery, with its await stack."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        lines.append(f"{'  ' * depth}- {task.name}")
        for frame in _frames(task.coro):
            code = frame.f_code
            lines.append(f"{'  ' * depth}    {code.co_filename}:{frame.f_lineno} {code.co_name}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    root = trio.lowlevel.current_root_task()
    if root is not None:
        walk(root, 0)
    return "\n".join(lines)


def _frames(coro: Any) -> list[FrameType]:
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if (
            coro is not None
            and not isinstance(coro, CoroutineType)
            and not hasattr(coro, "cr_frame")
            and not hasattr(coro, "gi_frame")
        ):
            break
    return frames


@contextlib.contextmanager
def hang_watchdog(
    seconds: float, label: str, token: trio.lowlevel.TrioToken | None = None
) -> Iterator[None]:
    """Inside a trio run: if the block has not finished after ``seconds``, write the task
    tree (or, if trio itself is stuck, every thread's stack) to stderr and to a file in
    :func:`hang_dir`, then end the process with status :data:`HANG_EXIT_CODE`.

    Elsewhere (an asyncio program with trio beside it), pass the trio run's ``token``:
    its task tree is written."""
    if token is None:
        token = trio.lowlevel.current_trio_token()
    finished = threading.Event()
    thread = threading.Thread(
        target=_watch, args=(token, finished, seconds, label), name="troupe hang watchdog"
    )
    thread.daemon = True
    thread.start()
    try:
        yield
    finally:
        finished.set()


def run_watched(main: Callable[[], Awaitable[T]], *, seconds: float, label: str) -> T:
    """``trio.run(main)`` under :func:`hang_watchdog`: for generated test cases, each of
    which must finish whatever it is made to do."""

    async def watched() -> T:
        with hang_watchdog(seconds, label):
            return await main()

    return trio.run(watched)


def _watch(
    token: trio.lowlevel.TrioToken, finished: threading.Event, seconds: float, label: str
) -> None:
    if finished.wait(seconds):
        return
    dumped = threading.Event()
    text: list[str] = []

    def dump() -> None:
        text.append(task_tree())
        dumped.set()

    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(dump)
    # pytest captures stderr into a file that dies with the process: the dump also goes
    # to a file a CI script can print when the tests fail.
    directory = hang_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"hang-{os.getpid()}.txt")
    with open(path, "w", encoding="utf-8") as out:
        out.write(f"*** hang: {label} did not finish within {seconds} s ***\n")
        if dumped.wait(5):
            out.write(text[0] + "\n")
        else:
            out.flush()
            faulthandler.dump_traceback(file=out, all_threads=True)
    with open(path, encoding="utf-8") as report:
        sys.stderr.write(report.read())
    sys.stderr.flush()
    os._exit(HANG_EXIT_CODE)
