"""The JSON-patch run log, and one story told three ways (events, log, callbacks)."""

from __future__ import annotations

from typing import Any

import attrs
import jsonpatch
import pytest
from hypothesis import given

from actors import Agent, AsyncCallbackHandler, ScriptedCall, ScriptedChatModel, ScriptedTurn
from actors.testing import check_events, run_watched
from protocol import (
    AgentOutput,
    AssistantMessage,
    AssistantMessageChunk,
    FinishChunk,
    StreamEvent,
    to_json,
)
from runtime import RunLog, RunLogPatch, StreamUsageError

from .test_properties import TOOLS, RunSpec, run_specs


def cat_agent() -> Agent:
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("answer", {"text": "shelf"})]),
            ScriptedTurn(tool_calls=[ScriptedCall("answer", {"text": "books"})]),
            ScriptedTurn("On the shelf."),
        ]
    ).with_config(tags=["agent_llm"])
    return Agent(model, TOOLS)


async def test_the_state_document() -> None:
    async with cat_agent().astream_log("q", diff=False) as log:
        states = [entry async for entry in log]
    assert all(isinstance(s, RunLog) for s in states)
    last = states[-1]
    assert isinstance(last, RunLog)
    state = last.state
    assert set(state) == {"id", "name", "type", "streamed_output", "final_output", "logs"}
    assert (state["name"], state["type"]) == ("Agent", "chain")
    assert state["final_output"]["output"] == "On the shelf."
    assert [type(c).__name__ for c in state["streamed_output"]] == [
        "ActionsChunk",
        "StepsChunk",
        "ActionsChunk",
        "StepsChunk",
        "FinishChunk",
    ]
    assert list(state["logs"]) == [
        "ScriptedChatModel",
        "answer",
        "ScriptedChatModel:2",
        "answer:2",
        "ScriptedChatModel:3",
    ]
    last_model = state["logs"]["ScriptedChatModel:3"]
    assert set(last_model) == {
        "id",
        "name",
        "type",
        "tags",
        "metadata",
        "start_time",
        "streamed_output",
        "streamed_output_str",
        "final_output",
        "end_time",
    }
    assert "".join(last_model["streamed_output_str"]) == "On the shelf."
    assert (
        last_model["tags"] == ["agent_llm"] and last_model["end_time"] >= last_model["start_time"]
    )
    assert state["logs"]["answer:2"]["final_output"] == "books"
    to_json(state)  # serializable at the edge


async def test_patches_add_up_and_filters_choose_the_logs() -> None:
    async with cat_agent().astream_log("q", include_types=["tool"]) as log:
        patches = [p async for p in log]
    assert all(type(p) is RunLogPatch for p in patches)
    assert patches[0].ops[0]["op"] == "replace" and patches[0].ops[0]["path"] == ""
    total = patches[0]
    for patch in patches[1:]:
        total = total + patch
    assert isinstance(total, RunLog)
    assert list(total.state["logs"]) == ["answer", "answer:2"]
    assert total.state["streamed_output"] and total.state["final_output"] is not None
    assert "RunLogPatch({'op': 'replace'" in repr(patches[0])


async def test_names_are_escaped_as_json_pointers() -> None:
    model = ScriptedChatModel([ScriptedTurn("hi")]).with_config(run_name="a/b~c")
    agent = Agent(model)
    async with agent.astream_log("q") as log:
        patches = [p async for p in log]
    paths = [op["path"] for p in patches for op in p.ops]
    assert "/logs/a~1b~0c" in paths
    state = jsonpatch.apply_patch(None, [op for p in patches for op in p.ops])
    assert list(state["logs"]) == ["a/b~c"]


async def test_a_failing_run_logs_its_error_and_raises() -> None:
    agent = Agent(ScriptedChatModel([ScriptedTurn("x", error="down")]))
    ops: list[dict[str, Any]] = []
    with pytest.raises(Exception, match="down"):
        async with agent.astream_log("q") as log:
            async for patch in log:
                ops.extend(patch.ops)
    state = jsonpatch.apply_patch(None, ops)
    assert state["error"] == "ModelError: down"
    assert state["logs"]["ScriptedChatModel"]["error"] == "ModelError: down"


async def test_the_log_must_be_entered() -> None:
    with pytest.raises(StreamUsageError, match="astream_log"):
        async for _ in cat_agent().astream_log("q"):
            pass


def test_chunks_add_like_langchain() -> None:
    total = AssistantMessageChunk("Hel") + AssistantMessageChunk("lo", finish_reason="stop")
    assert total == AssistantMessageChunk("Hello", finish_reason="stop")


class _Story(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    async def on_event(self, event: StreamEvent) -> None:
        await super().on_event(event)
        if event.phase == "start":
            self.runs[event.run_id] = {"name": event.name, "parent": event.parent_id}
            self.order.append(event.run_id)
        elif event.phase == "end":
            self.runs[event.run_id]["output"] = event.data.output


@given(run_specs())
def test_events_log_and_callbacks_tell_the_same_story(spec: RunSpec) -> None:
    story = _Story()
    found: dict[str, Any] = {}

    async def main() -> None:
        agent = Agent(ScriptedChatModel(spec.turns), TOOLS)
        async with agent.astream_events("q", callbacks=[story]) as events:
            found["events"] = [e async for e in events]
        async with agent.astream_log("q", diff=False) as log:
            found["log"] = [entry async for entry in log]
        async with agent.astream_log("q") as log:
            found["patches"] = [p async for p in log]

    run_watched(main, seconds=60, label="generated case")
    runs = check_events(found["events"])
    root_id = found["events"][0].run_id
    from_events = {
        rid: {
            "name": t.start.name,
            "parent": t.start.parent_id,
            "output": t.terminal.data.output if t.terminal else None,
        }
        for rid, t in runs.items()
    }
    assert story.runs == from_events
    assert story.order == [t.start.run_id for t in runs.values()]  # starts in tree order
    final = found["log"][-1].state  # diff=False: RunLog entries
    # One run's own patches, applied in order to an empty document, rebuild its state.
    same_run = [op for entry in found["log"] for op in entry.ops]
    assert jsonpatch.apply_patch(None, same_run) == final
    ops = [op for patch in found["patches"] for op in patch.ops]
    rebuilt = jsonpatch.apply_patch(None, ops)
    # Three runs of one deterministic script: the same story, up to the order in which
    # parallel siblings start (and so which of them is "name" and which "name:2").
    assert _shape(rebuilt) == _shape(final)
    logged = sorted(repr((e["name"], _answer(e["final_output"]))) for e in final["logs"].values())
    evented = sorted(
        repr((r["name"], _answer(r["output"]))) for k, r in from_events.items() if k != root_id
    )
    assert logged == evented
    # as LangChain's: the root's streamed chunks added up
    assert final["final_output"]["output"] == from_events[root_id]["output"].output  # type: ignore[union-attr]  # an AgentOutput


def _answer(value: Any) -> Any:
    """``value`` with the ids of the model answers in it left out: they are named after
    their runs."""
    if isinstance(value, AssistantMessage):
        return attrs.evolve(value, id=None)
    if isinstance(value, AgentOutput | FinishChunk):
        return attrs.evolve(value, messages=tuple(_answer(m) for m in value.messages))
    if isinstance(value, dict):
        return {k: _answer(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_answer(v) for v in value)
    return value


def _shape(state: dict[str, Any]) -> Any:
    entries = sorted(
        repr((v["name"], _answer(v["final_output"]), v["streamed_output_str"]))
        for v in state["logs"].values()
    )
    return state["name"], _answer(state["final_output"]), entries, sorted(state["logs"])
