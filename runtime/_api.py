"""The public ways to run something and watch it: events, chunks, a plain call."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Generator, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, Unpack, final

import attrs
import trio

from protocol import CustomEventDispatched, SerializationError, StreamEvent, TypedEvent, to_json

from ._checks import flag, positive_int, require_trio
from ._context import RunConfig, current_run_var, unwatched, with_root_metadata
from ._dropping import DroppingChannel
from ._errors import NoRuntimeError, StreamUsageError, find_exit, is_exit
from ._event_channel import EventChannel
from ._filters import EventFilter
from ._ids import new_run_id
from ._options import (
    EventStreamOptions,
    RunOptions,
    StreamOptions,
    WatchOptions,
    parse_options,
)
from ._performer import Runnable
from ._reply import Reply
from ._runtime import Runtime, current_runtime, open_runtime
from ._subscribers import Attachment, HandlerError
from ._tracer import Subscribe, Subscription

DEFAULT_STREAM_CAPACITY: Final = 1024
EVENT_VERSIONS: Final = ("v1", "v2")
"""The ``version`` values ``astream_events`` accepts, as LangChain's does."""

OutT = TypeVar("OutT")
ChunkT = TypeVar("ChunkT")


class EventStream:
    """The events of one run's tree, in order: ``async with ... as s: async for e in s``.

    Leaving the ``async with`` block (or breaking out of the loop and then leaving it)
    cancels the run if it is still going. When the run failed, iteration ends by
    raising the run's own exception (the one the performer raised, unwrapped).
    After iteration :attr:`output` holds the run's output.
    """

    # Slots: one of these is open for every run being watched, thousands at once.
    __slots__ = (
        "_attachment",
        "_capacity",
        "_chunks_only",
        "_claimed",
        "_config",
        "_envelope",
        "_filter",
        "_message",
        "_performer",
        "_reply",
        "_runtime",
        "_rx",
        "_stack",
        "run_id",
    )

    def __init__(
        self,
        target: Runnable[Any],
        input: Any,
        config: RunConfig,
        *,
        event_filter: EventFilter | None,
        capacity: int,
        chunks_only: bool = False,
        runtime: Runtime | None = None,
    ) -> None:
        if not isinstance(target, Runnable):
            raise TypeError(
                f"expected a performer (agent, model, tool), got {type(target).__name__}"
            )
        positive_int(capacity, "capacity")
        self._performer, bound = target.bind()
        self._message = self._performer.coerce_input(input)
        self._config = bound.merged(config)
        self._filter = event_filter
        self._capacity = capacity
        self._chunks_only = chunks_only
        self._runtime = runtime
        self._stack: AsyncExitStack | None = None  # only for a runtime of its own
        self._reply: Reply | None = None
        self._envelope: Any = None
        self._rx: EventChannel | None = None
        self._attachment: Attachment | None = None  # only for callbacks
        self._claimed = False
        self.run_id: str = self._config.run_id or new_run_id()
        """The id of the run this stream watches."""

    @property
    def handler_errors(self) -> list[HandlerError]:
        """What this run's callback handlers raised (each also logged)."""
        return self._attachment.errors if self._attachment is not None else []

    @property
    def output(self) -> Any:
        """The run's output once it has ended well; ``None`` before."""
        return self._reply.value if self._reply is not None else None

    async def __aenter__(self) -> EventStream:
        require_trio("a Troupe stream")
        if self._reply is not None:
            raise StreamUsageError("a stream can be entered only once")
        runtime = self._runtime or current_runtime()
        if runtime is None:
            self._stack = AsyncExitStack()
            runtime = await self._stack.enter_async_context(open_runtime())
        try:
            if self._config.run_id is not None:
                runtime.claim_run_id(self.run_id)
                self._claimed = True
            self._runtime = runtime
            self._rx = EventChannel(self._capacity)
            subscriptions = [
                Subscription(
                    self._rx, run_id=self.run_id, filter=self._filter, chunks_only=self._chunks_only
                )
            ]
            self._config = unwatched(current_run_var.get(), self._config)
            if self._config.callbacks:
                self._attachment = Attachment()
                subscriptions += self._attachment.watch(
                    runtime, self.run_id, self._config.callbacks
                )
            self._reply = Reply()
            config = attrs.evolve(self._config, run_id=self.run_id)
            if current_run_var.get() is None:
                config = with_root_metadata(config)
            self._envelope = envelope = runtime.envelope(
                self._performer, self._message, config, self._reply, tuple(subscriptions)
            )
            try:
                await runtime.cell(self._performer).deliver(envelope)
            except BaseException:
                envelope.close_subscriptions()
                raise
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
        assert self._rx is not None and self._reply is not None and self._runtime is not None
        self._rx.close_receiver()
        reply = self._reply
        if not reply.settled:
            reply.abandon()
            with trio.CancelScope(shield=True):
                await reply.wait_settled()
        if not reply.taken:
            self._envelope.close_subscriptions()  # the run never started
        self._release()
        error = reply.error
        if error is not None and is_exit(error) and find_exit(exc, error) is not exc:
            raise error  # at once: the handlers see the run's end as the runtime closes
        if self._attachment is not None and (
            exc is None or not (isinstance(exc, trio.Cancelled) or is_exit(exc))
        ):
            await self._attachment.wait()  # the handlers have seen the run's end

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
        if not reply.settled and reply.abandon():
            self._envelope.close_subscriptions()  # it never started

    def _release(self) -> None:
        if self._claimed and self._runtime is not None:
            self._claimed = False
            self._runtime.release_run_id(self.run_id)

    def __aiter__(self) -> EventStream:
        if self._rx is None:
            raise StreamUsageError(
                "enter the stream first: `async with x.astream_events(...) as stream: "
                "async for event in stream: ...`"
            )
        return self

    async def __anext__(self) -> TypedEvent:
        rx = self._rx
        if rx is None:
            raise StreamUsageError("the stream is not open")
        try:
            event = rx.take()
            if event is None:
                event = await rx.receive()
            return event  # type: ignore[return-value]  # each event is one of TypedEvent's
        except trio.EndOfChannel:
            pass
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None
        await self._raise_if_failed()
        raise StopAsyncIteration

    def ready(self, limit: int) -> list[StreamEvent]:
        """Up to ``limit`` events already waiting, without waiting for more (for an edge
        that writes several at once); the end of the stream is left for ``__anext__``."""
        rx = self._rx
        if rx is None:
            raise StreamUsageError("the stream is not open")
        events: list[StreamEvent] = []
        try:
            while len(events) < limit:
                event = rx.take()
                if event is None:
                    break
                events.append(event)
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        return events

    async def _raise_if_failed(self) -> None:
        reply = self._reply
        assert reply is not None
        await reply.wait_settled()
        if reply.error is not None:
            raise reply.error


