"""LangChain code ported by changing only the call: what LangChain programs touch next
(issue 13)."""

from __future__ import annotations

import json
import threading
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
import trio

from actors import (
    Agent,
    AgentFinish,
    AsyncCallbackHandler,
    ChatGenerationChunk,
    LLMResult,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tool,
)
from actors.testing import check_events
from protocol import (
    AgentAction,
    AssistantMessage,
    ChatMessage,
    StreamEvent,
    ToolCall,
    UserMessage,
    converter,
    to_json,
)
from runtime import (
    NoRuntimeError,
    RunLog,
    adispatch_custom_event,
    dispatch_custom_event,
    open_runtime,
)


@tool
def sync_steps(n: int) -> int:
    """A sync tool (it runs in a worker thread) reporting progress."""
    for step in range(n):
        dispatch_custom_event("progress", {"step": step})
    return n


@tool
async def async_steps(n: int) -> int:
    """An async tool reporting progress."""
    for step in range(n):
        await adispatch_custom_event("progress", {"step": step, "from": "async"})
    await adispatch_custom_event("done", {"n": n})
    return n


def _agent() -> Agent:
    calls = [ScriptedCall("sync_steps", {"n": 2}), ScriptedCall("async_steps", {"n": 1})]
    model = ScriptedChatModel([ScriptedTurn(tool_calls=calls), ScriptedTurn("ok")])
    return Agent(model, [sync_steps, async_steps])


async def _custom(**options: Any) -> list[tuple[str, Any]]:
    async with _agent().astream_events("go", **options) as stream:
        events = [e async for e in stream]
    if not options:
        check_events(events)
    return [(e["name"], e["data"]) for e in events if e["event"] == "on_custom_event"]


async def test_custom_events_from_sync_and_async_tools_carry_their_payload() -> None:
    got = await _custom()
    assert sorted(got, key=json.dumps) == sorted(
        [
            ("progress", {"step": 0}),
            ("progress", {"step": 1}),
            ("progress", {"step": 0, "from": "async"}),
            ("done", {"n": 1}),
        ],
        key=json.dumps,
    )
    assert got[[n for n, _ in got].index("done")][1]["n"] == 1  # event["data"]["n"]


async def test_filters_treat_custom_events_as_langchain_does() -> None:
    # LangChain matches a custom event's own name as its name and as its type
    assert {n for n, _ in await _custom(include_names=["progress"])} == {"progress"}
    assert {n for n, _ in await _custom(include_types=["done"])} == {"done"}
    assert await _custom(include_types=["tool"]) == []
    assert {n for n, _ in await _custom(exclude_names=["progress"])} == {"done"}
    assert {n for n, _ in await _custom(exclude_types=["done"])} == {"progress"}


async def test_a_custom_event_as_json_has_its_payload_as_data() -> None:
    async with _agent().astream_events("go", include_names=["done"]) as stream:
        (event,) = [e async for e in stream]
    data = json.loads(to_json(event))
    assert data["event"] == "on_custom_event" and data["data"] == {"n": 1}
    back = converter.structure(data, StreamEvent)
    assert back == event and back["data"] == {"n": 1}


async def test_dispatch_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(NoRuntimeError, match="working for a run"):
        dispatch_custom_event("x")
    with pytest.raises(NoRuntimeError, match="working for a run"):
        await adispatch_custom_event("x")
    with pytest.raises(NoRuntimeError, match="working for a run"):
        await trio.to_thread.run_sync(dispatch_custom_event, "x")
    raised: list[BaseException] = []

    def plain_thread() -> None:
        try:
            dispatch_custom_event("x")
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=plain_thread)
    thread.start()
    thread.join()
    assert isinstance(raised[0], NoRuntimeError) and "a thread a tool started" in str(raised[0])
    with pytest.raises(TypeError, match="non-empty string name"):
        await adispatch_custom_event("")


async def test_a_sync_call_in_async_code_is_sent_or_warns_never_lost_silently() -> None:
    @tool
    async def bare(n: int) -> int:
        """Calls the sync dispatch from async code, without awaiting it."""
        dispatch_custom_event("bare", {"n": n})
        await dispatch_custom_event("awaited", {"n": n})  # the old spelling still works
        return n

    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("bare", {"n": 1})]), ScriptedTurn("ok")]
    )
    async with Agent(model, [bare]).astream_events("go") as stream:
        names = [e.name async for e in stream if e.phase == "custom"]
    assert names == ["bare", "awaited"]


