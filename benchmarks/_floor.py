"""The floor of a cat agent run: what the promises and the issues require, on raw trio.

Issue 29 asks 1,000 concurrent cat agent runs to reach 0.5x the raw pipelines' runs per
second, and "if a target is truly out of reach, measure the floor it stands on in the
same run". This module is that floor: one program on raw trio that does, for the
benchmark's cat agent run (``benchmarks._workload``: two tool turns, then an answer of
K tokens, a new chunk per token and a scheduler pass every 64, the seed's loop reading
every event), only what ``DESIGN.md``'s promises and issue 29 require of a run, written
as tightly as its author could. Each element, and what requires it:

- **The agent, the chat model, each tool and the stream's subscriber are trio tasks of
  their own** (DESIGN, "Every participant is an actor ... its own trio task"). A
  request is a task of its own started in the supervisor's nursery (DESIGN: "A
  supervisor nursery owns every actor"; one task per request, since 1,000 runs at once
  share one model and its requests must stream concurrently, and "parallel calls run
  concurrently"). The consumer's task is the stream's subscriber, reading its channel.
- **Messages over memory channels** (DESIGN, the shape): events go to the stream's
  bounded channel, replies to the requester's mailbox, a bounded channel per agent run.
  A request is handed over as its task's arguments, as Troupe's requests are (no
  mailbox hop per request): a message, not a shared object.
- **Typed, immutable messages, passed by reference** (DESIGN; promise 7): every message
  and event is a ``NamedTuple`` (typed, immutable, made in C); no copy, no JSON.
- **Each request its own cancel scope, so that its requester can stop it alone**
  (DESIGN, cancellation is structured; the brief of this floor). The requester makes
  the scope, the request's task runs in it, and a requester that is cancelled while it
  waits cancels what it asked for (the consumer leaving stops every task of the run).
- **Every read of the stream a cancel point, a schedule point at least every 64 reads
  or when it waits** (issue 29, trio's checkpoint rule; DESIGN).
- **Complete events** (promise 1): ``event``, ``name``, ``run_id``, ``parent_ids``
  (root first), ``tags``, ``metadata``, ``data`` on every event; end events repeat the
  start's identity and carry ``input`` and ``output``. The dict face the seed's loop
  reads (``event["data"]["chunk"].content``; DESIGN, the events stream) and the
  attributes. ``start_time`` and ``end_time`` (DESIGN: the tracer's events carry
  "timing, status").
- **Ordering** (promise 2): a per-run sequence number on every event (DESIGN: "per-run
  sequence numbers"); one start first, exactly one terminal event per started run, also
  on error and on cancellation (``status`` says which), a child inside its parent.
- **Token integrity** (promise 3): a model run's end output is the concatenation of its
  chunks' content; tool-call chunks assemble into the tool calls (their arguments'
  pieces joined and parsed).
- **Inheritance** (promise 4): tags and metadata of the root on every descendant; the
  run's identity travels with its request, and the agent's and each tool's task makes
  it current (a context variable) so that calls made inside a tool are its children.
- **Bounded channels, backpressure** (promise 5): ``send_nowait``, ``await send`` when
  full; terminal events are never dropped (a full channel is waited on, shielded: the
  reader answers, or has left and the send fails at once; promise 8).
- **Bad input gets a clear error** (promise 6): an unknown tool or arguments that are
  not the tool's are told to the model as a tool message; a tool's or a model's error
  ends its run with an error event and reaches its requester; an error stays inside
  its run (promise 9): no request task lets one out into the supervisor's nursery.
- **Run ids**: unique, a random prefix per process and a counter.

Left out as Troupe's choices, not requirements: a tracer task and its run tree
(Troupe's tracer is not woken when idle either; a run's identity travels in its
request, so the producer makes complete events itself), actor cells, replies other
than a channel, run handles, filters, a journal, replay, JSON Schema validation (a
check of the argument names stands for it), ``attrs`` classes and their dict view
(``NamedTuple`` is as typed and immutable, and cheaper to make and read), lazily made
event data. The floor's model hands its tokens over with trio's ``send_nowait``: it is
no API, so trio's checkpoint rule for public async functions does not reach it; a
model behind an async API, as Troupe's ``ChunkSink.send``, makes each send a cancel
point, and the row ``floor_checked`` (``cat_floor(checked_sends=True)``) is the floor
with that.

``python -m benchmarks._floor [RUNS] [ROUNDS]`` times ``RUNS`` runs at once (K=200) for
the raw pipelines, this floor and Troupe in one process, ``ROUNDS`` rounds alternating;
``--opcodes ROW`` counts Python opcodes per run by function (``raw``, ``floor`` or
``troupe``: 200 runs at once, ``sys.settrace``); ``--callgrind ROUNDS`` counts
instructions per run (300 runs at once less 100, under
callgrind, ``PYTHONHASHSEED=0``, trio's scheduler seeded per section); ``--sections
ROUNDS [SCALE]`` runs those sections outside callgrind.
"""

