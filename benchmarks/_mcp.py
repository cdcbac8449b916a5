"""What a tool call through an MCP server costs in Troupe, against the ``mcp`` client's
own round trip measured alone, in the same process and against the same server (the
package's own server API, over stdio, a subprocess started once per round).

Troupe's figure is ``await tool.ainvoke(args)`` of the tool ``McpServer.get_tools()``
made: a tool run with its events, through the connection's actor. The client's is
``await client.call_tool(name, args)`` on an ``mcp.Client`` of its own. Rounds
alternate; the figure is the median ratio (target at most 1.5).

``python -m benchmarks._mcp`` prints one JSON object (``--quick``: small sizes).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mcp
import trio

from actors.mcp import McpServer
from runtime import open_runtime

from ._timing import ratio_of

ROOT = Path(__file__).resolve().parent.parent
SERVER = [sys.executable, "-m", "benchmarks._mcp_server"]
ARGS = {"a": 1, "b": 2}


async def _alone(calls: int) -> float:
    params = mcp.StdioServerParameters(command=SERVER[0], args=SERVER[1:], cwd=str(ROOT))
    async with mcp.Client(params) as client:
        await client.call_tool("add", ARGS)  # warm-up
        start = time.perf_counter()
        for _ in range(calls):
            await client.call_tool("add", ARGS)
        return (time.perf_counter() - start) / calls


async def _troupe(calls: int) -> float:
    server = McpServer.stdio(SERVER[0], SERVER[1:], cwd=str(ROOT))
    async with open_runtime():
        (add,) = await server.get_tools()
        await add.ainvoke(ARGS)  # warm-up
        start = time.perf_counter()
        for _ in range(calls):
            await add.ainvoke(ARGS)
        return (time.perf_counter() - start) / calls


def main(argv: Sequence[str]) -> dict[str, Any]:
    quick = "--quick" in argv
    calls, rounds = (20, 1) if quick else (300, 5)
    alone: list[float] = []
    troupe: list[float] = []
    for _ in range(rounds):
        alone.append(trio.run(_alone, calls))
        troupe.append(trio.run(_troupe, calls))
    return {
        "calls": calls,
        "us_per_call_alone": statistics.median(alone) * 1e6,
        "us_per_call_troupe": statistics.median(troupe) * 1e6,
        **ratio_of(troupe, alone),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
