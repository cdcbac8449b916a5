"""The floor of a cat agent run (``benchmarks._floor``) keeps what its docstring says
it keeps: a floor that skipped a promise would flatter Troupe's ratio to it, and one
that did more would flatter Troupe's distance from the raw pipelines."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from benchmarks import _floor
from benchmarks._floor import (
    SCHEDULE_EVERY,
    Agent,
    EventStream,
    Model,
    Tool,
    cat_floor,
    read_floor_run,
)
from benchmarks._workload import cat_agent, read_run
from tests.test_checkpoints import read_checking_every_so_many, read_each_after_a_cancelled_read


async def _events(agent: Agent, supervisor: trio.Nursery) -> list[Any]:
    async with EventStream(supervisor, agent, _floor.QUESTION) as events:
        return [event async for event in events]


async def test_a_floor_run_streams_the_events_of_a_troupe_run() -> None:
    troupe: list[Any] = []
    async with cat_agent(3, network_like=True, yield_every=64).astream_events(
        _floor.QUESTION
    ) as events:
        troupe = [event async for event in events]
    async with trio.open_nursery() as supervisor:
        floor = await _events(cat_floor(3), supervisor)
    shape = [(e.event, e.name, e.seq, len(e.parent_ids), tuple(e.tags)) for e in troupe]
    assert [(e.event, e.name, e.seq, len(e.parent_ids), e.tags) for e in floor] == shape


async def test_its_events_are_complete_ordered_and_whole() -> None:
    async with trio.open_nursery() as supervisor:
        got = await _events(cat_floor(2 * SCHEDULE_EVERY + 5), supervisor)
    root = got[0].run_id
    by_run: dict[str, list[Any]] = {}
    for event in got:
        for key in ("event", "name", "run_id", "parent_ids", "tags", "metadata", "data"):
            assert event[key] is getattr(event, key)
        by_run.setdefault(event.run_id, []).append(event)
    assert got[-1].run_id == root and got[-1].status == "ok" and len(by_run) == 6
    for run_id, events in by_run.items():
        assert [e.seq for e in events] == list(range(len(events)))  # per-run sequence
        assert events[0].event.endswith("_start") and events[-1].status == "ok"
        assert all(e.status is None for e in events[:-1])
        assert {(e.name, e.parent_ids, e.tags) for e in events} == {
            (events[0].name, events[0].parent_ids, events[0].tags)
        }
        assert events[-1].data.input is events[0].data.input
        if run_id != root:
            assert events[0].parent_ids == (root,)
    answer = by_run[got[-3].run_id]  # the answer's model run
    text = "".join(e["data"]["chunk"].content for e in answer[1:-1])
    assert text == answer[-1].data.output.content and len(answer) == 2 * SCHEDULE_EVERY + 8


async def test_every_read_is_a_cancel_point_and_yields_every_so_often() -> None:
    async with trio.open_nursery() as supervisor:
        agent = cat_floor(3 * SCHEDULE_EVERY)
        expected = len(await _events(agent, supervisor))
        async with EventStream(supervisor, agent, _floor.QUESTION) as events:
            got = [await events.__anext__()]
            await trio.testing.wait_all_tasks_blocked()  # the rest is waiting
            got += await read_each_after_a_cancelled_read(events)
        assert len(got) == expected
        async with EventStream(supervisor, agent, _floor.QUESTION) as events:
            await events.__anext__()
            await trio.testing.wait_all_tasks_blocked()
            assert len(await read_checking_every_so_many(events)) == expected - 1


async def test_leaving_the_stream_stops_every_task_of_the_run() -> None:
    async with trio.open_nursery() as supervisor:
        async with EventStream(supervisor, cat_floor(10_000), _floor.QUESTION) as events:
            async for event in events:
                if event.event == "on_chat_model_stream" and event.data.chunk.content:
                    break
        with trio.fail_after(5):
            while supervisor.child_tasks:
                await trio.testing.wait_all_tasks_blocked()
                await trio.lowlevel.checkpoint()


async def _boom(place: str) -> str:
    raise ValueError(place)


def _agent(calls: list[tuple[str, str]]) -> Agent:
    """A model that asks ``calls`` once, then answers with what the tools said."""

    def script(messages: Any) -> tuple[list[str], list[tuple[str, str]]]:
        told = [m.content for m in messages if m.role == "tool"]
        return (told, []) if told else ([], calls)

    tools = {"boom": Tool("boom", _boom, frozenset({"place"}))}
    return Agent("A", Model("M", (), script, 64), tools)


async def test_bad_calls_and_tool_errors_are_told_to_the_model() -> None:
    calls = [("boom", json.dumps({"place": "x"})), ("nope", "{}"), ("boom", "{}")]
    async with trio.open_nursery() as supervisor:
        got = await _events(_agent(calls), supervisor)
    errors = [e for e in got if e.event == "on_tool_error"]
    assert len(errors) == 1 and errors[0].status == "error"
    assert isinstance(errors[0].data.error, ValueError)
    told = got[-1].data.output["output"]
    assert "ValueError: x" in told and "bad call of 'nope'" in told
    assert "bad call of 'boom'" in told and got[-1].status == "ok"


async def test_a_cancelled_request_ends_with_its_terminal_event() -> None:
    async with trio.open_nursery() as supervisor:
        events = EventStream(supervisor, cat_floor(100_000), _floor.QUESTION)
        seen: list[Any] = []
        async with events:
            async for event in events:
                seen.append(event)
                if event.event == "on_chat_model_stream" and event.data.chunk.content:
                    # the root cancelled: its request cancels the model's run
                    events.cancel()
                    break
            rest: list[Any] = []
            with trio.move_on_after(5):
                rest.extend([event async for event in events])
        ends = [e for e in rest if e.status is not None]
        assert [(e.event, e.status) for e in ends] == [
            ("on_chat_model_error", "cancelled"),
            ("on_chain_error", "cancelled"),
        ]


async def test_the_floor_the_raw_pipeline_and_troupe_read_the_same_tokens() -> None:
    from runtime import open_runtime

    async with open_runtime(), trio.open_nursery() as supervisor:
        agent = cat_agent(200, network_like=True, yield_every=64)
        assert await read_floor_run(supervisor, cat_floor(200)) == await read_run(agent) == 200
        assert await read_floor_run(supervisor, cat_floor(200, checked_sends=True)) == 200


def test_the_wall_clock_rows_time_every_row_in_one_process() -> None:
    got = trio.run(_floor.wall_clock, 3, 20, 1)
    assert set(got["runs_per_second"]) == {"raw", "floor", "floor_checked", "troupe"}
    assert got["floor_over_raw"] == got["runs_per_second"]["floor"] / got["runs_per_second"]["raw"]
    assert {"troupe_over_floor", "troupe_over_floor_checked", "troupe_over_raw"} <= set(got)
