"""Runs that pause and resume: approvals, interrupts, decisions, replay from the
journal (nothing answered is done again), and every way a resume can be wrong."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors.testing import check_events
from protocol import (
    AgentOutput,
    AssistantMessage,
    Decision,
    Paused,
    PendingRequest,
    StepsChunk,
    ToolCall,
    ToolMessage,
    ToolRequest,
)
from runtime import (
    JournaledError,
    NoStoreError,
    Performer,
    ReplayDivergenceError,
    Resume,
    Run,
    RunNotPausedError,
    RunPaused,
    UnknownRunError,
    interrupt,
    open_runtime,
)

from .test_json_text import as_stored


class OverdrawnError(Exception):
    """A tool's own error, of a type of its own."""


class Pauser(Performer[str, str]):
    """A performer of strings named ``pausing``; each test gives it its ``perform``."""

    name = "pausing"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def ask(self, run: Run) -> str:
        """Ask a person (an interrupt): the run pauses until they answer."""
        question = ToolRequest(ToolCall(id="q", name="ask", args={"question": "?"}))
        return await run.request(_ask, question)


@tool
async def _ask(question: str) -> str:
    """Ask."""
    return str(await interrupt(question))


class Ledger:
    """Side effects, counted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def tools(self) -> list[Any]:
        @tool(needs_approval=True)
        async def pay(amount: int) -> str:
            """Pay an amount."""
            self.calls.append(("pay", amount))
            return f"paid {amount}"

        @tool(needs_approval=lambda args: args["to"] != "me")
        async def mail(to: str) -> str:
            """Send mail."""
            self.calls.append(("mail", to))
            return f"mailed {to}"

        @tool
        async def look(x: int) -> str:
            """Look something up."""
            self.calls.append(("look", x))
            return f"looked {x}"

        return [pay, mail, look]


def agent_for(ledger: Ledger, *turns: ScriptedTurn) -> Agent:
    return Agent(model=ScriptedChatModel(list(turns)), tools=ledger.tools(), name="payer")


LOOK_THEN_PAY = (
    ScriptedTurn(tool_calls=[ScriptedCall("look", {"x": 1}, id="l1")]),
    ScriptedTurn(
        tool_calls=[
            ScriptedCall("pay", {"amount": 5}, id="p1"),
            ScriptedCall("look", {"x": 2}, id="l2"),
        ]
    ),
    ScriptedTurn("all done"),
)


async def test_an_approved_call_runs_once_and_nothing_answered_runs_again(url: str) -> None:
    ledger = Ledger()
    agent = agent_for(ledger, *LOOK_THEN_PAY)
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(agent, "pay five", run_id="first") as stream:
            paused_events = [e async for e in stream]
        end = paused_events[-1]
        assert end.status == "paused" and end.event == "on_chain_end"
        assert end.data.output == Paused((PendingRequest("p1", "approval", "pay", {"amount": 5}),))
        check_events(paused_events)
        assert ledger.calls == [("look", 1), ("look", 2)]  # the other call of the turn ran
        assert (await rt.get_run("first")).status == "paused"

        async with rt.astream_events(
            agent, None, resume=Resume("first", {"p1": True}), run_id="second"
        ) as stream:
            resumed = [e async for e in stream]
        output = stream.output
        check_events(resumed)
        assert ledger.calls == [("look", 1), ("look", 2), ("pay", 5)]
        assert isinstance(output, AgentOutput) and output.output == "all done"
        # the replayed steps were not streamed again: one tool run (pay), one model turn
        tools = [e for e in resumed if e.event == "on_tool_start"]
        models = [e for e in resumed if e.event == "on_chat_model_start"]
        assert [e.name for e in tools] == ["pay"] and len(models) == 1
        assert (await rt.get_run("first")).resumed_by == "second"
        assert (await rt.get_run("second")).config["resumes"] == "first"


async def test_a_denied_call_is_told_to_the_model_and_an_edited_one_runs_edited(
    url: str,
) -> None:
    ledger = Ledger()
    turns = (
        ScriptedTurn(
            tool_calls=[
                ScriptedCall("pay", {"amount": 500}, id="p1"),
                ScriptedCall("mail", {"to": "boss"}, id="m1"),
                ScriptedCall("mail", {"to": "me"}, id="m2"),  # needs no approval
            ]
        ),
        ScriptedTurn("ok"),
    )
    agent = agent_for(ledger, *turns)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(agent, "pay and mail", run_id="first")
        assert {p.id for p in paused.value.pending} == {"p1", "m1"}
        assert paused.value.run_id == "first"
        assert ledger.calls == [("mail", "me")]
        out = await rt.resume(
            agent,
            "first",
            {
                "p1": Decision(approve=False, reason="too much"),
                "m1": {"approve": True, "arguments": {"to": "boss@example.com"}},
            },
        )
    assert ledger.calls == [("mail", "me"), ("mail", "boss@example.com")]
    results = {m.tool_call_id: m for m in out.messages if isinstance(m, ToolMessage)}
    assert results["p1"].is_error and "too much" in results["p1"].content
    assert results["m1"].content == "mailed boss@example.com"


async def test_an_interrupt_pauses_and_returns_the_persons_answer(url: str) -> None:
    seen: list[Any] = []

    @tool
    async def ask(question: str) -> str:
        """Ask a person."""
        seen.append(question)
        answer = await interrupt({"question": question})
        return f"the person said {answer}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("ask", {"question": "why?"}, id="a1")]),
            ScriptedTurn("thanks"),
        ]
    )
    agent = Agent(model=model, tools=[ask])
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(agent, "go", run_id="first")
        (request,) = paused.value.pending
        assert request.kind == "interrupt" and request.arguments == {"question": "why?"}
        out = await rt.resume(agent, "first", {request.id: "because"})
    assert seen == ["why?", "why?"]  # the tool ran again from its start
    tool_message = next(m for m in out.messages if isinstance(m, ToolMessage))
    assert tool_message.content == "the person said because"


async def test_a_run_paused_twice_is_resumed_twice(url: str) -> None:
    ledger = Ledger()
    turns = (
        ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 1}, id="p1")]),
        ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 2}, id="p2")]),
        ScriptedTurn("paid twice"),
    )
    agent = agent_for(ledger, *turns)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay", run_id="r1")
        with pytest.raises(RunPaused) as again:
            await rt.resume(agent, "r1", {"p1": True}, run_id="r2")
        assert [p.id for p in again.value.pending] == ["p2"]
        out = await rt.resume(agent, "r2", {"p2": True})
    assert ledger.calls == [("pay", 1), ("pay", 2)] and out.output == "paid twice"


async def test_resume_refuses_what_is_wrong_and_changes_nothing(url: str) -> None:
    ledger = Ledger()
    agent = agent_for(ledger, *LOOK_THEN_PAY)
    async with open_runtime(store=url) as rt:
        with pytest.raises(UnknownRunError):
            await rt.resume(agent, "nope", {})
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay", run_id="first")
        with pytest.raises(ValueError, match=r"decisions\['x'\].*waits for no such"):
            await rt.resume(agent, "first", {"p1": True, "x": True})
        with pytest.raises(ValueError, match=r"decisions\['p1'\].*waits for a decision"):
            await rt.resume(agent, "first", {})
        with pytest.raises(ValueError, match=r"decisions\['p1'\]"):
            await rt.resume(agent, "first", {"p1": "yes please"})
        with pytest.raises(TypeError, match="pass None"):
            await rt.ainvoke(agent, "hi", resume=Resume("first", {"p1": True}))
        assert (await rt.get_run("first")).resumed_by is None  # still paused, unclaimed
        calls = list(ledger.calls)
        results = await _both(
            rt.resume(agent, "first", {"p1": True}), rt.resume(agent, "first", {"p1": True})
        )
        assert sum(isinstance(r, RunNotPausedError) for r in results) == 1
        assert sum(isinstance(r, AgentOutput) for r in results) == 1
        assert ledger.calls == [*calls, ("pay", 5)]
        with pytest.raises(RunNotPausedError, match="resumed already"):
            await rt.resume(agent, "first", {"p1": True})
        done = (await rt.get_run("first")).resumed_by
        assert done is not None
        with pytest.raises(RunNotPausedError, match="is ok, not paused"):
            await rt.resume(agent, done, {})


async def _both(*calls: Any) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(index: int) -> None:
        try:
            results[index] = await calls[index]
        except Exception as exc:
            results[index] = exc

    async with trio.open_nursery() as nursery:
        for index in range(len(calls)):
            nursery.start_soon(one, index)
    return results


async def test_without_a_store_approval_and_interrupt_are_refused_clearly() -> None:
    ledger = Ledger()
    agent = agent_for(ledger, *LOOK_THEN_PAY)

    @tool
    async def ask(question: str) -> str:
        """Ask."""
        return str(await interrupt(question))

    asking = Agent(
        model=ScriptedChatModel(
            [ScriptedTurn(tool_calls=[ScriptedCall("ask", {"question": "?"})]), ScriptedTurn("x")]
        ),
        tools=[ask],
        tool_errors="raise",
    )
    async with open_runtime() as rt:
        with pytest.raises(NoStoreError, match=r"approval.*store"):
            await rt.ainvoke(agent, "pay")
        with pytest.raises(NoStoreError, match="store"):
            await rt.ainvoke(asking, "ask")
        with pytest.raises(NoStoreError):
            await rt.resume(agent, "x", {})
    assert ledger.calls == []

    def doc(x: int) -> int:
        """A tool."""
        return x

    with pytest.raises(TypeError, match="needs_approval"):
        tool(needs_approval="yes")(doc)  # type: ignore[call-overload]


async def test_a_predicate_that_fails_fails_closed(url: str) -> None:
    def broken(args: dict[str, Any]) -> bool:
        raise RuntimeError("broken predicate")

    called: list[int] = []

    @tool(needs_approval=broken)
    async def risky(x: int) -> int:
        """Risky."""
        called.append(x)
        return x

    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("risky", {"x": 1})]), ScriptedTurn("x")]
    )
    async with open_runtime(store=url) as rt:
        with pytest.raises(Exception, match="needs_approval predicate raised"):
            await rt.ainvoke(Agent(model=model, tools=[risky]), "go")
    assert called == []


async def test_a_performer_that_asks_otherwise_on_replay_fails_naming_it(url: str) -> None:
    ledger = Ledger()

    class Counter:
        round = 0

    wobbly = Counter()

    class Pausing(Pauser):
        async def perform(self, message: str, run: Run) -> str:
            wobbly.round += 1
            look = ToolRequest(ToolCall(id="c", name="look", args={"x": wobbly.round}))
            await run.request(ledger.tools()[2], look)
            return await self.ask(run)

    pausing = Pausing()
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(pausing, "go", run_id="first")
        async with rt.astream_events(
            pausing, None, resume=Resume("first", {paused.value.pending[0].id: "x"})
        ) as stream:
            with pytest.raises(ReplayDivergenceError, match=r"tool 'look'.*not deterministic"):
                async for _ in stream:
                    pass
        record = await rt.get_run(stream.run_id)
    assert record.status == "error" and "ReplayDivergenceError" in (record.error or "")


@pytest.mark.parametrize("differs", ["nothing", "a known message", "a new message", "a value"])
async def test_a_performer_that_streams_otherwise_on_replay_fails_naming_it(
    url: str, differs: str
) -> None:
    """What the run streamed before is compared whole, also where the chunk holds a
    message the replay knows (the journal's answer, by identity) beside a new one."""
    rounds = 0

    @tool
    async def look(x: int) -> AssistantMessage:
        """Look."""
        return AssistantMessage(f"seen {x}")

    @tool
    async def ask(question: str) -> str:
        """Ask."""
        return str(await interrupt(question))

    class Streaming(Performer[str, str]):
        name = "streaming"
        tags = ()
        metadata: dict[str, Any] = {}  # noqa: RUF012

        def coerce_input(self, value: Any) -> str:
            return str(value)

        async def perform(self, message: str, run: Run) -> str:
            nonlocal rounds
            rounds += 1
            again = rounds > 1
            seen = await run.request(
                look, ToolRequest(ToolCall(id="c", name="look", args={"x": 1}))
            )
            known = AssistantMessage("changed") if again and differs == "a known message" else seen
            new = ToolMessage("two" if again and differs == "a new message" else "one", "c", "look")
            await run.emit(StepsChunk((), (new,)))
            await run.emit({"seen": known, "value": 2 if again and differs == "a value" else 1})
            return await run.request(
                ask, ToolRequest(ToolCall(id="q", name="ask", args={"question": "?"}))
            )

    streaming = Streaming()
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(streaming, "go", run_id="first")
        resume = Resume("first", {paused.value.pending[0].id: "x"})
        if differs == "nothing":
            assert await rt.ainvoke(streaming, None, resume=resume) == "x"
            return
        async with rt.astream_events(streaming, None, resume=resume) as stream:
            with pytest.raises(ReplayDivergenceError, match=r"streamed chunk .* where its journal"):
                async for _ in stream:
                    pass
        record = await rt.get_run(stream.run_id)
    assert record.status == "error" and "ReplayDivergenceError" in (record.error or "")


async def test_a_paused_run_on_a_thread_adds_its_conversation_once_resumed(url: str) -> None:
    ledger = Ledger()
    agent = agent_for(ledger, *LOOK_THEN_PAY)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay", run_id="first", thread_id="t")
        assert (await rt.threads.history("t")).messages == []
        out = await rt.resume(agent, "first", {"p1": True}, run_id="second")
        history = await rt.threads.history("t")
    assert [m.content for m in history.messages] == [m.content for m in out.messages]
    assert history.added_by == ["second"] * len(out.messages)
    assert {r.run_id for r in history.runs} == {"first", "second"}


async def test_a_tool_that_interrupts_twice_finishes_after_two_resumes(url: str) -> None:
    @tool
    async def ask_twice(q: str) -> str:
        """Ask two things."""
        first = await interrupt("first?")
        second = await interrupt("second?")
        return f"{first} and {second}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("ask_twice", {"q": "x"}, id="a")]),
            ScriptedTurn("ok"),
        ]
    )
    agent = Agent(model=model, tools=[ask_twice])
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as one:
            await rt.ainvoke(agent, "go", run_id="r1")
        with pytest.raises(RunPaused) as two:
            await rt.resume(agent, "r1", {one.value.pending[0].id: "yes"}, run_id="r2")
        assert two.value.pending[0].arguments == "second?"
        out = await rt.resume(agent, "r2", {two.value.pending[0].id: "no"})
    result = next(m for m in out.messages if isinstance(m, ToolMessage))
    assert result.content == "yes and no"


