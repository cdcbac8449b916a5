"""An MCP server that misbehaves, spoken by hand over stdio (JSON-RPC, a message a
line), for what the ``mcp`` package's server API will not send: a tool schema that is
not JSON Schema, a content block of an unknown type, a call never answered."""

from __future__ import annotations

import json
import sys
from typing import Any

TOOLS = [
    {
        "name": "bad_schema",
        "description": "Its schema is not JSON Schema.",
        "inputSchema": {"type": "object", "properties": {"x": {"type": "nonsense"}}},
    },
    {
        "name": "odd_content",
        "description": "Answers with a content block of an unknown type.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "silent",
        "description": "Never answers.",
        "inputSchema": {"type": "object", "properties": {}},
    },
]


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    sys.stdout.flush()


def answer(request: dict[str, Any]) -> None:
    method, rid = request.get("method"), request.get("id")
    if rid is None:
        return  # a notification
    if method == "initialize":
        send(
            {
                "id": rid,
                "result": {
                    "protocolVersion": request["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "odd", "version": "0"},
                },
            }
        )
    elif method == "tools/list":
        send({"id": rid, "result": {"tools": TOOLS}})
    elif method == "tools/call" and request["params"]["name"] == "odd_content":
        content = [{"type": "hologram", "data": "?"}]
        send({"id": rid, "result": {"content": content, "isError": False}})
    elif method == "tools/call" and request["params"]["name"] == "silent":
        pass  # never answered
    elif method == "ping":
        send({"id": rid, "result": {}})
    else:
        send({"id": rid, "error": {"code": -32601, "message": f"no method {method}"}})


if __name__ == "__main__":
    for line in sys.stdin:
        if line.strip():
            answer(json.loads(line))
