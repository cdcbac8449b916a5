"""Runs isolated from each other, and teardown that always finishes.

Each case here is a hostile user's repro (issue 11), run under a hang watchdog: a hang
prints trio's task tree and fails the process, where ``fail_after`` would have waited
forever behind a shielded wait.
"""

from __future__ import annotations

import gc
import random
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from actors import (
    Agent,
    AsyncCallbackHandler,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tool,
)
from actors.testing import check_events, run_watched
from protocol import StreamEvent
from runtime import (
    RunCancelledError,
    RuntimeClosedError,
    open_runtime,
)

from .tasks import live_task_names


@tool
async def where_cat_is_hiding() -> str:
    """Where is the cat hiding?"""
    return "under the bed"


NESTED_MODEL = ScriptedChatModel([ScriptedTurn("socks and dust")], name="Inner")


@tool
async def ask_inner(place: str) -> str:
    """Asks a model of its own."""
    reply = await NESTED_MODEL.ainvoke(f"what is {place}?")
    return str(reply.content)


SHARED_MODEL = ScriptedChatModel(
    [
        ScriptedTurn(tool_calls=[ScriptedCall("where_cat_is_hiding")]),
        ScriptedTurn(tool_calls=[ScriptedCall("ask_inner", {"place": "bed"})]),
        ScriptedTurn("The cat is under the bed, with socks."),
    ]
)


def cat_agent(**kw: Any) -> Agent:
    return Agent(SHARED_MODEL, [where_cat_is_hiding, ask_inner], **kw)


def long_talker(tokens: int = 5000) -> Agent:
    return Agent(ScriptedChatModel([ScriptedTurn("word " * tokens)]), name="Talker")


class Recorder(AsyncCallbackHandler):
    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[StreamEvent] = []
        self.delay = delay

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)
        if self.delay:
            await trio.sleep(self.delay)

    def unended(self) -> set[str]:
        started = {e.run_id for e in self.events if e.phase == "start"}
        return started - {e.run_id for e in self.events if e.is_terminal}


# -- teardown ---------------------------------------------------------------------------


def test_a_request_after_its_runtime_was_cancelled_returns() -> None:
    async def main() -> None:
        agent = cat_agent()
        with trio.move_on_after(30) as outer, trio.CancelScope() as cs:
            async with open_runtime():
                await agent.ainvoke("warm")  # the actors exist now
                cs.cancel()
                await agent.ainvoke("q")  # refused or cancelled, never hung
        assert not outer.cancelled_caught

    run_watched(main, seconds=20, label="request after cancel")


def test_a_closed_runtime_refuses_at_once() -> None:
    async def main() -> None:
        agent = cat_agent()
        async with open_runtime() as rt:
            await agent.ainvoke("warm")
        assert rt.closed
        with pytest.raises(RuntimeClosedError):
            await rt.request(agent, agent.coerce_input("q"))
        with pytest.raises(RunCancelledError):  # the same error, as a cancelled run
            await rt.request(agent, agent.coerce_input("q"))

    run_watched(main, seconds=20, label="closed runtime")


def test_random_deadlines_around_one_shot_streams() -> None:
    rng = random.Random(7)

    async def main() -> None:
        agent = cat_agent()
        for _ in range(300):
            with trio.move_on_after(rng.random() * 0.002):
                async with agent.astream_events("q") as events:
                    async for _ in events:
                        pass

    run_watched(main, seconds=60, label="deadlines around one-shot streams")


def test_a_deadline_around_open_runtime_with_runs_in_flight() -> None:
    rng = random.Random(11)

    async def main() -> None:
        for _ in range(30):
            recorder = Recorder()
            with trio.move_on_after(rng.random() * 0.01):
                async with open_runtime(callbacks=[recorder]), trio.open_nursery() as nursery:
                    for _ in range(20):
                        nursery.start_soon(cat_agent().ainvoke, "q")
            assert not recorder.unended()  # every started run ended, for the handler too

    run_watched(main, seconds=60, label="deadline around open_runtime")


def test_runs_started_from_outside_while_the_runtime_closes() -> None:
    async def main() -> None:
        outcomes: list[str] = []
        first_done = trio.Event()

        async def start_runs(rt: Any) -> None:
            for _ in range(50):
                try:
                    agent = cat_agent()
                    await rt.request(agent, agent.coerce_input("q"))
                    outcomes.append("ok")
                    first_done.set()
                except RunCancelledError:
                    outcomes.append("refused")
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as outer, open_runtime() as rt:
            for _ in range(5):
                outer.start_soon(start_runs, rt)
            # Close once runs are going (not after a fixed time, which a fast machine
            # could spend finishing all 250): the rest are refused.
            await first_done.wait()
        assert len(outcomes) == 250 and "refused" in outcomes

    run_watched(main, seconds=30, label="runs started while closing")


