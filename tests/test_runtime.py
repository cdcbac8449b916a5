"""The runtime: streams, errors, cancellation, supervision of tasks, many runs at once."""

from __future__ import annotations

import contextvars

import pytest
import trio
import trio.testing

from actors.testing import check_events
from protocol import StreamEvent
from runtime import (
    NoRuntimeError,
    Run,
    Runtime,
    RuntimeClosedError,
    StreamUsageError,
    current_run,
    current_runtime,
    dispatch_custom_event,
    open_runtime,
    stream_events,
)

from .performers import Step
from .tasks import serving_tasks


def tree() -> Step:
    leaf = Step(name="leaf", tags=("leaf-tag",), metadata={"leaf": 1})
    middle = Step(name="middle", children=(leaf, leaf))
    return Step(name="top", children=(middle, leaf))


async def test_events_of_a_nested_tree_keep_every_promise() -> None:
    async with open_runtime() as rt:
        async with tree().astream_events("a b c", tags=["root"], metadata={"user": "u"}) as events:
            received = [event async for event in events]
        assert events.output == "a b c"
        assert rt.open_runs == 0 and rt.protocol_violations == 0
    runs = check_events(received)
    assert len(runs) == 1 + 1 + 2 + 1
    for trace in runs.values():
        assert "root" in trace.start.tags and trace.start.metadata["user"] == "u"
        assert trace.chunks == ["a", "b", "c"]
    leaf = next(t for t in runs.values() if t.start.name == "leaf")
    assert leaf.start.metadata == {"user": "u", "leaf": 1}


async def test_the_dict_view_reads_like_langchain() -> None:
    async with Step().astream_events("hi") as events:
        received = [event async for event in events]
    start, chunk, end = received
    assert start["event"] == "on_chain_start" and start["data"]["input"] == "hi"
    assert chunk["data"]["chunk"] == "hi"
    assert end["data"]["output"] == "hi" and end["data"].get("error") is None
    assert start.as_dict()["name"] == "step"
    # Lists where LangChain's dicts have lists; the typed attributes stay tuples.
    assert start["tags"] == [] and start["parent_ids"] == [] and start.tags == ()
    assert dict(start)["tags"] == [] and isinstance(start.run["parent_ids"], list)


async def test_a_failing_run_ends_with_an_error_event_then_raises_its_own_error() -> None:
    failing = Step(name="top", children=(Step(name="bad", fail="no good"),))
    received: list[StreamEvent] = []
    with pytest.raises(ValueError, match="no good") as caught:
        async with failing.astream_events("x") as events:
            # a loop, not a comprehension: the events before the raise are kept
            async for event in events:
                received.append(event)  # noqa: PERF401
    assert not isinstance(caught.value, BaseExceptionGroup)
    check_events(received)
    assert [(e.name, e.status) for e in received if e.is_terminal] == [
        ("bad", "error"),
        ("top", "error"),
    ]
    assert received[-1].data.error == "ValueError: no good"
    with pytest.raises(ValueError, match="no good"):
        await failing.ainvoke("x")


async def test_leaving_the_stream_cancels_the_run_and_every_task_of_it() -> None:
    started = trio.Event()
    blocked = Step(name="blocked", block=True, started=started)
    top = Step(name="top", children=(Step(name="mid", children=(blocked,)),))
    async with open_runtime() as rt, rt.watch() as watched:
        async with top.astream_events("a b") as events:
            async for event in events:
                if event.name == "blocked" and event.phase == "start":
                    break
        # leaving the block waited for the whole tree to stop and report its end ...
        assert serving_tasks() == 0
        # ... which the tracer, an actor of its own, processes in its own time
        await trio.testing.wait_all_tasks_blocked()
        assert rt.open_runs == 0
        seen = []
        async for event in watched:
            seen.append(event)
            if event.name == "top" and event.is_terminal:
                break
    runs = check_events(seen)
    statuses = {t.start.name: t.terminal.status for t in runs.values() if t.terminal}
    assert statuses == {"top": "cancelled", "mid": "cancelled", "blocked": "cancelled"}


