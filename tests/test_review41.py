"""Hostile review of selective sync, leavable reads, owners' hosts, identity vouching,
``JSON_DEPTH``, the agent's cached tools and the viewer board's waiting tokens: what a
run with a store journals stays inside its run (promise 9) and reads back as it
streamed."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import pytest

from protocol import (
    AssistantMessage,
    CompactDecoder,
    CompactEncoder,
    EventData,
    InvalidToolCall,
    RunInfo,
    StreamEvent,
    ToolCall,
    converter,
)
from runtime import Run, open_runtime
from runtime._journal import _LIVE_OWNERS

from .test_review_journal4 import _Taking


class OddKey:
    """A dict key (not a str) whose ``__str__`` or ``__repr__`` (or both) raise."""

    def __init__(self, fails: str) -> None:
        self.fails = fails

    def __str__(self) -> str:
        if "str" in self.fails:
            raise ValueError("no str")
        return "odd"

    def __repr__(self) -> str:
        if "repr" in self.fails:
            raise ValueError("no repr")
        return "OddKey()"


class KeyHolder(_Taking[Any]):
    """Streams, or returns, a dict with an odd key (or returns ``ok`` on another input)."""

    name = "key holder"

    def __init__(self, where: str, fails: str) -> None:
        self.where = where
        self.fails = fails

    async def perform(self, message: Any, run: Run) -> Any:
        if self.where == "chunk":
            await run.emit({OddKey(self.fails): 1})
        return {OddKey(self.fails): 1} if self.where == "output" else "ok"


@pytest.mark.parametrize("fails", ["str", "repr", "str and repr"])
@pytest.mark.parametrize("where", ["input", "chunk", "output"])
async def test_a_dict_key_whose_str_or_repr_fails_stays_inside_its_run(
    url: str, where: str, fails: str
) -> None:
    """A root input, chunk or output holding a dict whose key is no str and cannot be
    shown (its ``__str__`` or ``__repr__`` raises): the run's record (``json_value``'s
    ``str(key)``) or the converter's error message (``{key!r}``) raised into the
    tracer, and the whole runtime crashed (ActorCrashedError). Promise 9: an error,
    however odd (a failing ``__str__``), stays inside its run."""
    holder = KeyHolder(where, fails)
    given = {OddKey(fails): 1} if where == "input" else "go"
    try:
        async with open_runtime(store=url) as rt:
            async with rt.astream_events(holder, given, run_id="odd") as stream:
                streamed = [event async for event in stream]
            assert streamed[-1].event == "on_chain_end"
            async with rt.join("odd") as joined:
                read_back = [event async for event in joined]
            assert [e.event for e in read_back] == [e.event for e in streamed]
            assert await rt.ainvoke(KeyHolder("none", fails), "fine", run_id="next") == "ok"
    except Exception as exc:  # (its traceback is too deep for pytest to show)
        pytest.fail(f"{type(exc).__name__}: {exc}"[:300], pytrace=False)


@pytest.mark.parametrize("field_name", ["tool_calls", "invalid_tool_calls"])
def test_a_message_made_with_a_list_of_calls_reads_back_as_it_was_streamed(
    field_name: str,
) -> None:
    """A message vouches for its JSON by its identity (``_SEALED``): it holds only what
    cannot change in place. One made by hand with a list of tool calls (LangChain's
    habit: ``AIMessage(tool_calls=[...])``) kept the list, and a call appended to it
    after the message was journaled was not: the journal linked to the message's JSON
    as first written, and read back what the stream no longer said."""
    call: Any = (
        ToolCall(id="c1", name="look", args={"n": 1})
        if field_name == "tool_calls"
        else InvalidToolCall(id="c1", name="look", args="{", error="bad")
    )
    calls = [call]
    given: dict[str, Any] = {field_name: calls}
    message = AssistantMessage(**given)
    with contextlib.suppress(AttributeError):  # (read-only: changes nothing)
        getattr(message, field_name).append(call)
    calls.append(call)  # the caller's list
    run = RunInfo(run_id="root", name="Agent", kind="chain")
    events = [
        StreamEvent(
            event="on_chain_start", run=run, seq=0, data=EventData(input={"messages": [message]})
        ),
        StreamEvent(event="on_chain_stream", run=run, seq=1, chunk=[message]),
    ]
    encoder, records = CompactEncoder(delta=True), list[Any]()
    decoder = CompactDecoder()
    for event in events:
        encoder.encode(event, records)
        streamed = converter.unstructure(event, StreamEvent)
        decoded = [decoder.decode(json.loads(json.dumps(r))) for r in records][-1]
        records.clear()
        assert decoded is not None
        assert converter.unstructure(decoded, StreamEvent) == streamed
        with contextlib.suppress(AttributeError):
            getattr(message, field_name).append(call)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX's")
def test_a_forked_child_does_not_take_its_parent_s_journals_for_its_own() -> None:
    """A process's open journals are kept by owner id (``_LIVE_OWNERS``), never judged
    dead by another runtime of the same process. A child forked while its parent had a
    runtime open (multiprocessing's default start on Linux) inherited that set: its own
    runtime never judged the parent's journal dead, by pid or by lease, and after the
    parent died its runs were never ended or resumed by the child."""
    _LIVE_OWNERS.add("the parent's journal")
    read, write = os.pipe()
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover  (the child)
            os.write(write, b"kept" if "the parent's journal" in _LIVE_OWNERS else b"gone")
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        assert os.read(read, 16) == b"gone"
    finally:
        _LIVE_OWNERS.discard("the parent's journal")
        os.close(read)
