"""Generated: an exit stays itself, from every public API.

An exit is a ``BaseException`` that is not an ``Exception``: ``KeyboardInterrupt``,
``SystemExit``, ``GeneratorExit``, or one of the user's own. Hypothesis draws where
exits are raised (tools called one at a time or in parallel, beside tools that fail or
take a while; the agent's model, or a model a tool calls; a callback handler, attached
to the run or to the whole runtime), how the run is started (every way the public API
has: a performer's methods, the module functions, a runtime's methods, another thread,
a run inside a run) and how it is read (to the end, left at the k-th item, or cut off
by a deadline).

For every case: what reaches the caller is the very exception raised (the
``KeyboardInterrupt`` if there was one, else the ``SystemExit``, else one of the others),
never a group; an exception that is an error (a tool's ``ValueError``) never hides an
exit; nothing is raised when no exit was; no task of the runtime is left; a runtime the
test opened has closed with every run ended once, in tree order.
"""

from __future__ import annotations

import functools
import math
import signal
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Final

import attrs
import pytest
import trio
import trio.testing
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st

from actors import (
    Agent,
    AsyncCallbackHandler,
    ChatModel,
    ChunkSink,
    ErrorPolicy,
    ScriptedCall,
    ScriptedChatModel,
    ScriptedTurn,
    tool,
)
from actors.testing import check_events, run_watched
from protocol import AssistantMessage, AssistantMessageChunk, ChatRequest, StreamEvent
from runtime import (
    Runnable,
    Runtime,
    make_config,
    open_runtime,
    stream,
    stream_events,
    stream_log,
)
from runtime import invoke as invoke_function

from .tasks import live_task_names


class OwnStop(BaseException):
    """A user's own ``BaseException``."""


EXITS: Final[dict[str, Callable[[], BaseException]]] = {
    "interrupt": KeyboardInterrupt,
    "exit": lambda: SystemExit(3),
    "generator": GeneratorExit,
    "own": OwnStop,
}
EXIT_KINDS: Final = tuple(EXITS)
POLICIES: Final[tuple[ErrorPolicy, ...]] = ("tell", "raise")

ONE_SHOT_APIS: Final = (
    "ainvoke",
    "invoke",
    "astream",
    "astream_events",
    "astream_log",
    "configured.ainvoke",
    "configured.astream_events",
    "module.invoke",
    "module.stream",
    "module.stream_events",
    "module.stream_log",
)
RUNTIME_APIS: Final = (
    "rt.ainvoke",
    "rt.astream",
    "rt.astream_events",
    "rt.astream_log",
    "rt.request",
    "rt.invoke_from_thread",
    "run.request",
)
STREAMS: Final = frozenset(
    {
        "astream",
        "astream_events",
        "astream_log",
        "configured.astream_events",
        "module.stream",
        "module.stream_events",
        "module.stream_log",
        "rt.astream",
        "rt.astream_events",
        "rt.astream_log",
    }
)


@frozen
class ToolPlan:
    does: str  # ok | error | nested (calls a model that raises) | an exit kind
    delay: float


@frozen
class Case:
    tools: tuple[ToolPlan, ...]
    tool_errors: ErrorPolicy
    model_exit: str | None  # an exit kind raised by the agent's model
    model_turn: int  # on its first turn (before the tools) or its second
    model_chunks: int  # chunks streamed before it raises
    nested_exit: str  # what a model called by a "nested" tool raises
    handler_exit: str | None  # an exit kind raised by a callback handler
    handler_at: int  # on its n-th callback
    handler_on: str  # run | runtime | subscribe
    api: str
    shared: bool  # inside open_runtime (else each call opens its own)
    leave_at: int | None  # a stream's consumer leaves after this many items
    deadline: float | None  # a deadline around the call (move_on_after)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kinds = st.sampled_from(EXIT_KINDS)
    tools = tuple(
        ToolPlan(
            does=draw(st.sampled_from(["ok", "ok", "error", "nested", *EXIT_KINDS])),
            delay=draw(st.sampled_from([0.0, 0.0, 0.001])),
        )
        for _ in range(draw(st.integers(1, 3)))
    )
    shared = draw(st.booleans())
    api = draw(st.sampled_from(ONE_SHOT_APIS + RUNTIME_APIS if shared else ONE_SHOT_APIS))
    return Case(
        tools=tools,
        tool_errors=draw(st.sampled_from(POLICIES)),
        model_exit=draw(st.one_of(st.none(), kinds)),
        model_turn=draw(st.integers(0, 1)),
        model_chunks=draw(st.integers(0, 3)),
        nested_exit=draw(kinds),
        handler_exit=draw(st.one_of(st.none(), st.none(), kinds)),
        handler_at=draw(st.integers(1, 14)),
        handler_on=draw(st.sampled_from(["run", "runtime", "subscribe"] if shared else ["run"])),
        api=api,
        shared=shared,
        leave_at=draw(st.one_of(st.none(), st.integers(1, 12))) if api in STREAMS else None,
        deadline=draw(st.sampled_from([None, None, 0.0, 0.0005, 0.002])),
    )