async def test_an_unsent_sync_dispatch_warns_when_dropped() -> None:
    from runtime import CustomEventDispatch

    seen: list[bool] = []

    @tool
    async def behind(n: int) -> int:
        """A stream watching this run is behind: the gate is closed."""
        from runtime import current_run

        gate = current_run().gate  # type: ignore[union-attr]  # inside a run
        assert gate is not None
        gate.close()
        dispatch = dispatch_custom_event("late", {"n": n})
        assert isinstance(dispatch, CustomEventDispatch)
        seen.append(dispatch.sent)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del dispatch
        gate.open()
        assert any("custom event 'late' was not sent" in str(w.message) for w in caught)
        return n

    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("behind", {"n": 1})]), ScriptedTurn("ok")]
    )
    async with open_runtime(), Agent(model, [behind]).astream_events("go") as stream:
        async for _ in stream:
            pass
    assert seen == [False]


# -- messages read as LangChain's -----------------------------------------------------------


async def test_messages_read_as_langchain_messages() -> None:
    calls = [ScriptedCall("sync_steps", {"n": 0})]
    model = ScriptedChatModel([ScriptedTurn("let me see", calls), ScriptedTurn("done")])
    async with open_runtime():
        reply = await model.ainvoke("hi")
        async with model.astream("hi") as stream:
            chunks = [c async for c in stream]
    call = reply.tool_calls[0]
    assert (call["name"], call["args"], call["type"]) == ("sync_steps", {"n": 0}, "tool_call")
    assert call["id"] == call.id and dict(call)["name"] == "sync_steps"
    assert reply.type == "ai"
    assert reply.usage_metadata is not None
    assert set(reply.usage_metadata) == {"input_tokens", "output_tokens", "total_tokens"}
    assert reply.usage_metadata["output_tokens"] == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert reply.response_metadata == {
        "finish_reason": "tool_calls",
        "model_name": "ScriptedChatModel",
    }
    assert reply["usage_metadata"] == reply.usage_metadata
    assert reply.id is not None and reply.id.startswith("run-")
    pieces = [p for c in chunks for p in c.tool_call_chunks]
    assert pieces[0]["name"] == "sync_steps" and pieces[0]["type"] == "tool_call_chunk"
    assert chunks[-1].usage_metadata is not None and chunks[-1].response_metadata == {
        "finish_reason": "tool_calls"
    }
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.content == "let me see"


async def test_an_openai_answer_carries_the_servers_id_and_model() -> None:
    from actors import OpenAIChatModel

    from .openai_server import fake_openai, text_answer

    async with fake_openai(text_answer(["Hel", "lo"])) as server:
        model = OpenAIChatModel("test-model", base_url=server.base_url, api_key="k")
        async with model.astream_events("hi") as stream:
            events = [e async for e in stream]
    chunks = [e.data.chunk for e in events if e.event == "on_chat_model_stream"]
    assert {c.id for c in chunks} == {"chatcmpl-1"}  # the server's id, on every chunk
    reply = events[-1].data.output
    assert reply.id == "chatcmpl-1" and reply.response_metadata == {
        "finish_reason": "stop",
        "model_name": "test-model",
    }
    assert reply.usage_metadata == {"input_tokens": 7, "output_tokens": 2, "total_tokens": 9}
    assert [m.type for m in events[0].data.input["messages"]] == ["human"]


# -- callback handlers with LangChain's types -------------------------------------------------


