"""Check DESIGN.md's promises 1-4 on any list of events, and the shape of a steps stream.

A failure is one :class:`PromiseBroken` (an ``AssertionError``, so pytest shows it as a
failed assertion) naming the promise, the event's position and its run, followed by the
run tree as far as the stream told it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final, NoReturn

from attrs import define, field

from protocol import (
    ActionsChunk,
    AssistantMessage,
    AssistantMessageChunk,
    FinishChunk,
    InvalidToolCall,
    StepsChunk,
    StreamEvent,
    ToolCall,
    ToolMessage,
    merge_chunks,
)

PROMISES: Final = {
    1: "complete events",
    2: "ordering",
    3: "token integrity",
    4: "inheritance",
}
"""DESIGN.md's promises this module checks, by number."""

LOCAL_METADATA: Final = frozenset({"tool_call_id", "handoff_from"})
"""Metadata keys that belong to one run alone (``Performer.local_metadata``) and are not
inherited by its children, beside LangChain's ``ls_*`` keys."""

_EVENT_NAME: Final = re.compile(r"^on_(?P<kind>[a-z_]+)_(?P<phase>start|stream|end|error)$")
_TREE_LINES: Final = 40


class PromiseBroken(AssertionError):
    """An event stream broke one of Troupe's promises.

    Attributes:
        promise: the promise's number in DESIGN.md (1-4; 0 for the steps stream).
        position: the offending item's index in the list checked (``None``: the stream
            as a whole, e.g. a run that never ended).
        run_id: the run it concerns, if any.
    """

    def __init__(
        self, message: str, *, promise: int, position: int | None, run_id: str | None
    ) -> None:
        super().__init__(message)
        self.promise = promise
        self.position = position
        self.run_id = run_id


@define
class RunTrace:
    """What a stream said of one run: its events in order, with their positions."""

    run_id: str
    name: str
    kind: str
    parent_ids: tuple[str, ...]
    first_at: int
    start_event: StreamEvent | None = None
    """The run's start event; ``None`` if a lossy stream dropped it."""
    start_at: int = -1
    events: list[StreamEvent] = field(factory=list)
    """The run's events after its start (stream, custom and terminal events)."""
    terminal: StreamEvent | None = None
    terminal_at: int = -1
    gaps: bool = False
    """Some of the run's events are not in the stream (a lossy subscriber)."""

    @property
    def start(self) -> StreamEvent:
        """The run's start event.

        Raises:
            LookupError: the stream did not have it (``check_events(complete=False)``).
        """
        if self.start_event is None:
            raise LookupError(f"the stream has no start event of run {self.name!r}")
        return self.start_event

    @property
    def chunks(self) -> list[Any]:
        """The run's streamed chunks, in order."""
        return [e.data.chunk for e in self.events if e.phase == "stream"]

    @property
    def status(self) -> str:
        """``ok``, ``error`` or ``cancelled``; ``running`` without a terminal event."""
        return self.terminal.status or "?" if self.terminal is not None else "running"


def check_events(
    events: Iterable[StreamEvent], *, complete: bool = True, filtered: bool = False
) -> dict[str, RunTrace]:
    """Assert promises 1-4 on ``events`` and return each run's trace by run id.

    Works on the events of any subscriber: one run's stream, a runtime-wide watcher's
    (several run trees, interleaved), a filtered stream. Say what the stream may lack:

    - ``complete=True`` (default): every run in the stream has all of its events: its
      start, every stream event, its terminal event. Pass ``False`` for a stream the
      consumer left early, or a subscriber that drops events: then only what the events
      present can show is checked (tokens only of runs seen whole).
    - ``filtered=False`` (default): every run's parent is in the stream. Pass ``True``
      for a stream filtered by name, kind or tag: a run is then checked against its
      nearest ancestor in the stream.

    Raises:
        PromiseBroken: the first promise broken, naming the run and the event's position,
            with the run tree as the stream told it.
    """
    checker = _EventChecker(complete=complete, filtered=filtered)
    for at, event in enumerate(events):
        checker.add(at, event)
    checker.finish()
    return checker.runs


