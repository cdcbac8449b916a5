"""``actors.testing.FakeOpenAI`` and ``troupe fake-openai``, met by the ``openai`` SDK
(through OpenAIChatModel) as a user's code meets them: streamed and whole answers, tool
calls, scripts from files and functions, and each fault."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import Agent, ModelError, OpenAIChatModel, tool
from actors._demo import make_cat_agent
from actors.testing import (
    FakeOpenAI,
    FakeReply,
    FakeToolCall,
    Fault,
    ReplayChatModel,
    cassette_model,
    check_events,
    load_fake_script,
)
from protocol import StreamEvent, UserMessage

CAT_TURNS = Path(__file__).resolve().parent.parent / "examples" / "cat_turns.jsonl"


def model_for(server: FakeOpenAI, **options: Any) -> OpenAIChatModel:
    options.setdefault("max_retries", 0)
    return OpenAIChatModel("fake-model", base_url=server.base_url, api_key="sk-fake", **options)


@tool
async def where_is(pet: str) -> str:
    """Where the pet hides."""
    return f"the {pet} is under the bed"


async def events_of(agent: Agent, question: str) -> list[StreamEvent]:
    async with agent.astream_events(question) as events:
        return [e async for e in events]


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole"])
async def test_text_streamed_and_whole(streaming: bool) -> None:
    async with FakeOpenAI(["Hello there, cat.", FakeReply("Again.")]) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        model = model_for(server, streaming=streaming)
        first = await model.ainvoke("hi")
        second = await model.ainvoke("and?")
    assert (first.content, second.content) == ("Hello there, cat.", "Again.")
    assert server.requests[0].messages == [{"role": "user", "content": "hi"}]
    assert server.requests[0].body.get("stream", False) is streaming
    assert first.usage_metadata is not None and first.usage_metadata["output_tokens"] == 3


async def test_streamed_tokens_arrive_one_by_one() -> None:
    async with FakeOpenAI(["one two three"], token_delay=0.001) as server:
        agent = Agent(model_for(server))
        events = await events_of(agent, "count")
    check_events(events)
    tokens = [e.data.chunk.content for e in events if e.event == "on_chat_model_stream"]
    assert [t for t in tokens if t] == ["one", " two", " three"]


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole"])
async def test_tool_calls_drive_an_agent(streaming: bool) -> None:
    script: list[FakeReply | str] = [
        FakeReply(tool_calls=[FakeToolCall("where_is", {"pet": "cat"}, id="call_a")]),
        "The cat is under the bed.",
    ]
    async with FakeOpenAI(script) as server:
        agent = Agent(model_for(server, streaming=streaming), [where_is])
        events = await events_of(agent, "where is the cat?")
    check_events(events)
    assert events[-1].data.output.output == "The cat is under the bed."
    tool_end = next(e for e in events if e.event == "on_tool_end")
    assert tool_end.data.output == "the cat is under the bed"
    sent = server.requests[1].messages
    assert sent[1]["tool_calls"][0]["function"] == {
        "name": "where_is",
        "arguments": '{"pet": "cat"}',
    }
    assert sent[2] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": "the cat is under the bed",
    }


async def test_a_function_of_the_messages_answers() -> None:
    async def answer(messages: list[dict[str, Any]]) -> FakeReply:
        await trio.lowlevel.checkpoint()
        return FakeReply(f"{len(messages)} messages, last: {messages[-1]['content']}")

    async with FakeOpenAI(answer) as server:
        message = await model_for(server).ainvoke("ping")
    assert message.content == "1 messages, last: ping"
    async with FakeOpenAI() as server:  # no script: an echo
        assert (await model_for(server).ainvoke("ping")).content == "You said: ping"


async def test_a_rate_limit_carries_retry_after_and_the_sdk_retries() -> None:
    async with FakeOpenAI([Fault.rate_limit(retry_after=0), "fine"]) as server:
        message = await model_for(server, max_retries=2).ainvoke("?")
    assert message.content == "fine" and len(server.requests) == 2
    limited = {"fault": {"kind": "rate_limit", "retry_after": 7}}
    async with FakeOpenAI([limited, limited]) as server:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                server.base_url + "/chat/completions", json={"model": "m", "messages": []}
            )
        with pytest.raises(ModelError, match="HTTP 429"):
            await model_for(server).ainvoke("?")
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


async def test_an_error_status() -> None:
    async with FakeOpenAI([Fault.error(503, "down for a nap")]) as server:
        with pytest.raises(ModelError, match="HTTP 503: down for a nap"):
            await model_for(server).ainvoke("?")


@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "whole"])
async def test_a_cut_answer_fails_the_run(streaming: bool) -> None:
    cut = FakeReply("The cat is under the bed.", fault=Fault.cut(after=3))
    async with FakeOpenAI([cut]) as server:
        agent = Agent(model_for(server, streaming=streaming))
        received: list[StreamEvent] = []
        with pytest.raises(ModelError):
            async with agent.astream_events("?") as events:
                async for event in events:
                    received.append(event)  # noqa: PERF401  # keep what came before the raise
    check_events(received)
    assert received[-1].status == "error"
    if streaming:  # what came before the cut was streamed
        tokens = [e.data.chunk.content for e in received if e.event == "on_chat_model_stream"]
        assert "".join(tokens) == "The cat"


async def test_a_stall_trips_the_idle_timeout() -> None:
    stalled = FakeReply("Hello there", fault=Fault.stall(after=2))
    async with FakeOpenAI([stalled]) as server:
        with pytest.raises(ModelError, match=r"stalled: no data for 0\.2 s"):
            await model_for(server, idle_timeout=0.2).ainvoke("?")
        with trio.fail_after(5):
            await server.disconnected.wait()  # the client went away; the stall ended


async def test_a_short_stall_only_slows_the_answer() -> None:
    slow = FakeReply("Hello", fault=Fault.stall(after=1, seconds=0.3))
    async with FakeOpenAI([slow]) as server:
        started = trio.current_time()
        assert (await model_for(server).ainvoke("?")).content == "Hello"
    assert trio.current_time() - started >= 0.3


async def test_scripts_from_json_and_jsonl(tmp_path: Path) -> None:
    jsonl = tmp_path / "turns.jsonl"
    jsonl.write_text(
        "# the cat agent\n"
        '{"tool_calls": [{"name": "where_is", "arguments": {"pet": "cat"}}]}\n'
        "\n"
        '"Under the bed."\n'
    )
    as_json = tmp_path / "turns.json"
    as_json.write_text(json.dumps({"replies": [{"fault": "rate_limit"}, {"content": "hi"}]}))
    assert load_fake_script(as_json) == [FakeReply(fault=Fault("rate_limit")), FakeReply("hi")]
    async with FakeOpenAI(jsonl) as server:
        output = await Agent(model_for(server), [where_is]).ainvoke("where?")
    assert output.output == "Under the bed."
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"content": "x", "colour": "red"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: a reply has no field 'colour'"):
        load_fake_script(bad)
    bad.write_text('{"fault": "explode"}\n')
    with pytest.raises(ValueError, match=r"line 1"):
        load_fake_script(bad)


async def test_past_the_script_is_a_clear_500_unless_it_cycles() -> None:
    async with FakeOpenAI(["once"]) as server:
        model = model_for(server)
        await model.ainvoke("?")
        with pytest.raises(ModelError, match="no scripted answer left"):
            await model.ainvoke("?")
    async with FakeOpenAI(["a", "b"], cycle=True) as server:
        model = model_for(server)
        answers = [(await model.ainvoke("?")).content for _ in range(3)]
    assert answers == ["a", "b", "a"]


async def test_models_and_unknown_routes() -> None:
    async with FakeOpenAI([], model="tiny") as server, httpx.AsyncClient() as client:
        models = (await client.get(server.base_url + "/models")).json()
        missing = await client.get(server.base_url + "/embeddings")
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert missing.status_code == 404
    assert server.requests == []


async def test_cassettes_record_against_it_and_replay_offline(tmp_path: Path) -> None:
    cassette = tmp_path / "where.json"
    script: list[FakeReply | str] = [
        FakeReply(tool_calls=[FakeToolCall("where_is", {"pet": "cat"})]),
        "Under the bed.",
    ]
    async with FakeOpenAI(script) as server:
        recording = cassette_model(cassette, model_for(server))
        recorded = await events_of(Agent(recording, [where_is]), "where is the cat?")
    replaying = cassette_model(cassette)  # the server is gone: replayed from the file
    assert isinstance(replaying, ReplayChatModel)
    replayed = await events_of(Agent(replaying, [where_is]), "where is the cat?")
    check_events(replayed)
    assert replayed[-1].data.output.output == recorded[-1].data.output.output == "Under the bed."


def test_the_command_prints_its_base_url_and_serves(tmp_path: Path) -> None:
    script = tmp_path / "turns.jsonl"
    script.write_text('"Hello from the command line."\n')
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "fake-openai", str(script), "--model", "cli-model"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            answer = httpx.post(
                base_url + "/chat/completions",
                json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                timeout=10,
            ).json()
        finally:
            process.terminate()
            process.wait(10)
    assert answer["model"] == "cli-model"
    assert answer["choices"][0]["message"]["content"] == "Hello from the command line."


def test_the_command_explains_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"replies": 3}')
    for argv, says in [
        ([str(bad)], "list of replies"),
        ([str(tmp_path / "missing.jsonl")], "No such file"),
        (["no_such_module:replies"], "cannot import 'no_such_module'"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "actors.cli", "fake-openai", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("troupe fake-openai: ") and says in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_the_command_serves_a_function_named_module_attr(tmp_path: Path) -> None:
    (tmp_path / "my_replies.py").write_text(
        "def answer(messages):\n    return 'seen ' + str(len(messages))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-m", "actors.cli", "fake-openai", "my_replies:answer"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            answer = httpx.post(
                base_url + "/chat/completions",
                json={"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                timeout=10,
            ).json()
        finally:
            process.terminate()
            process.wait(10)
    assert answer["choices"][0]["message"]["content"] == "seen 1"


async def test_a_script_function_that_raises_is_a_500_naming_it() -> None:
    def answer(messages: list[dict[str, Any]]) -> Fault | str:
        if len(messages) > 1:
            raise LookupError("no reply for a conversation this long")
        return Fault.rate_limit(retry_after=0) if messages[0]["content"] == "busy?" else "ok"

    async with FakeOpenAI(answer) as server:
        model = model_for(server)
        assert (await model.ainvoke("hi")).content == "ok"
        with pytest.raises(ModelError, match="HTTP 429"):
            await model.ainvoke("busy?")
        with pytest.raises(ModelError, match="HTTP 500: the script raised LookupError: no reply"):
            await model.ainvoke([UserMessage("a"), UserMessage("b")])


async def test_the_example_script_drives_the_cat_agent() -> None:
    async with FakeOpenAI(CAT_TURNS, cycle=True) as server:
        for seed in (1, 2):  # cycled: each run plays the script from its start
            agent = make_cat_agent(random.Random(seed), model=model_for(server))
            events = await events_of(agent, "where is the cat?")
            check_events(events)
            assert events[-1].data.output.output.startswith("The cat is under the bed")
    assert len(server.requests) == 6


def test_it_needs_no_hypothesis() -> None:
    code = """
import sys
sys.modules["hypothesis"] = None  # as on an install without the testing extra
from actors.testing import FakeOpenAI, Faults, cassette_model, check_events, run_events
try:
    from actors.testing import agent_scripts
except ImportError as exc:
    print(exc)
from actors.cli import main
sys.exit(main(["fake-openai", "--help"]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "actors.testing.agent_scripts needs Hypothesis: pip install 'trio-troupe[testing]'"
    )
    assert lines[1].startswith("usage: troupe fake-openai")
