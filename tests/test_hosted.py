"""Runs hosted elsewhere read with the runtime's own stream classes: a ``HostedStream``
reads what its ``RunSource`` puts into its ``RunFeed`` as an ``EventStream`` reads its
run (same events, end, output, pause, errors and checkpoints). The host here is this
process's runtime, pumped into the feed by a task, as a Ray host's link fills it; and
a store (``Runtime.join``), whose task reads a run's journal into the feed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import Paused, PendingRequest, StreamEvent
from runtime import (
    EventStream,
    HostedChunkStream,
    HostedStream,
    JournalError,
    RunCancelledError,
    RunFeed,
    RunLogStream,
    RunPaused,
    Runtime,
    StreamUsageError,
    UnknownRunError,
    open_runtime,
)
from runtime._stored import READ_AHEAD

from .test_checkpoints import (
    CHUNKS,
    Chunks,
    read_checking_every_so_many,
    read_each_after_a_cancelled_read,
)


class Fails(Chunks):
    """Streams its chunks, then fails."""

    async def perform(self, message: int, run: Any) -> int:
        await run.emit_many(list(range(message)))
        raise KeyError("no such thing")


class Slow(Chunks):
    """Streams "first", then waits for ever."""

    async def perform(self, message: int, run: Any) -> int:
        await run.emit("first")
        await trio.sleep_forever()


class LocalSource:
    """A host in this process: starts the run with the runtime's own stream and puts
    its events into the feed from a task of its own."""

    def __init__(self, rt: Runtime, nursery: trio.Nursery, target: Any, input: Any) -> None:
        self.rt = rt
        self.nursery = nursery
        self.target = target
        self.input = input
        self.feed: RunFeed | None = None
        self.stream: EventStream | None = None
        self.reads = 0  # how often the feed said its reader read more
        self.cancels = 0

    async def open(self, feed: RunFeed) -> None:
        self.feed = feed
        feed.acknowledge(16, self._read_more)
        self.stream = self.rt.astream_events(self.target, self.input, run_id=feed.run_id)
        await self.stream.__aenter__()
        self.nursery.start_soon(self._pump)

    def _read_more(self) -> None:
        self.reads += 1

    async def _pump(self) -> None:
        assert self.feed is not None and self.stream is not None
        error: BaseException | None = None
        try:
            async for event in self.stream:
                self.feed.put(event)
        except Exception as exc:
            error = exc
        finally:
            await self.stream.__aexit__(None, None, None)
        self.feed.end(error)

    def cancel(self) -> None:
        self.cancels += 1
        assert self.stream is not None
        self.stream.cancel()

    async def close(self) -> None:
        assert self.feed is not None
        if not self.feed.ended:
            self.cancel()
            with trio.CancelScope(shield=True):
                await self.feed.wait_ended()


async def _all_in(source: LocalSource) -> None:
    """Wait until the host has put every event into the feed."""
    assert source.feed is not None
    await source.feed.wait_ended()


async def test_a_hosted_stream_gives_what_the_local_stream_gives() -> None:
    async with open_runtime() as rt:
        async with rt.astream_events(Chunks(), 5, run_id="local") as local:
            expected = [(e.event, e.name, e.chunk, e.status) async for e in local]
        async with trio.open_nursery() as nursery:
            source = LocalSource(rt, nursery, Chunks(), 5)
            async with HostedStream(source, "hosted") as hosted:
                assert hosted.run_id == "hosted"
                got = [(e.event, e.name, e.chunk, e.status) async for e in hosted]
                assert hosted.output == 5 and hosted.paused is None
                assert hosted.handler_errors == []
    assert got == expected
    assert source.cancels == 0  # it had ended: leaving cancels nothing


async def test_a_hosted_chunk_stream_gives_the_runs_own_chunks_and_acknowledges_the_rest() -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        source = LocalSource(rt, nursery, Chunks(), 40)
        async with HostedChunkStream(source, "hosted") as chunks:
            got = [chunk async for chunk in chunks]
            assert chunks.output == 40
        assert source.feed is not None
        # Every event counts as read: the chunks read and the events passed over.
        assert source.feed.consumed == 40 + 2
        assert source.reads == (40 + 2) // 16
    assert got == list(range(40))


async def test_a_hosted_run_log_is_the_runtime_s_run_log() -> None:
    async with open_runtime() as rt:
        async with rt.astream_log(Chunks(), 3) as log:
            expected = [patch.ops async for patch in log]
        async with trio.open_nursery() as nursery:
            source = LocalSource(rt, nursery, Chunks(), 3)
            events = HostedStream(source, expected[0][0]["value"]["id"])
            async with RunLogStream(events, None, diff=True) as hosted_log:
                got = [patch.ops async for patch in hosted_log]
    assert len(got) == len(expected)
    assert got[-1] == expected[-1]


async def test_a_failed_hosted_run_raises_its_own_error_after_its_events() -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        source = LocalSource(rt, nursery, Fails(), 2)
        seen: list[StreamEvent] = []
        with pytest.raises(KeyError, match="no such thing"):
            async with HostedStream(source, "hosted") as hosted:
                async for event in hosted:
                    seen.append(event)  # noqa: PERF401
    assert [e.status for e in seen][-1] == "error"
    assert hosted.output is None


async def test_cancelling_a_hosted_run_ends_it_with_its_cancelled_event() -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        source = LocalSource(rt, nursery, Slow(), 1)
        stream = HostedStream(source, "hosted")
        with pytest.raises(StreamUsageError, match="enter the stream"):
            stream.cancel()
        with pytest.raises(StreamUsageError, match="enter the stream"):
            stream.__aiter__()
        seen: list[StreamEvent] = []
        with pytest.raises(RunCancelledError):
            async with stream:
                async for event in stream:
                    seen.append(event)
                    if event.chunk == "first":
                        stream.cancel()
        assert seen[-1].status == "cancelled" and source.cancels == 1
        with pytest.raises(StreamUsageError, match="only once"):
            await stream.__aenter__()


async def test_leaving_a_hosted_stream_early_cancels_its_run() -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        source = LocalSource(rt, nursery, Slow(), 1)
        async with HostedStream(source, "hosted") as stream:
            async for event in stream:
                if event.chunk == "first":
                    break
        assert source.cancels == 1
        assert source.feed is not None and source.feed.ended


def _payer() -> Agent:
    """An agent whose run pauses for a person's approval of its one call."""

    @tool(needs_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    model = ScriptedChatModel([ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5})])])
    return Agent(model=model, tools=[pay], name="payer")


