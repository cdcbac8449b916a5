"""The compact codec every edge shares: events become small records (a run's identity
once, then numbers) and come back as the same events; bad records are refused clearly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given

from actors import Agent, ScriptedChatModel, ScriptedTurn, testing, tool
from actors._demo import make_cat_agent
from actors._targets import load_target, named_performers
from protocol import (
    ActionsChunk,
    AgentAction,
    AgentOutput,
    AgentStep,
    AssistantMessage,
    AssistantMessageChunk,
    CompactDecoder,
    CompactEncoder,
    CompactError,
    CompactLinks,
    EventData,
    FinishChunk,
    RunInfo,
    StepsChunk,
    StreamEvent,
    ToolCall,
    ToolMessage,
    UserMessage,
    _compact,
    converter,
    error_type_name,
    unstructure_any,
)
from runtime import adispatch_custom_event
from runtime._replay import read_journal

from .performers import Step


def round_trip(
    events: Sequence[StreamEvent], *, delta: bool = False
) -> tuple[list[list[Any]], list[StreamEvent]]:
    encoder, records = CompactEncoder(delta=delta), list[list[Any]]()
    for event in events:
        encoder.encode(event, records)
    decoder = CompactDecoder()
    decoded = [e for e in (decoder.decode(r) for r in records) if e is not None]
    assert encoder.open_runs == 0 and decoder.open_runs == []
    return records, decoded


def as_json(events: Sequence[StreamEvent]) -> list[dict[str, Any]]:
    return [converter.unstructure(e, StreamEvent) for e in events]


@tool
async def progress(steps: int) -> str:
    """Reports progress as custom events (at most 20: drawn counts can be huge)."""
    for step in range(min(steps, 20)):
        await adispatch_custom_event("progress", {"step": step, "of": steps})
    return "done"


TOOLS = [progress]


@given(turns=testing.agent_scripts(tools=TOOLS), fault=testing.faults())
def test_every_event_of_drawn_runs_comes_back_the_same(
    turns: list[ScriptedTurn], fault: testing.Faults
) -> None:
    async def main() -> None:
        run = await testing.run_events(Agent(ScriptedChatModel(turns), TOOLS), "go", faults=fault)
        records, decoded = round_trip(run.tree)
        assert as_json(decoded) == as_json(run.tree)
        testing.check_events(decoded)
        # A run's identity travels once: one identity record per run of the tree.
        identities = [r for r in records if r[0] == "i"]
        assert len(identities) == len({e.run.run_id for e in run.tree if e.run.kind != "custom"})
        # A journal's encoder (inputs by reference) gives back the same events too.
        by_reference, decoded = round_trip(run.tree, delta=True)
        assert as_json(decoded) == as_json(run.tree)
        assert len(json.dumps(by_reference)) <= len(json.dumps(records)) + 50

    testing.run_watched(main, seconds=30, label="compact codec")


async def test_a_runs_tokens_are_three_element_records_sharing_one_identity() -> None:
    async with make_cat_agent(nested=True).astream_events("where is the cat?") as stream:
        events = [event async for event in stream]
    records, decoded = round_trip(events)
    tokens = [r for r in records if isinstance(r[0], int) and len(r) == 3]
    assert len(tokens) == sum(e.event.endswith("_stream") for e in events)
    assert as_json(decoded) == as_json(events)
    # The decoded events of one run share one RunInfo, as the tracer's do.
    by_run: dict[str, set[int]] = {}
    for event in decoded:
        by_run.setdefault(event.run.run_id, set()).add(id(event.run))
    assert all(len(infos) == 1 for infos in by_run.values())


def test_a_payload_with_no_json_form_travels_as_its_repr() -> None:
    run = RunInfo(run_id="r", name="odd", kind="tool")
    events = [
        StreamEvent(event="on_tool_start", run=run, seq=0, data=EventData(input={"x": 1})),
        StreamEvent(event="on_tool_stream", run=run, seq=1, chunk=object),
        StreamEvent(
            event="on_tool_end",
            run=run,
            seq=2,
            data=EventData(input={"x": 1}, output={1, 2}, ended=True),
            status="ok",
            end_time=2.0,
        ),
    ]
    _, decoded = round_trip(events)
    assert decoded[1].data.chunk == repr(object)
    assert decoded[2].data.output == repr({1, 2})
    assert decoded[2].data["output"] == repr({1, 2}) and decoded[2].status == "ok"


class _Nested:
    class Failure(Exception):
        """An exception type nested in a class."""


@pytest.mark.parametrize("delta", [False, True])
def test_an_error_event_carries_its_exceptions_qualified_type(delta: bool) -> None:
    run = RunInfo(run_id="r", name="t", kind="tool")
    error = _Nested.Failure("no")
    given = {"x": [1, 2]}
    events = [
        StreamEvent(event="on_tool_start", run=run, seq=0, data=EventData(input=given)),
        StreamEvent(
            event="on_tool_error",
            run=run,
            seq=1,
            data=EventData(input=given, error="Failure: no"),
            status="error",
            end_time=1.0,
            exception=error,
        ),
    ]
    records, decoded = round_trip(events, delta=delta)
    assert records[-1][-1] == f"{__name__}._Nested.Failure" == error_type_name(error)
    # The seventh element: how its input is given (its start's, with delta), else None.
    assert records[-1][6] == (0 if delta else None)
    assert decoded[-1].data.error == "Failure: no" and decoded[-1].status == "error"
    assert decoded[-1].data.input == given
    # Read back in another process (no exception at hand): the record has no type.
    again, _ = round_trip(decoded)
    assert len(again[-1]) == 6


def test_an_exception_standing_for_another_names_that_ones_type() -> None:
    class Standing(Exception):
        type_name = "somewhere.Original"

    assert error_type_name(Standing()) == "somewhere.Original"
    assert error_type_name(KeyError("x")) == "builtins.KeyError"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([7, 0, "x"], "names run 7, never told of"),
        (["i", 0, "r"], "malformed record"),
        (["?", 1], "unknown record"),
        ([], "malformed record"),
        (None, "malformed record"),
        (["e", {"event": "on_tool_start"}], "malformed record"),
    ],
)
def test_a_bad_record_is_refused_naming_what_is_wrong(record: Any, message: str) -> None:
    with pytest.raises(CompactError, match=message):
        CompactDecoder().decode(record)


def test_an_abandoned_stream_ends_every_open_run_children_first() -> None:
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    child = RunInfo(run_id="child", name="Model", kind="chat_model", parent_ids=("root",))
    custom = RunInfo(run_id="child", name="progress", kind="custom", parent_ids=("root",))
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="hi")),
        StreamEvent(event="on_chat_model_start", run=child, seq=0, data=EventData(input="hi")),
        StreamEvent(
            event="on_chat_model_stream",
            run=child,
            seq=1,
            chunk=AssistantMessageChunk(content="to", id="m1"),
        ),
        StreamEvent(event="on_custom_event", run=custom, seq=2, chunk={"done": 0.5}),
    ]
    encoder, records = CompactEncoder(), list[list[Any]]()
    for event in events:
        encoder.encode(event, records)
    decoder = CompactDecoder()
    got = [e for e in (decoder.decode(r) for r in records) if e is not None]
    got += decoder.abandon("HostDiedError: gone", 9.0)
    assert [(e.event, e.seq, e.status) for e in got[4:]] == [
        ("on_chat_model_error", 3, "error"),
        ("on_chain_error", 1, "error"),
    ]
    assert got[-1].data.input == "hi" and got[-1].data.error == "HostDiedError: gone"
    testing.check_events(got)
    assert decoder.open_runs == [] and decoder.abandon("again", 1.0) == []


def test_load_target_takes_a_performer_a_dict_or_a_function_making_one() -> None:
    assert named_performers(load_target("tests.test_compact:_one"))["step"] == _one
    assert set(named_performers(load_target("tests.test_compact:_several"))) == {"a", "b"}
    assert set(named_performers(load_target("tests.test_compact:_make"))) == {"made"}
    with pytest.raises(ValueError, match="made a str"):
        load_target("tests.test_compact:_makes_nothing")
    with pytest.raises(ValueError, match="is a int"):
        load_target("tests.test_compact:_number")
    with pytest.raises(ValueError, match="MODULE:ATTR"):
        load_target("tests.test_compact")
    with pytest.raises(ValueError, match="has no 'nothing'"):
        load_target("tests.test_compact:nothing")


_one = Step()
_several = {"a": Step(name="a"), "b": Step(name="b")}
_number = 3


def _make() -> dict[str, Any]:
    return {"made": Step(name="made")}


def _makes_nothing() -> str:
    return "nothing"


def model_turn(model: RunInfo, asked: Any, answer: Any) -> list[StreamEvent]:
    """A model turn's start and end events: asked ``asked``, it answered ``answer``."""
    return [
        StreamEvent(event="on_chat_model_start", run=model, seq=0, data=EventData(input=asked)),
        StreamEvent(
            event="on_chat_model_end",
            run=model,
            seq=1,
            data=EventData(input=asked, output=answer, ended=True),
            status="ok",
            end_time=1.0,
        ),
    ]


