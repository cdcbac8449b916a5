"""Small performers for runtime tests: the runtime knows nothing of LLMs, neither do these."""

from __future__ import annotations

from typing import Any

import trio
from attrs import field, frozen

from runtime import Performer, Run, Runnable


@frozen(eq=False)
class Step(Performer[str, str]):
    """Streams the words of its input, asks each child, then returns the input.

    ``fail`` raises ValueError with that text; ``block`` waits forever (to be cancelled);
    ``started`` is set when a run begins.
    """

    name: str = "step"
    children: tuple[Runnable[Any], ...] = ()
    fail: str | None = None
    block: bool = False
    started: trio.Event | None = field(default=None)
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    max_concurrency: int | None = None

    def coerce_input(self, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"step takes a string, got {type(value).__name__}")
        return value

    async def perform(self, message: str, run: Run) -> str:
        if self.started is not None:
            self.started.set()
        for word in message.split():
            await run.emit(word)
        for child in self.children:
            await run.request(child, message)
        if self.block:
            await trio.sleep_forever()
        if self.fail is not None:
            raise ValueError(self.fail)
        return message
