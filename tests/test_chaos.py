"""Generated teardown, isolation and churn cases, each under a hang watchdog.

``test_faults.py`` generates faults inside one run. This generates what a hostile
user does around runs: several runs at once in one runtime, some of whose consumers
read everything, leave at the k-th event, or stall (stop reading until every other run
is over); tools and models that raise odd things (a failing ``__str__``,
``StopAsyncIteration``, a hand-raised ``Cancelled``, a ``BaseException``); handlers
that crawl, raise or never return; a fresh ``Agent`` per run or a reused ``run_id``;
and a runtime torn down under it all (cancelled at a random moment, closed while runs
are still being started from outside, or a deadline around one-shot streams).

For every case: it finishes (a hang prints trio's task tree and fails the process);
every run a runtime-wide recorder saw start ended exactly once, in tree order
(promises 1-4); no task of the runtime outlives it; the tracer is left with no
bookkeeping; a stalled consumer never held back another run. Set
``TROUPE_CHAOS_REPORT=path.json`` for the tally the README quotes.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from typing import Any

import trio
import trio.testing
from attrs import frozen
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
from actors.testing import check_events, run_watched
from protocol import StreamEvent
from runtime import Runtime, new_run_id, open_runtime

from .oddities import BadStr, raise_a_caught_cancelled
from .tasks import live_task_names

TALLY: Counter[str] = Counter()


@tool
async def calm(text: str) -> str:
    """Answers."""
    return text


@tool
async def odd(kind: str) -> str:
    """Raises something odd, by kind."""
    if kind == "str":
        raise BadStr()
    if kind == "stop":
        raise StopAsyncIteration
    if kind == "base":
        raise GeneratorExit
    if kind == "cancel":
        await raise_a_caught_cancelled()
    await trio.sleep(0.001)
    return kind


TOOLS = [calm, odd]
SHARED_ID = new_run_id()  # one id that several runs of a case ask for
ODD_KINDS = ["str", "stop", "base", "cancel", "slow"]
MODELS = {
    delay: ScriptedChatModel(
        [
            ScriptedTurn("thinking", [ScriptedCall("calm", {"text": "a b"})]),
            ScriptedTurn("the answer is " + "word " * 30),
        ],
        token_delay=delay,
    )
    for delay in (0.0, 0.0003)
}


@frozen
class RunPlan:
    consumer: str  # reads | leaves | stalls | invoke
    leave_at: int
    odd: str | None
    fresh_agent: bool
    token_delay: float
    run_id: str | None


@frozen
class Case:
    runs: tuple[RunPlan, ...]
    teardown: str  # exit | cancel | outside | one_shot
    cancel_after: float
    handler: str  # none | slow | raises | stuck
    capacity: int
    pacing: float | None  # the subscribers' wake_interval


@st.composite
def cases(draw: st.DrawFn) -> Case:
    runs = tuple(
        RunPlan(
            consumer=draw(st.sampled_from(["reads", "reads", "leaves", "stalls", "invoke"])),
            leave_at=draw(st.integers(1, 30)),
            odd=draw(st.sampled_from([None, None, *ODD_KINDS])),
            fresh_agent=draw(st.booleans()),
            token_delay=draw(st.sampled_from([0.0, 0.0003])),
            run_id=draw(st.sampled_from([None, None, None, SHARED_ID])),
        )
        for _ in range(draw(st.integers(1, 6)))
    )
    return Case(
        runs=runs,
        teardown=draw(st.sampled_from(["exit", "exit", "cancel", "outside", "one_shot"])),
        cancel_after=draw(st.sampled_from([0.0, 0.0005, 0.002, 0.01])),
        handler=draw(st.sampled_from(["none", "slow", "raises", "stuck"])),
        capacity=draw(st.sampled_from([2, 16, 1024])),
        pacing=draw(st.sampled_from([None, None, 0.0005, 0.01, 3600.0])),
    )


class Recorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.events: list[StreamEvent] = []

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)


class Handler(AsyncCallbackHandler):
    def __init__(self, how: str) -> None:
        self.how = how

    async def on_event(self, event: StreamEvent) -> None:
        if self.how == "slow":
            await trio.sleep(0.0002)
        elif self.how == "raises" and event.phase == "start":
            raise BadStr()
        elif self.how == "stuck" and event.is_terminal:
            await trio.sleep_forever()


def _agent(plan: RunPlan, shared: dict[float, Agent]) -> Agent:
    if plan.fresh_agent or plan.odd is not None:
        model = MODELS[plan.token_delay]
        if plan.odd is not None:
            model = ScriptedChatModel(
                [
                    ScriptedTurn(tool_calls=[ScriptedCall("odd", {"kind": plan.odd})]),
                    ScriptedTurn("done " * 20),
                ],
                token_delay=plan.token_delay,
            )
        return Agent(model, TOOLS, system_prompt="fresh")
    return shared[plan.token_delay]


def _tally(case: Case) -> None:
    TALLY["cases"] += 1
    TALLY[f"teardown: {case.teardown}"] += 1
    TALLY[f"handler: {case.handler}"] += 1
    TALLY[f"pacing: {case.pacing}"] += 1
    TALLY["runs"] += len(case.runs)
    for plan in case.runs:
        TALLY[f"consumer: {plan.consumer}"] += 1
        if plan.odd is not None:
            TALLY[f"odd: {plan.odd}"] += 1
        TALLY["fresh agents"] += plan.fresh_agent
        TALLY["reused run ids"] += plan.run_id is not None


async def _consume(
    plan: RunPlan, agent: Agent, capacity: int, others_done: trio.Event, refused: list[str]
) -> None:
    kw: dict[str, Any] = {"capacity": capacity}
    if plan.run_id is not None:
        kw["run_id"] = plan.run_id
    try:
        if plan.consumer == "invoke":
            kw.pop("capacity")
            await agent.ainvoke("q", **kw)
            return
        async with agent.astream_events("q", **kw) as events:
            seen = 0
            async for _ in events:
                seen += 1
                if plan.consumer == "leaves" and seen >= plan.leave_at:
                    break
                if plan.consumer == "stalls" and seen == plan.leave_at:
                    await others_done.wait()  # stop reading until every other run is over
                    break
    except ValueError as exc:
        if "already in use" not in str(exc):
            raise
        refused.append("run_id")
    except (Exception, GeneratorExit):
        pass  # the run's own error: a BaseException from a tool ends its run, raised here


async def _run_case(case: Case) -> dict[str, Any]:
    recorder = Recorder()
    handler = Handler(case.handler)
    if case.pacing is not None:  # a long one is ended by the runtime's closing
        recorder.wake_interval = handler.wake_interval = case.pacing  # type: ignore[attr-defined]
    shared = {delay: Agent(model, TOOLS) for delay, model in MODELS.items()}
    others_done = trio.Event()
    refused: list[str] = []
    found: dict[str, Any] = {}

    async def run_all(nursery: trio.Nursery) -> None:
        async with trio.open_nursery() as normal:
            for plan in case.runs:
                target = nursery if plan.consumer == "stalls" else normal
                target.start_soon(
                    _consume, plan, _agent(plan, shared), case.capacity, others_done, refused
                )
        others_done.set()  # only stalled consumers remain; they leave now

    if case.teardown == "one_shot":
        with trio.move_on_after(case.cancel_after * 10):
            async with trio.open_nursery() as nursery:
                await run_all(nursery)
        found["runtime"] = None
        return found

    rt: Runtime | None = None
    with trio.CancelScope() as outer:
        async with open_runtime(callbacks=[recorder], close_grace=0.05) as rt:
            await rt.subscribe(handler, drop_oldest=True)
            if case.teardown == "cancel":
                outer.deadline = trio.current_time() + case.cancel_after
            async with trio.open_nursery() as nursery:
                if case.teardown == "outside":
                    nursery.start_soon(run_all, nursery)
                    await trio.sleep(case.cancel_after)
                    nursery.cancel_scope.cancel()
                else:
                    await run_all(nursery)
    assert rt is not None
    found.update(
        runtime=rt,
        events=recorder.events,
        violations=rt.protocol_violations,
        pending=len(rt._tracer._pending),
        open_runs=rt.open_runs,
        actors=rt.actors,
        refused=refused,
        cancelled=outer.cancelled_caught,
    )
    await trio.testing.wait_all_tasks_blocked()
    found["left"] = [n for n in live_task_names() if n.startswith("troupe")]
    return found


@given(cases())
def test_teardown_isolation_and_churn_keep_every_promise(case: Case) -> None:
    _tally(case)
    try:
        found = run_watched(lambda: _run_case(case), seconds=60, label=repr(case))
        assert not found.get("left"), found.get("left")  # no task outlives its runtime
        if found["runtime"] is None:
            return
        assert found["violations"] == 0 and found["pending"] == 0
        assert found["open_runs"] == 0 and found["actors"] == 0
        by_root: dict[str, list[StreamEvent]] = defaultdict(list)
        for event in found["events"]:
            by_root[event.parent_ids[0] if event.parent_ids else event.run_id].append(event)
        for events in by_root.values():
            check_events(events)  # one start, exactly one terminal, in tree order
        reused = sum(plan.run_id is not None for plan in case.runs)
        if reused > 1 and case.teardown == "exit":
            TALLY["reused ids refused"] += len(found["refused"])
    except AssertionError:
        TALLY["invariant violations"] += 1
        raise
    finally:
        report = os.environ.get("TROUPE_CHAOS_REPORT")
        if report:
            with open(report, "w", encoding="utf-8") as out:
                json.dump(dict(TALLY), out, indent=2)