def _turns(n: int) -> list[StreamEvent]:
    """An agent's ``n`` model turns, each asking with the conversation so far (the
    same message objects, one more each turn) and ending with it as input."""
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    events = [StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go"))]
    messages: list[Any] = [UserMessage("go")]
    for turn in range(n):
        model = RunInfo(run_id=f"m{turn}", name="Model", kind="chat_model", parent_ids=("root",))
        asked = {"messages": list(messages), "turn": turn}
        answer = AssistantMessage(f"answer {turn}")
        events += model_turn(model, asked, answer)
        messages += [answer, UserMessage(f"more {turn}")]
    events.append(
        StreamEvent(
            event="on_chain_end",
            run=root,
            seq=1,
            data=EventData(input="go", output="done", ended=True),
            status="ok",
            end_time=2.0,
        )
    )
    return events


def test_a_journal_encoder_writes_each_message_of_a_growing_conversation_once() -> None:
    events = _turns(50)
    whole, _ = round_trip(events)
    records, decoded = round_trip(events, delta=True)
    assert as_json(decoded) == as_json(events)
    starts = [r for r in records if len(r) >= 6 and r[2] == "on_chat_model_start"]
    written = sum(len(r[3]["input"]["messages"]) for r in starts)
    assert written == 1 + 2 * 49  # the first turn's message, then two new ones a turn
    assert all(r[6][1] == {"messages": 1 + 2 * i} for i, r in enumerate(starts[1:]))
    assert all(r[3]["input"]["turn"] == i for i, r in enumerate(starts))  # the rest, whole
    ends = [r for r in records if len(r) >= 6 and r[2] == "on_chat_model_end"]
    assert all(len(r) in (7, 9) and r[6] == 0 and "input" not in r[3] for r in ends)
    assert len(json.dumps(records)) * 10 < len(json.dumps(whole))


def test_a_conversation_changed_in_place_is_written_as_it_was_asked() -> None:
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    first = RunInfo(run_id="a", name="Model", kind="chat_model", parent_ids=("root",))
    second = RunInfo(run_id="b", name="Model", kind="chat_model", parent_ids=("root",))
    note = {"text": "before"}
    same = UserMessage("same")
    asked_first = {"messages": [same, note]}
    encoder, records = CompactEncoder(delta=True), list[list[Any]]()
    for event in (
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(
            event="on_chat_model_start", run=first, seq=0, data=EventData(input=asked_first)
        ),
    ):
        encoder.encode(event, records)
    note["text"] = "after"  # the same dict, changed: its identity vouches for nothing
    asked = {"messages": [same, note, UserMessage("new")]}
    encoder.encode(
        StreamEvent(event="on_chat_model_start", run=second, seq=0, data=EventData(input=asked)),
        records,
    )
    decoder = CompactDecoder()
    decoded = [e for e in (decoder.decode(r) for r in records) if e is not None]
    assert records[-1][6] == [1, {"messages": 1}]  # the message object alone is shared
    assert decoded[-1].data.input == {"messages": [same, {"text": "after"}, UserMessage("new")]}
    assert decoded[1].data.input == {"messages": [same, {"text": "before"}]}


def test_equal_messages_that_are_other_objects_are_compared_by_json_made_again() -> None:
    # The encoder keeps no message's JSON (a message's identity vouches for it, and the
    # collector traced those dicts for as long as their tree was open): a turn that asks
    # with equal copies is compared by the JSON made again from the objects it refers to.
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    turns = [RunInfo(run_id=r, name="Model", kind="chat_model", parent_ids=("root",)) for r in "ab"]
    said: list[Any] = [
        UserMessage("go"),
        AssistantMessage("went", tool_calls=(ToolCall("c1", "t", {}),)),
    ]
    copies = [attrs.evolve(said[0]), attrs.evolve(said[1], content="ran")]  # equal, then not
    events = [StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go"))]
    for run, asked in zip(turns, (said, [*copies, UserMessage("new")]), strict=True):
        events.append(
            StreamEvent(
                event="on_chat_model_start",
                run=run,
                seq=0,
                data=EventData(input={"messages": asked}),
            )
        )
    encoder, records = CompactEncoder(delta=True), list[list[Any]]()
    for event in events:
        encoder.encode(event, records)
    assert records[-1][6] == [1, {"messages": 1}]  # the equal copy shared, the changed one not
    assert records[-1][3]["input"]["messages"][0]["content"] == "ran"
    kept = [*encoder._defs.values(), *encoder._where.values()]  # what and where, no JSON
    assert not any(isinstance(e, dict | list) for e in kept)
    decoder = CompactDecoder()
    decoded = [e for e in (decoder.decode(r) for r in records) if e is not None]
    assert decoded[-1].data.input == {"messages": [*copies, UserMessage("new")]}


def test_an_input_by_reference_that_does_not_fit_is_refused() -> None:
    records, _ = round_trip(_turns(3), delta=True)
    by_reference = [
        i
        for i, r in enumerate(records)
        if type(r[0]) is int and len(r) >= 7 and r[6] not in (0, None)
    ]
    at = by_reference[-1]
    for wrong, message in (
        ([99, {"messages": 1}], "refers to the input of run 99"),
        ([records[at][6][0], {"messages": 999}], "does not fit its base"),
        ([records[at][6][0], ["messages"]], "malformed"),
        ("x", "malformed reference"),
    ):
        decoder = CompactDecoder()
        for record in records[:at]:
            decoder.decode(record)
        with pytest.raises(CompactError, match=message):
            decoder.decode([*records[at][:6], wrong, *records[at][7:]])


def _as_plain_encoder_writes_it(events: Sequence[StreamEvent], change: Any) -> None:
    """Encode ``events`` with a journal's (delta) encoder and a plain one, calling
    ``change`` after the second event: both must read back as each event was when
    encoded."""
    delta, plain = CompactEncoder(delta=True), CompactEncoder()
    by_reference, whole = list[list[Any]](), list[list[Any]]()
    for index, event in enumerate(events):
        delta.encode(event, by_reference)
        plain.encode(event, whole)
        if index == 1:
            change()
    decoders = CompactDecoder(), CompactDecoder()
    read = [
        [converter.unstructure(e, StreamEvent) for e in map(d.decode, records) if e is not None]
        for d, records in zip(decoders, (by_reference, whole), strict=True)
    ]
    assert read[0] == read[1]


def test_a_tool_calls_arguments_changed_in_place_are_not_vouched_for_by_the_message() -> None:
    # A frozen message holds a tool call whose ``args`` is a dict: the message's
    # identity vouches for it only because the call keeps its own read-only copy (a
    # dict its maker changes in place afterwards changes nothing the message says), so
    # the next turn may refer to the old JSON.
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    turns = [
        RunInfo(run_id=f"m{i}", name="Model", kind="chat_model", parent_ids=("root",))
        for i in range(2)
    ]
    args: dict[str, Any] = {"config": {"mode": "before"}}
    called = AssistantMessage(tool_calls=(ToolCall(id="c1", name="setup", args=args),))
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(
            event="on_chat_model_start",
            run=turns[0],
            seq=0,
            data=EventData(input={"messages": [UserMessage("go"), called]}),
        ),
        StreamEvent(
            event="on_chat_model_start",
            run=turns[1],
            seq=0,
            data=EventData(input={"messages": [UserMessage("go"), called, UserMessage("more")]}),
        ),
    ]
    _as_plain_encoder_writes_it(events, lambda: args["config"].update(mode="after"))
    with pytest.raises(TypeError, match="read-only"):
        called.tool_calls[0].args["config"]["mode"] = "after"  # the message's own refuses


def test_an_input_changed_in_place_before_its_end_is_written_as_the_end_had_it() -> None:
    # A terminal event whose input is its start's very object is written "as its
    # start's": a dict changed in place between them must be written again.
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    tool_run = RunInfo(run_id="t", name="setup", kind="tool", parent_ids=("root",))
    asked: dict[str, Any] = {"mode": "before"}
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(event="on_tool_start", run=tool_run, seq=0, data=EventData(input=asked)),
        StreamEvent(
            event="on_tool_end",
            run=tool_run,
            seq=1,
            data=EventData(input=asked, output="ok", ended=True),
            status="ok",
            end_time=1.0,
        ),
    ]
    _as_plain_encoder_writes_it(events, lambda: asked.update(mode="after"))


