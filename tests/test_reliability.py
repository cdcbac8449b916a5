"""Faults, limits and backpressure: every failure ends clearly, nothing grows."""

from __future__ import annotations

import gc
import tracemalloc
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, ClassVar

import attrs
import pytest
import trio
import trio.testing

from actors import (
    Agent,
    AsyncCallbackHandler,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    ToolTimeoutError,
    tool,
)
from actors.testing import check_events
from protocol import EventData, RunInfo, StreamEvent, ToolMessage
from runtime import (
    ActorCrash,
    ActorFailedError,
    Run,
    RunCancelledError,
    RunTimeoutError,
    open_runtime,
)
from runtime._dropping import DroppingChannel
from runtime._event_channel import ChunkEvents

from .performers import Step
from .tasks import serving_tasks


@tool
async def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"exploded: {reason}")


@tool(on_error="tell")
async def explode_politely(reason: str) -> str:
    """Fails, but its failures are always told to the model."""
    raise RuntimeError(f"politely: {reason}")


@tool(timeout=0.05)
async def slow() -> str:
    """Takes too long."""
    await trio.sleep(10)
    return "never"


@tool(max_output_chars=50)
async def chatty() -> str:
    """Says too much."""
    return "x" * 200


@tool
async def unserializable() -> object:
    """Returns what JSON cannot hold."""
    return {1, 2, 3}


def calling(*calls: ScriptedCall) -> ScriptedChatModel:
    return ScriptedChatModel([ScriptedTurn(tool_calls=list(calls)), ScriptedTurn("done")])


async def collect(agent: Agent, **kw: object) -> tuple[list[StreamEvent], BaseException | None]:
    received: list[StreamEvent] = []
    try:
        async with agent.astream_events("q", **kw) as events:  # type: ignore[arg-type]  # test helper
            async for event in events:
                received.append(event)  # noqa: PERF401  # keep what came before a raise
    except Exception as exc:
        return received, exc
    return received, None


async def test_a_raise_policy_fails_the_run_with_the_tools_own_exception() -> None:
    model = calling(ScriptedCall("explode", {"reason": "a"}), ScriptedCall("slow"))
    received, error = await collect(Agent(model, [explode, slow], tool_errors="raise"))
    assert isinstance(error, RuntimeError) and str(error) == "exploded: a"
    check_events(received)
    terminals = {(e.name, e.status) for e in received if e.is_terminal}
    assert ("explode", "error") in terminals and ("Agent", "error") in terminals
    assert ("slow", "cancelled") in terminals  # the sibling call was stopped
    assert serving_tasks() == 0


async def test_a_tools_own_policy_wins() -> None:
    model = calling(ScriptedCall("explode_politely", {"reason": "b"}))
    output = await Agent(model, [explode_politely], tool_errors="raise").ainvoke("q")
    assert output["output"] == "done"
    fatal = tool(on_error="raise")(explode.fn)
    with pytest.raises(RuntimeError, match="exploded: c"):
        await Agent(calling(ScriptedCall("explode", {"reason": "c"})), [fatal]).ainvoke("q")


async def test_limits_and_bad_output_are_told_to_the_model() -> None:
    model = calling(ScriptedCall("slow"), ScriptedCall("chatty"), ScriptedCall("unserializable"))
    received, error = await collect(Agent(model, [slow, chatty, unserializable]))
    assert error is None
    second_turn = [e for e in received if e.event == "on_chat_model_start"][1]
    told = [m for m in second_turn.data.input["messages"] if isinstance(m, ToolMessage)]
    assert [m.is_error for m in told] == [True, True, True]
    assert "ToolTimeoutError: tool 'slow' did not finish within 0.05 s" in told[0].content
    assert "returned 200 characters, over its limit of 50" in told[1].content
    assert "returned a set, which cannot be given to the model" in told[2].content


async def test_a_tool_timeout_with_a_raise_policy() -> None:
    with pytest.raises(ToolTimeoutError, match=r"within 0\.05 s"):
        await Agent(calling(ScriptedCall("slow")), [slow], tool_errors="raise").ainvoke("q")


