"""Generated races around how a request reaches its actor, each under a hang watchdog.

While an actor takes requests, a requester starts its request's task in the actor's
nursery itself; the mailbox carries the rest (an actor just created, a limit to wait
on, a crash whose restart is under way). Requesters here, inside the runtime's block
and outside it, race the actor's crashes, its restarts, its failure past the restart
limit, and the runtime's close. For every case: every call finishes with what its
message asked for or a clear error; a request made after a crash was reported is never
served by the crashed actor; every run a runtime-wide recorder saw start ended exactly
once, in tree order; no request task outlives the runtime.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import trio
import trio.testing
from attrs import field, frozen
from hypothesis import given
from hypothesis import strategies as st

from actors import AsyncCallbackHandler
from actors.testing import check_events, run_watched
from protocol import StreamEvent
from runtime import (
    ActorCrash,
    ActorFailedError,
    Run,
    RunCancelledError,
    RuntimeClosedError,
    open_runtime,
)

from .performers import Step
from .tasks import live_task_names


@frozen(eq=False)
class Flaky(Step):
    """``ok`` answers with the number of the actor (how often it was opened) that served
    it; ``crash`` crashes that actor (noted in ``crashed``); ``wait`` waits to be
    cancelled."""

    restart_limit: int = 3
    opened: list[int] = field(factory=list)
    crashed: list[int] = field(factory=list)

    def open_actor(self) -> AbstractAsyncContextManager[Any]:
        self.opened.append(len(self.opened) + 1)
        return nullcontext(len(self.opened))

    async def perform(self, message: str, run: Run) -> str:
        await trio.lowlevel.checkpoint()
        if message == "crash":
            self.crashed.append(run.actor_state)
            raise ActorCrash(f"actor #{run.actor_state} lost its connection")
        if message == "wait":
            await trio.sleep_forever()
        return f"ok #{run.actor_state}"


@frozen
class Call:
    message: str  # ok | crash | wait
    delay: float
    outside: bool  # made from a task outside the runtime's block


@frozen
class Case:
    calls: tuple[Call, ...]
    restart_limit: int
    max_concurrency: int | None
    close_after: float


@st.composite
def cases(draw: st.DrawFn) -> Case:
    calls = tuple(
        Call(
            message=draw(st.sampled_from(["ok", "ok", "ok", "crash", "wait"])),
            delay=draw(st.sampled_from([0.0, 0.0, 0.0002, 0.001])),
            outside=draw(st.booleans()),
        )
        for _ in range(draw(st.integers(1, 12)))
    )
    return Case(
        calls=calls,
        restart_limit=draw(st.sampled_from([0, 1, 3, 100])),
        max_concurrency=draw(st.sampled_from([None, None, 2])),
        close_after=draw(st.sampled_from([0.0, 0.0005, 0.002, 0.01])),
    )


class Recorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.events: list[StreamEvent] = []

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)


@frozen
class Outcome:
    call: Call
    crashed_before: tuple[int, ...]  # the actors that had crashed when it was made
    crashed_after: tuple[int, ...]  # ... when it ended
    closing: bool  # the runtime had begun to close when it ended
    result: str | None
    error: BaseException | None


async def _run_case(case: Case) -> None:
    flaky = Flaky(
        name="flaky", max_concurrency=case.max_concurrency, restart_limit=case.restart_limit
    )
    recorder = Recorder()
    outcomes: list[Outcome] = []

    async def call(rt: Any, plan: Call) -> None:
        await trio.sleep(plan.delay)
        before = tuple(flaky.crashed)
        result: str | None = None
        error: BaseException | None = None
        try:
            result = await rt.ainvoke(flaky, plan.message)
        except (ActorCrash, RunCancelledError, ActorFailedError) as exc:
            error = exc
        outcomes.append(Outcome(plan, before, tuple(flaky.crashed), rt.closed, result, error))

    async with (
        trio.open_nursery() as outside,
        open_runtime(callbacks=[recorder]) as rt,
        trio.open_nursery() as inside,
    ):
        for plan in case.calls:
            (outside if plan.outside else inside).start_soon(call, rt, plan)
        await trio.sleep(case.close_after)
        inside.cancel_scope.cancel()
    # A call inside may be cut off by its nursery's cancel (it records nothing); every
    # call outside ends, with an answer or an error, the runtime's close at the latest.
    outside_calls = [plan for plan in case.calls if plan.outside]
    assert sorted(o.call.delay for o in outcomes if o.call.outside) == sorted(
        plan.delay for plan in outside_calls
    )
    for outcome in outcomes:
        _check(outcome)
    if recorder.events:  # none when every call was cut off before its run started
        check_events(recorder.events)
    assert not [n for n in live_task_names() if n.startswith("troupe")]


def _check(outcome: Outcome) -> None:
    message, error = outcome.call.message, outcome.error
    if outcome.result is not None:
        assert message == "ok", outcome
        # Never served by an actor that had already crashed when the call was made.
        assert int(outcome.result.removeprefix("ok #")) > max(outcome.crashed_before, default=0)
        return
    assert error is not None
    if isinstance(error, ActorCrash):
        assert message == "crash", outcome
    elif isinstance(error, ActorFailedError):
        assert "crashed" in str(error) and "restart limit" in str(error), outcome
    else:
        # Cancelled only by a crash of the actor while the call was in it, or the
        # runtime's close; a call made after a crash waits for the restarted actor.
        assert isinstance(error, RunCancelledError), outcome
        assert outcome.closing or outcome.crashed_after != outcome.crashed_before, outcome
        if isinstance(error, RuntimeClosedError):
            assert outcome.closing, outcome


@given(cases())
def test_requests_racing_crashes_restarts_and_the_close_all_finish(case: Case) -> None:
    run_watched(lambda: _run_case(case), seconds=60, label=repr(case))
