"""The compact codec: one stream's events as small JSON-shaped records, for the edges
that carry many events (a cluster's hosts, a compact HTTP stream).

A run's identity (name, kind, parent ids, tags, metadata, start time) is sent once,
in an identity record, the first time one of its events is encoded; its events after
that name the run by a small number. Records are lists of JSON values, so that any
transport can carry them (JSON, msgpack, pickle of plain data):

- ``["i", n, run_id, name, kind, parent_ids, tags, metadata, start_time]``: run ``n``;
- ``[n, seq, chunk]``: a stream event of run ``n`` (the hot path: one per token); for a
  chat model's run, a chunk that is only text of the run's current message is just
  that text (a string), and the message's id travels once, with its first chunk
  (such a record is a tuple, the others lists: JSON and the decoder read both alike);
- ``[n, seq, event, data, status, end_time]``: a start or terminal event of run ``n``;
  a terminal event retires ``n``;
- ``["e", event]``: any other event (a custom event), whole, as the converter writes it.

An encoder made with ``delta=True`` (a run journal's, which a replay reads back) also
writes a start or terminal event whose input it has sent before by reference, so that a
conversation that grows by a message a turn is written once, not once per turn:

- ``[n, seq, event, data, status, end_time, given]``: as the six-element form, but
  ``data`` gives its input in part. For a terminal event, ``given`` is ``0``: its input
  is its start's (``data`` has no ``input``). For a start, ``given`` is ``[base,
  {key: count, ...}]``: each such ``key`` of the input (an object) is a list that begins
  with the first ``count`` items of the same key's list in the input of run ``base``'s
  start, and ``data`` holds only the items after them. Run ``base`` is the run whose
  start came last of the runs with the same parent, kind and name (its *slot*), and
  a decoder keeps each slot's last input until the parent run's terminal event; a root
  run has no slot.

A delta encoder writes a chat model's chunk that is not text alone as one flat list:
``[content, finish_reason, id, prompt_tokens, completion_tokens, total_tokens]`` (the
three counts ``None`` without usage), then ``index, id, name, args`` of each tool-call
piece (a journal read back makes one list of it, not four objects).

A delta encoder also writes each message (a system, user, assistant or tool message:
frozen, and what it holds read-only, so that its identity vouches for its JSON) once:
where the same message object comes again, in a later record of the journal, the record
holds ``0`` in its place and a *link* to where it was written. A model's answer is in
its end's output, then in the agent's step chunk and in the next turn's input; each
message of a conversation again in the agent's output. Links go at the top level of a
payload (a chunk, or each value of an event's data): the payload itself, the items of
its lists, and those of its fields' (an object) or keys' (a dict) lists. An agent's
action (its input read-only: a tool call's arguments) is written once too, and linked
to from the agent's step (a list's ``AgentStep`` item's ``action``). So is a model's
answer text (an assistant message's ``content`` of ``LONG_TEXT`` characters or more,
defined at its path in the message where the message is written whole): a payload, or
its field, that is that very string (an agent's finish chunk's ``output``, its run's
output's ``output``) links to it. A decoder reads these as any link (a definition
names a path, whatever value is there), so journals of this form are schema 4's. A
record with links ends with them, one flat list (no list inside: a journal read back
makes few objects) of entries, each a code then the keys and indexes of a path into the
chunk, or the data:

- ``2 * len(path), *path``: the record writes a message there whole, which later
  records may link to; its index is its place among the record's messages so written;
- ``2 * len(path) + 1, *path, position, index``: a link, there, to the message
  ``index`` written by the record at ``position`` (from 0) in the journal.

So a chunk record with links is ``[n, seq, chunk, links]``, and a start or terminal
event's ``[n, seq, event, data, status, end_time, given, type_name, links]`` (``given``
and ``type_name`` ``None`` where they have none). A journal that goes on (a run resumed
under its own id) is encoded from its length on: its positions go on too.

A decoder reads both forms (it keeps each slot's last input, and every message defined,
whatever the encoder).

An error event made where the exception was at hand adds, as an eighth element, its
type's qualified name (:func:`error_type_name`, read back by a replay):
``[n, seq, event, data, status, end_time, given, type_name]``, ``given`` being ``None``
when its input is not given by reference.

Payloads go through the protocol's converter, so they read back as the same protocol
objects; a payload with no JSON form is written as its ``repr`` (an odd tool output
must not break the stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from json import loads
from operator import is_
from typing import Any, Final, final

from attrs import evolve
from cattrs.errors import BaseValidationError

from ._chat import (
    AssistantMessage,
    AssistantMessageChunk,
    SystemMessage,
    ToolCallChunk,
    ToolMessage,
    Usage,
    UserMessage,
)
from ._convert import (
    _FIELDS,
    _TYPED,
    TYPE_KEY,
    SerializationError,
    converter,
    same_json,
    shown_repr,
    structure_any,
    unstructure_any,
)
from ._events import EventData, RunInfo, StreamEvent
from ._frozen import FrozenDict
from ._json_text import dump, flat, json_text, text, text_of, value_text
from ._mail import AgentAction, AgentStep

IDENTITY: Final = "i"
WHOLE: Final = "e"


class CompactError(ValueError):
    """A record the decoder cannot read (malformed, or naming a run it was never told
    of)."""


def _flat_chunk(chunk: AssistantMessageChunk) -> list[Any] | None:
    """A chat model's chunk as a delta encoder writes it (see the module's docstring),
    or ``None`` if it holds what that form cannot (it is then written whole)."""
    usage = chunk.usage
    flat: list[Any]
    if usage is None:
        flat = [chunk.content, chunk.finish_reason, chunk.id, None, None, None]
    else:
        flat = [
            chunk.content,
            chunk.finish_reason,
            chunk.id,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
        ]
        if not all(type(n) is int for n in flat[3:]):
            return None
    for piece in chunk.tool_call_chunks:
        if type(piece) is not ToolCallChunk or type(piece.index) is not int:
            return None
        flat += (piece.index, piece.id, piece.name, piece.args)
    return flat


def chunk_from_flat(flat: list[Any]) -> AssistantMessageChunk:
    """A chat model's chunk from the flat list a delta encoder writes (see the module's
    docstring).

    Raises:
        CompactError: the list is malformed.
    """
    if len(flat) < 6 or (len(flat) - 6) % 4:
        raise CompactError(f"a chat chunk of {len(flat)} values: {flat!r:.200}")
    content, finish_reason, message_id, prompt, completion, total, *calls = flat
    usage = None
    if prompt is not None or completion is not None or total is not None:
        usage = Usage(prompt, completion, total)
    pieces = tuple(
        ToolCallChunk(calls[at], calls[at + 1], calls[at + 2], calls[at + 3])
        for at in range(0, len(calls), 4)
    )
    return AssistantMessageChunk(
        content=content,
        tool_call_chunks=pieces,
        usage=usage,
        finish_reason=finish_reason,
        id=message_id,
    )


def _payload(value: Any) -> Any:
    try:
        return unstructure_any(value)
    except SerializationError:
        return shown_repr(value)


def _data(data: EventData) -> dict[str, Any]:
    out = {key: _payload(value) for key, value in data.items()}
    return out


def _payload_text(value: Any) -> str:
    """:func:`_payload`'s JSON text."""
    try:
        return value_text(value)
    except SerializationError:
        return text(shown_repr(value))