async def test_a_decision_answers_its_own_call_once(url: str) -> None:
    ledger = Ledger()
    turns = (  # a server that numbers calls per turn gives both the same id
        ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="call_0")]),
        ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5000}, id="call_0")]),
        ScriptedTurn("done"),
    )
    agent = agent_for(ledger, *turns)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay", run_id="r1")
        with pytest.raises(RunPaused) as again:  # the second call is asked about
            await rt.resume(agent, "r1", {"call_0": True}, run_id="r2")
        assert again.value.pending[0].arguments == {"amount": 5000}
    assert ledger.calls == [("pay", 5)]


@pytest.mark.parametrize(
    ("decision", "match"),
    [
        ({"approve": "false"}, r"decisions\['p1'\]\.approve"),
        ({"reason": 3}, r"decisions\['p1'\]\.reason"),
        ({"arguments": [1]}, r"decisions\['p1'\]\.arguments"),
        ({"aprove": True}, "unknown keys"),
    ],
)
async def test_a_decision_given_as_a_dict_is_checked(
    url: str, decision: dict[str, Any], match: str
) -> None:
    ledger = Ledger()
    agent = agent_for(ledger, *LOOK_THEN_PAY)
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay", run_id="first")
        with pytest.raises(ValueError, match=match):
            await rt.resume(agent, "first", {"p1": decision})
        assert (await rt.get_run("first")).resumed_by is None