def _agent_turns() -> list[StreamEvent]:
    """Two model turns of an agent with a tool call between them: the model's answer
    comes again in the agent's step chunk, the next turn's input and the agent's output;
    the tool's message in the step chunk, the next input and the output."""
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    models = [
        RunInfo(run_id=f"m{i}", name="Model", kind="chat_model", parent_ids=("root",))
        for i in range(2)
    ]
    looked = RunInfo(run_id="t", name="look", kind="tool", parent_ids=("root",))
    question = UserMessage("go")
    call = ToolCall(id="c1", name="look", args={"where": {"room": "hall"}})
    answer = AssistantMessage(tool_calls=(call,), id="answer-one")
    told = ToolMessage("looked in the hall", "c1", "look")
    final = AssistantMessage("the cat is in the hall", id="answer-two")
    action = AgentAction("look", call.args, "c1", "Invoking: `look`")
    conversation = (question, answer, told, final)

    def start(run: RunInfo, value: Any) -> StreamEvent:
        return StreamEvent(
            event=f"on_{run.kind}_start", run=run, seq=0, data=EventData(input=value)
        )

    def end(run: RunInfo, seq: int, value: Any, output: Any) -> StreamEvent:
        data = EventData(input=value, output=output, ended=True)
        return StreamEvent(
            event=f"on_{run.kind}_end", run=run, seq=seq, data=data, status="ok", end_time=1.0
        )

    def chunk(seq: int, value: Any) -> StreamEvent:
        return StreamEvent(event="on_chain_stream", run=root, seq=seq, chunk=value)

    first, second = {"messages": [question]}, {"messages": [question, answer, told]}
    return [
        start(root, "go"),
        start(models[0], first),
        end(models[0], 1, first, answer),
        chunk(1, ActionsChunk((action,), (answer,))),
        start(looked, call.args),
        end(looked, 1, call.args, "looked in the hall"),
        chunk(2, StepsChunk((AgentStep(action, told.content),), (told,))),
        start(models[1], second),
        end(models[1], 1, second, final),
        chunk(3, FinishChunk(final.content, (final,), "stop")),
        end(root, 4, "go", AgentOutput("go", final.content, "stop", 2, conversation)),
    ]