_KEYS: Final = {key: text(key) + ":" for key in EventData._view_keys}
"""Each key of an event's data as JSON, and its colon."""
_INPUT: Final = _KEYS["input"]


class _ValueTexts(dict[Any, str]):
    """The JSON of the values of links (integers and a payload's keys), each made at its
    first use and kept (up to :data:`LINK_TEXTS_KEPT`; a key only up to
    :data:`LINK_KEY_KEPT` characters)."""

    def __missing__(self, value: Any) -> str:
        shown = value_text(value)
        cls = type(value)
        if (cls is int or (cls is str and len(value) <= LINK_KEY_KEPT)) and len(
            self
        ) < LINK_TEXTS_KEPT:
            self[value] = shown
        return shown


def _exact(key: str) -> str:
    """A payload's key as a link's path holds it: a ``str`` exactly (the texts of links
    are looked up by their values, and a subclass's ``==`` may take another text for
    its own: a case-insensitive key for the key of another case written before)."""
    return key if type(key) is str else str.__str__(key)


LINK_TEXTS_KEPT: Final = 1 << 16
"""At most so many values' texts are kept for links (a payload's keys may be many)."""
LINK_KEY_KEPT: Final = 32
"""The longest key whose text is kept for links (a field's name, a conversation's key;
the texts are kept for the process's life: with keys of any length, kept twice, the key
and its JSON, their size had no bound but the count's. Up to this length: 30 MB at the
most, 65,536 keys of 32 characters none of which JSON writes as it is, measured with
tracemalloc; a journal's are a few kB)."""
_LINK_TEXTS: Final = _ValueTexts()


_INDEX: Final = (1 << 32) - 1
"""Of a message's place (``position << 32 | index``), its index."""
_int: Final = int.__repr__


def error_type_name(exc: BaseException) -> str:
    """``module.QualifiedName`` of ``exc``'s type; for an exception that stands for
    another (read back from a journal, or from a host), the one it stands for, as its
    ``type_name`` attribute says."""
    named = getattr(exc, "type_name", None)
    if isinstance(named, str):
        return named
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


_MUTABLE: Final = (dict, list, tuple, set, bytearray)
"""Items whose identity does not vouch for their content: containers, which change in
place or may hold what does."""


_SEALED: Final = frozenset(
    (SystemMessage, UserMessage, AssistantMessage, ToolMessage, str, int, float, bool, type(None))
)
"""Items whose identity vouches for their JSON: scalars, and messages, which hold only
what cannot change in place (a tool call's ``args`` is a FrozenDict, see
protocol/_frozen.py). Another frozen object may hold a plain dict (a ToolSpec's schema,
an AgentAction made with a dict): its identity vouches not (see :func:`_vouches`)."""


def _all_sealed(items: Sequence[Any]) -> bool:
    """Whether every one of ``items`` is of a sealed type (by its type: one pass in C)."""
    return set(map(type, items)) <= _SEALED


def _vouches(item: Any) -> bool:
    """Whether ``item``'s identity vouches for its JSON: a sealed one, or an agent's
    action (or step) whose input is read-only."""
    kind = type(item)
    if kind in _SEALED:
        return True
    if kind is AgentStep:
        item = item.action
        kind = type(item)
    return kind is AgentAction and type(item.tool_input) is FrozenDict


def bare_text(chunk: Any, message_id: str | None) -> bool:
    """Whether a chat model run's ``chunk`` is written as bare text, ``(number, seq,
    chunk.content)``, when the id of the run's message written last is
    ``message_id``: a message chunk of only text, of that message (tested per token,
    by the journal's feed too)."""
    return (
        type(chunk) is AssistantMessageChunk
        and chunk.id == message_id
        and type(chunk.content) is str  # (a record's bare str is text: a decoder reads it so)
        and not chunk.tool_call_chunks
        and chunk.usage is None
        and chunk.finish_reason is None
    )


SAME_AS_START: Final = 0
"""A terminal event's ``given``: its input is its start's."""