class ChunkStream(EventStream, Generic[ChunkT]):
    """The run's own output chunks (LangChain's ``astream``); for an agent, its steps.

    Generic in the chunk's type: a chat model's stream is a
    ``ChunkStream[AssistantMessageChunk]``, an agent's a ``ChunkStream[StepChunk]``.
    """

    __slots__ = ()

    def __aiter__(self) -> ChunkStream[ChunkT]:
        super().__aiter__()
        return self

    async def __aenter__(self) -> ChunkStream[ChunkT]:
        await super().__aenter__()
        return self

    async def __anext__(self) -> ChunkT:  # type: ignore[override]  # it yields chunks, not events
        event = await super().__anext__()
        return event.chunk  # type: ignore[no-any-return]  # the chunks of ChunkT's runs


class WatchStream:
    """Every event of every run of a runtime, from subscription on (``Runtime.watch``).

    Iteration ends when the runtime closes (after the last terminal event) or when the
    ``async with`` block is left. With ``drop_oldest=True`` the stream never slows the
    runs: when it is full the oldest non-terminal event is dropped, and
    :attr:`dropped` counts them (terminal events are never dropped).
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
        try:
            event = self._rx.take()
            if event is None:
                event = await self._rx.receive()
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
    target: Runnable[Any],
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
    target: Runnable[Any],
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
    target: Runnable[Any],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None = None,
    **options: Unpack[StreamOptions],
) -> ChunkStream[Any]:
    """Run ``target`` on ``input`` and stream its own output chunks (``astream``)."""
    return chunk_stream("stream", target, input, config, options)


def chunk_stream(
    where: str,
    target: Runnable[Any],
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
    target: Runnable[OutT],
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
    target: Runnable[OutT],
    input: Any,
    config: RunConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> OutT:
    """:func:`invoke` in ``runtime`` (``None``: the current one, or one of its own)."""
    require_trio(where)
    if not isinstance(target, Runnable):
        raise TypeError(f"expected a performer (agent, model, tool), got {type(target).__name__}")
    performer, _ = target.bind()
    message = performer.coerce_input(input)
    made = parse_options(where, RunOptions, options, config).config
    runtime = runtime or current_runtime()
    if runtime is None:
        async with open_runtime() as runtime:
            return await runtime.request(target, message, made)
    return await runtime.request(target, message, made)


async def adispatch_custom_event(name: str, data: Any = None) -> None:
    """Dispatch an ``on_custom_event`` attached to the current run, from async code (a
    tool, or any code an actor runs), as ``langchain_core.callbacks`` does. Waits while
    a stream watching the run is behind.

    ``data`` must be JSON-able (JSON values and protocol objects), so that every
    exporter can write it.

    Raises:
        NoRuntimeError: called outside any run.
        TypeError: ``name`` is not a non-empty string, or ``data`` is not JSON-able.
    """
    runtime, event = _custom_event(name, data)
    await _send_custom_event(runtime, event)


def dispatch_custom_event(name: str, data: Any = None) -> CustomEventDispatch:
    """Dispatch an ``on_custom_event`` attached to the current run, from sync code, as
    ``langchain_core.callbacks`` does: a sync tool (which runs in a worker thread) waits
    until the event is on its way. Async code may call it too (the event is sent at
    once, or when the result is awaited if a stream watching the run is behind), but
    :func:`adispatch_custom_event` is the one to await.

    Raises:
        NoRuntimeError: called outside any run.
        TypeError: ``name`` is not a non-empty string, or ``data`` is not JSON-able.
    """
    if _in_trio_thread():
        runtime, event = _custom_event(name, data)
        return CustomEventDispatch(runtime, event)
    try:
        trio.from_thread.run(adispatch_custom_event, name, data)
    except RuntimeError as exc:
        if "this thread wasn't created by Trio" not in str(exc):
            raise
        raise NoRuntimeError(
            "dispatch_custom_event must be called from code working for a run "
            "(a tool, or a thread a tool started with trio.to_thread)"
        ) from None
    return CustomEventDispatch(None, None)


def _in_trio_thread() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def check_custom_event(name: object, data: Any) -> None:
    """Raise ``TypeError`` unless ``name`` is a non-empty string and ``data`` JSON-able."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a custom event needs a non-empty string name, got {name!r}")
    check_json_able(data)


