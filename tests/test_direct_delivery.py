"""Generated cases around the producer's own delivery of chunks, starts and ends (while
the tracer is idle a chunk goes from its producer straight to the streams, and a run's
start and end are handled by their sender): trees whose runs stream
and start children in every interleaving, each stream read in full or left early,
beside runtime-wide watchers of every kind (lossless and slow, dropping, first chunk
only). Every stream must keep promises 1-4 by itself, every chunk must arrive once and
in order, and each case must finish (under the hang watchdog)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import trio
import trio.testing
from attrs import field, frozen
from hypothesis import given
from hypothesis import strategies as st

from actors.testing import check_events, run_watched
from protocol import StreamEvent
from runtime import Performer, Run, open_runtime

from .performers import Step as Waiting


@frozen
class Step:
    """What a performer does next: stream ``chunks`` chunks (a scheduler pass before
    each if ``yields``), or ask its child for a run."""

    chunks: int = 0
    yields: bool = False
    child: bool = False


@frozen(eq=False)
class Tree(Performer[int, int]):
    """A performer that follows its plan; ``child`` is the performer it asks."""

    plan: tuple[Step, ...]
    child_performer: Tree | None = None
    name: str = "tree"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)

    def coerce_input(self, value: Any) -> int:
        return int(value)

    async def perform(self, message: int, run: Run) -> int:
        produced = 0
        for step in self.plan:
            if step.child and self.child_performer is not None:
                await run.request(self.child_performer, message)
            for _ in range(step.chunks):
                if step.yields:
                    await trio.lowlevel.checkpoint()
                await run.emit((run.context.run_id, produced))
                produced += 1
        return produced


class Watcher:
    """A runtime-wide handler; ``kind``: lossless (and slow now and then), dropping,
    or first chunk only."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.events: list[StreamEvent] = []
        if kind == "first":
            self.stream_events = "first"

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)
        if self.kind == "slow" and len(self.events) % 7 == 0:
            await trio.sleep(0.0005)


steps = st.builds(Step, st.integers(0, 40), st.booleans(), st.booleans())
plans = st.lists(steps, min_size=1, max_size=4).map(tuple)


@frozen
class Case:
    trees: tuple[tuple[tuple[Step, ...], tuple[Step, ...]], ...]  # (parent, child) plans
    leave_at: tuple[int | None, ...]  # per stream: the event it leaves at, or read all
    watchers: tuple[str, ...]
    capacity: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 4))
    trees = tuple((draw(plans), draw(plans)) for _ in range(n))
    leave_at = tuple(draw(st.none() | st.integers(1, 60)) for _ in range(n))
    watchers = tuple(draw(st.lists(st.sampled_from(["slow", "drop", "first"]), max_size=3)))
    return Case(trees, leave_at, watchers, draw(st.sampled_from([1, 4, 64, 256])))


def _check_chunks(events: list[StreamEvent], complete: bool) -> None:
    """Each run's chunks arrive once each, in the order they were made."""
    chunks: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if event.event == "on_chain_stream":
            run_id, number = event.data.chunk
            assert run_id == event.run_id
            chunks[run_id].append(number)
    for numbers in chunks.values():
        expected = list(range(len(numbers))) if complete else sorted(set(numbers))
        assert numbers == expected, numbers


def check_streams(streams: list[tuple[list[StreamEvent], bool]]) -> None:
    """Each stream's events (read whole, or not) keep promises 1-4, and its runs'
    chunks arrive once each, in order."""
    for seen, whole in streams:
        check_events(seen, complete=whole)
        _check_chunks(seen, complete=whole)


