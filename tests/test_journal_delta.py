"""A journal writes a growing conversation once: each model turn's input refers to the
previous turn's messages and holds only the new ones. What reads it back (a join, a
replay) sees every input whole, a replay still refuses a request that differs in any
message, and a journal written before (every input whole) still reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors.testing import check_events
from protocol import (
    AgentOutput,
    AssistantMessage,
    CompactEncoder,
    CompactError,
    UserMessage,
    to_json,
)
from runtime import (
    Performer,
    ReplayDivergenceError,
    Resume,
    Run,
    RunPaused,
    interrupt,
    open_runtime,
)
from runtime import _journal as journal_module
from runtime._replay import read_journal


class Listener(Performer[dict[str, Any], str]):
    """Answers a conversation (``{"messages": [...]}``), counting its calls."""

    name = "listener"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # a performer's shared, read-only metadata

    def __init__(self) -> None:
        self.calls = 0

    def coerce_input(self, value: Any) -> dict[str, Any]:
        return dict(value)

    async def perform(self, message: dict[str, Any], run: Run) -> str:
        self.calls += 1
        return f"heard {len(message['messages'])}"


Twist = Callable[[int, list[Any]], list[Any]]


class Talker(Performer[str, str]):
    """Three turns with a listener, each with the conversation so far, then asks a
    person; on every round after the first, ``twist`` may change what a turn asks."""

    name = "talker"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012

    def __init__(self, listener: Listener, twist: Twist | None = None) -> None:
        self.listener = listener
        self.twist = twist
        self.rounds = 0

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def perform(self, message: str, run: Run) -> str:
        self.rounds += 1
        messages: list[Any] = [UserMessage(message)]
        for turn in range(3):
            asked = list(messages)
            if self.rounds > 1 and self.twist is not None:
                asked = self.twist(turn, asked)
            answer = await run.request(self.listener, {"messages": asked, "turn": turn})
            messages += [AssistantMessage(answer), UserMessage(f"and {turn}")]
        return f"{messages[-2].content}, {await interrupt('go on?')}"


async def _paused_then_resumed(url: str, twist: Twist | None) -> tuple[Listener, str]:
    listener = Listener()
    talker = Talker(listener, twist)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(talker, "hi", run_id="first")
        assert listener.calls == 3
        answer = await rt.resume(talker, "first", {paused.value.pending[0].id: "yes"})
    return listener, answer


async def test_a_resumed_conversation_is_answered_from_a_journal_of_references(url: str) -> None:
    listener, answer = await _paused_then_resumed(url, None)
    assert listener.calls == 3 and answer == "heard 5, yes"
    store = journal_module.Journal  # the records themselves: each message written once
    async with open_runtime(store=url) as rt:
        assert isinstance(rt.journal, store)
        records = rt.journal.store.read_records("first")
        async with rt.join("first") as joined:
            events = [e async for e in joined]
    starts = [
        r for r in records if isinstance(r[0], int) and len(r) >= 6 and r[2].endswith("start")
    ]
    listened = [r for r in starts if r[0] != 0]
    assert [len(r[3]["input"]["messages"]) for r in listened] == [1, 2, 2]
    first, second = listened[0][0], listened[1][0]
    assert [r[6] for r in listened[1:]] == [[first, {"messages": 1}], [second, {"messages": 3}]]
    # ... and read back whole
    check_events(events)
    inputs = [e.data.input for e in events if e.event == "on_chain_start" and e.name == "listener"]
    assert [len(i["messages"]) for i in inputs] == [1, 3, 5]
    assert inputs[2]["messages"][:3] == [
        UserMessage("hi"),
        AssistantMessage("heard 1"),
        UserMessage("and 0"),
    ]
    ends = [e for e in events if e.event == "on_chain_end" and e.name == "listener"]
    assert [e.data.input for e in ends] == inputs


def _copies(turn: int, asked: list[Any]) -> list[Any]:
    return [attrs.evolve(message) for message in asked]  # equal, not the same objects


def _changed_first(turn: int, asked: list[Any]) -> list[Any]:
    return [UserMessage("hello"), *asked[1:]] if turn == 2 else asked


def _changed_last(turn: int, asked: list[Any]) -> list[Any]:
    return [*asked[:-1], UserMessage("and then")] if turn == 2 else asked


async def test_equal_messages_that_are_other_objects_still_replay(url: str) -> None:
    listener, answer = await _paused_then_resumed(url, _copies)
    assert listener.calls == 3 and answer == "heard 5, yes"


@pytest.mark.parametrize(
    ("twist", "difference"),
    [
        (
            _changed_first,
            r"input\['messages'\]\[0\]\['content'\] is 'hello' where the journal has 'hi'",
        ),
        (
            _changed_last,
            r"input\['messages'\]\[4\]\['content'\] is 'and then' where the journal has 'and 1'",
        ),
    ],
)
async def test_a_turn_that_asks_with_another_message_is_a_divergence(
    url: str, twist: Twist, difference: str
) -> None:
    """The divergence names the first place the turn's JSON differs from the journal's
    (an earlier message too, though the replay compares a turn's new messages alone
    where the others are the very objects of the turn before)."""
    with pytest.raises(
        ReplayDivergenceError,
        match=rf"listener.*first difference: {difference}\).*not deterministic",
    ):
        await _paused_then_resumed(url, twist)


async def test_a_conversation_of_plain_json_messages_replays(url: str) -> None:
    """Dicts may change in place, so their identity vouches for nothing: they are
    written, and compared, by their JSON."""

    class Plain(Talker):
        async def perform(self, message: str, run: Run) -> str:
            self.rounds += 1
            said: list[dict[str, str]] = [{"text": message}]
            for turn in range(3):
                answer = await run.request(self.listener, {"messages": list(said), "turn": turn})
                said += [{"text": answer}, {"text": f"and {turn}"}]
            return str(await interrupt("go on?"))

    listener = Listener()
    talker = Plain(listener)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(talker, "hi", run_id="first")
        records = rt.journal.store.read_records("first")  # type: ignore[union-attr]
        async with rt.join("first") as joined:
            inputs = [
                e.data.input["messages"]
                async for e in joined
                if e.event == "on_chain_start" and e.name == "listener"
            ]
        texts = [[message["text"] for message in asked] for asked in inputs]
        assert texts[2] == ["hi", "heard 1", "and 0", "heard 3", "and 1"]
        assert await rt.resume(talker, "first", {paused.value.pending[0].id: "ok"}) == "ok"
    assert listener.calls == 3
    given = [r[6] for r in records if isinstance(r[0], int) and len(r) == 7 and r[6] != 0]
    assert [counts for _, counts in given] == [{"messages": 1}, {"messages": 3}]


async def test_a_long_agent_run_journals_each_message_once(url: str) -> None:
    @tool
    async def look(n: int) -> str:
        """Look."""
        return f"looked {n}"

    turns = [
        ScriptedTurn(tool_calls=[ScriptedCall("look", {"n": i}, id=f"l{i}")]) for i in range(40)
    ]
    agent = Agent(ScriptedChatModel([*turns, ScriptedTurn("done")]), [look], max_iterations=50)
    async with open_runtime(store=url) as rt:
        await rt.ainvoke(agent, "go", run_id="long")
        records = rt.journal.store.read_records("long")  # type: ignore[union-attr]
    starts = [
        r
        for r in records
        if isinstance(r[0], int) and len(r) >= 6 and r[2] == "on_chat_model_start"
    ]
    assert len(starts) == 41
    assert sum(len(r[3]["input"]["messages"]) for r in starts) == 1 + 2 * 40


async def test_a_tool_that_changes_its_nested_arguments_changes_nothing_said(url: str) -> None:
    """A tool gets its own copy of its arguments' lists and dicts: the model's message
    (which the journal vouches for by identity) keeps what the model said, so the next
    turn, the stream and the journal read back all hold the arguments as called."""

    @tool
    async def setup(config: dict[str, Any], steps: list[dict[str, Any]]) -> str:
        """Set up."""
        config["mode"] = "after"
        steps[0]["done"] = True
        steps.append({"extra": 1})
        return "set"

    said = {"config": {"mode": "before"}, "steps": [{"done": False}]}
    turns = [ScriptedTurn(tool_calls=[ScriptedCall("setup", said, id="s1")]), ScriptedTurn("ok")]
    agent = Agent(ScriptedChatModel(turns), [setup])
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(agent, "go", run_id="twist") as stream:
            streamed = [event async for event in stream]
        async with rt.join("twist") as joined:
            read_back = [event async for event in joined]
    second = [e for e in streamed if e["event"] == "on_chat_model_start"][1]
    (call,) = second["data"]["input"]["messages"][1].tool_calls
    assert call.args == {"config": {"mode": "before"}, "steps": [{"done": False}]}
    assert [to_json(e) for e in read_back] == [to_json(e) for e in streamed]


async def test_a_journal_written_whole_before_still_resumes(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of schema version 1 (every input whole) is taken over by this version,
    and its paused runs resume and read back as they did."""
    listener = Listener()
    talker = Talker(listener)
    with monkeypatch.context() as patched:
        patched.setattr(
            journal_module,
            "journal_encoder",
            lambda first=0, known=None: CompactEncoder(first_number=first),
        )
        async with open_runtime(store=url) as rt:
            with pytest.raises(RunPaused) as paused:
                await rt.ainvoke(talker, "hi", run_id="first")
            records = rt.journal.store.read_records("first")  # type: ignore[union-attr]
    assert all(len(r) in (3, 6, 9) for r in records)  # no reference: written whole
    database = sqlite3.connect(tmp_path / "runs.db")
    with database:
        database.execute("UPDATE troupe_meta SET value = '1' WHERE key = 'schema_version'")
    database.close()
    async with open_runtime(store=url) as rt:
        async with rt.join("first") as joined:
            events = [e async for e in joined]
        check_events(events)
        answer = await rt.resume(talker, "first", {paused.value.pending[0].id: "yes"})
    assert answer == "heard 5, yes" and listener.calls == 3


