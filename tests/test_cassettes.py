"""Record a real-model run (against the scripted HTTP/SSE server) and replay it offline:
the same events, a stable file, and clear errors when replay and recording part."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from actors import Agent, ModelError, OpenAIChatModel, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from actors.testing import (
    CassetteMismatchError,
    RecordingChatModel,
    ReplayChatModel,
    cassette_model,
    check_events,
    first_difference,
    load_cassette,
)
from protocol import StreamEvent, converter

from .openai_server import Answer, fake_openai, text_answer, tool_answer

QUESTION = "where is the cat?"


def cat_answers() -> list[Answer]:
    """The cat agent's conversation, as a server with random tool-call ids streams it."""
    return [
        tool_answer([("call_Zq81", "where_cat_is_hiding", "{}")]),
        tool_answer([("call_x9Pf", "get_items", '{"place": "under the bed"}')]),
        text_answer(["socks", ",", " shoes"]),
        text_answer(["The", " cat", " is", " under", " the", " bed", "."]),
    ]


def model_for(url: str) -> OpenAIChatModel:
    return OpenAIChatModel("test-model", base_url=url, api_key="sk-test", max_retries=0)


async def events_of(agent: Agent, question: str = QUESTION) -> list[StreamEvent]:
    async with agent.astream_events(question) as events:
        return [e async for e in events]


def shape(events: list[StreamEvent]) -> list[dict[str, Any]]:
    """Events as JSON with run ids numbered by appearance and the clock left out."""
    ids: dict[str, int] = {}
    shaped = []
    for event in events:
        data = converter.unstructure(event)
        data["run_id"] = ids.setdefault(event.run_id, len(ids))
        data["parent_ids"] = [ids[p] for p in event.parent_ids]
        data.pop("start_time")
        data.pop("end_time")
        shaped.append(data)
    return shaped


