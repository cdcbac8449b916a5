"""The journal's feed: the tracer hands each event to the journal, which encodes it into
the batch its next write holds. Lossless when the store falls behind (the runs wait),
and a tree whose write failed leaves nothing behind in the batch gathering meanwhile."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from attrs import frozen

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from actors.testing import check_events
from protocol import (
    AssistantMessageChunk,
    CompactDecoder,
    EventData,
    RunInfo,
    StreamEvent,
    ToolCallChunk,
    Usage,
    compact_bare_text,
)
from protocol._compact import LONG_TEXT
from runtime import (
    JournalError,
    Resume,
    RunPaused,
    StoreError,
    UnknownRunError,
    open_runtime,
    open_store,
)
from runtime._journal import Journal, _Gathered, _Texts, journal_encoder
from runtime._sqlite_store import SQLiteStore
from runtime._store import WriteBatch, dumps, storable_json

CAPACITY = 8


class SlowStore(SQLiteStore):
    """Each write takes 20 ms more (a disk that falls behind); the largest write's
    records are counted."""

    largest = 0

    def write(self, batch: WriteBatch) -> None:
        time.sleep(0.02)
        self.largest = max(self.largest, sum(len(s.records) for s in batch.segments))
        super().write(batch)


def _decoded(records: list[object]) -> list[StreamEvent]:
    decoder = CompactDecoder()
    return [e for e in (decoder.decode(r) for r in records) if e is not None]


async def test_a_store_that_falls_behind_slows_the_runs_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime._api.Journal", functools.partial(Journal, capacity=CAPACITY))
    store = SlowStore(f"sqlite:///{tmp_path}/runs.db")
    agent = make_cat_agent()
    streamed: dict[str, list[StreamEvent]] = {}

    async def one(index: int) -> None:
        async with rt.astream_events(agent, "where is the cat?", run_id=f"r{index}") as stream:
            streamed[stream.run_id] = [event async for event in stream]

    async with open_runtime(store=store) as rt:
        async with trio.open_nursery() as nursery:
            for index in range(10):
                nursery.start_soon(one, index)
        for run_id, events in streamed.items():
            assert (await rt.get_run(run_id)).status == "ok"
            read = _decoded(await trio.to_thread.run_sync(store.read_records, run_id))
            assert [dict(e) for e in read] == [dict(e) for e in events]
            check_events(read)
    # Each write held at most what the feed takes before the runs wait: the capacity,
    # and the records of the one event or run of chunks that reached it.
    assert 0 < store.largest <= 4 * CAPACITY


class FailsSlowly(SQLiteStore):
    """Refuses every write holding the run ``bad``, after 30 ms (the next batch gathers
    the run's events meanwhile)."""

    def write(self, batch: WriteBatch) -> None:
        time.sleep(0.03)
        if any(s.root_id == "bad" for s in batch.segments) or any(
            r.run_id == "bad" for r in batch.runs
        ):
            raise StoreError(f"store {self.url!r}: a write failed: disk I/O error")
        super().write(batch)


async def test_a_failed_tree_leaves_nothing_in_the_batch_gathering(tmp_path: Path) -> None:
    agent = make_cat_agent(token_delay=0.002)
    async with open_runtime(store=FailsSlowly(f"sqlite:///{tmp_path}/runs.db")) as rt:
        results: dict[str, Any] = {}

        async def run(run_id: str) -> None:
            try:
                results[run_id] = await rt.ainvoke(agent, "where is the cat?", run_id=run_id)
            except JournalError as exc:
                results[run_id] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "bad")
            nursery.start_soon(run, "good")
        assert isinstance(results["bad"], JournalError)
        assert (await rt.get_run("good")).status == "ok"
        with pytest.raises(UnknownRunError):
            await rt.get_run("bad")
        journal = rt.journal
        assert journal is not None and journal.open_trees == 0
        assert (await rt.ainvoke(agent, "where is the cat?", run_id="after")).output
        assert journal.open_trees == 0


