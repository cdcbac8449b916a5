"""The public face: the runtime's ways to run and watch things, the streams (events,
chunks, the run log, every run of a runtime), a plain call, and ``open_runtime``.

The streams and ``Runtime`` live together because each needs the other: a
``Runtime``'s methods make streams, and a stream opened outside any runtime opens a
``Runtime`` of its own."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Final, TypeVar, Unpack, final

import trio

from protocol import StreamEvent, TypedEvent

from ._checks import flag, positive_int, require_trio
from ._context import Resume, RunConfig, current_runtime_var
from ._core import (
    SCHEDULE_LAST,
    Bindable,
    Envelope,
    Supervisor,
    cancel_point,
    open_supervisor,
    schedule_point,
)
from ._dropping import DroppingChannel
from ._errors import (
    NoStoreError,
    RuntimeClosedError,
    StreamUsageError,
    find_exit,
    is_exit,
)
from ._event_channel import EventChannel
from ._filters import EventFilter
from ._hosted import ChunkReader, HostedStream, RunReader
from ._ids import new_run_id
from ._journal import Journal, UnknownRunError
from ._open_store import open_store
from ._options import (
    EventStreamOptions,
    LogOptions,
    RunOptions,
    StreamOptions,
    WatchOptions,
    parse_options,
)
from ._reply import Reply
from ._run_log import RunLog, RunLogBuilder, RunLogPatch, apply_ops, copy_state
from ._store import RunRecord, RunState, Store
from ._stored import JoinedStream, Threads
from ._subscribers import HandlerError
from ._tracer import CLOSE_GRACE_SECONDS, DEFAULT_TRACER_CAPACITY, Subscribe, Subscription

DEFAULT_STREAM_CAPACITY: Final = 1024
EVENT_VERSIONS: Final = ("v1", "v2")
"""The ``version`` values ``astream_events`` accepts, as LangChain's does."""

OutT = TypeVar("OutT")
ChunkT = TypeVar("ChunkT")


