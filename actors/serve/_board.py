"""What the run viewer shows: every run of the runtime, as a bounded history of recent
root runs and their trees, and a ring of compact messages that browsers read at their
own pace.

The board is a runtime-wide subscriber attached with ``drop_oldest``, and its handler
only updates memory, so it never holds a run up. A browser that falls behind the ring
loses the oldest messages (it is told how many) and catches up from the board's records.
A run whose events the subscription dropped is marked, and its model text is taken from
its end event, so a record is whole once its run has ended.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, Final

import trio
from attrs import define, field

from protocol import (
    TAGGED_CLASSES,
    AssistantMessage,
    AssistantMessageChunk,
    StreamEvent,
    converter,
)
from runtime import Attachment

DEFAULT_HISTORY: Final = 200
"""Root runs the viewer keeps (with their trees) after they end."""
DEFAULT_RING: Final = 20_000
"""Messages kept for browsers that read behind, or reconnect."""
TEXT_LIMIT: Final = 200_000
"""Characters of a model run's text the board keeps (the rest is counted)."""
PREVIEW_CHARS: Final = 2_000
"""Characters of an input or output sent with a run's summary."""
OWNERS_PENDING: Final = 4096
"""Owners of runs about to start the board keeps until it sees their start."""
_TAGGED: Final = frozenset(TAGGED_CLASSES)


@define
class RunRecord:
    """One run as the viewer shows it."""

    run_id: str
    root_id: str
    parent_id: str | None
    name: str
    kind: str
    tags: tuple[str, ...]
    start: StreamEvent
    started: float
    text: list[str] = field(factory=list)
    text_chars: int = 0
    customs: list[dict[str, Any]] = field(factory=list)
    steps: int = 0
    end: StreamEvent | None = None
    ended: float | None = None
    gaps: bool = False
    last_seq: int = 0
    children: list[str] = field(factory=list)
    owner: str | None = None
    """Who started the run's root over HTTP (an identity's name); ``None``: the server's
    own code started it."""

    def summary(self) -> dict[str, Any]:
        """What the page needs to draw the run (not its complete record)."""
        end = self.end
        data: dict[str, Any] = {
            "k": "run",
            "id": self.run_id,
            "root": self.root_id,
            "parent": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "tags": list(self.tags),
            "t0": self.started,
            "input": preview(self.start.data.input),
            "text": "".join(self.text),
            "text_chars": self.text_chars,
            "customs": self.customs,
            "children": self.children,
        }
        if end is not None:
            data.update(end_fields(end, self))
        return data


def end_fields(end: StreamEvent, record: RunRecord) -> dict[str, Any]:
    """A terminal event's fields for the page."""
    fields: dict[str, Any] = {
        "status": end.status,
        "t1": end.end_time,
        "error": end.data.error,
        "output": preview(end.data.output) if end.status == "ok" else None,
    }
    output = end.data.output
    if isinstance(output, AssistantMessage):
        if output.usage is not None:
            fields["usage"] = output.usage_metadata
        if record.gaps:  # tokens were dropped on the way: the answer is whole here
            fields["text"] = output.content[-TEXT_LIMIT:]
            fields["text_chars"] = len(output.content)
    return fields


