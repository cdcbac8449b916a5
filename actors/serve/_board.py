"""What the run viewer shows: every run of the runtime, as a bounded history of recent
root runs and their trees, and a ring of compact messages that browsers read at their
own pace.

The board is a runtime-wide subscriber attached with ``drop_oldest``, and its handler
only updates memory, so it never holds a run up. A browser that falls behind the ring
loses the oldest messages (it is told how many) and catches up from the board's records.
A run whose events the subscription dropped is marked, and its model text is taken from
its end event, so a record is whole once its run has ended.

**Within a byte budget.** The board never keeps an event, nor the exception of a failed
run (whose traceback holds the frames, and so the inputs, of the run): it keeps each
start and terminal event as JSON, every value in it (an input, an output, an error,
metadata, tags) cut to :data:`VALUE_LIMIT` with a marker that says how big it was (a
custom event's payload to :data:`PREVIEW_LIMIT`), and lists where it cut in the run's
record. What it keeps is counted:
the records within three quarters of ``budget`` (the oldest root trees are forgotten,
ended ones first, past it or past ``history`` roots), the ring of messages (kept as the
JSON the browsers are sent) within the rest.

**Who sees what.** A root run started over HTTP is owned by the identity that asked for
it (:meth:`RunBoard.own`), and its descendants by the same owner; a run the server's
own code started has no owner. The endpoints show a client only the runs its identity
may see (``Identity.may_see``), and treat the others as unknown.
"""

from __future__ import annotations

import math
import sys
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, final

import trio
from attrs import define, field

from protocol import (
    TAGGED_CLASSES,
    AssistantMessage,
    AssistantMessageChunk,
    Paused,
    StreamEvent,
    converter,
)
from runtime import Attachment, RuntimeClosedError

from ._wire import _v2, wire_json

if TYPE_CHECKING:
    from ._auth import Identity

DEFAULT_HISTORY: Final = 200
"""Root runs the viewer keeps (with their trees) after they end."""
DEFAULT_RING: Final = 20_000
"""Messages kept for browsers that read behind, or reconnect."""
DEFAULT_BUDGET: Final = 64 << 20
"""Bytes the board keeps, about (as the JSON of what it keeps): records and messages."""
VALUE_LIMIT: Final = 16_384
"""Bytes of one value a record keeps: an input, an output, an error, metadata, tags (the
rest is cut, and said to be)."""
PREVIEW_LIMIT: Final = 2_000
"""Bytes of an input or output sent with a run's summary, and of a custom event's payload
(sent and kept)."""
TEXT_LIMIT: Final = 200_000
"""Characters of a model run's text the board keeps (the rest is counted)."""
MESSAGE_TEXT: Final = 8_192
"""Characters of model text one message carries (a token, or an end's whole text)."""
CUSTOMS_KEPT: Final = 500
"""Custom events a record keeps (the first ones; the rest are counted)."""
OWNERS_PENDING: Final = 4096
"""Owners of runs about to start the board keeps until it sees their start."""
RECORD_BYTES: Final = 1_024
"""What a record costs the budget besides its values (its object, ids, lists)."""
MESSAGE_BYTES: Final = 136
"""What a message costs the ring's budget besides its JSON (its bytes object, its entry)."""
PROMPT_SHOWN: Final = 24
"""Messages of a model run's prompt shown on its node (the last ones; the record has all)."""
PROMPT_CHARS: Final = 600
"""Characters of one prompt message, or of one tool call's arguments, shown on a node."""
SIDEBAR_CHARS: Final = 240
"""Characters of a root run's input shown in the list of recent runs."""
MAX_DEPTH: Final = 32
"""Nesting kept in a value (deeper is cut)."""
# What values cost in memory, roughly (CPython, 64 bits): a number or an item of a list
# or dict, a string besides its characters, a list or dict besides its items.
_ITEM: Final = 16
_STR: Final = 50
_BOX: Final = 64
_KEY_CHARS: Final = 256
_PATH_CHARS: Final = 512
_SHARE_MIN: Final = 128
_JOIN_EVERY: Final = 64
_TAGGED: Final = frozenset(TAGGED_CLASSES)
_RING_SHARE: Final = 4  # the ring's part of the budget: a quarter
CATCH_UP_SECONDS: Final = 2.0
"""After a page comes, how long the board holds the tokens of a run open while no page
watched that follow a gap, waiting for the run's live buffer (its own client's stream,
which reads behind the model) to give the tokens in between."""


# Where a value is, until a cut names it: the root's name, or (its parent, a key or
# an index). Most values are never cut, and a name built for each cost the walk a
# third of its time.
_At = str | tuple[Any, str | int]


def _named(at: _At) -> str:
    """The name of a place (``start.data.input[0].content``); a long one (deep, or of
    long keys) names an ancestor (at most :data:`_PATH_CHARS`)."""
    if isinstance(at, str):
        return at
    parent, key = at
    name = _named(parent)
    step = f"[{key}]" if isinstance(key, int) else f".{key}"
    return name + step if len(name) + len(step) <= _PATH_CHARS else name