class _Sent:
    """What the encoder keeps of an open run."""

    __slots__ = ("chat", "input", "lists", "message_id", "number", "rest", "shown")

    def __init__(self, number: int, chat: bool) -> None:
        self.number = number
        self.chat = chat
        self.message_id: str | None = None
        self.input: Any = None  # its start's (a delta encoder's, to write its end's)
        # Of a start's input object written by parts: its lists (as :class:`_Lists`
        # holds them) and the JSON of its other keys, to tell at its end whether it
        # is still as it was written (it may have been changed in place since).
        self.lists: dict[str, tuple[Sequence[Any], list[Any]]] | None = None
        self.rest: dict[str, Any] = {}
        self.shown: Any = None  # the JSON of a start's input that is an object

    def unchanged(self, value: Any) -> bool:
        """Whether ``value`` (the start's input object, at the run's end) still has
        the JSON the start's record gave it."""
        lists = self.lists
        if lists is None:
            if type(value) in _SCALARS:
                return True
            # A frozen object does not vouch by its identity here: it may hold a dict
            # (a tool's schema, an action made with a dict). Its JSON is compared.
            try:
                return self.shown is not None and same_json(unstructure_any(value), self.shown)
            except SerializationError:
                return False
        if not isinstance(value, dict) or len(value) != len(lists) + len(self.rest):
            return False
        try:
            for key, item in value.items():
                known = lists.get(key)
                if known is None:
                    if key not in self.rest or not same_json(unstructure_any(item), self.rest[key]):
                        return False
                elif (
                    not isinstance(item, list | tuple)
                    or len(item) != len(known[0])
                    or _shared(item, *known) != len(item)  # (the very items: in C)
                ):
                    return False
        except SerializationError:
            return False
        return True


@final
class _Lists:
    """A delta encoder's slot: the lists of the input of the run whose start came last,
    each as the objects and their JSON (see the module's docstring)."""

    __slots__ = ("items", "number")

    def __init__(self, number: int, items: dict[str, tuple[Sequence[Any], list[Any]]]) -> None:
        self.number = number
        self.items = items


VOUCHED: Final[Any] = object()
"""In a delta encoder's lists of JSON kept for comparison (a slot's, see :class:`_Lists`),
the place of an item whose identity vouches for its JSON (a message, see
:func:`_vouches`): that JSON is made again from the item if it is ever compared, which
is rare (only an item that is not the very object is), instead of being kept for the
tree's life (the collector traced each message's dicts and lists at every full
collection while its tree was open)."""


def _shared(items: Sequence[Any], known: Sequence[Any], shown: list[Any]) -> int:
    """How many of ``items`` begin as ``known`` (whose JSON is ``shown``, or
    :data:`VOUCHED`) does: the same object (one that cannot change in place), or one of
    the same JSON.

    Raises:
        SerializationError: an item has no JSON form.
    """
    size = len(known)
    if len(items) >= size and all(map(is_, items, known)) and _all_sealed(known):
        return size  # the very items, none a container (a conversation that grows: in C)
    count = 0
    for item, was, json in zip(items, known, shown, strict=False):
        # A container does not vouch by its identity (it changes in place), nor does a
        # frozen object that may hold one; a message does (see _SEALED).
        same = item is was and _vouches(item)
        if not same and not same_json(
            unstructure_any(item), unstructure_any(was) if json is VOUCHED else json
        ):
            break  # (``==`` took a True for the 1 written before: it read back 1)
        count += 1
    return count


_LINKED: Final = frozenset((SystemMessage, UserMessage, AssistantMessage, ToolMessage, AgentAction))
"""What a delta encoder writes once and links to after: messages (frozen, what they hold
read-only: their identity vouches for their JSON), and an agent's actions whose input
is read-only (a tool call's arguments)."""
_HOLDING: Final = frozenset((AgentStep,))
"""Objects in a payload's lists whose fields may be linked (a step's action)."""
_SCALARS: Final = frozenset((str, int, float, bool, type(None)))
LONG_TEXT: Final = 100
"""A model's answer this long or longer (an ``AssistantMessage``'s ``content``) is
defined where its message is written, and a payload's field that is the same string
object (an agent's finish chunk and output repeat the answer) links to it."""


@final
class _Links:
    """The links of the record being made, as written (see the module's docstring),
    and the messages it defines, with their JSON."""

    __slots__ = ("made", "written")

    def __init__(self) -> None:
        self.written: list[Any] = []
        self.made: list[Any] = []  # the messages (and answers' texts) it defines

    def undo(self, mark: tuple[int, int]) -> None:
        """Forget the links made since ``mark``."""
        del self.written[mark[0] :], self.made[mark[1] :]

    def clear(self) -> None:
        self.undo((0, 0))


