"""The agent loop: steps, parallel tools, limits, and every bad call the model can make."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from attrs import field, frozen

from actors import (
    Agent,
    ChunkSink,
    ModelError,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tool,
)
from actors.testing import check_events
from protocol import (
    ActionsChunk,
    AgentOutput,
    ChatRequest,
    FinishChunk,
    StepsChunk,
    StreamEvent,
    SystemMessage,
    ToolMessage,
    ToolSpec,
)
from runtime import RunContext, open_runtime


@tool
async def echo(text: str) -> str:
    """Say it back."""
    return text


@tool
async def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


def agent_of(*turns: ScriptedTurn, **kw: Any) -> Agent:
    model = ScriptedChatModel(list(turns)).with_config(tags=["agent_llm"])
    return Agent(model, [echo, explode], **kw)


async def events_of(agent: Agent, question: str = "q", **kw: Any) -> list[StreamEvent]:
    async with agent.astream_events(question, **kw) as events:
        return [e async for e in events]


async def test_steps_stream_like_agent_executor() -> None:
    agent = agent_of(
        ScriptedTurn(tool_calls=[ScriptedCall("echo", {"text": "one"})]),
        ScriptedTurn("done."),
    )
    async with agent.astream("q") as steps:
        chunks = [c async for c in steps]
    actions, observed, finish = chunks
    assert isinstance(actions, ActionsChunk) and "actions" in actions
    assert actions["actions"][0].tool == "echo"
    assert actions["actions"][0].tool_input == {"text": "one"}
    assert actions["messages"][0].tool_calls[0].name == "echo"
    assert isinstance(observed, StepsChunk) and observed["steps"][0].observation == "one"
    assert observed["messages"] == (ToolMessage("one", "call_0_0", "echo"),)
    assert isinstance(finish, FinishChunk) and finish["output"] == "done."
    assert finish["messages"][0].content == "done."
    assert "actions" not in finish and finish.finish_reason == "stop"


async def test_the_output_reads_like_a_dict() -> None:
    output = await agent_of(ScriptedTurn("hello")).ainvoke({"input": "q"})
    assert isinstance(output, AgentOutput)
    assert output["output"] == "hello" and output["input"] == "q"
    assert output.finish_reason == "stop" and output.iterations == 1


async def test_parallel_tool_calls_run_concurrently() -> None:
    first_in = trio.Event()
    second_in = trio.Event()

    @tool
    async def first() -> str:
        """Waits for second."""
        first_in.set()
        await second_in.wait()
        return "1"

    @tool
    async def second() -> str:
        """Waits for first."""
        second_in.set()
        await first_in.wait()
        return "2"

    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("first"), ScriptedCall("second")]),
            ScriptedTurn("ok"),
        ]
    )
    with trio.fail_after(2):  # run one after the other, they would wait for ever
        received = await events_of(Agent(model, [first, second]))
    runs = check_events(received)
    tool_runs = [t for t in runs.values() if t.start.kind == "tool"]
    assert {t.terminal.data.output for t in tool_runs if t.terminal} == {"1", "2"}


async def test_bad_calls_are_told_to_the_model_and_the_loop_goes_on() -> None:
    def script(messages: Any) -> ScriptedTurn:
        if not any(isinstance(m, ToolMessage) for m in messages):
            return ScriptedTurn(
                tool_calls=[
                    ScriptedCall("nope"),
                    ScriptedCall("echo", '{"text": '),
                    ScriptedCall("echo", {"txt": "x"}),
                    ScriptedCall("explode", {"reason": "kaboom"}),
                    ScriptedCall("echo", {"text": "fine"}),
                ]
            )
        errors = [m.content for m in messages if isinstance(m, ToolMessage) and m.is_error]
        return ScriptedTurn(f"{len(errors)} errors")

    agent = Agent(ScriptedChatModel(script), [echo, explode])
    received = await events_of(agent)
    runs = check_events(received)
    assert received[-1].data.output["output"] == "4 errors"
    model_input = [t for t in runs.values() if t.start.kind == "chat_model"][1].start.data.input
    told = {m.name: m.content for m in model_input["messages"] if isinstance(m, ToolMessage)}
    assert told.keys() == {"nope", "echo", "explode"}
    contents = [m.content for m in model_input["messages"] if isinstance(m, ToolMessage)]
    assert "there is no tool named 'nope'. Available tools: echo, explode." in contents[0]
    assert contents[1] == (
        "Error: ToolArgumentsError: invalid arguments for tool 'echo': "
        "'text' is a required property; "
        "Additional properties are not allowed ('txt' was unexpected)"
    )
    assert "RuntimeError: kaboom" in contents[2]
    assert contents[3] == "fine"
    assert "are invalid: arguments are not valid JSON" in contents[4]
    tool_terminals = {
        (t.start.name, t.terminal.event)
        for t in runs.values()
        if t.terminal and t.start.kind == "tool"
    }
    assert ("explode", "on_tool_error") in tool_terminals
    assert ("echo", "on_tool_error") in tool_terminals  # the schema check runs in the tool run


async def test_max_iterations_ends_with_a_clear_reason() -> None:
    loop = ScriptedChatModel(
        lambda _: ScriptedTurn(tool_calls=[ScriptedCall("echo", {"text": "again"})])
    )
    agent = Agent(loop, [echo], max_iterations=3)
    async with agent.astream("q") as steps:
        chunks = [c async for c in steps]
    assert len(chunks) == 3 * 2 + 1
    finish = chunks[-1]
    assert isinstance(finish, FinishChunk) and finish.finish_reason == "max_iterations"
    assert "max_iterations=3" in finish.output
    output = steps.output
    assert output.finish_reason == "max_iterations" and output.iterations == 3


async def test_a_model_error_fails_the_agent_run_with_that_error() -> None:
    agent = agent_of(ScriptedTurn("thinking", error="rate limited"))
    received: list[StreamEvent] = []
    with pytest.raises(ModelError, match="rate limited"):
        async with agent.astream_events("q") as events:
            async for event in events:
                received.append(event)  # noqa: PERF401  # keep what came before the raise
    check_events(received)
    assert [(e.event, e.status) for e in received if e.is_terminal] == [
        ("on_chat_model_error", "error"),
        ("on_chain_error", "error"),
    ]


async def test_a_model_call_inside_a_tool_is_a_child_of_the_tool_run() -> None:
    inner = ScriptedChatModel([ScriptedTurn("inner words")], name="Inner").with_config(
        run_name="Get Items LLM", tags=["tool_llm"], metadata={"depth": 2}
    )

    @tool
    async def ask(question: str, context: RunContext) -> str:
        """Ask the inner model."""
        assert context.name == "ask"
        return (await inner.ainvoke(question)).content

    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("ask", {"question": "?"})]), ScriptedTurn("ok")]
    ).with_config(tags=["agent_llm"])
    received = await events_of(
        Agent(model, [ask]), tags=["root"], metadata={"user": "u"}, run_name="Outer"
    )
    runs = check_events(received)
    tool_run = next(t for t in runs.values() if t.start.name == "ask")
    nested = next(t for t in runs.values() if t.start.name == "Get Items LLM")
    assert nested.start.parent_ids[-1] == tool_run.start.run_id
    assert nested.start.tags == ("root", "tool_llm")
    assert nested.start.metadata == {
        "user": "u",
        "depth": 2,
        "ls_model_name": "Inner",
        "ls_provider": "scripted",
    }
    assert "agent_llm" not in nested.start.tags and "tool_llm" not in tool_run.start.tags
    assert "".join(c.content for c in nested.chunks) == "inner words"
    assert received[0].name == "Outer"


async def test_the_system_prompt_leads_the_conversation() -> None:
    agent = agent_of(ScriptedTurn("hi"), system_prompt="Be brief.")
    received = await events_of(agent)
    model_start = next(e for e in received if e.event == "on_chat_model_start")
    assert model_start.data.input["messages"][0] == SystemMessage("Be brief.")
    assert model_start.data.input["messages"][1].content == "q"


def test_bad_agent_settings_fail_clearly() -> None:
    model = ScriptedChatModel([])
    with pytest.raises(TypeError, match="model must be a chat model"):
        Agent(echo)
    with pytest.raises(TypeError, match="use @tool"):
        Agent(model, [lambda: None])  # type: ignore[list-item]  # wrong on purpose
    with pytest.raises(ValueError, match=r"repeated: \['echo'\]"):
        Agent(model, [echo, echo])
    with pytest.raises(ValueError, match="max_iterations"):
        Agent(model, max_iterations=0)
    with pytest.raises(TypeError, match=r"not a string: use \['agent'\]"):
        Agent(model, tags="agent")
    with pytest.raises(TypeError, match="tags must be strings"):
        ScriptedChatModel([], tags=[1])  # type: ignore[list-item]  # wrong on purpose
    with pytest.raises(TypeError, match=r"agent 'Agent': messages\[0\] must be a chat message"):
        Agent(model).astream_events(["not", "a", "question"])
    with pytest.raises(TypeError, match="takes a string, "):
        Agent(model).astream_events(42)


async def test_many_agents_share_one_model_actor() -> None:
    agent = agent_of(
        ScriptedTurn(tool_calls=[ScriptedCall("echo", {"text": "x"})]), ScriptedTurn("end")
    )
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        for index in range(20):
            nursery.start_soon(agent.ainvoke, f"q{index}")
    assert rt.protocol_violations == 0 and rt.open_runs == 0


def test_an_open_agent_run_keeps_no_closure_cells() -> None:
    # Thousands of agent runs may be open at once, and the cyclic collector walks what
    # each keeps. A comprehension or a closure inside these methods would keep its
    # variables in cells for as long as the run (or its tool turn) is open: with 1,000
    # runs at once, about 24 cells per run reached the old generation (issue 29).
    for method in (Agent.perform, Agent._tool_turn, Agent._call_tools):
        assert method.__code__.co_cellvars == (), method.__qualname__


@frozen(eq=False)
class _RecordingModel(ScriptedChatModel):
    """A scripted model that keeps the tools of each request it gets."""

    offered: list[tuple[ToolSpec, ...]] = field(factory=list)

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        self.offered.append(request.tools)
        await super().generate(request, sink)


async def test_an_agent_offers_the_same_specs_on_every_run() -> None:
    # Made once per agent, not per run; a caller's tools join them for its run only.
    model = _RecordingModel([ScriptedTurn("hi")] * 3)
    agent = Agent(model, [echo, explode])
    theirs = {"name": "theirs", "description": "The caller's.", "parameters": {}}
    async with open_runtime():
        await agent.ainvoke("a")
        await agent.ainvoke("b")
        await agent.ainvoke({"input": "c", "tools": [theirs]})
    first, second, third = model.offered
    assert first is second  # one tuple for every run
    assert [spec.name for spec in first] == ["echo", "explode"]
    assert first[0] is echo.spec
    assert [spec.name for spec in third] == ["echo", "explode", "theirs"]
