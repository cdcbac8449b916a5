"""The OpenAI-compatible chat model, against a scripted HTTP/SSE server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import trio

from actors import Agent, ModelError, OpenAIChatModel, tool
from actors.testing import check_events
from protocol import AssistantMessage, StreamEvent, ToolMessage, UserMessage
from runtime import open_runtime

from .openai_server import Answer, chunk, fake_openai, text_answer, tool_answer


def model_for(url: str, **kw: Any) -> OpenAIChatModel:
    settings: dict[str, Any] = {"api_key": "sk-test", "max_retries": 0, "timeout": 5.0}
    settings.update(kw)
    return OpenAIChatModel("test-model", base_url=url, **settings)


async def events_of(target: Any, question: Any) -> list[StreamEvent]:
    received: list[StreamEvent] = []
    async with target.astream_events(question) as events:
        async for event in events:
            received.append(event)  # noqa: PERF401  # keep what came before a raise
    return received


@tool
async def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def test_tokens_stream_and_usage_lands_on_the_end_event() -> None:
    async with fake_openai(text_answer(["Hel", "lo", " there"])) as server:
        received = await events_of(model_for(server.base_url), "hi")
    runs = check_events(received)
    chunks = next(iter(runs.values())).chunks
    assert [c.content for c in chunks if c.content] == ["Hel", "lo", " there"]
    end = received[-1]
    assert end.event == "on_chat_model_end"
    assert end.data.output.content == "Hello there"
    assert end.data.output.finish_reason == "stop"
    assert (end.data.output.usage.prompt_tokens, end.data.output.usage.completion_tokens) == (7, 3)
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["messages"] == [{"role": "user", "content": "hi"}]


async def test_tool_call_deltas_assemble_even_when_ids_repeat() -> None:
    answer = tool_answer(
        [("call_a", "weather", '{"city": "Paris"}'), ("call_b", "weather", '{"city": "Oslo"}')],
        repeat_ids=True,
    )
    async with fake_openai(answer) as server:
        message = await model_for(server.base_url).ainvoke("weather?")
    assert [(c.id, c.name, c.args) for c in message.tool_calls] == [
        ("call_a", "weather", {"city": "Paris"}),
        ("call_b", "weather", {"city": "Oslo"}),
    ]
    assert message.finish_reason == "tool_calls" and message.usage is not None


async def test_the_agent_loop_sends_the_whole_conversation_and_tools() -> None:
    answers = [
        tool_answer([("call_1", "weather", '{"city": "Paris"}')]),
        text_answer(["It is ", "sunny."]),
    ]
    async with fake_openai(*answers) as server:
        agent = Agent(model_for(server.base_url, temperature=0.2, seed=7), [weather])
        output = await agent.ainvoke("Weather in Paris?")
    assert output["output"] == "It is sunny."
    first, second = (r.body for r in server.requests)
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": weather.parameters,
            },
        }
    ]
    assert (first["temperature"], first["seed"], first["model"]) == (0.2, 7, "test-model")
    assert second["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",  # not null: some servers refuse it
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"},
    ]


async def test_invalid_tool_arguments_are_told_to_the_model() -> None:
    answers = [tool_answer([("call_1", "weather", '{"city": ')]), text_answer(["Sorry."])]
    async with fake_openai(*answers) as server:
        output = await Agent(model_for(server.base_url), [weather]).ainvoke("?")
    assert output["output"] == "Sorry."
    told = server.requests[1].body["messages"][-1]
    assert told["role"] == "tool" and "not valid JSON" in told["content"]
    assert server.requests[1].body["messages"][-2]["tool_calls"][0]["function"]["arguments"] == (
        '{"city": '
    )


async def test_non_streaming_mode_sends_one_chunk() -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
    }
    async with fake_openai(Answer(body=body)) as server:
        received = await events_of(model_for(server.base_url, streaming=False), "?")
    runs = check_events(received)
    assert len(next(iter(runs.values())).chunks) == 1
    output = received[-1].data.output
    assert output.content == "Let me look." and output.tool_calls[0].args == {"city": "Rome"}
    assert output.usage.total_tokens == 9
    assert "stream" not in server.requests[0].body


async def test_key_and_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fake_openai(text_answer(["ok"])) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = OpenAIChatModel("test-model", max_retries=0)
        assert model.endpoint == server.base_url
        assert (await model.ainvoke("hi")).content == "ok"
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"


def test_bad_configuration_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="no API key"):
        OpenAIChatModel("m")
    with pytest.raises(ValueError, match="model must be"):
        OpenAIChatModel("", api_key="x")
    with pytest.raises(ValueError, match="idle_timeout"):
        OpenAIChatModel("m", api_key="x", idle_timeout=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIChatModel("m", api_key="x", max_concurrency=0)


@pytest.mark.parametrize(("limit", "most"), [(1, 1), (2, 2), (None, 4)])
async def test_a_concurrency_limit_is_shared_by_every_agent(limit: int | None, most: int) -> None:
    answers = [Answer(events=[0.05, *text_answer([str(i)]).events]) for i in range(4)]
    async with fake_openai(*answers) as server:
        model = model_for(server.base_url, max_concurrency=limit)
        async with open_runtime(), trio.open_nursery() as nursery:
            for index in range(4):  # four agents, one model actor
                nursery.start_soon(Agent(model, name=f"agent{index}").ainvoke, "?")
    assert len(server.requests) == 4
    assert server.most_in_flight == most


async def test_http_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = Answer(status=400, body={"error": {"message": "unknown model 'nope'"}})
    async with fake_openai(bad) as server:
        with pytest.raises(ModelError, match="answered HTTP 400: unknown model 'nope'"):
            await model_for(server.base_url, max_retries=3).ainvoke("?")
    assert len(server.requests) == 1  # 4xx is not retried

    limited = Answer(
        status=429, headers=[("retry-after", "0")], body={"error": {"message": "slow down"}}
    )
    async with fake_openai(limited, text_answer(["fine"])) as server:
        message = await model_for(server.base_url, max_retries=2).ainvoke("?")
    assert message.content == "fine" and len(server.requests) == 2  # retried after retry-after

    broken = Answer(status=503, headers=[("retry-after", "0")], body={"error": {"message": "down"}})
    async with fake_openai(broken, broken) as server:
        with pytest.raises(ModelError, match="HTTP 503: down"):
            await model_for(server.base_url, max_retries=1).ainvoke("?")
    assert len(server.requests) == 2


async def test_connection_refused() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ModelError, match=r"cannot reach http://127\.0\.0\.1"):
        await model_for(f"http://127.0.0.1:{port}/v1").ainvoke("?")


async def test_a_stall_before_headers_times_out() -> None:
    async with fake_openai(Answer(delay_headers=2.0, events=[])) as server:
        with pytest.raises(ModelError, match=r"did not begin to answer within 0\.2 s"):
            await model_for(server.base_url, timeout=0.2).ainvoke("?")


async def test_a_stall_mid_stream_ends_the_run() -> None:
    stalled = Answer(events=[chunk({"content": "Hel"}), 5.0], done=False)
    received: list[StreamEvent] = []
    async with fake_openai(stalled) as server:
        agent = Agent(model_for(server.base_url, idle_timeout=0.2))
        with pytest.raises(ModelError, match=r"stalled: no data for 0\.2 s"):
            async with agent.astream_events("?") as events:
                async for event in events:
                    received.append(event)  # noqa: PERF401  # keep what came before the raise
    check_events(received)
    assert [e.data.chunk.content for e in received if e.event == "on_chat_model_stream"] == ["Hel"]
    assert received[-1].status == "error"


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (Answer(events=[chunk({"content": "a"})]), "ended without a finish reason"),
        (
            Answer(events=[chunk({"content": "a"}), chunk(finish="stop")], done=False),
            "without \\[DONE\\]",
        ),
        (Answer(events=["this is not an event\n\n"]), "malformed server-sent event line"),
        (Answer(events=["data: {not json\n\n"]), "invalid JSON in a stream chunk"),
        (Answer(events=['data: {"error": {"message": "overloaded"}}\n\n']), "error mid-stream"),
    ],
    ids=["no-finish", "no-done", "malformed", "bad-json", "error-event"],
)
async def test_broken_streams_fail_clearly(answer: Answer, match: str) -> None:
    async with fake_openai(answer) as server:
        received: list[StreamEvent] = []
        with pytest.raises(ModelError, match=match):
            async with Agent(model_for(server.base_url)).astream_events("?") as events:
                async for event in events:
                    received.append(event)  # noqa: PERF401  # keep what came before the raise
    check_events(received)
    assert [(e.event, e.status) for e in received if e.is_terminal] == [
        ("on_chat_model_error", "error"),
        ("on_chain_error", "error"),
    ]


async def test_cancelling_closes_the_connection_at_once() -> None:
    hanging = Answer(events=[chunk({"content": "Hel"})], hang=True)
    async with fake_openai(hanging) as server, open_runtime():
        async with model_for(server.base_url).astream_events("?") as events:
            async for event in events:
                if event.phase == "stream":
                    break
        with trio.fail_after(1):
            await server.disconnected.wait()  # the server saw the client go


async def test_the_client_closes_with_the_runtime() -> None:
    async with fake_openai(text_answer(["a"])) as server:
        async with open_runtime():
            await model_for(server.base_url).ainvoke("?")
            assert not server.disconnected.is_set()  # a kept-alive connection
        with trio.fail_after(1):
            await server.disconnected.wait()


def test_messages_in_openai_format() -> None:
    from actors._openai import openai_message

    assert openai_message(UserMessage("hi")) == {"role": "user", "content": "hi"}
    assert openai_message(ToolMessage("r", "c", "t")) == {
        "role": "tool",
        "tool_call_id": "c",
        "content": "r",
    }
    assert openai_message(AssistantMessage("text")) == {"role": "assistant", "content": "text"}
    json.dumps(openai_message(AssistantMessage()))


async def test_the_demo_runs_against_a_server() -> None:
    from .test_demo import TROUPE

    answers = [
        tool_answer([("c1", "where_cat_is_hiding", "{}")]),
        tool_answer([("c2", "get_items", '{"place": "shelf"}')]),
        text_answer(["The cat", " is on", " the shelf."]),
    ]
    async with fake_openai(*answers) as server:
        args = ["demo", "--base-url", server.base_url, "--model", "test-model", "--api-key", "k"]
        done = await trio.run_process(
            [*TROUPE, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "Starting tool: get_items with inputs: {'place': 'shelf'}" in out
    assert "The cat| is on| the shelf.|" in out
    assert out.rstrip().endswith("Done agent: Agent with output: The cat is on the shelf.")
    assert [r.body["model"] for r in server.requests] == ["test-model"] * 3
    assert server.requests[0].headers["authorization"] == "Bearer k"
