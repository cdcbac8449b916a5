"""The runtime: a supervisor nursery that owns every actor, and the tracer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, final

import attrs
import trio

from ._actor import ActorCell, Envelope
from ._checks import check_subscribers, flag, positive_int, require_trio, seconds
from ._context import (
    RunConfig,
    current_run_var,
    current_runtime_var,
    unwatched,
    with_root_metadata,
)
from ._errors import ActorCrashedError, RuntimeClosedError, find_exit
from ._performer import Performer, Runnable
from ._reply import Reply
from ._subscribers import DEFAULT_SUBSCRIBER_CAPACITY, Attachment
from ._tracer import (
    CLOSE_GRACE_SECONDS,
    DEFAULT_TRACER_CAPACITY,
    Subscribe,
    Subscription,
    Tracer,
    TracerMail,
)

if TYPE_CHECKING:
    from ._api import ChunkStream, EventStream, WatchStream
    from ._options import EventStreamOptions, LogOptions, RunOptions, StreamOptions, WatchOptions
    from ._run_log import RunLogStream

OutT = TypeVar("OutT")

_current_runtime: ContextVar[Runtime | None] = current_runtime_var
logger = logging.getLogger("troupe")


def current_runtime() -> Runtime | None:
    """The runtime the calling code runs in (``open_runtime()`` body or an actor)."""
    return _current_runtime.get()


@final
class Runtime:
    """A running set of actors. Get one from :func:`open_runtime`.

    Many runs may go on at once; each performer gets one actor, started the first time
    it is asked for something and stopped once the performer is gone.
    """

    def __init__(self, service_nursery: trio.Nursery, tracer: Tracer, close_grace: float) -> None:
        self._actors: trio.Nursery | None = None
        self._services = service_nursery
        self._tracer = tracer
        self._close_grace = close_grace
        self._cells: dict[int, ActorCell] = {}
        self._claimed: set[str] = set()
        self._closed = False
        # Service tasks (the tracer, subscribers) are shielded from the cancellation of
        # the code around the runtime, so that on the way out every subscriber still
        # gets the terminal events; the runtime cancels them itself after the grace.
        self._service_scopes: set[trio.CancelScope] = set()
        self._services_done = trio.Event()
        self._stopped_by: BaseException | None = None
        self._token = trio.lowlevel.current_trio_token()

    @property
    def closed(self) -> bool:
        """Whether the runtime has begun to close."""
        return self._closed

    @property
    def open_runs(self) -> int:
        """Runs whose start the tracer has seen and whose end it has not yet."""
        return self._tracer.open_runs

    @property
    def actors(self) -> int:
        """How many actors are alive (one per performer in use)."""
        return len(self._cells)

    @property
    def protocol_violations(self) -> int:
        """Lifecycle messages the tracer had to reject (should stay 0)."""
        return self._tracer.protocol_violations

    def cell(self, performer: Performer[Any, Any]) -> ActorCell:
        """The actor of ``performer``, started on first use.

        Raises:
            RuntimeClosedError: the runtime is closing.
        """
        cell = self._cells.get(id(performer))
        if cell is None or not cell.holds(performer):
            if self._closed or self._actors is None:
                raise RuntimeClosedError("the runtime is closed")
            cell = ActorCell(performer, self._tracer.mailbox, self, self._forget_cell)
            self._cells[cell.key] = cell
            self._actors.start_soon(self._serve_cell, cell, name=f"troupe actor {performer.name}")
        return cell

    async def _serve_cell(self, cell: ActorCell) -> None:
        # The runtime is current in every actor, whoever asked first: code in a tool
        # (a nested model call) uses this runtime, also when the first request came
        # from a task outside the runtime's block (an HTTP server's request task).
        _current_runtime.set(self)
        await cell.serve()

    def _forget_cell(self, cell: ActorCell) -> None:
        if self._cells.get(cell.key) is cell:
            del self._cells[cell.key]

    def claim_run_id(self, run_id: str) -> None:
        """Reserve a run id given by the caller until its run is over.

        Raises:
            ValueError: a run with that id is in progress in this runtime.
        """
        if run_id in self._claimed:
            raise ValueError(f"run_id {run_id!r} is already in use by a run in progress")
        self._claimed.add(run_id)

    def release_run_id(self, run_id: str) -> None:
        """The run of a claimed id is over."""
        self._claimed.discard(run_id)

    def envelope(
        self,
        performer: Performer[Any, Any],
        message: Any,
        config: RunConfig,
        reply: Reply,
        subscriptions: tuple[Subscription, ...] = (),
    ) -> Envelope:
        """A request for ``performer`` from the calling code's run (if any)."""
        return Envelope(performer, message, current_run_var.get(), config, reply, subscriptions)

    async def request(
        self, target: Runnable[OutT], message: Any, config: RunConfig | None = None
    ) -> OutT:
        """Ask ``target``'s actor to serve ``message`` and wait for the result.

        The new run is a child of the caller's current run, if any. If the caller is
        cancelled, the run is cancelled and this returns only once it has ended.

        Raises:
            RuntimeClosedError: the runtime is closing (a :class:`RunCancelledError`).
            ValueError: ``config.run_id`` is in use by a run in progress.
            Exception: whatever the performer raised.
        """
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        performer, bound = target.bind()
        config = bound.merged(config) if config else bound
        parent = current_run_var.get()
        config = unwatched(parent, config)
        if parent is None:
            config = with_root_metadata(config)
        elif parent.gate is not None and parent.gate.closed:
            await parent.gate.wait_open()  # a stream watching this tree is behind
        run_id = config.run_id
        if run_id is not None:
            self.claim_run_id(run_id)
        try:
            attachment = None
            subscriptions: tuple[Subscription, ...] = ()
            if config.callbacks:
                if run_id is None:
                    run_id = self._new_claimed_id()
                    config = attrs.evolve(config, run_id=run_id)
                attachment = Attachment()
                subscriptions = tuple(attachment.watch(self, run_id, config.callbacks))
            reply = Reply()
            envelope = Envelope(performer, message, parent, config, reply, subscriptions)
            try:
                await self.cell(performer).deliver(envelope)
                result: OutT = await reply.result()
            finally:
                if not reply.taken:
                    envelope.close_subscriptions()  # the run never started
            if attachment is not None:
                await attachment.wait()  # the handlers have seen the run's end
            return result
        except Exception:
            if attachment is not None:
                await attachment.wait()  # ... also when it failed
            raise
        finally:
            if run_id is not None:
                self.release_run_id(run_id)

    def _new_claimed_id(self) -> str:
        from ._ids import new_run_id

        run_id = new_run_id()
        self._claimed.add(run_id)
        return run_id

    async def subscribe(
        self,
        *handlers: Any,
        drop_oldest: bool = False,
        capacity: int = DEFAULT_SUBSCRIBER_CAPACITY,
    ) -> Attachment:
        """Attach handlers (objects with ``async on_event(event)``) to every run of this
        runtime from now on, until it closes.

        By default a slow handler slows every run of the runtime: it asked to see every
        event (backpressure). With ``drop_oldest`` it never does: its oldest
        non-terminal events are dropped instead, counted in the returned attachment's
        ``dropped``. ``capacity`` bounds each handler's queue.

        Raises:
            TypeError: a handler has no ``on_event``; ``drop_oldest`` is not a bool.
            ValueError: ``capacity`` is not a positive integer.
        """
        positive_int(capacity, "capacity")
        flag(drop_oldest, "drop_oldest")
        checked = check_subscribers(handlers)
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        attachment = Attachment()
        for sub in attachment.watch(self, None, checked, capacity, drop_oldest=drop_oldest):
            await self.send_to_tracer(Subscribe(sub))
        return attachment

    def send_to_tracer_nowait(self, mail: TracerMail) -> None:
        """Post mail to the tracer if its mailbox has room.

        Raises:
            trio.WouldBlock: it has none.
            RuntimeClosedError: the runtime is closed.
        """
        try:
            self._tracer.mailbox.send_nowait(mail)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise RuntimeClosedError("the runtime is closed") from None

    async def send_to_tracer(self, mail: TracerMail) -> None:
        """Post mail to the tracer (subscriptions, lifecycle)."""
        try:
            try:
                self._tracer.mailbox.send_nowait(mail)
                return
            except trio.WouldBlock:
                pass
            await self._tracer.mailbox.send(mail)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise RuntimeClosedError("the runtime is closed") from None

    def watch(self, **options: Unpack[WatchOptions]) -> WatchStream:
        """Watch every run of this runtime: ``async with rt.watch() as events:``.

        Takes the same ``include_*``/``exclude_*`` filters and ``capacity`` as
        :func:`stream_events`. Events of runs that started before the subscription are
        delivered from the subscription on (their starts are not replayed). A lossless
        watcher (the default) that stops reading stalls every run of the runtime: it
        asked to see every event. ``drop_oldest=True`` never stalls anything.
        """
        from ._api import watch

        return watch(self, **options)

    # -- running performers in this runtime, by reference ----------------------------
    # (For code that holds the runtime rather than running inside it: an HTTP
    # server's request tasks, other threads. Nothing here opens a runtime of its own:
    # on a closed runtime each raises RuntimeClosedError.)

    def astream_events(
        self,
        target: Runnable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[EventStreamOptions],
    ) -> EventStream:
        """``target.astream_events(...)`` in this runtime."""
        from ._api import event_stream

        return event_stream("Runtime.astream_events", target, input, config, options, self)

    def astream(
        self,
        target: Runnable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[StreamOptions],
    ) -> ChunkStream[Any]:
        """``target.astream(...)`` in this runtime."""
        from ._api import chunk_stream

        return chunk_stream("Runtime.astream", target, input, config, options, self)

    def astream_log(
        self,
        target: Runnable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[LogOptions],
    ) -> RunLogStream:
        """``target.astream_log(...)`` in this runtime."""
        from ._run_log import log_stream

        return log_stream("Runtime.astream_log", target, input, config, options, self)

    async def ainvoke(
        self,
        target: Runnable[OutT],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[RunOptions],
    ) -> OutT:
        """``await target.ainvoke(...)`` in this runtime.

        Raises:
            RuntimeClosedError: the runtime is closed.
            Exception: whatever the run raised.
        """
        from ._api import invoke_in

        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        return await invoke_in(self, "Runtime.ainvoke", target, input, config, options)

    def invoke_from_thread(
        self,
        target: Runnable[OutT],
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
        import functools

        call = functools.partial(self.ainvoke, target, input, config, **options)
        try:
            return trio.from_thread.run(call, trio_token=self._token)
        except trio.RunFinishedError:
            raise RuntimeClosedError("the runtime is closed (its trio run has ended)") from None

    def start_service(self, fn: Any, *args: Any, name: str | None = None) -> None:
        """Start a task that lives until the runtime has closed (a subscriber actor)."""
        self._services.start_soon(self._serve_service, fn, args, name=name)

    async def _serve_service(self, fn: Any, args: tuple[Any, ...]) -> None:
        _current_runtime.set(self)
        with trio.CancelScope(shield=True) as scope:
            self._service_scopes.add(scope)
            try:
                await fn(*args)
            except BaseException as exc:
                stop = find_exit(exc)
                if stop is None:
                    self._cancel_services()  # a service failed: the runtime is going down
                    raise
                self._stop(stop)
            finally:
                self._service_scopes.discard(scope)
                if not self._service_scopes and self._closed:
                    self._services_done.set()

    def _stop(self, stop: BaseException) -> None:
        # An exit in a service (Ctrl-C striking a handler) stops the runtime as if it
        # had struck the runtime's block: the block and every run are cancelled, the
        # subscribers (shielded) still get every run's terminal event, and
        # open_runtime() raises the exit once everything has closed.
        self._stopped_by = find_exit(self._stopped_by, stop)
        self._services.cancel_scope.cancel()

    def _cancel_services(self) -> None:
        for scope in self._service_scopes:
            scope.cancel()

    def _begin_closing(self) -> None:
        self._closed = True
        self._tracer.begin_closing(self._close_grace)

    async def _finish_services(self) -> None:
        """Wait (within the grace) for the tracer and every subscriber to finish; then
        cancel those still busy, and say so."""
        if not self._service_scopes:
            return
        with trio.CancelScope(shield=True) as waiting:
            waiting.deadline = trio.current_time() + self._close_grace
            await self._services_done.wait()
        if self._service_scopes:
            logger.warning(
                "the runtime closed; %d subscriber task(s) still busy after the %s s "
                "grace were cancelled",
                len(self._service_scopes),
                self._close_grace,
            )
            self._cancel_services()


@asynccontextmanager
async def open_runtime(
    *,
    tracer_capacity: int = DEFAULT_TRACER_CAPACITY,
    callbacks: Iterable[Any] = (),
    close_grace: float = CLOSE_GRACE_SECONDS,
) -> AsyncIterator[Runtime]:
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

    Raises:
        ValueError: ``tracer_capacity`` is not a positive integer, or ``close_grace``
            is not a finite number of seconds >= 0.
        TypeError: a callback has no ``on_event``.
        ActorCrashedError: an actor loop failed.
    """
    positive_int(tracer_capacity, "tracer_capacity")
    grace = seconds(close_grace, "close_grace", allow_zero=True)
    require_trio("open_runtime")
    handlers = check_subscribers(callbacks)
    tracer = Tracer(tracer_capacity)
    body_error: BaseException | None = None
    failed: BaseExceptionGroup[BaseException] | None = None
    runtime: Runtime | None = None
    try:
        async with trio.open_nursery() as services:
            runtime = Runtime(services, tracer, grace)
            runtime.start_service(tracer.serve, name="troupe tracer")
            try:
                async with trio.open_nursery() as actors:
                    runtime._actors = actors
                    token = _current_runtime.set(runtime)
                    try:
                        if handlers:
                            await runtime.subscribe(*handlers)
                        yield runtime
                    except BaseException as exc:
                        body_error = exc
                    finally:
                        _current_runtime.reset(token)
                        runtime._begin_closing()
                        actors.cancel_scope.cancel()
            finally:
                tracer.mailbox.close()
                await runtime._finish_services()
    except BaseExceptionGroup as group:
        failed = group  # raised below, outside this block, unless an exit outranks it
    own = None if isinstance(body_error, BaseExceptionGroup) else body_error  # kept whole
    stop = find_exit(runtime._stopped_by if runtime else None, own, failed)
    if stop is not None:
        raise stop
    if failed is not None:
        raise _crash_error(failed) from failed
    if body_error is not None:
        raise body_error


def _crash_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for failures of the runtime's own tasks (which hold
    no exit: :func:`find_exit` has taken that)."""
    leaves = list(_leaves(group))
    real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if not real:
        return leaves[0]
    first = real[0]
    return ActorCrashedError(f"an actor of the runtime failed: {type(first).__name__}: {first}")


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