from __future__ import annotations

import contextvars
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import trio

from ._raw import raw_shaped
from ._timing import callgrind_sections, under_callgrind
from ._workload import answer_tokens, cat_agent, read_events, read_run

SCHEDULE_EVERY: Final = 64
"""A read of the stream is a schedule point at least this often (issue 29)."""
STREAM_CAPACITY: Final = 1024
"""The stream's bound (Troupe's ``DEFAULT_STREAM_CAPACITY``)."""
MAILBOX: Final = 8
"""The agent's mailbox bound: it has at most this many requests out at once."""
ARGUMENT_PIECE: Final = 8
"""A tool call's arguments stream in pieces of this many characters (as the scripted
model's do)."""

_new: Final = tuple.__new__
_checkpoint: Final = trio.lowlevel.checkpoint
_cancel_point: Final = trio.lowlevel.checkpoint_if_cancelled


def _repr(self: tuple[Any, ...]) -> str:
    return type(self).__name__ + tuple.__repr__(self)


class Data(NamedTuple):
    """An event's ``data``: ``input`` (start and terminal events), ``chunk`` (stream
    events), ``output`` (end), ``error`` (error)."""

    input: Any = None
    chunk: Any = None
    output: Any = None
    error: BaseException | None = None

    def __getitem__(self, key: str) -> Any:  # type: ignore[override]  # the dict face
        return getattr(self, key)


class Event(NamedTuple):
    """An event with the complete identity of its run (promise 1)."""

    event: str
    name: str
    run_id: str
    parent_ids: tuple[str, ...]
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    data: Data
    seq: int
    status: str | None
    start_time: float
    end_time: float | None

    def __getitem__(self, key: str) -> Any:  # type: ignore[override]  # the dict face
        return getattr(self, key)


# namedtuple's own repr formats with ``%``, which takes a tuple with a ``__getitem__``
# of its own for a mapping (and a NamedTuple's body takes no assignment)
Data.__repr__ = Event.__repr__ = _repr  # type: ignore[method-assign,assignment]


class Chunk(NamedTuple):
    """A piece of a model's message as it streams."""

    content: str
    tool_call_chunks: tuple[CallChunk, ...] = ()
    finish_reason: str | None = None


class CallChunk(NamedTuple):
    """A piece of a tool call; ``args`` pieces concatenate per ``position`` (OpenAI's
    ``index``, a name a tuple has already)."""

    position: int
    id: str | None
    name: str | None
    args: str


class ToolCall(NamedTuple):
    id: str
    name: str
    args: dict[str, Any]


class Message(NamedTuple):
    """A chat message: ``role`` ``user``, ``assistant`` or ``tool``."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


class Run(NamedTuple):
    """A run's identity, made by its requester and carried by its request (promise 4)."""

    name: str
    run_id: str
    parent_ids: tuple[str, ...]
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    start_time: float


current_run: Final = contextvars.ContextVar[Run | None]("current_run", default=None)
"""The run a task works for: a tool's nested calls find their parent here (promise 4;
each trio task has a context of its own, so setting it is the task's alone)."""

_PREFIX: Final = os.urandom(6).hex() + "-"
_ids: Final = itertools.count()


def child(parent: Run, name: str, tags: tuple[str, ...] = ()) -> Run:
    """A child run of ``parent``: a new id, the parent's ids and tags inherited."""
    return _new(
        Run,
        (
            name,
            _PREFIX + str(next(_ids)),
            (*parent.parent_ids, parent.run_id),
            parent.tags + tags if tags else parent.tags,
            parent.metadata,
            time.time(),
        ),
    )


def _event(kind: str, run: Run, seq: int, data: Data, status: str | None = None) -> Event:
    name, run_id, parent_ids, tags, metadata, start = run
    end = None if status is None else time.time()
    return _new(
        Event, (kind, name, run_id, parent_ids, tags, metadata, data, seq, status, start, end)
    )


async def _send(events: trio.MemorySendChannel[Event], event: Event) -> None:
    try:
        events.send_nowait(event)
    except trio.WouldBlock:
        await events.send(event)


async def _send_terminal(events: trio.MemorySendChannel[Event], event: Event) -> None:
    """A terminal event is never dropped: a full channel is waited on, shielded; the
    reader takes it, or has left and the send fails at once."""
    try:
        try:
            events.send_nowait(event)
        except trio.WouldBlock:
            with trio.CancelScope(shield=True):
                await events.send(event)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the reader left: no one to tell


def _status(error: BaseException) -> str:
    return "cancelled" if isinstance(error, trio.Cancelled) else "error"


class Model(NamedTuple):
    """A chat model: ``script`` says a turn's answer tokens, or its tool calls (each a
    name and its arguments' JSON); text streams a new chunk per token, a scheduler pass
    every ``yield_every`` tokens, as ``benchmarks._workload.NetworkLikeModel`` does."""

    name: str
    tags: tuple[str, ...]
    script: Callable[[Sequence[Message]], tuple[Sequence[str], Sequence[tuple[str, str]]]]
    yield_every: int
    checked_sends: bool = False


async def _model_request(
    model: Model,
    run: Run,
    scope: trio.CancelScope,
    messages: tuple[Message, ...],
    reply_to: trio.MemorySendChannel[tuple[int, Any]],
    index: int,
    events: trio.MemorySendChannel[Event],
) -> None:
    """One model request, in its own cancel scope: its events, its message replied."""
    seq = 1
    try:
        with scope:
            name, run_id, parent_ids, tags, metadata, start = run
            await _send(events, _event("on_chat_model_start", run, 0, Data(messages)))
            tokens, calls = model.script(messages)
            content = []
            every = model.yield_every
            checked = model.checked_sends
            left = SCHEDULE_EVERY
            kind = "on_chat_model_stream"
            for at, token in enumerate(tokens):
                if at % every == 0:
                    await _checkpoint()
                if checked:  # a send through an async API: a cancel point (issue 29)
                    left -= 1
                    if left:
                        await _cancel_point()
                    else:
                        left = SCHEDULE_EVERY
                        await _checkpoint()
                chunk = _new(Chunk, (token, (), None))
                content.append(chunk.content)
                data = _new(Data, (None, chunk, None, None))
                event = _new(
                    Event,
                    (kind, name, run_id, parent_ids, tags, metadata, data, seq, None, start, None),
                )
                seq += 1
                try:
                    events.send_nowait(event)
                except trio.WouldBlock:
                    await events.send(event)
            pieces: list[list[Any]] = []
            for at, (call_name, args) in enumerate(calls):
                head = Chunk("", (CallChunk(at, f"call_{run_id}_{at}", call_name, ""),))
                stream = [head] + [
                    Chunk("", (CallChunk(at, None, None, args[i : i + ARGUMENT_PIECE]),))
                    for i in range(0, len(args), ARGUMENT_PIECE)
                ]
                for chunk in stream:
                    for piece in chunk.tool_call_chunks:  # assembled as they arrive
                        if piece.position == len(pieces):
                            pieces.append([piece.id, piece.name, []])
                        pieces[piece.position][2].append(piece.args)
                    await _send(events, _event(kind, run, seq, Data(None, chunk)))
                    seq += 1
            finish = Chunk("", (), "tool_calls" if calls else "stop")
            await _send(events, _event(kind, run, seq, Data(None, finish)))
            seq += 1
            message = Message(
                "assistant",
                "".join(content),
                tuple(ToolCall(i, n, json.loads("".join(a))) for i, n, a in pieces),
            )
            await _send_terminal(
                events, _event("on_chat_model_end", run, seq, Data(messages, None, message), "ok")
            )
            reply_to.send_nowait((index, message))
            return
    except (Exception, trio.Cancelled) as error:
        await _send_terminal(
            events,
            _event("on_chat_model_error", run, seq, Data(messages, error=error), _status(error)),
        )
        if isinstance(error, trio.Cancelled):
            reply_to.send_nowait((index, None))  # every path replies (see _ask)
            raise
        reply_to.send_nowait((index, error))  # the requester hears; the error stays here
        return
    # stopped by its requester (its own scope): the run's terminal event says so
    await _send_terminal(
        events, _event("on_chat_model_error", run, seq, Data(messages), "cancelled")
    )
    reply_to.send_nowait((index, None))


