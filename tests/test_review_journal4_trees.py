"""Hostile review of journal schema 4: drawn run trees (nested and concurrent runs, a
chat model's runs of text, messages shared between runs and written once, agent steps,
custom events), journaled to a store, read back exactly as they streamed; and paused,
their resumes (a replay whose JSON the journal reuses) too."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import ScriptedChatModel, ScriptedTurn
from actors.testing import check_events, run_watched
from protocol import (
    AgentAction,
    AgentStep,
    AssistantMessage,
    ChatRequest,
    StepsChunk,
    ToolCall,
    ToolMessage,
    UserMessage,
    to_json,
)
from runtime import Performer, Resume, Run, adispatch_custom_event, interrupt, open_runtime

_SAID = (UserMessage, AssistantMessage, ToolMessage)


def _message(rng: random.Random, made: list[Any]) -> Any:
    """A message (or an action) this performer made before, or a new one."""
    if made and rng.random() < 0.5:
        return rng.choice(made)
    at = len(made)
    kind = rng.randrange(5)
    if kind == 0:
        made.append(UserMessage(f"user {at}"))
    elif kind == 1:
        made.append(AssistantMessage(f"assistant {at}", id=f"answer-{at}"))
    elif kind == 2:
        made.append(ToolMessage(f"told {at}", f"call-{at}", "look"))
    elif kind == 3:
        call = ToolCall(f"call-{at}", "look", {"where": {"room": f"r{at}"}, "also": [1, 2]})
        made.append(AssistantMessage(tool_calls=(call,), id=f"answer-{at}"))
    else:
        call = ToolCall(f"call-{at}", "look", {"at": at})
        made.append(AgentAction("look", call.args, call.id, "Invoking look"))
    return made[-1]


def _chunk(rng: random.Random, made: list[Any]) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return _message(rng, made)
    if kind == 1:
        return [_message(rng, made) for _ in range(rng.randrange(4))]
    if kind == 2:
        return {"messages": [_message(rng, made) for _ in range(3)], "n": rng.randrange(3)}
    if kind == 3:
        action = _message(rng, made)
        if not isinstance(action, AgentAction):
            action = AgentAction("look", ToolCall("q", "look", {"a": 1}).args, "q")
        told = _message(rng, made)
        return StepsChunk(
            (AgentStep(action, "seen"),), (told,) if type(told) is ToolMessage else ()
        )
    if kind == 4:
        return f"text {rng.randrange(100)}"
    return {"nested": [1, {"x": [UserMessage("deep")]}]}


class Node(Performer[Any, Any]):
    """Does what its seed draws: streams chunks, asks children (one at a time, or
    several at once, each with the conversation so far), asks a chat model that streams
    text, dispatches custom events; the root asks a person last, if ``ask``."""

    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # a performer's shared, read-only metadata

    def __init__(self, name: str, seed: int, depth: int, ask: bool = False) -> None:
        self.name = name
        self.seed = seed
        self.depth = depth
        self.ask = ask

    def coerce_input(self, value: Any) -> Any:
        return value

    async def perform(self, message: Any, run: Run) -> Any:
        rng = random.Random(self.seed)
        made: list[Any] = []
        said: list[Any] = [_message(rng, made)]
        for turn in range(rng.randrange(1, 6)):
            kind = rng.randrange(5)
            if kind == 0:
                await run.emit(_chunk(rng, made))
            elif kind == 1 and self.depth < 3:
                said = [*said, _message(rng, made)]
                child = Node(rng.choice("ab"), rng.randrange(10**6), self.depth + 1)
                got = await run.request(child, {"messages": said, "turn": turn})
                if isinstance(got, _SAID):
                    said = [*said, got]
            elif kind == 2:
                tokens = tuple(f"w{n} " for n in range(rng.randrange(1, 8)))
                model = ScriptedChatModel([ScriptedTurn("".join(tokens), tokens=tokens)] * 9)
                asked = [m for m in [*said, _message(rng, made)] if isinstance(m, _SAID)]
                said = [
                    *said,
                    await run.request(model, ChatRequest(tuple(asked) or (UserMessage("?"),))),
                ]
            elif kind == 3 and self.depth < 3:
                async with trio.open_nursery() as nursery:
                    for at in range(rng.randrange(2, 4)):
                        child = Node("p", rng.randrange(10**6), self.depth + 1)
                        nursery.start_soon(run.request, child, {"messages": said, "at": at})
            else:
                await adispatch_custom_event("drawn", {"turn": turn})
        if self.ask:
            await interrupt("go on?")
        return _chunk(rng, made)


async def _streamed(rt: Any, performer: Any, value: Any, **options: Any) -> list[str]:
    """The events of a run as its stream gives them, each as JSON when it is read."""
    async with rt.astream_events(performer, value, **options) as stream:
        events = [event async for event in stream]
    check_events(events)
    return [to_json(e) for e in events]


async def _read_back(rt: Any, run_id: str) -> list[str]:
    async with rt.join(run_id) as joined:
        return [to_json(e) async for e in joined]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seeds=st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_drawn_trees_read_back_as_they_streamed(tmp_path: Path, seeds: list[int]) -> None:
    """Several drawn trees at once (their records gathered in the same batches)."""

    async def main() -> None:
        url = f"sqlite:///{tmp_path}/runs-{'-'.join(map(str, seeds))}.db"
        streamed: dict[str, list[str]] = {}
        async with open_runtime(store=url) as rt:

            async def one(index: int, seed: int) -> None:
                run_id = f"tree-{index}"
                root = Node("root", seed, 0)
                streamed[run_id] = await _streamed(rt, root, {"messages": []}, run_id=run_id)

            async with trio.open_nursery() as nursery:
                for index, seed in enumerate(seeds):
                    nursery.start_soon(one, index, seed)
            for run_id, events in streamed.items():
                assert await _read_back(rt, run_id) == events

    run_watched(main, seconds=60, label="drawn trees")


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10**6))
def test_a_drawn_tree_paused_and_resumed_reads_back_as_it_streamed(
    tmp_path: Path, seed: int
) -> None:
    """Its resume replays it (answers, and the JSON the journal reuses, from the paused
    run's journal) and goes on: both read back as they streamed."""

    async def main() -> None:
        url = f"sqlite:///{tmp_path}/runs-{seed}.db"
        async with open_runtime(store=url) as rt:
            async with rt.astream_events(Node("root", seed, 0, ask=True), {}, run_id="p") as stream:
                first = [to_json(event) async for event in stream]
                paused = stream.paused
            assert paused is not None
            resume = Resume("p", {paused.pending[0].id: "yes"})
            again = await _streamed(
                rt, Node("root", seed, 0, ask=True), None, resume=resume, run_id="q"
            )
            assert await _read_back(rt, "p") == first
            assert await _read_back(rt, "q") == again

    run_watched(main, seconds=60, label="drawn resume")