async def test_a_resumed_run_adds_its_whole_turn_after_what_the_thread_held(url: str) -> None:
    ledger = Ledger()
    paying = agent_for(ledger, *LOOK_THEN_PAY)
    chat = Agent(model=ScriptedChatModel([ScriptedTurn("sunny")] * 3), name="chat")
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(paying, "pay five", run_id="first", thread_id="t")
        await rt.ainvoke(chat, "weather?", thread_id="t")  # while the approval waits
        out = await rt.resume(paying, "first", {"p1": True})
        history = await rt.threads.history("t")
    said = [m.content for m in history.messages]
    assert said[:2] == ["weather?", "sunny"]
    assert said[2:] == [m.content for m in out.messages]  # the whole turn, from its question
    assert said[2] == "pay five"


async def test_a_journaled_failure_keeps_its_type(url: str) -> None:
    """A request answered from the journal that had failed raises JournaledError with
    the original exception's qualified type name and message (callers tell errors
    apart by it), and describes itself to events as the original did."""
    seen: list[BaseException] = []

    @tool
    async def withdraw(amount: int) -> str:
        """Withdraw."""
        raise OverdrawnError(f"only 3 left, asked {amount}")

    class Pausing(Pauser):
        async def perform(self, message: str, run: Run) -> str:
            try:
                await run.request(
                    withdraw, ToolRequest(ToolCall(id="w", name="withdraw", args={"amount": 5}))
                )
            except Exception as exc:
                seen.append(exc)
            return await self.ask(run)

    pausing = Pausing()
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused) as paused:
            await rt.ainvoke(pausing, "go", run_id="first")
        out = await rt.resume(pausing, "first", {paused.value.pending[0].id: "yes"})
    assert out == "yes"
    live, replayed = seen
    assert isinstance(live, OverdrawnError)
    assert isinstance(replayed, JournaledError)
    qualified = f"{OverdrawnError.__module__}.OverdrawnError"
    assert replayed.type_name == qualified
    assert replayed.message == "only 3 left, asked 5"
    assert str(replayed) == f"{qualified}: only 3 left, asked 5"
    assert replayed.described == "OverdrawnError: only 3 left, asked 5"
    # Rebuilt from its args alone (as a Ray driver rebuilds a host's exception): whole.
    rebuilt = JournaledError.__new__(JournaledError, *replayed.args)
    BaseException.__init__(rebuilt, *replayed.args)
    assert (rebuilt.type_name, str(rebuilt)) == (replayed.type_name, str(replayed))