def preview(value: Any) -> Any:
    """``value`` as JSON, cut to :data:`PREVIEW_CHARS` when long."""
    if value is None:
        return None
    try:
        data = (
            converter.unstructure(value, type(value)) if type(value) in _TAGGED else _plain(value)
        )
    except Exception:  # a payload the converter cannot write: its repr will do
        data = repr(value)
    text = data if isinstance(data, str) else None
    if text is not None and len(text) > PREVIEW_CHARS:
        return text[:PREVIEW_CHARS] + f"… ({len(text):,} characters)"
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): preview(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [preview(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)  # not JSON, not a protocol object: what it prints as


class RunBoard:
    """Recent runs and a ring of messages about them (see the module's docs)."""

    wake_interval: Final = 0.05
    """A page repaints a few times a second: the board takes its events 20 times a
    second at most, not once per token of every run the server has open."""

    def __init__(self, history: int = DEFAULT_HISTORY, ring: int = DEFAULT_RING) -> None:
        self.history = history
        self.runs: dict[str, RunRecord] = {}
        self.roots: OrderedDict[str, RunRecord] = OrderedDict()
        self.ring: deque[tuple[int, dict[str, Any]]] = deque(maxlen=ring)
        self.seq = 0
        self.attachment: Attachment | None = None
        self._changed = trio.Event()
        # Owners of root runs a client asked for whose start the board has not seen yet
        # (bounded: a start the subscription dropped never claims its entry).
        self._owners: OrderedDict[str, str] = OrderedDict()

    def own(self, root_id: str, owner: str) -> None:
        """The root run ``root_id``, about to start, belongs to ``owner``."""
        self._owners[root_id] = owner
        if len(self._owners) > OWNERS_PENDING:
            self._owners.popitem(last=False)

    def disown(self, root_id: str) -> None:
        """The run ``root_id`` never started: forget its owner."""
        self._owners.pop(root_id, None)

    def knows(self, run_id: str) -> bool:
        """Whether the board remembers a run by this id (or one about to start)."""
        return run_id in self.runs or run_id in self._owners

    @property
    def dropped(self) -> int:
        """Events the board's subscription dropped (the runs went on regardless)."""
        return self.attachment.dropped if self.attachment is not None else 0

    @property
    def oldest(self) -> int:
        """The sequence number of the oldest message still in the ring."""
        return self.ring[0][0] if self.ring else self.seq + 1

    async def on_event(self, event: StreamEvent) -> None:
        """The subscriber's handler: update the records, post a message."""
        message = self.apply(event)
        if message is not None:
            self.post(message)

    def post(self, message: dict[str, Any]) -> None:
        self.seq += 1
        self.ring.append((self.seq, message))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, seq: int) -> None:
        """Wait until there is a message after ``seq``."""
        while self.seq <= seq:
            await self._changed.wait()

    def after(self, seq: int) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
        """The messages after ``seq``, and how many of those the ring no longer has."""
        missed = max(0, self.oldest - seq - 1)
        start = max(seq + 1, self.oldest)
        skip = start - self.oldest
        items = [self.ring[i] for i in range(skip, len(self.ring))]
        return missed, items

    def apply(self, event: StreamEvent) -> dict[str, Any] | None:
        phase = event.phase
        now = time.time()
        if phase == "start":
            return self._started(event, now)
        record = self.runs.get(event.run_id)
        if record is None:
            return None  # its start was dropped, or its root left the history
        if event.seq != record.last_seq + 1:
            record.gaps = True
        record.last_seq = event.seq
        if phase == "stream":
            chunk = event.chunk
            if isinstance(chunk, AssistantMessageChunk):
                if not chunk.content:
                    return None
                pos = record.text_chars  # lets the page skip what a snapshot already had
                record.text_chars += len(chunk.content)
                if record.text_chars <= TEXT_LIMIT:
                    record.text.append(chunk.content)
                return {
                    "k": "tok",
                    "id": record.run_id,
                    "text": chunk.content,
                    "pos": pos,
                    "t": now,
                }
            record.steps += 1
            return {"k": "step", "id": record.run_id, "n": record.steps, "t": now}
        if phase == "custom":
            custom = {"name": event.name, "data": preview(event.chunk), "t": now}
            record.customs.append(custom)
            return {"k": "custom", "id": record.run_id, "n": len(record.customs) - 1, **custom}
        record.end, record.ended = event, now
        return {"k": "end", "id": record.run_id, **end_fields(event, record), "t": now}

    def _started(self, event: StreamEvent, now: float) -> dict[str, Any] | None:
        parent_id = event.parent_ids[-1] if event.parent_ids else None
        root_id = event.parent_ids[0] if event.parent_ids else event.run_id
        if parent_id is not None and root_id not in self.roots:
            return None  # its tree left the history
        owner = self.roots[root_id].owner if parent_id is not None else None
        record = RunRecord(
            event.run_id,
            root_id,
            parent_id,
            event.name,
            event.kind,
            event.tags,
            event,
            event.start_time,
            owner=owner,
        )
        self.runs[event.run_id] = record
        if parent_id is None:
            record.owner = self._owners.pop(event.run_id, None)
            self.roots[event.run_id] = record
            self._forget_old()
        else:
            parent = self.runs.get(parent_id)
            if parent is not None:
                parent.children.append(event.run_id)
        return {**record.summary(), "t": now}

    def _forget_old(self) -> None:
        while len(self.roots) > self.history:
            oldest = next(iter(self.roots.values()))
            if oldest.end is None and any(r.end is not None for r in self.roots.values()):
                # keep runs in progress: forget the oldest that has ended
                oldest = next(r for r in self.roots.values() if r.end is not None)
            del self.roots[oldest.run_id]
            for run_id in self.tree_ids(oldest.run_id):
                self.runs.pop(run_id, None)

    def tree_ids(self, root_id: str) -> list[str]:
        """The ids of a root run and its descendants, parents first."""
        ids, pending = [], [root_id]
        while pending:
            run_id = pending.pop(0)
            record = self.runs.get(run_id)
            if record is None:
                continue
            ids.append(run_id)
            pending.extend(record.children)
        return ids

    def tree(self, root_id: str) -> list[dict[str, Any]] | None:
        """The summaries of a root run's tree, parents first; ``None`` if unknown."""
        if root_id not in self.roots:
            return None
        return [self.runs[run_id].summary() for run_id in self.tree_ids(root_id)]

    def record(self, run_id: str) -> dict[str, Any] | None:
        """A run's complete record: its start and terminal events, every field."""
        record = self.runs.get(run_id)
        if record is None:
            return None
        return {
            "start": converter.unstructure(record.start),
            "end": converter.unstructure(record.end) if record.end is not None else None,
            "custom_events": record.customs,
            "text_chars": record.text_chars,
            "events_dropped": record.gaps,
        }

    def recent(self) -> list[dict[str, Any]]:
        """The root runs kept, newest first, summarised."""
        out = []
        for record in reversed(self.roots.values()):
            item = {
                "id": record.run_id,
                "name": record.name,
                "kind": record.kind,
                "tags": list(record.tags),
                "t0": record.started,
                "status": record.end.status if record.end is not None else None,
                "t1": record.end.end_time if record.end is not None else None,
            }
            out.append(item)
        return out
