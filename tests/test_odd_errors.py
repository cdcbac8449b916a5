"""Whatever a tool, model or handler raises or returns stays inside its run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from actors import (
    Agent,
    ChatModel,
    ChunkSink,
    ModelError,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tool,
)
from actors.testing import run_watched
from protocol import ChatRequest, StreamEvent, ToolMessage
from runtime import PerformerError, RunLog, open_runtime

from .oddities import BadStr, raise_a_caught_cancelled


class BadStrBase(BaseException):
    def __str__(self) -> str:
        raise ValueError("nor for you")


def _raising(exc: BaseException) -> Any:
    @tool(name="oddity")
    async def oddity() -> str:
        """Raises something odd."""
        raise exc

    return oddity


def _calls(name: str) -> ScriptedChatModel:
    return ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall(name)]), ScriptedTurn("went on")]
    )


class RaisingModel(ChatModel):
    """A model whose turn raises what it was given."""

    __slots__ = ("error", "metadata", "name", "tags")

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.name = "Raiser"
        self.tags = ()
        self.metadata: dict[str, Any] = {}

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        raise self.error


async def _events(agent: Agent, **kw: Any) -> tuple[list[StreamEvent], BaseException | None]:
    received: list[StreamEvent] = []
    try:
        async with agent.astream_events("q", **kw) as events:
            async for event in events:
                received.append(event)  # noqa: PERF401  # kept up to the raise
    except Exception as exc:
        return received, exc
    return received, None


ODD = [
    BadStr(),
    StopAsyncIteration(),
    StopIteration(),
    KeyboardInterrupt(),
    SystemExit(3),
    GeneratorExit(),
    BadStrBase(),
]


@pytest.mark.parametrize("error", ODD, ids=lambda e: type(e).__name__)
def test_an_odd_tool_error_is_told_to_the_model_and_the_runtime_goes_on(
    error: BaseException,
) -> None:
    oddity = _raising(error)

    async def main() -> None:
        async with open_runtime() as rt:
            agent = Agent(_calls("oddity"), [oddity])
            if isinstance(error, Exception):
                output = await agent.ainvoke("q")  # told to the model: the loop goes on
                assert output["output"] == "went on"
            else:
                with pytest.raises(type(error)):  # a BaseException ends this run only
                    await agent.ainvoke("q")
            received, raised = await _events(Agent(ScriptedChatModel([ScriptedTurn("hi")])))
            assert raised is None and received[-1].status == "ok"  # others are untouched
            assert rt.protocol_violations == 0

    run_watched(main, seconds=20, label=f"tool raising {type(error).__name__}")


@pytest.mark.parametrize("error", ODD, ids=lambda e: type(e).__name__)
def test_an_odd_model_error_ends_its_run_with_an_error_event(error: BaseException) -> None:
    async def main() -> None:
        async with open_runtime():
            received, raised = await _events(Agent(RaisingModel(error)))
            assert received[-1].status == "error" and received[-1].data["error"]
            if isinstance(error, StopIteration | StopAsyncIteration):
                # Never a silent end of the loop: PerformerError (Python itself turns a
                # StopIteration leaving a coroutine into a RuntimeError, PEP 479).
                assert isinstance(raised, RuntimeError) and raised.__cause__ is error
            elif isinstance(error, Exception):
                assert raised is error
            ok, _ = await _events(Agent(ScriptedChatModel([ScriptedTurn("hi")])))
            assert ok[-1].status == "ok"

    try:
        run_watched(main, seconds=20, label=f"model raising {type(error).__name__}")
    except BaseException as exc:  # a BaseException is raised by its own stream: fine
        assert exc is error and not isinstance(error, Exception)


def test_stop_async_iteration_ends_every_stream_with_an_error() -> None:
    @tool(on_error="raise")
    async def stopper() -> str:
        """Raises StopAsyncIteration."""
        raise StopAsyncIteration

    async def main() -> None:
        agent = Agent(_calls("stopper"), [stopper])
        with pytest.raises(PerformerError, match="StopAsyncIteration"):
            async with agent.astream_events("q") as events:
                async for _ in events:
                    pass
        with pytest.raises(PerformerError):
            async with agent.astream("q") as chunks:
                async for _ in chunks:
                    pass
        with pytest.raises(PerformerError):
            async with agent.astream_log("q") as log:
                async for _ in log:
                    pass
        with pytest.raises(PerformerError):
            await agent.ainvoke("q")

    run_watched(main, seconds=20, label="StopAsyncIteration")


def test_a_cancelled_raised_by_hand_fails_only_its_run() -> None:
    @tool
    async def fake_cancel() -> str:
        """Raises a Cancelled it caught earlier, outside any cancelled scope."""
        await raise_a_caught_cancelled()

    async def main() -> None:
        async with open_runtime(), trio.open_nursery() as nursery:
            other = Agent(ScriptedChatModel([ScriptedTurn("a b c " * 50)], token_delay=0.001))
            results: list[Any] = []

            async def run_other() -> None:
                results.append(await other.ainvoke("q"))

            nursery.start_soon(run_other)
            received, raised = await _events(Agent(_calls("fake_cancel"), [fake_cancel]))
            tool_end = [e for e in received if e.name == "fake_cancel" and e.is_terminal]
            assert tool_end[0].status == "error" and "Cancelled" in tool_end[0].data["error"]
            assert raised is None and received[-1].status == "ok"  # told to the model
        assert results and results[0].finish_reason == "stop"  # the other run went on

    run_watched(main, seconds=20, label="hand-raised Cancelled")


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _generator() -> Iterator[int]:
    yield 1


def _cyclic() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


@pytest.mark.parametrize(
    "make",
    [lambda: _deep(2000), _generator, threading.Lock, _cyclic],
    ids=["deep", "generator", "lock", "cyclic"],
)
def test_odd_tool_output_is_told_and_logged_without_breaking_anything(make: Any) -> None:
    @tool(name="odd_output")
    async def odd_output() -> Any:
        """Returns something odd."""
        return make()

    async def main() -> None:
        agent = Agent(_calls("odd_output"), [odd_output], tool_errors="raise")
        output = await agent.ainvoke("q")  # told to the model, even under "raise"
        assert output["output"] == "went on"
        async with agent.astream("q") as chunks:
            steps = [chunk async for chunk in chunks]
        told = [m for s in steps if "steps" in s for m in s.messages]
        assert all(isinstance(m, ToolMessage) and m.is_error for m in told)
        async with agent.astream_log("q", diff=False) as log:
            states = [entry.state async for entry in log if isinstance(entry, RunLog)]
        assert states[-1]["final_output"]["output"] == "went on"
        async with agent.astream_log("q") as patches:
            assert [p async for p in patches]

    run_watched(main, seconds=20, label="odd tool output")


def test_an_end_event_whose_output_is_none_has_an_output_key() -> None:
    @tool
    async def nothing() -> None:
        """Returns None."""
        return None

    async def main() -> None:
        async with nothing.astream_events({}) as events:
            received = [e async for e in events]
        end = received[-1]
        assert end["data"]["output"] is None and "output" in end["data"]
        assert "output" not in received[0]["data"]  # a start event has no output

    run_watched(main, seconds=20, label="None output")


def test_model_errors_still_read_as_model_errors() -> None:
    async def main() -> None:
        received, raised = await _events(
            Agent(ScriptedChatModel([ScriptedTurn("x", error="fell over")]))
        )
        assert isinstance(raised, ModelError) and received[-1].status == "error"

    run_watched(main, seconds=20, label="model error")
