"""Troupe from asyncio (``actors.aio``): the same ``async with`` / ``async for`` shape for
every stream and ``ainvoke``, cancellation both ways, backpressure, faults; trio in a
thread of its own and as a guest on the loop. Each test is a plain function that runs
``asyncio.run`` itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from actors import (
    Agent,
    AsyncCallbackHandler,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tool,
)
from actors.aio import DEFAULT_WINDOW, AsyncioRuntime, Mode, open_asyncio_runtime
from actors.testing import check_events, hang_watchdog
from protocol import ActionsChunk, AgentOutput, FinishChunk, StepsChunk, StreamEvent
from runtime import RunCancelledError, RunLogPatch, WrongEventLoopError, open_runtime

T = TypeVar("T")
MODES: tuple[Mode, ...] = ("thread", "guest")


class Ends(AsyncCallbackHandler):
    """Every event the runtime saw (its callbacks run on trio's side)."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)

    def terminal_counts(self) -> Counter[str]:
        return Counter(e.run_id for e in self.events if e.is_terminal)

    def started(self) -> set[str]:
        return {e.run_id for e in self.events if e.phase == "start"}


@tool
async def lookup(place: str) -> str:
    """Look something up; a 'boom' fails, a 'slow' takes a while."""
    if "boom" in place:
        raise RuntimeError("boom in the tool")
    if "slow" in place:
        await trio.sleep(0.01)
    return f"things in {place}"


def agent(place: str = "the shelf", tokens: int = 20, *, raise_errors: bool = False) -> Agent:
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("lookup", {"place": place})]),
            ScriptedTurn(" ".join(["word"] * tokens)),
        ]
    )
    return Agent(model, [lookup], tool_errors="raise" if raise_errors else "tell")


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]  # a coroutine


# -- the same shape as in trio --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_stream_and_ainvoke_from_asyncio(mode: Mode) -> None:
    ends = Ends()

    async def main() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with open_asyncio_runtime(mode=mode, callbacks=[ends]) as rt:
            assert rt.mode == mode
            async with rt.astream_events(agent(), "q") as events:
                found["events"] = [e async for e in events]
            found["output"] = events.output
            async with rt.astream(agent(), "q") as steps:
                found["steps"] = [s async for s in steps]
            async with rt.astream_log(agent(), "q") as log:
                found["log"] = [p async for p in log]
            found["invoked"] = await rt.ainvoke(agent(), "q")
        return found

    found = run(main)
    check_events(found["events"])  # promises 1-4, read from asyncio
    assert found["events"][0].event == "on_chain_start"
    assert isinstance(found["output"], AgentOutput)
    assert found["steps"] and all(
        isinstance(s, ActionsChunk | StepsChunk | FinishChunk) for s in found["steps"]
    )
    assert all(isinstance(p, RunLogPatch) for p in found["log"])
    state = sum(found["log"][1:], found["log"][0]).state
    assert state["final_output"]["output"] == found["output"].output
    assert found["invoked"].output == found["output"].output == " ".join(["word"] * 20)
    assert set(ends.terminal_counts().values()) == {1}  # every run ended exactly once


def test_the_events_equal_those_read_in_trio() -> None:
    async def in_trio() -> list[tuple[str, str]]:
        async with open_runtime(), agent().astream_events("q") as events:
            return [(e.event, e.name) async for e in events]

    async def in_asyncio() -> list[tuple[str, str]]:
        async with open_asyncio_runtime() as rt, rt.astream_events(agent(), "q") as events:
            return [(e.event, e.name) async for e in events]

    assert run(in_asyncio) == trio.run(in_trio)


def test_wrong_event_loop_error_names_the_asyncio_way() -> None:
    async def main() -> None:
        await agent().ainvoke("q")

    with pytest.raises(WrongEventLoopError, match="open_asyncio_runtime") as caught:
        run(main)
    assert "rt.astream_events(performer, input)" in str(caught.value)