@final
class CompactEncoder:
    """Turns one stream's events into compact records, in order."""

    __slots__ = (
        "_defs",
        "_delta",
        "_known",
        "_next",
        "_position",
        "_runs",
        "_slots",
        "_text",
        "_where",
    )

    def __init__(
        self,
        first_number: int = 0,
        *,
        delta: bool = False,
        known: dict[int, tuple[Any, Any]] | None = None,
        text: bool = False,
    ) -> None:
        """``first_number``: the number of the first run told of (a stream that goes on
        from an earlier one numbers its runs after that one's). ``delta``: write inputs
        sent before by reference, and messages written before as links to them (see
        the module's docstring): a run journal's, whose first record is then at
        position ``first_number`` of the journal. ``known``: the JSON of objects
        turned into JSON before (by ``id``: the object, kept alive, and its JSON, as
        ``unstructure_known`` keeps them), which a message it writes whole may reuse
        (a replay's: the conversation it read back). ``text`` (a delta encoder's): its
        records are appended as their JSON text (a ``str``, what ``json.dumps(record,
        ensure_ascii=False, separators=(",", ":"))`` writes), but a run of texts' bare
        records and events written whole (a custom event's), which stay lists and
        tuples; a journal keeps and writes that text. A delta encoder makes each record
        as text (protocol/_json_text.py), so without ``text`` its records are that
        text read back."""
        self._known = known
        self._runs: dict[str, _Sent] = {}
        self._next = first_number
        self._delta = delta
        self._text = text
        self._slots: dict[str, dict[tuple[str, str], _Lists]] = {}
        self._position = first_number  # of the next record (a delta encoder's)
        # The messages written so far (by id, kept alive), and where: the record's
        # position and the message's index there, as ``position << 32 | index`` (a dict
        # of integers, which the collector does not track; their JSON is not kept: a
        # message's identity vouches for it, see VOUCHED).
        self._defs: dict[int, Any] = {}
        self._where: dict[int, int] = {}

    @property
    def open_runs(self) -> int:
        """Runs whose identity was sent and whose terminal event was not yet encoded."""
        return len(self._runs)

    def _written(self, record: str, out: list[Any]) -> None:
        """Append a delta encoder's ``record`` (its JSON text) to ``out``, as its
        caller asked for records (see ``text``)."""
        out.append(record if self._text else loads(record))

    def encode(self, event: StreamEvent, out: list[Any]) -> None:
        """Append the records for ``event`` (its run's identity first, if new) to ``out``."""
        run = event.run
        if event.status is None and event.event.endswith("_stream"):
            self.encode_chunk(event.event, run, event.seq, event.chunk, out)
            return
        if run.kind == "custom" or not event.event.startswith("on_"):
            out.append([WHOLE, converter.unstructure(event, StreamEvent)])
            self._position += 1
            return
        sent = self._runs.get(run.run_id)
        if sent is None:
            sent = self._identify(run, out)
        if event.status is not None:
            del self._runs[run.run_id]
        if not self._delta:
            record = [
                sent.number,
                event.seq,
                event.event,
                _data(event.data),
                event.status,
                event.end_time,
            ]
            if event.status == "error" and event.exception is not None:
                record += (None, error_type_name(event.exception))  # (not by reference)
            out.append(record)
            self._position += 1
            return
        links = _Links()
        parts = self._by_reference(event, sent, links)
        if links.written:
            parts.extend(["null"] * (8 - len(parts)))  # no given, no error type
            parts.append(self._linked(links, 0))
        if event.status == "error" and event.exception is not None:
            if len(parts) == 6:
                parts.append("null")  # its input not given by reference
            if len(parts) == 7:
                parts.append(text(error_type_name(event.exception)))
            else:  # (links follow)
                parts[7] = text(error_type_name(event.exception))
        shown = f"[{','.join(parts)}]"
        out.append(shown if self._text else loads(shown))  # (as _written does)
        self._position += 1

    def _by_reference(self, event: StreamEvent, sent: _Sent, links: _Links) -> list[str]:
        """A delta encoder's record of a start or terminal event (see the module's
        docstring), as the JSON text of each of its elements: its input by reference
        where it can, and messages written before as ``links`` to them."""
        run, data = event.run, event.data
        head = [_int(sent.number), value_text(event.seq), text(event.event)]
        if event.status is not None:
            self._slots.pop(run.run_id, None)  # its children's: none start after its end
            status, end_time = value_text(event.status), value_text(event.end_time)
            if sent.input is not None and data.input is sent.input and sent.unchanged(data.input):
                rest = self._linked_data(data, links, "input")
                return [*head, rest, status, end_time, "0"]  # (SAME_AS_START)
            return [*head, self._linked_data(data, links), status, end_time]
        sent.input = data.input
        slots = self._slots.setdefault(run.parent_ids[-1], {}) if run.parent_ids else None
        base = slots.get((run.kind, run.name)) if slots is not None else None  # a root's: none
        lists: dict[str, tuple[Sequence[Any], list[Any]]] = {}
        counts: dict[str, int] = {}
        shown: str
        try:
            if data.input is None:
                raise SerializationError("no input")  # written as without delta
            given, rest = self._given(data.input, base, lists, counts, links)
        except SerializationError:  # written whole, as without delta (its repr)
            lists.clear()
            counts.clear()
            links.clear()
            shown = dump(_data(data))
        else:
            fields = [_KEYS[k] + _payload_text(v) for k, v in data.items() if k != "input"]
            fields.append(_INPUT + given)
            shown = f"{{{','.join(fields)}}}"
            if isinstance(data.input, dict) and "$type" not in data.input:  # (by parts)
                sent.lists = lists
                sent.rest = rest
            elif not isinstance(data.input, _MUTABLE):
                sent.shown = rest
        end_time = value_text(event.end_time)
        if slots is None:
            return [*head, shown, "null", end_time]
        slots[(run.kind, run.name)] = _Lists(sent.number, lists)
        if counts and base is not None:
            return [*head, shown, "null", end_time, dump([base.number, counts])]
        return [*head, shown, "null", end_time]

    def _given(
        self,
        value: Any,
        base: _Lists | None,
        lists: dict[str, tuple[Sequence[Any], list[Any]]],
        counts: dict[str, int],
        links: _Links,
    ) -> tuple[str, Any]:
        """A start's input as a delta encoder writes it (its JSON text): each list of an
        input object after the items it shares with its slot's ``base`` (their
        ``counts``), its messages written before as ``links``; ``lists`` gets its lists
        and their JSON, for the next start of the slot. With the text, the JSON of an
        input that is not an object, or of an object's keys that are not lists.

        Raises:
            SerializationError: part of it has no JSON form.
        """
        if not isinstance(value, dict) or "$type" in value:  # (escaped: written whole)
            shown = unstructure_any(value)
            return json_text(shown), shown
        given: list[str] = []
        rest: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(f"JSON object keys must be strings, got {shown_repr(key)}")
            if not isinstance(item, list | tuple):
                rest[key] = shown = unstructure_any(item)
                given.append(f"{text(key)}:{json_text(shown)}")
                continue
            known = base.items.get(key) if base is not None else None
            count = _shared(item, *known) if known is not None else 0
            tail, whole = self._linked_list(item, count, ["input", _exact(key)], links)
            # A copy: a list changed in place after this start must not change its record.
            lists[key] = (tuple(item), [*known[1][:count], *whole] if known is not None else whole)
            if count:
                counts[key] = count
            given.append(f"{text(key)}:{tail}")
        return f"{{{','.join(given)}}}", rest

    def _message(self, value: Any, path: list[Any], links: _Links) -> tuple[str, Any]:
        """A message's JSON text in a record (a link if it was written before), and its
        JSON whole (:data:`VOUCHED` where its identity vouches for it)."""
        where = self._where.get(id(value))
        if where is not None and self._defs[id(value)] is value:
            links.written += (2 * len(path) + 1, *path, where >> 32, where & _INDEX)
            return "0", VOUCHED
        if type(value) is AgentAction and type(value.tool_input) is not FrozenDict:
            shown = converter.unstructure(value, AgentAction)
            return dump(shown), shown  # its input may change in place: its identity vouches not
        seen = self._known.get(id(value)) if self._known is not None else None
        piece = dump(seen[1]) if seen is not None and seen[0] is value else text_of(value)
        links.written += (2 * len(path), *path)
        links.made.append(value)
        if type(value) is AssistantMessage:
            content = value.content
            if type(content) is str and len(content) >= LONG_TEXT:
                links.written += (2 * len(path) + 2, *path, "content")
                links.made.append(content)
        return piece, VOUCHED

    def _linked_list(
        self, items: Sequence[Any], start: int, path: list[Any], links: _Links
    ) -> tuple[str, list[Any]]:
        """The JSON text of ``items[start:]`` in a record (messages written before as
        links), and their JSON whole.

        Raises:
            SerializationError: an item has no JSON form.
        """
        rest = items[start:]
        kinds = set(map(type, rest))
        if _LINKED.isdisjoint(kinds) and _HOLDING.isdisjoint(kinds):
            shown = unstructure_any(rest)
            return dump(shown), shown
        record: list[str] = []
        whole: list[Any] = []
        for index, item in enumerate(rest):
            kind = type(item)
            if kind in _LINKED:
                piece, full = self._message(item, [*path, index], links)
                record.append(piece)
                whole.append(full)
            elif kind in _HOLDING:
                tag, names = _FIELDS[kind]
                fields = [f'{{"{TYPE_KEY}":{text(tag)}']
                parts = {TYPE_KEY: tag}
                for name in names:
                    part = getattr(item, name)
                    if type(part) in _LINKED:
                        piece, parts[name] = self._message(part, [*path, index, name], links)
                        if parts[name] is VOUCHED:  # (the step vouches too, or is made again)
                            parts[name] = VOUCHED if _vouches(item) else unstructure_any(part)
                    elif type(part) is str:  # (an observation: its own JSON)
                        parts[name] = part
                        piece = text(part)
                    else:
                        parts[name] = shown = unstructure_any(part)
                        piece = json_text(shown)
                    fields.append(f"{text(name)}:{piece}")
                record.append(f"{','.join(fields)}}}")
                whole.append(VOUCHED if VOUCHED in parts.values() else parts)
            elif kind in _SCALARS:
                record.append(value_text(item))
                whole.append(item)
            else:
                shown = unstructure_any(item)
                record.append(json_text(shown))
                whole.append(shown)
        return f"[{','.join(record)}]", whole

    def _linked_part(self, value: Any, path: list[Any], links: _Links, top: bool = True) -> str:
        """The JSON text of a payload (at ``path`` in its record) as a record holds it: a
        message, or the messages of its lists (at its ``top`` level, or in an object's
        or a dict's lists there), written before as links to them.

        Raises:
            SerializationError: part of it has no JSON form.
        """
        cls = type(value)
        if cls in _LINKED:
            return self._message(value, path, links)[0]
        if cls is str and len(value) >= LONG_TEXT:  # a model's answer, written before?
            where = self._where.get(id(value))
            if where is not None and self._defs[id(value)] is value:
                links.written += (2 * len(path) + 1, *path, where >> 32, where & _INDEX)
                return "0"
            return text(value)
        if cls is list or cls is tuple:
            return self._linked_list(value, 0, path, links)[0]
        if top:  # an object's or a dict's parts
            fields = _FIELDS.get(cls)
            if fields is not None:
                tag, names = fields
                typed = _TYPED.get(cls)
                shown = [f'{{"{TYPE_KEY}":{text(tag)}']
                for name in names:
                    if typed is not None and name in typed:  # (a dict field: the converter's)
                        part = dump(typed[name](getattr(value, name)))
                    else:
                        part = self._linked_part(getattr(value, name), [*path, name], links, False)
                    shown.append(f"{text(name)}:{part}")
                return f"{','.join(shown)}}}"
            if cls is dict and "$type" not in value:  # (else escaped: written whole)
                parts: list[str] = []
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise SerializationError(
                            f"JSON object keys must be strings, got {shown_repr(key)}"
                        )
                    part = self._linked_part(item, [*path, _exact(key)], links, False)
                    parts.append(f"{text(key)}:{part}")
                return f"{{{','.join(parts)}}}"
        return value_text(value)

    def _linked_data(self, data: EventData, links: _Links, skip: str | None = None) -> str:
        """An event's data as :func:`_data` writes it (but key ``skip``), its
        messages written before as ``links``: its JSON text."""
        shown: list[str] = []
        written, made = links.written, links.made
        for key, value in data.items():
            if key == skip:
                continue
            mark = len(written), len(made)  # (for undo)
            try:
                part = self._linked_part(value, [key], links)
            except SerializationError:
                links.undo(mark)
                part = text(shown_repr(value))
            shown.append(_KEYS[key] + part)
        return f"{{{','.join(shown)}}}"

    def _linked(self, links: _Links, offset: int) -> str:
        """The record's links, as written (their JSON text); the messages it defines
        are known from now on (the record is at ``offset`` from the next position)."""
        position = (self._position + offset) << 32
        defs, where = self._defs, self._where
        for index, message in enumerate(links.made):
            defs[id(message)] = message
            where[id(message)] = position | index
        # Each value's text looked up in C (a link's values are small integers and a
        # payload's keys, few), not given to the JSON encoder: 5,000 instructions a
        # call and 350 to 900 a value, against about 150 a value here.
        return f"[{','.join(map(_LINK_TEXTS.__getitem__, links.written))}]"

    def encode_chunk(
        self, name: str, run: RunInfo, seq: int, chunk: Any, out: list[Any], *, texts: bool = False
    ) -> int | None:
        """:meth:`encode` for the stream event ``name`` (``on_{kind}_stream``) of run
        ``run`` numbered ``seq`` with ``chunk``, without the event made (a run of
        chunks is encoded as it waits, one object for all of them). With ``texts``,
        a chunk of a run already told of that would be written as bare text,
        ``(number, seq, chunk.content)``, is not written, and nothing else changes: its
        run's number is returned (``None`` for the others). A caller may then write
        that record itself (a journal gathers a run of such texts without making a
        record for each; while nothing else of the run is encoded, its next chunks
        are bare text if :func:`bare_text` says so of them and ``chunk.id``)."""
        sent = self._runs.get(run.run_id)
        if sent is None:
            sent = self._identify(run, out)
        elif texts and sent.chat:
            if bare_text(chunk, sent.message_id):
                return sent.number
            if type(chunk) is AssistantMessageChunk:  # (told: not bare text)
                self._position += 1
                self._chat_chunk(sent, seq, chunk, out)
                return None
        self._position += 1  # (links name the record's position: one less)
        if not sent.chat:
            if self._delta and type(chunk) not in _SCALARS:
                links = _Links()
                try:
                    shown = self._linked_part(chunk, [], links)
                except SerializationError:  # written as its repr, as _payload writes it
                    links.clear()
                    shown = text(shown_repr(chunk))
                head = f"[{_int(sent.number)},{value_text(seq)},{shown}"
                if links.written:
                    self._written(f"{head},{self._linked(links, -1)}]", out)
                else:
                    self._written(f"{head}]", out)
                return None
            out.append([sent.number, seq, _payload(chunk)])
        elif type(chunk) is AssistantMessageChunk:
            if bare_text(chunk, sent.message_id):
                # A tuple: the collector stops tracking it at its first pass (it holds
                # no container), where a list is traced for as long as it is kept.
                out.append((sent.number, seq, chunk.content))
            else:
                self._chat_chunk(sent, seq, chunk, out)
        else:  # not a message chunk, from a chat model: sent whole
            # (its JSON put in the event's: the converter's of JSON already made would
            # escape a tagged object's dict again)
            whole = converter.unstructure(StreamEvent(event=name, run=run, seq=seq, chunk=0))
            whole["data"]["chunk"] = _payload(chunk)
            out.append([WHOLE, whole])
        return None

    def _chat_chunk(
        self, sent: _Sent, seq: int, chunk: AssistantMessageChunk, out: list[Any]
    ) -> None:
        """A chat model's chunk that is not bare text, its record appended to ``out``."""
        sent.message_id = chunk.id
        pieces = _flat_chunk(chunk) if self._delta else None
        if pieces is None:
            out.append([sent.number, seq, _payload(chunk)])
        else:  # (one call of the C encoder: its values are scalars)
            self._written(dump([sent.number, seq, pieces]), out)

    def goes_on_at(self, position: int) -> None:
        """The next record is at ``position`` in the journal: its caller wrote records
        of its own since this encoder's last (bare texts, see :meth:`encode_chunk`), and
        the links of what it encodes next name positions that count them."""
        self._position = position

    def _identify(self, run: RunInfo, out: list[Any]) -> _Sent:
        sent = self._runs[run.run_id] = _Sent(self._next, run.kind == "chat_model")
        self._next += 1
        self._position += 1
        metadata = run.metadata
        record = [
            IDENTITY,
            sent.number,
            run.run_id,
            run.name,
            run.kind,
            list(run.parent_ids),
            list(run.tags),
            metadata if self._delta and flat(metadata) else _payload(metadata),
            run.start_time,
        ]
        if self._delta:
            self._written(dump(record), out)  # (one call of the C encoder: its values are flat)
        else:
            out.append(record)
        return sent


