"""MCP servers' tools as Troupe tools.

One actor owns each server's connection in a runtime: a task of its own enters the
``mcp`` client and leaves it (anyio's cancel scopes must be left in the task that
entered them: "Attempted to exit cancel scope in a different task" is what mixing them
costs), connecting when the first call needs it, again after a call finds the
connection lost, and closing it with the runtime. Every tool run of every agent in that
runtime calls through it: the request and its answer are the only things that cross
tasks, so a run that is cancelled cancels its own call (the client sends MCP's
``notifications/cancelled``) and leaves the connection to the others.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Final, final
from urllib.parse import urlsplit

import mcp
import mcp.types as mt
import trio
from attrs import field, frozen
from mcp.shared.dispatcher import ProgressFnT

from runtime import (
    NoRuntimeError,
    Performer,
    Run,
    Runtime,
    adispatch_custom_event,
    current_runtime,
    describe_error,
    seconds,
)

from .._errors import ToolDefinitionError, ToolError
from .._tool import ErrorPolicy, Tool

logger = logging.getLogger("troupe.mcp")

DEFAULT_CONNECT_TIMEOUT: Final = 30.0
"""Seconds a connection (a process start or an HTTP handshake) may take."""
PROGRESS_EVENT: Final = "mcp_progress"
"""The name of the custom event a server's progress notification becomes."""
PROGRESS_BUFFER: Final = 64
"""Progress notifications a call holds while its run is busy; beyond it the oldest
waiting are dropped (a later one says more), so a chatty server never holds up the
connection every run shares."""


class McpConnectionError(ToolError):
    """An MCP server could not be reached, or the connection broke during a call. The
    call fails (an agent tells the model); the next call connects again."""


class McpToolError(ToolError):
    """An MCP server answered a tool call with an error (``isError``), or with a result
    Troupe cannot read; the message is the server's."""


ConnectFn = Callable[[], "mcp.Client"]
"""What makes a (not yet entered) ``mcp.Client`` for a server."""