class Tool(NamedTuple):
    """A tool: an async function and the names of its arguments."""

    name: str
    function: Callable[..., Awaitable[str]]
    arguments: frozenset[str]


async def _tool_request(
    tool: Tool,
    run: Run,
    scope: trio.CancelScope,
    call: ToolCall,
    reply_to: trio.MemorySendChannel[tuple[int, Any]],
    index: int,
    events: trio.MemorySendChannel[Event],
) -> None:
    """One tool call, in its own cancel scope: its events, its result replied."""
    inputs = call.args
    try:
        with scope:
            current_run.set(run)
            await _send(events, _event("on_tool_start", run, 0, Data(inputs)))
            output = await tool.function(**inputs)
            await _send_terminal(
                events, _event("on_tool_end", run, 1, Data(inputs, None, output), "ok")
            )
            reply_to.send_nowait((index, Message("tool", output, (), call.id, tool.name)))
            return
    except (Exception, trio.Cancelled) as error:
        await _send_terminal(
            events, _event("on_tool_error", run, 1, Data(inputs, error=error), _status(error))
        )
        if isinstance(error, trio.Cancelled):
            reply_to.send_nowait((index, None))  # every path replies (see _ask)
            raise
        told = Message("tool", f"Error: {type(error).__name__}: {error}", (), call.id, tool.name)
        reply_to.send_nowait((index, told))  # the model is told (promise 6)
        return
    await _send_terminal(events, _event("on_tool_error", run, 1, Data(inputs), "cancelled"))
    reply_to.send_nowait((index, None))


class Agent(NamedTuple):
    """The OpenAI tool-calling loop: a model, tools, ``max_iterations``, a run name."""

    name: str
    model: Model
    tools: Mapping[str, Tool]
    max_iterations: int = 15


async def _ask(
    requests: list[trio.CancelScope],
    mailbox: trio.MemoryReceiveChannel[tuple[int, Any]],
    replies: list[Any],
) -> list[Any]:
    """``replies`` with the replies to the requests just started (their scopes in
    ``requests``) at their indexes; cancelled while waiting, it cancels them."""
    count = len(requests)
    got = 0
    try:
        while got < count:
            index, reply = await mailbox.receive()
            replies[index] = reply
            got += 1
    except BaseException:
        for scope in requests:
            scope.cancel()
        # A child ends before its parent (promise 2): each request replies on every
        # path, so this shielded wait has its answer (promise 8).
        with trio.CancelScope(shield=True):
            while got < count:
                await mailbox.receive()
                got += 1
        raise
    return replies