def test_a_journal_encoder_writes_each_message_once_and_links_to_it() -> None:
    events = _agent_turns()
    records, decoded = round_trip(events, delta=True)
    assert as_json(decoded) == as_json(events)
    text = json.dumps(records)
    for said in ('"answer-one"', '"answer-two"', '"content": "go"'):
        assert text.count(said) == 1
    # (the tool's output and the step's observation are strings: written as they are)
    assert text.count('"looked in the hall"') == 3
    _, plain = round_trip(events)
    assert as_json(plain) == as_json(events)
    # A replay reads the same conversation back: the second turn asks with all of it.
    replay = read_journal("root", json.loads(text)).replay
    assert [s.input for s in replay.steps] == [
        unstructure_any(e.data.input) for e in events if e.event.endswith("_start")
    ][1:]
    assert replay.steps[2].output == events[8].data.output


def test_a_journal_that_goes_on_links_by_its_own_positions() -> None:
    # A run resumed under its own id: a new encoder goes on from the journal's length
    # (its first run number and its first position); what it links to is its own.
    events = _agent_turns()
    before, records = CompactEncoder(delta=True), list[Any]()
    for event in events[:4]:
        before.encode(event, records)
    after = CompactEncoder(len(records), delta=True)
    for event in events[4:]:
        after.encode(event, records)
    decoder = CompactDecoder()
    decoded = [e for e in map(decoder.decode, json.loads(json.dumps(records))) if e is not None]
    assert as_json(decoded) == as_json(events)
    assert read_journal("root", json.loads(json.dumps(records))).replay.steps[2].input == (
        unstructure_any(events[7].data.input)
    )