@final
class CompactSlots:
    """What a decoder keeps to read inputs given by reference (see the module's
    docstring): for each open run, the last start of each kind and name among its
    children, as the decoder holds it (``value``: the input, or what stands for it)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[str, dict[tuple[str, str], tuple[int, Any]]] = {}

    def started(
        self, parent_ids: Sequence[str], kind: str, name: str, number: int, value: Any
    ) -> None:
        """Run ``number`` (of parents ``parent_ids``, ``kind`` and ``name``) started,
        with ``value``."""
        if parent_ids:
            self._slots.setdefault(parent_ids[-1], {})[(kind, name)] = (number, value)

    def base(self, parent_ids: Sequence[str], kind: str, name: str, number: Any) -> Any:
        """The value that a start (of parents ``parent_ids``, ``kind`` and ``name``)
        refers to: run ``number``'s.

        Raises:
            CompactError: that is not the last start of the start's slot.
        """
        slot = self._slots.get(parent_ids[-1], {}) if parent_ids else {}
        known = slot.get((kind, name))
        if known is None or known[0] != number:
            raise CompactError(
                f"a start of {kind} {name!r} refers to the input of run {number!r}, which "
                "is not the last of its kind and name under its parent"
            )
        return known[1]

    def ended(self, run_id: str) -> None:
        """Run ``run_id`` ended: its children's slots go."""
        self._slots.pop(run_id, None)

    def clear(self) -> None:
        """Forget every slot."""
        self._slots.clear()