@final
class McpServer:
    """An MCP server whose tools an agent may use: a command run over stdio, or a
    streamable HTTP URL.

    ``await server.get_tools()`` (inside a runtime) lists the server's tools as
    :class:`~actors.Tool` objects to hand an :class:`~actors.Agent`. Each call is a tool
    run with complete events; the server's progress notifications are custom events
    (``mcp_progress``) on that run; an error the server answers, or a lost connection,
    fails the call (the agent tells the model) and the next call reconnects.

    Args:
        server: a URL (streamable HTTP), an ``mcp.StdioServerParameters``, or a function
            of no arguments that makes an ``mcp.Client`` (any transport of the package).
        name: the server's name in the tools' metadata (``mcp_server``).
        allow: the only tool names to take (each must exist), or ``None`` for all.
        deny: tool names to leave out.
        timeout: seconds each tool call may take (:class:`~actors.ToolTimeoutError`).
        connect_timeout: seconds a connection may take to come up.
        on_error: the tools' error policy (see :func:`~actors.tool`).
        needs_approval: which calls wait for a person's approval (the run pauses, as
            for ``@tool(needs_approval=...)``; needs a runtime with a store): ``True``
            for every tool, tool names, or a function of the tool's name and the call's
            arguments.
    """

    def __init__(
        self,
        server: str | mcp.StdioServerParameters | ConnectFn,
        *,
        name: str | None = None,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        timeout: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_error: ErrorPolicy | None = None,
        needs_approval: bool | Iterable[str] | Callable[[str, dict[str, Any]], bool] = False,
    ) -> None:
        if isinstance(server, str):
            if urlsplit(server).scheme not in ("http", "https"):
                raise ValueError(f"an MCP server's URL must be http(s)://..., got {server!r}")
            url = server
            self._connect: ConnectFn = lambda: mcp.Client(url)
            default_name = urlsplit(server).netloc
        elif isinstance(server, mcp.StdioServerParameters):
            params = server
            self._connect = lambda: mcp.Client(params)
            default_name = " ".join([os.path.basename(server.command), *server.args])[:80]
        elif callable(server):
            self._connect = server
            default_name = getattr(server, "__name__", "mcp")
        else:
            raise TypeError(
                "server must be a URL, an mcp.StdioServerParameters or a function that makes "
                f"an mcp.Client, got {type(server).__name__}"
            )
        self.name = name if name is not None else default_name
        self.allow = None if allow is None else _names(allow, "allow")
        self.deny = _names(deny, "deny")
        self.connect_timeout = seconds(connect_timeout, "connect_timeout")
        self.timeout = timeout
        self.on_error = on_error
        self.needs_approval: bool | frozenset[str] | Callable[[str, dict[str, Any]], bool]
        if isinstance(needs_approval, bool) or callable(needs_approval):
            self.needs_approval = needs_approval
        else:
            self.needs_approval = _names(needs_approval, "needs_approval")
        self._link = _Link(self, f"mcp:{self.name}")
        self._slots: weakref.WeakKeyDictionary[Runtime, _Slot] = weakref.WeakKeyDictionary()

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Iterable[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **options: Any,
    ) -> McpServer:
        """A server that is a command, spoken to over its stdin and stdout."""
        params = mcp.StdioServerParameters(
            command=command, args=list(args), env=dict(env) if env else None, cwd=cwd
        )
        return cls(params, **options)

    @classmethod
    def http(cls, url: str, **options: Any) -> McpServer:
        """A server at a streamable HTTP URL (``http://host:port/mcp``)."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"McpServer({self.name!r})"

    async def get_tools(self, *, runtime: Runtime | None = None) -> list[Tool[str]]:
        """The server's tools (those ``allow`` and ``deny`` let through), connecting if
        need be. A cancel point, as every ``await`` on Troupe's API.

        Raises:
            NoRuntimeError: no runtime is current and none was given.
            McpConnectionError: the server cannot be reached.
            LookupError: ``allow`` names a tool the server does not have.
            ToolDefinitionError: a tool's input schema is not a valid JSON Schema
                (``deny`` it to take the others).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        connection = await self._connection(runtime)
        listed = await connection.list_tools()
        names = [t.name for t in listed]
        for asked in (self.allow, self.needs_approval):
            missing = sorted(set(asked) - set(names)) if isinstance(asked, frozenset) else []
            if missing:
                raise LookupError(
                    f"MCP server {self.name!r} has no tool named {missing}; it has {sorted(names)}"
                )
        return [
            self._tool(spec)
            for spec in listed
            if (self.allow is None or spec.name in self.allow) and spec.name not in self.deny
        ]

    def _tool(self, spec: mt.Tool) -> Tool[str]:
        schema = dict(spec.input_schema or {"type": "object"})
        try:
            return Tool(
                name=spec.name,
                description=spec.description or spec.title or spec.name,
                parameters=schema,
                fn=functools.partial(self._call, spec.name),
                metadata={"mcp_server": self.name},
                timeout=self.timeout,
                on_error=self.on_error,
                needs_approval=self._approval(spec.name),
            )
        except (ToolDefinitionError, TypeError, ValueError) as exc:
            raise ToolDefinitionError(
                f"MCP server {self.name!r}, tool {spec.name!r}: {exc} "
                f"(deny={[spec.name]!r} leaves it out)"
            ) from exc

    def _approval(self, tool: str) -> bool | Callable[[dict[str, Any]], bool]:
        """The tool's ``needs_approval``: a flag, or a function of a call's arguments."""
        asked = self.needs_approval
        if isinstance(asked, bool):
            return asked
        if isinstance(asked, frozenset):
            return tool in asked
        return functools.partial(asked, tool)

    async def _call(self, tool: str, /, **arguments: Any) -> str:
        """One tool call, in the tool run's own task: its progress becomes custom events
        of that run, and its cancellation cancels this call only."""
        connection = await self._connection(None)
        progress_tx, progress_rx = trio.open_memory_channel[dict[str, Any]](PROGRESS_BUFFER)
        result: list[mt.CallToolResult] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            note = {"server": self.name, "tool": tool, "progress": progress, "total": total}
            if message is not None:
                note["message"] = message
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                progress_tx.send_nowait(note)  # else dropped: see PROGRESS_BUFFER

        async def call() -> None:
            with progress_tx:
                result.append(await connection.call_tool(tool, arguments, on_progress))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                async for note in progress_rx:
                    await adispatch_custom_event(PROGRESS_EVENT, note)
        except BaseExceptionGroup as group:  # the call's own error, not a group of one
            raise _single(group) from None
        return _text(self.name, tool, result[0])

    async def _connection(self, runtime: Runtime | None) -> _Connection:
        runtime = runtime or current_runtime()
        if runtime is None:
            raise NoRuntimeError(
                f"MCP server {self.name!r}: call get_tools() inside `async with open_runtime()` "
                "(its connection lives in a runtime and closes with it)"
            )
        slot = self._slots.get(runtime)
        if slot is None:
            runtime.cell(self._link)  # starts the actor that owns the connection (soon)
            slot = self._slots[runtime] = _Slot()
        if slot.connection is None:
            await slot.ready.wait()
        assert slot.connection is not None
        return slot.connection