class _NoRepr:
    """A value with no JSON form whose ``__repr__`` fails too."""

    def __repr__(self) -> str:
        raise ValueError("no repr for you")


async def test_a_payload_whose_repr_fails_stays_inside_its_run(tmp_path: Path) -> None:
    # The tracer hands each event to the journal's feed, which encodes it there and
    # then: a payload the codec falls back to writing as its repr, whose repr raises,
    # crashed the tracer's caller (the tool's actor) and with it the whole runtime.
    @tool(name="odd")
    async def odd() -> object:
        """Returns something with no JSON form and no repr."""
        return _NoRepr()

    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("odd")]), ScriptedTurn("went on")]
    )
    agent = Agent(model=model, tools=[odd])
    store = SQLiteStore(f"sqlite:///{tmp_path}/runs.db")
    async with open_runtime(store=store) as rt:
        with trio.fail_after(10):
            output = await rt.ainvoke(agent, "go", run_id="odd-run")
        assert output.output == "went on"
        assert (await rt.get_run("odd-run")).status == "ok"
        read = _decoded(await trio.to_thread.run_sync(store.read_records, "odd-run"))
        ends = [e for e in read if e.event == "on_tool_end"]
        assert len(ends) == 1 and "_NoRepr" in ends[0].data.output
        check_events(read)


class _SlowerStore(SQLiteStore):
    """Each write takes 200 ms more."""

    def write(self, batch: WriteBatch) -> None:
        time.sleep(0.2)
        super().write(batch)


async def test_a_run_id_reused_before_its_last_run_is_journaled_is_refused(
    tmp_path: Path,
) -> None:
    # A stream left early frees its run's id at once, while the run's end is still on
    # its way to the store. A run started with that id meanwhile was fed into the
    # first run's tree (the tree stays until its end is written): its events were
    # journaled after the first run's terminal event, under the first run's record,
    # whose status it then overwrote; its own record was never made.
    store = _SlowerStore(f"sqlite:///{tmp_path}/runs.db")
    agent = make_cat_agent(token_delay=0.01)
    async with open_runtime(store=store) as rt:
        async with rt.astream_events(agent, "where is the cat?", run_id="dup") as stream:
            async for event in stream:
                if event.event == "on_chat_model_stream":
                    break
        with pytest.raises((ValueError, JournalError), match="dup"):
            await rt.ainvoke(agent, "where is the cat?", run_id="dup")
        journal = rt.journal
        assert journal is not None
        for _ in range(200):  # until the first run's end is written
            if not journal.open_trees:
                break
            await trio.sleep(0.05)
        assert (await rt.get_run("dup")).status == "cancelled"
        read = _decoded(await trio.to_thread.run_sync(store.read_records, "dup"))
        roots = [e.event for e in read if not e.run.parent_ids and e.event != "on_chain_stream"]
        assert roots == ["on_chain_start", "on_chain_error"], roots
        check_events(read)
        with pytest.raises(JournalError, match="UNIQUE"):  # once written: the store refuses it
            await rt.ainvoke(agent, "where is the cat?", run_id="dup")
        assert journal.open_trees == 0


class _LostAnswer(SQLiteStore):
    """The first write holding a run's end commits, then fails as a connection lost
    after the commit does (the answer never came back)."""

    lost = False

    def write(self, batch: WriteBatch) -> None:
        super().write(batch)
        if batch.ends and not self.lost:
            self.lost = True
            raise StoreError(f"store {self.url!r}: a write failed: server closed the connection")


async def test_a_write_that_landed_though_its_answer_was_lost_is_not_failed(
    tmp_path: Path,
) -> None:
    # The retry of a write that had committed fails on its own rows (a duplicate): the
    # journal took that as a refusal, failed every tree of the batch (their callers
    # heard a JournalError) and wrote error ends over runs that had ended well.
    store = _LostAnswer(f"sqlite:///{tmp_path}/runs.db")
    agent = make_cat_agent()
    async with open_runtime(store=store) as rt:
        with trio.fail_after(20):
            output = await rt.ainvoke(agent, "where is the cat?", run_id="landed")
        assert output.output
        assert store.lost
        assert (await rt.get_run("landed")).status == "ok"
        read = _decoded(await trio.to_thread.run_sync(store.read_records, "landed"))
        check_events(read)