class Raised:
    """Every exit the case's code raised, in order."""

    def __init__(self) -> None:
        self.exits: list[BaseException] = []

    def raise_(self, kind: str) -> None:
        exc = EXITS[kind]()
        self.exits.append(exc)
        raise exc


class ExitingModel(ChatModel):
    """Answers as ``script`` does, but on turn ``turn`` streams ``chunks`` chunks and
    then raises the exit ``kind`` (if any)."""

    __slots__ = ("chunks", "kind", "metadata", "name", "raised", "script", "tags", "turn")

    def __init__(
        self,
        script: ScriptedChatModel,
        raised: Raised,
        kind: str | None,
        turn: int = 0,
        chunks: int = 0,
        name: str = "exiting",
    ) -> None:
        self.script = script
        self.raised = raised
        self.kind = kind
        self.turn = turn
        self.chunks = chunks
        self.name = name
        self.tags = ()
        self.metadata: dict[str, Any] = {}

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        turn = sum(1 for m in request.messages if isinstance(m, AssistantMessage))
        if self.kind is not None and turn == self.turn:
            for index in range(self.chunks):
                await sink.send(AssistantMessageChunk(content=f"t{index} "))
            self.raised.raise_(self.kind)
        await self.script.generate(request, sink)


class ExitingHandler(AsyncCallbackHandler):
    """Raises the exit ``kind`` on its ``at``-th callback (sync and async ones)."""

    def __init__(self, raised: Raised, kind: str | None, at: int) -> None:
        self.raised = raised
        self.kind = kind
        self.at = at
        self.calls = 0

    def _count(self) -> None:
        self.calls += 1
        if self.kind is not None and self.calls == self.at:
            self.raised.raise_(self.kind)

    async def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
        self._count()

    def on_chain_end(self, outputs: Any, **kw: Any) -> None:
        self._count()

    async def on_chain_error(self, error: BaseException, **kw: Any) -> None:
        self._count()

    def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
        self._count()

    async def on_llm_new_token(self, token: str, **kw: Any) -> None:
        self._count()

    async def on_llm_end(self, response: Any, **kw: Any) -> None:
        self._count()

    def on_llm_error(self, error: BaseException, **kw: Any) -> None:
        self._count()

    async def on_tool_start(self, serialized: Any, input_str: str, **kw: Any) -> None:
        self._count()

    def on_tool_end(self, output: Any, **kw: Any) -> None:
        self._count()

    async def on_tool_error(self, error: BaseException, **kw: Any) -> None:
        self._count()


class Recorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.events: list[StreamEvent] = []

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)


def _agent(case: Case, raised: Raised) -> Agent:
    tools = []
    for index, plan in enumerate(case.tools):
        tools.append(_tool(f"t{index}", plan, case.nested_exit, raised))
    calls = [ScriptedCall(f"t{index}", {}) for index in range(len(tools))]
    script = ScriptedChatModel([ScriptedTurn("calling", calls), ScriptedTurn("done")])
    model = ExitingModel(script, raised, case.model_exit, case.model_turn, case.model_chunks)
    return Agent(model, tools, tool_errors=case.tool_errors)


def _tool(name: str, plan: ToolPlan, nested_exit: str, raised: Raised) -> Any:
    nested = ExitingModel(
        ScriptedChatModel([ScriptedTurn("inner")]), raised, nested_exit, name="inner"
    )

    @tool(name=name)
    async def act() -> str:
        """Does what its plan says."""
        if plan.delay:
            await trio.sleep(plan.delay)
        if plan.does == "ok":
            return "fine"
        if plan.does == "error":
            raise ValueError("an ordinary tool error")
        if plan.does == "nested":
            message = await nested.ainvoke("inner question")
            return message.content
        raised.raise_(plan.does)
        raise AssertionError("unreachable")

    return act


async def _read(opened: Any, leave_at: int | None) -> None:
    async with opened as items:
        seen = 0
        async for _ in items:
            seen += 1
            if leave_at is not None and seen >= leave_at:
                break


