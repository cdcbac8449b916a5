"""A hang watchdog for generated cases: ``trio.fail_after`` cannot see a shielded wait,
so a thread watches the clock instead, and on a hang prints trio's task tree (every
task and where each one waits) before ending the process.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from types import CoroutineType, FrameType
from typing import Any, TypeVar

import trio

T = TypeVar("T")

HANG_EXIT_CODE = 3
HANG_DIR = os.environ.get("TROUPE_HANG_DIR", ".hangs")


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

    walk(trio.lowlevel.current_root_task(), 0)  # type: ignore[arg-type]  # inside a run
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


def run_watched(main: Callable[[], Awaitable[T]], *, seconds: float, label: str) -> T:
    """``trio.run(main)``; if it has not finished after ``seconds``, print the task tree
    (or, if trio itself is stuck, every thread's stack) and exit the process."""
    token: list[trio.lowlevel.TrioToken] = []
    finished = threading.Event()

    async def watched() -> T:
        token.append(trio.lowlevel.current_trio_token())
        return await main()

    def watch() -> None:
        if finished.wait(seconds):
            return
        dumped = threading.Event()
        text: list[str] = []

        def dump() -> None:
            text.append(task_tree())
            dumped.set()

        with contextlib.suppress(IndexError, trio.RunFinishedError):
            token[0].run_sync_soon(dump)
        # pytest captures stderr into a file that dies with the process: the dump
        # also goes to HANG_DIR, which .ci/run prints when the tests fail.
        os.makedirs(HANG_DIR, exist_ok=True)
        path = os.path.join(HANG_DIR, f"hang-{os.getpid()}.txt")
        with open(path, "w", encoding="utf-8") as out:
            out.write(f"*** hang: {label} did not finish within {seconds} s ***\n")
            if dumped.wait(5):
                out.write(text[0] + "\n")
            else:
                out.flush()
                faulthandler.dump_traceback(file=out, all_threads=True)
        with open(path, encoding="utf-8") as dumped_text:
            sys.stderr.write(dumped_text.read())
        sys.stderr.flush()
        os._exit(HANG_EXIT_CODE)

    thread = threading.Thread(target=watch, name="troupe hang watchdog", daemon=True)
    thread.start()
    try:
        return trio.run(watched)
    finally:
        finished.set()
        thread.join()
