"""What a hostile review of the journal found, each kept found: two runtimes of one
process on one store, a run's non-JSON metadata, a read cancelled while the end is made
durable, a stream cancelled before its run starts, a caller that leaves early, and a
thread deleted and made again elsewhere."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn
from runtime import Performer, Run, RunCancelledError, open_runtime
from runtime._sqlite_store import SQLiteStore
from runtime._store import WriteBatch

from .performers import Step


class Sleeper(Performer[str, str]):
    """Takes a while."""

    name = "sleeper"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # shared, read-only

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def perform(self, message: str, run: Run) -> str:
        await trio.sleep(0.5)
        return "done"


async def test_two_runtimes_of_one_process_do_not_end_each_others_runs(url: str) -> None:
    async with open_runtime(store=url) as a, trio.open_nursery() as nursery:
        outcome: list[Any] = []

        async def long_run() -> None:
            outcome.append(await a.ainvoke(Sleeper(), "x", run_id="A-run"))

        nursery.start_soon(long_run)
        await trio.sleep(0.1)
        async with open_runtime(store=url) as b:  # sweeps at open
            assert (await b.get_run("A-run")).status == "running"
            assert await b.journal.sweep() == 0 if b.journal else False
    assert outcome == ["done"]


async def test_a_runs_metadata_without_a_json_form_does_not_break_the_runtime(url: str) -> None:
    agent = Agent(model=ScriptedChatModel([ScriptedTurn("hi")]), name="a")
    when = datetime.datetime(2026, 12, 6)
    async with open_runtime(store=url) as rt:
        assert (await rt.ainvoke(agent, "x", metadata={"when": when}, run_id="m")).output
        assert (await rt.ainvoke(agent, "y")).output  # the runtime goes on
        assert "2026" in str((await rt.get_run("m")).config["metadata"]["when"])


class SlowStore(SQLiteStore):
    def write(self, batch: WriteBatch) -> None:
        time.sleep(0.3)
        super().write(batch)


async def test_a_read_cancelled_while_the_end_is_made_durable_gets_the_end_next(
    url: str,
) -> None:
    async with (
        open_runtime(store=SlowStore(url)) as rt,
        rt.astream_events(Step(), "a b", run_id="R") as stream,
    ):
        events = []
        while True:
            with trio.move_on_after(0.05):  # a keep-alive between reads
                try:
                    events.append(await stream.__anext__())
                except StopAsyncIteration:
                    break
        assert events[-1].is_terminal and events[-1].run_id == "R"
        assert (await rt.get_run("R")).status == "ok"


async def test_a_stream_cancelled_before_its_run_starts_ends_at_once(url: str) -> None:
    started = trio.Event()
    busy = Step(name="busy", block=True, started=started, max_concurrency=1)
    async with open_runtime(store=url) as rt, trio.open_nursery() as nursery:

        async def first() -> None:
            async with rt.astream_events(busy, "a") as s:
                async for _ in s:
                    pass

        nursery.start_soon(first)
        await started.wait()
        async with rt.astream_events(busy, "b") as waiting:  # still in the mailbox
            waiting.cancel()
            with trio.fail_after(5), pytest.raises(RunCancelledError):
                async for _ in waiting:
                    pass
        assert rt.journal is not None
        nursery.cancel_scope.cancel()


async def test_a_caller_that_leaves_early_loses_nothing_of_the_runs_record(url: str) -> None:
    agent = Agent(model=ScriptedChatModel([ScriptedTurn("hello"), ScriptedTurn("again")]), name="a")
    async with open_runtime(store=SlowStore(url)) as rt:
        async with rt.astream(agent, "hi", run_id="early", tags=["t"], thread_id="th") as s:
            async for _ in s:
                break  # leaves at once: the run is cancelled
        await trio.sleep(1.0)
        record = await rt.get_run("early")
        assert record.config.get("tags") == ["t"] and record.thread_id == "th"
        await rt.ainvoke(agent, "hi", run_id="whole", thread_id="th")
        history = await rt.threads.history("th")
        ok = [r for r in history.runs if r.status == "ok"]
        assert len(history.messages) == 2 * len(ok)  # each run's turn, once
        assert rt.journal is not None and rt.journal.open_trees == 0
