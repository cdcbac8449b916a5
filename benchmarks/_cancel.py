"""Cancellation latency: from leaving a run's stream to its last task gone."""

from __future__ import annotations

import statistics
import time
from typing import Any

import trio

from runtime import open_runtime

from ._timing import percentile
from ._workload import QUESTION, cat_agent


def serving_tasks() -> int:
    """Request-serving tasks alive in this trio run (one per run in progress)."""
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        count += task.name.endswith("_serve_one")
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


async def cancellation_latency(runs: int) -> dict[str, Any]:
    """Break out of ``runs`` streams mid-answer; time each exit of the ``async with``.

    The model streams a token a millisecond, so each run is cut while its model is
    streaming inside the agent. Leaving the block returns only when every task of the
    run has stopped, which the task tree confirms after each run.
    """
    agent = cat_agent(10_000, token_delay=0.001)
    latencies: list[float] = []
    leaked = 0
    async with open_runtime():
        for _ in range(runs):
            async with agent.astream_events(QUESTION, include_types=["chat_model"]) as events:
                async for event in events:
                    if event.phase == "stream" and event.data.chunk.content:
                        break
                start = time.perf_counter()
            latencies.append(time.perf_counter() - start)
            leaked += serving_tasks()
    return {
        "runs": runs,
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "leaked_tasks": leaked,
    }