def runs_of(events: list[StreamEvent]) -> list[str]:
    """Each run's events as JSON without ids or clock, sorted: for runs that go on at
    once, whose events may interleave differently each time."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        data = converter.unstructure(event)
        for key in ("run_id", "parent_ids", "start_time", "end_time"):
            data.pop(key)
        by_run.setdefault(event.run_id, []).append(data)
    return sorted(json.dumps(run, sort_keys=True) for run in by_run.values())


async def test_a_recorded_run_replays_identical_events_offline(tmp_path: Path) -> None:
    first, second = tmp_path / "cat.json", tmp_path / "again.json"
    async with fake_openai(*cat_answers(), *cat_answers()) as server:
        recorder = RecordingChatModel(model_for(server.base_url), first)
        recorded = await events_of(make_cat_agent(random.Random(4), nested=True, model=recorder))
        again = RecordingChatModel(model_for(server.base_url), second)
        await events_of(make_cat_agent(random.Random(4), nested=True, model=again))
    check_events(recorded)
    # ids are renamed before the agent sees them, so the server was sent call_1, call_2
    tool_messages = [m for m in server.requests[3].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_1", "call_2"]
    # stable across runs: the two recordings are byte for byte the same
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert "call_Zq81" not in text and "chatcmpl" not in text and "created" not in text
    identity, turns = load_cassette(first)
    assert (identity.name, identity.model_name, identity.provider) == (
        "OpenAIChatModel",
        "test-model",
        "openai",
    )
    assert len(turns) == 4 and turns[2].chunks[-1].usage is not None

    replay = ReplayChatModel(first)  # no server from here on
    replayed = await events_of(make_cat_agent(random.Random(4), nested=True, model=replay))
    check_events(replayed)
    assert shape(replayed) == shape(recorded)
    assert sum(e.event == "on_chat_model_stream" for e in replayed) > 10
    # the same conversation replays again (each turn may play more than once)
    assert shape(await events_of(make_cat_agent(random.Random(4), nested=True, model=replay))) == (
        shape(recorded)
    )


async def test_a_request_the_cassette_does_not_hold_names_the_first_difference(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cat.json"
    async with fake_openai(*cat_answers()) as server:
        recorder = RecordingChatModel(model_for(server.base_url), path)
        await events_of(make_cat_agent(random.Random(4), nested=True, model=recorder))
    replay = ReplayChatModel(path)
    events: list[StreamEvent] = []
    with pytest.raises(CassetteMismatchError):
        async with make_cat_agent(random.Random(4), model=replay).astream_events("hi") as stream:
            async for event in stream:
                events.append(event)  # noqa: PERF401  # keep what came before the raise
    check_events(events)
    error = events[-1].data.error
    assert events[-1].status == "error" and error is not None
    assert "CassetteMismatchError" in error
    assert 'at messages[0].content: recorded "where is the cat?", got "hi"' in error
    assert "turn 1 of 4" in error and str(path) in error
    with pytest.raises(CassetteMismatchError, match=r"messages.0..content"):
        await replay.ainvoke("hi")
    assert issubclass(CassetteMismatchError, ModelError)


async def test_a_model_error_is_recorded_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "fails.json"
    broken = Answer(status=400, body={"error": {"message": "context too long"}})
    async with fake_openai(broken) as server:
        recorder = RecordingChatModel(model_for(server.base_url), path)
        with pytest.raises(ModelError, match=r"context too long") as recorded:
            await recorder.ainvoke("hello")
    with pytest.raises(ModelError) as replayed:
        await ReplayChatModel(path).ainvoke("hello")
    assert str(replayed.value) == str(recorded.value)


async def test_scripted_turns_record_too_and_parallel_calls_keep_their_order(
    tmp_path: Path,
) -> None:
    from actors import ScriptedCall, tool

    @tool
    async def double(n: int) -> int:
        """Twice n."""
        return 2 * n

    script = [
        ScriptedTurn(
            "", [ScriptedCall("double", {"n": 1}, id="a"), ScriptedCall("double", {"n": 2})]
        ),
        ScriptedTurn("2 and 4"),
    ]
    path = tmp_path / "scripted.json"
    recorded = await events_of(Agent(RecordingChatModel(ScriptedChatModel(script), path), [double]))
    replayed = await events_of(Agent(ReplayChatModel(path), [double]))
    check_events(replayed)
    assert runs_of(replayed) == runs_of(recorded)  # the two tool runs go on at once
    calls = next(e.data.output.tool_calls for e in recorded if e.event == "on_chat_model_end")
    assert [c.id for c in calls] == ["call_1", "call_2"]


def test_missing_broken_and_foreign_cassettes_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(FileNotFoundError, match=r"no cassette at .*record one with"):
        ReplayChatModel(missing)
    with pytest.raises(ValueError, match=r"no cassette at .* and no model to record it with"):
        cassette_model(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(ValueError, match=r"garbage.json is not a cassette Troupe can read"):
        ReplayChatModel(garbage)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"format": "vcr/2", "interactions": []}))
    with pytest.raises(ValueError, match=r"format is 'vcr/2', not 'troupe-cassette/1'"):
        ReplayChatModel(foreign)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps({"format": "troupe-cassette/1", "model": {}}))
    with pytest.raises(ValueError, match=r"truncated.json is not a cassette"):
        ReplayChatModel(truncated)
    with pytest.raises(TypeError, match=r"records a ChatModel"):
        RecordingChatModel("gpt", tmp_path / "x.json")  # type: ignore[arg-type]  # on purpose


async def test_cassette_model_records_once_then_replays(tmp_path: Path) -> None:
    path = tmp_path / "once.json"
    scripted = ScriptedChatModel([ScriptedTurn("hello there")])
    first = cassette_model(path, scripted)
    assert isinstance(first, RecordingChatModel)
    assert (await first.ainvoke("hi")).content == "hello there"
    second = cassette_model(path, scripted)
    assert isinstance(second, ReplayChatModel)
    assert (await second.ainvoke("hi")).content == "hello there"
    assert isinstance(cassette_model(path, scripted, record=True), RecordingChatModel)


def test_first_difference_walks_to_the_first_change() -> None:
    recorded = {"messages": [{"content": "a"}, {"content": "b"}], "tools": []}
    assert first_difference(recorded, {"messages": [{"content": "a"}], "tools": []}) == (
        "at messages: recorded 2 items, got 1"
    )
    assert first_difference(recorded, {"messages": recorded["messages"]}) == (
        "at tools: recorded [], got nothing"
    )
    assert first_difference(1, "1") == 'at the top: recorded 1, got "1"'