class Calls(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def on_llm_new_token(self, token: str, **kw: Any) -> None:
        self.calls.append(("on_llm_new_token", (token,), kw))

    async def on_llm_end(self, response: LLMResult, **kw: Any) -> None:
        self.calls.append(("on_llm_end", (response,), kw))

    async def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
        self.calls.append(("on_chain_start", (inputs,), kw))

    async def on_tool_start(self, serialized: Any, input_str: str, **kw: Any) -> None:
        self.calls.append(("on_tool_start", (input_str,), kw))

    def on_agent_action(self, action: AgentAction, **kw: Any) -> None:
        self.calls.append(("on_agent_action", (action,), kw))

    def on_agent_finish(self, finish: AgentFinish, **kw: Any) -> None:
        self.calls.append(("on_agent_finish", (finish,), kw))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def _searching_agent(model: Any = None) -> Agent:
    calls = [ScriptedCall("sync_steps", {"n": 0})]
    model = model or ScriptedChatModel([ScriptedTurn("hm", calls), ScriptedTurn("found it")])
    return Agent(model, [sync_steps])


async def test_callbacks_get_langchains_types() -> None:
    handler = Calls()
    await _searching_agent().ainvoke("q", {"callbacks": [handler]})
    start = handler.calls[0]
    assert isinstance(start[2]["run_id"], uuid.UUID) and start[2]["parent_run_id"] is None
    token = next(c for c in handler.calls if c[0] == "on_llm_new_token")
    chunk = token[2]["chunk"]
    assert isinstance(chunk, ChatGenerationChunk) and chunk.message.content == token[1][0]
    assert isinstance(token[2]["parent_run_id"], uuid.UUID)
    end = next(c for c in handler.calls if c[0] == "on_llm_end")[1][0]
    assert isinstance(end, LLMResult)
    assert end.generations[0][0].message.tool_calls[0]["name"] == "sync_steps"
    assert end.generations[0][0].text == "hm"
    assert end.llm_output is not None and set(end.llm_output["token_usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    }
    action = next(c for c in handler.calls if c[0] == "on_agent_action")[1][0]
    assert (action.tool, action.tool_input) == ("sync_steps", {"n": 0})
    finish = next(c for c in handler.calls if c[0] == "on_agent_finish")[1][0]
    assert finish.return_values == {"output": "found it"}
    names = handler.names()
    assert names.index("on_agent_action") < names.index("on_tool_start")
    assert names[-1] == "on_agent_finish"


async def test_ignore_switches_are_honoured() -> None:
    class Quiet(Calls):
        ignore_llm = True
        ignore_agent = True

    handler = Quiet()
    await _searching_agent().ainvoke("q", {"callbacks": [handler]})
    assert set(handler.names()) == {"on_chain_start"}
    chains = Calls()
    chains.ignore_chain = True  # also per instance
    await _searching_agent().ainvoke("q", {"callbacks": [chains]})
    assert "on_chain_start" not in chains.names() and "on_llm_end" in chains.names()


async def test_a_handler_given_twice_in_a_tree_is_called_once_per_event() -> None:
    handler = Calls()
    model = ScriptedChatModel(
        [ScriptedTurn("hm", [ScriptedCall("sync_steps", {"n": 0})]), ScriptedTurn("found it")]
    ).with_config(callbacks=[handler])  # the seed's pattern: the model gets it too
    await _searching_agent(model).ainvoke("q", {"callbacks": [handler]})
    ends = [c for c in handler.calls if c[0] == "on_llm_end"]
    assert len(ends) == 2  # two model turns, each seen once
    tokens = [c[1][0] for c in handler.calls if c[0] == "on_llm_new_token"]
    assert "".join(tokens) == "hmfound it"
    twice = Calls()  # given to the agent and again to its call
    await _searching_agent().with_config(callbacks=[twice]).ainvoke("q", {"callbacks": [twice]})
    assert twice.names().count("on_chain_start") == 1
    assert len([c for c in twice.calls if c[0] == "on_llm_end"]) == 2
    alone = Calls()  # given only to the model: it sees the model's runs
    model_only = ScriptedChatModel([ScriptedTurn("found it")]).with_config(callbacks=[alone])
    await Agent(model_only).ainvoke("q")
    assert alone.names()[-1] == "on_llm_end" and "on_chain_start" not in alone.names()


def test_a_misspelt_callback_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="on_llm_new_tokens is not a callback: did you mean"):

        class Typo(AsyncCallbackHandler):
            async def on_llm_new_tokens(self, token: str, **kw: Any) -> None:
                pass

    class Helper(AsyncCallbackHandler):  # a helper of its own, far from any callback
        def on_something_else(self) -> str:
            return "mine"

    assert Helper().on_something_else() == "mine"


# -- chat history --------------------------------------------------------------------------


def _echo_conversation(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    return ScriptedTurn(" | ".join(f"{m.role}:{getattr(m, 'content', '')}" for m in messages))


HISTORY_FORMS = [
    {
        "input": "and now?",
        "chat_history": [("human", "hi"), ("ai", "hello")],
    },
    {
        "input": "and now?",
        "chat_history": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
    },
    {"messages": [UserMessage("hi"), AssistantMessage("hello"), ("user", "and now?")]},
    [("user", "hi"), {"role": "ai", "content": "hello"}, UserMessage("and now?")],
]


@pytest.mark.parametrize("value", HISTORY_FORMS, ids=["tuples", "dicts", "messages", "list"])
async def test_an_agent_takes_chat_history_in_every_form(value: Any) -> None:
    agent = Agent(ScriptedChatModel(_echo_conversation), system_prompt="be brief")
    async with agent.astream_events(value) as stream:
        events: list[StreamEvent] = [e async for e in stream]
    output = events[-1].data.output
    assert output.output == "system:be brief | user:hi | assistant:hello | user:and now?"
    assert [m.role for m in output.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert output.usage is not None and output.usage.completion_tokens > 0
    assert events[0].data.input["input"] == "and now?"
    assert [m.content for m in events[0].data.input["chat_history"]] == ["hi", "hello"]


async def test_an_agents_usage_adds_up_its_turns() -> None:
    calls = [ScriptedCall("sync_steps", {"n": 0})]
    agent = _searching_agent(ScriptedChatModel([ScriptedTurn("a b", calls), ScriptedTurn("c")]))
    async with agent.astream_events("q") as stream:
        events: list[StreamEvent] = [e async for e in stream]
    turns = [e.data.output.usage for e in events if e.event == "on_chat_model_end"]
    total = events[-1].data.output.usage
    assert total.completion_tokens == sum(u.completion_tokens for u in turns) == 3
    assert total.total_tokens == sum(u.total_tokens for u in turns)
    assert [type(m).__name__ for m in events[-1].data.output.messages] == [
        "UserMessage",
        "AssistantMessage",
        "ToolMessage",
        "AssistantMessage",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"input": "q", "history": []}, r"does not take \['history'\]"),
        ({"input": "q", "chat_history": "hi"}, "chat_history must be a list of messages"),
        (
            {"messages": [("user", "q")], "input": "x"},
            r"'messages' alone, but also got \['input'\]",
        ),
        ({"messages": [("user", "q"), ("ai", "a")]}, "the last of 'messages' must be the user's"),
        ({"messages": []}, "the last of 'messages' must be the user's"),
        ({"messages": [("wizard", "q")]}, r"messages\[0\] has role 'wizard'; the roles are"),
        ({"messages": [{"role": "user", "content": "q", "x": 1}]}, r"cannot take: \['x'\]"),
        ({"messages": [{"role": "tool", "content": "q"}]}, "needs string 'tool_call_id'"),
        ({"input": 3}, "needs 'input' as a string"),
        (3, "takes a string, "),
    ],
)
def test_what_an_agent_cannot_take_is_a_clear_error(value: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Agent(ScriptedChatModel([])).astream_events(value)


async def test_models_take_dict_and_tuple_messages() -> None:
    model = ScriptedChatModel(_echo_conversation)
    reply = await model.ainvoke([("system", "s"), {"role": "user", "content": "u"}])
    assert reply.content == "system:s | user:u"
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    openai_style = [
        ("user", "u"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"},
        ("user", "again"),
    ]
    request = model.coerce_input(openai_style)
    assert request.messages[1].tool_calls[0] == ToolCall("c1", "f", {"a": 1})  # type: ignore[union-attr]
    with pytest.raises(TypeError, match=r"model 'ScriptedChatModel': messages\[0\]"):
        model.coerce_input([42])


# -- tool signatures --------------------------------------------------------------------------


async def test_config_and_callbacks_parameters_are_filled_in() -> None:
    nested = ScriptedChatModel([ScriptedTurn("inner")], name="Inner")
    seen: dict[str, Any] = {}

    @tool
    async def ask(question: str, config: dict[str, Any], callbacks: list[Any]) -> str:
        """Ask the inner model, passing the config on as LangChain code does."""
        seen.update(config=config, callbacks=callbacks)
        return (await nested.ainvoke(question, config)).content

    assert ask.spec.parameters["properties"].keys() == {"question"}
    handler = Calls()
    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("ask", {"question": "x"})]), ScriptedTurn("ok")]
    )
    async with Agent(model, [ask]).astream_events(
        "q", tags=["root"], metadata={"user": "u1"}, callbacks=[handler]
    ) as stream:
        events = [e async for e in stream]
    check_events(events)
    assert seen["config"] == {"tags": ["root"], "metadata": {"user": "u1"}, "callbacks": [handler]}
    assert seen["callbacks"] == [handler]
    inner = next(e for e in events if e.name == "Inner" and e.phase == "start")
    assert inner.tags == ("root",) and inner.metadata["user"] == "u1"  # not doubled
    assert len([c for c in handler.calls if c[0] == "on_llm_end"]) == 3  # each model turn once


