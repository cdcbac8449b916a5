"""Callback handlers: LangChain's calls, complete identity, isolation, attachment."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from actors import (
    Agent,
    AsyncCallbackHandler,
    BaseCallbackHandler,
    LLMResult,
    ModelError,
    RunFailedError,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tool,
)
from protocol import AssistantMessage, StreamEvent
from runtime import RunContext, dispatch_custom_event, open_runtime

IDENTITY = {"run_id", "parent_run_id", "parent_ids", "tags", "metadata", "name", "kind"}


class Recorder(AsyncCallbackHandler):
    """Records every call: (method, first arguments, keyword arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_") and name != "on_event":

            async def record(*args: Any, **kwargs: Any) -> None:
                self.calls.append((name, args, kwargs))

            return record
        return super().__getattribute__(name)

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


@tool
async def find(place: str, context: RunContext) -> str:
    """Find things, and say so."""
    await dispatch_custom_event("searching", {"place": place, "run": context.run_id})
    return f"things at {place}"


@tool
async def broken(place: str) -> str:
    """Always fails."""
    raise RuntimeError(f"nothing at {place}")


def agent(*turns: ScriptedTurn) -> Agent:
    model = ScriptedChatModel(list(turns)).with_config(tags=["agent_llm"])
    return Agent(model, [find, broken], tags=("agent",), metadata={"team": "cats"})


SEARCH = (ScriptedTurn(tool_calls=[ScriptedCall("find", {"place": "bed"})]), ScriptedTurn("Done."))


async def test_every_call_gets_the_complete_run() -> None:
    recorder = Recorder()
    output = await agent(*SEARCH).ainvoke({"input": "q"}, {"callbacks": [recorder]})
    assert output["output"] == "Done."
    names = recorder.names()
    assert names[0] == "on_chain_start" and names[-1] == "on_chain_end"
    assert names.count("on_chat_model_start") == names.count("on_llm_end") == 2
    assert "on_llm_new_token" in names and "on_custom_event" in names
    assert (
        names.index("on_tool_start") < names.index("on_custom_event") < names.index("on_tool_end")
    )
    for name, _, kwargs in recorder.calls:
        assert set(kwargs) >= IDENTITY, name
        assert "agent" in kwargs["tags"] and kwargs["metadata"]["team"] == "cats"
    start = recorder.calls[0]
    end = recorder.calls[-1]
    assert start[1][1] == {"input": "q"} and start[2]["parent_run_id"] is None
    assert end[1][0] == output and end[2]["run_id"] == start[2]["run_id"]
    assert (end[2]["name"], end[2]["tags"]) == ("Agent", ["agent"])
    tool_end = next(c for c in recorder.calls if c[0] == "on_tool_end")
    assert tool_end[1] == ("things at bed",)
    assert tool_end[2]["name"] == "find" and tool_end[2]["parent_run_id"] == start[2]["run_id"]
    llm_end = next(c for c in recorder.calls if c[0] == "on_llm_end")
    response = llm_end[1][0]
    assert isinstance(response, LLMResult) and "agent_llm" in llm_end[2]["tags"]
    assert isinstance(response.generations[0][0].message, AssistantMessage)
    assert response.llm_output is not None and "token_usage" in response.llm_output
    custom = next(c for c in recorder.calls if c[0] == "on_custom_event")
    assert custom[1] == ("searching", {"place": "bed", "run": str(tool_end[2]["run_id"])})
    assert custom[2]["run_id"] == tool_end[2]["run_id"]
    assert custom[2]["parent_ids"] == [str(start[2]["run_id"])]


async def test_errors_arrive_as_the_runs_own_exceptions() -> None:
    recorder = Recorder()
    failing = agent(
        ScriptedTurn(tool_calls=[ScriptedCall("broken", {"place": "x"})]),
        ScriptedTurn("half", error="model fell over"),
    )
    with pytest.raises(Exception, match="model fell over"):
        await failing.ainvoke("q", callbacks=[recorder])
    errors = {c[0]: c for c in recorder.calls if c[0].endswith("_error")}
    assert set(errors) == {"on_tool_error", "on_llm_error", "on_chain_error"}
    tool_error = errors["on_tool_error"][1][0]
    assert isinstance(tool_error, RuntimeError) and str(tool_error) == "nothing at x"
    assert isinstance(errors["on_llm_error"][1][0], ModelError)
    assert errors["on_chain_error"][2]["name"] == "Agent"


async def test_a_cancelled_run_reports_cancelled_errors() -> None:
    recorder = Recorder()
    slow = Agent(ScriptedChatModel([ScriptedTurn("a b c d e f")], token_delay=0.05))
    async with open_runtime(), slow.astream_events("q", callbacks=[recorder]) as events:
        async for event in events:
            if event.phase == "stream":
                break
    assert recorder.calls[-1][0] == "on_chain_error"
    assert isinstance(recorder.calls[-1][1][0], RunFailedError)
    assert recorder.calls[-1][1][0].status == "cancelled"


async def test_sync_methods_and_unknown_events_are_fine() -> None:
    seen: list[str] = []

    class SyncHandler(BaseCallbackHandler):
        def on_tool_start(self, serialized: Any, input_str: str, **kw: Any) -> None:
            seen.append(f"{serialized['name']}:{input_str}:{kw['inputs']}")

    await agent(*SEARCH).ainvoke("q", callbacks=[SyncHandler()])
    assert seen == ["find:{'place': 'bed'}:{'place': 'bed'}"]


async def test_a_raising_handler_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    class Raising(AsyncCallbackHandler):
        async def on_llm_new_token(self, token: str, **kw: Any) -> None:
            raise ValueError("handler bug")

    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="troupe"):
        async with agent(*SEARCH).astream_events("q", callbacks=[Raising(), recorder]) as events:
            received = [e async for e in events]
    assert received[-1].status == "ok"
    assert events.handler_errors and all(
        isinstance(e.error, ValueError) for e in events.handler_errors
    )
    first = events.handler_errors[0].event
    assert first is not None and first.event == "on_chat_model_stream"
    assert recorder.names()[-1] == "on_chain_end"  # the other handler saw everything
    assert "callback handler" in caplog.text and "handler bug" in caplog.text