async def test_a_failed_tree_that_filled_the_batch_frees_the_runs_waiting_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch gathering was full of a tree whose write then failed: dropping its
    # records emptied the batch, so the writer parked for want of records while the
    # tracer stayed parked for room that nobody announced: every run froze.
    monkeypatch.setattr("runtime._journal.WRITE_RETRIES", (0.05,))
    monkeypatch.setattr("runtime._api.Journal", functools.partial(Journal, capacity=CAPACITY))
    agent = make_cat_agent(token_delay=0.002)
    async with open_runtime(store=FailsSlowly(f"sqlite:///{tmp_path}/runs.db")) as rt:
        with trio.fail_after(20):
            with pytest.raises(JournalError):
                await rt.ainvoke(agent, "where is the cat?", run_id="bad")
            assert (await rt.ainvoke(agent, "where is the cat?", run_id="after")).output


_ODD_TOKENS = (
    "plain",
    ' "quoted"',
    " back\\slash",
    " tab\tnew\nline\x00",
    " é 猫 🐈",
    " \ud800 lone",
    "",
)


async def test_the_journal_holds_the_codecs_records_exactly(tmp_path: Path) -> None:
    # The feed writes each record as JSON as it takes it, and a chat model's run of
    # texts only when the batch is written: the store's text must be what the codec's
    # records dump to (the same JSON, surrogates escaped), and read back as streamed.
    tools_turn = ScriptedTurn(tool_calls=[ScriptedCall("where", id="w1")])
    model = ScriptedChatModel([tools_turn, ScriptedTurn(tokens=_ODD_TOKENS * 3)])

    @tool
    async def where() -> str:
        """Where?"""
        return "on the \ud801 shelf"

    agent = Agent(model=model, tools=[where], name="odd")
    store = SQLiteStore(f"sqlite:///{tmp_path}/runs.db")
    async with open_runtime(store=store) as rt:
        async with rt.astream_events(agent, "go", run_id="odd") as stream:
            streamed = [event async for event in stream]
        records: list[Any] = []
        encoder = journal_encoder()
        for event in streamed:
            encoder.encode(event, records)
        with store._reading() as db:
            rows = db.execute(
                "SELECT records FROM troupe_segments WHERE root_id = 'odd' ORDER BY first"
            ).fetchall()
        read = _decoded(await trio.to_thread.run_sync(store.read_records, "odd"))
    text = ",".join(row[0][1:-1] for row in rows if row[0] != "[]")
    # (the encoder's records are their JSON text, but runs of texts' bare records)
    assert all(type(r) is str or type(r) is tuple for r in records)
    values = [json.loads(r) if type(r) is str else r for r in records]
    assert text == dumps(values)[1:-1]
    assert text == storable_json(",".join(r if type(r) is str else dumps(r) for r in records))
    assert [dict(e) for e in read] == [dict(e) for e in streamed]
    check_events(read)
    tokens = [e.chunk.content for e in read if e.event == "on_chat_model_stream"]
    assert "".join(tokens).endswith("".join(_ODD_TOKENS))


def test_records_gathered_as_json_read_back_as_their_values() -> None:
    gathered = _Gathered()
    gathered.items.append('["i",3]')
    texts = _Texts(RunInfo("r", "m", "chat_model"), 3, 7, AssistantMessageChunk(' a "b"'), gathered)
    texts.texts.append("\ud800")
    gathered.items.append([4, 1, {"x": [1.5, None]}])
    gathered.size = 4
    assert len(gathered) == 4
    assert gathered.json() == '[["i",3],[3,7," a \\"b\\""],[3,8,"\\ud800"],[4,1,{"x":[1.5,null]}]]'
    assert list(gathered) == [
        ["i", 3],
        [3, 7, ' a "b"'],
        [3, 8, "\ud800"],
        [4, 1, {"x": [1.5, None]}],
    ]
    assert gathered[1:3] == [[3, 7, ' a "b"'], [3, 8, "\ud800"]]
    odd = _Gathered()
    odd.items.append([1, 2, object()])  # no JSON form: the store's write fails on it
    with pytest.raises(TypeError):
        odd.json()


