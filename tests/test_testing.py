"""actors.testing: the checker fails on hand-broken streams (naming promise, position and
run), passes on every kind of real stream, and its strategies draw what they say."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest
import trio
from hypothesis import find, given, settings
from hypothesis import strategies as st

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent, make_cat_tools
from actors.testing import (
    MALFORMED_ARGUMENTS,
    MODEL_ERROR,
    UNKNOWN_TOOL,
    EventCollector,
    Faults,
    PromiseBroken,
    agent_scripts,
    check_events,
    check_steps,
    faults,
    invalid_tool_arguments,
    json_values,
    run_events,
    run_watched,
    script_as_python,
    tool_arguments,
)
from protocol import (
    AgentAction,
    AssistantMessage,
    AssistantMessageChunk,
    EventData,
    StepChunk,
    StepsChunk,
    StreamEvent,
)
from runtime import open_runtime


async def _events(**options: Any) -> list[StreamEvent]:
    agent = make_cat_agent(random.Random(1), nested=True)
    async with agent.astream_events(
        "where is the cat?", tags=["root"], metadata={"user": "u1"}, **options
    ) as events:
        return [e async for e in events]


def _replace(events: list[StreamEvent], at: int, **changes: Any) -> list[StreamEvent]:
    broken = list(events)
    broken[at] = attrs.evolve(broken[at], **changes)
    return broken


def _index(events: list[StreamEvent], event: str, name: str | None = None) -> int:
    return next(
        i for i, e in enumerate(events) if e.event == event and (name is None or e.name == name)
    )


# -- the checker passes what Troupe streams ---------------------------------------------


async def test_a_whole_stream_keeps_the_promises() -> None:
    events = await _events()
    runs = check_events(events)
    kinds = sorted(t.kind for t in runs.values())
    assert kinds == [
        "chain",
        "chat_model",
        "chat_model",
        "chat_model",
        "chat_model",
        "tool",
        "tool",
    ]
    root = runs[events[0].run_id]
    assert root.start is events[0] and root.terminal is events[-1] and root.status == "ok"


async def test_filtered_streams_are_checked_against_the_ancestors_they_keep() -> None:
    models = await _events(include_types=["chat_model"])
    assert models and all(e.kind == "chat_model" for e in models)
    with pytest.raises(PromiseBroken, match=r"pass filtered=True"):
        check_events(models)
    runs = check_events(models, filtered=True)
    assert len(runs) == 4
    tools = await _events(include_types=["tool", "chat_model"])
    check_events(tools, filtered=True)  # nested models checked against their tool runs


async def test_a_watcher_of_many_runs_and_a_stream_left_early() -> None:
    agent = make_cat_agent(random.Random(2))
    seen: list[StreamEvent] = []
    async with open_runtime() as rt, rt.watch() as watched:
        async with trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(agent.ainvoke, f"question {index}")
            async for event in watched:
                seen.append(event)
                if sum(e.is_terminal and not e.parent_ids for e in seen) == 3:
                    break
        early: list[StreamEvent] = []
        async with agent.astream_events("q") as events:
            async for event in events:
                early.append(event)
                if len(early) == 5:
                    break
    runs = check_events(seen)  # three trees, interleaved
    assert sum(1 for t in runs.values() if not t.parent_ids) == 3
    with pytest.raises(PromiseBroken, match=r"no terminal event"):
        check_events(early)
    check_events(early, complete=False)


# -- and fails what breaks them, saying where --------------------------------------------


async def test_a_missing_terminal_event_is_named() -> None:
    events = await _events()
    at = _index(events, "on_tool_end", "where_cat_is_hiding")
    with pytest.raises(PromiseBroken) as caught:
        check_events(events[:at] + events[at + 1 :])
    broken = caught.value
    assert broken.promise == 2 and broken.run_id == events[at].run_id
    assert "promise 2 (ordering)" in str(broken)
    assert "'where_cat_is_hiding' (tool" in str(broken)
    assert "run tree (event positions, status)" in str(broken)
    assert "where_cat_is_hiding [tool]" in str(broken) and "running  <-- here" in str(broken)


async def test_a_child_ending_after_its_parent_is_named() -> None:
    events = await _events()
    child = _index(events, "on_chat_model_end", "Get Items LLM")
    parent = _index(events, "on_tool_end", "get_items")
    moved = events[:child] + events[child + 1 : parent + 1] + [events[child]] + events[parent + 1 :]
    with pytest.raises(PromiseBroken) as caught:
        check_events(moved)
    assert caught.value.promise == 2 and caught.value.position == parent
    assert "a child ended after its parent 'get_items'" in str(caught.value)
    assert f"at event {parent}" in str(caught.value)


async def test_tokens_that_do_not_add_up_are_named() -> None:
    events = await _events()
    at = _index(events, "on_chat_model_stream")
    chunk = events[at].data.chunk
    broken = _replace(
        events, at, data=EventData(chunk=attrs.evolve(chunk, content=chunk.content + "!"))
    )
    with pytest.raises(PromiseBroken) as caught:
        check_events(broken)
    assert caught.value.promise == 3 and "streamed text" in str(caught.value)
    end = _index(events, "on_chat_model_end")
    output = events[end].data.output
    calls = _replace(
        events,
        end,
        data=attrs.evolve(events[end].data, output=attrs.evolve(output, tool_calls=())),
    )
    with pytest.raises(PromiseBroken, match=r"promise 3 .*streamed tool calls"):
        check_events(calls)


async def test_a_tag_or_metadata_not_inherited_is_named() -> None:
    events = await _events()
    run = events[_index(events, "on_tool_start", "get_items")].run_id
    untagged_run = attrs.evolve(
        next(e.run for e in events if e.run_id == run),
        tags=tuple(t for t in events[0].tags if t != "root"),
    )
    untagged = [attrs.evolve(e, run=untagged_run) if e.run_id == run else e for e in events]
    with pytest.raises(PromiseBroken) as caught:
        check_events(untagged)
    assert caught.value.promise == 4 and "tags ['root'] of 'Agent' not inherited" in str(
        caught.value
    )
    bare = attrs.evolve(untagged_run, tags=events[0].tags, metadata={})
    unmetadata = [attrs.evolve(e, run=bare) if e.run_id == run else e for e in events]
    with pytest.raises(PromiseBroken, match=r"promise 4 .*metadata \['user'\]"):
        check_events(unmetadata)


async def test_other_broken_streams_are_named() -> None:
    events = await _events()
    with pytest.raises(PromiseBroken, match=r"no events"):
        check_events([])
    with pytest.raises(PromiseBroken, match=r"promise 2 .*second start"):
        check_events([events[0], *events])
    with pytest.raises(PromiseBroken, match=r"promise 2 .*seq jumps"):
        check_events(events[:2] + events[3:])
    end = len(events) - 1
    with pytest.raises(PromiseBroken, match=r"promise 1 .*differs from the start's"):
        check_events(_replace(events, end, run=attrs.evolve(events[end].run, name="Other")))
    with pytest.raises(PromiseBroken, match=r"promise 2 .*root's start is not the first"):
        check_events(events[1:2] + events[:1] + events[2:], filtered=True)
    with pytest.raises(PromiseBroken, match=r"promise 1 .*without output"):
        check_events(_replace(events, end, data=EventData(input=events[end].data.input)))
    with pytest.raises(PromiseBroken, match=r"promise 1 .*not a StreamEvent"):
        check_events([{"event": "on_chain_start"}])  # type: ignore[list-item]  # on purpose


async def test_steps_streams_are_checked() -> None:
    agent = make_cat_agent(random.Random(3))
    async with agent.astream("where is the cat?") as steps:
        chunks: list[StepChunk] = [c async for c in steps]
    check_steps(chunks)
    actions, answers = chunks[0], chunks[1]
    assert isinstance(answers, StepsChunk)
    with pytest.raises(PromiseBroken, match=r"at chunk 0: a steps chunk without an actions"):
        check_steps(chunks[1:])
    with pytest.raises(PromiseBroken, match=r"no output chunk"):
        check_steps(chunks[:-1])
    check_steps(chunks[:-1], complete=False)
    with pytest.raises(PromiseBroken, match=r"output chunk is not the last"):
        check_steps([chunks[-1], *chunks])
    wrong = attrs.evolve(answers, steps=(attrs.evolve(answers.steps[0], action=AgentAction("x")),))
    with pytest.raises(PromiseBroken, match=r"at chunk 1: the steps' actions"):
        check_steps([actions, wrong, *chunks[2:]])
    with pytest.raises(PromiseBroken, match=r"not a step chunk"):
        check_steps([object()])


# -- strategies ---------------------------------------------------------------------------


@tool
async def find_items(
    place: str, count: int = 3, fast: bool | None = None, tags: list[str] | None = None
) -> str:
    """Look for items."""
    return f"{count} items at {place}"


@given(st.data())
@settings(max_examples=60)
def test_drawn_arguments_fit_the_schema_or_break_it_as_asked(data: st.DataObject) -> None:
    import jsonschema

    schema = find_items.spec.parameters
    assert jsonschema.Draft202012Validator(schema).is_valid(data.draw(tool_arguments(find_items)))
    assert not jsonschema.Draft202012Validator(schema).is_valid(
        data.draw(invalid_tool_arguments(find_items))
    )
    tricky = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 2, "maximum": 5},
            "kind": {"enum": ["a", "b"]},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "required": ["n", "kind", "pair", "code"],
    }
    assert jsonschema.Draft202012Validator(tricky).is_valid(data.draw(json_values(tricky)))


def test_a_schema_that_is_not_one_is_refused() -> None:
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        json_values({"type": "no-such-type"})
    with pytest.raises(TypeError, match=r"agent_scripts takes tools"):
        agent_scripts(tools=[len])  # type: ignore[list-item]  # on purpose
    with pytest.raises(ValueError, match=r"max_parallel"):
        agent_scripts(max_parallel=0)


def test_scripts_reach_every_nasty_case_and_shrink_to_python() -> None:
    tools = make_cat_tools(random.Random(0))
    scripts = agent_scripts(tools=tools)

    def calls(turns: Sequence[ScriptedTurn]) -> list[ScriptedCall]:
        return [c for t in turns for c in t.tool_calls]

    wanted: dict[str, Callable[[list[ScriptedTurn]], bool]] = {
        "parallel calls": lambda ts: any(len(t.tool_calls) > 1 for t in ts),
        "unknown tool": lambda ts: any(c.name == UNKNOWN_TOOL for c in calls(ts)),
        "malformed": lambda ts: any(c.args in MALFORMED_ARGUMENTS for c in calls(ts)),
        "invalid args": lambda ts: any(
            c.name == "get_items" and isinstance(c.args, dict) and "place" not in c.args
            for c in calls(ts)
        ),
        "model error": lambda ts: any(t.error == MODEL_ERROR for t in ts),
        "slow tokens": lambda ts: any(t.token_delay for t in ts),
    }
    for label, predicate in wanted.items():
        minimal = find(scripts, predicate, settings=settings(max_examples=2000, database=None))
        assert predicate(minimal), label
        # the shrunk example prints as Python that rebuilds it
        namespace = {"ScriptedTurn": ScriptedTurn, "ScriptedCall": ScriptedCall}
        assert eval(repr(minimal), namespace) == minimal, label
        assert eval(script_as_python(minimal), namespace) == minimal, label
    plain = find(scripts, lambda ts: True, settings=settings(database=None))
    assert plain == [ScriptedTurn()]  # shrinking heads for one plain answer


def test_switching_the_nasty_cases_off_leaves_valid_calls_only() -> None:
    tools = make_cat_tools(random.Random(0))
    scripts = agent_scripts(
        tools=tools,
        invalid_arguments=False,
        unknown_tools=False,
        malformed_arguments=False,
        model_errors=False,
        slow_tokens=False,
    )

    @given(scripts)
    @settings(max_examples=50, database=None)
    def check(turns: list[ScriptedTurn]) -> None:
        for turn in turns:
            assert turn.error is None and turn.token_delay is None
            for call in turn.tool_calls:
                assert call.name in ("where_cat_is_hiding", "get_items")
                assert isinstance(call.args, dict)
                assert call.name != "get_items" or isinstance(call.args.get("place"), str)

    check()


# -- the property users write -------------------------------------------------------------


CAT_TOOLS = make_cat_tools(random.Random(0), nested=True)


@given(turns=agent_scripts(tools=CAT_TOOLS, max_turns=3), fault=faults())
def test_the_cat_agent_keeps_the_promises_under_drawn_scripts_and_faults(
    turns: list[ScriptedTurn], fault: Faults
) -> None:
    async def main() -> None:
        agent = Agent(ScriptedChatModel(turns), CAT_TOOLS)
        run = await run_events(agent, "where is the cat?", faults=fault)
        if run.tree:  # a run cancelled before it began has no events at all
            check_events(run.tree)
            assert run.events == run.tree[: len(run.events)]
        if fault.cancel_at is None:
            assert run.events == run.tree
            expected = "error" if any(t.error for t in turns) else "ok"
            assert run.status == expected, (run.status, run.error)
        handler_raised = fault.handler_raises_at is not None and fault.handler_raises_at <= len(
            run.tree
        )
        assert len(run.handler_errors) == handler_raised

    run_watched(main, seconds=60, label="generated cat-agent case")


def test_faults_shrink_to_none() -> None:
    assert find(faults(), lambda f: True, settings=settings(database=None)) == Faults()


async def test_run_events_reads_like_a_user_and_returns_the_error() -> None:
    agent = Agent(ScriptedChatModel([ScriptedTurn("partial", error="boom")]))
    run = await run_events(agent, "q")
    assert run.status == "error" and run.error is not None and "boom" in str(run.error)
    check_events(run.tree)
    chunk_events = [e for e in run.tree if e.event == "on_chat_model_stream"]
    assert all(isinstance(e.data.chunk, AssistantMessageChunk) for e in chunk_events)
    final = [e for e in run.tree if e.event == "on_chat_model_error"]
    assert final and not isinstance(final[0].data.get("output"), AssistantMessage)


async def test_an_event_collector_iterates_over_its_events() -> None:
    collector = EventCollector()
    assert collector and len(collector) == 0 and list(collector) == []
    agent = make_cat_agent(random.Random(1))
    await agent.ainvoke("where is the cat?", callbacks=[collector])
    await collector.wait_for_runs(1)
    assert list(collector) == collector.events and len(collector) == len(collector.events)
    assert next(e.event for e in collector) == "on_chain_start"