class EventStream(RunReader):
    """The events of one run's tree, in order: ``async with ... as s: async for e in s``.

    Leaving the ``async with`` block (or breaking out of the loop and then leaving it)
    cancels the run if it is still going. When the run failed, iteration ends by
    raising the run's own exception (the one the performer raised, unwrapped).
    After iteration :attr:`output` holds the run's output.

    Its reads are :class:`RunReader`'s: every read is a cancel point, and a schedule
    point at least once every ``SCHEDULE_EVERY`` (64) reads (its docstring says why).
    """

    # Slots: one of these is open for every run being watched, thousands at once.
    __slots__ = (
        "_capacity",
        "_claimed",
        "_config",
        "_envelope",
        "_filter",
        "_message",
        "_performer",
        "_runtime",
        "_stack",
    )

    def __init__(
        self,
        target: Bindable[Any],
        input: Any,
        config: RunConfig,
        *,
        event_filter: EventFilter | None,
        capacity: int,
        chunks_only: bool = False,
        runtime: Runtime | None = None,
    ) -> None:
        if not isinstance(target, Bindable):
            raise TypeError(
                f"expected a performer (agent, model, tool), got {type(target).__name__}"
            )
        positive_int(capacity, "capacity")
        self._performer, bound = target.bind()
        config = bound.merged(config)
        run_id = config.run_id
        if run_id is None:  # the stream names its run before it starts
            run_id = new_run_id()
            config = config.with_run_id(run_id)
        self._config = config
        self._message = _request(self._performer, input, self._config)
        self._filter = event_filter
        self._capacity = capacity
        self._chunks_only = chunks_only
        self._runtime = runtime
        self._stack: AsyncExitStack | None = None  # only for a runtime of its own
        self._reply: Reply | None = None
        self._envelope: Envelope | None = None
        self._rx: EventChannel | None = None
        self._claimed = False
        self._journaled = False  # whether its end must be durable before it is read
        self._held: StreamEvent | None = None  # a terminal event ready() kept back
        self._to_yield = SCHEDULE_LAST  # reads left before the next schedule point
        self.run_id: str = run_id
        """The id of the run this stream watches."""

    @property
    def handler_errors(self) -> list[HandlerError]:
        """What this run's callback handlers raised (each also logged)."""
        envelope = self._envelope
        if envelope is None or envelope.attachment is None:
            return []
        return envelope.attachment.errors

    async def __aenter__(self) -> EventStream:
        require_trio("a Troupe stream")
        if self._reply is not None:
            raise StreamUsageError("a stream can be entered only once")
        runtime = self._runtime or current_runtime()
        if runtime is None:
            self._stack = AsyncExitStack()
            runtime = await self._stack.enter_async_context(open_runtime())
        try:
            self._runtime = runtime
            self._rx = EventChannel(self._capacity)
            watcher = Subscription(
                self._rx, run_id=self.run_id, filter=self._filter, chunks_only=self._chunks_only
            )
            self._reply = reply = Reply()
            self._envelope = envelope = await runtime.start(
                self._performer, self._message, self._config, reply, watcher
            )
            self._claimed = True
            self._journaled = runtime.journal is not None and envelope.parent is None
            if reply.settled and not reply.taken:
                envelope.close_subscriptions()  # cancelled while it was being delivered
        except BaseException:
            self._reply = None
            self._release()
            if self._stack is not None:
                await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = self._stack
        if stack is None:
            await self._leave(exc)
            return
        # A runtime of its own: closing it lets its handlers see the end too. It is told
        # what leaves the block, so that an exit it raises (a handler's) is weighed
        # against that, as open_runtime() weighs its body's exception.
        try:
            await self._leave(exc)
        except BaseException as failure:
            await stack.__aexit__(type(failure), failure, failure.__traceback__)
            raise
        await stack.__aexit__(exc_type, exc, tb)

    async def _leave(self, exc: BaseException | None) -> None:
        """Cancel the run if it is still going and wait until it has ended. An exit the
        run ended with (``KeyboardInterrupt`` and the like) that the block did not see
        is raised here: an exit is never lost, also when the consumer left early."""
        envelope = self._envelope
        assert self._rx is not None and self._reply is not None and envelope is not None
        self._rx.close_receiver()
        reply = self._reply
        if not reply.settled:
            reply.abandon()
            with trio.CancelScope(shield=True):
                await reply.wait_settled()
        if not reply.taken:
            envelope.close_subscriptions()  # the run never started
        self._release()
        error = reply.error
        if error is not None and is_exit(error) and find_exit(exc, error) is not exc:
            raise error  # at once: the handlers see the run's end as the runtime closes
        if envelope.attachment is not None and (
            exc is None or not (isinstance(exc, trio.Cancelled) or is_exit(exc))
        ):
            await envelope.attachment.wait()  # the handlers have seen the run's end

    def cancel(self) -> None:
        """Cancel the run, and go on reading: the events still on their way arrive,
        ending with the run's ``cancelled`` terminal event, and then iteration raises
        :class:`RunCancelledError` (for an edge that must tell its client how the run
        ended, such as a server shutting down). A run that had not started yet (its
        request still waiting for its actor) never starts: the stream has no event at
        all, and iteration raises :class:`RunCancelledError` at once.

        Raises:
            StreamUsageError: the stream was not entered.
        """
        reply = self._reply
        if reply is None:
            raise StreamUsageError("enter the stream before cancelling its run")
        if not reply.settled and reply.abandon() and self._envelope is not None:
            self._envelope.close_subscriptions()  # it never started (else: see __aenter__)

    def _release(self) -> None:
        if self._claimed and self._runtime is not None and self._envelope is not None:
            self._claimed = False
            self._runtime.release(self._envelope)

    def __aiter__(self) -> EventStream:
        super().__aiter__()
        return self

    async def _wait_durable(self) -> None:
        """With a store: the run's end is journaled before its reader hears of it (a
        run that never started has none, but a resume's claim of it ends first)."""
        assert self._runtime is not None and self._envelope is not None
        await self._runtime.durable(self._envelope)
        self._journaled = False


class ChunkStream(EventStream, ChunkReader[ChunkT]):
    """The run's own output chunks (LangChain's ``astream``); for an agent, its steps.

    Generic in the chunk's type: a chat model's stream is a
    ``ChunkStream[AssistantMessageChunk]``, an agent's a ``ChunkStream[StepChunk]``.
    Its reads are checkpoints as :class:`EventStream`'s are.
    """

    __slots__ = ()

    def __aiter__(self) -> ChunkStream[ChunkT]:
        super().__aiter__()
        return self

    async def __aenter__(self) -> ChunkStream[ChunkT]:
        await super().__aenter__()
        return self