class _Cut:
    """Cuts values to a number of bytes (as JSON, roughly), noting where it cut.

    Each item of a list or dict may take its share of what is left (and what those
    before it did not use): a long first value must not leave the answer after it
    unseen. The common values (``str``, ``dict``, ``list``, numbers) take the short
    path of :meth:`value`; every other one the general :meth:`_other`."""

    __slots__ = ("cuts", "left", "used")

    def __init__(self, limit: int, cuts: list[dict[str, Any]] | None) -> None:
        self.left = limit
        self.used = 0
        self.cuts = cuts  # None: a preview, whose cuts the record already lists

    def _spend(self, size: int) -> None:
        self.left -= size
        self.used += size

    def _note(self, at: _At, **size: int) -> None:
        if self.cuts is not None:
            name = _named(at)
            self.cuts.append({"at": name, **size})
            self._spend(_BOX + _STR + len(name) + 2 * _ITEM)  # the note is kept too

    def value(self, value: Any, at: _At, depth: int = 0) -> Any:
        """``value`` as JSON data within what is left; a cut part says what it was."""
        kind = value.__class__
        if kind is str:
            size = sys.getsizeof(value)  # 1, 2 or 4 bytes a character, as CPython keeps it
            if size <= self.left:
                self.left -= size
                self.used += size
                return value
            return self.text(value, at)
        if (
            value is None
            or kind is float
            or kind is bool
            or (kind is int and -(1 << 63) <= value < 1 << 64)
        ):
            self.left -= _ITEM
            self.used += _ITEM
            return value
        if depth < MAX_DEPTH:
            if kind is dict:
                return self._dict(value, at, depth)
            if kind is list:
                return self._list(value, at, depth)
        return self._other(value, at, depth)

    def _other(self, value: Any, at: _At, depth: int) -> Any:
        if value is None or isinstance(value, bool | float):
            self._spend(_ITEM)
            return value
        if isinstance(value, int):
            if -(1 << 63) <= value < 1 << 64:
                self._spend(_ITEM)
                return value
            return self.text(str(value), at)  # beyond JSON's numbers
        if isinstance(value, str):
            return self.text(value, at)
        if depth >= MAX_DEPTH:
            self._note(at, depth=depth)
            self._spend(_ITEM)
            return f"... [cut: nested deeper than {MAX_DEPTH}]"
        if isinstance(value, dict):
            return self._dict(value, at, depth)
        if isinstance(value, list | tuple):
            return self._list(value, at, depth)
        if type(value) in _TAGGED:
            try:
                data = converter.unstructure(value, type(value))
            except Exception:  # a payload the converter cannot write: its repr will do
                data = _repr(value)
            return self.value(data, at, depth)
        return self.text(_repr(value), at)  # not JSON, not a protocol object

    def text(self, text: str, at: _At) -> str:
        """``text``, cut to what is left, with a marker saying how long it was."""
        size = sys.getsizeof(text)  # 1, 2 or 4 bytes a character, as CPython keeps it
        if size <= self.left:
            self._spend(size)
            return text
        # The marker is ASCII: "…" would make a cut ASCII text take 2 bytes a character.
        keep = max(self.left - _STR, 0) // (1 if text.isascii() else 4)
        self._note(at, chars=len(text))
        shown = f"{text[:keep]}... [cut: {len(text):,} characters in all]"
        self._spend(sys.getsizeof(shown))
        return shown

    def _dict(self, value: dict[Any, Any], at: _At, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.left -= _BOX
        self.used += _BOX
        remaining = len(value)
        depth += 1
        for key, item in value.items():
            if self.left <= 0:
                self._note(at, items=len(value))
                out["..."] = f"[cut: {remaining:,} more keys of {len(value):,}]"
                self._spend(_ITEM)
                break
            name = key if isinstance(key, str) else _repr(key)
            if len(name) > _KEY_CHARS:
                name = name[:_KEY_CHARS] + "..."
            spent = len(name) + _ITEM
            self.used += spent
            # the item's share (see the class's docs)
            left = self.left - spent
            self.left = min(left, max(left // remaining, _SHARE_MIN))
            used = self.used
            out[name] = self.value(item, (at, name), depth)
            self.left = left - (self.used - used)
            remaining -= 1
        return out

    def _list(self, value: list[Any] | tuple[Any, ...], at: _At, depth: int) -> list[Any]:
        out: list[Any] = []
        self.left -= _BOX
        self.used += _BOX
        remaining = len(value)
        depth += 1
        for i, item in enumerate(value):
            if self.left <= 0:
                self._note(at, items=len(value))
                out.append(f"... [cut: {remaining:,} more items of {len(value):,}]")
                self._spend(_ITEM)
                break
            self.used += _ITEM
            left = self.left - _ITEM
            self.left = min(left, max(left // remaining, _SHARE_MIN))
            used = self.used
            out.append(self.value(item, (at, i), depth))
            self.left = left - (self.used - used)
            remaining -= 1
        return out


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a repr that fails must not take the board down
        return f"<{type(value).__name__} object>"


def clip(
    value: Any, limit: int, at: str = "", cuts: list[dict[str, Any]] | None = None
) -> tuple[Any, int]:
    """``value`` as JSON data of about ``limit`` bytes at most, and its size. Long text
    ends with ``... [cut: N characters in all]``; long lists and dicts end with an item
    saying how many more there were. Where it cut is appended to ``cuts`` (``at`` names
    the value: ``start.data.input``), with the full size (``chars`` or ``items``)."""
    kind = value.__class__
    if kind is str:  # most of an event's fields: as :meth:`_Cut.value` keeps them
        size = sys.getsizeof(value)
        if size <= limit:
            return value, size
    elif value is None or kind is bool or kind is float:
        return value, _ITEM
    cut = _Cut(limit, cuts)
    data = cut.value(value, at)
    return data, cut.used


def preview(value: Any) -> Any:
    """``value`` as JSON, cut to :data:`PREVIEW_LIMIT` bytes or so."""
    return clip(value, PREVIEW_LIMIT)[0]


def _event_json(
    event: StreamEvent, at: str, cuts: list[dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """A start or terminal event as JSON, each of its values cut to :data:`VALUE_LIMIT`;
    and its size."""
    try:
        whole: dict[str, Any] = converter.unstructure(event)
    except Exception:  # an odd payload: the fields one by one, each as it can be written
        whole = {
            **_v2(event, {k: getattr(event.data, k) for k in ("input", "output", "error")}),
            "kind": event.kind,
            "seq": event.seq,
            "status": event.status,
            "start_time": event.start_time,
            "end_time": event.end_time,
        }
    out: dict[str, Any] = {}
    size = 0
    for key, value in whole.items():
        if key == "data" and isinstance(value, dict):
            data: dict[str, Any] = {}
            for name, item in value.items():
                data[name], used = clip(item, VALUE_LIMIT, f"{at}.data.{name}", cuts)
                size += used
            out[key] = data
        else:
            out[key], used = clip(value, VALUE_LIMIT, f"{at}.{key}", cuts)
            size += used
    return out, size


def _seq(event: StreamEvent) -> int:
    return event.seq


def _clock() -> float:
    """trio's clock in a run (a test's may jump), else the monotonic one."""
    try:
        return trio.current_time()
    except RuntimeError:
        return time.monotonic()


@define
class RunRecord:
    """One run as the viewer shows it: JSON only, within the board's budget."""

    run_id: str
    root_id: str
    parent_id: str | None
    name: str
    kind: str
    tags: list[Any]
    started: float
    start: dict[str, Any]
    """The start event as JSON, its values cut (see :data:`VALUE_LIMIT`)."""
    input: Any
    """The start's input, cut to :data:`PREVIEW_LIMIT`."""
    prompt: list[dict[str, Any]] | None = None
    """A model run's prompt, compact (see :func:`prompt_of`)."""
    end: dict[str, Any] | None = None
    """The terminal event as JSON, its values cut."""
    ending: dict[str, Any] | None = None
    """What the page is told of the run's end (status, times, error, output's preview)."""
    text: list[str] = field(factory=list)
    loose: int = 0
    """Tokens at the end of ``text`` not yet joined into one string."""
    text_chars: int = 0
    customs: list[dict[str, Any]] = field(factory=list)
    customs_count: int = 0
    steps: int = 0
    ended: float | None = None
    gaps: bool = False
    """Events of the run the subscription dropped."""
    unwatched: bool = False
    """Open while the board took only each run's first stream event (see
    :attr:`RunBoard.taking`)."""
    skipped: bool = False
    """Stream events the board did not take, as no page watched (see
    :attr:`RunBoard.taking`): its text is whole at the run's end."""
    last_seq: int = 0
    held: list[StreamEvent] | None = None
    """Events after a gap, held while the live buffers may still give the tokens in
    between (see :meth:`RunBoard.catch_up`)."""
    children: list[str] = field(factory=list)
    owner: str | None = None
    """Who started the run's root over HTTP (an identity's name); ``None``: the server's
    own code started it."""
    cuts: list[dict[str, Any]] = field(factory=list)
    """Where the record's values were cut, and their full sizes."""
    size: int = 0
    """What the record costs the board's budget."""

    def summary(self) -> dict[str, Any]:
        """What the page needs to draw the run (not its complete record)."""
        data: dict[str, Any] = {
            "k": "run",
            "id": self.run_id,
            "root": self.root_id,
            "parent": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "tags": self.tags,
            "t0": self.started,
            "input": self.input,
            "text": "".join(self.text),
            "text_chars": self.text_chars,
            "customs": self.customs,
            "children": self.children,
        }
        if self.prompt is not None:
            data["prompt"] = self.prompt
        if self.ending is not None:
            # (its text, the answer's end, is for the page's end message: the record's
            # own is whole)
            data.update({k: v for k, v in self.ending.items() if k not in ("text", "text_chars")})
        return data


def _role(message: Any) -> str:
    role = getattr(message, "role", None)
    if isinstance(role, str):
        return role
    if isinstance(message, dict) and isinstance(message.get("role"), str):
        return str(message["role"])
    return type(message).__name__


def _calls(calls: Any) -> list[dict[str, Any]]:
    """Tool calls, compact: name, id and arguments (cut to :data:`PROMPT_CHARS`)."""
    return [
        {
            "name": clip(getattr(call, "name", None), PROMPT_CHARS)[0],
            "id": clip(getattr(call, "id", None), PROMPT_CHARS)[0],
            "args": clip(getattr(call, "args", None), PROMPT_CHARS)[0],
        }
        for call in list(calls or ())[:PROMPT_SHOWN]
    ]


def prompt_of(value: Any) -> list[dict[str, Any]] | None:
    """A model run's input as the page shows it: its last :data:`PROMPT_SHOWN` messages,
    each a role, its text (cut to :data:`PROMPT_CHARS`) and the tool calls it made;
    the first item says how many were left out, if some were. ``None``: no messages."""
    messages = (
        value.get("messages") if isinstance(value, dict) else getattr(value, "messages", value)
    )
    if not isinstance(messages, list | tuple):
        return None
    out: list[dict[str, Any]] = []
    if len(messages) > PROMPT_SHOWN:
        out.append({"role": "...", "content": f"{len(messages) - PROMPT_SHOWN:,} earlier messages"})
    for message in messages[-PROMPT_SHOWN:]:
        content = getattr(message, "content", None)
        if content is None and isinstance(message, dict):
            content = message.get("content")
        item: dict[str, Any] = {
            "role": _role(message),
            "content": clip(content, PROMPT_CHARS)[0],
        }
        calls = getattr(message, "tool_calls", None)
        if calls:
            item["tool_calls"] = _calls(calls)
        name = getattr(message, "name", None)
        if isinstance(name, str) and item["role"] == "tool":
            item["name"] = name[:PROMPT_CHARS]
        out.append(item)
    return out


def said(value: Any) -> str:
    """What a person asked, out of an input (as JSON data) of any shape: a string, an
    agent's ``{"input": ...}``, the last of a list of messages; else the JSON. Cut to
    :data:`SIDEBAR_CHARS`."""
    if isinstance(value, dict):
        if isinstance(value.get("input"), str):
            value = value["input"]
        elif isinstance(value.get("messages"), list) and value["messages"]:
            value = value["messages"][-1]
    if isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        value = value["content"]
    text = value if isinstance(value, str) else wire_json(value).decode()
    return text if len(text) <= SIDEBAR_CHARS else text[:SIDEBAR_CHARS] + "..."


def _ending(end: StreamEvent, record: RunRecord) -> dict[str, Any]:
    """A terminal event's fields for the page (within a message's bounds)."""
    error = end.data.error
    fields: dict[str, Any] = {
        "status": end.status,
        "t1": end.end_time,
        "error": None if error is None else clip(error, PREVIEW_LIMIT)[0],
        "output": preview(end.data.output) if end.status == "ok" else None,
    }
    output = end.data.output
    if end.status == "paused" and isinstance(output, Paused):
        # what the run waits for: the page shows Approve and Deny (or an answer's box)
        fields["pending"] = [
            {"id": r.id, "kind": r.kind, "name": r.name, "arguments": preview(r.arguments)}
            for r in output.pending
        ]
    if isinstance(output, AssistantMessage):
        if output.usage is not None:
            fields["usage"] = output.usage_metadata
        if output.tool_calls:
            fields["tool_calls"] = _calls(output.tool_calls)
        if record.gaps or record.skipped:  # tokens missed on the way: the answer is whole here
            content = output.content
            fields["text"] = content[-MESSAGE_TEXT:]
            fields["text_chars"] = len(content)
    return fields


@final
class _Unposted:
    """A run's tokens taken while no page watched: posted as one message when the board
    is next read, or before its next message (see :attr:`RunBoard.watchers`)."""

    __slots__ = ("chars", "owner", "pos", "run_id", "t", "texts")

    def __init__(self, run_id: str, owner: str | None, pos: int, t: float, text: str) -> None:
        self.run_id = run_id
        self.owner = owner
        self.pos = pos
        self.t = t
        self.texts = [text]
        self.chars = len(text)

    def message(self) -> dict[str, Any]:
        """The ``tok`` message of these tokens: their text, from the first's position
        and time."""
        text = self.texts[0] if len(self.texts) == 1 else "".join(self.texts)
        return {"k": "tok", "id": self.run_id, "text": text, "pos": self.pos, "t": self.t}


@final
class _Source:
    """A live run's buffer a page's catch-up gave the board (see :meth:`RunBoard.catch_up`):
    looked at again while the board holds runs, from the last event seen on (a buffer
    drops its oldest events as it takes new ones; each look at the whole of 50 buffers
    of 2,000 events cost 151 ms, 20 times a second)."""

    __slots__ = ("events", "last", "unknown")

    def __init__(self, events: Sequence[StreamEvent]) -> None:
        self.events = events
        self.last: StreamEvent | None = None
        self.unknown: list[StreamEvent] = []
        """Its events of runs the board did not know when it looked (looked at again)."""

    def fresh(self) -> list[StreamEvent]:
        """The events it took since the last look, oldest first."""
        events = self.events
        last = self.last
        fresh: list[StreamEvent] = []
        for event in reversed(events):
            if event is last:
                break
            fresh.append(event)
        if events:
            self.last = events[-1]
        fresh.reverse()
        return fresh


class _Ring:
    """Messages by sequence number, oldest first: a list and the index of its head, so
    that a reader's slice costs what it takes, wherever it starts."""

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[tuple[int, str | None, bytes] | None] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __iter__(self) -> Iterator[tuple[int, str | None, bytes]]:
        for item in self._items[self._head :]:
            assert item is not None
            yield item

    def append(self, item: tuple[int, str | None, bytes]) -> None:
        self._items.append(item)

    def popleft(self) -> tuple[int, str | None, bytes]:
        item = self._items[self._head]
        assert item is not None
        self._items[self._head] = None
        self._head += 1
        if self._head > 1024 and self._head * 2 > len(self._items):
            del self._items[: self._head]  # amortised: a copy of the live half
            self._head = 0
        return item

    def first(self) -> int | None:
        """The oldest message's sequence number."""
        if not len(self):
            return None
        item = self._items[self._head]
        assert item is not None
        return item[0]

    def slice(self, skip: int, limit: int) -> list[tuple[int, str | None, bytes]]:
        """Up to ``limit`` messages, from the ``skip``-th oldest."""
        start = self._head + skip
        return self._items[start : start + limit]  # type: ignore[return-value]  # past the head: no None


class RunBoard:
    """Recent runs and a ring of messages about them (see the module's docs).

    Args:
        history: root runs kept, with their trees.
        ring: messages kept for browsers that read behind.
        budget: bytes kept in all, about: three quarters for the records, the rest for
            the messages.
    """

    wake_interval: Final = 0.05
    """A page repaints a few times a second: the board takes its events 20 times a
    second at most, not once per token of every run the server has open."""

    def __init__(
        self, history: int = DEFAULT_HISTORY, ring: int = DEFAULT_RING, budget: int = DEFAULT_BUDGET
    ) -> None:
        self.history = history
        self.budget = budget
        self.runs: dict[str, RunRecord] = {}
        self.roots: OrderedDict[str, RunRecord] = OrderedDict()
        self.ring_limit = ring
        self.ring = _Ring()
        self._seq = 0
        self.watchers = 0
        """Viewer streams open. While there are none, a run's tokens wait to be posted as
        one message (when the board is next read, before its next message, or at
        :data:`MESSAGE_TEXT` characters), not a message each: a server with no page open
        spent about a tenth of the CPU of each token of a stream on its message."""
        self._unposted: dict[str, _Unposted] = {}
        self.taking: Literal["all", "first"] = "all"
        """What the board's subscription takes of each run's stream events: all of them
        while a page watches; while none does, only the first (the server spent about a
        tenth of each token of a stream on the board's share of it, though no page was
        there to see it), and a run's text is whole in its record at its end, from its
        output. A page that comes finds the text of runs open meanwhile in the live runs'
        buffers (:meth:`catch_up`). Set to ``"first"`` before the board is subscribed,
        and changed by :meth:`fit`."""
        self._fitting = False
        # While a page that came catches up: the live buffers it gave, until when the
        # board holds a run's events after a gap, and the runs holding some.
        self._sources: list[_Source] = []
        self._coalescing = False  # while a catch-up takes tokens: as while no page watches
        self._catching_until = 0.0
        self._holding: list[RunRecord] = []
        self._next_fill = 0.0
        self.size = 0
        """Bytes the records cost (see :attr:`RunRecord.size`)."""
        self.ring_size = 0
        """Bytes the ring's messages cost."""
        self.attachment: Attachment | None = None
        self._changed: trio.Event | None = None  # made by the first who waits
        # Owners of root runs a client asked for whose start the board has not seen yet
        # (bounded: a start the subscription dropped never claims its entry).
        self._owners: OrderedDict[str, str] = OrderedDict()

    @property
    def stream_events(self) -> Literal["all", "first"]:
        """What the board asks of stream events as it is subscribed (see :attr:`taking`)."""
        return self.taking

    async def fit(self) -> None:
        """Make the subscription take what the pages need (see :attr:`taking`): every
        stream event while :attr:`watchers` is above 0, else each run's first. A
        schedule point, while it changes, never a cancel point: a page that came while
        another's fit was under way left the fitting to it (as :attr:`taking` said), so
        a fit ends only once the subscription takes what :attr:`taking` says."""
        if self._fitting or self.attachment is None:
            return  # the one already fitting looks again once it has changed
        self._fitting = True
        try:
            with trio.CancelScope(shield=True):
                while True:
                    wanted: Literal["all", "first"] = "all" if self.watchers else "first"
                    if self.taking == wanted:
                        return
                    self.taking = wanted
                    if wanted == "first":
                        for record in self.runs.values():
                            if record.end is None:
                                record.unwatched = True
                    else:
                        self._catching_until = _clock() + CATCH_UP_SECONDS
                    try:
                        await self.attachment.stream_events(wanted)
                    except RuntimeClosedError:
                        return  # nothing more comes
        finally:
            self._fitting = False

    def catch_up(self, events: Sequence[StreamEvent]) -> None:
        """Take the stream events of open runs the board did not take while no page
        watched (from a live run's buffer): events it has, or of runs it does not know,
        are passed over. The buffer is filled as the run's own client reads its stream,
        behind the model: for :data:`CATCH_UP_SECONDS` after a page came, the events the
        board takes after a gap in such a run wait for the buffer to fill it."""
        # From now at least: a page that came while another's fit was under way left
        # the fitting to it, which opens the time to catch up only once it is done.
        self._catching_until = max(self._catching_until, _clock() + CATCH_UP_SECONDS)
        source = _Source(events)
        self._sources.append(source)
        source.unknown = self._fill(source.fresh())
        self._catch_held()

    def _fill(self, events: Iterable[StreamEvent]) -> list[StreamEvent]:
        """Take ``events`` (of a live buffer, oldest first) that the board lacks; returns
        those of runs it does not know yet (their start may still be on its way)."""
        unknown: list[StreamEvent] = []
        self._coalescing = True  # a run's tokens as one message: thousands may come
        try:
            for event in events:
                if event.phase == "stream":
                    record = self.runs.get(event.run_id)
                    if record is None:
                        unknown.append(event)
                    elif record.end is None and event.seq > record.last_seq:
                        self._fill_one(record, event)
        finally:
            self._coalescing = False
            if self._unposted:
                self._wake()
        return unknown

    def _fill_one(self, record: RunRecord, event: StreamEvent) -> None:
        held = record.held
        if held is not None and event.seq >= held[0].seq:
            if event.seq < held[-1].seq:  # a gap between held events (the board took
                # none while no page watched): held in its place, if not there already
                at = bisect_left(held, event.seq, key=_seq)
                if held[at].seq != event.seq:
                    held.insert(at, event)
            return  # (else the board holds it already, or will be given it)
        found = self._apply(record, event)
        if found is not None:
            self.post(*found)

    def _catch_held(self) -> None:
        """Fill the held runs' gaps from the live buffers (20 times a second at most);
        release the runs whose gap is filled or that ended, and every one once the time
        to catch up has passed."""
        now = _clock()
        catching = now < self._catching_until
        if not catching:
            self._sources.clear()
        elif self._holding and now >= self._next_fill:
            self._next_fill = now + self.wake_interval
            for source in self._sources:  # what each buffer took since the last look
                source.unknown = self._fill([*source.unknown, *source.fresh()])
        holding = self._holding
        self._holding = []
        for record in holding:
            held = record.held
            if held is None:
                continue
            if catching and held[0].seq > record.last_seq + 1 and record.end is None:
                self._holding.append(record)
            else:
                self._release(record)

    def _release(self, record: RunRecord) -> None:
        held, record.held = record.held, None
        self._coalescing = True
        try:
            for event in held or ():
                found = self._apply(record, event)
                if found is not None:
                    self.post(*found)
        finally:
            self._coalescing = False
            if self._unposted:
                self._wake()

    @property
    def seq(self) -> int:
        """The sequence number of the latest message."""
        if self._holding:
            self._catch_held()  # (a run held past the time to catch up: its tokens)
        if self._unposted:
            self._post_unposted()
        return self._seq

    @property
    def records_budget(self) -> int:
        """Bytes the records may cost."""
        return self.budget - self.budget // _RING_SHARE

    @property
    def ring_budget(self) -> int:
        """Bytes the ring's messages may cost."""
        return self.budget // _RING_SHARE

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
        if self._unposted:
            self._post_unposted()
        first = self.ring.first()
        return self.seq + 1 if first is None else first

    async def on_event(self, event: StreamEvent) -> None:
        """The subscriber's handler: update the records, post a message."""
        found = self.apply(event)
        if found is not None:
            self.post(*found)

    def post(self, message: dict[str, Any], owner: str | None = None) -> None:
        """Add a message (of a run of ``owner``'s) to the ring, as JSON (after the
        tokens still waiting to be posted)."""
        if self._unposted:
            self._post_unposted()
        self._append(message, owner)

    def _post_unposted(self) -> None:
        unposted = self._unposted
        self._unposted = {}
        for waiting in unposted.values():
            self._append(waiting.message(), waiting.owner)

    def _append(self, message: dict[str, Any], owner: str | None) -> None:
        # A copy: orjson's bytes hold 4 KiB whatever their length (a ring of 20,000 small
        # messages took 80 MB, not 8).
        data = bytes(memoryview(wire_json(message)))
        self._seq += 1
        self.ring.append((self._seq, owner, data))
        self.ring_size += len(data) + MESSAGE_BYTES
        while len(self.ring) > self.ring_limit or (
            self.ring_size > self.ring_budget and len(self.ring) > 1
        ):
            self.ring_size -= len(self.ring.popleft()[2]) + MESSAGE_BYTES
        self._wake()

    def _wake(self) -> None:
        # Most servers have no page open: no event to set, and none to make, per token.
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    async def wait_for(self, seq: int) -> None:
        """Wait until there is a message after ``seq``."""
        while self.seq <= seq:
            if self._changed is None:
                self._changed = trio.Event()
            # A run's held events go as its live buffer fills the gap before them, or
            # as the time to catch up passes: looked at again (by ``seq``) at the
            # board's pace while some are held, not only when the next event comes.
            with trio.move_on_after(self.wake_interval if self._holding else math.inf):
                await self._changed.wait()

    def after(
        self, seq: int, limit: int | None = None
    ) -> tuple[int, list[tuple[int, str | None, bytes]]]:
        """Up to ``limit`` messages after ``seq`` (``(seq, owner, json)``, oldest first),
        and how many of those the ring no longer has."""
        if self._unposted:
            self._post_unposted()
        oldest = self.oldest
        missed = max(0, oldest - seq - 1)
        skip = max(seq + 1, oldest) - oldest
        return missed, self.ring.slice(skip, len(self.ring) if limit is None else limit)

    def apply(self, event: StreamEvent) -> tuple[dict[str, Any], str | None] | None:
        """Update the records with ``event``; the message to post and its run's owner,
        if there is one."""
        phase = event.phase
        now = time.time()
        if phase == "start":
            return self._started(event, now)
        record = self.runs.get(event.run_id)
        if record is None:
            return None  # its start was dropped, or its root left the history
        if self._holding or self._sources:
            self._catch_held()
        if record.held is not None:
            if phase != "end":
                record.held.append(event)  # after the gap the board is waiting to fill
                return None
            self._release(record)
        elif (
            event.seq > record.last_seq + 1
            and record.unwatched
            and phase != "end"
            and _clock() < self._catching_until
        ):
            record.held = [event]  # a page came: the run's buffer may fill the gap
            self._holding.append(record)
            self._wake()  # (the pages look again as it fills: see wait_for)
            return None
        return self._apply(record, event)

    def _apply(
        self, record: RunRecord, event: StreamEvent
    ) -> tuple[dict[str, Any], str | None] | None:
        phase = event.phase
        now = time.time()
        seq = event.seq
        if seq == record.last_seq + 1:
            record.last_seq = seq
        elif seq > record.last_seq:
            if record.unwatched:
                record.skipped = True
            else:
                record.gaps = True
            record.last_seq = seq
        elif phase == "stream":
            return None  # taken already, from a live run's buffer (see catch_up)
        # (else an event that waited in the subscription while catch_up took the
        # stream events after it: new to the board)
        if phase == "stream":
            chunk = event.chunk
            if isinstance(chunk, AssistantMessageChunk):
                return self._token(record, chunk.content, now)
            record.steps += 1
            return {"k": "step", "id": record.run_id, "n": record.steps, "t": now}, record.owner
        if phase == "custom":
            return self._custom(record, event, now)
        return self._ended(record, event, now)

    def _token(
        self, record: RunRecord, text: str, now: float
    ) -> tuple[dict[str, Any], str | None] | None:
        if not text:
            return None
        pos = record.text_chars  # lets the page skip what a snapshot already had
        record.text_chars += len(text)
        room = TEXT_LIMIT - pos
        if room > 0:
            kept = text if len(text) <= room else text[:room]
            pieces = record.text
            pieces.append(kept)
            record.loose += 1
            if record.loose == _JOIN_EVERY:
                # A token is a string of its own (50 bytes, for a word): joined, the
                # text costs its characters.
                pieces[-_JOIN_EVERY:] = ["".join(pieces[-_JOIN_EVERY:])]
                record.loose = 0
            self._grow(record, len(kept))
        if (not self.watchers or self._coalescing) and len(text) <= MESSAGE_TEXT:
            waiting = self._unposted.get(record.run_id)
            if waiting is not None and waiting.chars + len(text) <= MESSAGE_TEXT:
                waiting.texts.append(text)
                waiting.chars += len(text)
                return None
            if waiting is not None:  # full: it goes, and these tokens wait after it
                del self._unposted[record.run_id]
                self._append(waiting.message(), waiting.owner)
            self._unposted[record.run_id] = _Unposted(record.run_id, record.owner, pos, now, text)
            return None
        message: dict[str, Any] = {
            "k": "tok",
            "id": record.run_id,
            "text": text,
            "pos": pos,
            "t": now,
        }
        if len(text) > MESSAGE_TEXT:  # one chunk of a whole answer: the page is told its size
            message["text"] = text[:MESSAGE_TEXT]
            message["n"] = len(text)
        return message, record.owner

    def _custom(
        self, record: RunRecord, event: StreamEvent, now: float
    ) -> tuple[dict[str, Any], str | None]:
        # Kept as the page is sent it (a preview): a run may send thousands.
        n = record.customs_count
        record.customs_count += 1
        name, name_size = clip(event.name, PREVIEW_LIMIT)
        kept = n < CUSTOMS_KEPT
        data, used = clip(
            event.chunk, PREVIEW_LIMIT, f"custom_events[{n}].data", record.cuts if kept else None
        )
        if kept:
            record.customs.append({"name": name, "data": data, "t": now})
            self._grow(record, used + name_size + _ITEM * 4)
        message = {"k": "custom", "id": record.run_id, "n": n, "name": name, "data": data}
        return {**message, "t": now}, record.owner

    def _ended(
        self, record: RunRecord, event: StreamEvent, now: float
    ) -> tuple[dict[str, Any], str | None]:
        record.end, used = _event_json(event, "end", record.cuts)
        output = event.data.output
        if (record.gaps or record.skipped) and isinstance(output, AssistantMessage):
            # Tokens were dropped on the way: the text kept is the answer's, whole.
            content = output.content
            kept = content[:TEXT_LIMIT]
            used += len(kept) - sum(len(piece) for piece in record.text)
            record.text, record.loose, record.text_chars = [kept], 0, len(content)
        record.ending = _ending(event, record)
        record.ended = now
        self._grow(record, used + len(wire_json(record.ending)))
        return {"k": "end", "id": record.run_id, **record.ending, "t": now}, record.owner

    def _started(self, event: StreamEvent, now: float) -> tuple[dict[str, Any], str | None] | None:
        parent_id = event.parent_ids[-1] if event.parent_ids else None
        root_id = event.parent_ids[0] if event.parent_ids else event.run_id
        if parent_id is not None and root_id not in self.roots:
            return None  # its tree left the history
        owner = self.roots[root_id].owner if parent_id is not None else None
        cuts: list[dict[str, Any]] = []
        start, used = _event_json(event, "start", cuts)
        shown, shown_size = clip(event.data.input, PREVIEW_LIMIT)
        name, name_size = clip(event.name, PREVIEW_LIMIT)
        tags, tags_size = clip(list(event.tags), PREVIEW_LIMIT)
        prompt = prompt_of(event.data.input) if event.kind == "chat_model" else None
        prompt_size = 0 if prompt is None else len(wire_json(prompt))
        record = RunRecord(
            event.run_id,
            root_id,
            parent_id,
            name,
            event.kind,
            tags,
            event.start_time,
            start,
            shown,
            owner=owner,
            cuts=cuts,
            prompt=prompt,
            unwatched=self.taking == "first",
            size=RECORD_BYTES + used + shown_size + name_size + tags_size + prompt_size,
        )
        self.runs[event.run_id] = record
        self.size += record.size
        if parent_id is None:
            record.owner = self._owners.pop(event.run_id, None)
            self.roots[event.run_id] = record
        else:
            # Under its nearest ancestor the board has (its parent's start may have been
            # dropped): every record must be reached from its root, to be forgotten.
            for ancestor_id in reversed(event.parent_ids):
                ancestor = self.runs.get(ancestor_id)
                if ancestor is not None:
                    ancestor.children.append(event.run_id)
                    self._grow(ancestor, _ITEM * 6)
                    break
        self._forget_old()
        if event.run_id not in self.runs:
            return None  # it did not fit
        return {**record.summary(), "t": now}, record.owner

    def _grow(self, record: RunRecord, size: int) -> None:
        record.size += size
        self.size += size
        if self.size > self.records_budget:
            self._forget_old()

    def _forget_old(self) -> None:
        while self.roots and (len(self.roots) > self.history or self.size > self.records_budget):
            oldest = next(iter(self.roots.values()))
            if oldest.end is None and any(r.end is not None for r in self.roots.values()):
                # keep runs in progress: forget the oldest that has ended
                oldest = next(r for r in self.roots.values() if r.end is not None)
            del self.roots[oldest.run_id]
            for run_id in self.tree_ids(oldest.run_id):
                self.size -= self.runs.pop(run_id).size

    def tree_ids(self, root_id: str) -> list[str]:
        """The ids of a root run and its descendants, parents first."""
        ids, pending = [], [root_id]
        while pending:
            run_id = pending.pop()
            record = self.runs.get(run_id)
            if record is None:
                continue
            ids.append(run_id)
            pending.extend(reversed(record.children))
        return ids

    def visible(self, run_id: str, identity: Identity | None) -> RunRecord | None:
        """The record of ``run_id`` if ``identity`` may see it (``None``: anyone may)."""
        record = self.runs.get(run_id)
        if record is None or (identity is not None and not identity.may_see(record.owner)):
            return None
        return record

    def tree(self, root_id: str, identity: Identity | None = None) -> list[dict[str, Any]] | None:
        """The summaries of a root run's tree, parents first; ``None`` if unknown (or
        not ``identity``'s to see)."""
        if root_id not in self.roots or self.visible(root_id, identity) is None:
            return None
        return [self.runs[run_id].summary() for run_id in self.tree_ids(root_id)]

    def record(self, run_id: str, identity: Identity | None = None) -> dict[str, Any] | None:
        """A run's complete record: its start and terminal events, every field (a value
        over :data:`VALUE_LIMIT` cut, as ``cut`` lists); ``None`` if unknown (or not
        ``identity``'s to see)."""
        record = self.visible(run_id, identity)
        if record is None:
            return None
        return {
            "start": record.start,
            "end": record.end,
            "custom_events": record.customs,
            "custom_events_not_kept": record.customs_count - len(record.customs),
            "text_chars": record.text_chars,
            "events_dropped": record.gaps,
            "cut": record.cuts,
        }

    def recent(self, identity: Identity | None = None) -> list[dict[str, Any]]:
        """The root runs kept that ``identity`` may see, newest first, summarised."""
        out = []
        for record in reversed(self.roots.values()):
            if identity is not None and not identity.may_see(record.owner):
                continue
            ending = record.ending
            item = {
                "id": record.run_id,
                "name": record.name,
                "kind": record.kind,
                "tags": record.tags,
                "t0": record.started,
                "status": ending["status"] if ending is not None else None,
                "t1": ending["t1"] if ending is not None else None,
                "input": said(record.input),
                "error": None if ending is None else clip(ending["error"], SIDEBAR_CHARS)[0],
            }
            out.append(item)
        return out
