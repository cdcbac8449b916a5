"""A server for the HTTP edge's tests (hypercorn on 127.0.0.1, in the test's trio run)
and a small reader of server-sent events over httpx."""

from __future__ import annotations

import functools
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from attrs import define, field
from hypercorn.config import Config

from actors.serve import asgi_app
from actors.serve._hypercorn import serve_app


@define
class SSE:
    """One server-sent event as read off the wire."""

    data: str
    event: str | None = None
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@define
class Served:
    base_url: str
    app: Any
    client: httpx.AsyncClient
    shutdown: trio.Event
    """Set it to shut the server down (hypercorn's graceful shutdown) before the block ends."""
    comments: list[str] = field(factory=list)


@asynccontextmanager
async def serving(performers: Any, **options: Any) -> AsyncIterator[Served]:
    """Serve ``performers`` on a free port of 127.0.0.1 for the block, as ``troupe serve``
    does (``max_connections``: connections open at once; ``send_timeout``: seconds a
    write waits for a client to read; the rest are app options)."""
    max_connections = options.pop("max_connections", 4096)
    send_timeout = options.pop("send_timeout", 30.0)
    app = asgi_app(performers, **options)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            functools.partial(
                serve_app,
                app,
                config,
                max_connections=max_connections,
                send_timeout=send_timeout,
                shutdown_trigger=shutdown.wait,
            )
        )
        async with httpx.AsyncClient(base_url=urls[0], timeout=30) as client:
            yield Served(urls[0], app, client, shutdown)
        shutdown.set()


async def first_line(process: trio.Process, seconds: float = 20) -> str:
    """The first line a child process writes to its stdout (a server's address)."""
    assert process.stdout is not None
    line = b""
    with trio.fail_after(seconds):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive_some(1)
    return line.decode()


async def read_sse(response: httpx.Response, comments: list[str] | None = None) -> list[SSE]:
    """Every event of a streamed response, to its end."""
    return [event async for event in iter_sse(response, comments)]


async def iter_sse(
    response: httpx.Response, comments: list[str] | None = None
) -> AsyncIterator[SSE]:
    """The events of a streamed response as they come."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SSE("\n".join(data), fields.get("event"), fields.get("id"))
            fields, data = {}, []
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


async def stream_then_sigterm(
    process: trio.Process, url: str, body: dict[str, Any], *, after: int = 5, seconds: float = 30
) -> tuple[list[SSE], int]:
    """Stream a run from a server process and send it SIGTERM after ``after`` events:
    every event the stream gave, and the process's exit status."""
    seen: list[SSE] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=seconds) as client,
        client.stream("POST", "/runs/stream", json=body) as response,
    ):
        async for event in iter_sse(response):
            seen.append(event)
            if len(seen) == after:
                process.send_signal(signal.SIGTERM)
    with trio.fail_after(seconds):
        code = await process.wait()
    return seen, code


def asgi_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    """An HTTP request's ASGI scope, for calling an app without a server (``headers``
    default to a JSON body's from localhost)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")]
        if headers is None
        else headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
