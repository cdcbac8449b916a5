"""Speed as users get it: each row is a way a model streams and a consumer reads, timed
for Troupe and for its limit, a raw trio pipeline with the same hops and the same
scheduler passes, in the same process; the figure to judge is Troupe ÷ limit.

Rows (µs per token, the slope between K = 200 and K = 2000 answer tokens):

- ``fast path``: the scripted model's runs of 64 cached chunks, a consumer that counts
  events without reading them (the benchmark's own shape, kept as a row of its own);
- ``chunk per token, reading``: a new chunk object per token, a scheduler pass every 64
  tokens, the seed's loop reading ``event["event"]``, ``event["name"]`` and
  ``event["data"]["chunk"].content``;
- ``chunk per token, yield per token, reading``: the same with a scheduler pass per
  token, as tokens read off a socket arrive (the headline).

And ``concurrent``: N runs at once (K = 200) with a chunk per token and the reading
consumer, runs per second for Troupe and for N raw pipelines, with the share of the wall
time the cyclic garbage collector took; beside them the design's floor
(``raw_agent_shaped``: raw trio with the tasks and hops Troupe's design gives a cat agent
run, a task per performer, each read a cancel point, and nothing else), so that what
the runtime itself spends reads apart from what its architecture stands on; and the
run's floor (``benchmarks._floor``: raw trio doing all that the promises and issue 29
require of the run, events and cancel scopes included, and nothing else), read as
floor ÷ the raw pipelines and Troupe ÷ the floor.

``python -m benchmarks._shapes`` prints JSON (``--quick``: small sizes).
"""

from __future__ import annotations

import functools
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from runtime import open_runtime

from ._concurrency import current_rss_kib, peak_rss_kib, reset_peak_rss
from ._floor import cat_floor, read_floor_run
from ._raw import raw_agent_shaped, raw_shaped
from ._timing import QUICK_SAMPLING, SAMPLING, GCTime, batch_of, median_seconds
from ._workload import QUESTION, cat_agent, read_events, read_run

ROWS: Final[dict[str, tuple[dict[str, Any], bool, int, bool]]] = {
    # name: (Troupe's model shape, consumer reads, raw: yield every, fresh objects)
    "fast path": ({"network_like": False}, False, 64, False),
    "chunk per token, reading": ({"network_like": True, "yield_every": 64}, True, 64, True),
    "chunk per token, yield per token, reading": (
        {"network_like": True, "yield_every": 1},
        True,
        1,
        True,
    ),
}


def _troupe(k: int, *, shape: dict[str, Any], read: bool) -> Callable[[], Awaitable[int]]:
    agent = cat_agent(k, **shape)

    async def run() -> int:
        seen = 0
        async with agent.astream_events(QUESTION) as events:
            async for event in events:
                seen += read_events(event) if read else 1
        return seen

    return run


def _raw(
    k: int, *, yield_every: int, fresh: bool, read: bool, cancel: bool = False
) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        return await raw_shaped(
            k, yield_every=yield_every, fresh=fresh, read=read, cancel_points=cancel
        )

    return run


async def _slope(
    make: Callable[[int], Callable[[], Awaitable[int]]],
    low: int,
    high: int,
    sampling: tuple[int, int],
) -> float:
    samples, tokens = sampling
    seconds = {}
    for k in (low, high):
        seconds[k] = await median_seconds(make(k), samples=samples, batch=batch_of(tokens, k))
    return (seconds[high] - seconds[low]) / (high - low) * 1e6