async def test_runtime_wide_handlers_see_every_run() -> None:
    everywhere = Recorder()
    later = Recorder()
    async with open_runtime(callbacks=[everywhere]) as rt:
        await agent(*SEARCH).ainvoke("one")
        await rt.subscribe(later)
        await agent(*SEARCH).ainvoke("two")
        await trio.testing.wait_all_tasks_blocked()
    starts = [c[1][1] for c in everywhere.calls if c[0] == "on_chain_start"]
    assert starts == [{"input": "one"}, {"input": "two"}]
    assert [c[1][1] for c in later.calls if c[0] == "on_chain_start"] == [{"input": "two"}]


async def test_handlers_via_with_config_on_a_nested_model() -> None:
    recorder = Recorder()
    inner = ScriptedChatModel([ScriptedTurn("inner")]).with_config(
        run_name="Inner", callbacks=[recorder]
    )

    @tool
    async def ask() -> str:
        """Ask the inner model."""
        return (await inner.ainvoke("?")).content

    model = ScriptedChatModel([ScriptedTurn(tool_calls=[ScriptedCall("ask")]), ScriptedTurn("ok")])
    await Agent(model, [ask]).ainvoke("q")
    assert {c[2]["name"] for c in recorder.calls} == {"Inner"}
    assert recorder.names()[0] == "on_chat_model_start" and recorder.names()[-1] == "on_llm_end"


async def test_bad_callbacks_fail_at_the_call() -> None:
    with pytest.raises(TypeError, match="on_event"):
        await agent(*SEARCH).ainvoke("q", callbacks=[object()])
    with pytest.raises(TypeError, match="list of handlers"):
        agent(*SEARCH).astream_events("q", callbacks=Recorder())
    with pytest.raises(TypeError, match="on_event"):
        async with open_runtime(callbacks=[1]):
            pass


async def test_custom_event_data_must_be_json_able() -> None:
    @tool
    async def bad() -> str:
        """Dispatches something that is not JSON."""
        await dispatch_custom_event("oops", {"when": object()})
        return "unreachable"

    model = ScriptedChatModel([ScriptedTurn(tool_calls=[ScriptedCall("bad")]), ScriptedTurn("ok")])
    async with Agent(model, [bad]).astream("q") as steps:
        chunks = [c async for c in steps]
    observation = chunks[1]["steps"][0].observation
    assert "custom event data must be JSON-able" in observation


async def test_a_failed_stream_returns_after_its_handlers_saw_the_end() -> None:
    class Slow(Recorder):
        async def on_event(self, event: StreamEvent) -> None:
            await trio.sleep(0.001)  # slower than the run
            await super().on_event(event)

    slow = Slow()
    failing = agent(ScriptedTurn("a b c d e f g", error="down"))
    with pytest.raises(ModelError, match="down"):
        async with failing.astream_events("q", callbacks=[slow]) as events:
            async for _ in events:
                pass
    assert slow.names()[-1] == "on_chain_error"
