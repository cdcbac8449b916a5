"""A hostile review of stop 41 (schema 5's thread segments, quick structuring, the
viewer board's first-token mode)."""

from __future__ import annotations

import time
from typing import Literal

import attrs
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from actors import ScriptedChatModel, ScriptedTurn
from actors.serve._board import RunBoard
from protocol import CUSTOM_EVENT, EventData, StreamEvent
from runtime import open_runtime
from runtime._journal import Journal
from runtime._reads import READ_THREADS
from runtime._store import SCHEMA_VERSION, Owner, StoreError
from tests.postgres import Cluster
from tests.test_subscriber_pacing import DELAY, TOKENS, Recorder, model


async def test_a_first_only_subscriber_gets_one_stream_event_per_run_while_another_flips(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The viewer board switches what it takes as pages come and go; the tracer routes
    # the open runs afresh. Another subscriber that takes each run's first stream event
    # only (the OpenTelemetry exporter) must not be given a second one each time.
    first_only = Recorder(stream_events="first")
    switching = Recorder(stream_events="first")
    async with open_runtime() as rt:
        await rt.subscribe(first_only)
        attachment = await rt.subscribe(switching)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(model().ainvoke, "go")
            for _ in range(3):  # a page opens and closes, three times, mid-run
                await trio.sleep(TOKENS * DELAY / 8)
                await attachment.stream_events("all")
                await trio.sleep(TOKENS * DELAY / 8)
                await attachment.stream_events("first")
        await trio.sleep(0.1)
    streamed = [e.seq for _, e in first_only.seen if e.phase == "stream"]
    assert streamed == [1]
    assert [e.phase for _, e in first_only.seen if e.phase != "stream"] == ["start", "end"]


async def test_a_page_that_leaves_while_the_board_fits_leaves_it_fitting_the_pages_left() -> None:
    # Page A comes (the board starts to take every stream event) and page B comes while
    # A's request to the runtime waits at its checkpoint (B sees the board taking "all"
    # and leaves the fitting to it); A leaves then (its request cancelled mid-fit). B
    # still watches: the board's subscription must take every stream event, as
    # ``taking`` says, not each run's first only until every page has left.
    board = RunBoard()
    board.taking = "first"
    async with open_runtime() as rt:
        attachment = await rt.subscribe(board, drop_oldest=True)
        [subscription] = attachment._subscriptions
        gate = trio.Event()

        class Checkpointed:
            """The attachment, its checkpoint held open until ``gate`` is set."""

            async def stream_events(self, which: Literal["all", "first"]) -> None:
                await gate.wait()
                await attachment.stream_events(which)

        board.attachment = Checkpointed()  # type: ignore[assignment]
        async with trio.open_nursery() as nursery:

            async def page_a(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                # as the viewer's events() does
                with trio.CancelScope() as scope:
                    task_status.started(scope)
                    board.watchers += 1
                    try:
                        await board.fit()
                        await trio.sleep_forever()
                    finally:
                        board.watchers -= 1
                        if not board.watchers:
                            with trio.CancelScope(shield=True):
                                await board.fit()

            a = await nursery.start(page_a)
            await wait_all_tasks_blocked()
            board.watchers += 1  # page B
            assert str(board.taking) == "all"
            a.cancel()  # A leaves
            await wait_all_tasks_blocked()
            gate.set()  # the checkpoint passed
        assert board.watchers == 1
        await board.fit()  # asked again (a third page), it changes nothing more
        assert str(board.taking) == "all"
        assert subscription.first_chunk_only is False


async def test_a_page_that_comes_while_a_runs_own_stream_lags_sees_its_text_whole_so_far(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A page comes mid-run: the board starts taking every stream event (routed afresh
    # by the tracer), and catches up the tokens it did not take from the live run's
    # buffer. That buffer is filled by the run's own stream as its client reads it, a
    # little (or, for a slow client, a lot) behind the tracer: the tokens the tracer
    # gave the run's stream but its reader had not read yet are in neither.
    words = tuple(f"w{i} " for i in range(40))
    slow = ScriptedChatModel([ScriptedTurn(tokens=words)], token_delay=0.01)
    board = RunBoard()
    board.taking = "first"
    async with open_runtime() as rt:
        board.attachment = await rt.subscribe(board, drop_oldest=True)
        buffer: list[StreamEvent] = []  # the live run's buffer (LiveRun.events)
        async with slow.astream_events("q") as events:
            async for event in events:
                buffer.append(event)
                if event.phase == "stream" and event.seq == 5:
                    break  # its client reads no more for a while
            await trio.sleep(0.1)  # ten more tokens, in the run's stream's queue
            # the viewer's events(): a page comes
            board.watchers += 1
            await board.fit()
            board.catch_up(buffer)
            await trio.sleep(0.1)  # ten more, and the board takes them (20 times a second)
            [run_id] = [e.run_id for e in buffer if e.phase == "stream"][:1]
            text = "".join(board.runs[run_id].text)
            assert "".join(words).startswith(text), text  # no hole in the page's text
            async for event in events:  # its client reads on: the hole fills
                buffer.append(event)
                if event.phase == "stream" and event.seq == 20:
                    break
            await trio.sleep(0.1)
            text = "".join(board.runs[run_id].text)
            assert "".join(words).startswith(text) and "w25 " in text, text
            buffer += [event async for event in events]
            await trio.sleep(0.1)
            assert "".join(board.runs[run_id].text) == "".join(words)


async def test_a_custom_event_the_board_had_queued_when_a_page_came_is_kept(
    autojump_clock: trio.abc.Clock,
) -> None:
    # While no page watches, the board takes each run's first stream event and every
    # other one (starts, ends, custom events), 20 times a second. A page comes: the
    # board catches up a run's stream events from its live buffer, past a custom event
    # still waiting in its queue. Taken next, that custom event is the run's all the
    # same (only stream events already taken are passed over).
    recorder = Recorder()
    async with open_runtime() as rt:
        await rt.subscribe(recorder)
        await model().ainvoke("q")
        await trio.sleep(0.1)
    events = [e for _, e in recorder.seen]
    start, streamed, end = events[0], [e for e in events if e.phase == "stream"], events[-1]
    info = attrs.evolve(start.run, name="progress", kind="custom")
    custom = StreamEvent(CUSTOM_EVENT, info, 4, EventData(chunk={"done": 3}))
    later = [e if e.seq < 4 else attrs.evolve(e, seq=e.seq + 1) for e in streamed]
    board = RunBoard()
    board.taking = "first"
    board.apply(start)
    board.apply(later[0])  # the first token, all it takes of the stream
    board.watchers += 1  # a page comes: the board takes every stream event (fit)
    board.taking = "all"
    board.catch_up(later[:10])  # the live run's buffer: tokens 1-3 and 5-10
    assert board.apply(custom) is not None  # queued in the board's subscription
    for event in later[10:]:
        board.apply(event)
    board.apply(attrs.evolve(end, seq=end.seq + 1))
    record = board.record(start.run_id)
    assert record is not None
    assert [c["data"] for c in record["custom_events"]] == [{"done": 3}]
    assert record["text_chars"] == TOKENS  # every token, once


@pytest.mark.postgres
async def test_reads_left_on_postgresql_do_not_hold_the_heartbeat_back(
    postgres_cluster: Cluster,
) -> None:
    # Reads their clients left run on READ_THREADS (16) threads, more than the
    # PostgreSQL store's pool has connections (8): reads the database holds up (a
    # table locked by a migration, a VACUUM FULL, a slow server) take every connection
    # and queue for more, and the heartbeat queued behind them for one of its own. The
    # owner's record must be refreshed every beat all the same (lease 1 s).
    import psycopg

    from runtime._postgres_store import PostgresStore

    url = postgres_cluster.new_database()
    journal = Journal(PostgresStore(url), heartbeat=0.05, lease=1.0)
    await journal.open()
    watcher = PostgresStore(url)
    watcher.open()
    gaps: list[float] = []
    with psycopg.connect(url) as locker:  # a transaction open: the table stays locked
        locker.execute("LOCK TABLE troupe_threads IN ACCESS EXCLUSIVE MODE")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.serve)
            with trio.move_on_after(0.2):  # reads a client left, the database holding them
                for _ in range(READ_THREADS):
                    nursery.start_soon(journal.reads.read, journal.store.list_threads)
                await trio.sleep_forever()
            deadline = trio.current_time() + 2.0
            while trio.current_time() < deadline:
                await trio.sleep(0.1)
                owners = await trio.to_thread.run_sync(watcher.owners)
                (mine,) = [o for o in owners if o.owner_id == journal.owner.owner_id]
                gaps.append(time.time() - mine.seen_at)
            locker.rollback()
            journal.recorder.close()
    watcher.close()
    assert max(gaps) < 0.5, gaps  # beat on time: never near the lease


@pytest.mark.postgres
def test_the_postgresql_heartbeats_connection_is_made_again_after_a_restart(
    postgres_cluster: Cluster,
) -> None:
    # The heartbeat's connection is its own, not the pool's: checked before each beat
    # as the pool checks its own, so that the first beat after a restart is not lost.
    from runtime._postgres_store import PostgresStore

    store = PostgresStore(postgres_cluster.new_database())
    store.open()
    try:
        owner = Owner("o1", "host", 1, 1.0, 2.0)
        store.heartbeat(owner)
        assert store.schema()[0] == SCHEMA_VERSION
        postgres_cluster.restart()
        store.heartbeat(attrs.evolve(owner, seen_at=3.0))  # the next beat succeeds
        assert [o.seen_at for o in store.owners()] == [3.0]
        assert store.schema()[0] == SCHEMA_VERSION
    finally:
        store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.heartbeat(owner)