def test_run_manager_is_refused_with_what_to_do_instead() -> None:
    from actors import ToolDefinitionError

    with pytest.raises(ToolDefinitionError, match=r"no run manager to give a tool.*RunContext"):

        @tool
        async def old(query: str, run_manager: Any = None) -> str:
            """LangChain's signature."""
            return query


class RunnableConfig(dict[str, Any]):
    """Stands for langchain_core's TypedDict of that name."""


class LangChainHandler:
    """Stands for langchain_core's BaseCallbackHandler."""


LangChainHandler.__module__ = "langchain_core.callbacks.base"


def test_langchains_annotations_are_recognised() -> None:
    @tool
    async def lc(query: str, cfg: RunnableConfig, cbs: list[LangChainHandler] | None) -> str:
        """Parameters named otherwise, recognised by their types."""
        return query

    assert lc.injected == {"cfg": "config", "cbs": "callbacks"}
    assert lc.spec.parameters["properties"].keys() == {"query"}


# -- the wrong event loop, scripts, shadowed packages ---------------------------------------


def test_asyncio_gets_one_clear_error_naming_trio_and_jupyter() -> None:
    import asyncio

    from runtime import WrongEventLoopError

    agent = _searching_agent()

    async def stream() -> None:
        async with agent.astream_events("q") as events:
            async for _ in events:
                pass

    async def runtime() -> None:
        async with open_runtime():
            pass

    for main in (lambda: agent.ainvoke("q"), stream, runtime):
        with pytest.raises(WrongEventLoopError, match="under asyncio") as caught:
            asyncio.run(main())
        assert "trio.run(main)" in str(caught.value) and "%autoawait trio" in str(caught.value)
        assert isinstance(caught.value, RuntimeError)