def test_links_that_do_not_fit_are_refused() -> None:
    records, _ = round_trip(_agent_turns(), delta=True)
    at = next(  # a chunk's, with one link alone
        i for i, r in enumerate(records) if len(r) == 4 and len(r[3]) == (r[3][0] >> 1) + 3
    )
    code, *path, position, index = records[at][3]
    assert code == 2 * len(path) + 1
    for wrong in (
        [code, *path, position + 1, index],  # no message written there
        [code, *path, position, index + 5],
        [code, *path, position],  # cut short
        [code + 2, *path, position, index],  # (one key more, so one number less)
        [3, "nowhere", position, index],
        [2, "nowhere"],
        [-1],
        ["x"],
        "x",
    ):
        decoder = CompactDecoder()
        for record in records[:at]:
            decoder.decode(record)
        with pytest.raises(CompactError, match="links do not fit"):
            decoder.decode([*records[at][:3], wrong])
        with pytest.raises(ValueError, match="malformed record"):
            read_journal("root", [*records[:at], [*records[at][:3], wrong]])


@pytest.mark.parametrize("size", range(5))
def test_links_of_every_path_length_put_in_place_as_copied(size: int) -> None:
    # resolve_in_place walks paths of one to three keys without a loop: each length,
    # a definition and a link, read as resolve reads them.
    path: list[Any] = ["a", 0, "b", 1][:size]

    def payload(leaf: Any) -> Any:
        for key in reversed(path):
            leaf = {key: leaf} if isinstance(key, str) else [None] * key + [leaf]
        return leaf

    message = {"$type": "UserMessage", "content": "hi"}
    defining = [2 * size, *path]
    linking = [2 * size + 1, *path, 0, 0]
    for resolver in ("resolve", "resolve_in_place"):
        links = CompactLinks()
        defined = getattr(links, resolver)(0, payload(message), defining)
        assert defined == payload(message)
        assert getattr(links, resolver)(1, payload(0), linking) == payload(message)
        if size:  # (without a path, the link is the payload itself, whatever it was)
            with pytest.raises(CompactError, match="holds no link"):
                getattr(links, resolver)(1, payload("other"), linking)
        with pytest.raises(CompactError, match="cut short"):  # (a key more than given)
            getattr(links, resolver)(1, payload(0), [2 * size + 3, *path])


