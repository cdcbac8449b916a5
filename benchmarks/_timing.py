"""Timing helpers: medians of repeated samples, in one trio run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


async def median_seconds(
    call: Callable[[], Awaitable[object]], *, samples: int, batch: int
) -> float:
    """The median over ``samples`` of the mean time of ``batch`` calls (after one warm-up)."""
    await call()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(batch):
            await call()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]
