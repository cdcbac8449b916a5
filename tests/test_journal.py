"""The run journal on SQLite: runs journaled as they happen, ends durable before the
caller hears, threads, runs read back (finished, live, from another runtime on the same
file), runs of a dead process ended when the store is opened again, and failures of the
store told to the runs they affect."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from actors.testing import check_events
from protocol import AgentOutput, AssistantMessage, ToolMessage, UserMessage, structure_any
from runtime import (
    JournalError,
    NoStoreError,
    Performer,
    Run,
    RunCancelledError,
    Store,
    StoreError,
    UnknownRunError,
    UnknownThreadError,
    open_runtime,
    open_store,
)
from runtime._sqlite_store import SQLiteStore
from runtime._store import SCHEMA_VERSION, Owner, RunRecord, Segment, WriteBatch, this_host


def opened(url: str) -> SQLiteStore:
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    store.open()
    return store


async def test_a_run_is_journaled_and_reads_back_as_it_streamed(url: str) -> None:
    agent = make_cat_agent()
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(agent, "where is the cat?") as stream:
            streamed = [event async for event in stream]
        async with rt.join(stream.run_id) as joined:
            read_back = [event async for event in joined]
        assert joined.position == len(streamed)
        record = await rt.get_run(stream.run_id)
    assert [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in read_back] == [
        e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in streamed
    ]
    check_events(read_back)
    assert record.status == "ok" and record.performer == "Agent" and record.kind == "chain"
    assert record.input == {"input": "where is the cat?"}
    assert record.ended_at is not None and record.ended_at >= record.created_at


async def test_join_after_skips_what_the_client_has(url: str) -> None:
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(make_cat_agent(), "where is the cat?") as stream:
            streamed = [event async for event in stream]
        async with rt.join(stream.run_id, after=10) as joined:
            rest = [event async for event in joined]
    assert [(e.run_id, e.seq) for e in rest] == [(e.run_id, e.seq) for e in streamed[10:]]


class SlowStore(SQLiteStore):
    """Writes take a while: a caller that heard of a run's end before its write would
    find the run still running in the store."""

    def write(self, batch: WriteBatch) -> None:
        time.sleep(0.05)
        super().write(batch)


async def test_a_callers_hears_of_the_end_only_once_it_is_durable(url: str) -> None:
    store = SlowStore(url)
    agent = make_cat_agent()
    async with open_runtime(store=store) as rt:
        async with rt.astream_events(agent, "where is the cat?") as stream:
            async for event in stream:
                if event.is_terminal and event.run_id == stream.run_id:
                    assert opened(url).get_run(stream.run_id).status == "ok"  # type: ignore[union-attr]
        await rt.ainvoke(agent, "where is the cat?", run_id="invoked")
        assert opened(url).get_run("invoked").status == "ok"  # type: ignore[union-attr]
        with pytest.raises(TypeError, match="takes a string"):
            await rt.ainvoke(agent, 12)  # refused before it starts: nothing journaled
        async with rt.astream(agent, "where is the cat?", run_id="chunks") as chunks:
            async for _ in chunks:
                pass
            assert opened(url).get_run("chunks").status == "ok"  # type: ignore[union-attr]


async def test_a_failed_run_is_journaled_as_failed(url: str) -> None:
    @tool
    async def explode(x: int) -> int:
        """Explode."""
        raise KeyError("boom")

    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("explode", {"x": 1})]), ScriptedTurn("done")]
    )
    agent = Agent(model=model, tools=[explode], tool_errors="raise")
    async with open_runtime(store=url) as rt:
        with pytest.raises(Exception, match="boom"):
            await rt.ainvoke(agent, "go", run_id="failing")
        record = await rt.get_run("failing")
        async with rt.join("failing") as joined:
            events = [e async for e in joined]
    assert record.status == "error" and "boom" in (record.error or "")
    check_events(events)
    assert events[-1].status == "error"


def _agent(*answers: str) -> Agent:
    return Agent(model=ScriptedChatModel([ScriptedTurn(a) for a in answers]), name="chat")


async def test_a_thread_keeps_the_conversation(url: str) -> None:
    agent = _agent("Hello Ann.", "You are Ann.")
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(agent, "I am Ann", thread_id="t-1")
        second: AgentOutput = await rt.ainvoke(agent, "Who am I?", thread_id="t-1")
        history = await rt.threads.history("t-1")
        listed = await rt.threads.list()
    assert [m.content for m in second.messages] == [
        "I am Ann",
        "Hello Ann.",
        "Who am I?",
        "You are Ann.",
    ]
    assert [type(m) for m in history.messages] == [
        UserMessage,
        AssistantMessage,
        UserMessage,
        AssistantMessage,
    ]
    assert [m.content for m in history.messages] == [m.content for m in second.messages]
    assert len(history.runs) == 2 and {r.thread_id for r in history.runs} == {"t-1"}
    assert history.added_by[:2] == [history.runs[1].run_id] * 2
    assert [t.thread_id for t in listed] == ["t-1"] and listed[0].messages == 4


async def test_a_thread_outlives_its_runtime(url: str) -> None:
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(_agent("Hello Ann.", "You are Ann."), "I am Ann", thread_id="t-2")
    async with open_runtime(store=url) as rt:
        # (a scripted model answers turn n of a conversation with its n-th turn)
        agent = _agent("Hello Ann.", "You are Ann.")
        out = await rt.ainvoke(agent, "Who am I?", thread_id="t-2")
    assert [m.content for m in out.messages] == [
        "I am Ann",
        "Hello Ann.",
        "Who am I?",
        "You are Ann.",
    ]


async def test_a_thread_keeps_tool_calls_and_leaves_the_system_prompt_out(url: str) -> None:
    @tool
    async def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("add", {"a": 1, "b": 2})]), ScriptedTurn("3")]
    )
    agent = Agent(model=model, tools=[add], system_prompt="Be brief.")
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(agent, "1+2?", thread_id="t-3")
        history = await rt.threads.history("t-3")
    assert [type(m) for m in history.messages] == [
        UserMessage,
        AssistantMessage,
        ToolMessage,
        AssistantMessage,
    ]
    assert history.messages[1].tool_calls[0].name == "add"


async def test_threads_api_and_its_errors(url: str) -> None:
    async with open_runtime(store=url) as rt:
        made = await rt.threads.create(metadata={"user": "ann"})
        assert (await rt.threads.get(made.thread_id)).metadata == {"user": "ann"}
        with pytest.raises(ValueError, match="already exists"):
            await rt.threads.create(made.thread_id)
        with pytest.raises(UnknownThreadError):
            await rt.threads.get("nope")
        with pytest.raises(UnknownThreadError):
            await rt.threads.delete("nope")
        with pytest.raises(ValueError, match="thread_id"):
            await rt.threads.get("x" * 257)
        with pytest.raises(ValueError, match="thread_id"):
            await rt.ainvoke(_agent("hi"), "hi", thread_id="bad\nid")
        with pytest.raises(TypeError, match="thread_id"):
            await rt.ainvoke(_agent("hi"), "hi", thread_id=7)  # type: ignore[arg-type]
        model = ScriptedChatModel([ScriptedTurn("hi")])
        with pytest.raises(TypeError, match="keeps no threads"):
            await rt.ainvoke(model, "hi", thread_id="t")
        await rt.ainvoke(_agent("hi"), "hi", thread_id=made.thread_id, run_id="in-thread")
        await rt.threads.delete(made.thread_id)
        with pytest.raises(UnknownRunError):
            await rt.get_run("in-thread")
        with pytest.raises(UnknownRunError):
            async with rt.join("in-thread"):
                pass
    async with open_runtime() as rt:
        with pytest.raises(NoStoreError, match="store"):
            rt.threads  # noqa: B018
        with pytest.raises(NoStoreError):
            rt.join("x")


async def _known_to(runtime: Any, run_id: str) -> None:
    """Wait until ``runtime`` finds the run in its store: another process sees a run
    once its first events are journaled (one write, milliseconds after it starts; its
    stream yields events before that)."""
    with trio.fail_after(10):  # (a bound on the wait, not a timing)
        while True:
            try:
                await runtime.get_run(run_id)
                return
            except UnknownRunError:
                await trio.sleep(0.01)


async def test_a_live_run_is_followed_to_its_end_here_and_from_another_runtime(
    url: str,
) -> None:
    agent = make_cat_agent(token_delay=0.002)
    async with (
        open_runtime(store=url) as rt,
        open_runtime(store=url) as other,
        rt.astream_events(agent, "where is the cat?") as stream,
    ):
        first = [await stream.__anext__() for _ in range(5)]
        # (a join before the run's first write found no run: under load that write
        # came after the 0.05 s this test slept)
        await _known_to(other, stream.run_id)
        async with trio.open_nursery() as nursery:
            joins: dict[str, list[Any]] = {}

            async def join(name: str, runtime: Any) -> None:
                async with runtime.join(stream.run_id) as joined:
                    joins[name] = [e async for e in joined]

            nursery.start_soon(join, "here", rt)
            nursery.start_soon(join, "there", other)
            rest = [e async for e in stream]
    streamed = [(e.run_id, e.seq, e.event) for e in first + rest]
    assert [(e.run_id, e.seq, e.event) for e in joins["here"]] == streamed
    assert [(e.run_id, e.seq, e.event) for e in joins["there"]] == streamed


async def test_runs_of_a_dead_process_end_when_the_store_opens_again(url: str) -> None:
    # A process that died mid-run: its owner record names a pid that is gone, and its
    # run's journal stops after the start of a tool run.
    async with (
        open_runtime(store=url) as rt,
        rt.astream_events(make_cat_agent(), "where is the cat?") as stream,
    ):
        events = [e async for e in stream]
    cut = next(i for i, e in enumerate(events) if e.event == "on_tool_start") + 1
    store = opened(url)
    with sqlite3.connect(store.path) as db:
        records = store.read_records(stream.run_id)
        db.execute("DELETE FROM troupe_segments")
        db.execute("UPDATE troupe_runs SET status = 'running', ended_at = NULL, owner = 'dead'")
    decoded = 0
    kept: list[Any] = []
    for record in records:  # the records of the first `cut` events
        kept.append(record)
        if record[0] != "i":
            decoded += 1
        if decoded == cut:
            break
    store.write(WriteBatch(segments=[Segment(stream.run_id, 0, kept)]))
    gone = _a_dead_pid()
    store.heartbeat(Owner("dead", this_host(), gone, 1.0, time.time()))
    store.close()
    async with open_runtime(store=url) as rt:
        record = await rt.get_run(stream.run_id)
        async with rt.join(stream.run_id) as joined:
            after = [e async for e in joined]
    assert record.status == "error" and "stopped before the run ended" in (record.error or "")
    check_events(after)  # every run that started ended, exactly once
    ends = [e for e in after if e.status == "error"]
    assert ends[-1].run_id == stream.run_id and ends[-1].kind == "chain"  # the agent last
    assert "tool" in [e.kind for e in ends]
    assert all("pid" in (e.data.error or "") for e in ends)


def _a_dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


class FailingStore(SQLiteStore):
    """A store that refuses every write holding the run ``bad``."""

    def write(self, batch: WriteBatch) -> None:
        if any(s.root_id == "bad" for s in batch.segments) or any(
            r.run_id == "bad" for r in batch.runs
        ):
            raise StoreError(f"store {self.url!r}: a write failed: disk I/O error")
        super().write(batch)


async def test_a_store_that_fails_ends_the_runs_it_affects_and_no_others(url: str) -> None:
    agent = make_cat_agent(token_delay=0.001)
    async with open_runtime(store=FailingStore(url)) as rt:
        results: dict[str, Any] = {}

        async def run(run_id: str) -> None:
            try:
                results[run_id] = await rt.ainvoke(agent, "where is the cat?", run_id=run_id)
            except Exception as exc:
                results[run_id] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "bad")
            nursery.start_soon(run, "good")
        assert isinstance(results["bad"], JournalError)
        assert "journal failed" in str(results["bad"]) and "disk I/O" in str(results["bad"])
        assert isinstance(results["good"], AgentOutput)
        assert (await rt.get_run("good")).status == "ok"
        with pytest.raises(UnknownRunError):
            await rt.get_run("bad")
        # the runtime goes on, and keeps nothing of the failed run
        assert (await rt.ainvoke(agent, "where is the cat?")).output
        assert rt.journal is not None and rt.journal.open_trees == 0


async def test_a_reused_run_id_fails_that_run_alone(url: str) -> None:
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(_agent("one"), "hi", run_id="same")
    async with open_runtime(store=url) as rt:
        with pytest.raises(JournalError, match="journal failed"):
            await rt.ainvoke(_agent("two"), "hi", run_id="same")
        assert (await rt.ainvoke(_agent("three"), "hi")).output == "three"
        assert (await rt.get_run("same")).status == "ok"


@pytest.mark.parametrize(
    ("store_url", "expected"),
    [
        ("sqlite:///{tmp}/missing/dir/runs.db", "does not exist"),
        ("sqlite:///{tmp}", "cannot open"),
        ("mysql://localhost/db", "unknown kind of store"),
        ("sqlite:relative.db", "sqlite:///"),
    ],
)
async def test_a_store_that_cannot_be_opened_fails_the_start_in_one_line(
    tmp_path: Path, store_url: str, expected: str
) -> None:
    with pytest.raises(StoreError, match=expected) as raised:
        async with open_runtime(store=store_url.format(tmp=tmp_path)):
            pass
    assert "\n" not in str(raised.value)


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open") as raised:
        async with open_runtime(store=f"sqlite:///{path}"):
            pass
    assert "\n" not in str(raised.value)


def test_a_store_from_a_newer_troupe_is_refused(url: str) -> None:
    store = opened(url)
    store.close()
    with sqlite3.connect(store.path) as db:  # (nor does it take this version's writes)
        db.execute("UPDATE troupe_meta SET value = ?", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=r"newer Troupe.*upgrade Troupe"):
        opened(url)


async def test_retention_and_records(url: str) -> None:
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(_agent("old"), "hi", run_id="old", thread_id="t-old")
    store = opened(url)
    assert store.delete_ended_before(time.time() + 1) == 1
    assert store.get_run("old") is None and store.read_records("old") == []
    assert store.get_thread("t-old") is None
    assert isinstance(store, Store) and store.integrity_check() == "ok"
    store.close()


async def test_an_unjournaled_runtime_keeps_no_record_and_needs_no_store() -> None:
    async with open_runtime() as rt:
        assert rt.journal is None
        assert (await rt.ainvoke(_agent("hi"), "hi")).output == "hi"


def test_the_record_of_a_run_has_its_config(url: str) -> None:
    async def main() -> RunRecord:
        async with open_runtime(store=url) as rt:
            await rt.ainvoke(
                _agent("hi"), "hi", run_id="r", tags=["a"], metadata={"k": 1}, timeout=30
            )
            return await rt.get_run("r")

    record = trio.run(main)
    assert record.config == {"tags": ["a"], "metadata": {"k": 1}, "timeout": 30}


class Waiting(Performer[str, str]):
    """Streams one chunk, then waits until it is cancelled."""

    name = "waiting"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # shared, read-only

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def perform(self, message: str, run: Run) -> str:
        await run.emit("started")
        await trio.sleep_forever()


async def test_a_run_is_cancelled_through_another_runtime_on_the_store(url: str) -> None:
    async with (
        open_runtime(store=url) as rt,
        open_runtime(store=url) as other,
        rt.astream_events(Waiting(), "x") as stream,
    ):
        async for event in stream:
            if event.event.endswith("_stream"):
                break
        await _known_to(other, stream.run_id)
        assert await other.cancel(stream.run_id)
        with pytest.raises(RunCancelledError):
            async for _ in stream:
                pass
        record = await other.get_run(stream.run_id)
        assert record.status == "cancelled"
        assert not await other.cancel(stream.run_id)  # no longer running
        assert not await rt.cancel("never-was")


async def test_a_cancel_whose_caller_is_cancelled_has_no_effect(url: str) -> None:
    """Trio's rule: a call that raises ``Cancelled`` did nothing; one that did
    something returns (a local run is cancelled only after the cancel point)."""
    async with open_runtime(store=url) as rt, rt.astream_events(Waiting(), "x") as stream:
        async for event in stream:
            if event.event.endswith("_stream"):
                break
        with trio.CancelScope() as scope:
            scope.cancel()
            await rt.cancel(stream.run_id)
        assert scope.cancelled_caught
        with trio.move_on_after(0.2) as waited:
            async for _ in stream:
                pass
        assert waited.cancelled_caught  # the run goes on: the cancel did nothing
        with trio.testing.assert_checkpoints():
            assert await rt.cancel(stream.run_id)
        with pytest.raises(RunCancelledError):
            async for _ in stream:
                pass


async def test_a_thread_made_again_elsewhere_is_not_read_from_memory(url: str) -> None:
    async with open_runtime(store=url) as rt, open_runtime(store=url) as other:
        await rt.ainvoke(_agent("Hello Ann.", "again"), "I am Ann", thread_id="t-4")
        await other.threads.delete("t-4")
        await other.ainvoke(_agent("Hi Bob."), "I am Bob", thread_id="t-4")
        out = await rt.ainvoke(_agent("Hi Bob.", "You are Bob."), "Who am I?", thread_id="t-4")
    assert [m.content for m in out.messages] == ["I am Bob", "Hi Bob.", "Who am I?", "You are Bob."]


_BAD_MESSAGES = [
    '[{"$type":"UserMessage"},{"$type":"AssistantMessage","content":"a"}]',
    '[{"$type":"UserMessage","content":"q"},{"$type":"AssistantMessage","content":"a",'
    '"usage":{"$type":"Usage","prompt_tokens":"x"}}]',
    '[{"$type":"UserMessage","content":"q"},not json]',
]


def _error_of(action: Any) -> tuple[type[BaseException], str]:
    try:
        action()
    except Exception as exc:  # what it raised, whatever it is
        return type(exc), str(exc)
    raise AssertionError("no error")


@pytest.mark.parametrize("text", _BAD_MESSAGES, ids=["missing", "nested", "not-json"])
async def test_a_thread_whose_stored_messages_are_bad_fails_the_run_clearly(
    url: str, text: str
) -> None:
    # A thread's messages are read and structured in the store's worker thread: bad
    # stored JSON fails the run on it with the error that reading it says (the
    # converter's, naming the class and the field, or json's), as on trio's thread.
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(_agent("a"), "q", thread_id="bad")
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    with connection:
        connection.execute("UPDATE troupe_message_segments SET messages = ?", (text,))
    connection.close()
    # (the store reads a thread's rows, here one, as one JSON array of their arrays)
    expected = _error_of(lambda: [structure_any(m) for m in json.loads(f"[{text}]")[0]])
    async with open_runtime(store=url) as rt:
        for _ in range(2):  # (and again: nothing of it was kept)
            with pytest.raises(expected[0]) as failed:
                await rt.ainvoke(_agent("b"), "q2", thread_id="bad")
            assert str(failed.value) == expected[1]
        with pytest.raises(expected[0], match=r"structuring|Expecting"):
            await rt.threads.history("bad")


async def test_a_run_taken_over_elsewhere_is_stopped_here_its_late_writes_refused(
    url: str,
) -> None:
    """Issue 30: a process presumed dead (its heartbeat stale) but only stalled finds its
    run taken over: its next write for that run is refused (fenced), the run stops here
    with a JournalError saying so, and its journal holds nothing of this process's
    after the take-over; the new owner's writes go on."""
    agent = make_cat_agent(token_delay=0.01)
    async with open_runtime(store=url) as rt, rt.astream_events(agent, "where?") as stream:
        journal = rt.journal
        assert journal is not None
        first = [await stream.__anext__() for _ in range(3)]
        other = opened(url)
        try:
            with trio.fail_after(10):
                while other.journal_length(stream.run_id) == 0:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert other.take_over(stream.run_id, journal.owner.owner_id, "new owner")
            taken_at = other.journal_length(stream.run_id)
            with pytest.raises(JournalError) as stopped:
                async for _ in stream:
                    pass
            assert "no longer owned" in str(stopped.value)
            assert len(first) >= 3
            record = other.get_run(stream.run_id)
            assert record is not None
            assert (record.owner, record.status) == ("new owner", "running")
            assert other.journal_length(stream.run_id) == taken_at
            # the new owner's write goes on where the journal stands
            other.write(
                WriteBatch(segments=[Segment(stream.run_id, taken_at, [["x"]])], owner="new owner")
            )
            assert other.journal_length(stream.run_id) == taken_at + 1
        finally:
            other.close()


async def test_a_run_of_this_process_is_joined_before_its_first_write(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store's writes slowed so that the run's stream yields its first events long
    # before its record is in the store: a join here waits for it, as the HTTP edge
    # does before it answers with a run id, rather than saying there is no such run.
    write = SQLiteStore.write

    def slow_write(store: SQLiteStore, batch: Any) -> None:
        time.sleep(0.3)
        write(store, batch)

    monkeypatch.setattr(SQLiteStore, "write", slow_write)
    async with (
        open_runtime(store=url) as rt,
        rt.astream_events(make_cat_agent(), "where is the cat?") as stream,
    ):
        first = await stream.__anext__()
        assert (await rt.list_runs()) == []  # (not in the store yet)
        got: list[Any] = []

        async def join() -> None:
            async with rt.join(stream.run_id) as joined:
                got.extend([e async for e in joined])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(join)
            rest = [e async for e in stream]
    streamed = [(e.run_id, e.seq, e.event) for e in [first, *rest]]
    assert [(e.run_id, e.seq, e.event) for e in got] == streamed