def _custom_event(name: str, data: Any) -> tuple[Runtime, CustomEventDispatched]:
    check_custom_event(name, data)
    context = current_run_var.get()
    runtime = current_runtime()
    if context is None or runtime is None:
        raise NoRuntimeError("dispatch_custom_event must be called from code working for a run")
    return runtime, CustomEventDispatched(context.run_id, name, data)


async def _send_custom_event(runtime: Runtime, event: CustomEventDispatched) -> None:
    gate = current_run_var.get().gate  # type: ignore[union-attr]  # checked by _custom_event
    if gate is not None and gate.closed:
        await gate.wait_open()  # a stream watching this run is behind
    await runtime.send_to_tracer(event)


@final
class CustomEventDispatch:
    """What :func:`dispatch_custom_event` returns: the event is already sent, or is sent
    when this is awaited (a stream watching the run was behind). Not awaited and not
    sent, it warns when dropped, so an event is never lost without a word."""

    __slots__ = ("_event", "_runtime")

    def __init__(self, runtime: Runtime | None, event: CustomEventDispatched | None) -> None:
        self._runtime: Runtime | None = None
        self._event: CustomEventDispatched | None = None
        if runtime is None or event is None:
            return
        gate = current_run_var.get().gate  # type: ignore[union-attr]  # inside a run
        if gate is None or not gate.closed:
            with contextlib.suppress(trio.WouldBlock):
                runtime.send_to_tracer_nowait(event)  # RuntimeClosedError: raised as is
                return
        self._runtime, self._event = runtime, event  # sent when awaited

    @property
    def sent(self) -> bool:
        """Whether the event is on its way to the tracer."""
        return self._event is None

    def __await__(self) -> Generator[Any, None, None]:
        runtime, event = self._runtime, self._event
        if runtime is None or event is None:
            return None
        self._runtime = self._event = None
        return (yield from _send_custom_event(runtime, event).__await__())

    def __del__(self) -> None:
        if self._event is not None:
            warnings.warn(
                f"custom event {self._event.name!r} was not sent: a stream watching the run "
                "was behind, and the result of dispatch_custom_event was not awaited "
                "(in async code, await adispatch_custom_event(...))",
                RuntimeWarning,
                stacklevel=1,
            )


def check_json_able(data: Any) -> None:
    """Raise ``TypeError`` naming the problem if ``data`` cannot become JSON."""
    try:
        to_json(data)
    except (SerializationError, ValueError) as exc:
        raise TypeError(f"custom event data must be JSON-able: {exc}") from None
    except RecursionError:
        raise TypeError(
            "custom event data must be JSON-able: it is nested too deeply (or holds itself)"
        ) from None