class WatchStream:
    """Every event of every run of a runtime, from subscription on (``Runtime.watch``).

    Iteration ends when the runtime closes (after the last terminal event) or when the
    ``async with`` block is left. With ``drop_oldest=True`` the stream never slows the
    runs: when it is full the oldest non-terminal event is dropped, and
    :attr:`dropped` counts them (terminal events are never dropped).

    Every read is a cancel point and yields to the scheduler at least once every
    ``SCHEDULE_EVERY`` reads, as :class:`EventStream`'s.
    """

    def __init__(
        self,
        runtime: Runtime,
        event_filter: EventFilter | None,
        capacity: int,
        drop_oldest: bool = False,
    ) -> None:
        positive_int(capacity, "capacity")
        flag(drop_oldest, "drop_oldest")
        self._runtime = runtime
        self._dropping: DroppingChannel | None = None
        if drop_oldest:
            self._dropping = DroppingChannel(capacity)
            self._rx: EventChannel = self._dropping
        else:
            self._rx = EventChannel(capacity)
        self._subscription = Subscription(self._rx, run_id=None, filter=event_filter)
        self._unyielded = 0  # events read since the last schedule point
        self._entered = False

    @property
    def dropped(self) -> int:
        """How many events were dropped to keep up (always 0 without ``drop_oldest``)."""
        return self._dropping.dropped if self._dropping is not None else 0

    async def __aenter__(self) -> WatchStream:
        require_trio("Runtime.watch")
        if self._entered:
            raise StreamUsageError("a stream can be entered only once")
        self._entered = True
        await self._runtime.send_to_tracer(Subscribe(self._subscription))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._rx.close_receiver()

    def __aiter__(self) -> WatchStream:
        if not self._entered:
            raise StreamUsageError("enter the stream first: `async with rt.watch() as events:`")
        return self

    async def __anext__(self) -> TypedEvent:
        await cancel_point()
        rx = self._rx
        try:
            event = rx.take()
            if event is None:
                self._unyielded = 0
                while event is None:  # rx.receive(), a frame less for each waiting reader
                    await rx.parked()  # the checkpoint
                    event = rx.take()
            elif self._unyielded < SCHEDULE_LAST:
                self._unyielded += 1
            else:
                self._unyielded = 0
                await schedule_point()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        return event  # type: ignore[return-value]  # each event is one of TypedEvent's


def watch(runtime: Runtime, **options: Unpack[WatchOptions]) -> WatchStream:
    """Subscribe to the events of every run of ``runtime`` (see :meth:`Runtime.watch`)."""
    parsed = parse_options("watch", WatchOptions, options)
    return WatchStream(
        runtime,
        parsed.event_filter,
        parsed.settings.get("capacity", DEFAULT_STREAM_CAPACITY),
        parsed.settings.get("drop_oldest", False),
    )


def stream_events(
    target: Bindable[Any],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None = None,
    **options: Unpack[EventStreamOptions],
) -> EventStream:
    """Run ``target`` on ``input`` and stream every event of the run's tree.

    ``async with stream_events(agent, "question") as events: async for e in events:``.
    Options: the run's settings (``run_name``, ``tags``, ``metadata``, ``run_id``,
    ``callbacks``, ``timeout``), LangChain's ``include_*``/``exclude_*`` filters, and
    ``capacity``. Uses the current runtime, or opens one for this run.

    Raises:
        TypeError, ValueError: bad input, config, options or filters (at the call).
    """
    return event_stream("stream_events", target, input, config, options)


def event_stream(
    where: str,
    target: Bindable[Any],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any],
    runtime: Runtime | None = None,
) -> EventStream:
    """:func:`stream_events` in ``runtime`` (``None``: the current one, or one of its
    own); ``where`` names the call in errors."""
    parsed = parse_options(where, EventStreamOptions, options, config)
    check_version(where, parsed.settings)
    return EventStream(
        target,
        input,
        parsed.config,
        event_filter=parsed.event_filter,
        capacity=parsed.settings.get("capacity", DEFAULT_STREAM_CAPACITY),
        runtime=runtime,
    )


