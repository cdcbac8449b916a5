"""The MCP server the benchmark calls, written with the ``mcp`` package's server API and
run over stdio: ``python -m benchmarks._mcp_server``."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

app = MCPServer("bench")


@app.tool()
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    app.run()