async def test_open_asyncio_runtime_refuses_trio() -> None:
    with pytest.raises(RuntimeError, match=r"under trio, use runtime\.open_runtime"):
        async with open_asyncio_runtime():
            pass  # pragma: no cover


# -- cancellation, both ways ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_leaving_the_block_cancels_the_run(mode: Mode) -> None:
    ends = Ends()

    async def main() -> None:
        async with (
            open_asyncio_runtime(mode=mode, callbacks=[ends]) as rt,
            rt.astream_events(agent(tokens=5000), "q") as events,
        ):
            async for event in events:
                if event.event == "on_chat_model_stream":
                    break

    run(main)
    statuses = {e.name: e.status for e in ends.events if e.is_terminal}
    assert statuses["Agent"] == "cancelled"


@pytest.mark.parametrize("mode", MODES)
def test_a_cancelled_asyncio_task_cancels_the_run(mode: Mode) -> None:
    ends = Ends()

    async def main() -> None:
        async with open_asyncio_runtime(mode=mode, callbacks=[ends]) as rt:
            started = asyncio.Event()

            async def read() -> None:
                async with rt.astream_events(agent(tokens=100_000), "q") as events:
                    async for _ in events:
                        started.set()

            async def call() -> None:
                await rt.ainvoke(agent("slow place", tokens=100_000), "q")

            tasks = [asyncio.create_task(read()), asyncio.create_task(call())]
            await started.wait()
            # both runs started (on a loaded machine 50 ms was not always enough for
            # the second: cancelled before it started, it had no terminal event)
            while sum(e.phase == "start" and e.name == "Agent" for e in ends.events) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(main)
    roots = [e for e in ends.events if e.is_terminal and e.name == "Agent"]
    assert [e.status for e in roots] == ["cancelled", "cancelled"]


@pytest.mark.parametrize("mode", MODES)
def test_a_runs_error_raises_in_the_asyncio_task(mode: Mode) -> None:
    async def main() -> None:
        async with open_asyncio_runtime(mode=mode) as rt:
            with pytest.raises(RuntimeError, match="boom in the tool"):
                async with rt.astream_events(agent("boom", raise_errors=True), "q") as events:
                    async for _ in events:
                        pass
            with pytest.raises(RuntimeError, match="boom in the tool"):
                await rt.ainvoke(agent("boom", raise_errors=True), "q")
            told = await rt.ainvoke(agent("boom"), "q")  # told to the model instead
            assert "boom in the tool" in told.messages[2].content

    run(main)


@pytest.mark.parametrize("mode", MODES)
def test_closing_the_runtime_ends_live_runs_in_their_readers(mode: Mode) -> None:
    ends = Ends()
    raised: list[BaseException] = []

    async def main() -> None:
        started = asyncio.Event()

        async def read(rt: AsyncioRuntime) -> None:
            try:
                async with rt.astream_events(agent(tokens=100_000), "q") as events:
                    async for _ in events:
                        started.set()
            except RunCancelledError as exc:
                raised.append(exc)

        async with open_asyncio_runtime(mode=mode, callbacks=[ends]) as rt:
            reader = asyncio.create_task(read(rt))
            await started.wait()
        await reader  # the runtime closed under it: its run was cancelled

    run(main)
    assert len(raised) == 1
    assert [e.status for e in ends.events if e.is_terminal and e.name == "Agent"] == ["cancelled"]


def test_closing_the_loop_with_runs_live_ends_every_run_once() -> None:
    """``asyncio.run``'s main returns while tasks still read: asyncio cancels them, the
    runtime closes; nothing hangs and every run ends exactly once."""
    ends = Ends()

    tasks: set[asyncio.Task[None]] = set()  # held, as asyncio asks

    async def main() -> None:
        async with open_asyncio_runtime(callbacks=[ends]) as rt:
            for i in range(4):
                stream = rt.astream_events(agent(tokens=100_000), "q")

                async def read(stream: Any = stream) -> None:
                    with contextlib.suppress(RunCancelledError):  # the runtime closes
                        async with stream as events:
                            async for _ in events:
                                pass

                async def call() -> None:
                    with contextlib.suppress(RunCancelledError):
                        await rt.ainvoke(agent(tokens=50_000), "q")

                loop = asyncio.get_running_loop()
                tasks.add(loop.create_task(read()))
                if i % 2:
                    tasks.add(loop.create_task(call()))
            await asyncio.sleep(0.05)  # main returns with the tasks still reading

    run(main)
    counts = ends.terminal_counts()
    assert ends.started() == set(counts) and set(counts.values()) == {1}