async def test_a_paused_hosted_run_says_what_it_waits_for(tmp_path: Path) -> None:
    agent = _payer()
    async with (
        open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt,
        trio.open_nursery() as nursery,
    ):
        source = LocalSource(rt, nursery, agent, "pay five")
        async with HostedStream(source, "hosted") as stream:
            events = [event async for event in stream]
    assert events[-1].status == "paused"
    assert isinstance(stream.paused, RunPaused) and stream.paused.run_id == "hosted"
    assert [p.name for p in stream.paused.pending] == ["pay"]
    assert stream.output is None


def test_a_feed_ends_once_and_as_its_last_event_says() -> None:
    feed = RunFeed("r")
    feed.end(None)
    feed.end(KeyError("later"))  # the first end stands
    assert feed.reply.value is None and feed.reply.error is None
    paused = RunFeed("r")
    paused._paused = Paused((PendingRequest("p1", "approval", "pay", {}),))
    paused.end(None)
    assert isinstance(paused.reply.error, RunPaused)
    assert [p.id for p in paused.reply.error.pending] == ["p1"]


async def test_every_hosted_read_is_a_cancel_point() -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        source = LocalSource(rt, nursery, Chunks(), CHUNKS)
        async with HostedStream(source, "hosted") as stream:
            got = [await stream.__anext__()]
            await _all_in(source)
            got += await read_each_after_a_cancelled_read(stream)
    assert len(got) == CHUNKS + 2
    assert [e.chunk for e in got[1:-1]] == list(range(CHUNKS))


async def test_a_hosted_stream_hands_over_the_events_already_waiting() -> None:
    # (what an edge writes at once: ready() saw none of a feed's events when it looked
    # at the base channel's count, which the feed did not keep)
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        source = LocalSource(rt, nursery, Chunks(), CHUNKS)
        async with HostedStream(source, "hosted") as stream:
            first = await stream.__anext__()
            await _all_in(source)
            assert source.feed is not None and len(source.feed) == CHUNKS + 1
            waiting = stream.ready(CHUNKS)
            assert len(source.feed) == 1  # the end, for the next read or ready()
            rest = [event async for event in stream]
    assert first.phase == "start" and [e.chunk for e in waiting] == list(range(CHUNKS))
    assert [e.status for e in rest] == ["ok"]


async def test_a_hosted_reader_yields_at_least_every_so_many_events() -> None:
    async with open_runtime() as rt, trio.open_nursery() as nursery:
        source = LocalSource(rt, nursery, Chunks(), CHUNKS)
        async with HostedChunkStream(source, "hosted") as chunks:
            await _all_in(source)
            assert chunks.buffered == CHUNKS  # all of them here: no read has to wait
            read = await read_checking_every_so_many(chunks)
    assert read == list(range(CHUNKS))


async def test_a_run_its_host_cannot_start_raises_what_kept_it() -> None:
    class Refusing:
        async def open(self, feed: RunFeed) -> None:
            await trio.lowlevel.checkpoint()
            raise LookupError("no performer named 'nobody'")

        def cancel(self) -> None:
            raise AssertionError("nothing to cancel")

        async def close(self) -> None:
            raise AssertionError("nothing to close")

    stream = HostedStream(Refusing(), "hosted")
    with pytest.raises(LookupError, match="nobody"):
        async with stream:
            pass
    assert stream.output is None and stream.buffered == 0
    with pytest.raises(StreamUsageError, match="only once"):
        await stream.__aenter__()