class _EventChecker:
    def __init__(self, *, complete: bool, filtered: bool) -> None:
        self.complete = complete
        self.filtered = filtered
        self.runs: dict[str, RunTrace] = {}
        self.tree_first: dict[str, int] = {}
        self.tree_last: dict[str, int] = {}
        self.count = 0

    # -- reporting ------------------------------------------------------------------

    def fail(self, promise: int, message: str, at: int | None, trace: RunTrace | None) -> NoReturn:
        where = "in the stream as a whole"
        if at is not None:
            where = f"at event {at}"
        if trace is not None:
            where += f", run {trace.name!r} ({trace.kind}, {trace.run_id})"
        text = f"promise {promise} ({PROMISES[promise]}) broken {where}: {message}"
        tree = self.tree_text(trace)
        if tree:
            text += "\nrun tree (event positions, status):\n" + tree
        raise PromiseBroken(
            text, promise=promise, position=at, run_id=trace.run_id if trace else None
        )

    def tree_text(self, marked: RunTrace | None) -> str:
        children: dict[str | None, list[RunTrace]] = {}
        for trace in self.runs.values():
            parent = self.nearest_ancestor(trace)
            children.setdefault(parent.run_id if parent else None, []).append(trace)
        lines: list[str] = []

        def walk(parent: str | None, depth: int) -> None:
            for trace in children.get(parent, []):
                last = trace.terminal_at if trace.terminal is not None else "…"
                mark = "  <-- here" if trace is marked else ""
                lines.append(
                    f"{'  ' * depth}{trace.name} [{trace.kind}] {trace.first_at}-{last} "
                    f"{trace.status}{mark}"
                )
                walk(trace.run_id, depth + 1)

        walk(None, 1)
        if len(lines) > _TREE_LINES:
            keep = lines[: _TREE_LINES - 1]
            keep.append(f"  … and {len(lines) - len(keep)} more runs")
            lines = keep
        return "\n".join(lines)

    # -- the walk -------------------------------------------------------------------

    def nearest_ancestor(self, trace: RunTrace) -> RunTrace | None:
        for parent_id in reversed(trace.parent_ids):
            parent = self.runs.get(parent_id)
            if parent is not None:
                return parent
        return None

    def add(self, at: int, event: StreamEvent) -> None:
        self.count = at + 1
        if not isinstance(event, StreamEvent):
            self.fail(1, f"not a StreamEvent: {type(event).__name__}", at, None)
        trace = self.runs.get(event.run_id) if isinstance(event.run_id, str) else None
        self.check_complete(at, event, trace)
        tree = event.parent_ids[0] if event.parent_ids else event.run_id
        self.tree_first.setdefault(tree, at)
        self.tree_last[tree] = at
        if trace is None:
            trace = RunTrace(event.run_id, event.name, event.kind, event.parent_ids, at)
            self.runs[event.run_id] = trace
            if event.phase != "start":
                if self.complete:
                    self.fail(2, f"{event.event} before the run's start", at, trace)
                trace.gaps = True
                self.begin(at, event, trace)
        elif event.phase == "start":
            self.fail(2, "a second start event", at, trace)
        if event.phase == "start":
            if not event.parent_ids and self.tree_first[tree] != at:
                self.fail(2, "the root's start is not the first event of its tree", at, trace)
            if event.seq != 0:
                self.fail(2, f"a start event has seq {event.seq}, not 0", at, trace)
            trace.start_event, trace.start_at = event, at
            self.begin(at, event, trace)
            return
        self.follow(at, event, trace)

    def begin(self, at: int, event: StreamEvent, trace: RunTrace) -> None:
        """The first event of a run: where it sits in the tree."""
        if not event.parent_ids:
            return
        parent = self.runs.get(event.parent_ids[-1])
        if parent is None and not self.filtered:
            self.fail(
                2,
                f"its parent {event.parent_ids[-1]} is not in the stream "
                "(pass filtered=True for a filtered stream)",
                at,
                trace,
            )
        ancestor = parent or self.nearest_ancestor(trace)
        if ancestor is None:
            return
        if ancestor.terminal is not None:
            self.fail(2, f"it started after {ancestor.name!r} ended", at, trace)
        depth = len(ancestor.parent_ids) + 1
        if event.parent_ids[:depth] != (*ancestor.parent_ids, ancestor.run_id):
            self.fail(
                2, f"parent_ids {event.parent_ids} do not extend {ancestor.name!r}'s", at, trace
            )
        if ancestor.start_event is not None and event.phase == "start":
            self.check_inherits(at, event, ancestor.start_event, trace, ancestor)

    def check_inherits(
        self,
        at: int,
        event: StreamEvent,
        ancestor_start: StreamEvent,
        trace: RunTrace,
        ancestor: RunTrace,
    ) -> None:
        missing_tags = [t for t in ancestor_start.tags if t not in event.tags]
        if missing_tags:
            self.fail(4, f"tags {missing_tags} of {ancestor.name!r} not inherited", at, trace)
        missing = [
            key
            for key in ancestor_start.metadata
            if key not in LOCAL_METADATA and not key.startswith("ls_") and key not in event.metadata
        ]
        if missing:
            self.fail(4, f"metadata {missing} of {ancestor.name!r} not inherited", at, trace)

    def follow(self, at: int, event: StreamEvent, trace: RunTrace) -> None:
        """An event after the run's first one."""
        if trace.terminal is not None:
            self.fail(2, f"{event.event} after the run's terminal event", at, trace)
        previous = trace.events[-1].seq if trace.events else (0 if trace.start_event else -1)
        if event.seq <= previous:
            self.fail(2, f"seq {event.seq} does not follow {previous}", at, trace)
        if event.seq != previous + 1:
            if self.complete:
                self.fail(2, f"seq jumps from {previous} to {event.seq}: events missing", at, trace)
            trace.gaps = True
        trace.events.append(event)
        if event.is_terminal:
            trace.terminal, trace.terminal_at = event, at
            self.check_terminal(at, event, trace)

    def check_terminal(self, at: int, event: StreamEvent, trace: RunTrace) -> None:
        if trace.start_event is not None and event.data.get("input") != trace.start_event.data.get(
            "input"
        ):
            self.fail(1, "the terminal event's input differs from the start's", at, trace)
        if event.end_time is None or event.end_time < event.start_time:
            self.fail(1, f"end_time {event.end_time} is not after start_time", at, trace)
        if event.status in ("ok", "paused") and "output" not in event.data:
            self.fail(1, "an end event without output", at, trace)
        if event.status not in ("ok", "paused") and not event.data.get("error"):
            self.fail(1, f"a {event.status} run's terminal event has no error", at, trace)
        ancestor = self.nearest_ancestor(trace)
        if ancestor is not None and ancestor.terminal is not None:
            self.fail(2, f"a child ended after its parent {ancestor.name!r}", at, trace)
        self.check_tokens(at, trace)

    def check_tokens(self, at: int, trace: RunTrace) -> None:
        terminal = trace.terminal
        if trace.kind != "chat_model" or terminal is None or terminal.status != "ok":
            return
        if trace.gaps or trace.start_event is None:
            return  # not seen whole
        chunks = trace.chunks
        odd = [c for c in chunks if not isinstance(c, AssistantMessageChunk)]
        if odd:
            self.fail(3, f"a stream chunk is a {type(odd[0]).__name__}", at, trace)
        output = terminal.data.output
        if not isinstance(output, AssistantMessage):
            self.fail(3, f"the output is a {type(output).__name__}", at, trace)
        streamed = "".join(c.content for c in chunks)
        if streamed != output.content:
            self.fail(
                3,
                f"streamed text {_clip(streamed)} differs from the output's "
                f"{_clip(output.content)}",
                at,
                trace,
            )
        calls = merge_chunks(chunks).tool_calls
        if calls != output.tool_calls:
            self.fail(
                3,
                f"streamed tool calls {calls} differ from the output's {output.tool_calls}",
                at,
                trace,
            )

    def check_complete(self, at: int, event: StreamEvent, trace: RunTrace | None) -> None:
        """Promise 1: every field there, and the same as the start's."""
        for attribute, kind in (("name", str), ("run_id", str), ("event", str)):
            value = getattr(event, attribute)
            if not isinstance(value, kind) or not value:
                self.fail(1, f"{attribute} is {value!r}", at, trace)
        for attribute, kinds in (
            ("parent_ids", tuple),
            ("tags", tuple),
            ("metadata", dict),
        ):
            value = getattr(event, attribute)
            if not isinstance(value, kinds):
                self.fail(1, f"{attribute} is a {type(value).__name__}", at, trace)
        if event.phase != "custom":
            match = _EVENT_NAME.match(event.event)
            if match is None or match["kind"] != event.kind:
                self.fail(1, f"event {event.event!r} does not name kind {event.kind!r}", at, trace)
            if (event.status is not None) != (match["phase"] in ("end", "error")):
                self.fail(1, f"{event.event} has status {event.status!r}", at, trace)
        # the dict view reads as the attributes (a custom event's data: its payload)
        data = event.data.chunk if event.phase == "custom" else event.data
        if event["event"] != event.event or event["data"] is not data:
            self.fail(1, "the dict view differs from the attributes", at, trace)
        first = trace.start_event if trace is not None else None
        if first is None:
            return
        for attribute in ("name", "tags", "metadata", "parent_ids", "kind", "start_time"):
            if event.phase == "custom" and attribute in ("name", "kind"):
                continue
            if getattr(event, attribute) != getattr(first, attribute):
                self.fail(
                    1,
                    f"{attribute} {getattr(event, attribute)!r} differs from the start's "
                    f"{getattr(first, attribute)!r}",
                    at,
                    trace,
                )

    def finish(self) -> None:
        if self.count == 0:
            raise PromiseBroken("no events to check", promise=1, position=None, run_id=None)
        for trace in self.runs.values():
            if self.complete and trace.terminal is None:
                self.fail(2, "the run has no terminal event", None, trace)
            if not trace.parent_ids and trace.terminal is not None:
                last = self.tree_last[trace.run_id]
                if trace.terminal_at != last:
                    self.fail(
                        2,
                        f"the root's terminal event is not its tree's last (event {last} is)",
                        trace.terminal_at,
                        trace,
                    )