async def test_a_run_timeout_ends_the_whole_tree(autojump_clock: trio.testing.MockClock) -> None:
    # On trio's virtual clock: the timeout strikes while the model streams however busy
    # the machine is (on the wall clock, a starved run could time out before its model
    # began).
    slow_model = ScriptedChatModel([ScriptedTurn("a b c d e f g h")], token_delay=0.05)
    async with open_runtime() as rt, rt.watch() as watched:
        _, error = await collect(Agent(slow_model), timeout=0.12)
        assert isinstance(error, RunTimeoutError)
        assert "run 'Agent' did not finish within 0.12 s" in str(error)
        seen = []
        async for event in watched:
            seen.append(event)
            if event.name == "Agent" and event.is_terminal:
                break
        assert serving_tasks() == 0
    check_events(seen)
    assert [(e.name, e.status) for e in seen if e.is_terminal] == [
        ("ScriptedChatModel", "cancelled"),
        ("Agent", "error"),
    ]
    assert (seen[-1].data.error or "").startswith("RunTimeoutError: run 'Agent' did not finish")


async def test_memory_stays_flat_while_a_consumer_stalls() -> None:
    endless = ScriptedChatModel([ScriptedTurn(tokens=("tok ",) * 200_000)])
    async with open_runtime() as rt, Agent(endless).astream_events("q") as events:
        await events.__anext__()  # then stop reading
        # The run fills every bounded buffer and stalls: every task waits (how long that
        # takes depends on the machine, so no fixed delay).
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        tracemalloc.start()
        try:
            first, _ = tracemalloc.get_traced_memory()
            await trio.sleep(0.5)
            gc.collect()
            second, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert second - first < 64 * 1024, f"grew {second - first} bytes while stalled"
        assert rt.open_runs == 2  # the agent and its model, waiting
    assert serving_tasks() == 0


@tool
async def _lookup(place: str) -> str:
    """Look a place up."""
    return f"books on the {place}"


async def test_a_read_run_leaves_nothing_for_the_cyclic_collector() -> None:
    # Every object a run makes is freed by its last reference going, none only by the
    # cyclic collector, which with thousands of runs open walks every open run's
    # objects (issue 29). A stream's channel used to tie itself to itself (its kept
    # abort callback, a bound method) and took its queue and gate with it.
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("_lookup", {"place": "shelf"})]),
            ScriptedTurn("the cat is on the shelf, near the books"),
        ]
    )
    agent = Agent(model, [_lookup])

    async def read_once() -> int:
        read = 0
        async with agent.astream_events("where?") as events:
            async for event in events:
                if event["event"] == "on_chat_model_stream":
                    read += 1 if event["data"]["chunk"].content else 0
        return read

    async with open_runtime():
        assert await read_once() > 0  # warm-up: actors started
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                await read_once()
            gc.collect()
            left = sorted({type(o).__qualname__ for o in gc.garbage})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == []


def test_bad_reliability_settings() -> None:
    model = ScriptedChatModel([])
    with pytest.raises(ValueError, match="tool_errors must be"):
        Agent(model, tool_errors="ignore")  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        tool(timeout=0)(explode.fn)
    with pytest.raises(ValueError, match="on_error must be"):
        tool(on_error="skip")(explode.fn)  # type: ignore[call-overload]  # wrong on purpose
    with pytest.raises(ValueError, match="max_output_chars"):
        tool(max_output_chars=0)(explode.fn)
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        Agent(model).astream_events("q", timeout=-1)


class Crashy(Step):
    """A performer whose actor crashes on "crash"; counts how often it was opened."""

    opened: ClassVar[list[int]] = []

    def open_actor(self) -> AbstractAsyncContextManager[Any]:
        Crashy.opened.append(1)
        return nullcontext(len(Crashy.opened))

    async def perform(self, message: str, run: Run) -> str:
        if message == "crash":
            raise ActorCrash("lost my connection")
        if message == "wait":
            await trio.sleep_forever()
        return f"{message} (actor #{run.actor_state})"