class _Slot:
    """A server's connection in one runtime, once its actor is up."""

    __slots__ = ("connection", "ready")

    def __init__(self) -> None:
        self.connection: _Connection | None = None
        self.ready = trio.Event()


@frozen(eq=False)
class _Link(Performer[None, None]):
    """The actor that owns a server's connection in a runtime. It takes no requests
    (tools call through the connection it holds), so it has no run of its own."""

    server: McpServer
    name: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)

    def coerce_input(self, value: Any) -> None:
        raise TypeError(f"{self.name} takes no requests: call its tools")

    async def perform(self, message: None, run: Run) -> None:  # pragma: no cover - no requests
        raise TypeError(f"{self.name} takes no requests: call its tools")

    def open_actor(self) -> contextlib.AbstractAsyncContextManager[_Connection]:
        return self._hold()

    @contextlib.asynccontextmanager
    async def _hold(self) -> AsyncIterator[_Connection]:
        runtime = current_runtime()
        assert runtime is not None  # an actor always runs in its runtime
        slot = self.server._slots.get(runtime)
        async with trio.open_nursery() as nursery:
            connection = _Connection(self.server, nursery)
            if slot is not None:
                slot.connection = connection
                slot.ready.set()
            try:
                yield connection
            finally:
                if slot is not None and slot.connection is connection:
                    slot.connection = None
                    slot.ready = trio.Event()
                self.server._slots.pop(runtime, None)
                nursery.cancel_scope.cancel()


class _Attempt:
    """One connection: asked for by a call, made (or not) by the owner task."""

    __slots__ = ("client", "done", "error", "lost")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.lost = trio.Event()
        self.client: mcp.Client | None = None
        self.error: BaseException | None = None