async def _call(case: Case, agent: Agent, rt: Runtime | None, handler: Any) -> None:
    """Start the run the way ``case.api`` says and read it as ``case.leave_at`` says."""
    kw: dict[str, Any] = {"callbacks": [handler]} if handler is not None else {}
    api = case.api
    target: Runnable[Any] = agent.with_config(tags=["configured"]) if "configured" in api else agent
    if api in STREAMS:
        opened: Any
        if api.startswith("rt."):
            assert rt is not None
            opened = getattr(rt, api[3:])(agent, "q", **kw)
        elif api.startswith("module."):
            function: dict[str, Callable[..., Any]] = {
                "stream": stream,
                "stream_events": stream_events,
                "stream_log": stream_log,
            }
            opened = function[api[7:]](agent, "q", **kw)
        else:
            opened = getattr(target, api.rsplit(".", 1)[-1])("q", **kw)
        await _read(opened, case.leave_at)
    elif api in ("ainvoke", "configured.ainvoke"):
        await target.ainvoke("q", **kw)
    elif api == "invoke":  # sync: trio.run of its own, in a thread that has no loop
        await trio.to_thread.run_sync(functools.partial(agent.invoke, "q", **kw))
    elif api == "module.invoke":
        await invoke_function(agent, "q", **kw)
    elif api == "rt.ainvoke":
        assert rt is not None
        await rt.ainvoke(agent, "q", **kw)
    elif api == "rt.request":
        assert rt is not None
        await rt.request(agent, agent.coerce_input("q"), make_config(**kw))
    elif api == "rt.invoke_from_thread":
        assert rt is not None
        call = functools.partial(rt.invoke_from_thread, agent, "q", **kw)
        await trio.to_thread.run_sync(call)
    elif api == "run.request":  # from inside another run: a tool that runs the agent

        @tool
        async def relay() -> str:
            """Runs the agent."""
            output = await agent.ainvoke("q", **kw)
            return str(output["output"])

        await relay.ainvoke({})
    else:  # pragma: no cover - the strategy draws only the names above
        raise AssertionError(api)


def _deadline(case: Case) -> trio.CancelScope:
    return trio.move_on_after(case.deadline if case.deadline is not None else math.inf)


def _winners(exits: list[BaseException]) -> list[BaseException]:
    """The exits that may reach the caller: a ``KeyboardInterrupt``, else a
    ``SystemExit``, else any of the others."""
    for kind in (KeyboardInterrupt, SystemExit):
        found: list[BaseException] = [e for e in exits if isinstance(e, kind)]
        if found:
            return found
    return exits


async def _run_case(case: Case, raised: Raised) -> dict[str, Any]:
    found: dict[str, Any] = {"caught": None}
    agent = _agent(case, raised)
    handler = (
        ExitingHandler(raised, case.handler_exit, case.handler_at)
        if case.handler_exit is not None
        else None
    )
    try:
        if not case.shared:
            with _deadline(case):
                await _call(case, agent, None, handler)
        else:
            recorder = Recorder()
            callbacks: list[Any] = [recorder]
            if handler is not None and case.handler_on == "runtime":
                callbacks.append(handler)
            rt: Runtime | None = None
            try:
                async with open_runtime(callbacks=callbacks, close_grace=2.0) as rt:
                    if handler is not None and case.handler_on == "subscribe":
                        await rt.subscribe(handler)
                    run_handler = handler if case.handler_on == "run" else None
                    with _deadline(case):
                        await _call(case, agent, rt, run_handler)
            finally:
                assert rt is not None and rt.closed
                found.update(
                    events=recorder.events,
                    open_runs=rt.open_runs,
                    violations=rt.protocol_violations,
                    pending=len(rt._tracer._pending),
                )
    except BaseException as exc:
        found["caught"] = exc
    await trio.testing.wait_all_tasks_blocked()
    found["left"] = [n for n in live_task_names() if n.startswith("troupe")]
    return found


def _check(case: Case, raised: Raised, found: dict[str, Any]) -> None:
    caught = found["caught"]
    assert not found["left"], found["left"]  # no task outlives its runtime
    assert not isinstance(caught, BaseExceptionGroup), repr(caught)
    if raised.exits:
        winners = _winners(raised.exits)
        assert any(caught is exc for exc in winners), (caught, raised.exits)
    else:
        assert caught is None or isinstance(caught, ValueError), repr(caught)
    if case.shared:
        assert found["open_runs"] == 0 and found["violations"] == 0 and found["pending"] == 0
        by_root: dict[str, list[StreamEvent]] = defaultdict(list)
        for event in found["events"]:
            by_root[event.parent_ids[0] if event.parent_ids else event.run_id].append(event)
        for events in by_root.values():
            check_events(events)  # every run ended exactly once, in tree order


@given(cases())
def test_an_exit_reaches_the_caller_as_itself_from_every_api(case: Case) -> None:
    raised = Raised()
    found = run_watched(lambda: _run_case(case, raised), seconds=60, label=repr(case))
    _check(case, raised, found)


# -- the cases the generated test found, pinned ------------------------------------------


def _pinned(**changes: Any) -> Case:
    base = Case(
        tools=(ToolPlan("ok", 0.0),),
        tool_errors="tell",
        model_exit=None,
        model_turn=0,
        model_chunks=0,
        nested_exit="interrupt",
        handler_exit=None,
        handler_at=1,
        handler_on="run",
        api="ainvoke",
        shared=False,
        leave_at=None,
        deadline=None,
    )
    return attrs.evolve(base, **changes)


