"""A process that runs ``r1`` on a store, a run that streams a chunk then sleeps, and
is killed as it sleeps (for tests of a run recovered by another process)."""

from __future__ import annotations

import sys
from typing import Any

import trio

from runtime import Performer, Run, open_runtime


class Sleeper(Performer[str, str]):
    """Streams "dozing", then sleeps until ``woken`` is set (forever if never)."""

    name = "sleeper"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012

    def __init__(self) -> None:
        self.asleep = trio.Event()
        self.woken = trio.Event()

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def perform(self, message: str, run: Run) -> str:
        await run.emit("dozing")
        self.asleep.set()
        print("asleep", flush=True)
        await self.woken.wait()
        return "awake"


async def main(url: str) -> None:
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(Sleeper(), "nap", run_id="r1")


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
