"""OpenAI-compatible servers in the wild (issue 12): what llama.cpp's servers do, each
reproduced by the scripted HTTP/SSE server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import Agent, ModelError, OpenAIChatModel, tool
from protocol import AssistantMessage, ToolCall, ToolMessage, UserMessage
from runtime import open_runtime

from .openai_server import Answer, chunk, fake_openai, text_answer, tool_answer
from .test_openai import model_for


@tool
async def where_cat_is_hiding() -> str:
    """Where is the cat hiding?"""
    return "under the bed"


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every back-off the model sleeps before a retry (and none of them really)."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr("actors._openai._sleep_before_retry", record)
    return slept


async def test_a_tool_call_turn_goes_back_with_empty_content_not_null() -> None:
    conversation = [
        UserMessage("where is the cat?"),
        AssistantMessage(tool_calls=(ToolCall("call_1", "where_cat_is_hiding", {}),)),
        ToolMessage("under the bed", "call_1", "where_cat_is_hiding"),
    ]
    async with fake_openai(text_answer(["Under", " the bed."]), refuse_null_content=True) as server:
        reply = await model_for(server.base_url).ainvoke(conversation)
    assert reply.content == "Under the bed."
    assert server.requests[0].body["messages"][1]["content"] == ""


async def test_the_agent_lives_through_its_second_turn_on_a_strict_server() -> None:
    answers = [tool_answer([("call_1", "where_cat_is_hiding", "{}")]), text_answer(["Bed."])]
    async with fake_openai(*answers, refuse_null_content=True) as server:
        output = await Agent(model_for(server.base_url), [where_cat_is_hiding]).ainvoke("?")
    assert output["output"] == "Bed." and len(server.requests) == 2


async def test_a_request_dropped_on_a_reused_connection_is_sent_again_at_once(
    backoffs: list[float],
) -> None:
    answers = [text_answer([f"answer {i}"]) for i in range(5)]
    async with fake_openai(*answers, drop_reused=3) as server, open_runtime():
        model = model_for(server.base_url, max_retries=0)
        replies = [await model.ainvoke("?") for _ in range(5)]
    assert [r.content for r in replies] == [f"answer {i}" for i in range(5)]
    assert len(server.dropped) == 3  # each was sent again...
    assert backoffs == []  # ... at once, with no back-off, even with max_retries=0


async def test_a_server_that_keeps_dropping_requests_is_named_for_what_it_does(
    backoffs: list[float],
) -> None:
    async with fake_openai(drop_always=True) as server:
        model = model_for(server.base_url, max_retries=0)
        with pytest.raises(ModelError, match="closed the connection without answering") as err:
            await model.ainvoke("?")
    assert "cannot reach" not in str(err.value)  # the server is up: it says what happened
    assert len(server.dropped) == 4 and backoffs == []  # 1 + 3 at once, then it gives up


async def test_a_streamed_request_that_timed_out_before_headers_is_not_sent_again(
    backoffs: list[float],
) -> None:
    queued = [Answer(delay_headers=1.0, events=[chunk(finish="stop")]) for _ in range(3)]
    async with fake_openai(*queued) as server:
        with pytest.raises(ModelError, match=r"did not begin to answer within 0\.2 s") as err:
            await model_for(server.base_url, timeout=0.2, max_retries=2).ainvoke("?")
        assert len(server.requests) == 1  # a queued server does the work once
    assert "retry_timeouts=True" in str(err.value)


async def test_retry_timeouts_sends_it_again_when_asked(backoffs: list[float]) -> None:
    queued = [Answer(delay_headers=1.0, events=[chunk(finish="stop")]) for _ in range(3)]
    async with fake_openai(*queued) as server:
        model = model_for(server.base_url, timeout=0.2, max_retries=2, retry_timeouts=True)
        with pytest.raises(ModelError, match="after 2 retries"):
            await model.ainvoke("?")
        assert len(server.requests) == 3 and len(backoffs) == 2


async def test_a_silence_within_the_stream_is_the_idle_timeouts_business() -> None:
    thinking = Answer(
        events=[chunk({"content": "Hmm"}), 0.5, chunk({"content": ", bed."}), chunk(finish="stop")]
    )
    async with fake_openai(thinking) as server:
        reply = await model_for(server.base_url, timeout=0.2, idle_timeout=2.0).ainvoke("?")
    assert reply.content == "Hmm, bed."  # silent longer than `timeout`, within `idle_timeout`


async def test_server_errors_are_retried_with_back_off(backoffs: list[float]) -> None:
    down = Answer(status=503, body={"error": {"message": "loading model"}})
    async with fake_openai(down, down, text_answer(["up"])) as server:
        reply = await model_for(server.base_url, max_retries=2).ainvoke("?")
    assert reply.content == "up" and len(server.requests) == 3 and len(backoffs) == 2


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("required", "required"),
        ("auto", "auto"),
        ("where_cat_is_hiding", {"type": "function", "function": {"name": "where_cat_is_hiding"}}),
    ],
)
async def test_tool_choice_is_sent_with_the_tools(choice: str, sent: Any) -> None:
    answers = [tool_answer([("call_1", "where_cat_is_hiding", "{}")]), text_answer(["Bed."])]
    async with fake_openai(*answers) as server:
        model = model_for(server.base_url, tool_choice=choice)
        await Agent(model, [where_cat_is_hiding], max_iterations=1).ainvoke("?")
    assert server.requests[0].body["tool_choice"] == sent


async def test_a_server_that_drops_the_tools_is_said_to() -> None:
    async with fake_openai(text_answer(["I", " would", " look", " under", " the bed."])) as server:
        model = model_for(server.base_url, tool_choice="required")
        with pytest.raises(ModelError, match="may be ignoring the tools"):
            await Agent(model, [where_cat_is_hiding]).ainvoke("?")


def test_bad_knobs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="tool_choice must be one of"):
        OpenAIChatModel("m", api_key="k", tool_choice=3)  # type: ignore[arg-type]  # on purpose
    with pytest.raises(ValueError, match="idle_timeout must be a finite number"):
        OpenAIChatModel("m", api_key="k", idle_timeout=float("nan"))
    with pytest.raises(TypeError, match="retry_timeouts"):
        OpenAIChatModel("m", api_key="k", retry_timeouts="no")  # type: ignore[arg-type]


async def test_the_demo_takes_the_knobs_real_servers_need() -> None:
    from .test_demo import TROUPE

    answers = [
        tool_answer([("c1", "where_cat_is_hiding", "{}")]),
        tool_answer([("c2", "get_items", '{"place": "shelf"}')]),
        text_answer(["On", " the shelf."]),
    ]
    async with fake_openai(*answers) as server:
        args = [
            "demo",
            *("--base-url", server.base_url, "--model", "small", "--api-key", "k"),
            *("--temperature", "0.1", "--max-tokens", "64", "--tool-choice", "auto"),
            *("--timeout", "5", "--idle-timeout", "90"),
        ]
        done = await trio.run_process(
            [*TROUPE, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    body = server.requests[0].body
    assert (body["temperature"], body["max_tokens"], body["tool_choice"]) == (0.1, 64, "auto")
    bad = await trio.run_process(
        [*TROUPE, "demo", "--model", "m", "--idle-timeout", "0"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert bad.returncode == 2 and b"--idle-timeout" in bad.stderr