def test_a_journaled_error_of_an_older_journal_says_what_it_holds() -> None:
    old = JournaledError("KeyError: 'x'")
    assert old.type_name is None and str(old) == "KeyError: 'x'" and old.message == "'x'"
    bare = JournaledError("error")
    assert bare.message == "" and str(bare) == "error"
    named = JournaledError("ValueError", "builtins.ValueError")
    assert str(named) == "builtins.ValueError"


def test_an_answer_cannot_change_in_place_and_a_changed_request_is_compared() -> None:
    # A replay reuses the JSON of the objects it has seen (its answers, the requests'
    # messages) by identity. A frozen message may hold a dict (a tool call's args):
    # the call keeps it read-only, so a performer cannot change it in place after the
    # answer (in the run journaled, nor on replay), and a changed request (a new
    # message) is compared as it is.
    from protocol import AssistantMessage, EventData, RunInfo, StreamEvent, ToolCall, UserMessage
    from runtime._journal import journal_encoder
    from runtime._replay import read_journal

    root = RunInfo(run_id="root", name="Agent", kind="chain")
    turns = [
        RunInfo(run_id=f"m{i}", name="Model", kind="chat_model", parent_ids=("root",))
        for i in range(2)
    ]
    question = UserMessage("go")

    def answer() -> AssistantMessage:
        call = ToolCall(id="c1", name="setup", args={"cfg": {"mode": "before"}})
        return AssistantMessage(tool_calls=(call,))

    answered = answer()
    asked = {"messages": [question]}
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(event="on_chat_model_start", run=turns[0], seq=0, data=EventData(input=asked)),
        StreamEvent(
            event="on_chat_model_end",
            run=turns[0],
            seq=1,
            data=EventData(input=asked, output=answered, ended=True),
            status="ok",
            end_time=1.0,
        ),
    ]
    encoder, records = journal_encoder(), list[Any]()
    for event in events:
        encoder.encode(event, records)
    with pytest.raises(TypeError, match="read-only"):
        answered.tool_calls[0].args["cfg"]["mode"] = "after"  # the performer cannot
    changed = AssistantMessage(tool_calls=(ToolCall(id="c1", name="setup", args={"cfg": {}}),))
    more = UserMessage("more")
    encoder.encode(
        StreamEvent(
            event="on_chat_model_start",
            run=turns[1],
            seq=0,
            data=EventData(input={"messages": [question, answered, more]}),
        ),
        records,
    )
    replay = read_journal("root", as_stored(records)).replay
    step = replay.take("chat_model", "Model", {"messages": [question]})
    assert step is not None
    again = replay.answer(step)
    with pytest.raises(TypeError, match="read-only"):
        again.tool_calls[0].args["cfg"]["mode"] = "after"
    assert replay.take("chat_model", "Model", {"messages": [question, changed, more]}) is None
    assert replay.take("chat_model", "Model", {"messages": [question, again, more]}) is not None


