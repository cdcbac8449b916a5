"""Isolation: other runs' throughput while one consumer stalls, against none stalling.

Each round runs N cat agents at once in one runtime, on a model shaped like a network
stream (a new chunk per token, a scheduler pass between tokens), each consumer reading
its events as the seed's loop does. In a *stalled* round one more stream, of a very long
run, is read once and then left unread for the whole round. Rounds alternate, and the
figure is the median ratio of stalled to clean runs per second (target >= 0.9).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import trio

from actors import Agent, ScriptedTurn
from runtime import open_runtime

from ._workload import QUESTION, NetworkLikeModel, answer_tokens, cat_agent, read_run


async def _round(n: int, k: int, stall: bool) -> float:
    agent = cat_agent(k, network_like=True)
    long_answer = NetworkLikeModel([ScriptedTurn(tokens=answer_tokens(1_000_000))])
    stalled_agent = Agent(long_answer, name="Stalled")

    async def one() -> None:
        await read_run(agent)

    async with open_runtime():
        await one()  # warm-up
        stalled = None
        if stall:
            stalled = stalled_agent.astream_events(QUESTION)
            await stalled.__aenter__()
            async for _ in stalled:
                break  # read once, then nothing more
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        elapsed = time.perf_counter() - start
        if stalled is not None:
            await stalled.__aexit__(None, None, None)
    return n / elapsed


async def isolation(n: int, k: int, rounds: int) -> dict[str, Any]:
    """Runs/s of ``n`` concurrent runs with and without one stalled consumer."""
    clean: list[float] = []
    stalled: list[float] = []
    for _ in range(rounds):
        clean.append(await _round(n, k, stall=False))
        stalled.append(await _round(n, k, stall=True))
    ratios = [s / c for s, c in zip(stalled, clean, strict=True)]
    return {
        "runs": n,
        "tokens": k,
        "rounds": rounds,
        "clean_runs_per_second": statistics.median(clean),
        "stalled_runs_per_second": statistics.median(stalled),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }
