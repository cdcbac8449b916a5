"""Hostile review of journal schema 4 (replay-speed), journal-cost and hot-path: what a
store journals reads back as it streamed, a resume replays what the run streamed, and
no run's odd output reaches the journal's caller (the tracer)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from protocol import (
    AgentAction,
    AgentStep,
    AssistantMessage,
    AssistantMessageChunk,
    CompactDecoder,
    CompactEncoder,
    EventData,
    FrozenDict,
    ResponseFormat,
    RunInfo,
    StreamEvent,
    ToolCall,
    ToolSpec,
    converter,
    to_json,
)
from runtime import (
    Performer,
    Resume,
    Run,
    adispatch_custom_event,
    current_state,
    dispatch_custom_event,
    interrupt,
    open_runtime,
)
from runtime._journal import JSON_DEPTH
from runtime._store import RunRecord

OutT = TypeVar("OutT")


class _Taking(Performer[Any, OutT]):
    """A test performer that takes its input as it is; each names itself and performs."""

    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # a performer's shared, read-only metadata

    def coerce_input(self, value: Any) -> Any:
        return value


class Announcer(_Taking[str]):
    """Says where it is with a custom event (LangChain's module function, as a tool
    does), streams a chunk, then asks a person; counts its rounds."""

    name = "announcer"

    def __init__(self, how: str) -> None:
        self.how = how
        self.rounds = 0

    async def perform(self, message: Any, run: Run) -> str:
        self.rounds += 1
        if self.how == "sync":
            await dispatch_custom_event("where", {"at": "start"})
        elif self.how == "async":
            await adispatch_custom_event("where", {"at": "start"})
        else:  # a shared state's change is told as a custom event too
            await current_state().update({"at": "start"})
        await run.emit("working")
        return f"told {await interrupt('go on?')}"


@pytest.mark.parametrize("how", ["async", "sync", "state"])
async def test_a_custom_event_dispatched_by_the_module_function_is_replayed(
    url: str, how: str
) -> None:
    """A run that dispatched a custom event with ``adispatch_custom_event`` (or the
    sync ``dispatch_custom_event``, or a shared state's change) and streamed after it
    resumes: its replay drops the custom event as it drops the chunk (it was streamed
    before), instead of sending it again and finding the chunk out of step
    (ReplayDivergenceError)."""
    performer = Announcer(how)
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(performer, "x", run_id="first") as stream:
            first = [event async for event in stream]
            paused = stream.paused
        assert paused is not None
        assert [e.event for e in first if e.run_id == "first"] == [
            "on_chain_start",
            "on_custom_event",
            "on_chain_stream",
            "on_chain_end",
        ]
        resume = Resume("first", {paused.pending[0].id: "yes"})
        async with rt.astream_events(performer, None, resume=resume, run_id="again") as stream:
            again = [event async for event in stream]
        assert performer.rounds == 2
        # What the first run streamed is not streamed again; the resume ends well.
        assert [e.event for e in again] == ["on_chain_start", "on_chain_end"]
        assert again[-1].data.output == "told yes"
        async with rt.join("again") as joined:
            assert [to_json(e) async for e in joined] == [to_json(e) for e in again]


class Emitter(_Taking[str]):
    """Streams its input (once, or twice in one hand-over), then returns "ok"."""

    name = "emitter"

    def __init__(self, many: bool) -> None:
        self.many = many

    async def perform(self, message: Any, run: Run) -> str:
        if self.many:
            await run.emit_many([message, message])
        else:
            await run.emit(message)
        return "ok"


@pytest.mark.parametrize("many", [False, True])
@pytest.mark.parametrize("chunk", [[object()], {"when": {1, 2}}], ids=["list", "dict"])
async def test_a_chunk_holding_what_has_no_json_form_is_journaled_as_its_repr(
    url: str, many: bool, chunk: Any
) -> None:
    """A chunk with no JSON form inside a list or a dict (schema 4's delta encoder
    links the messages of a chunk's lists): journaled as its repr, as the codec says
    and as before schema 4. It raised SerializationError out of the journal's encoder:
    the run failed (its producer delivered it) or the tracer crashed, and with it the
    whole runtime (ActorCrashedError)."""
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(Emitter(many), chunk, run_id="odd") as stream:
            streamed = [event async for event in stream]
        assert [e.event for e in streamed] == ["on_chain_start"] + ["on_chain_stream"] * (
            1 + many
        ) + ["on_chain_end"]
        async with rt.join("odd") as joined:
            read_back = [event async for event in joined]
        assert [e.data.chunk for e in read_back[1:-1]] == [repr(chunk)] * (1 + many)
        assert read_back[-1].data.output == "ok"
        assert await rt.ainvoke(Emitter(many), "fine", run_id="next") == "ok"


class Circular(_Taking[Any]):
    """Returns a list that holds itself (or streams it first)."""

    name = "circular"

    def __init__(self, stream: bool) -> None:
        self.stream = stream

    async def perform(self, message: Any, run: Run) -> Any:
        looped: list[Any] = [1]
        looped.append(looped)
        if self.stream:
            await run.emit(looped)
            return "ok"
        return looped


@pytest.mark.parametrize("stream", [False, True])
async def test_a_value_that_holds_itself_stays_inside_its_run(url: str, stream: bool) -> None:
    """A run's output (or chunk) that holds itself: without a store the run ends well;
    with one, the journal's encoder hit RecursionError (no JSON form, but not a
    SerializationError), which reached the tracer: the whole runtime crashed
    (ActorCrashedError; its callers heard trio.Cancelled). Promise 9: an error, however
    odd, stays inside its run. It is journaled as its repr."""
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(Circular(stream), "x", run_id="loop") as streamed:
            events = [event async for event in streamed]
        assert events[-1].event == "on_chain_end"
        async with rt.join("loop") as joined:
            read_back = [event async for event in joined]
        said = read_back[1].data.chunk if stream else read_back[-1].data.output
        assert said == "[1, [...]]"
        assert await rt.ainvoke(Emitter(False), "fine", run_id="next") == "ok"


class OddModel(_Taking[str]):
    """A chat model's run that streams what is not a message chunk, with no JSON form."""

    name = "odd model"
    run_kind = "chat_model"

    async def perform(self, message: Any, run: Run) -> str:
        await run.emit({"odd": object()})
        return "ok"


async def test_a_chat_model_chunk_that_is_no_message_and_has_no_json_form_stays_in_its_run(
    url: str,
) -> None:
    """A chat model run's chunk that is not a message chunk is journaled whole (as an
    event); with no JSON form it raised SerializationError into the tracer (the run
    failed, or the runtime crashed). It is journaled with its repr."""
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(OddModel(), "x", run_id="odd") as stream:
            streamed = [event async for event in stream]
        assert [e.event for e in streamed] == [
            "on_chat_model_start",
            "on_chat_model_stream",
            "on_chat_model_end",
        ]
        async with rt.join("odd") as joined:
            read_back = [event async for event in joined]
        assert read_back[1].data.chunk == repr(streamed[1].data.chunk)
        assert await rt.ainvoke(Emitter(False), "fine", run_id="next") == "ok"


class Plain(_Taking[str]):
    """Returns "ok", whatever it is asked."""

    name = "plain"

    async def perform(self, message: Any, run: Run) -> str:
        return "ok"


async def _run_read_back_and_go_on(url: str, value: Any) -> tuple[RunRecord, list[Any]]:
    """Run ``Plain`` on ``value`` with a store: its record, its events read back, and
    a run after it (the runtime went on)."""
    try:
        async with open_runtime(store=url) as rt:
            assert await rt.ainvoke(Plain(), value, run_id="odd") == "ok"
            record = await rt.get_run("odd")
            async with rt.join("odd") as joined:
                read_back = [event async for event in joined]
            assert await rt.ainvoke(Plain(), "fine", run_id="next") == "ok"
    except Exception as exc:  # (its traceback is too deep for pytest to show)
        pytest.fail(f"{type(exc).__name__}: {exc}"[:300], pytrace=False)
    return record, read_back


async def test_a_root_input_that_holds_itself_stays_inside_its_run(url: str) -> None:
    """A root run's input that holds itself: the run's record (its input as JSON, each
    part that has none as its repr) recursed without end, and the RecursionError reached
    the tracer: the whole runtime crashed. Its input is kept as its repr."""
    looped: dict[str, Any] = {"a": 1}
    looped["self"] = looped
    record, read_back = await _run_read_back_and_go_on(url, looped)
    assert record.input == {"a": 1, "self": repr(looped)}
    assert read_back[0].data.input == repr(looped)


async def test_a_root_input_nested_deeper_than_the_stack_stays_inside_its_run(url: str) -> None:
    """A root run's input nested 5,000 lists deep (holding nothing odd, nor itself): the
    converter ran out of stack, then the record's own look into it did, and the
    RecursionError reached the tracer: the whole runtime crashed. Its input is kept as
    JSON down to JSON_DEPTH levels, and below that as its repr (which fails too here)."""
    deep: Any = "core"
    for _ in range(5000):
        deep = [deep]
    record, read_back = await _run_read_back_and_go_on(url, deep)
    kept, levels = record.input, 0
    while isinstance(kept, list):
        (kept,), levels = kept, levels + 1
    assert levels == JSON_DEPTH
    assert kept == "<builtins.list whose repr failed>"
    assert [event.status for event in read_back] == [None, "ok"]


def test_a_frozen_dict_made_by_hand_is_read_only_all_through() -> None:
    """``FrozenDict`` is public; one made by hand (``FrozenDict(args)``, to give a tool
    call read-only arguments) kept the plain lists and dicts inside it, and
    ``frozen_json`` took it as it was: a message's identity then vouched for a list
    changed in place, and the journal linked to what the message no longer said."""
    where: list[Any] = ["hall"]
    call = ToolCall(id="c1", name="look", args=FrozenDict({"where": where}))
    with pytest.raises(TypeError, match="read-only"):
        call.args["where"].append("attic")
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    model = RunInfo(run_id="m", name="Model", kind="chat_model", parent_ids=("root",))
    answer = AssistantMessage(tool_calls=(call,), id="answer")
    events = [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go")),
        StreamEvent(event="on_chat_model_start", run=model, seq=0, data=EventData(input="go")),
        StreamEvent(
            event="on_chat_model_end",
            run=model,
            seq=1,
            data=EventData(input="go", output=answer, ended=True),
            status="ok",
            end_time=1.0,
        ),
        StreamEvent(event="on_chain_stream", run=root, seq=1, chunk=[answer]),
    ]
    encoder, records = CompactEncoder(delta=True), list[Any]()
    decoder = CompactDecoder()
    for event in events:
        encoder.encode(event, records)
        # the journal writes each record as JSON at once
        streamed = converter.unstructure(event, StreamEvent)
        for record in records:
            decoded = decoder.decode(json.loads(json.dumps(record)))
        records.clear()
        assert decoded is not None
        assert converter.unstructure(decoded, StreamEvent) == streamed
        with contextlib.suppress(TypeError):  # (read-only: changes nothing)
            where.append("attic")


def _check_end_after_a_change(value: Any, name: str, change: Callable[[], object]) -> None:
    """A root run's start and end with input ``value``, delta-encoded with ``change``
    made between them: the end reads back as it was at its end."""
    run = RunInfo(run_id="root", name=name, kind="chain")
    start = StreamEvent(event="on_chain_start", run=run, seq=0, data=EventData(input=value))
    end = StreamEvent(
        event="on_chain_end",
        run=run,
        seq=1,
        data=EventData(input=value, output="ok", ended=True),
        status="ok",
        end_time=1.0,
    )
    encoder, records = CompactEncoder(delta=True), list[Any]()
    encoder.encode(start, records)
    change()
    encoder.encode(end, records)
    decoder = CompactDecoder()
    decoded = [e for e in map(decoder.decode, json.loads(json.dumps(records))) if e]
    assert converter.unstructure(decoded[-1], StreamEvent) == converter.unstructure(
        end, StreamEvent
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda asked: AgentAction("look", asked),
        lambda asked: ToolSpec("look", "Look.", asked),
        lambda asked: ResponseFormat("answer", asked),
    ],
    ids=["action", "tool spec", "response format"],
)
def test_an_end_whose_frozen_input_holds_a_dict_changed_since_its_start_reads_as_it_was(
    make: Any,
) -> None:
    """A run's input that is a frozen protocol object holding a plain dict (an action
    made with a dict, a tool's schema, a response format's): changed in place during
    the run, its end was written as "its start's" (a frozen object vouched by its
    identity) and read back with the start's dict; a plain encoder writes what the end
    had, as does the delta encoder for an input object."""
    asked: dict[str, Any] = {"mode": "before"}
    _check_end_after_a_change(make(asked), "p", lambda: asked.update(mode="after"))


class NumberModel(_Taking[str]):
    """A chat model run whose message chunks' content is not all text (a custom
    model's odd chunk)."""

    name = "number model"
    run_kind = "chat_model"

    async def perform(self, message: Any, run: Run) -> str:
        await run.emit(AssistantMessageChunk(content="a", id="m"))
        await run.emit(AssistantMessageChunk(content=5, id="m"))  # type: ignore[arg-type]
        await run.emit(AssistantMessageChunk(content="b", id="m"))
        return "ok"


async def test_a_chat_chunk_whose_content_is_not_text_is_journaled(url: str) -> None:
    """The journal gathers a chat model's run of text chunks as their texts, written
    when the batch is: a chunk whose content was not a str joined the run of texts,
    and its write failed (``encode_basestring`` takes str alone), retried for 3 s
    (every tree of the batch with it), then the run was cancelled with JournalError. It
    is journaled whole, and reads back as it streamed."""
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(NumberModel(), "x", run_id="numbers") as stream:
            streamed = [to_json(event) async for event in stream]
        async with rt.join("numbers") as joined:
            assert [to_json(event) async for event in joined] == streamed


@pytest.mark.parametrize("holder", ["tool spec", "action", "step"])
def test_an_end_whose_input_list_holds_a_frozen_object_with_a_changed_dict(holder: str) -> None:
    """An input whose list holds frozen objects that hold a plain dict (a caller's
    ToolSpecs with their schemas; agent actions, or steps, made with a dict): the dict
    changed in place before the run's end."""
    schema: dict[str, Any] = {"type": "object"}
    item: Any = {
        "tool spec": ToolSpec("ask", "Ask.", schema),
        "action": AgentAction("ask", schema, "call-1"),
        "step": AgentStep(AgentAction("ask", schema, "call-1"), "fine"),
    }[holder]
    value = {"input": "go", "tools": [item]}
    _check_end_after_a_change(value, "Agent", lambda: schema.update(required=["question"]))