def test_a_requests_own_chunks_are_skipped_and_one_of_a_run_never_told_of_is_refused() -> None:
    from protocol import AssistantMessageChunk, EventData, RunInfo, StreamEvent
    from runtime._replay import read_journal

    root = RunInfo(run_id="root", name="Agent", kind="chain")
    model = RunInfo(run_id="m", name="Model", kind="chat_model", parent_ids=("root",))
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(event="on_chat_model_start", run=model, seq=0, data=EventData(input="hi")),
        StreamEvent(
            event="on_chat_model_stream", run=model, seq=1, chunk=AssistantMessageChunk("to")
        ),
        StreamEvent(event="on_chain_stream", run=root, seq=1, chunk="said"),
        StreamEvent(
            event="on_chat_model_end",
            run=model,
            seq=2,
            data=EventData(input="hi", output="ok", ended=True),
            status="ok",
            end_time=1.0,
        ),
    ]
    records = _read_back(events)
    chunks = [r for r in records if len(r) == 3]
    assert [r[0] for r in chunks] == [1, 0]  # the model's chunk, then the root's
    journaled = read_journal("root", records)
    (step,) = journaled.replay.steps
    assert (step.kind, step.name, step.status) == ("chat_model", "Model", "ok")
    assert step.raw_output == "ok"
    assert journaled.replay.replays_emit("chunk", "said")  # the root's chunk is kept
    assert not journaled.replay.replaying
    assert (journaled.events, journaled.last_seq) == (len(records), 1)
    # A chunk of a run the journal never told of is a malformed record, as before.
    with pytest.raises(ValueError, match="malformed record"):
        read_journal("root", [*records, [9, 3, "x"]])