# -- backpressure ---------------------------------------------------------------------


def test_a_stalled_asyncio_reader_holds_its_window_and_never_another_run() -> None:
    async def main() -> None:
        async with open_asyncio_runtime(window=8) as rt:
            stalled = rt.astream_events(agent(tokens=5000), "q")
            async with stalled as events:
                await anext(events)  # then it reads no more
                await asyncio.sleep(0.1)
                pump_window = stalled._in_flight  # handed over, not taken
                assert pump_window <= 8
                # the stalled run has not finished: it is held back, not buffered
                assert rt.runtime.open_runs >= 1
                other = await asyncio.wait_for(rt.ainvoke(agent(tokens=2000), "q"), 10)
                assert other.output.startswith("word")

    run(main)
    assert DEFAULT_WINDOW >= 8


# -- generated: cancelling from either side at random points ----------------------------


@st.composite
def plans(draw: st.DrawFn) -> list[tuple[str, str, int | None, bool]]:
    """Runs: (how it is read, who cancels, after how many items, whether its tool fails)."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["events", "steps", "log", "invoke"]),
                st.sampled_from(["nobody", "asyncio", "trio", "leave"]),
                st.one_of(st.none(), st.integers(0, 60)),
                st.booleans(),
            ),
            min_size=1,
            max_size=4,
        )
    )


@given(plans(), st.sampled_from(MODES), st.booleans())
def test_generated_cancellation_from_either_side(
    plan: list[tuple[str, str, int | None, bool]], mode: Mode, close_early: bool
) -> None:
    ends = Ends()
    outcomes: list[str] = []

    async def one(rt: AsyncioRuntime, how: str, who: str, at: int | None, fails: bool) -> None:
        performer = agent("boom" if fails else "slow shelf", tokens=80, raise_errors=fails)
        seen = 0
        try:
            if how == "invoke":
                task = asyncio.ensure_future(rt.ainvoke(performer, "q"))
                if who == "asyncio":
                    await asyncio.sleep(0.001 * (at or 0))
                    task.cancel()
                await task
            else:
                opened = {"events": rt.astream_events, "steps": rt.astream, "log": rt.astream_log}
                async with opened[how](performer, "q") as stream:
                    async for _ in stream:
                        seen += 1
                        if at is not None and seen >= at:
                            if who == "trio":
                                stream.cancel()  # on trio's side: the run is told to stop
                            elif who == "asyncio":
                                current = asyncio.current_task()
                                assert current is not None
                                current.cancel()
                                await asyncio.sleep(0)
                            elif who == "leave":
                                break
            outcomes.append("ok")
        except asyncio.CancelledError:
            outcomes.append("cancelled")
        except (RunCancelledError, RuntimeError) as exc:
            outcomes.append(type(exc).__name__)

    async def main() -> None:
        async with open_asyncio_runtime(mode=mode, callbacks=[ends]) as rt:
            with hang_watchdog(60, "generated asyncio case", token=rt.trio_token):
                tasks = [asyncio.create_task(one(rt, *step)) for step in plan]
                if close_early:
                    await asyncio.sleep(0.002)
                else:
                    await asyncio.gather(*tasks)
        await asyncio.gather(*tasks)  # those the closing runtime cut short end too

    asyncio.run(main())
    assert len(outcomes) == len(plan)
    counts = ends.terminal_counts()
    assert ends.started() == set(counts)  # every run that started ended ...
    assert set(counts.values()) <= {1}  # ... exactly once
    if ends.events:  # none, if the runtime closed before any run started
        check_events(ends.events)
