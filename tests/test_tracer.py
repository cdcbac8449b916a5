"""The tracer, fed lifecycle messages by hand: complete events, order, fan-out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing

from protocol import RunEnded, RunFailed, RunStarted, RunStreamed, RunStreamedMany, StreamEvent
from protocol._lifecycle import CustomEventDispatched
from runtime import EventFilter
from runtime._event_channel import EventChannel
from runtime._gate import Gate
from runtime._tracer import Subscribe, Subscription, Tracer, TracerMail


@pytest.fixture
async def tracer() -> AsyncIterator[Tracer]:
    tracer = Tracer(64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracer.serve)
        yield tracer
        tracer.mailbox.close()
        nursery.cancel_scope.deadline = trio.current_time() + 5  # never hang on a failure


def subscribe(
    tracer: Tracer, run_id: str | None, event_filter: EventFilter | None = None, **kw: bool
) -> tuple[Subscription, EventChannel]:
    channel = EventChannel(100)
    sub = Subscription(channel, run_id=run_id, filter=event_filter, **kw)
    tracer.mailbox.send_nowait(Subscribe(sub))
    return sub, channel


async def feed(tracer: Tracer, messages: Sequence[TracerMail]) -> None:
    for message in messages:
        await tracer.mailbox.send(message)


async def drain(receive: EventChannel) -> list[StreamEvent]:
    events = []
    with trio.fail_after(5):
        while True:
            try:
                events.append(await receive.receive())
            except trio.EndOfChannel:
                return events


TREE: list[TracerMail] = [
    RunStarted("r", (), "chain", "Agent", ("root",), {"user": "u"}, {"input": "q"}),
    RunStarted(
        "m", ("r",), "chat_model", "model", ("root", "llm"), {"user": "u"}, {"messages": []}
    ),
    RunStreamed("m", "tok1"),
    RunStreamed("m", "tok2"),
    RunEnded("m", "tok1tok2"),
    RunEnded("r", {"output": "tok1tok2"}),
]


async def test_end_events_repeat_what_the_start_said(tracer: Tracer) -> None:
    _, receive = subscribe(tracer, "r")
    await feed(tracer, TREE)
    events = await drain(receive)
    assert [e.event for e in events] == [
        "on_chain_start",
        "on_chat_model_start",
        "on_chat_model_stream",
        "on_chat_model_stream",
        "on_chat_model_end",
        "on_chain_end",
    ]
    end = events[4]
    assert (end.name, end.tags, end.metadata, end.parent_ids) == (
        "model",
        ("root", "llm"),
        {"user": "u"},
        ("r",),
    )
    assert end.data.input == {"messages": []} and end.data.output == "tok1tok2"
    assert end.status == "ok" and end.seq == 3 and end.end_time is not None
    assert [e.seq for e in events if e.run_id == "m"] == [0, 1, 2, 3]
    assert tracer.open_runs == 0 and tracer.protocol_violations == 0


async def test_a_parent_that_ends_first_closes_its_open_children(tracer: Tracer) -> None:
    _, receive = subscribe(tracer, "r")
    await feed(tracer, [*TREE[:3], RunFailed("r", "boom"), RunEnded("m", "late")])
    events = await drain(receive)
    assert [(e.event, e.status) for e in events[-2:]] == [
        ("on_chat_model_error", "cancelled"),
        ("on_chain_error", "error"),
    ]
    assert "ended first" in (events[-2].data.error or "")
    await trio.testing.wait_all_tasks_blocked()
    assert tracer.protocol_violations == 1  # the late end of the closed child


async def test_filters_chunks_only_and_global_subscribers(tracer: Tracer) -> None:
    _, only_models = subscribe(tracer, "r", EventFilter.build(include_types=["chat_model"]))
    _, root_chunks = subscribe(tracer, "r", chunks_only=True)
    _, everything = subscribe(tracer, None)
    await feed(tracer, [*TREE[:4], RunStreamed("r", "step"), *TREE[4:]])
    models = await drain(only_models)
    assert {e.kind for e in models} == {"chat_model"} and len(models) == 4
    assert [e.data.chunk for e in await drain(root_chunks)] == ["step"]
    tracer.mailbox.close()
    assert len(await drain(everything)) == 7


async def test_custom_events_carry_the_run_identity(tracer: Tracer) -> None:
    _, receive = subscribe(tracer, "r")
    await feed(tracer, [TREE[0], CustomEventDispatched("r", "progress", {"pct": 50}), TREE[-1]])
    custom = (await drain(receive))[1]
    assert (custom.event, custom.name, custom.kind) == ("on_custom_event", "progress", "custom")
    assert custom.data.chunk == {"pct": 50} and custom.tags == ("root",) and custom.seq == 1


async def test_protocol_violations_are_counted_not_fatal(tracer: Tracer) -> None:
    await feed(
        tracer,
        [RunStreamed("nope", 1), RunEnded("nope"), TREE[0], TREE[0], RunFailed("x", "e")],
    )
    await trio.testing.wait_all_tasks_blocked()
    assert tracer.protocol_violations == 4
    assert tracer.open_runs == 1


async def test_a_late_subscribe_closes_the_stream(tracer: Tracer) -> None:
    await feed(tracer, [TREE[0]])
    _, late = subscribe(tracer, "r")  # the run has started: too late to watch it
    assert await drain(late) == []


async def test_a_slow_subscriber_applies_backpressure(tracer: Tracer) -> None:
    receive = EventChannel(1)
    tracer.mailbox.send_nowait(Subscribe(Subscription(receive, run_id="r")))
    await feed(tracer, [TREE[0], *[RunStreamed("r", i) for i in range(50)]])
    await trio.testing.wait_all_tasks_blocked()
    assert len(receive) == 1  # bounded: the tracer waits
    await feed(tracer, [RunEnded("r")])
    events = await drain(receive)
    assert [e.data.chunk for e in events[1:-1]] == list(range(50))


async def test_a_batch_of_chunks_waits_for_room_part_by_part(tracer: Tracer) -> None:
    small, roomy = EventChannel(3), EventChannel(100)
    for channel in (small, roomy):
        tracer.mailbox.send_nowait(Subscribe(Subscription(channel, run_id=None)))
    await feed(tracer, [TREE[0], RunStreamedMany("r", tuple(range(10)))])
    await trio.testing.wait_all_tasks_blocked()
    assert len(small) == 3  # the start and the first two chunks; the tracer waits
    assert len(roomy) == 11  # a subscriber with room got the whole batch at once
    await feed(tracer, [RunStreamedMany("r", (10, 11)), RunEnded("r")])
    tracer.mailbox.close()
    for channel in (small, roomy):
        events = await drain(channel)
        assert [e.seq for e in events] == list(range(14))
        assert [e.data.chunk for e in events[1:-1]] == list(range(12))
        assert events[-1].event == "on_chain_end"


async def test_a_long_run_of_chunks_arrives_whole_and_in_order(tracer: Tracer) -> None:
    _, receive = subscribe(tracer, "r")  # room for 100 events: the batch goes in parts
    chunks = tuple(range(517))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed, tracer, [TREE[0], RunStreamedMany("r", chunks), RunEnded("r")])
        events = await drain(receive)
    assert [e.seq for e in events] == list(range(len(chunks) + 2))
    assert tuple(e.data.chunk for e in events[1:-1]) == chunks


async def test_a_gated_subscriber_never_makes_the_tracer_wait(tracer: Tracer) -> None:
    gate = Gate()
    stalled = EventChannel(4)
    stalled.gate = gate
    tracer.mailbox.send_nowait(Subscribe(Subscription(stalled, run_id="r")))
    _, other = subscribe(tracer, "other")
    other_run = RunStarted("other", (), "chain", "Other")
    await feed(tracer, [TREE[0], *[RunStreamed("r", i) for i in range(20)]])
    await feed(tracer, [other_run, RunStreamed("other", "x"), RunEnded("other")])
    other_events = await drain(other)  # the other run is not held back at all
    assert [e.event for e in other_events] == ["on_chain_start", "on_chain_stream", "on_chain_end"]
    closed = [gate.closed]
    assert len(stalled) == 21  # taken beyond its capacity; the gate says wait
    for _ in range(18):
        await stalled.receive()
    closed.append(gate.closed)  # still over half its capacity
    await stalled.receive()
    closed.append(gate.closed)  # read down to half: the run's producers may go on
    stalled.close_receiver()
    closed.append(gate.closed)
    assert closed == [True, True, False, False] and gate.closers == 0
