"""Timing helpers: medians of repeated samples, in one trio run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


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


def ratio_of(measured: list[float], floor: list[float]) -> dict[str, Any]:
    """Rounds of a figure against its floor's, round by round: the median ratio and each
    round's."""
    ratios = [m / f for m, f in zip(measured, floor, strict=True)]
    return {"ratio": statistics.median(ratios), "ratios": ratios}


class GCTime:
    """The wall time the cyclic garbage collector takes, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