async def _run_case(case: Case) -> None:
    watchers = [Watcher(kind) for kind in case.watchers]
    streams: list[tuple[list[StreamEvent], bool]] = []
    async with open_runtime() as rt:
        for watcher in watchers:
            await rt.subscribe(watcher, drop_oldest=watcher.kind == "drop", capacity=4)

        async def one(parent: tuple[Step, ...], child: tuple[Step, ...], leave: int | None) -> None:
            tree = Tree(parent, Tree(child, name="child"))
            seen: list[StreamEvent] = []
            async with rt.astream_events(tree, 0, capacity=case.capacity) as stream:
                async for event in stream:
                    seen.append(event)
                    if leave is not None and len(seen) >= leave:
                        break
            streams.append((seen, leave is None))

        async with trio.open_nursery() as nursery:
            for (parent, child), leave in zip(case.trees, case.leave_at, strict=True):
                nursery.start_soon(one, parent, child, leave)
    check_streams(streams)
    for watcher in watchers:
        by_root: dict[str, list[StreamEvent]] = defaultdict(list)
        for event in watcher.events:
            by_root[event.parent_ids[0] if event.parent_ids else event.run_id].append(event)
        lossless = watcher.kind == "slow"
        for events in by_root.values():
            # A stream left early cancels its run: its events still end in order. A
            # dropping watcher may lose any event but a terminal one (a start too).
            check_events(events, complete=lossless, filtered=watcher.kind == "drop")
            if watcher.kind != "first":
                _check_chunks(events, complete=lossless)


@given(cases())
def test_streams_and_watchers_keep_every_promise_whoever_delivers(case: Case) -> None:
    run_watched(lambda: _run_case(case), seconds=60, label=repr(case))


# -- starts and ends handled by their senders -------------------------------------------


def _quiet_tree() -> Tree:
    """Three runs, parent to grandchild, that stream nothing: starts and ends only."""
    leaf = Tree((Step(),), name="leaf")
    return Tree((Step(child=True),), Tree((Step(child=True),), leaf, name="middle"))


async def test_an_idle_tracer_leaves_starts_and_ends_to_their_senders() -> None:
    async with open_runtime() as rt:
        await trio.testing.wait_all_tasks_blocked()
        mailbox = rt._tracer.mailbox
        sent = mailbox.sent
        async with rt.astream_events(_quiet_tree(), 0) as stream:
            events = [event async for event in stream]
        assert mailbox.sent == sent  # no mail: each sender handled its own
    check_events(events)
    assert [e.event for e in events] == ["on_chain_start"] * 3 + ["on_chain_end"] * 3


async def test_starts_and_ends_a_watcher_cannot_take_wait_for_it_in_the_tracer() -> None:
    release = trio.Event()

    class Stuck:
        def __init__(self) -> None:
            self.events: list[StreamEvent] = []

        async def on_event(self, event: StreamEvent) -> None:
            await release.wait()
            self.events.append(event)

    stuck = Stuck()
    async with open_runtime() as rt:
        await rt.subscribe(stuck, capacity=1)
        mailbox = rt._tracer.mailbox
        sent = mailbox.sent
        async with trio.open_nursery() as nursery:
            seen: list[StreamEvent] = []

            async def read() -> None:
                async with rt.astream_events(_quiet_tree(), 0) as stream:
                    seen.extend([event async for event in stream])

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert mailbox.sent > sent  # the watcher was full: the tracer waits for it
            assert len(seen) < 6
            release.set()
    check_events(seen)
    check_events(stuck.events)
    assert [e.event for e in stuck.events] == [e.event for e in seen]


async def test_with_many_runs_open_starts_and_ends_are_still_handled_by_their_senders() -> None:
    # However many runs are open, a run's start, chunks and end go from their senders
    # straight to its stream while the tracer is idle: the tracer's mailbox is not
    # used, and the stream's events keep every promise (issue 29: up to 8 open runs,
    # starts and ends went to the tracer's task beyond that).
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        blocked = Waiting(name="blocked", block=True)
        for _ in range(20):
            nursery.start_soon(rt.ainvoke, blocked, "")
        await trio.testing.wait_all_tasks_blocked()
        assert rt.open_runs == 20
        mailbox = rt._tracer.mailbox
        sent = mailbox.sent
        async with rt.astream_events(_quiet_tree(), 0) as stream:
            events = [event async for event in stream]
        assert mailbox.sent == sent
        check_events(events)
        assert len(events) == 6
        nursery.cancel_scope.cancel()
