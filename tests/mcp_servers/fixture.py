"""An MCP server written with the ``mcp`` package's own server API, for the tests:
``python -m tests.mcp_servers.fixture`` serves it over stdio, ``... http PORT`` over
streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer

app = MCPServer("fixture")


@app.tool()
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@app.tool()
async def count(n: int, ctx: Context) -> str:
    """Count to n slowly, reporting progress at each step."""
    for i in range(n):
        await ctx.report_progress(i + 1, n, f"step {i + 1}")
        await anyio.sleep(0.005)
    return f"counted to {n}"


@app.tool()
async def hang() -> str:
    """Never answers (until cancelled): writes its pid file, then sleeps."""
    marker = os.environ.get("FIXTURE_HANG_MARKER")
    try:
        await anyio.sleep_forever()
    finally:
        if marker:
            _mark(marker)
    return "never"


def _mark(path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write("cancelled")


@app.tool()
async def boom() -> str:
    """Always fails."""
    raise ValueError("kaboom")


@app.tool()
async def die() -> str:
    """Ends the server's process mid-call."""
    os._exit(1)


@app.tool()
async def pid() -> int:
    """The server's process id."""
    return os.getpid()


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