@pytest.mark.parametrize("kind", EXIT_KINDS)
@pytest.mark.parametrize("api", ["ainvoke", "astream_events", "rt.astream_log"])
def test_parallel_tools_raising_an_exit_raise_it_unwrapped(kind: str, api: str) -> None:
    case = _pinned(
        tools=(ToolPlan(kind, 0.0), ToolPlan(kind, 0.0)), api=api, shared=api.startswith("rt.")
    )
    raised = Raised()
    found = run_watched(lambda: _run_case(case, raised), seconds=30, label=repr(case))
    _check(case, raised, found)


def test_a_keyboard_interrupt_beside_other_exits_and_errors_wins() -> None:
    case = _pinned(
        tools=(ToolPlan("exit", 0.0), ToolPlan("error", 0.0), ToolPlan("interrupt", 0.0)),
        tool_errors="raise",
    )
    raised = Raised()
    found = run_watched(lambda: _run_case(case, raised), seconds=30, label=repr(case))
    _check(case, raised, found)
    assert isinstance(found["caught"], KeyboardInterrupt)


@pytest.mark.parametrize("kind", EXIT_KINDS)
@pytest.mark.parametrize("on", ["run", "runtime", "subscribe"])
def test_an_exit_in_a_callback_handler_stops_the_program(kind: str, on: str) -> None:
    case = _pinned(handler_exit=kind, handler_at=2, handler_on=on, shared=on != "run")
    raised = Raised()
    found = run_watched(lambda: _run_case(case, raised), seconds=30, label=repr(case))
    _check(case, raised, found)
    assert found["caught"] is raised.exits[0]


def test_the_run_s_interrupt_outranks_a_handler_s_exit_while_the_consumer_leaves() -> None:
    # Found by the generated test: the consumer left while a handler's exit stopped the
    # runtime; the stream's wait for its handlers was cancelled, and the model's
    # KeyboardInterrupt, waiting behind it, was lost. (Timing decides: a few tries.)
    case = _pinned(
        tools=(ToolPlan("nested", 0.0), ToolPlan("nested", 0.0)),
        model_exit="interrupt",
        model_chunks=1,
        nested_exit="own",
        handler_exit="own",
        handler_at=4,
        api="rt.astream_log",
        shared=True,
        leave_at=4,
        deadline=0.002,
    )
    for _ in range(20):
        raised = Raised()
        found = run_watched(
            functools.partial(_run_case, case, raised), seconds=30, label=repr(case)
        )
        _check(case, raised, found)


def test_sync_invoke_from_a_worker_thread_of_a_program_with_a_runtime() -> None:
    # Found by the generated test: the worker thread inherited the program's current
    # runtime, and invoke()'s own trio run used it from the wrong loop, and hung.
    case = _pinned(tools=(ToolPlan("interrupt", 0.0),), api="invoke", shared=True)
    raised = Raised()
    found = run_watched(lambda: _run_case(case, raised), seconds=30, label=repr(case))
    _check(case, raised, found)
    assert isinstance(found["caught"], KeyboardInterrupt)

    agent = Agent(ScriptedChatModel([ScriptedTurn("hi")]))

    async def main() -> None:
        async with open_runtime():
            output = await trio.to_thread.run_sync(agent.invoke, "q")
        assert output["output"] == "hi"

    run_watched(main, seconds=30, label="invoke in a worker thread")


def test_ctrl_c_striking_a_callback_handler_stops_the_program() -> None:
    # A real SIGINT while a handler's code runs: trio raises KeyboardInterrupt right
    # there, in the handler's task, and the program must still stop.
    class CtrlC(AsyncCallbackHandler):
        def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
            signal.raise_signal(signal.SIGINT)

    agent = Agent(ScriptedChatModel([ScriptedTurn("word " * 50, token_delay=0.001)]))

    async def main() -> None:
        recorder = Recorder()
        with pytest.raises(KeyboardInterrupt):
            async with open_runtime(callbacks=[recorder]) as rt:
                async with agent.astream_events("q", callbacks=[CtrlC()]) as events:
                    async for _ in events:
                        pass
                await trio.sleep_forever()  # cancelled by the stop
        assert rt.closed and rt.open_runs == 0 and not events.handler_errors
        check_events(recorder.events)
        await trio.testing.wait_all_tasks_blocked()
        assert not [n for n in live_task_names() if n.startswith("troupe")]

    # As in a program started from a terminal: Python's own SIGINT handler (a test
    # runner's worker may have started with SIGINT ignored, as pytest-xdist's do).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_watched(main, seconds=30, label="SIGINT in a handler")
    finally:
        signal.signal(signal.SIGINT, previous)
