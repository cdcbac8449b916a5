"""Tools the caller carries out itself (a frontend's): offered to the model beside the
agent's own; a call of one ends the run without a made-up result, and the conversation
goes on when the next request brings the tool's result."""

from __future__ import annotations

from typing import Any

import pytest

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors.testing import check_events
from protocol import (
    AgentOutput,
    AgentRequest,
    AssistantMessage,
    ChatRequest,
    ToolMessage,
    ToolSpec,
)
from runtime import Performer, Run, open_runtime

CONFIRM: dict[str, Any] = {
    "name": "confirm",
    "description": "Ask the user to confirm.",
    "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
}


def make_agent(log: list[Any]) -> Agent:
    @tool
    async def lookup(x: int) -> str:
        """Look up."""
        log.append(x)
        return f"found {x}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(
                tool_calls=[
                    ScriptedCall("lookup", {"x": 1}, id="s1"),
                    ScriptedCall("confirm", {"question": "sure?"}, id="c1"),
                ]
            ),
            ScriptedTurn("confirmed, done"),
        ]
    )
    return Agent(model=model, tools=[lookup], name="helper")


async def test_a_call_of_the_callers_tool_ends_the_run_and_its_result_goes_on() -> None:
    log: list[Any] = []
    agent = make_agent(log)
    async with open_runtime() as rt:
        async with rt.astream_events(
            agent, {"messages": [{"role": "user", "content": "do it"}], "tools": [CONFIRM]}
        ) as stream:
            events = [e async for e in stream]
        first: AgentOutput = stream.output
        check_events(events)
        assert first.finish_reason == "client_tool_calls" and log == [1]
        last = first.messages[-1]
        assert isinstance(last, ToolMessage) and last.tool_call_id == "s1"  # ours answered
        asked = next(m for m in first.messages if isinstance(m, AssistantMessage))
        assert [c.name for c in asked.tool_calls] == ["lookup", "confirm"]
        # the frontend answers its call and sends the whole conversation back
        history = [*first.messages, ToolMessage("yes", "c1", "confirm")]
        second = await rt.ainvoke(agent, {"messages": history, "tools": [CONFIRM]})
    assert second.finish_reason == "stop" and second.output == "confirmed, done"
    assert log == [1]  # the agent's own call is not made again
    assert isinstance(second.messages[-1], AssistantMessage)


class Spy(Performer[ChatRequest, AssistantMessage]):
    """A chat model that notes the tools it is offered, and answers at once."""

    run_kind = "chat_model"
    name = "spy"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # shared, read-only

    def __init__(self) -> None:
        self.offered: list[list[str]] = []

    def coerce_input(self, value: Any) -> ChatRequest:
        assert isinstance(value, ChatRequest)
        return value

    async def perform(self, message: ChatRequest, run: Run) -> AssistantMessage:
        self.offered.append([spec.name for spec in message.tools])
        return AssistantMessage("ok")


async def test_the_model_is_offered_both_kinds_of_tools() -> None:
    @tool
    async def lookup(x: int) -> str:
        """Look up."""
        return str(x)

    spy = Spy()
    agent = Agent(model=spy, tools=[lookup], name="a")
    request = AgentRequest("hi", client_tools=[ToolSpec(**CONFIRM)])
    async with open_runtime() as rt:
        assert (await rt.ainvoke(agent, request)).output == "ok"
    assert spy.offered == [["lookup", "confirm"]]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": "confirm"},
            "'tools' must be a list",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"name": ""}]}, r"tools\[0\]"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "lookup"}]},
            "names of the agent's own",
        ),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "the user's question"),
        ({"chat_history": [{"role": "user", "content": "x"}]}, "needs 'input'"),
    ],
)
def test_bad_requests_are_refused_naming_what_is_wrong(value: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        make_agent([]).coerce_input(value)