async def test_a_cancel_scope_around_the_consumer_cancels_the_run() -> None:
    async with open_runtime():
        with trio.move_on_after(0.05) as scope:
            async with Step(block=True).astream_events("x") as events:
                async for _ in events:
                    pass
        assert scope.cancelled_caught
        assert serving_tasks() == 0


async def test_other_runs_are_untouched_by_a_cancellation() -> None:
    gate = trio.Event()

    async with open_runtime():
        results: list[str] = []

        async def steady() -> None:
            await gate.wait()
            results.append(await Step(name="steady").ainvoke("ok"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady)
            with trio.move_on_after(0.02):
                await Step(block=True).ainvoke("x")
            gate.set()
        assert results == ["ok"]


async def test_the_body_error_of_open_runtime_is_not_wrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_runtime():
            raise KeyError("mine")


async def test_bad_arguments_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="tracer_capacity"):
        async with open_runtime(tracer_capacity=0):
            pass
    with pytest.raises(TypeError, match="step takes a string, got int"):
        Step().astream_events(3)
    with pytest.raises(TypeError, match="expected a performer"):
        stream_events("not a performer", "x")  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(ValueError, match="capacity"):
        Step().astream_events("x", capacity=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        Step().astream_events("x", include_nmes=["a"])  # type: ignore[call-arg]  # on purpose


async def test_streams_must_be_entered() -> None:
    events = Step().astream_events("x")
    with pytest.raises(StreamUsageError, match="async with"):
        async for _ in events:
            pass
    async with open_runtime() as rt:
        async with events:
            with pytest.raises(StreamUsageError, match="only once"):
                await events.__aenter__()
            _ = [e async for e in events]
        with pytest.raises(StreamUsageError):
            rt.watch().__aiter__()


async def test_a_closed_runtime_refuses_work() -> None:
    async with open_runtime() as rt:
        pass
    assert rt.closed
    with pytest.raises(RuntimeClosedError):
        await rt.request(Step(), "x")


async def test_one_shot_runtime_when_none_is_current() -> None:
    assert current_runtime() is None
    assert await Step().ainvoke("x y") == "x y"
    async with Step().astream("x y") as chunks:
        assert [c async for c in chunks] == ["x", "y"]
    assert current_runtime() is None


async def test_max_concurrency_limits_requests_served_at_once() -> None:
    blocked = Step(block=True, max_concurrency=2)
    async with open_runtime(), trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(blocked.ainvoke, "x")
        await trio.testing.wait_all_tasks_blocked()
        assert serving_tasks() == 2
        nursery.cancel_scope.cancel()


_REQUESTER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("requester", default="")


class _Peek(Step):
    """Notes, for each request, its message, the requester's variable and the runtime."""

    async def perform(self, message: str, run: Run) -> str:
        _seen.append((message, _REQUESTER_VAR.get(), current_runtime()))
        return message


_seen: list[tuple[str, str, object]] = []


async def _ask_from_everywhere(peek: _Peek) -> Runtime:
    runtime_open = trio.Event()
    outside_done = trio.Event()
    found: list[Runtime] = []

    async def outside() -> None:
        # A task outside the runtime's block: the runtime is not current in it.
        await runtime_open.wait()
        _REQUESTER_VAR.set("outside")
        for _ in range(2):
            await found[0].ainvoke(peek, "o")
        outside_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outside)
        async with open_runtime() as rt:
            for tag in ("first", "second", "third"):
                _REQUESTER_VAR.set(tag)
                assert await peek.ainvoke("i") == "i"
            found.append(rt)
            runtime_open.set()
            await outside_done.wait()
    return rt