async def _agent_run(
    agent: Agent,
    run: Run,
    scope: trio.CancelScope,
    question: str,
    events: trio.MemorySendChannel[Event],
    supervisor: trio.Nursery,
) -> None:
    """An agent's run, in its own cancel scope: the model asked, the tools it calls
    called (concurrently), until the model answers; then the stream closed."""
    seq = 1
    inputs = {"input": question}
    try:
        with scope:
            current_run.set(run)
            await _send(events, _event("on_chain_start", run, 0, Data(inputs)))
            reply_to, mailbox = trio.open_memory_channel[tuple[int, Any]](MAILBOX)
            messages: tuple[Message, ...] = (Message("user", question),)
            model = agent.model
            kind = "on_chain_stream"
            for _ in range(agent.max_iterations):
                request = trio.CancelScope()
                supervisor.start_soon(
                    _model_request,
                    model,
                    child(run, model.name, model.tags),
                    request,
                    messages,
                    reply_to,
                    0,
                    events,
                )
                (message,) = await _ask([request], mailbox, [None])
                if message is None:
                    raise RuntimeError("the model's request was cancelled")
                if isinstance(message, BaseException):
                    raise message
                messages = (*messages, message)
                await _send(events, _event(kind, run, seq, Data(None, message)))
                seq += 1
                if not message.tool_calls:
                    break
                for at in range(0, len(message.tool_calls), MAILBOX):
                    calls = message.tool_calls[at : at + MAILBOX]
                    told: list[Any] = [None] * len(calls)
                    asked: list[trio.CancelScope] = []
                    for index, call in enumerate(calls):
                        tool = agent.tools.get(call.name)
                        if tool is None or call.args.keys() != tool.arguments:
                            told[index] = Message(  # the model is told (promise 6)
                                "tool", f"Error: bad call of {call.name!r}", (), call.id, call.name
                            )
                            continue
                        request = trio.CancelScope()
                        asked.append(request)
                        supervisor.start_soon(
                            _tool_request,
                            tool,
                            child(run, tool.name),
                            request,
                            call,
                            reply_to,
                            index,
                            events,
                        )
                    results = tuple(await _ask(asked, mailbox, told))
                    messages = (*messages, *results)
                    await _send(events, _event(kind, run, seq, Data(None, results)))
                    seq += 1
            else:
                raise RuntimeError(f"agent stopped after {agent.max_iterations} iterations")
            output = {"output": messages[-1].content}
            await _send_terminal(
                events, _event("on_chain_end", run, seq, Data(inputs, None, output), "ok")
            )
            events.close()
            return
    except (Exception, trio.Cancelled) as error:
        await _send_terminal(
            events, _event("on_chain_error", run, seq, Data(inputs, error=error), _status(error))
        )
        events.close()
        if isinstance(error, trio.Cancelled):
            raise
        return
    await _send_terminal(events, _event("on_chain_error", run, seq, Data(inputs), "cancelled"))
    events.close()


class EventStream:
    """``async with stream_events(...) as events: async for event in events``: every
    read a cancel point, a schedule point every :data:`SCHEDULE_EVERY` reads and
    whenever it waits; leaving the block stops the run."""

    __slots__ = ("_agent", "_left", "_question", "_receive", "_scope", "_supervisor")

    def __init__(self, supervisor: trio.Nursery, agent: Agent, question: str) -> None:
        self._supervisor = supervisor
        self._agent = agent
        self._question = question
        self._scope = trio.CancelScope()
        self._left = SCHEDULE_EVERY

    async def __aenter__(self) -> EventStream:
        send, self._receive = trio.open_memory_channel[Event](STREAM_CAPACITY)
        root = Run(self._agent.name, _PREFIX + str(next(_ids)), (), (), {}, time.time())
        self._supervisor.start_soon(
            _agent_run, self._agent, root, self._scope, self._question, send, self._supervisor
        )
        await _cancel_point()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._scope.cancel()
        self._receive.close()

    def cancel(self) -> None:
        """Stop the run; its terminal events are still to be read."""
        self._scope.cancel()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        left = self._left - 1
        if left:
            self._left = left
            await _cancel_point()
        else:
            self._left = SCHEDULE_EVERY
            await _checkpoint()
        try:
            return self._receive.receive_nowait()
        except trio.WouldBlock:
            self._left = SCHEDULE_EVERY
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                raise StopAsyncIteration from None
        except trio.EndOfChannel:
            await _checkpoint()  # the stream's end ends a batch: a schedule point
            raise StopAsyncIteration from None


async def where_cat_is_hiding() -> str:
    """Where is the cat hiding right now?"""
    return "on the shelf"


async def get_items(place: str) -> str:
    """Use this tool to look up which items are in the given place."""
    return "books, penciles and pictures" if "shelf" in place else "cat snacks"


