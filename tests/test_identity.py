"""What edges need to know of a run: a tool call's id, a model's name and provider."""

from __future__ import annotations

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool

from .openai_server import fake_openai, text_answer
from .test_openai import events_of, model_for

INNER = ScriptedChatModel([ScriptedTurn("socks")], name="Inner")


@tool
async def get_items(place: str) -> str:
    """Asks a model of its own."""
    return str((await INNER.ainvoke(place)).content)


async def test_tool_runs_carry_their_call_id_and_models_their_name() -> None:
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("get_items", {"place": "bed"}, id="call_7")]),
            ScriptedTurn("done"),
        ],
        metadata={"team": "cats"},
    )
    events = await events_of(Agent(model, [get_items]), "?")
    starts = {e.name: e for e in events if e.phase == "start"}
    ends = {e.name: e for e in events if e.is_terminal}
    assert starts["get_items"].metadata["tool_call_id"] == "call_7"
    assert ends["get_items"].metadata["tool_call_id"] == "call_7"  # end events repeat it
    assert "tool_call_id" not in starts["Inner"].metadata  # its own, not inherited
    assert starts["ScriptedChatModel"].metadata == {
        "team": "cats",
        "ls_model_name": "ScriptedChatModel",
        "ls_provider": "scripted",
    }
    usage = ends["ScriptedChatModel"].data.output.usage
    assert usage is not None and usage.total_tokens > 0


async def test_an_openai_model_names_its_model_and_provider() -> None:
    async with fake_openai(text_answer(["hi"])) as server:
        events = await events_of(model_for(server.base_url), "?")
    assert events[0].metadata == {
        "ls_model_name": "test-model",
        "ls_provider": "openai",
        "ls_server_address": "127.0.0.1",
        "ls_server_port": server.port,
    }
    assert events[-1].data.output.usage.total_tokens == 8