def _own(node: Any, copied: set[int]) -> Any:
    """``node`` (a list or a dict of a record) as this resolution's own copy."""
    if id(node) in copied:
        return node
    mine = list(node) if type(node) is list else dict(node)
    copied.add(id(mine))
    return mine


@final
class CompactLinks:
    """What a decoder keeps to read the messages a delta journal writes once and links
    to after (see the module's docstring): the JSON of each message a record defined,
    by that record's position in the journal and the message's index there."""

    __slots__ = ("_defs",)

    def __init__(self) -> None:
        self._defs: dict[int, list[Any]] = {}

    def resolve(self, position: int, payload: Any, links: Any, *, in_place: bool = False) -> Any:
        """``payload`` (of the record at ``position``) with the messages it links to
        in place (the lists and dicts on their paths copied, unless ``in_place``: a
        record read for this reader alone; resolving it again changes nothing); the
        messages it defines are kept for the records after it.

        Raises:
            CompactError: the links are malformed or name a message never defined.
        """
        if in_place:
            return self.resolve_in_place(position, payload, links)
        try:
            defs = self._defs
            defined: list[Any] = []
            copied: set[int] = set()
            start, end = 0, len(links)
            while start < end:
                code = links[start]
                if type(code) is not int or code < 0:
                    raise ValueError(f"a link begins with {code!r}")
                size = code >> 1
                start += 1 + size
                path = links[start - size : start]
                if len(path) != size or start > end:
                    raise IndexError("a link's path is cut short")
                if not code & 1:
                    node = payload
                    for key in path:
                        node = node[key]
                    defined.append(node)
                    continue
                value = defs[links[start]][links[start + 1]]
                start += 2
                if not path:
                    payload = value
                    continue
                payload = node = _own(payload, copied)
                for key in path[:-1]:
                    node[key] = node = _own(node[key], copied)
                last = path[-1]
                was = node[last]
                # (a record resolved in place before holds the message already)
                if not (type(was) is int and was == 0) and was is not value and was != value:
                    raise ValueError(f"{path!r} holds no link")
                node[last] = value
            if defined:
                defs[position] = defined
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CompactError(f"a record's links do not fit it: {exc!r:.200}") from None
        return payload

    def resolve_in_place(self, position: int, payload: Any, links: Any) -> Any:
        """:meth:`resolve` with ``in_place``, in fewer steps per link (a replay reads a
        journal's records for itself alone, about 800 with links for 200 steps): no path
        sliced off the links, and one of one to three keys (those a journal writes)
        walked without a loop.

        Raises:
            CompactError: the links are malformed or name a message never defined.
        """
        defs = self._defs
        defined: list[Any] | None = None
        try:
            at, end = 0, len(links)
            while at < end:
                code = links[at]
                if type(code) is not int or code < 0:
                    raise ValueError(f"a link begins with {code!r}")
                first = at + 1
                at = first + (code >> 1)
                if at > end:
                    raise IndexError("a link's path is cut short")
                # The path walked but for its last key (``code >> 1`` keys).
                if code < 4:
                    node = payload
                elif code < 6:
                    node = payload[links[first]]
                elif code < 8:
                    node = payload[links[first]][links[first + 1]]
                else:
                    node = payload
                    for key in links[first : at - 1]:
                        node = node[key]
                if not code & 1:  # a definition: the message at the path
                    message = node[links[at - 1]] if code > 1 else node
                    if defined is None:
                        defined = [message]
                    else:
                        defined.append(message)
                    continue
                value = defs[links[at]][links[at + 1]]
                at += 2
                if code == 1:  # (the payload itself)
                    payload = value
                    continue
                key = links[at - 3]
                was = node[key]
                # (a record resolved in place before holds the message already)
                if not (type(was) is int and was == 0) and was is not value and was != value:
                    raise ValueError(f"{links[first : at - 2]!r} holds no link")
                node[key] = value
            if defined is not None:
                defs[position] = defined
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CompactError(f"a record's links do not fit it: {exc!r:.200}") from None
        return payload

    def clear(self) -> None:
        """Forget every message."""
        self._defs.clear()