def test_a_script_without_async_code_calls_invoke() -> None:
    output = _searching_agent().invoke({"input": "q"})
    assert output["output"] == "found it"


async def test_invoke_refuses_to_run_inside_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="cannot run inside trio's: use `await"):
        _searching_agent().invoke("q")


def test_asyncio_invoke_is_refused_too() -> None:
    import asyncio

    async def main() -> None:
        _searching_agent().invoke("q")

    with pytest.raises(RuntimeError, match="cannot run inside asyncio's"):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("module", "script", "expected"),
    [
        ("runtime", "from actors import Agent", "runtime.py hides Troupe's package 'runtime'"),
        ("protocol", "from actors import Agent", "protocol.py hides Troupe's package 'protocol'"),
        ("protocol", "import runtime", "protocol.py hides Troupe's package 'protocol'"),
        ("actors", "import runtime", "actors.py hides Troupe's package 'actors'"),
    ],
)
def test_a_users_module_named_like_a_package_is_named(
    tmp_path: Any, module: str, script: str, expected: str
) -> None:
    import subprocess
    import sys

    (tmp_path / f"{module}.py").write_text("VALUE = 1\n")
    (tmp_path / "script.py").write_text(script + "\n")
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "script.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert expected in last and "rename that file" in last


# -- step chunks and the run log, as LangChain's ----------------------------------------------


async def test_step_chunks_are_mappings() -> None:
    import pprint
    from collections.abc import Mapping

    from protocol import json_default

    async with _searching_agent().astream("q") as steps:
        chunks = [c async for c in steps]
    for chunk in chunks:
        assert isinstance(chunk, Mapping) and dict(chunk) == {k: chunk[k] for k in chunk}
        assert len(chunk) == len(list(chunk)) and {**chunk}.keys() == dict(chunk).keys()
        assert json.loads(json.dumps(chunk, default=json_default))["$type"] == type(chunk).__name__
        assert pprint.pformat(dict(chunk)).startswith("{")
    total: Any = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total["output"] == "found it" and len(total["messages"]) == 3  # ai, tool, ai