async def test_a_crashed_actor_restarts_then_fails_past_its_limit() -> None:
    Crashy.opened.clear()
    crashy = Crashy(name="crashy")
    async with open_runtime():
        assert await crashy.ainvoke("a") == "a (actor #1)"
        with pytest.raises(ActorCrash, match="lost my connection"):
            await crashy.ainvoke("crash")
        assert await crashy.ainvoke("b") == "b (actor #2)"  # restarted, reopened
        cancelled: list[BaseException] = []

        async def waiting() -> None:
            try:
                await crashy.ainvoke("wait")
            except RunCancelledError as exc:
                cancelled.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorCrash):
                await crashy.ainvoke("crash")  # crash 2: the waiting request dies with it
        assert len(cancelled) == 1
        for _ in range(2):  # crashes 3 and 4: over the limit of 3 within 10 s
            with pytest.raises(ActorCrash):
                await crashy.ainvoke("crash")
        with pytest.raises(ActorFailedError, match=r"crashed 4 times within 10\.0 s"):
            await crashy.ainvoke("c")
    assert len(Crashy.opened) == 4


async def test_an_agent_run_fails_clearly_when_its_tool_is_gone() -> None:
    @tool
    async def fragile(text: str) -> str:
        """Loses its connection every time."""
        raise ActorCrash("connection reset")

    fragile_once = attrs.evolve(fragile, restart_limit=0)
    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("fragile", {"text": "x"})])] * 3
    )
    received, error = await collect(Agent(model, [fragile_once]))
    # The first crash is told to the model (policy "tell"); the second call finds the
    # actor failed for good, and the run ends with that error whatever the policy.
    assert isinstance(error, ActorFailedError), error
    assert "tool 'fragile' crashed 1 time within 10.0 s (restart limit 0)" in str(error)
    check_events(received)


def _event(seq: int, status: str | None = None) -> StreamEvent:
    return StreamEvent(
        "on_x_end" if status else "on_x_stream",
        RunInfo("r", "n", "x"),
        seq,
        EventData(),
        status,  # type: ignore[arg-type]  # test data
    )


async def test_a_dropping_channel_drops_the_oldest_and_never_a_terminal() -> None:
    channel = DroppingChannel(3)
    for seq in range(1, 4):
        channel.send_nowait(_event(seq))
    channel.send_nowait(_event(4, "ok"))  # full: the oldest (1) goes
    channel.send_nowait(_event(5))  # full: 2 goes
    assert [channel.receive_nowait().seq for _ in range(3)] == [3, 4, 5]
    for seq in (6, 7, 8):
        channel.send_nowait(_event(seq, "ok"))
    channel.send_nowait(_event(9))  # all waiting are terminal: the new one is dropped
    channel.send_nowait(_event(10, "error"))  # a terminal is kept even so
    assert channel.dropped == 3
    channel.close()
    assert [(await channel.receive()).seq for _ in range(4)] == [6, 7, 8, 10]
    with pytest.raises(trio.EndOfChannel):
        channel.receive_nowait()
    channel.close_receiver()
    with pytest.raises(trio.ClosedResourceError):
        channel.send_nowait(_event(11))
    other = DroppingChannel(1)
    other.close_receiver()
    with pytest.raises(trio.BrokenResourceError):
        other.send_nowait(_event(1))
    with pytest.raises(ValueError, match="capacity"):
        DroppingChannel(0)


async def test_a_dropping_channel_drops_from_runs_of_chunks_one_event_at_a_time() -> None:
    info = RunInfo("r", "n", "x")
    channel = DroppingChannel(4)
    assert channel.offer(ChunkEvents("on_x_stream", info, 1, (1, 2, 3))) == 3
    channel.send_nowait(_event(4, "ok"))
    assert channel.receive_nowait().seq == 1  # the run is read part way
    assert channel.offer(ChunkEvents("on_x_stream", info, 5, (5, 6, 7))) == 3  # 2 and 3 go
    assert channel.dropped == 2 and len(channel) == 4
    assert [channel.receive_nowait().seq for _ in range(4)] == [4, 5, 6, 7]
    assert channel.dropped == 2 and len(channel) == 0


