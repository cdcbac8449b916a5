"""Checks of DESIGN.md's promises 1-4 over one subscriber's events of one run tree."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from attrs import define, field

from protocol import AssistantMessage, AssistantMessageChunk, StreamEvent, merge_chunks

LOCAL_METADATA = frozenset({"tool_call_id"})
"""Metadata keys of a run alone (``Performer.local_metadata``), not inherited, beside
LangChain's ``ls_*`` keys."""
_NAME = re.compile(r"^on_(?P<kind>[a-z_]+)_(?P<phase>start|stream|end|error)$")


@define
class RunTrace:
    """What one run's events said, in order, with their positions in the stream."""

    start: StreamEvent
    start_at: int
    events: list[StreamEvent] = field(factory=list)
    terminal: StreamEvent | None = None
    terminal_at: int = -1

    @property
    def chunks(self) -> list[Any]:
        return [e.data.chunk for e in self.events if e.phase == "stream"]


def check_promises(events: Sequence[StreamEvent], *, complete: bool = True) -> dict[str, RunTrace]:
    """Assert promises 1-4 and return each run's trace by run id.

    ``complete`` is for unfiltered streams: every run's events are all there.
    """
    assert events, "no events"
    runs: dict[str, RunTrace] = {}
    for at, event in enumerate(events):
        _check_complete(event)
        trace = runs.get(event.run_id)
        if event.phase == "start":
            assert trace is None, f"second start of {event.run_id}"
            assert event.seq == 0
            runs[event.run_id] = RunTrace(event, at)
            continue
        assert trace is not None, f"{event.event} of {event.name} before its start"
        assert trace.terminal is None, f"{event.event} of {event.name} after its terminal event"
        assert event.seq > (trace.events[-1].seq if trace.events else 0)
        if complete:
            assert event.seq == len(trace.events) + 1, "a gap in the run's sequence numbers"
        for attribute in ("name", "tags", "metadata", "parent_ids", "kind", "start_time"):
            if event.phase == "custom" and attribute in ("name", "kind"):
                continue
            assert getattr(event, attribute) == getattr(trace.start, attribute), attribute
        trace.events.append(event)
        if event.is_terminal:
            trace.terminal, trace.terminal_at = event, at
            assert event.data.get("input") == trace.start.data.get("input")
            assert event.end_time is not None and event.end_time >= event.start_time
            if event.status == "ok":
                assert event.event.endswith("_end") and "output" in event.data
            else:
                assert event.event.endswith("_error") and event.data.get("error")
    roots = [t for t in runs.values() if t.start.run_id == events[0].run_id]
    assert len(roots) == 1 and roots[0].start_at == 0, "the root's start is not first"
    root = roots[0]
    for trace in runs.values():
        assert trace.terminal is not None, f"{trace.start.name} has no terminal event"
        _check_tree(trace, runs, root)
        _check_tokens(trace)
    assert root.terminal_at == len(events) - 1, "the root's terminal event is not last"
    return runs


def _check_complete(event: StreamEvent) -> None:
    assert isinstance(event.name, str) and event.name
    assert isinstance(event.run_id, str) and event.run_id
    assert isinstance(event.parent_ids, tuple)
    assert isinstance(event.tags, tuple)
    assert isinstance(event.metadata, dict)
    if event.phase != "custom":
        match = _NAME.match(event.event)
        assert match, event.event
        assert match["kind"] == event.kind
        assert (event.status is not None) == (match["phase"] in ("end", "error"))
    # the LangChain dict view says the same as the attributes
    assert event["event"] == event.event and event["data"] is event.data


def _check_tree(trace: RunTrace, runs: dict[str, RunTrace], root: RunTrace) -> None:
    start = trace.start
    if trace is root:
        return
    parent_id = start.parent_ids[-1]
    parent = runs.get(parent_id)
    assert parent is not None, f"{start.name}'s parent is not in the stream"
    assert start.parent_ids == (*parent.start.parent_ids, parent_id)
    assert parent.start_at < trace.start_at, "a child started before its parent"
    assert trace.terminal_at < parent.terminal_at, "a child ended after its parent"
    # inheritance: ancestors' tags and metadata reach every descendant (but for a run's
    # local metadata, such as a tool call's id, which is its own)
    assert set(parent.start.tags) <= set(start.tags)
    inheritable = {k for k in parent.start.metadata if k not in LOCAL_METADATA}
    assert {k for k in inheritable if not k.startswith("ls_")} <= set(start.metadata)
    assert start.run_id > parent.start.run_id, "run ids do not sort by start"


def _check_tokens(trace: RunTrace) -> None:
    if trace.start.kind != "chat_model" or trace.terminal is None:
        return
    if trace.terminal.status != "ok":
        return
    chunks = trace.chunks
    assert all(isinstance(c, AssistantMessageChunk) for c in chunks)
    output = trace.terminal.data.output
    assert isinstance(output, AssistantMessage)
    assert "".join(c.content for c in chunks) == output.content
    assert merge_chunks(chunks).tool_calls == output.tool_calls