async def token_rows(low: int, high: int, sampling: tuple[int, int] = SAMPLING) -> dict[str, Any]:
    """µs per token of each row, Troupe and limit, in one process."""
    out: dict[str, Any] = {}
    async with open_runtime():
        for name, (shape, read, every, fresh) in ROWS.items():
            troupe = await _slope(
                functools.partial(_troupe, shape=shape, read=read), low, high, sampling
            )
            limit = await _slope(
                functools.partial(_raw, yield_every=every, fresh=fresh, read=read),
                low,
                high,
                sampling,
            )
            # The limit's reads are no checkpoints; Troupe's are all cancel points
            # (trio's rule). The limit with a cancel point per read, beside it: not the
            # figure judged, the one that tells what the rule itself costs.
            checked = await _slope(
                functools.partial(_raw, yield_every=every, fresh=fresh, read=read, cancel=True),
                low,
                high,
                sampling,
            )
            out[name] = {
                "troupe_us": troupe,
                "limit_us": limit,
                "ratio": troupe / limit,
                "limit_cancel_points_us": checked,
                "ratio_to_limit_cancel_points": troupe / checked,
            }
    return out


async def _timed_runs(n: int, run: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """``n`` runs at once: the seconds they took, and the collector's share of them."""
    gc.collect()
    timer = GCTime()
    gc.callbacks.append(timer)
    try:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(run)
        seconds = time.perf_counter() - start
    finally:
        gc.callbacks.remove(timer)
    return seconds, timer.seconds / seconds


async def concurrent(n: int, k: int, *, yield_every: int) -> dict[str, Any]:
    """``n`` runs at once with a chunk per token and the reading consumer, and ``n``
    raw pipelines with the same shape: runs per second each, and the collector's share."""
    agent = cat_agent(k, network_like=True, yield_every=yield_every)

    async def one() -> None:
        await read_run(agent)

    async with open_runtime():
        await one()  # warm-up
        gc.collect()
        reset_peak_rss()
        before = current_rss_kib()
        troupe, troupe_gc = await _timed_runs(n, one)
        rss_per_run = max(0, peak_rss_kib() - before) / n
    raw, raw_gc = await _timed_runs(
        n, lambda: raw_shaped(k, yield_every=yield_every, fresh=True, read=True)
    )
    floor, floor_gc = await _timed_runs(n, lambda: raw_agent_shaped(k, yield_every=yield_every))
    async with trio.open_nursery() as supervisor:
        run_floor = cat_floor(k, yield_every=yield_every)
        await read_floor_run(supervisor, run_floor)  # warm-up
        on_floor, on_floor_gc = await _timed_runs(n, lambda: read_floor_run(supervisor, run_floor))
    return {
        "runs": n,
        "tokens": k,
        "yield_every": yield_every,
        "troupe_runs_per_second": n / troupe,
        "limit_runs_per_second": n / raw,
        "gc_share": troupe_gc,
        "limit_gc_share": raw_gc,
        "design_floor_runs_per_second": n / floor,
        "ratio_to_design_floor": floor / troupe,
        "design_floor_gc_share": floor_gc,
        "run_floor_runs_per_second": n / on_floor,
        "run_floor_over_limit": raw / on_floor,
        "troupe_over_run_floor": on_floor / troupe,
        "run_floor_gc_share": on_floor_gc,
        "rss_per_run_kib": rss_per_run,
    }


def main(argv: Sequence[str]) -> dict[str, Any]:
    quick = "--quick" in argv
    low, high = (20, 200) if quick else (200, 2000)
    sampling = QUICK_SAMPLING if quick else SAMPLING
    rows = [trio.run(token_rows, low, high, sampling) for _ in range(1 if quick else 3)]
    tokens = {
        name: {
            key: statistics.median(r[name][key] for r in rows)
            for key in (
                "troupe_us",
                "limit_us",
                "ratio",
                "limit_cancel_points_us",
                "ratio_to_limit_cancel_points",
            )
        }
        | {"troupe_us_each": [r[name]["troupe_us"] for r in rows]}
        for name in ROWS
    }
    if quick:
        runs = [trio.run(lambda: concurrent(10, 20, yield_every=64))]
    else:
        runs = [
            trio.run(lambda: concurrent(1_000, 200, yield_every=64)),
            # tokens off a socket: a scheduler pass per token, 10,000 runs at once
            trio.run(lambda: concurrent(10_000, 200, yield_every=1)),
        ]
    return {"tokens": tokens, "token_range": [low, high], "concurrent": runs}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
