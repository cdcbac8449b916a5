"""Memory of a long-lived runtime, whatever users do: it must plateau.

One runtime serves many runs, each with a fresh ``Agent`` (a per-user system prompt is
the common reason) over shared model and tools, in a mix of what users do: a plain
call, a stream read to the end, a stream left after a few events, a stream cancelled
before its run could start, a run whose tool fails. Resident memory is sampled (after a
garbage collection) along the way: the curve, and how much it grew over its second half.

``python -m benchmarks._soak sequential N`` (N runs one after another) or
``python -m benchmarks._soak concurrent N ROUNDS`` (ROUNDS rounds of N at once). Prints
one JSON object.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ChatMessage, ToolMessage
from runtime import Runtime, open_runtime

from ._concurrency import current_rss_kib
from ._workload import get_items, where_cat_is_hiding


@tool
async def fragile(place: str) -> str:
    """Fails for the attic."""
    if place == "attic":
        raise RuntimeError("no attic here")
    return "boxes"


def _script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    done = {m.name for m in messages if isinstance(m, ToolMessage)}
    if "where_cat_is_hiding" not in done:
        return ScriptedTurn(tool_calls=[ScriptedCall("where_cat_is_hiding")])
    if "fragile" not in done:
        return ScriptedTurn(tool_calls=[ScriptedCall("fragile", {"place": "attic"})])
    return ScriptedTurn("The cat is on the shelf, " + "near the books " * 5)


MODEL = ScriptedChatModel(_script)
TOOLS = [where_cat_is_hiding, get_items, fragile]


async def one_run(index: int) -> None:
    """One user's request: which of five things it does depends on ``index``."""
    agent = Agent(MODEL, TOOLS, system_prompt=f"You help user {index}.")
    what = index % 5
    if what == 0:
        await agent.ainvoke("where is the cat?")
    elif what == 1:
        async with agent.astream_events("where is the cat?") as events:
            async for _ in events:
                pass
    elif what == 2:
        async with agent.astream_events("where is the cat?") as events:
            async for seen, _ in enumerate_async(events):
                if seen == 3:
                    break
    elif what == 3:
        with trio.move_on_after(0):
            async with agent.astream_events("where is the cat?") as events:
                async for _ in events:
                    pass
    else:
        async with agent.astream_log("where is the cat?") as log:
            async for _ in log:
                pass


async def enumerate_async(stream: Any) -> Any:
    index = 0
    async for item in stream:
        yield index, item
        index += 1


def _sample(rt: Runtime, runs: int) -> dict[str, Any]:
    gc.collect()
    return {
        "runs": runs,
        "rss_kib": current_rss_kib(),
        "objects": len(gc.get_objects()),
        "actors": rt.actors,
        "open_runs": rt.open_runs,
        "pending_subscriptions": len(rt._tracer._pending),
    }


def growth(values: Sequence[float]) -> tuple[float, float]:
    """How much ``values`` (samples along a soak, the first taken before any run) grew
    over the second half: the second half's median less the first half's, and that
    as a percentage of the first half's, the warm-up sample left out.

    Raises:
        ValueError: fewer than 4 samples (a start, the warm-up, and one for each half).
    """
    if len(values) < 4:
        raise ValueError(f"a soak needs at least 4 samples to judge growth, got {len(values)}")
    settled = values[2:]
    half = len(settled) // 2
    first = statistics.median(settled[:half])
    second = statistics.median(settled[half:])
    return second - first, 100.0 * (second - first) / first


def _summary(curve: list[dict[str, Any]]) -> dict[str, Any]:
    rss_kib, rss_pct = growth([c["rss_kib"] for c in curve])
    objects, objects_pct = growth([c["objects"] for c in curve])
    return {
        "curve": curve,
        "rss_growth_second_half_kib": rss_kib,
        "rss_growth_second_half_pct": rss_pct,
        "objects_growth_second_half": objects,
        "objects_growth_second_half_pct": objects_pct,
    }


async def sequential(total: int, samples: int = 10) -> dict[str, Any]:
    curve = []
    step = max(1, total // samples)
    async with open_runtime() as rt:
        curve.append(_sample(rt, 0))
        for index in range(total):
            await one_run(index)
            if (index + 1) % step == 0:
                await trio.testing.wait_all_tasks_blocked()
                curve.append(_sample(rt, index + 1))
    return {"mode": "sequential", "total": total, **_summary(curve)}


async def concurrent(n: int, rounds: int) -> dict[str, Any]:
    curve = []
    async with open_runtime() as rt:
        curve.append(_sample(rt, 0))
        for round_no in range(rounds):
            async with trio.open_nursery() as nursery:
                for index in range(n):
                    nursery.start_soon(one_run, round_no * n + index)
            await trio.testing.wait_all_tasks_blocked()
            curve.append(_sample(rt, (round_no + 1) * n))
    return {"mode": "concurrent", "runs_at_once": n, "rounds": rounds, **_summary(curve)}


if __name__ == "__main__":
    if sys.argv[1] == "sequential":
        result = trio.run(sequential, int(sys.argv[2]))
    else:
        result = trio.run(concurrent, int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(result))
