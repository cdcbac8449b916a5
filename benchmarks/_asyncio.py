"""Troupe read from asyncio (``actors.aio``) against the same reads inside trio.

The cat agent on a network-shaped model (a new chunk per token, a scheduler pass
between tokens), its events read as the seed's loop reads them: µs per token is the
slope of run time between K=200 and K=2,000 tokens, so per-run costs cancel out. The
same runs are timed inside ``trio.run`` and from ``asyncio.run`` with trio in a thread
of its own and as a guest on the loop, in this one process; each figure is the median of
rounds that alternate the three. The figure is the median of the rounds' ratios
(asyncio ÷ trio; target at most 1.5).

``python -m benchmarks._asyncio`` prints one JSON object (``--quick``: small sizes).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import trio

from actors.aio import Mode, open_asyncio_runtime
from runtime import open_runtime

from ._timing import ratio_of
from ._workload import cat_agent, seconds_per_read_run


async def _in_trio(ks: Sequence[int], runs: int) -> dict[int, float]:
    async with open_runtime():
        return {k: await seconds_per_read_run(cat_agent(k, network_like=True), runs) for k in ks}


async def _in_asyncio(mode: Mode, ks: Sequence[int], runs: int) -> dict[int, float]:
    async with open_asyncio_runtime(mode=mode) as rt:
        return {
            k: await seconds_per_read_run(cat_agent(k, network_like=True), runs, rt) for k in ks
        }


def _slope(seconds: dict[int, float], low: int, high: int) -> float:
    return (seconds[high] - seconds[low]) / (high - low) * 1e6


def main(argv: Sequence[str]) -> dict[str, Any]:
    quick = "--quick" in argv
    low, high = (20, 200) if quick else (200, 2000)
    runs, rounds = (3, 1) if quick else (20, 5)
    figures: dict[str, list[float]] = {"trio": [], "thread": [], "guest": []}
    for _ in range(rounds):
        figures["trio"].append(_slope(trio.run(_in_trio, (low, high), runs), low, high))
        for mode in ("thread", "guest"):
            seconds = asyncio.run(_in_asyncio(mode, (low, high), runs))
            figures[mode].append(_slope(seconds, low, high))
    us = {name: statistics.median(values) for name, values in figures.items()}
    thread = ratio_of(figures["thread"], figures["trio"])
    guest = ratio_of(figures["guest"], figures["trio"])
    return {
        "tokens": [low, high],
        "runs": runs,
        "us_per_token": us,
        "us_per_token_each": figures,
        "ratio_thread": thread["ratio"],
        "ratios_thread": thread["ratios"],
        "ratio_guest": guest["ratio"],
        "ratios_guest": guest["ratios"],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