def extended_input(partial: Any, base: Any, counts: Any) -> dict[str, Any]:
    """A start's input given by reference, whole: ``partial`` (the record's input) with
    each list of ``counts`` after the first ``count`` items of ``base``'s (the input of
    the run it refers to); works on JSON and on protocol objects alike.

    Raises:
        CompactError: they do not fit (a record that does not match its journal).
    """
    if not isinstance(partial, dict) or not isinstance(base, dict) or not isinstance(counts, dict):
        raise CompactError(f"an input given by reference is malformed: {counts!r:.200}")
    whole = dict(partial)
    for key, count in counts.items():
        known, tail = base.get(key), partial.get(key)
        if (
            not isinstance(known, list)
            or not isinstance(tail, list)
            or type(count) is not int
            or not 0 < count <= len(known)
        ):
            raise CompactError(f"input {key!r} given by reference does not fit its base")
        whole[key] = known[:count] + tail
    return whole


class _Open:
    """What the decoder keeps of an open run."""

    __slots__ = ("chat", "info", "input", "message_id", "number", "seq", "stream_event")

    def __init__(self, info: RunInfo, number: int) -> None:
        self.info = info
        self.number = number
        self.stream_event = f"on_{info.kind}_stream"
        self.chat = info.kind == "chat_model"
        self.message_id: str | None = None
        self.seq = -1
        self.input: Any = None


