"""Per-token overhead: the slope of run time between K=200 and K=2000 answer tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from runtime import open_runtime

from ._raw import raw_pipeline
from ._timing import SAMPLING, batch_of, median_seconds
from ._workload import QUESTION, cat_agent


async def consume_events(k: int) -> Callable[[], Awaitable[int]]:
    agent = cat_agent(k)

    async def run() -> int:
        count = 0
        async with agent.astream_events(QUESTION) as events:
            async for _ in events:
                count += 1
        return count

    return run


async def consume_steps(k: int) -> Callable[[], Awaitable[int]]:
    agent = cat_agent(k)

    async def run() -> int:
        count = 0
        async with agent.astream(QUESTION) as steps:
            async for _ in steps:
                count += 1
        return count

    return run


async def plain_call(k: int) -> Callable[[], Awaitable[int]]:
    agent = cat_agent(k)

    async def run() -> int:
        await agent.ainvoke(QUESTION)
        return 1

    return run


async def raw(k: int) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        return await raw_pipeline(k)

    return run


MODES: dict[str, Callable[[int], Awaitable[Callable[[], Awaitable[int]]]]] = {
    "events": consume_events,
    "steps": consume_steps,
    "invoke": plain_call,
    "raw": raw,
}


async def per_token(
    mode: str, low: int, high: int, samples: int, tokens: int = SAMPLING[1]
) -> dict[str, Any]:
    """Time ``mode`` at ``low`` and ``high`` tokens; the slope is the cost per token."""
    seconds = {}
    items = {}
    async with open_runtime():
        for k in (low, high):
            run = await MODES[mode](k)
            items[k] = await run()
            seconds[k] = await median_seconds(run, samples=samples, batch=batch_of(tokens, k))
    slope = (seconds[high] - seconds[low]) / (high - low)
    return {
        "mode": mode,
        "tokens": [low, high],
        "seconds_per_run": [seconds[low], seconds[high]],
        "items_per_run": [items[low], items[high]],
        "us_per_token": slope * 1e6,
        "items_per_second": items[high] / seconds[high],
    }