def check_version(where: str, settings: Mapping[str, Any]) -> None:
    """Refuse a LangChain ``version`` other than ``"v1"`` or ``"v2"``, naming the call."""
    version = settings.get("version", "v2")
    if version not in EVENT_VERSIONS:
        raise ValueError(
            f"{where}(): version must be one of {', '.join(map(repr, EVENT_VERSIONS))} "
            f"(both give Troupe's events, in LangChain's v2 shape), got {version!r}"
        )


def stream(
    target: Bindable[Any],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None = None,
    **options: Unpack[StreamOptions],
) -> ChunkStream[Any]:
    """Run ``target`` on ``input`` and stream its own output chunks (``astream``)."""
    return chunk_stream("stream", target, input, config, options)


def chunk_stream(
    where: str,
    target: Bindable[Any],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any],
    runtime: Runtime | None = None,
) -> ChunkStream[Any]:
    """:func:`stream` in ``runtime`` (``None``: the current one, or one of its own)."""
    parsed = parse_options(where, StreamOptions, options, config)
    return ChunkStream(
        target,
        input,
        parsed.config,
        event_filter=None,
        capacity=parsed.settings.get("capacity", DEFAULT_STREAM_CAPACITY),
        chunks_only=True,
        runtime=runtime,
    )


async def invoke(
    target: Bindable[OutT],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None = None,
    **options: Unpack[RunOptions],
) -> OutT:
    """Run ``target`` on ``input`` and return its output (``ainvoke``).

    Raises:
        Exception: whatever the run raised (its own exception, unwrapped).
    """
    return await invoke_in(None, "invoke", target, input, config, options)


async def invoke_in(
    runtime: Runtime | None,
    where: str,
    target: Bindable[OutT],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> OutT:
    """:func:`invoke` in ``runtime`` (``None``: the current one, or one of its own)."""
    require_trio(where)
    if not isinstance(target, Bindable):
        raise TypeError(f"expected a performer (agent, model, tool), got {type(target).__name__}")
    performer, _ = target.bind()
    made = parse_options(where, RunOptions, options, config).config
    message = _request(performer, input, made)
    runtime = runtime or current_runtime()
    if runtime is None:
        async with open_runtime() as runtime:
            return await runtime.request(target, message, made)
    return await runtime.request(target, message, made)


def _request(performer: Any, input: Any, config: RunConfig) -> Any:
    """The request ``input`` makes, checked now; none for a run that resumes a paused
    one (it takes the paused run's).

    Raises:
        TypeError: the performer cannot take ``input``; or ``input`` given beside
            ``resume``.
    """
    if config.resume is None:
        return performer.coerce_input(input)
    if input is not None:
        raise TypeError("a run that resumes a paused one takes the paused run's input: pass None")
    return None


class RunLogStream:
    """``async with x.astream_log(input) as log: async for patch in log:``.

    Yields :class:`RunLogPatch` (``diff=True``, the default) or, with ``diff=False``,
    :class:`RunLog` whose ``state`` is the whole state so far (a fresh copy of the
    containers each time; the run's objects inside are shared).

    Every read is a cancel point and yields to the scheduler at least once every
    ``SCHEDULE_EVERY`` reads of the run's events, as :class:`EventStream`'s.
    """

    def __init__(
        self,
        events: EventStream | HostedStream,
        event_filter: EventFilter | None,
        diff: bool,
        *,
        streamed_output_list: bool = True,
    ) -> None:
        self._events = events
        self._builder = RunLogBuilder(
            events.run_id, event_filter, streamed_output_list=streamed_output_list
        )
        self._diff = diff
        self._state: Any = None
        self._entered = False

    @property
    def run_id(self) -> str:
        """The id of the run this log follows."""
        return self._events.run_id

    @property
    def output(self) -> Any:
        """The run's output once it has ended well."""
        return self._events.output

    async def __aenter__(self) -> RunLogStream:
        await self._events.__aenter__()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._events.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> RunLogStream:
        if not self._entered:
            raise StreamUsageError(
                "enter the stream first: `async with x.astream_log(...) as log: "
                "async for patch in log: ...`"
            )
        return self

    async def __anext__(self) -> RunLogPatch:
        while True:
            event = await self._events.__anext__()
            ops = self._builder.ops(event)
            if not ops:
                continue
            if self._diff:
                return RunLogPatch(tuple(ops))
            self._state = apply_ops(self._state, ops)
            return RunLog(tuple(ops), copy_state(self._state))


def stream_log(
    target: Bindable[Any],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None = None,
    **options: Unpack[LogOptions],
) -> RunLogStream:
    """Run ``target`` on ``input`` and stream the run log (LangChain's ``astream_log``).

    Options: the run's settings, ``diff`` (default ``True``; ``False`` yields the whole
    state each time), ``with_streamed_output_list`` (default ``True``; ``False`` leaves
    the root's chunks out of ``/streamed_output``), ``capacity``, and the
    ``include_*``/``exclude_*`` filters, which choose the descendants that appear under
    ``logs`` (the root is always there). As in LangChain, ``/final_output`` is the
    root's chunks added up as they stream (its output, if it streams none), and chat
    models are logged with type ``llm``. Uses the current runtime, or opens one.

    Raises:
        TypeError, ValueError: bad input, config, options or filters (at the call).
    """
    return log_stream("stream_log", target, input, config, options)


def log_stream(
    where: str,
    target: Bindable[Any],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any],
    runtime: Runtime | None = None,
) -> RunLogStream:
    """:func:`stream_log` in ``runtime`` (``None``: the current one, or one of its own)."""
    parsed = parse_options(where, LogOptions, options, config)
    check_version(where, parsed.settings)  # LogOptions has astream_events' options
    capacity = parsed.settings.get("capacity", DEFAULT_STREAM_CAPACITY)
    diff = flag(parsed.settings.get("diff", True), "diff")
    listed = flag(
        parsed.settings.get("with_streamed_output_list", True), "with_streamed_output_list"
    )
    events = EventStream(
        target, input, parsed.config, event_filter=None, capacity=capacity, runtime=runtime
    )
    return RunLogStream(events, parsed.event_filter, diff, streamed_output_list=listed)