@pytest.mark.parametrize("limit", [None, 1])
async def test_every_request_runs_in_its_requesters_context_with_the_runtime_current(
    limit: int | None,
) -> None:
    # A performer's code sees the context variables of the code that asked it (as a
    # task trio starts sees its starter's), never those of whoever asked first (the
    # actor's own task), and the runtime is current in it whoever asked. The first
    # request reaches the new actor through its mailbox; later ones start their task
    # in the actor's nursery themselves; a limited actor's all go through the mailbox.
    _seen.clear()
    rt = await _ask_from_everywhere(_Peek(max_concurrency=limit))
    assert _seen == [
        ("i", "first", rt),
        ("i", "second", rt),
        ("i", "third", rt),
        ("o", "outside", rt),
        ("o", "outside", rt),
    ]
    assert _REQUESTER_VAR.get() == "third"  # nothing leaks back


class _Setter(Step):
    """Notes what it sees, sets the variable to its own name, asks its children, and
    notes what it sees after them."""

    async def perform(self, message: str, run: Run) -> str:
        _seen.append((self.name, _REQUESTER_VAR.get(), "before"))
        _REQUESTER_VAR.set(self.name)
        for child in self.children:
            await run.request(child, message)
        _seen.append((self.name, _REQUESTER_VAR.get(), "after"))
        return message


async def test_what_a_run_sets_its_children_see_and_its_caller_does_not() -> None:
    _seen.clear()
    leaf = _Setter(name="leaf")
    top = _Setter(name="top", children=(_Setter(name="middle", children=(leaf,)), leaf))
    _REQUESTER_VAR.set("user")
    async with open_runtime():
        for _ in range(2):  # the second time, every actor exists: requests start at once
            assert await top.ainvoke("x") == "x"
            assert _REQUESTER_VAR.get() == "user"
    assert _seen == 2 * [
        ("top", "user", "before"),
        ("middle", "top", "before"),
        ("leaf", "middle", "before"),
        ("leaf", "leaf", "after"),
        ("middle", "middle", "after"),
        ("leaf", "top", "before"),
        ("leaf", "leaf", "after"),
        ("top", "top", "after"),
    ]


async def test_custom_events_attach_to_the_current_run() -> None:
    class Progress(Step):
        async def perform(self, message: str, run: Run) -> str:
            context = current_run()
            assert context is not None and context.run_id == run.context.run_id
            await dispatch_custom_event("progress", {"done": 1})
            await run.dispatch_custom_event("progress", {"done": 2})
            return message

    async with Progress(name="p", tags=("t",)).astream_events("x") as events:
        received = [e async for e in events]
    custom = [e for e in received if e.event == "on_custom_event"]
    assert [(e.name, e.data.chunk, e.tags) for e in custom] == [
        ("progress", {"done": 1}, ("t",)),
        ("progress", {"done": 2}, ("t",)),
    ]
    check_events(received)
    with pytest.raises(NoRuntimeError):
        await dispatch_custom_event("x")
    with pytest.raises(TypeError, match="non-empty string"):
        await dispatch_custom_event("")


async def test_many_runs_at_once_in_one_runtime() -> None:
    collected: dict[int, list[StreamEvent]] = {}

    async def one(index: int) -> None:
        async with tree().astream_events(f"run {index}", metadata={"i": index}) as events:
            collected[index] = [e async for e in events]

    async with open_runtime() as rt, trio.open_nursery() as nursery:
        for index in range(50):
            nursery.start_soon(one, index)
    for index, received in collected.items():
        runs = check_events(received)
        assert {t.start.metadata["i"] for t in runs.values()} == {index}
    assert len(collected) == 50 and rt.protocol_violations == 0


async def test_user_supplied_run_id_and_name() -> None:
    async with Step().astream_events("x", run_id="my-id", run_name="renamed") as events:
        received = [e async for e in events]
    assert events.run_id == "my-id"
    assert {(e.run_id, e.name) for e in received} == {("my-id", "renamed")}