def test_a_run_of_texts_past_the_seqs_made_once_is_written_alike() -> None:
    """A run of texts is written from seqs made once per process up to a bound, and
    past it as they come: the same records either way."""
    info = RunInfo("r", "m", "chat_model")
    for first in (0, 4090, 10_000):
        gathered = _Gathered()
        texts = _Texts(info, 12, first, AssistantMessageChunk("a"), gathered)
        texts.texts.extend(f"t{i}\n" for i in range(1, 10))
        gathered.size = 10
        expected = [[12, first, "a"], *([12, first + i, f"t{i}\n"] for i in range(1, 10))]
        assert json.loads(gathered.json()) == expected == list(gathered)


class _Counting(SQLiteStore):
    """Counts its writes, and the records of each."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writes: list[int] = []

    def write(self, batch: WriteBatch) -> None:
        self.writes.append(sum(len(s.records) for s in batch.segments))
        super().write(batch)


async def test_records_nobody_waits_for_gather_and_an_end_is_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While nobody waits for what the next write holds, the writer waits for more (fewer,
    # larger writes); a run's end, a new run's record or a live follower has it written
    # at once (here the wait would be 30 s).
    monkeypatch.setattr("runtime._journal.GATHER_SECONDS", 30.0)
    store = _Counting(f"sqlite:///{tmp_path}/runs.db")
    tokens = tuple(f" t{i}" for i in range(40))
    agent = Agent(model=ScriptedChatModel([ScriptedTurn(tokens=tokens)], token_delay=0.005))
    async with open_runtime(store=store) as rt:
        with trio.fail_after(10):
            assert (await rt.ainvoke(agent, "go", run_id="one")).output
        # its record at once, then its tokens and its end in as few writes as took them
        assert 1 <= len(store.writes) <= 3, store.writes
        assert (await rt.get_run("one")).status == "ok"
        before = len(store.writes)
        started = trio.Event()

        async def read() -> None:
            async with rt.astream_events(agent, "go", run_id="two") as stream:
                async for event in stream:
                    if event.event == "on_chat_model_stream":
                        started.set()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await started.wait()
                journal = rt.journal
                assert journal is not None
                await journal.recorded("two")  # (written at once: a new run's record)
                # followed live: each write is made as soon as the last one is done
                async with rt.join("two") as joined:
                    async for event in joined:
                        if event.event == "on_chat_model_stream" and event.seq >= 30:
                            break
        assert len(store.writes) - before > 3, store.writes


_LONG_ANSWER = tuple(f" word{i}" for i in range(40))  # 270 characters: a link's worth


async def test_a_model_s_answer_is_written_once_where_an_agent_repeats_it(
    tmp_path: Path,
) -> None:
    # The agent's finish chunk and its run's output repeat the model's answer (the very
    # string): they link to its content in the model turn's end.
    agent = Agent(model=ScriptedChatModel([ScriptedTurn(tokens=_LONG_ANSWER)]), name="answerer")
    store = SQLiteStore(f"sqlite:///{tmp_path}/runs.db")
    answer = "".join(_LONG_ANSWER)
    assert len(answer) >= LONG_TEXT
    async with open_runtime(store=store) as rt:
        async with rt.astream_events(agent, "go", run_id="a") as stream:
            streamed = [event async for event in stream]
        raw = await trio.to_thread.run_sync(store.read_records, "a")
        async with rt.join("a") as joined:
            read = [event async for event in joined]
    assert dumps(raw).count(answer) == 1  # (its tokens apart)
    assert [dict(e) for e in _decoded(raw)] == [dict(e) for e in streamed]
    assert [dict(e) for e in read] == [dict(e) for e in streamed]
    output: Any = streamed[-1].data.output  # (an AgentOutput)
    assert output.output == answer


async def test_a_long_answer_linked_to_replays_and_the_resumed_run_links_its_own(
    tmp_path: Path,
) -> None:
    @tool(needs_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    first = ScriptedTurn(tokens=_LONG_ANSWER, tool_calls=[ScriptedCall("pay", {"amount": 5})])
    last = ScriptedTurn(tokens=tuple(reversed(_LONG_ANSWER)))
    agent = Agent(model=ScriptedChatModel([first, last]), tools=[pay], name="payer")
    store = SQLiteStore(f"sqlite:///{tmp_path}/runs.db")
    async with open_runtime(store=store) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(agent, "pay", run_id="p")
        async with rt.astream_events(
            agent, None, resume=Resume("p", {paused.value.pending[0].id: True}), run_id="r"
        ) as stream:
            streamed = [event async for event in stream]
        raw = await trio.to_thread.run_sync(store.read_records, "r")
        async with rt.join("r") as joined:
            read = [event async for event in joined]
    answer = "".join(reversed(_LONG_ANSWER))
    output: Any = streamed[-1].data.output  # (an AgentOutput)
    assert output.output == answer
    assert dumps(raw).count(answer) == 1
    assert [dict(e) for e in read] == [dict(e) for e in streamed]
    check_events(read)


class _Text(str):
    """A text of a ``str`` subclass (the codec writes it whole, not as bare text)."""


@frozen
class _Chunk(AssistantMessageChunk):
    """A subclass of the model's chunk (not bare text either)."""


