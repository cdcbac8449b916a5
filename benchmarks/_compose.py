"""Agents that compose (issue 35): what nesting an agent as a tool and a passing
guardrail cost per token, each against a floor measured in the same process.

Rows (µs per token, the slope between K = 200 and K = 2000 answer tokens; a new chunk
per token with a scheduler pass every 64, the seed's loop reading every event):

- ``top-level agent``: the cat agent, its answer of K tokens (the floor);
- ``agent as a tool``: an outer agent calls the same cat agent as a tool
  (``as_tool``); its K tokens stream inside the outer run's tree, read by the outer
  stream's consumer. Target: at most 1.2 times the floor;
- ``passing input guardrail``: the cat agent with an input guardrail (a function) that
  passes. Target: at most one scheduler pass per token more than the floor, where one
  scheduler pass per token is measured as the same agent with a pass per token instead
  of one every 64 (``scheduler pass per token``).

Rows are timed in interleaved rounds, each figure the median of its rounds, so that a
drift of the machine falls on every row alike.

``python -m benchmarks._compose`` prints JSON (``--quick``: small sizes, one round).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import attrs
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, input_guardrail
from protocol import AgentRequest, ChatMessage, ToolMessage
from runtime import open_runtime

from ._timing import QUICK_SAMPLING, SAMPLING, batch_of, median_seconds
from ._workload import QUESTION, cat_agent, read_events

ROWS: Final = (
    "top-level agent",
    "agent as a tool",
    "passing input guardrail",
    "scheduler pass per token",
)


@input_guardrail
def _passes(request: AgentRequest) -> None:
    """A guardrail that lets everything through."""


def _outer(inner: Agent) -> Agent:
    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        if not any(isinstance(m, ToolMessage) for m in messages):
            return ScriptedTurn(tool_calls=[ScriptedCall("cat", {"input": QUESTION})])
        return ScriptedTurn("Done.")

    return Agent(ScriptedChatModel(script, name="outer_llm"), [inner.as_tool("cat")], name="Outer")


def agent_for(row: str, k: int) -> Agent:
    """The agent a row runs, answering ``k`` tokens."""
    base = cat_agent(k, network_like=True, yield_every=64)
    if row == "agent as a tool":
        return _outer(base)
    if row == "passing input guardrail":
        return attrs.evolve(base, guardrails=[_passes])
    if row == "scheduler pass per token":
        return cat_agent(k, network_like=True, yield_every=1)
    return base


def _reading(agent: Agent) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        seen = 0
        async with agent.astream_events(QUESTION) as events:
            async for event in events:
                seen += read_events(event)
        return seen

    return run


async def compose_rows(
    low: int, high: int, rounds: int, sampling: tuple[int, int] = SAMPLING
) -> dict[str, Any]:
    """Each row's µs per token (median of ``rounds`` interleaved rounds) and the two
    ratios judged."""
    samples, tokens = sampling
    slopes: dict[str, list[float]] = {row: [] for row in ROWS}
    async with open_runtime():
        runs = {(row, k): _reading(agent_for(row, k)) for row in ROWS for k in (low, high)}
        for (row, k), run in runs.items():
            assert await run() >= k, f"{row} at K={k} read too few tokens"
        for _ in range(rounds):
            for row in ROWS:
                seconds = {
                    k: await median_seconds(
                        runs[row, k], samples=samples, batch=batch_of(tokens, k)
                    )
                    for k in (low, high)
                }
                slopes[row].append((seconds[high] - seconds[low]) / (high - low) * 1e6)
    us = {row: statistics.median(values) for row, values in slopes.items()}
    floors = slopes["top-level agent"]
    # Ratios and differences per round (rows of one round ran side by side), then the
    # median over rounds: what another process does to the machine falls on both sides.
    as_tool = [a / f for a, f in zip(slopes["agent as a tool"], floors, strict=True) if f > 0]
    passes = [p - f for p, f in zip(slopes["scheduler pass per token"], floors, strict=True)]
    extra = [g - f for g, f in zip(slopes["passing input guardrail"], floors, strict=True)]
    per_pass = [e / p for e, p in zip(extra, passes, strict=True) if p > 0]
    return {
        "token_range": [low, high],
        "rounds": rounds,
        "us_per_token": us,
        "us_per_token_each": slopes,
        "as_tool_over_top_level": statistics.median(as_tool) if as_tool else None,
        "as_tool_over_top_level_each": as_tool,
        "scheduler_pass_us": statistics.median(passes),
        "guardrail_extra_us": statistics.median(extra),
        # how many scheduler passes per token the passing guardrail costs
        "guardrail_passes_per_token": statistics.median(per_pass) if per_pass else None,
    }


def main(argv: Sequence[str]) -> None:
    quick = "--quick" in argv
    low, high, rounds = (20, 200, 1) if quick else (200, 2000, 9)
    sampling = QUICK_SAMPLING if quick else SAMPLING
    print(json.dumps(trio.run(compose_rows, low, high, rounds, sampling)))


if __name__ == "__main__":
    main(sys.argv[1:])