async def test_an_observer_that_drops_never_slows_the_run() -> None:
    long_answer = ScriptedChatModel([ScriptedTurn(tokens=("t",) * 2_000)])
    async with open_runtime() as rt, rt.watch(drop_oldest=True, capacity=16) as watched:
        with trio.fail_after(5):  # nobody reads the watcher while the run goes on
            output = await Agent(long_answer).ainvoke("q")
        assert output["output"] == "t" * 2_000
        seen = []
        async for event in watched:
            seen.append(event)
            if event.name == "Agent" and event.is_terminal:
                break
    assert watched.dropped > 0 and len(seen) <= 16 + 2
    assert {(e.name, e.status) for e in seen if e.is_terminal} == {
        ("ScriptedChatModel", "ok"),
        ("Agent", "ok"),
    }


async def test_a_slow_handler_that_drops_sees_every_end(autojump_clock: trio.abc.Clock) -> None:
    ends: list[str] = []

    class Slow(AsyncCallbackHandler):
        async def on_event(self, event: StreamEvent) -> None:
            await trio.sleep(0.01)
            if event.is_terminal:
                ends.append(event.name)

    long_answer = ScriptedChatModel([ScriptedTurn(tokens=("t",) * 500)])
    async with open_runtime() as rt:
        attachment = await rt.subscribe(Slow(), drop_oldest=True, capacity=8)
        # 500 tokens x 10 ms would take 5 s without dropping. On the virtual clock the
        # handler's sleeps take no real time, and however busy the machine is, the run's
        # own work takes none of the clock's.
        with trio.fail_after(2):
            await Agent(long_answer).ainvoke("q")
    assert attachment.dropped > 0
    assert ends == ["ScriptedChatModel", "Agent"]


async def test_reports_waiting_on_a_full_tracer_are_not_lost_when_runs_are_cancelled() -> None:
    agent = Agent(ScriptedChatModel([ScriptedTurn("a b c")] * 4))
    seen: list[StreamEvent] = []
    async with open_runtime(tracer_capacity=1) as rt, rt.watch(capacity=1) as watched:
        # The watcher reads nothing at first: the tracer waits on it, its one-message
        # mailbox fills, and the runs' lifecycle reports wait for room.
        runs = trio.CancelScope()

        async def run_all() -> None:
            with runs:
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(agent.ainvoke, "q")

        async def read_until_every_run_ended() -> None:
            ended = 0  # a root's terminal event comes after its children's
            async for event in watched:
                seen.append(event)
                ended += event.is_terminal and not event.parent_ids
                if ended == 4:
                    return

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_all)
                await trio.testing.wait_all_tasks_blocked()
                waiting = serving_tasks()
                runs.cancel()
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(read_until_every_run_ended)
        assert serving_tasks() == 0
    assert waiting >= 4  # every run was open, waiting with a report to send
    roots = {e.run_id for e in seen if not e.parent_ids}
    assert len(roots) == 4
    for root in roots:  # each run's tree: a start, then exactly one terminal event
        tree = [e for e in seen if root in (e.run_id, *e.parent_ids)]
        check_events(tree)
        assert tree[-1].status == "cancelled"


async def test_a_dropping_channel_takes_a_bare_chunk_as_a_whole_event() -> None:
    channel = DroppingChannel(1)
    info = RunInfo("r", "run", "chain")
    assert channel.put_chunk_now("on_chain_stream", info, 1, "a")
    assert channel.put_chunk_now("on_chain_stream", info, 2, "b")  # drops the first
    assert channel.dropped == 1
    got = channel.receive_nowait()
    assert (got.event, got.run, got.seq, got.chunk) == ("on_chain_stream", info, 2, "b")
