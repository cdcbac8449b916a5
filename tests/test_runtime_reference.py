"""A runtime used by reference: from tasks outside its block, and from other threads."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import Agent, AsyncCallbackHandler, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import StreamEvent
from runtime import Runtime, RuntimeClosedError, current_runtime, open_runtime

AGENT = Agent(ScriptedChatModel([ScriptedTurn("hello there")]))


class Starts(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.roots: list[str] = []

    async def on_event(self, event: StreamEvent) -> None:
        if event.phase == "start" and not event.parent_ids:
            self.roots.append(event.name)


async def _use(rt: Runtime, found: dict[str, Any]) -> None:
    assert current_runtime() is None  # this task does not run inside the runtime's block
    found["invoke"] = (await rt.ainvoke(AGENT, "hi"))["output"]
    async with rt.astream_events(AGENT, "hi", include_types=["chat_model"]) as events:
        found["events"] = [e.event async for e in events]
    async with rt.astream(AGENT, "hi") as chunks:
        found["steps"] = [type(c).__name__ async for c in chunks]
    async with rt.astream_log(AGENT, "hi") as log:
        found["log"] = len([p async for p in log])


async def test_a_task_outside_the_runtime_uses_it_by_reference() -> None:
    starts = Starts()
    found: dict[str, Any] = {}
    send, receive = trio.open_memory_channel[Runtime](1)
    done = trio.Event()

    async def server_task() -> None:  # started before the runtime, as a server's would be
        await _use(await receive.receive(), found)
        done.set()

    async with trio.open_nursery() as outside:
        outside.start_soon(server_task)
        async with open_runtime(callbacks=[starts]) as rt:
            await send.send(rt)
            await done.wait()
    assert found["invoke"] == "hello there"
    assert found["events"][0] == "on_chat_model_start" and found["steps"] == ["FinishChunk"]
    assert found["log"] > 3
    assert starts.roots == ["Agent"] * 4  # all four ran in this runtime, none in one of their own


async def test_a_closed_runtime_refuses_every_entry_point() -> None:
    async with open_runtime() as rt:
        pass
    with pytest.raises(RuntimeClosedError):
        await rt.ainvoke(AGENT, "hi")
    for stream in (rt.astream_events(AGENT, "hi"), rt.astream(AGENT, "hi")):
        with pytest.raises(RuntimeClosedError):
            async with stream:
                pass
    with pytest.raises(RuntimeClosedError):
        async with rt.astream_log(AGENT, "hi"):
            pass


async def test_unknown_options_name_the_method_called() -> None:
    async with open_runtime() as rt:
        with pytest.raises(TypeError, match=r"Runtime\.astream_events\(\) got an unexpected"):
            rt.astream_events(AGENT, "hi", verison="v2")  # type: ignore[call-arg]  # misspelt


async def test_a_thread_runs_a_performer_in_the_runtime() -> None:
    async with open_runtime() as rt:
        output = await trio.to_thread.run_sync(rt.invoke_from_thread, AGENT, "hi")
        assert output["output"] == "hello there"
        with pytest.raises(RuntimeError):
            rt.invoke_from_thread(AGENT, "hi")  # from trio's own thread: refused
    with pytest.raises(RuntimeClosedError):
        await trio.to_thread.run_sync(rt.invoke_from_thread, AGENT, "hi")


INNER = ScriptedChatModel([ScriptedTurn("socks")], name="Inner")


@tool
async def ask_inner(place: str) -> str:
    """Asks a model of its own."""
    return str((await INNER.ainvoke(place)).content)


async def test_a_model_called_inside_a_tool_joins_the_tree_when_the_run_came_from_outside() -> None:
    agent = Agent(
        ScriptedChatModel(
            [
                ScriptedTurn(tool_calls=[ScriptedCall("ask_inner", {"place": "bed"})]),
                ScriptedTurn("ok"),
            ]
        ),
        [ask_inner],
    )
    send, receive = trio.open_memory_channel[Runtime](1)
    names: list[str] = []
    done = trio.Event()

    async def server_task() -> None:  # outside the runtime's block, like a request task
        rt = await receive.receive()
        async with rt.astream_events(agent, "?") as events:
            names.extend([e.name async for e in events if e.phase == "start"])
        done.set()

    async with trio.open_nursery() as outside:
        outside.start_soon(server_task)
        async with open_runtime() as rt:
            await send.send(rt)
            await done.wait()
    assert names == ["Agent", "ScriptedChatModel", "ask_inner", "Inner", "ScriptedChatModel"]