def test_links_put_in_place_read_as_those_copied() -> None:
    # A replay resolves its own records in place (CompactLinks.resolve_in_place), a
    # decoder copies the paths it changes: the same payloads either way, the record
    # copied left as it was, one resolved in place before resolved again to the same;
    # a link's place that holds neither 0 nor the message is refused by both.
    records, _ = round_trip(_agent_turns(), delta=True)
    records = json.loads(json.dumps(records))
    copying, in_place, again = CompactLinks(), CompactLinks(), CompactLinks()
    linked = 0
    for position, record in enumerate(records):
        if type(record[0]) is not int or len(record) not in (4, 9) or record[-1] is None:
            continue
        at = 2 if len(record) == 4 else 3
        kept = json.dumps(record)
        copied = copying.resolve(position, record[at], record[-1])
        assert json.dumps(record) == kept
        resolved = in_place.resolve_in_place(position, record[at], record[-1])
        assert resolved == copied
        assert again.resolve_in_place(position, resolved, record[-1]) == copied
        linked += resolved != json.loads(kept)[at]  # (a link put in place)
    assert linked >= 3
    at = next(i for i, r in enumerate(records) if len(r) == 4 and r[3][0] & 1)
    _, *path, _, _ = records[at][3][: (records[at][3][0] >> 1) + 3]
    wrong = json.loads(json.dumps(records[at][2]))
    node = wrong
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "not a link"
    for resolve in (copying.resolve, in_place.resolve_in_place):
        with pytest.raises(CompactError, match="holds no link"):
            resolve(at, json.loads(json.dumps(wrong)), records[at][3])
    with pytest.raises(ValueError, match="malformed record"):
        read_journal("root", [*records[:at], [*records[at][:2], wrong, records[at][3]]])