@final
class CompactDecoder:
    """Turns the records of one stream back into events, in order."""

    __slots__ = ("_by_id", "_links", "_position", "_runs", "_slots")

    def __init__(self) -> None:
        self._runs: dict[int, _Open] = {}
        self._by_id: dict[str, _Open] = {}
        self._slots = CompactSlots()
        self._links = CompactLinks()
        self._position = 0  # of the next record

    @property
    def open_runs(self) -> list[RunInfo]:
        """The runs told of whose terminal event has not come, in the order they were
        told of (parents before their children)."""
        return [run.info for run in self._runs.values()]

    def decode(self, record: Any) -> StreamEvent | None:
        """The event of ``record``; ``None`` for an identity record.

        Raises:
            CompactError: the record is malformed or names a run never told of.
        """
        position = self._position
        self._position += 1
        try:
            head = record[0]
            if type(head) is int:
                run = self._runs[head]
                if len(record) <= 4:
                    run.seq = seq = record[1]
                    payload = record[2]
                    if len(record) == 4:
                        payload = self._links.resolve(position, payload, record[3])
                    if not run.chat:
                        chunk = structure_any(payload)
                    elif type(payload) is str:
                        chunk = AssistantMessageChunk(content=payload, id=run.message_id)
                    elif type(payload) is list:
                        chunk = chunk_from_flat(payload)
                        run.message_id = chunk.id
                    else:
                        chunk = converter.structure(payload, AssistantMessageChunk)
                        run.message_id = chunk.id
                    return StreamEvent(event=run.stream_event, run=run.info, seq=seq, chunk=chunk)
                _, seq, name, raw, status, end_time, *extra = record
                if len(extra) > 2 and extra[2] is not None:
                    raw = self._links.resolve(position, raw, extra[2])
                data = converter.structure(raw, EventData)
                if extra and extra[0] is not None:  # (an error's type aside)
                    data = self._given(run, data, extra[:1])
                if status is not None:
                    del self._runs[head]
                    self._by_id.pop(run.info.run_id, None)
                    self._slots.ended(run.info.run_id)
                else:
                    run.seq = seq
                    run.input = data.input
                    info = run.info
                    self._slots.started(info.parent_ids, info.kind, info.name, head, data.input)
                return StreamEvent(
                    event=name,
                    run=run.info,
                    seq=seq,
                    data=data,
                    status=status,
                    end_time=end_time,
                )
            if head == IDENTITY:
                _, number, run_id, name, kind, parents, tags, metadata, start = record
                earlier = self._by_id.get(run_id)
                if earlier is not None:  # told again (a journal that goes on): one run
                    if self._runs.get(earlier.number) is earlier:
                        del self._runs[earlier.number]
                    self._runs[number] = earlier
                    earlier.number = number
                    return None
                self._runs[number] = self._by_id[run_id] = _Open(
                    RunInfo(
                        run_id=run_id,
                        name=name,
                        kind=kind,
                        parent_ids=tuple(parents),
                        tags=tuple(tags),
                        metadata=structure_any(metadata),
                        start_time=start,
                    ),
                    number,
                )
                return None
            if head == WHOLE:
                event = converter.structure(record[1], StreamEvent)
                known = self._by_id.get(event.run.run_id)
                if known is not None:  # custom events take their run's next seq too
                    known.seq = event.seq
                    if event.status is not None:  # an end written whole (a journal's)
                        del self._by_id[event.run.run_id]
                        del self._runs[known.number]
                        self._slots.ended(event.run.run_id)
                return event
        except CompactError:
            raise
        except KeyError as exc:
            raise CompactError(f"a record names run {exc.args[0]!r}, never told of") from None
        except (TypeError, ValueError, IndexError, SerializationError, BaseValidationError) as exc:
            raise CompactError(f"malformed record {record!r:.200}: {exc}") from None
        raise CompactError(f"unknown record {record!r:.200}")

    def _given(self, run: _Open, data: EventData, given: list[Any]) -> EventData:
        """``data`` with its input whole, of a record that gives it by reference."""
        (how,) = given
        if how == SAME_AS_START and type(how) is int:
            return evolve(data, input=run.input)
        if not isinstance(how, list) or len(how) != 2:
            raise CompactError(f"malformed reference {how!r:.200}")
        info = run.info
        base = self._slots.base(info.parent_ids, info.kind, info.name, how[0])
        return evolve(data, input=extended_input(data.input, base, how[1]))

    def abandon(self, error: str, end_time: float) -> list[StreamEvent]:
        """The stream broke off (its source died): an error event for every open run,
        children before their parents, each saying ``error``. The decoder forgets them."""
        events = [
            StreamEvent(
                event=f"on_{run.info.kind}_error",
                run=run.info,
                seq=run.seq + 1,
                data=EventData(input=run.input, error=error),
                status="error",
                end_time=end_time,
            )
            for run in reversed(self._runs.values())
        ]
        self._runs.clear()
        self._by_id.clear()
        self._slots.clear()
        return events