def cat_floor(k: int, *, yield_every: int = 64, checked_sends: bool = False) -> Agent:
    """The cat agent of ``benchmarks._workload``, on this floor: two tool turns, then
    an answer of ``k`` tokens. With ``checked_sends`` each answer token is handed over
    as through an async API of the model's, which trio's checkpoint rule makes a cancel
    point (and a schedule point every :data:`SCHEDULE_EVERY`), as Troupe's
    ``ChunkSink.send`` is: not the floor (the floor's model is no API), a row beside it."""
    tokens = answer_tokens(k)
    first = (("where_cat_is_hiding", "{}"),)
    second = (("get_items", json.dumps({"place": "shelf"})),)

    def script(messages: Sequence[Message]) -> tuple[Sequence[str], Sequence[tuple[str, str]]]:
        done = {m.name for m in messages if m.role == "tool"}
        if "where_cat_is_hiding" not in done:
            return (), first
        if "get_items" not in done:
            return (), second
        return tokens, ()

    model = Model("ScriptedChatModel", ("agent_llm",), script, yield_every, checked_sends)
    tools = {
        "where_cat_is_hiding": Tool("where_cat_is_hiding", where_cat_is_hiding, frozenset()),
        "get_items": Tool("get_items", get_items, frozenset({"place"})),
    }
    return Agent("Agent", model, tools)


QUESTION: Final = "where is the cat hiding? what items are in that location?"


async def read_floor_run(supervisor: trio.Nursery, agent: Agent) -> int:
    """One floor run read as the seed's loop reads it (``read_events``)."""
    seen = 0
    async with EventStream(supervisor, agent, QUESTION) as events:
        async for event in events:
            seen += read_events(event)  # type: ignore[arg-type]  # the same dict face
    return seen


Runner = Callable[[], Awaitable[object]]


async def _at_once(n: int, run: Runner) -> float:
    """The seconds ``n`` runs at once take."""
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(run)
    return time.perf_counter() - start


def _runners(supervisor: trio.Nursery, k: int, yield_every: int) -> dict[str, Runner]:
    """One run of each row: the raw pipeline (the limit), the floor, Troupe."""
    floor = cat_floor(k, yield_every=yield_every)
    checked = cat_floor(k, yield_every=yield_every, checked_sends=True)
    agent = cat_agent(k, network_like=True, yield_every=yield_every)

    async def raw() -> int:
        return await raw_shaped(k, yield_every=yield_every, fresh=True, read=True)

    async def on_floor() -> int:
        return await read_floor_run(supervisor, floor)

    async def floor_checked() -> int:
        return await read_floor_run(supervisor, checked)

    async def troupe() -> int:
        return await read_run(agent)

    return {"raw": raw, "floor": on_floor, "floor_checked": floor_checked, "troupe": troupe}


async def wall_clock(n: int, k: int, rounds: int, *, yield_every: int = 64) -> dict[str, Any]:
    """``n`` runs at once of each row, ``rounds`` rounds in turn in this process: runs
    per second (medians), and the ratios (:data:`RATIOS`: floor ÷ raw, Troupe ÷
    floor, ...)."""
    from runtime import open_runtime

    async with open_runtime(), trio.open_nursery() as supervisor:
        runners = _runners(supervisor, k, yield_every)
        seconds: dict[str, list[float]] = {name: [] for name in runners}
        for run in runners.values():
            await run()  # warm-up
        for _ in range(rounds):
            for name, run in runners.items():
                gc.collect()
                seconds[name].append(await _at_once(n, run))
    rate = {name: n / statistics.median(each) for name, each in seconds.items()}
    ratios = {f"{row}_over_{base}": rate[row] / rate[base] for row, base in RATIOS}
    return {"runs": n, "tokens": k, "rounds": rounds, "runs_per_second": rate} | ratios


ROWS: Final = ("raw", "floor", "floor_checked", "troupe")
SECTIONS: Final = ((300, 200), (100, 200), (300, 1), (100, 1))
"""Each counted section: runs at once and the answer's tokens; a row's runs cost per
run the difference of a pair divided by 200."""