def _clip(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def check_steps(chunks: Sequence[Any], *, complete: bool = True) -> None:
    """Assert that an agent's steps stream (``astream``) tells a consistent story.

    Each model turn with tool calls is an ``actions`` chunk (its assistant message's
    calls, in order) followed by a ``steps`` chunk (one step per action, in the same
    order, each with its tool message); the answer is one ``output`` chunk, last.
    ``complete=False`` allows a stream left before its end.

    Raises:
        PromiseBroken: the first inconsistency, naming the chunk's position.
    """
    expecting: ActionsChunk | None = None
    for at, chunk in enumerate(chunks):
        if isinstance(chunk, ActionsChunk):
            if expecting is not None:
                _step_fail(at, "an actions chunk where the previous turn's steps were due")
            _check_actions(at, chunk)
            expecting = chunk
        elif isinstance(chunk, StepsChunk):
            if expecting is None:
                _step_fail(at, "a steps chunk without an actions chunk before it")
            _check_steps_answer(at, expecting, chunk)
            expecting = None
        elif isinstance(chunk, FinishChunk):
            if expecting is not None:
                _step_fail(at, "the output chunk came before the last turn's steps")
            if at != len(chunks) - 1:
                _step_fail(at, "the output chunk is not the last")
            if not isinstance(chunk.output, str):
                _step_fail(at, f"the output is a {type(chunk.output).__name__}, not text")
            final = [m for m in chunk.messages if isinstance(m, AssistantMessage)]
            if chunk.finish_reason == "stop" and (not final or final[-1].content != chunk.output):
                _step_fail(at, "the output differs from the final message's content")
        else:
            _step_fail(at, f"not a step chunk: {type(chunk).__name__}")
    if complete and (not chunks or not isinstance(chunks[-1], FinishChunk)):
        _step_fail(None, "the stream has no output chunk at its end")


def _check_actions(at: int, chunk: ActionsChunk) -> None:
    replies = [m for m in chunk.messages if isinstance(m, AssistantMessage)]
    if not replies:
        _step_fail(at, "an actions chunk without the model's message")
    reply = replies[-1]
    calls: list[ToolCall | InvalidToolCall] = [*reply.tool_calls, *reply.invalid_tool_calls]
    if [a.tool_call_id for a in chunk.actions] != [c.id for c in calls]:
        _step_fail(at, "the actions are not the model message's tool calls, in order")
    for action, call in zip(chunk.actions, calls, strict=True):
        if action.tool != call.name:
            _step_fail(at, f"action {action.tool!r} for a call of {call.name!r}")
        if isinstance(call.args, dict) and action.tool_input != call.args:
            _step_fail(at, f"action {action.tool!r}'s input differs from its call's arguments")


def _check_steps_answer(at: int, actions: ActionsChunk, chunk: StepsChunk) -> None:
    if [s.action for s in chunk.steps] != list(actions.actions):
        _step_fail(at, "the steps' actions are not the previous chunk's actions, in order")
    if len(chunk.messages) != len(chunk.steps):
        _step_fail(at, f"{len(chunk.steps)} steps but {len(chunk.messages)} tool messages")
    for step, message in zip(chunk.steps, chunk.messages, strict=True):
        if not isinstance(message, ToolMessage) or message.tool_call_id != step.action.tool_call_id:
            _step_fail(at, f"step {step.action.tool!r} has no tool message of its call")
        if message.content != step.observation or message.is_error != step.is_error:
            _step_fail(at, f"step {step.action.tool!r}'s observation differs from its message")


def _step_fail(at: int | None, message: str) -> NoReturn:
    where = f"at chunk {at}" if at is not None else "in the stream as a whole"
    raise PromiseBroken(
        f"steps stream broken {where}: {message}", promise=0, position=at, run_id=None
    )