_MESSAGE = "msg-1"
_CANDIDATES = (
    AssistantMessageChunk(" more", id=_MESSAGE),
    AssistantMessageChunk("", id=_MESSAGE),
    AssistantMessageChunk(" more", id="msg-2"),
    AssistantMessageChunk(" more"),
    AssistantMessageChunk(" more", id=_Text(_MESSAGE)),
    AssistantMessageChunk(_Text(" more"), id=_MESSAGE),
    AssistantMessageChunk(" more", (ToolCallChunk(0, args="{"),), id=_MESSAGE),
    AssistantMessageChunk(" more", usage=Usage(1, 2, 3), id=_MESSAGE),
    AssistantMessageChunk(" more", finish_reason="stop", id=_MESSAGE),
    _Chunk(" more", id=_MESSAGE),
    ToolCallChunk(0, args="{"),
    " more",
)


@pytest.mark.parametrize("chunk", _CANDIDATES, ids=repr)
@pytest.mark.parametrize("gap", [0, 1])
def test_the_feeds_hot_path_keeps_as_text_exactly_what_the_codec_writes_so(
    tmp_path: Path, chunk: Any, gap: int
) -> None:
    # The feed's hot path takes a token on the open run of texts exactly where the
    # codec would write it as bare text (``compact_bare_text``), and its seq follows
    # the run's last.
    journal = Journal(open_store(f"sqlite:///{tmp_path}/never-opened.db"))
    feed = journal.recorder
    model = RunInfo("m", "Model", "chat_model")
    feed.take(StreamEvent("on_chat_model_start", model, 0, EventData(input="go")))
    for seq in (1, 2):  # the first names the message; the second opens a run of texts
        feed.take_chunk("on_chat_model_stream", model, seq, AssistantMessageChunk("a", id=_MESSAGE))
    texts = journal._texting["m"]
    feed.take_chunk("on_chat_model_stream", model, 3 + gap, chunk)
    went_on = journal._texting.get("m") is texts and len(texts.texts) == 2
    assert went_on == (compact_bare_text(chunk, _MESSAGE) and not gap)
    decoder = CompactDecoder()
    read = [decoder.decode(r) for r in json.loads(journal._pending.records["m"].json())]
    assert [(e.seq, e.chunk) for e in read if e is not None and e.seq] == [
        (1, AssistantMessageChunk("a", id=_MESSAGE)),
        (2, AssistantMessageChunk("a", id=_MESSAGE)),
        (3 + gap, repr(chunk) if type(chunk) is _Chunk else chunk),  # (a class it knows not)
    ]