async def _sections(rounds: int, scale: int, rows: Sequence[str] = ROWS) -> None:
    from trio._core import _run  # its scheduler's random batches, seeded per section

    from runtime import open_runtime

    async with open_runtime(), trio.open_nursery() as supervisor:
        runners = {k: _runners(supervisor, k, 64) for k in (1, 200)}
        for by_row in runners.values():  # warm-up
            for run in by_row.values():
                await _at_once(max(1, 20 // scale), run)
        for _ in range(rounds):
            for row in rows:
                for count, k in SECTIONS:
                    gc.collect()
                    _run._r.seed(0)
                    os.getppid()  # callgrind: zero the counts
                    await _at_once(max(1, count // scale), runners[k][row])
                    os.getpgrp()  # callgrind: dump them


RATIOS: Final = (
    ("floor", "raw"),
    ("floor_checked", "raw"),
    ("troupe", "floor"),
    ("troupe", "floor_checked"),
    ("troupe", "raw"),
)
"""The ratios of runs per second at K=200 reported (by instructions: the inverse)."""


def read_counts(counted: Sequence[int], rounds: int, rows: Sequence[str] = ROWS) -> dict[str, Any]:
    """Instructions per run of each row at K=200 and K=1, from the sections' counts
    in the order :func:`_sections` ran them, and the ratios (by instructions, runs per
    second are their inverse)."""
    per_round: list[dict[str, dict[str, float]]] = []
    at = 0
    for _ in range(rounds):
        got: dict[str, dict[str, float]] = {}
        for row in rows:
            s = counted[at : at + len(SECTIONS)]
            at += len(SECTIONS)
            got[row] = {"K200": (s[0] - s[1]) / 200, "K1": (s[2] - s[3]) / 200}
        per_round.append(got)
    assert at == len(counted), (at, len(counted))
    median = {
        row: {k: statistics.median(r[row][k] for r in per_round) for k in ("K200", "K1")}
        for row in rows
    }
    ratios = {
        f"{row}_over_{base}": median[base]["K200"] / median[row]["K200"]
        for row, base in RATIOS
        if row in median and base in median
    }
    return {"per_run": median, "rounds": per_round} | ratios


def instructions(rounds: int, rows: Sequence[str] = ROWS) -> dict[str, Any]:
    """The sections under callgrind, ``rounds`` rounds (see the module)."""
    with tempfile.TemporaryDirectory() as folder:
        prefix = f"{folder}/cg"
        argv = ["-m", "benchmarks._floor", "--sections", str(rounds), "1", ",".join(rows)]
        under_callgrind(prefix, argv)
        return read_counts(callgrind_sections(prefix), rounds, rows)


def opcodes(row: str, runs: int = 200, k: int = 200) -> dict[str, float]:
    """Python opcodes per run of ``row`` by function (``file:line name``), the largest
    first: ``runs`` runs at once (``sys.settrace`` with opcode events, outside
    callgrind), divided by ``runs``."""
    import collections

    from trio._core import _run

    from runtime import open_runtime

    counting: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            name = f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_firstlineno} {code.co_name}"
            counting[name] += 1
        return tracer

    async def count() -> None:
        async with open_runtime(), trio.open_nursery() as supervisor:
            run = _runners(supervisor, k, 64)[row]
            await _at_once(10, run)  # warm-up
            gc.collect()
            _run._r.seed(0)
            sys.settrace(tracer)
            await _at_once(runs, run)
            sys.settrace(None)

    trio.run(count)
    ordered = sorted(counting.items(), key=lambda item: -item[1])
    return {name: round(n / runs, 1) for name, n in ordered if n / runs >= 0.5}


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["--opcodes"]:
        got = opcodes(argv[1] if len(argv) > 1 else "troupe")
        print(json.dumps({"total": round(sum(got.values())), "by_function": got}, indent=2))
        return
    if argv[:1] == ["--sections"]:
        scale = int(argv[2]) if len(argv) > 2 else 1
        trio.run(_sections, int(argv[1]), scale, argv[3].split(",") if len(argv) > 3 else ROWS)
        return
    if argv[:1] == ["--callgrind"]:
        print(json.dumps(instructions(int(argv[1]) if len(argv) > 1 else 1), indent=2))
        return
    runs = int(argv[0]) if argv else 1_000
    rounds = int(argv[1]) if len(argv) > 1 else 3
    print(json.dumps(trio.run(wall_clock, runs, 200, rounds), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