def test_an_action_whose_input_can_change_is_written_each_time() -> None:
    # An agent's action links only when its input is read-only (a tool call's
    # arguments): one made with a plain dict is written whole each time, as it is then.
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    asked: dict[str, Any] = {"mode": "before"}
    action = AgentAction("setup", asked, "c1")
    frozen = AgentAction("setup", ToolCall(id="c2", name="setup", args=asked).args, "c2")
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(
            event="on_chain_stream", run=root, seq=1, chunk=ActionsChunk((action, frozen), ())
        ),
        StreamEvent(
            event="on_chain_stream",
            run=root,
            seq=2,
            chunk=StepsChunk((AgentStep(action, "ok"), AgentStep(frozen, "ok")), ()),
        ),
    ]
    _as_plain_encoder_writes_it(events, lambda: asked.update(mode="after"))
    records, _ = round_trip(
        [
            *events,
            StreamEvent(
                event="on_chain_end",
                run=root,
                seq=3,
                data=EventData(input="go", output="ok", ended=True),
                status="ok",
                end_time=1.0,
            ),
        ],
        delta=True,
    )
    steps = next(r for r in records if len(r) == 4 and r[2]["$type"] == "StepsChunk")
    assert steps[2]["steps"][0]["action"]["tool_input"] == {"mode": "after"}
    assert steps[2]["steps"][1]["action"] == 0  # linked


@pytest.mark.parametrize("kept", [0, 1 << 16])
def test_links_are_written_as_json_whatever_their_keys(
    kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record's links are written from their values' texts, each kept once made (up
    # to a bound, past which they are made each time): a payload's keys of any text.
    monkeypatch.setattr(_compact, "LINK_TEXTS_KEPT", kept)
    monkeypatch.setattr(_compact, "_LINK_TEXTS", _compact._ValueTexts())
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    told = UserMessage("go")
    keys = ['we"ird\n', "é", "\ud800", "0"]
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        *(
            StreamEvent(event="on_chain_stream", run=root, seq=1 + i, chunk={key: told})
            for i, key in enumerate(keys)
        ),
        StreamEvent(
            event="on_chain_end",
            run=root,
            seq=5,
            data=EventData(input="go", output={"k": [told, told]}, ended=True),
            status="ok",
            end_time=1.0,
        ),
    ]
    records, decoded = round_trip(events, delta=True)
    assert as_json(decoded) == as_json(events)
    assert records[4][-1] == [3, "\ud800", 2, 0]  # (a link to the first chunk's message)
    assert records[5][-1] == [3, "0", 2, 0]  # (a key, not the number: "0" is not 0)
    assert records[-1][-1] == [7, "output", "k", 0, 2, 0, 7, "output", "k", 1, 2, 0]
    assert len(_compact._LINK_TEXTS) == (0 if kept == 0 else 11)