def current_runtime() -> Runtime | None:
    """The runtime the calling code runs in (``open_runtime()`` body or an actor)."""
    runtime: Runtime | None = current_runtime_var.get()
    return runtime


@final
class Runtime(Supervisor):
    """A running set of actors. Get one from :func:`open_runtime`.

    Many runs may go on at once; each performer gets one actor, started the first time
    it is asked for something and stopped once the performer is gone.
    """

    def watch(self, **options: Unpack[WatchOptions]) -> WatchStream:
        """Watch every run of this runtime: ``async with rt.watch() as events:``.

        Takes the same ``include_*``/``exclude_*`` filters and ``capacity`` as
        :func:`stream_events`. Events of runs that started before the subscription are
        delivered from the subscription on (their starts are not replayed). A lossless
        watcher (the default) that stops reading stalls every run of the runtime: it
        asked to see every event. ``drop_oldest=True`` never stalls anything.
        """
        return watch(self, **options)

    # -- what a store keeps ---------------------------------------------------------
    @property
    def threads(self) -> Threads:
        """The conversations kept in the runtime's store (see :class:`Threads`).

        Raises:
            NoStoreError: the runtime has no store.
        """
        return Threads(self._journal_or_raise())

    def join(self, run_id: str, *, after: int = 0) -> JoinedStream:
        """Read a root run's events back from the store, finished or live, whichever
        process on the store ran it: ``async with rt.join(run_id) as events:``.
        ``after`` skips the events a client already has. Entering raises
        :class:`UnknownRunError` if the store holds no such run; a run of this runtime
        is waited for until its first write (its stream yields events before it).

        Raises:
            NoStoreError: the runtime has no store.
        """
        return JoinedStream(self._journal_or_raise(), self.start_service, run_id, after=after)

    async def get_run(self, run_id: str) -> RunRecord:
        """The store's record of a root run (status, times, thread, owner).

        Raises:
            NoStoreError: the runtime has no store.
            UnknownRunError: the store holds no such run.
        """
        journal = self._journal_or_raise()
        record = await trio.to_thread.run_sync(journal.store.get_run, run_id)
        if record is None:
            raise UnknownRunError(f"no run {run_id!r} in the store")
        return record

    async def resume(
        self,
        target: Bindable[OutT],
        paused: str,
        decisions: Mapping[str, Any],
        /,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[RunOptions],
    ) -> OutT:
        """Continue the paused run ``paused`` of ``target`` with a person's
        ``decisions``: a new run (on the paused run's thread, if any) that replays it
        from its journal (nothing it already did is done again) and goes on. Give a
        decision for each pending request, by its id: for an approval ``True`` or
        ``False``, a :class:`~protocol.Decision` (a reason for a denial, arguments to
        run the call with instead), or a dict of its fields; for an interrupt, the value
        ``interrupt()`` returns. Streams resume too:
        ``rt.astream_events(target, None, resume=Resume(run_id, decisions))``.

        Raises:
            NoStoreError: the runtime has no store.
            UnknownRunError: the store holds no such run.
            RunNotPausedError: it is not paused, or was resumed already.
            ValueError: a decision for a request the run does not wait for, or none
                for one it does.
            RunPaused: the new run paused in turn.
        """
        self._journal_or_raise()
        settings: dict[str, Any] = {**options, "resume": Resume(paused, dict(decisions))}
        return await self.ainvoke(target, None, config, **settings)

    async def list_runs(
        self,
        *,
        thread_id: str | None = None,
        status: RunState | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """The store's root runs, newest first, filtered by thread and status (read from
        a worker thread; a cancel point).

        Raises:
            NoStoreError: the runtime has no store.
        """
        store = self._journal_or_raise().store
        return await trio.to_thread.run_sync(
            lambda: store.list_runs(thread_id=thread_id, status=status, limit=limit)
        )

    async def delete_ended_before(self, cutoff: float) -> int:
        """Delete from the store the runs (with their journals) that ended before
        ``cutoff`` (seconds since the epoch), and the threads not updated since; how
        many runs went. For retention; runs in a worker thread (a cancel point).

        Raises:
            NoStoreError: the runtime has no store.
        """
        store = self._journal_or_raise().store
        return await trio.to_thread.run_sync(store.delete_ended_before, cutoff)

    async def cancel(self, run_id: str) -> bool:
        """Cancel the root run ``run_id``, whichever process on the store runs it (one
        in another process is cancelled as soon as it hears of it on PostgreSQL, within
        a quarter of a second on SQLite, when its journal next looks); ``False`` if it
        is not running. Its readers see its
        ``cancelled`` end.

        Raises:
            NoStoreError: the runtime has no store.
        """
        return await self._journal_or_raise().request_cancel(run_id)

    def _journal_or_raise(self) -> Journal:
        if self._journal is None:
            raise NoStoreError(
                "this runtime has no store: open it with open_runtime(store='sqlite:///runs.db')"
            )
        return self._journal

    # -- running performers in this runtime, by reference ----------------------------
    # (For code that holds the runtime rather than running inside it: an HTTP
    # server's request tasks, other threads. Nothing here opens a runtime of its own:
    # on a closed runtime each raises RuntimeClosedError.)

    def astream_events(
        self,
        target: Bindable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[EventStreamOptions],
    ) -> EventStream:
        """``target.astream_events(...)`` in this runtime."""
        return event_stream("Runtime.astream_events", target, input, config, options, self)

    def astream(
        self,
        target: Bindable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[StreamOptions],
    ) -> ChunkStream[Any]:
        """``target.astream(...)`` in this runtime."""
        return chunk_stream("Runtime.astream", target, input, config, options, self)

    def astream_log(
        self,
        target: Bindable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[LogOptions],
    ) -> RunLogStream:
        """``target.astream_log(...)`` in this runtime."""
        return log_stream("Runtime.astream_log", target, input, config, options, self)

    async def ainvoke(
        self,
        target: Bindable[OutT],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[RunOptions],
    ) -> OutT:
        """``await target.ainvoke(...)`` in this runtime.

        Raises:
            RuntimeClosedError: the runtime is closed.
            Exception: whatever the run raised.
        """
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        return await invoke_in(self, "Runtime.ainvoke", target, input, config, options)

    def invoke_from_thread(
        self,
        target: Bindable[OutT],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[RunOptions],
    ) -> OutT:
        """Run ``target`` in this runtime from another (non-trio) thread and wait for its
        output, e.g. from a worker thread of a sync web framework.

        Raises:
            RuntimeError: called from trio's own thread (use ``await rt.ainvoke``).
            RuntimeClosedError: the runtime is closed.
        """
        call = functools.partial(self.ainvoke, target, input, config, **options)
        try:
            return trio.from_thread.run(call, trio_token=self._token)
        except trio.RunFinishedError:
            raise RuntimeClosedError("the runtime is closed (its trio run has ended)") from None


def open_runtime(
    *,
    tracer_capacity: int = DEFAULT_TRACER_CAPACITY,
    callbacks: Iterable[Any] = (),
    close_grace: float = CLOSE_GRACE_SECONDS,
    store: Store | str | None = None,
    resume: Iterable[Bindable[Any]] = (),
) -> AbstractAsyncContextManager[Runtime]:
    """Open a runtime for the ``async with`` block: ``async with open_runtime() as rt:``.

    Inside the block (and inside every actor) the runtime is current, so
    ``agent.ainvoke(...)`` and the streams use it. On exit new requests are refused
    (:class:`RuntimeClosedError`, a :class:`RunCancelledError`), every actor is
    cancelled, every started run gets its terminal event, then the tracer drains and
    closes every stream. Closing is bounded: subscribers still busy ``close_grace``
    seconds later are cancelled (and that is logged and recorded).

    Errors: the block's own exception propagates unchanged (not wrapped in an
    ExceptionGroup). Tool and model errors never escape through here: they end their
    run with an error event and are raised by that run's stream or call. Only a
    failure of Troupe's own machinery is raised here, as :class:`ActorCrashedError`.
    An exit (``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, any
    ``BaseException`` that is not an ``Exception``) raised by a callback handler, or in
    Troupe's own tasks, stops the runtime as Ctrl-C in the block would: the block and
    every run are cancelled, every started run still ends with its terminal event, and
    the exit is raised here, as itself (a ``KeyboardInterrupt`` before any other).

    Args:
        tracer_capacity: the bound of the tracer's mailbox.
        callbacks: handlers that watch every run of the runtime.
        close_grace: seconds a closing runtime waits for subscribers to finish.
        store: where to journal every run (a :class:`Store`, or its URL:
            ``sqlite:///runs.db``, ``postgresql://user@host/db``). Each run's events are
            appended as they happen, a root run's caller hears of its end once its
            terminal event is durable, runs on a ``thread_id`` keep their conversation,
            and runs left open by a process that died are ended with an error event,
            or resumed (below).
        resume: with a store, the performers whose runs left open by a process that
            died this runtime resumes, by replay under their own ids (matched by
            name; a performer with ``resumable = False`` is not): the step in flight
            when the process died runs again, the steps journaled before it do not.

    Raises:
        ValueError: ``tracer_capacity`` is not a positive integer, or ``close_grace``
            is not a finite number of seconds >= 0.
        TypeError: a callback has no ``on_event``.
        StoreError: the store cannot be opened (one line naming it and the cause).
        ActorCrashedError: an actor loop failed.
    """
    performers = [_performer(target) for target in resume]
    if store is None:
        if performers:
            raise TypeError("open_runtime(resume=...) resumes runs from a store: give store=")
        return open_supervisor(
            Runtime, tracer_capacity=tracer_capacity, callbacks=callbacks, close_grace=close_grace
        )
    return _open_journaled(
        store,
        tracer_capacity=tracer_capacity,
        callbacks=callbacks,
        close_grace=close_grace,
        performers=performers,
    )


def _performer(target: Any) -> Any:
    if not isinstance(target, Bindable):
        raise TypeError(f"resume= takes performers, got {type(target).__name__}")
    return target.bind()[0]


@asynccontextmanager
async def _open_journaled(
    store: Store | str,
    *,
    tracer_capacity: int,
    callbacks: Iterable[Any],
    close_grace: float,
    performers: list[Any],
) -> AsyncIterator[Runtime]:
    require_trio("open_runtime")
    if not isinstance(store, Store):
        store = open_store(store)
    journal = Journal(store)
    await journal.open()
    try:
        async with open_supervisor(
            Runtime,
            tracer_capacity=tracer_capacity,
            callbacks=callbacks,
            close_grace=close_grace,
            journal=journal,
            performers=performers,
        ) as runtime:
            yield runtime
    finally:
        await journal.close_unserved()
