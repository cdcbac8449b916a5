"""Agents that compose (issue 35): an agent as a tool, handoffs, structured output and
guardrails, each in one event tree that keeps promises 1-4, and each bad input or
fault the issue lists ending with a clear error and a terminal event."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import attrs
import pytest
import trio

from actors import (
    Agent,
    ChatModel,
    ChunkSink,
    GuardrailResult,
    GuardrailTrippedError,
    HandoffError,
    OutputTypeError,
    OutputValidationError,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    handoff,
    input_guardrail,
    output_guardrail,
    tool,
    tool_guardrail,
    without_tool_calls,
)
from actors.testing import check_events
from protocol import (
    AgentOutput,
    AgentRequest,
    AssistantMessage,
    AssistantMessageChunk,
    ChatMessage,
    ChatRequest,
    StreamEvent,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from runtime import RunTimeoutError, open_runtime


@tool
async def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"facts about {topic}"


def scripted(*turns: ScriptedTurn, name: str = "model", delay: float = 0.0) -> ScriptedChatModel:
    return ScriptedChatModel(list(turns), name=name, token_delay=delay)


async def events_of(target: Any, question: Any = "q", **kw: Any) -> list[StreamEvent]:
    async with target.astream_events(question, **kw) as events:
        return [e async for e in events]


async def failing(
    target: Any, question: Any = "q", **kw: Any
) -> tuple[list[StreamEvent], BaseException]:
    """The events of a run that fails, and the error its stream raised at the end."""
    seen: list[StreamEvent] = []
    with pytest.raises(Exception) as caught:
        async with target.astream_events(question, **kw) as events:
            async for event in events:  # one by one: the stream raises at its end
                seen.append(event)  # noqa: PERF401
    check_events(seen)
    assert seen[-1].event.endswith("_error")
    return seen, caught.value


def names_under(events: Sequence[StreamEvent], run_id: str) -> list[str]:
    return [e.name for e in events if e.phase == "start" and run_id in e.parent_ids]


# --- an agent as a tool ---------------------------------------------------------------


def researcher() -> Agent:
    model = scripted(
        ScriptedTurn(tool_calls=[ScriptedCall("lookup", {"topic": "cats"})]),
        ScriptedTurn("Cats sleep 16 hours a day."),
        name="researcher_llm",
    )
    return Agent(model, [lookup], name="Researcher")


def writer(research: Any) -> Agent:
    model = scripted(
        ScriptedTurn(tool_calls=[ScriptedCall("research", {"input": "how long do cats sleep?"})]),
        ScriptedTurn("Report: cats sleep a lot."),
        name="writer_llm",
    )
    return Agent(model, [research], name="Writer")


async def test_agent_as_tool_runs_as_a_child_of_the_tool_run() -> None:
    research = researcher().as_tool("research", "Ask the researcher.")
    assert research.spec.parameters["required"] == ["input"]
    events = await events_of(
        writer(research), "write", config={"tags": ["outer"], "metadata": {"user": "u1"}}
    )
    check_events(events)
    starts = {e.name: e for e in events if e.phase == "start"}
    tool_run = starts["research"]
    inner = starts["Researcher"]
    assert inner.parent_ids[-1] == tool_run.run_id  # the inner agent: a child of the tool
    inner_model = starts["researcher_llm"]
    assert inner_model.parent_ids[-2:] == (tool_run.run_id, inner.run_id)
    for event in events:  # tags and metadata given at the root reach every descendant
        assert "outer" in event.tags and event.metadata["user"] == "u1"
    # the inner model's tokens stream as events of that subtree
    inner_tokens = [
        e.data.chunk.content
        for e in events
        if e.event == "on_chat_model_stream" and e.run_id == inner_model.run_id
    ]
    assert "".join(inner_tokens) == "Cats sleep 16 hours a day."
    # the outer model sees the inner agent's final answer as the tool's result
    end = events[-1]
    assert end.name == "Writer" and end.event == "on_chain_end"
    tool_message = next(m for m in end.data.output.messages if isinstance(m, ToolMessage))
    assert tool_message.content == "Cats sleep 16 hours a day."


async def test_agent_as_tool_gives_a_chosen_part_or_the_structured_answer() -> None:
    research = researcher().as_tool(output=lambda out: {"said": out.output, "n": out.iterations})
    assert research.name == "Researcher"
    result = await research.ainvoke({"input": "?"})
    assert result == {"said": "Cats sleep 16 hours a day.", "n": 2}

    answer = Agent(scripted(ScriptedTurn('{"city": "Paris", "population": 2}')), output_type=City)
    assert await answer.as_tool("capital").ainvoke("?") == {"city": "Paris", "population": 2}


def test_as_tool_needs_an_identifier() -> None:
    with pytest.raises(TypeError, match="identifier"):
        researcher().as_tool("not a name")


# --- structured output -------------------------------------------------------------------


@attrs.frozen
class City:
    city: str
    population: int


class Weather(TypedDict):
    summary: str
    celsius: float


async def test_structured_output_with_an_attrs_class() -> None:
    agent = Agent(
        scripted(ScriptedTurn('```json\n{"city": "Paris", "population": 2}\n```')), output_type=City
    )
    events = await events_of(agent, "capital of France?")
    check_events(events)
    result = events[-1].data.output
    assert result.structured == {"city": "Paris", "population": 2}  # JSON in events
    typed = await agent.ainvoke("capital of France?")
    assert typed.structured == City("Paris", 2)  # typed from ainvoke
    model_start = next(e for e in events if e.event == "on_chat_model_start")
    system = model_start.data.input["messages"][0]
    assert isinstance(system, SystemMessage) and '"population"' in system.content  # by prompt


async def test_structured_output_with_a_typeddict_and_a_json_schema() -> None:
    weather = Agent(
        scripted(ScriptedTurn('{"summary": "sunny", "celsius": 21.5}')), output_type=Weather
    )
    assert (await weather.ainvoke("?")).structured == {"summary": "sunny", "celsius": 21.5}
    schema = {"type": "array", "items": {"type": "integer"}, "title": "numbers"}
    numbers = Agent(scripted(ScriptedTurn("[1, 2, 3]")), output_type=schema)
    assert (await numbers.ainvoke("?")).structured == [1, 2, 3]


async def test_an_invalid_answer_is_told_to_the_model_which_retries() -> None:
    agent = Agent(
        scripted(
            ScriptedTurn("Paris, I think."),
            ScriptedTurn('{"city": "Paris"}'),
            ScriptedTurn('{"city": "Paris", "population": 2}'),
        ),
        output_type=City,
    )
    result = await agent.ainvoke("?")
    assert result.structured == City("Paris", 2) and result.iterations == 3
    told = [m.content for m in result.messages if isinstance(m, UserMessage)][1:]
    assert "not JSON" in told[0]
    assert "population" in told[1] and "required" in told[1]


async def test_a_model_that_never_answers_validly_ends_with_a_clear_error() -> None:
    agent = Agent(scripted(*[ScriptedTurn("no")] * 5), output_type=City, output_retries=2)
    async with agent.astream_events("?") as events:
        seen: list[StreamEvent] = []
        with pytest.raises(OutputValidationError, match="after 3 tries: the answer is not JSON"):
            async for event in events:  # one by one: the stream raises at its end
                seen.append(event)  # noqa: PERF401
    check_events(seen)
    assert seen[-1].event == "on_chain_error" and "output type" in str(seen[-1].data.error)
    assert sum(e.event == "on_chat_model_start" for e in seen) == 3


@pytest.mark.parametrize(
    ("output_type", "match"),
    [
        (int, "attrs class, a TypedDict or a JSON schema"),
        ({"type": 12}, "not a valid JSON schema"),
        (attrs.make_class("Odd", {"when": attrs.field(type=complex)}), "no JSON schema"),
    ],
)
def test_an_output_type_without_a_schema_fails_when_the_agent_is_made(
    output_type: Any, match: str
) -> None:
    with pytest.raises(OutputTypeError, match=match):
        Agent(scripted(ScriptedTurn("x")), output_type=output_type)


def test_openai_model_asks_with_response_format_json_schema() -> None:
    from actors import OpenAIChatModel
    from protocol import ChatRequest

    agent = Agent(scripted(ScriptedTurn("x")), output_type=City)
    fmt = agent._output.response_format  # type: ignore[union-attr]
    native = OpenAIChatModel("m", api_key="k")
    body = native.request_body(ChatRequest((UserMessage("q"),), response_format=fmt))
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["city", "population"]
    prompt = OpenAIChatModel("m", api_key="k", structured_output="prompt")
    assert "response_format" not in prompt.request_body(
        ChatRequest((UserMessage("q"),), response_format=fmt)
    )
    assert native.native_response_format and not prompt.native_response_format
    with pytest.raises(ValueError, match="structured_output"):
        OpenAIChatModel("m", api_key="k", structured_output="xml")


# --- handoffs -------------------------------------------------------------------------


def always(turn: ScriptedTurn, name: str) -> ScriptedChatModel:
    """A model that answers every conversation with ``turn`` (whatever its history)."""
    return ScriptedChatModel(lambda messages: turn, name=name)


def specialists() -> tuple[Agent, Agent, Agent]:
    billing = Agent(
        always(ScriptedTurn("Your invoice is paid."), "billing_llm"),
        name="Billing",
        system_prompt="You answer billing questions.",
    )
    tech = Agent(always(ScriptedTurn("Restart it."), "tech_llm"), name="Tech")
    triage = Agent(
        always(ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_billing")]), "triage_llm"),
        name="Triage",
        handoffs=[billing, handoff(tech, history=without_tool_calls)],
    )
    return triage, billing, tech


async def test_a_handoff_passes_the_conversation_and_the_tree_shows_who_speaks() -> None:
    triage, _, _ = specialists()
    history = [UserMessage("hi"), AssistantMessage("hello")]
    events = await events_of(triage, {"input": "was my invoice paid?", "chat_history": history})
    check_events(events)
    starts = {e.name: e for e in events if e.phase == "start"}
    assert starts["Billing"].parent_ids[-1] == starts["Triage"].run_id
    assert starts["Billing"].metadata["handoff_from"] == "Triage"
    assert "handoff_from" not in starts["billing_llm"].metadata  # local: not inherited
    assert starts["billing_llm"].parent_ids[-1] == starts["Billing"].run_id
    billing_in = starts["billing_llm"].data.input["messages"]
    assert [type(m).__name__ for m in billing_in] == [
        "SystemMessage",
        "UserMessage",
        "AssistantMessage",
        "UserMessage",
    ]
    assert billing_in[-1].content == "was my invoice paid?"
    end = events[-1]
    assert end.name == "Triage" and end.data.output.output == "Your invoice is paid."
    assert end.data.output.messages[-1].content == "Your invoice is paid."
    tool_end = next(e for e in events if e.event == "on_chain_end" and e.name == "Billing")
    assert tool_end.data.output.output == "Your invoice is paid."


async def test_a_handoff_history_filter_and_steps() -> None:
    _, _, tech = specialists()
    triage = Agent(
        always(ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_tech")]), "triage_llm"),
        name="Triage",
        handoffs=[handoff(tech, history=without_tool_calls)],
    )
    history: list[ChatMessage] = [
        UserMessage("earlier"),
        AssistantMessage("", tool_calls=(ToolCall("c1", "lookup", {"topic": "x"}),)),
        ToolMessage("facts", "c1", "lookup"),
        AssistantMessage("so it is"),
    ]
    async with triage.astream({"input": "it broke", "chat_history": history}) as steps:
        chunks = [c async for c in steps]
    assert chunks[-1]["output"] == "Restart it."
    assert chunks[1]["steps"][0].observation == "Transferred: transfer_to_tech."
    events = await events_of(triage, {"input": "it broke", "chat_history": history})
    tech_in = next(e for e in events if e.event == "on_chat_model_start" and e.name == "tech_llm")
    assert [m.content for m in tech_in.data.input["messages"]] == [
        "earlier",
        "so it is",
        "it broke",
    ]


async def test_a_handoff_to_an_unknown_agent_is_told_to_the_model() -> None:
    triage, _, _ = specialists()
    model = scripted(
        ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_legal")]), ScriptedTurn("Sorry.")
    )
    agent = Agent(model, name="Triage", handoffs=triage.handoffs)
    events = await events_of(agent)
    check_events(events)
    steps = events[-1].data.output.messages
    told = next(m for m in steps if isinstance(m, ToolMessage))
    assert told.is_error and "no tool named 'transfer_to_legal'" in told.content
    assert "transfer_to_billing" in told.content and "transfer_to_tech" in told.content


async def test_a_handoff_whose_target_is_not_an_agent_ends_with_a_clear_error() -> None:
    agent = Agent(
        scripted(ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_ghost")])),
        handoffs=[handoff(lambda: None, tool_name="transfer_to_ghost")],
    )
    _, error = await failing(agent)
    assert isinstance(error, HandoffError) and "not an Agent" in str(error)
    with pytest.raises(TypeError, match="tool_name"):
        handoff(lambda: agent)


async def test_a_loop_of_handoffs_past_the_bound_ends_every_run_with_an_error() -> None:
    def ping_pong(name: str, other: str) -> Agent:
        model = scripted(ScriptedTurn(tool_calls=[ScriptedCall(f"transfer_to_{other.lower()}")]))
        return Agent(
            model,
            name=name,
            max_handoffs=3,
            handoffs=[handoff(lambda: agents[other], tool_name=f"transfer_to_{other.lower()}")],
        )

    agents = {"Ping": ping_pong("Ping", "Pong"), "Pong": ping_pong("Pong", "Ping")}
    with trio.fail_after(5):
        events, error = await failing(agents["Ping"])
    assert isinstance(error, HandoffError)
    assert "more than 3 times (max_handoffs): Ping -> Pong -> Ping -> Pong" in str(error)
    agent_ends = [e for e in events if e.event == "on_chain_error"]
    assert [e.name for e in agent_ends] == ["Pong", "Ping", "Pong", "Ping"]


def test_handoff_settings_are_checked() -> None:
    triage, billing, _ = specialists()
    with pytest.raises(ValueError, match="unique"):
        Agent(triage.model, handoffs=[billing, billing])
    with pytest.raises(ValueError, match="clash"):
        Agent(triage.model, [lookup], handoffs=[handoff(billing, tool_name="lookup")])
    with pytest.raises(ValueError, match="max_handoffs"):
        Agent(triage.model, max_handoffs=-1)


# --- guardrails -----------------------------------------------------------------------


@input_guardrail
async def no_secrets(request: AgentRequest) -> GuardrailResult | None:
    if "password" in (request.input or ""):
        return GuardrailResult.tripped("asks for a password")
    return None


async def test_a_passing_input_guardrail_changes_nothing() -> None:
    agent = Agent(scripted(ScriptedTurn("fine.")), guardrails=[no_secrets])
    events = await events_of(agent, "hello")
    check_events(events)
    assert events[-1].data.output.output == "fine."


async def test_an_input_tripwire_cancels_the_model_before_its_next_token() -> None:
    gate = trio.Event()

    @input_guardrail(name="slow_check")
    async def slow_check(request: AgentRequest) -> GuardrailResult:
        await gate.wait()
        return GuardrailResult.tripped("not allowed")

    model = scripted(ScriptedTurn(" ".join(["word"] * 200)), delay=0.001)
    agent = Agent(model, name="Guarded", guardrails=[slow_check])
    seen: list[StreamEvent] = []
    with pytest.raises(GuardrailTrippedError) as caught:
        async with agent.astream_events("hi") as events:
            async for event in events:
                seen.append(event)
                if event.event == "on_chat_model_stream" and len(seen) == 10:
                    gate.set()
                    tripped_at = len(seen)
    check_events(seen)
    assert caught.value.guardrail == "slow_check" and caught.value.reason == "not allowed"
    tokens = [e for e in seen if e.event == "on_chat_model_stream"]
    assert len(tokens) < 200  # the model was stopped mid-answer
    model_end = next(e for e in seen if e.event == "on_chat_model_error")
    assert model_end.status == "cancelled"
    assert all(e.event != "on_chat_model_stream" for e in seen[tripped_at + 1 :])
    assert seen[-1].name == "Guarded" and seen[-1].event == "on_chain_error"
    assert "input guardrail 'slow_check' tripped: not allowed" in str(seen[-1].data.error)


async def test_a_blocking_input_guardrail_runs_before_the_model() -> None:
    blocking = input_guardrail(no_secrets.check, name="no_secrets", parallel=False)
    agent = Agent(scripted(ScriptedTurn("the password is 42")), guardrails=[blocking])
    events, error = await failing(agent, "what is the password?")
    assert isinstance(error, GuardrailTrippedError) and error.stage == "input"
    assert not [e for e in events if e.event.startswith("on_chat_model")]


async def test_a_raising_guardrail_fails_closed() -> None:
    @output_guardrail
    def broken(answer: str) -> None:
        raise RuntimeError("classifier down")

    agent = Agent(scripted(ScriptedTurn("an answer")), guardrails=[broken])
    events, error = await failing(agent)
    assert isinstance(error, GuardrailTrippedError)
    assert error.reason == "the guardrail failed: RuntimeError: classifier down"
    assert "output guardrail 'broken' tripped" in str(events[-1].data.error)


async def test_a_guardrail_answering_no_verdict_fails_closed() -> None:
    agent = Agent(
        scripted(ScriptedTurn("x")), guardrails=[output_guardrail(lambda a: True, name="yes")]
    )
    _, error = await failing(agent)
    assert isinstance(error, GuardrailTrippedError) and "not a GuardrailResult" in error.reason


async def test_an_output_guardrail_sees_the_structured_answer() -> None:
    seen: list[Any] = []

    @output_guardrail
    def small_cities(answer: City) -> GuardrailResult | None:
        seen.append(answer)
        return GuardrailResult.tripped("too big") if answer.population > 10 else None

    agent = Agent(
        scripted(ScriptedTurn('{"city": "Tokyo", "population": 14}')),
        output_type=City,
        guardrails=[small_cities],
    )
    _, error = await failing(agent)
    assert seen == [City("Tokyo", 14)]
    assert isinstance(error, GuardrailTrippedError) and error.reason == "too big"


async def test_a_tool_guardrail_stops_the_call_before_the_tool_runs() -> None:
    ran: list[str] = []

    @tool
    async def delete(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return "gone"

    @tool_guardrail
    def no_root(call: ToolCall) -> GuardrailResult | None:
        if call.args.get("path") == "/":
            return GuardrailResult.tripped("refuses to delete /")
        return None

    agent = Agent(
        scripted(ScriptedTurn(tool_calls=[ScriptedCall("delete", {"path": "/"})])),
        [delete],
        guardrails=[no_root],
    )
    events, error = await failing(agent)
    assert ran == [] and isinstance(error, GuardrailTrippedError) and error.stage == "tool"
    assert not [e for e in events if e.event == "on_tool_start"]


async def test_a_performer_as_guardrail_runs_as_a_child_run() -> None:
    judge = Agent(
        scripted(ScriptedTurn('{"tripwire": true, "reason": "off topic"}'), name="judge_llm"),
        name="Judge",
        output_type=GuardrailResult,
    )
    agent = Agent(
        scripted(ScriptedTurn("a b c d"), name="main_llm", delay=0.05),
        name="Main",
        guardrails=[input_guardrail(judge)],
    )
    events, error = await failing(agent, "tell me a joke")
    assert isinstance(error, GuardrailTrippedError) and error.guardrail == "Judge"
    judge_start = next(e for e in events if e.phase == "start" and e.name == "Judge")
    assert judge_start.data.input == {"input": "tell me a joke"}
    assert judge_start.parent_ids[-1] == events[0].run_id


async def test_a_hanging_guardrail_is_bounded_by_the_run_timeout() -> None:
    @input_guardrail
    async def hangs(request: AgentRequest) -> None:
        await trio.sleep_forever()

    agent = Agent(scripted(ScriptedTurn("quick")), guardrails=[hangs])
    with trio.fail_after(5):
        events, error = await failing(agent, config={"timeout": 0.2})
    assert isinstance(error, RunTimeoutError)
    assert events[-1].event == "on_chain_error"


def test_guardrails_are_checked() -> None:
    with pytest.raises(TypeError, match="guardrails must be made"):
        Agent(scripted(ScriptedTurn("x")), guardrails=[lambda r: None])
    with pytest.raises(TypeError, match="function or a performer"):
        input_guardrail(42)  # type: ignore[call-overload]  # what the check refuses


async def test_nested_composition_in_one_runtime_keeps_promises() -> None:
    research = researcher().as_tool("research")
    triage, _, _ = specialists()
    outer = Agent(
        scripted(
            ScriptedTurn(tool_calls=[ScriptedCall("research", {"input": "?"})]),
            ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_triage")]),
        ),
        [research],
        name="Front",
        handoffs=[triage],
        guardrails=[no_secrets],
    )
    async with open_runtime() as rt:
        events = (
            await events_of(outer, "hello", runtime=rt)
            if False
            else await events_of(outer, "hello")
        )
    check_events(events)
    result: AgentOutput = events[-1].data.output
    assert result.output == "Your invoice is paid."
    json.dumps(result.structured)


def test_the_agents_page_runs_as_written() -> None:
    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "agents.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert blocks
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Answer(text='Paid.', confident=True)\n"


@attrs.frozen(eq=False)
class LoggingModel(ChatModel):
    """Streams numbered tokens, a scheduler pass apart, logging each as it makes it."""

    log: list[str]
    tokens: int = 500
    name: str = "logging_llm"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = attrs.field(factory=dict)

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        for index in range(self.tokens):
            await trio.lowlevel.checkpoint()
            self.log.append(f"t{index} ")
            await sink.send(AssistantMessageChunk(f"t{index} "))


@pytest.mark.parametrize("after", [1, 7, 40])
async def test_no_token_made_after_the_tripwire_reaches_the_consumer(after: int) -> None:
    log: list[str] = []

    @input_guardrail
    async def trips_late(request: AgentRequest) -> GuardrailResult:
        while len(log) < after:  # the model streams meanwhile
            await trio.lowlevel.checkpoint()
        log.append("TRIP")  # nothing runs between this and the cancellation
        return GuardrailResult.tripped("late")

    agent = Agent(LoggingModel(log), guardrails=[trips_late])
    events, error = await failing(agent)
    assert isinstance(error, GuardrailTrippedError)
    made_before = log[: log.index("TRIP")]
    assert log[-1] == "TRIP"  # the model made nothing after it
    streamed = [e.data.chunk.content for e in events if e.event == "on_chat_model_stream"]
    assert streamed == made_before[: len(streamed)]