# -- a run read back from a store: a hosted stream whose host is the store ------------


class Waits(Chunks):
    """Streams "started", then waits to be cancelled."""

    async def perform(self, message: int, run: Any) -> int:
        await run.emit("started")
        await trio.sleep_forever()


async def _until_journaled(rt: Runtime, run_id: str) -> None:
    """Another runtime on the store sees a run once its first events are written."""
    with trio.fail_after(10):
        while True:
            try:
                await rt.get_run(run_id)
                return
            except UnknownRunError:
                await trio.sleep(0.01)


async def test_a_joined_run_is_read_as_every_hosted_run(tmp_path: Path) -> None:
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        async with rt.astream_events(Chunks(), CHUNKS) as stream:
            streamed = [(e.event, e.run_id, e.seq, e.chunk) async for e in stream]
        joined = rt.join(stream.run_id)
        assert isinstance(joined, HostedStream)
        with pytest.raises(StreamUsageError, match="enter the stream"):
            joined.__aiter__()
        async with joined:
            assert joined.record is not None and joined.record.status == "ok"
            got = [(e.event, e.run_id, e.seq, e.chunk) async for e in joined]
            assert joined.output == CHUNKS and joined.paused is None
            assert joined.position == len(streamed)
        with pytest.raises(StreamUsageError, match="only once"):
            await joined.__aenter__()
        async with rt.join(stream.run_id, after=len(streamed)) as caught_up:
            assert [e async for e in caught_up] == []
            assert caught_up.output == CHUNKS and caught_up.position == len(streamed)
    assert got == streamed


async def test_every_joined_read_is_a_cancel_point_and_yields_every_so_many(
    tmp_path: Path,
) -> None:
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        async with rt.astream_events(Chunks(), CHUNKS, run_id="finished") as stream:
            async for _ in stream:
                pass
        async with rt.join("finished") as joined:
            got = await read_each_after_a_cancelled_read(joined)
        assert [e.chunk for e in got[1:-1]] == list(range(CHUNKS))
        async with rt.join("finished", after=1) as joined:
            read = await read_checking_every_so_many(joined)
        assert [e.chunk for e in read[:-1]] == list(range(CHUNKS))


async def test_a_join_reads_ahead_of_its_reader_within_a_bound(tmp_path: Path) -> None:
    n = 4 * READ_AHEAD
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        await rt.ainvoke(Chunks(), n, run_id="long")
        async with rt.join("long") as joined:
            await trio.sleep(0.1)  # its task has read all it may
            assert joined.buffered == READ_AHEAD
            first = [await joined.__anext__() for _ in range(READ_AHEAD)]
            await trio.sleep(0.1)
            assert READ_AHEAD // 2 <= joined.buffered <= READ_AHEAD
            rest = [e async for e in joined]
    assert [e.chunk for e in first + rest][1:-1] == list(range(n))


async def test_leaving_a_join_leaves_the_run_and_cancelling_it_cancels_it_anywhere(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    async with (
        open_runtime(store=url) as rt,
        open_runtime(store=url) as other,
        rt.astream_events(Waits(), 1) as stream,
    ):
        async for event in stream:
            if event.chunk == "started":
                break
        for joiner in (rt, other):  # this process, and another on the store
            await _until_journaled(joiner, stream.run_id)
            async with joiner.join(stream.run_id) as joined:
                async for event in joined:
                    if event.chunk == "started":
                        break
        assert (await rt.get_run(stream.run_id)).status == "running"
        with trio.move_on_after(0.2) as waited:
            await stream.__anext__()
        assert waited.cancelled_caught  # the run goes on
        async with other.join(stream.run_id) as joined:
            joined.cancel()  # through the store: the run is in the other runtime
            events = [e async for e in joined]  # its end comes; nothing is raised
            assert joined.output is None and joined.paused is None
        with pytest.raises(RunCancelledError):
            async for _ in stream:
                pass
    assert events[-1].status == "cancelled" and events[-1].run_id == stream.run_id


async def test_a_joined_paused_run_says_what_it_waits_for(tmp_path: Path) -> None:
    agent = _payer()
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay five", run_id="paying")
        async with rt.join("paying") as joined:
            events = [e async for e in joined]
    assert events[-1].status == "paused"
    assert isinstance(joined.paused, RunPaused) and joined.paused.run_id == "paying"
    assert [p.name for p in joined.paused.pending] == ["pay"]


async def test_a_journal_that_ends_before_its_run_did_is_an_error(tmp_path: Path) -> None:
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        await rt.ainvoke(Chunks(), 3, run_id="cut")
        with sqlite3.connect(tmp_path / "runs.db") as db:
            db.execute("DELETE FROM troupe_segments")
        with pytest.raises(UnknownRunError):
            async with rt.join("never-was"):
                pass
        with pytest.raises(JournalError, match=r"ends before the run did \(it is ok\)"):
            async with rt.join("cut") as joined:
                async for _ in joined:
                    pass
        with pytest.raises(ValueError, match="after must be a whole number"):
            rt.join("cut", after=-1)
