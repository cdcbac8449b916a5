"""Troupe's performers served as an MCP server: ``troupe mcp MODULE:ATTR``.

Each performer is a tool with its input schema. A call is a run in the server's
runtime: its tokens and steps go to the client as MCP progress notifications (when the
client asked for progress), its output as the tool's text, its error as an error
result. The client's ``notifications/cancelled`` cancels the handler, and with it the
run. Served over stdio, or streamable HTTP on hypercorn's trio worker (as ``troupe
serve``), all under trio: the ``mcp`` package is anyio-based.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any, Final

import mcp.types as mt
import trio
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from protocol import AgentOutput, AssistantMessage
from runtime import Runnable, Runtime, describe_error, open_runtime

from .._demo import make_cat_agent
from .._targets import input_schema, load_target, named_performers
from .._tool import render_output

log = logging.getLogger("troupe.mcp")

PROGRESS_TEXT_LIMIT: Final = 200
"""Characters of a step's text a progress message carries."""


def mcp_server(
    performers: Runnable[Any] | dict[str, Runnable[Any]],
    runtime: Runtime,
    *,
    name: str = "troupe",
) -> Server[Any]:
    """An MCP server (the ``mcp`` package's low-level ``Server``) whose tools are
    ``performers`` (one, or a dict by name), run in ``runtime``.

    Raises:
        TypeError: not a performer nor a dict of them.
    """
    served = named_performers(performers)
    tools = {tool_name: _tool(tool_name, p) for tool_name, p in served.items()}

    async def list_tools(ctx: Any, params: mt.PaginatedRequestParams | None) -> mt.ListToolsResult:
        return mt.ListToolsResult(tools=[spec for spec, _ in tools.values()])

    async def call_tool(ctx: Any, params: mt.CallToolRequestParams) -> mt.CallToolResult:
        found = tools.get(params.name)
        if found is None:
            return _error(f"no tool named {params.name!r}; there are {sorted(tools)}")
        _, wrapped = found
        arguments = dict(params.arguments or {})
        performer = served[params.name]
        try:
            value = arguments["input"] if wrapped else arguments
            output = await _run(runtime, performer, value, ctx)
        except Exception as exc:  # the run's error: the client reads it as an error result
            return _error(describe_error(exc))
        return mt.CallToolResult(content=[mt.TextContent(type="text", text=output)])

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


def _tool(name: str, performer: Runnable[Any]) -> tuple[mt.Tool, bool]:
    """The MCP tool for a performer, and whether its arguments wrap its input as
    ``{"input": ...}`` (MCP's input schemas are objects; a chat model takes a string or
    messages)."""
    schema = input_schema(performer)
    wrapped = False
    if schema.get("type") != "object":
        objects = [s for s in schema.get("anyOf", ()) if s.get("type") == "object"]
        if objects:
            schema = objects[0]
        else:
            schema = {"type": "object", "properties": {"input": schema}, "required": ["input"]}
            wrapped = True
    bound = performer.bind()[0]
    description = getattr(bound, "description", None) or (
        f"Troupe {bound.run_kind} {name!r}: runs it and answers with its output"
    )
    return mt.Tool(name=name, description=description, input_schema=schema), wrapped


async def _run(runtime: Runtime, performer: Runnable[Any], value: Any, ctx: Any) -> str:
    """Run ``performer`` on ``value``; its tokens and steps as progress; its output as
    text."""
    sent = 0

    async def progress(message: str) -> None:
        nonlocal sent
        sent += 1
        await ctx.session.report_progress(sent, None, message)

    async with runtime.astream_events(performer, value) as events:
        root = events.run_id
        async for event in events:
            kind = event.event
            if kind == "on_chat_model_stream":
                text = event.data.chunk.content
                if text:
                    await progress(text)
            elif kind == "on_tool_start":
                await progress(f"[tool {event.name} started]")
            elif kind == "on_tool_end" and event.run_id != root:
                await progress(
                    f"[tool {event.name}: {_text(event.data.output):.{PROGRESS_TEXT_LIMIT}}]"
                )
    return _text(events.output)


def _text(output: Any) -> str:
    if isinstance(output, AgentOutput):
        return output.output
    if isinstance(output, AssistantMessage):
        return output.content
    try:
        return render_output("output", output)
    except Exception:  # no JSON form: its repr says what it is
        return repr(output)


def _error(text: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(type="text", text=text)], is_error=True)


async def serve_stdio(performers: Runnable[Any] | dict[str, Runnable[Any]]) -> None:
    """Serve ``performers`` as MCP tools over this process's stdin and stdout, until
    stdin closes."""
    async with open_runtime() as runtime, stdio_server() as (read, write):
        server = mcp_server(performers, runtime)
        await server.run(read, write, server.create_initialization_options())


async def serve_http(
    performers: Runnable[Any] | dict[str, Runnable[Any]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``performers`` as MCP tools over streamable HTTP (hypercorn's trio worker)
    at ``path``, until SIGTERM or SIGINT. ``task_status.started`` gets the URLs."""
    from hypercorn.config import Config

    from ..serve._hypercorn import serve_app
    from ..serve._server import is_loopback

    if not is_loopback(host):
        log.warning(
            "serving MCP on %s without authentication: anyone who reaches this address "
            "can run the performers (the mcp package's auth settings are not wired in yet)",
            host,
        )

    async with open_runtime() as runtime:
        app = mcp_server(performers, runtime).streamable_http_app(
            streamable_http_path=path, host=host
        )
        config = Config()
        config.bind = [f"{host}:{port}"]
        config.accesslog = None

        async def until_signalled() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    return

        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(
                    serve_app, app, config, max_connections=1024, shutdown_trigger=until_signalled
                )
            )
            task_status.started([f"{url}{path}" for url in urls])


def main(argv: Sequence[str] | None = None) -> int:
    """``troupe mcp``: its own parser, so that the command's module stays small."""
    parser = argparse.ArgumentParser(
        prog="troupe mcp",
        description="Serve performers as MCP tools, over stdio (the default) or streamable HTTP.",
    )
    parser.add_argument(
        "target",
        nargs="?",
        help="MODULE:ATTR, a performer or a dict of them (default: the cat agent)",
    )
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP, not stdio")
    parser.add_argument("--host", default="127.0.0.1", help="with --http (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="with --http (default 8000; 0: free)"
    )
    parser.add_argument("--path", default="/mcp", help="with --http (default /mcp)")
    args = parser.parse_args(argv)
    try:
        target = load_target(args.target) if args.target else make_cat_agent()
        named_performers(target)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    # stdout is the protocol's under stdio: whatever is said goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not args.http:
        try:
            trio.run(serve_stdio, target)
        except KeyboardInterrupt:
            return 130
        return 0

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                functools.partial(
                    serve_http, target, host=args.host, port=args.port, path=args.path
                )
            )
            print(f"troupe mcp: serving on {', '.join(urls)}", file=sys.stderr, flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"troupe mcp: {exc}", file=sys.stderr)
        return 1
    return 0