async def test_astream_log_as_langchains() -> None:
    model = ScriptedChatModel([ScriptedTurn("a b c")])
    async with model.astream_log("q", diff=False) as log:
        states = [entry.state async for entry in log if isinstance(entry, RunLog)]
    assert states[0]["type"] == "llm"  # chat models are logged as LangChain's llm runs
    finals = [s["final_output"].content for s in states if s["final_output"] is not None]
    assert finals == ["a", "a b", "a b c", "a b c"]  # added up as the root streams
    assert len(states[-1]["streamed_output"]) == 4
    async with model.astream_log("q", with_streamed_output_list=False) as log:
        ops = [op async for patch in log for op in patch.ops]
    assert not [op for op in ops if op["path"] == "/streamed_output/-"]
    assert [op["value"].content for op in ops if op["path"] == "/final_output"][-1] == "a b c"
    with pytest.raises(TypeError, match="with_streamed_output_list must be True or False"):
        model.astream_log("q", with_streamed_output_list="yes")  # type: ignore[arg-type]  # on purpose
    agent = _searching_agent()
    async with agent.astream_log("q", include_types=["llm", "chat_model"], diff=False) as log:
        final = [entry.state async for entry in log if isinstance(entry, RunLog)][-1]
    assert {entry["type"] for entry in final["logs"].values()} == {"llm"}
    assert final["final_output"]["output"] == "found it"


# -- the two porting gaps of issue 34 ----------------------------------------------------


def test_a_streamed_chunk_has_its_tool_calls_parsed_as_langchains_do() -> None:
    from protocol import AssistantMessageChunk, ToolCallChunk

    pieces = ['{"pla', 'ce": "under', ' the bed", "n": [1,', " 2]}"]
    chunks = [
        AssistantMessageChunk(
            tool_call_chunks=(ToolCallChunk(0, "call_1", "get_items", pieces[0]),)
        )
    ] + [AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(0, args=p),)) for p in pieces[1:]]
    summed = chunks[0]
    seen = []
    for chunk in chunks[1:]:
        summed = summed + chunk
        seen.append(summed.tool_calls[0]["args"])
    # as LangChain's AIMessageChunk: partial JSON closed, so the calls grow as they stream
    assert chunks[0].tool_calls == [
        {"name": "get_items", "args": {}, "id": "call_1", "type": "tool_call"}
    ]
    assert seen == [
        {"place": "under"},
        {"place": "under the bed", "n": [1]},
        {"place": "under the bed", "n": [1, 2]},
    ]
    assert summed.invalid_tool_calls == []
    assert AssistantMessageChunk(content="hi").tool_calls == []
    broken = AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(0, "c", "f", "]"),))
    assert broken.tool_calls == [] and broken.invalid_tool_calls[0]["args"] == "]"


async def test_a_streamed_turns_chunks_add_up_to_its_tool_calls() -> None:
    agent = _agent()
    async with agent.astream_events("go") as stream:
        events = [e async for e in stream]
    model_run = next(e for e in events if e["event"] == "on_chat_model_end")["run_id"]
    chunks = [
        e["data"]["chunk"]
        for e in events
        if e["event"] == "on_chat_model_stream" and e["run_id"] == model_run
    ]
    summed = chunks[0]
    for chunk in chunks[1:]:
        summed = summed + chunk
    end = next(e for e in events if e["event"] == "on_chat_model_end" and e["run_id"] == model_run)
    expected = [
        {"name": c.name, "args": c.args, "id": c.id, "type": "tool_call"}
        for c in end["data"]["output"].tool_calls
    ]
    assert summed.tool_calls == expected and expected


@tool
async def breaks(n: int) -> int:
    """A tool that fails."""
    raise RuntimeError(f"broke on {n}")


async def test_on_tool_error_names_the_tool_call_it_answered() -> None:
    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("breaks", {"n": 1})]), ScriptedTurn("ok")]
    )
    async with Agent(model, [breaks]).astream_events("go") as stream:
        events = [e async for e in stream]
    start = next(e for e in events if e["event"] == "on_tool_start")
    error = next(e for e in events if e["event"] == "on_tool_error")
    call_id = start["metadata"]["tool_call_id"]
    assert error["data"]["tool_call_id"] == call_id  # as LangChain (PR #33731)
    assert json.loads(to_json(error))["data"]["tool_call_id"] == call_id
    assert all("tool_call_id" not in e["data"] for e in events if e["event"] != "on_tool_error")