def test_what_the_walk_cannot_tell_is_compared_as_json() -> None:
    """A replay compares what a run streams and asks again with its journal by walking
    both (``matches_known``); what the walk cannot tell (a value with no JSON form,
    journaled as its repr) is turned into JSON and compared, as before: equal, it is
    replayed; otherwise a divergence. A tuple equals the list the journal holds."""
    from protocol import EventData, RunInfo, StreamEvent
    from runtime._replay import read_journal

    class Shown:
        def __repr__(self) -> str:
            return "<shown>"

    root = RunInfo(run_id="root", name="Agent", kind="chain")
    tool = RunInfo(run_id="t", name="look", kind="tool", parent_ids=("root",))
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(event="on_chain_stream", run=root, seq=1, chunk=Shown()),
        StreamEvent(event="on_chain_stream", run=root, seq=2, chunk={"pair": (1, 2)}),
        StreamEvent(event="on_tool_start", run=tool, seq=0, data=EventData(input={"n": 1})),
        StreamEvent(
            event="on_tool_end",
            run=tool,
            seq=1,
            data=EventData(input={"n": 1}, output="looked", ended=True),
            status="ok",
            end_time=1.0,
        ),
    ]
    records = _read_back(events)

    replay = read_journal("root", records).replay
    assert replay.replays_emit("chunk", Shown())  # its repr, as journaled
    assert replay.replays_emit("chunk", {"pair": (1, 2)})
    step = replay.take("tool", "look", {"n": 1})
    assert step is not None and replay.answer(step) == "looked"

    replay = read_journal("root", records).replay
    with pytest.raises(ReplayDivergenceError, match="streamed chunk 'other'"):
        replay.replays_emit("chunk", "other")
    replay = read_journal("root", records).replay
    assert replay.replays_emit("chunk", Shown())
    with pytest.raises(ReplayDivergenceError, match=r"streamed chunk \{'pair': \[1, 3\]\}"):
        replay.replays_emit("chunk", {"pair": (1, 3)})
    assert replay.take("tool", "look", {"n": 2}) is None  # asked otherwise: not answered


def _read_back(events: list[Any]) -> list[Any]:
    """``events`` as their journal's records, written and read back (JSON)."""
    from runtime._journal import journal_encoder

    encoder, records = journal_encoder(), list[Any]()
    for event in events:
        encoder.encode(event, records)
    return as_stored(records)