async def test_a_journal_whose_references_do_not_fit_is_refused_clearly(url: str) -> None:
    listener = Listener()
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(Talker(listener), "hi", run_id="first")
        records = rt.journal.store.read_records("first")  # type: ignore[union-attr]
    at = next(
        i
        for i, r in enumerate(records)
        if type(r[0]) is int and len(r) >= 7 and r[6] not in (0, None)
    )
    base, counts = records[at][6]

    def tampered(given: Any) -> list[Any]:
        return [*records[:at], [*records[at][:6], given, *records[at][7:]], *records[at + 1 :]]

    for wrong, message in (
        ([base + 50, counts], "refers to the input of run"),
        ([base, {"messages": "one"}], "counts are"),
        ([base, {"messages": 0}], "counts are"),
        ("x", "malformed record"),
    ):
        with pytest.raises(ValueError, match=message):
            read_journal("first", tampered(wrong))
    # Counts past what the earlier turn held: found out when the input is read whole.
    journaled = read_journal("first", tampered([base, {"messages": 99}]))
    step = next(s for s in journaled.replay.steps if s.run_id == records[at - 1][2])
    with pytest.raises(CompactError, match="does not fit its base"):
        _ = step.input


async def test_a_paused_agent_and_its_resume_read_back_as_they_streamed(url: str) -> None:
    """Each message is journaled once and linked to after (the model's end, the step
    chunks, the next turn's input, the agent's output), and a resumed run's journal
    reuses the JSON its replay holds: both runs read back exactly as they streamed."""

    @tool
    async def look(where: dict[str, Any]) -> str:
        """Look."""
        return f"looked in {where['room']}"

    @tool(needs_approval=True)
    async def pay(amount: int) -> str:
        """Pay."""
        return f"paid {amount}"

    turns = [
        ScriptedTurn(tool_calls=[ScriptedCall("look", {"where": {"room": f"r{i}"}}, id=f"l{i}")])
        for i in range(5)
    ]
    turns += [
        ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="pay")]),
        ScriptedTurn("paid"),
    ]
    agent = Agent(ScriptedChatModel(turns), [look, pay], name="payer")
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(agent, "go", run_id="paused") as stream:
            paused = [event async for event in stream]
        resume = Resume("paused", {"pay": True})
        async with rt.astream_events(agent, None, resume=resume, run_id="resumed") as stream:
            resumed = [event async for event in stream]
        for run_id, streamed in (("paused", paused), ("resumed", resumed)):
            async with rt.join(run_id) as joined:
                read_back = [event async for event in joined]
            assert [to_json(e) for e in read_back] == [to_json(e) for e in streamed]
        records = rt.journal.store.read_records("paused")  # type: ignore[union-attr]
    text = str(records)
    assert all(text.count(f"'run-{e.run_id}'") == 1 for e in paused if e.run.kind == "chat_model")
    output = resumed[-1].data.output
    assert isinstance(output, AgentOutput) and output.output == "paid"
