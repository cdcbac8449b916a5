"""DESIGN.md promises 1-4, as properties of generated agent scripts.

Hypothesis writes the scripts: 1-6 model turns, 1-4 parallel tool calls in every turn
but the last (which answers with 0-300 tokens), tools that answer at once, pause, or
ask a nested model of their own, root tags and metadata, and 1-3 runs at once in one
runtime. Order is judged from the run tree and sequence numbers, never wall time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tokenize, tool
from actors.testing import check_events, run_watched
from protocol import ChatMessage, StepChunk, StreamEvent, UserMessage
from runtime import open_runtime


def _echo_last_user(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    last = [m for m in messages if isinstance(m, UserMessage)][-1]
    return ScriptedTurn(last.content)


NESTED_MODEL = ScriptedChatModel(_echo_last_user, name="Nested").with_config(tags=["tool_llm"])


@tool
async def answer(text: str) -> str:
    """Answer at once."""
    return text


@tool
async def pause(text: str) -> str:
    """Let other tasks run first."""
    for _ in range(3):
        await trio.lowlevel.checkpoint()
    return text.upper()


@tool
async def nested(text: str) -> str:
    """Ask a model of its own."""
    return (await NESTED_MODEL.ainvoke(text or "empty")).content


TOOLS = [answer, pause, nested]
WORDS = ["cat", "shelf", "bed", "dust", ",", ".", "socks", "the", "é", "🐈"]


def words(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(WORDS), max_size=max_size).map(" ".join)


@frozen
class RunSpec:
    turns: tuple[ScriptedTurn, ...]
    tags: tuple[str, ...]
    metadata: dict[str, Any]


@st.composite
def run_specs(draw: st.DrawFn) -> RunSpec:
    turns = []
    for _ in range(draw(st.integers(0, 5))):
        calls = draw(
            st.lists(
                st.builds(
                    ScriptedCall,
                    st.sampled_from([t.name for t in TOOLS]),
                    st.fixed_dictionaries({"text": words(12)}),
                ),
                min_size=1,
                max_size=4,
            )
        )
        turns.append(ScriptedTurn(draw(words(8)), calls))
    turns.append(ScriptedTurn(draw(words(300))))
    tags = tuple(draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True)))
    metadata = draw(st.dictionaries(st.sampled_from(["k1", "k2"]), st.integers(), max_size=2))
    return RunSpec(tuple(turns), tags, metadata)


async def _watch(spec: RunSpec, out: dict[int, list[StreamEvent]], index: int) -> None:
    agent = Agent(ScriptedChatModel(spec.turns).with_config(tags=["agent_llm"]), TOOLS)
    async with agent.astream_events(
        f"question {index}", tags=spec.tags, metadata=spec.metadata
    ) as events:
        out[index] = [event async for event in events]


@given(st.lists(run_specs(), min_size=1, max_size=3))
def test_event_streams_keep_the_promises(specs: list[RunSpec]) -> None:
    collected: dict[int, list[StreamEvent]] = {}

    async def main() -> None:
        async with open_runtime() as rt:
            async with trio.open_nursery() as nursery:
                for index, spec in enumerate(specs):
                    nursery.start_soon(_watch, spec, collected, index)
            assert rt.protocol_violations == 0 and rt.open_runs == 0

    run_watched(main, seconds=60, label="generated case")
    for index, spec in enumerate(specs):
        _check_run(spec, collected[index])


def _check_run(spec: RunSpec, events: list[StreamEvent]) -> None:
    runs = check_events(events)  # promises 1-3, and inheritance of tags and metadata
    root = events[0]
    assert root.name == "Agent" and root.parent_ids == ()
    for trace in runs.values():
        assert set(spec.tags) <= set(trace.start.tags)  # promise 4: root tags everywhere
        for key, value in spec.metadata.items():
            assert trace.start.metadata[key] == value
    by_kind: dict[str, list[Any]] = {}
    for trace in runs.values():
        by_kind.setdefault(trace.start.kind, []).append(trace)
    calls = [call for turn in spec.turns for call in turn.tool_calls]
    tools = by_kind.get("tool", [])
    assert len(tools) == len(calls)
    assert sorted(t.start.name for t in tools) == sorted(c.name for c in calls)
    assert all(t.start.parent_ids == (root.run_id,) for t in tools)
    models = by_kind["chat_model"]
    agent_models = [m for m in models if m.start.parent_ids == (root.run_id,)]
    nested_models = [m for m in models if len(m.start.parent_ids) == 2]
    assert len(agent_models) == len(spec.turns)
    assert len(nested_models) == sum(1 for c in calls if c.name == "nested")
    for model in nested_models:
        parent = runs[model.start.parent_ids[-1]]
        assert parent.start.name == "nested"
        assert "tool_llm" in model.start.tags and "agent_llm" not in model.start.tags
    final = spec.turns[-1].text
    assert events[-1].status == "ok" and events[-1].data.output["output"] == final
    streamed = [c.content for m in agent_models[-1:] for c in m.chunks if c.content]
    assert len(streamed) == len(tokenize(final))


@given(run_specs())
def test_steps_tell_the_same_story_as_the_script(spec: RunSpec) -> None:
    chunks: list[StepChunk] = []

    async def main() -> None:
        agent = Agent(ScriptedChatModel(spec.turns), TOOLS)
        async with agent.astream("q") as steps:
            chunks.extend([chunk async for chunk in steps])

    run_watched(main, seconds=60, label="generated case")
    tool_turns = spec.turns[:-1]
    assert [next(iter(c.keys())) for c in chunks] == ["actions", "steps"] * len(tool_turns) + [
        "output"
    ]
    pairs = zip(chunks[:-1:2], chunks[1:-1:2], strict=True)
    for turn, (actions, steps) in zip(tool_turns, pairs, strict=True):
        assert [a.tool for a in actions["actions"]] == [c.name for c in turn.tool_calls]
        assert [s.action for s in steps["steps"]] == list(actions["actions"])
    assert chunks[-1]["output"] == spec.turns[-1].text
