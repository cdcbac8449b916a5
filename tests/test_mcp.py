"""MCP servers' tools as Troupe tools, against servers written with the ``mcp``
package's own server API (``tests/mcp_servers/fixture.py``), run as real subprocesses
over stdio and over streamable HTTP on 127.0.0.1; and a server that misbehaves by hand
(``tests/mcp_servers/odd.py``).

Marked ``mcp``: ``.ci/run`` runs these as a step of their own with the ``mcp`` extra
and ``TROUPE_MCP_REQUIRED=1``. Where ``mcp`` is not installed they skip, saying what to
install; in that step they fail instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, Tool, ToolDefinitionError
from actors.testing import check_events
from protocol import Paused, StreamEvent, ToolMessage
from runtime import NoRuntimeError, Resume, RunTimeoutError, open_runtime

from .extras import needs_extra
from .ports import free_port, serving, wait_for_file

pytestmark = pytest.mark.mcp

ROOT = Path(__file__).resolve().parent.parent

with needs_extra("mcp", "TROUPE_MCP_REQUIRED"):
    from actors.mcp import McpConnectionError, McpServer, McpToolError


def fixture_server(**options: Any) -> McpServer:
    return McpServer.stdio(
        sys.executable, ["-m", "tests.mcp_servers.fixture"], cwd=str(ROOT), **options
    )


def odd_server(**options: Any) -> McpServer:
    return McpServer.stdio(
        sys.executable, ["-m", "tests.mcp_servers.odd"], cwd=str(ROOT), **options
    )


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """The fixture server over streamable HTTP (uvicorn, as the package runs it)."""
    port = free_port()
    with serving([sys.executable, "-m", "tests.mcp_servers.fixture", "http", str(port)], port):
        yield f"http://127.0.0.1:{port}/mcp"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def agent_calling(tools: list[Tool[Any]], *calls: ScriptedCall) -> Agent:
    turns = [ScriptedTurn(tool_calls=[call]) for call in calls]
    return Agent(ScriptedChatModel([*turns, ScriptedTurn("done")]), tools)


async def events_of(agent: Agent, question: str = "go") -> list[StreamEvent]:
    async with agent.astream_events(question) as events:
        return [event async for event in events]


def tool_messages(events: list[StreamEvent]) -> list[ToolMessage]:
    root_end = events[-1]
    conversation = root_end.data.output.messages
    return [m for m in conversation if isinstance(m, ToolMessage)]


# -- the tools -----------------------------------------------------------------------


async def test_a_stdio_servers_tools_are_tools_with_their_schemas() -> None:
    async with open_runtime():
        tools = {t.name: t for t in await fixture_server().get_tools()}
    assert {"add", "count", "hang", "boom", "die", "pid"} <= set(tools)
    add = tools["add"]
    assert add.description == "Add two numbers."
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert add.parameters["required"] == ["a", "b"]
    assert add.metadata["mcp_server"].startswith("python")


async def test_a_call_is_a_tool_run_with_complete_events_and_progress() -> None:
    async with open_runtime():
        tools = await fixture_server(name="fixture").get_tools()
        agent = agent_calling(
            tools, ScriptedCall("add", {"a": 2, "b": 3}), ScriptedCall("count", {"n": 3})
        )
        events = await events_of(agent)
    check_events(events)  # promises 1-4 on the whole tree
    ends = [e for e in events if e.event == "on_tool_end"]
    assert [(e.name, e.data.output) for e in ends] == [("add", "5"), ("count", "counted to 3")]
    assert all(e.metadata["mcp_server"] == "fixture" for e in ends)
    count_run = ends[1].run_id
    progress = [e for e in events if e.event == "on_custom_event"]
    assert [e.name for e in progress] == ["mcp_progress"] * 3
    assert all(e.run_id == count_run for e in progress)  # custom events of the tool run
    assert [e.data.chunk["progress"] for e in progress] == [1.0, 2.0, 3.0]
    assert progress[-1].data.chunk == {
        "server": "fixture",
        "tool": "count",
        "progress": 3.0,
        "total": 3.0,
        "message": "step 3",
    }


async def test_the_streamable_http_transport(http_url: str) -> None:
    async with open_runtime():
        server = McpServer.http(http_url)
        tools = await server.get_tools(runtime=None)
        agent = agent_calling(
            tools, ScriptedCall("add", {"a": 40, "b": 2}), ScriptedCall("count", {"n": 2})
        )
        events = await events_of(agent)
    check_events(events)
    assert [m.content for m in tool_messages(events)] == ["42", "counted to 2"]
    assert sum(e.event == "on_custom_event" for e in events) == 2


async def test_one_connection_is_shared_by_every_run_and_closed_with_the_runtime() -> None:
    server = fixture_server()
    async with open_runtime():
        tools = {t.name: t for t in await server.get_tools()}
        pids = set()
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                pids.add(await tools["pid"].ainvoke({}))

            for _ in range(5):
                nursery.start_soon(ask)
        assert len(pids) == 1  # one process served all five runs
        (pid,) = pids
        assert alive(int(pid))
    with trio.fail_after(10):  # the runtime has closed: so has the server
        while alive(int(pid)):  # noqa: ASYNC110  # another process: no event to wait on
            await trio.sleep(0.02)


async def test_leaving_the_stream_cancels_the_call_on_the_server(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    server = McpServer.stdio(
        sys.executable,
        ["-m", "tests.mcp_servers.fixture"],
        cwd=str(ROOT),
        env={**os.environ, "FIXTURE_HANG_MARKER": str(marker)},
    )
    async with open_runtime():
        tools = {t.name: t for t in await server.get_tools()}
        agent = agent_calling(list(tools.values()), ScriptedCall("hang"))
        async with agent.astream_events("go") as events:
            async for event in events:
                if event.event == "on_tool_start":
                    await trio.sleep(0.2)  # the call has reached the server
                    break
        await wait_for_file(marker)  # notifications/cancelled reached the run
        # The connection is still good for the next run.
        assert await tools["add"].ainvoke({"a": 1, "b": 1}) == "2"


async def test_errors_are_told_to_the_model_and_a_lost_server_reconnects() -> None:
    async with open_runtime():
        tools = await fixture_server().get_tools()
        agent = agent_calling(
            tools,
            ScriptedCall("pid"),
            ScriptedCall("boom"),
            ScriptedCall("die"),
            ScriptedCall("pid"),
        )
        events = await events_of(agent)
    check_events(events)
    first, boom, die, second = tool_messages(events)
    assert not first.is_error and not second.is_error
    assert boom.is_error and "McpToolError" in boom.content and "boom" in boom.content
    assert die.is_error and "McpConnectionError" in die.content
    assert "the next call reconnects" in die.content
    assert first.content != second.content  # a new server process answered
    assert events[-1].status == "ok"


async def test_allow_and_deny_filter_the_tools() -> None:
    async with open_runtime():
        allowed = await fixture_server(allow=["add", "pid"]).get_tools()
        assert sorted(t.name for t in allowed) == ["add", "pid"]
        denied = await fixture_server(deny=["die", "hang"]).get_tools()
        assert {"die", "hang"}.isdisjoint(t.name for t in denied) and len(denied) == 4
        with pytest.raises(LookupError, match=r"no tool named \['nope'\]"):
            await fixture_server(allow=["add", "nope"]).get_tools()
    with pytest.raises(TypeError, match="list of tool names"):
        fixture_server(deny="die")


async def test_a_call_may_wait_for_a_persons_approval(tmp_path: Path) -> None:
    server = fixture_server(allow=["add", "pid"], needs_approval=["add"])
    async with open_runtime(store=f"sqlite:///{tmp_path / 'runs.db'}") as rt:
        tools = await server.get_tools()
        assert {t.name: t.needs_approval for t in tools} == {"add": True, "pid": False}
        agent = agent_calling(tools, ScriptedCall("add", {"a": 2, "b": 2}))
        async with rt.astream_events(agent, "go", run_id="asked") as events:
            paused = [e async for e in events]
        check_events(paused)
        output = paused[-1].data.output
        assert isinstance(output, Paused)
        (pending,) = output.pending  # the run paused before the call
        assert (pending.kind, pending.name, pending.arguments) == (
            "approval",
            "add",
            {"a": 2, "b": 2},
        )
        assert not any(e.event == "on_tool_start" for e in paused)
        async with rt.astream_events(
            agent, None, resume=Resume("asked", {pending.id: True})
        ) as events:
            resumed = [e async for e in events]
    ends = [e for e in resumed if e.event == "on_tool_end"]
    assert [(e.name, e.data.output) for e in ends] == [("add", "4")]  # approved: it ran
    predicate = fixture_server(needs_approval=lambda name, args: args.get("a", 0) > 10)
    async with open_runtime():
        by_name = {t.name: t for t in await predicate.get_tools()}
    approval = by_name["add"].needs_approval
    assert callable(approval) and approval({"a": 11, "b": 0}) and not approval({"a": 1, "b": 0})
    async with open_runtime():
        with pytest.raises(LookupError, match=r"no tool named \['nope'\]"):
            await fixture_server(needs_approval=["nope"]).get_tools()


# -- bad input and faults: a clear error, and the runtime goes on ----------------------


async def test_a_command_that_does_not_exist() -> None:
    async with open_runtime():
        with pytest.raises(McpConnectionError, match="could not be reached: FileNotFoundError"):
            await McpServer.stdio("/nonexistent/mcp-server").get_tools()
        assert (
            await (await fixture_server(allow=["add"]).get_tools())[0].ainvoke({"a": 1, "b": 2})
            == "3"
        )


async def test_a_server_that_exits_at_start() -> None:
    server = McpServer.stdio(sys.executable, ["-c", "import sys; sys.exit(3)"])
    async with open_runtime():
        with pytest.raises(McpConnectionError, match="could not be reached"):
            await server.get_tools()
        with pytest.raises(McpConnectionError):  # tried again, and told again
            await server.get_tools()


async def test_a_url_that_refuses() -> None:
    async with open_runtime():
        with pytest.raises(McpConnectionError, match="could not be reached"):
            await McpServer.http(f"http://127.0.0.1:{free_port()}/mcp").get_tools()
    with pytest.raises(ValueError, match="http"):
        McpServer("ftp://example.invalid/mcp")


async def test_a_connection_that_never_comes_up_is_bounded() -> None:
    # A process that never speaks: connect_timeout bounds the handshake.
    server = McpServer.stdio(
        sys.executable, ["-c", "import time; time.sleep(60)"], connect_timeout=0.5
    )
    async with open_runtime():
        with trio.fail_after(10), pytest.raises(McpConnectionError, match="connect_timeout"):
            await server.get_tools()


def test_connect_timeout_is_a_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="connect_timeout must be a finite number of seconds > 0"):
        McpServer.stdio(sys.executable, [], connect_timeout=0)
    with pytest.raises(TypeError, match="connect_timeout must be a number of seconds"):
        McpServer.stdio(sys.executable, [], connect_timeout="5")


async def test_a_tool_schema_that_is_not_json_schema() -> None:
    async with open_runtime():
        with pytest.raises(ToolDefinitionError, match=r"'bad_schema'.*deny=\['bad_schema'\]"):
            await odd_server().get_tools()
        tools = await odd_server(deny=["bad_schema"]).get_tools()
        assert sorted(t.name for t in tools) == ["odd_content", "silent"]


async def test_a_result_of_an_unknown_content_type_is_told_to_the_model() -> None:
    async with open_runtime():
        tools = await odd_server(allow=["odd_content"]).get_tools()
        with pytest.raises(McpToolError, match="not MCP's"):
            await tools[0].ainvoke({})
        events = await events_of(agent_calling(tools, ScriptedCall("odd_content")))
    (told,) = tool_messages(events)
    assert told.is_error and "McpToolError" in told.content
    assert events[-1].status == "ok"


async def test_a_server_that_never_answers_is_bounded_by_the_runs_timeout() -> None:
    async with open_runtime():
        tools = await odd_server(allow=["silent"]).get_tools()
        with trio.fail_after(10), pytest.raises(RunTimeoutError):
            await tools[0].ainvoke({}, timeout=0.3)
        per_tool = await odd_server(allow=["silent"], timeout=0.3).get_tools()
        events = await events_of(agent_calling(per_tool, ScriptedCall("silent")))
    (told,) = tool_messages(events)
    assert told.is_error and "ToolTimeoutError" in told.content


async def test_get_tools_needs_a_runtime() -> None:
    with pytest.raises(NoRuntimeError, match="open_runtime"):
        await fixture_server().get_tools()