class RaisesKeyboardInterrupt(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.raised: list[KeyboardInterrupt] = []

    async def on_event(self, event: StreamEvent) -> None:
        if event.name == "Inner" and event.phase == "start":
            self.raised.append(KeyboardInterrupt())
            raise self.raised[-1]


def test_a_handler_raising_keyboard_interrupt_while_a_tool_calls_a_model() -> None:
    # Ctrl-C striking a handler stops the program: the runtime's block is cancelled,
    # every run still ends once for the other subscribers, and the very
    # KeyboardInterrupt comes out of open_runtime().
    async def main() -> None:
        handler = RaisesKeyboardInterrupt()
        recorder = Recorder()
        with pytest.raises(KeyboardInterrupt) as caught:
            async with open_runtime(callbacks=[recorder]) as rt:
                async with cat_agent().astream_events("q", callbacks=[handler]) as events:
                    async for _ in events:
                        pass
                await trio.sleep_forever()  # cancelled by the stop
        assert caught.value is handler.raised[0] and not events.handler_errors
        assert rt.closed and rt.open_runs == 0 and rt.protocol_violations == 0
        check_events(recorder.events)
        await trio.testing.wait_all_tasks_blocked()
        assert not [n for n in live_task_names() if n.startswith("troupe")]

    run_watched(main, seconds=20, label="KeyboardInterrupt in a handler")


# -- isolation --------------------------------------------------------------------------


def test_a_stream_that_stops_reading_holds_back_only_its_own_run() -> None:
    async def main() -> None:
        async with open_runtime() as rt:
            async with long_talker().astream_events("q", capacity=64) as stalled:
                async for _ in stalled:
                    break  # read one event, then stop reading (and stay in the block)
                for _ in range(20):  # other runs go on, start to end, meanwhile
                    output = await cat_agent().ainvoke("q")
                    assert output["output"].startswith("The cat")
                await trio.testing.wait_all_tasks_blocked()
                # Bounded: what the stalled stream holds is about its capacity.
                assert stalled._rx is not None and len(stalled._rx) <= 64 + 64 + 2
                assert rt.open_runs >= 1  # its run waits, not finished, not lost
            await trio.testing.wait_all_tasks_blocked()
            assert rt.open_runs == 0  # leaving the block ended it

    run_watched(main, seconds=30, label="stalled consumer")


class Blocked(AsyncCallbackHandler):
    """Stops at its first event until released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.seen = 0

    async def on_event(self, event: StreamEvent) -> None:
        self.seen += 1
        await self.release.wait()


def test_a_stuck_handler_of_one_run_does_not_slow_another() -> None:
    async def main() -> None:
        stuck = Blocked()
        async with open_runtime() as rt, long_talker().astream_events("q", callbacks=[stuck]):
            for _ in range(20):
                await cat_agent().ainvoke("q")
            assert stuck.seen == 1 and rt.open_runs >= 1  # its own run waits for it
            stuck.release.set()

    run_watched(main, seconds=30, label="slow handler of one run")


def test_a_one_shot_stream_with_slow_callbacks_cancelled_while_it_waits() -> None:
    async def main() -> None:
        for _ in range(20):
            handler = Recorder(delay=0.01)
            with trio.move_on_after(0.02):
                async with cat_agent().astream_events("q", callbacks=[handler]) as events:
                    async for _ in events:
                        break
            gc.collect()  # a corrupted nursery stack would surface here

    # A hang watchdog, not a timing: 20 rounds of a bounded close and a full collection,
    # each ~0.2 s alone and a few seconds in a large process on a starved machine.
    run_watched(main, seconds=180, label="one-shot stream with slow callbacks")


def test_callbacks_of_a_cancelled_one_shot_stream_see_every_terminal_event() -> None:
    async def main() -> None:
        for delay in (0.0005, 0.001, 0.002, 0.004):
            handler = Recorder()
            with trio.move_on_after(delay):
                async with cat_agent().astream_events("q", callbacks=[handler]) as events:
                    async for _ in events:
                        pass
            assert not handler.unended()

    run_watched(main, seconds=30, label="callbacks of a cancelled one-shot stream")


def test_closing_is_bounded_when_a_subscribed_handler_is_stuck() -> None:
    class Stuck(AsyncCallbackHandler):
        async def on_event(self, event: StreamEvent) -> None:
            await trio.sleep_forever()

    async def main() -> None:
        async with open_runtime(close_grace=0.2) as rt:
            attachment = await rt.subscribe(Stuck(), drop_oldest=True)
            await cat_agent().ainvoke("q")
        assert [type(e.error) for e in attachment.errors] == [trio.TooSlowError]

    run_watched(main, seconds=20, label="stuck subscribed handler")


def test_a_run_id_in_use_is_refused() -> None:
    async def main() -> None:
        async with open_runtime():
            async with long_talker().astream_events("q", run_id="mine") as first:
                async for _ in first:
                    break
                with pytest.raises(ValueError, match="run_id 'mine' is already in use"):
                    async with cat_agent().astream_events("q", run_id="mine"):
                        pass
                with pytest.raises(ValueError, match="already in use"):
                    await cat_agent().ainvoke("q", run_id="mine")
            output = await cat_agent().ainvoke("q", run_id="mine")  # free again
            assert output["output"]

    run_watched(main, seconds=20, label="reused run id")


def test_streams_cancelled_before_their_run_started_leave_nothing_behind() -> None:
    async def main() -> None:
        rng = random.Random(3)
        async with open_runtime() as rt:
            for _ in range(5):
                for _ in range(400):
                    with trio.move_on_after(rng.random() * 0.0005):
                        async with cat_agent().astream_events("q", callbacks=[Recorder()]) as s:
                            async for _ in s:
                                pass
                await trio.testing.wait_all_tasks_blocked()
                assert rt._tracer._pending == {}
                assert rt.open_runs == 0

    run_watched(main, seconds=60, label="streams cancelled before their run started")


def test_a_fresh_agent_per_run_leaves_no_actor_behind() -> None:
    async def main() -> None:
        async with open_runtime() as rt:
            for index in range(300):
                await cat_agent(system_prompt=f"user {index}").ainvoke("q")
            gc.collect()
            await trio.testing.wait_all_tasks_blocked()
            # The shared model, the two tools and the nested model stay; no agent does.
            assert rt.actors <= 4

    run_watched(main, seconds=30, label="fresh agent per run")