class _Connection:
    """The connection to one server in one runtime. Its owner task (in the actor's
    nursery) enters and leaves the client; calls use it from their own tasks."""

    def __init__(self, server: McpServer, nursery: trio.Nursery) -> None:
        self._server = server
        self._nursery = nursery
        self._current: _Attempt | None = None

    async def _client(self) -> tuple[_Attempt, mcp.Client]:
        attempt = self._current
        if attempt is None:
            attempt = self._current = _Attempt()
            self._nursery.start_soon(self._own, attempt, name=f"troupe mcp {self._server.name}")
        await attempt.done.wait()
        if attempt.client is None:
            error = attempt.error
            raise McpConnectionError(
                f"MCP server {self._server.name!r} could not be reached: "
                f"{_describe(error) if error is not None else 'closed'}"
            ) from error
        return attempt, attempt.client

    async def _own(self, attempt: _Attempt) -> None:
        """Enter the client, hold it until a call finds it lost or the runtime closes,
        leave it: all in this one task."""
        server = self._server
        try:
            with trio.CancelScope(deadline=trio.current_time() + server.connect_timeout) as scope:
                async with server._connect() as client:
                    scope.deadline = math.inf
                    attempt.client = client
                    attempt.done.set()
                    await attempt.lost.wait()
            if scope.cancelled_caught and not attempt.done.is_set():
                attempt.error = TimeoutError(
                    f"no connection within {server.connect_timeout} s (connect_timeout)"
                )
        except Exception as exc:  # a failed start or a broken connection: told to its calls
            if not attempt.done.is_set():
                attempt.error = exc
            logger.debug("MCP server %r: connection ended: %s", server.name, _describe(exc))
        finally:
            attempt.client = None
            if self._current is attempt:
                self._current = None
            attempt.done.set()

    async def list_tools(self) -> list[mt.Tool]:
        attempt, client = await self._client()
        tools: list[mt.Tool] = []
        cursor: str | None = None
        try:
            while True:
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    return tools
        except Exception as exc:
            raise self._lost(attempt, "tools/list", exc) from exc

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        progress: ProgressFnT,
    ) -> mt.CallToolResult:
        attempt, client = await self._client()
        try:
            return await client.call_tool(name, arguments, progress_callback=progress)
        except mcp.MCPError as exc:
            if exc.code == mt.CONNECTION_CLOSED:
                raise self._lost(attempt, name, exc) from exc
            raise McpToolError(f"MCP server {self._server.name!r}: {exc}") from exc
        except Exception as exc:  # pydantic's ValidationError: an answer we cannot read
            if _is_unreadable(exc):
                raise McpToolError(
                    f"MCP server {self._server.name!r} answered {name!r} with a result that "
                    f"is not MCP's: {_describe(exc).splitlines()[0]}"
                ) from exc
            raise self._lost(attempt, name, exc) from exc

    def _lost(self, attempt: _Attempt, what: str, exc: BaseException) -> McpConnectionError:
        """The connection broke: its owner leaves it, and the next call reconnects."""
        attempt.lost.set()
        if self._current is attempt:
            self._current = None
        return McpConnectionError(
            f"MCP server {self._server.name!r}: the connection was lost during {what!r} "
            f"({_describe(exc):.300}); the next call reconnects"
        )


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a nursery of one failing task holds (else the group)."""
    leaves = group.exceptions
    if len(leaves) == 1 and not isinstance(leaves[0], BaseExceptionGroup):
        return leaves[0]
    return group


def _is_unreadable(exc: BaseException) -> bool:
    return type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic")


def _describe(exc: BaseException) -> str:
    """An error, or the first real one of a group (anyio's task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return describe_error(exc)


def _names(value: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(value, str) or not all(isinstance(n, str) for n in value):
        raise TypeError(f"{what} must be a list of tool names, got {value!r:.80}")
    return frozenset(value)


def _text(server: str, tool: str, result: mt.CallToolResult) -> str:
    """What the model reads of a tool's result: its text, and a line for each block that
    is not text. An error result raises :class:`McpToolError` with the server's text."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mt.TextContent):
            parts.append(block.text)
        elif isinstance(block, mt.EmbeddedResource):
            inner = block.resource
            if isinstance(inner, mt.TextResourceContents):
                parts.append(inner.text)
            else:
                parts.append(f"[resource {inner.uri} ({inner.mime_type or 'binary'})]")
        elif isinstance(block, mt.ResourceLink):
            parts.append(f"[resource link {block.uri}]")
        else:  # an image or audio: the client refuses other types (see _is_unreadable)
            kind = "image" if isinstance(block, mt.ImageContent) else "audio"
            parts.append(f"[{kind} {block.mime_type}, {len(block.data)} base64 characters]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if result.is_error:
        raise McpToolError(f"MCP tool {tool!r} of {server!r} failed: {text or 'no message'}")
    return text
