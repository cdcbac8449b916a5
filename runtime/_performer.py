"""Performers: what an actor does, described as data; and the live handle of a run.

A performer (an agent, a chat model, a tool: see ``actors``) is an immutable
description. A runtime gives each performer it meets one actor: a mailbox and a task
that serves requests, each request one run. ``with_config`` makes a
:class:`Configured` view that routes to the same actor with per-call settings.
"""

from __future__ import annotations

import contextvars
import functools
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar, Unpack, final

import trio
from attrs import frozen

from protocol import CustomEventDispatched, LifecycleMessage, RunStreamed, RunStreamedMany

from ._context import (
    EMPTY_CONFIG,
    RunConfig,
    RunContext,
    current_run_var,
    current_runtime_var,
    make_config,
)
from ._gate import Gate
from ._tracer_mailbox import TracerMailbox

if TYPE_CHECKING:
    from ._api import ChunkStream, EventStream
    from ._options import EventStreamOptions, LogOptions, RunOptions, StreamOptions
    from ._run_log import RunLogStream
    from ._runtime import Runtime

InT = TypeVar("InT")
OutT = TypeVar("OutT")


class Runnable(ABC, Generic[OutT]):
    """Something a runtime can run: a performer, or a performer with settings.

    The conveniences here use the current runtime (inside ``open_runtime()`` or inside
    an actor) and otherwise open one for the single run.
    """

    __slots__ = ()

    @abstractmethod
    def bind(self) -> tuple[Performer[Any, OutT], RunConfig]:
        """The performer that does the work and the settings to run it with."""

    def with_config(
        self,
        config: RunConfig | Mapping[str, Any] | None = None,
        *,
        run_name: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        callbacks: Iterable[Any] | None = None,
    ) -> Configured[OutT]:
        """The same performer, run with these settings (name, tags, metadata).

        Raises:
            TypeError: a setting has the wrong type.
        """
        performer, base = self.bind()
        extra = make_config(
            config, run_name=run_name, tags=tags, metadata=metadata, callbacks=callbacks
        )
        if extra.run_id is not None:
            raise ValueError("run_id is per call: pass it to ainvoke/astream, not with_config")
        return Configured(performer, base.merged(extra))

    async def ainvoke(
        self,
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **kw: Unpack[RunOptions],
    ) -> OutT:
        """Run to completion and return the output (LangChain's ``ainvoke``)."""
        from ._api import invoke_in

        return await invoke_in(None, "ainvoke", self, input, config, kw)

    def invoke(
        self,
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **kw: Unpack[RunOptions],
    ) -> OutT:
        """Run to completion from sync code (a script) and return the output, as
        LangChain's ``invoke``: ``trio.run`` with a runtime of its own.

        Raises:
            RuntimeError: called where an event loop is running (trio's or asyncio's):
                there, ``await performer.ainvoke(...)``.
        """
        from ._api import invoke_in
        from ._checks import running_loop

        running = running_loop()
        if running:
            raise RuntimeError(
                f"invoke() runs its own event loop and cannot run inside {running}'s: "
                "use `await performer.ainvoke(...)` there"
            )
        # The caller's context variables, but not a runtime (or run) of another trio run:
        # a worker thread of a trio program inherits those, and they are not this loop's.
        context = contextvars.copy_context()
        context.run(current_runtime_var.set, None)
        context.run(current_run_var.set, None)
        call = functools.partial(invoke_in, None, "invoke", self, input, config, kw)
        return context.run(trio.run, call)

    def astream(
        self,
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **kw: Unpack[StreamOptions],
    ) -> ChunkStream[Any]:
        """Stream this run's own output chunks (LangChain's ``astream``).

        ``async with x.astream(i) as chunks: async for chunk in chunks: ...``
        """
        from ._api import chunk_stream

        return chunk_stream("astream", self, input, config, kw)

    def astream_log(
        self,
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **kw: Unpack[LogOptions],
    ) -> RunLogStream:
        """Stream the run log: RFC 6902 patches over the run's state (``astream_log``).

        ``async with x.astream_log(i) as log: async for patch in log: ...``
        """
        from ._run_log import log_stream

        return log_stream("astream_log", self, input, config, kw)

    def astream_events(
        self,
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **kw: Unpack[EventStreamOptions],
    ) -> EventStream:
        """Stream every event of this run's tree (LangChain's ``astream_events`` v2;
        ``version="v1"`` or ``"v2"`` is accepted and gives the same events)."""
        from ._api import event_stream

        return event_stream("astream_events", self, input, config, kw)


class Performer(Runnable[OutT], Generic[InT, OutT]):
    """Base of every performer. Subclasses are frozen attrs classes that define
    ``name``, ``tags`` and ``metadata``, and implement :meth:`perform`.

    Class settings: ``run_kind`` names the kind of run (``chain``, ``tool``, ...),
    ``mailbox_size`` bounds the actor's mailbox, ``max_concurrency`` caps how many
    requests the actor serves at once (``None``: no cap). The actor is restarted when
    it crashes (:class:`ActorCrash`, or ``open_actor`` failing), at most
    ``restart_limit`` times within ``restart_window`` seconds; then it fails.
    """

    __slots__ = ()
    run_kind: ClassVar[str] = "chain"
    name: str
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    mailbox_size: int = 256
    max_concurrency: int | None = None
    restart_limit: int = 3
    restart_window: float = 10.0

    def bind(self) -> tuple[Performer[Any, OutT], RunConfig]:
        return self, EMPTY_CONFIG

    @abstractmethod
    def coerce_input(self, value: Any) -> InT:
        """Turn what a user passes to ``ainvoke``/``astream`` into the request message.

        Raises:
            TypeError: the value cannot be a request for this performer.
        """

    @abstractmethod
    async def perform(self, message: InT, run: Run) -> OutT:
        """Serve one request; ``run`` streams chunks and knows the run's context."""

    def event_input(self, message: InT) -> Any:
        """What the run's events show as ``data["input"]``."""
        return message

    def local_metadata(self, message: InT) -> dict[str, Any]:
        """Metadata of the run serving ``message`` alone, not inherited by the runs it
        starts (LangChain's local metadata): what an edge needs to know of this run,
        such as a tool call's id or a model's name. None by default."""
        return {}

    def open_actor(self) -> AbstractAsyncContextManager[Any]:
        """What the actor holds while it lives (an HTTP client, a pool): entered when
        the actor starts, closed when the runtime closes; ``run.actor_state`` is what
        it yields. Nothing by default."""
        return nullcontext()

    def event_output(self, output: OutT) -> Any:
        """What the run's end event shows as ``data["output"]``."""
        return output


@frozen
class Configured(Runnable[OutT]):
    """A performer with per-call settings; it shares the performer's actor."""

    performer: Performer[Any, OutT]
    config: RunConfig

    def bind(self) -> tuple[Performer[Any, OutT], RunConfig]:
        return self.performer, self.config

    @property
    def name(self) -> str:
        """The run name this view runs under."""
        return self.config.run_name or self.performer.name


BACKLOG_LIMIT: Final = 64
"""How many chunks a run may hold back while the tracer's mailbox is full."""
BACKLOG_RETRY_EVERY: Final = 8
"""While holding chunks back, try the mailbox again every this many chunks."""
JOIN_LIMIT: Final = 16
"""At most this many chunks join one message waiting in the tracer's mailbox."""


@final
class Run:
    """The live handle of one run, given to :meth:`Performer.perform`."""

    __slots__ = (
        "_backlog",
        "_gate",
        "_joining",
        "_last_sent",
        "_mailbox",
        "_run_id",
        "actor_state",
        "context",
        "runtime",
    )

    def __init__(
        self,
        context: RunContext,
        mailbox: TracerMailbox,
        runtime: Runtime,
        actor_state: Any = None,
    ) -> None:
        self.context = context
        self.runtime = runtime
        self.actor_state = actor_state
        """What the performer's :meth:`Performer.open_actor` yielded."""
        self._mailbox = mailbox
        self._run_id = context.run_id
        self._backlog: list[Any] | None = None
        self._last_sent = 0  # the number of this run's last chunk message in the mailbox
        self._joining: list[Any] | None = None  # its chunks, while more may join them
        self._gate = context.gate if context.gate is not None else Gate()

    async def emit(self, chunk: Any) -> None:
        """Stream one chunk of this run's output (an ``on_*_stream`` event).

        Does not yield to the scheduler unless the tracer is far behind: while its
        mailbox is full, chunks wait in a small backlog (at most ``BACKLOG_LIMIT``) that
        goes to the tracer as one message, so a busy tracer gets each run's chunks in
        runs rather than one token per producer per pass. While a stream watching this
        run's tree is behind (its gate is closed), this waits for it.
        """
        if not self.emit_nowait(chunk):
            await self.flush()

    async def emit_many(self, chunks: Sequence[Any]) -> None:
        """Stream several chunks at once, in order: one message to the tracer, however
        many chunks. For producers that have a run of chunks ready (a model that read
        several tokens off the wire, an instant model)."""
        if not self.emit_many_nowait(chunks):
            await self.flush()

    def emit_nowait(self, chunk: Any) -> bool:
        """Stream one chunk without waiting. ``False`` means the caller must
        ``await run.flush()`` (or use :meth:`emit`) before the next chunk: the backlog is
        full, or a stream watching this run is behind."""
        backlog = self._backlog
        if backlog is None:
            if self._gate.closed:
                self._backlog = [chunk]
                return False
            mailbox = self._mailbox
            if (
                mailbox.idle  # mailbox.is_idle(), inline
                and mailbox.sent == mailbox.taken
                and not mailbox.sending
                and mailbox.deliver_now(self._run_id, chunk)
            ):
                return True  # the tracer had nothing to do: delivered as it would have
            last = self._last_sent
            if mailbox.sent == last and mailbox.taken < last:  # mailbox.waits_last, inline
                # The tracer has not run since this run's last chunk: join it.
                joining = self._joining
                if joining is not None and len(joining) < JOIN_LIMIT:
                    joining.append(chunk)
                    return True
                joining = [chunk]
                message: LifecycleMessage = RunStreamedMany(self._run_id, joining)  # type: ignore[arg-type]  # a list, while chunks may join it
            else:
                joining = None
                message = RunStreamed(self._run_id, chunk)
            try:
                mailbox.send_nowait(message)
            except trio.WouldBlock:
                self._backlog = [chunk]
                return True
            self._last_sent = mailbox.sent
            self._joining = joining
            return True
        backlog.append(chunk)
        if self._gate.closed:
            return False
        held = len(backlog)
        if held % BACKLOG_RETRY_EVERY:
            return True  # the mailbox was full a moment ago: don't build a batch to drop it
        return self._send_backlog(backlog)

    def emit_many_nowait(self, chunks: Sequence[Any]) -> bool:
        """:meth:`emit_nowait` for several chunks, sent as one message."""
        if not chunks:
            return True
        backlog = self._backlog
        if backlog is None and self._gate.closed:
            self._backlog = list(chunks)
            return False
        if backlog is None:
            message = (
                RunStreamed(self._run_id, chunks[0])
                if len(chunks) == 1
                else RunStreamedMany(self._run_id, tuple(chunks))
            )
            try:
                self._mailbox.send_nowait(message)
            except trio.WouldBlock:
                self._backlog = list(chunks)
                return len(chunks) < BACKLOG_LIMIT
            return True
        backlog.extend(chunks)
        if self._gate.closed:
            return False
        return self._send_backlog(backlog)

    def _send_backlog(self, backlog: list[Any]) -> bool:
        try:
            self._mailbox.send_nowait(RunStreamedMany(self._run_id, tuple(backlog)))
        except trio.WouldBlock:
            return len(backlog) < BACKLOG_LIMIT
        self._backlog = None
        return True

    async def flush(self) -> None:
        """Send any chunks held back, waiting for the streams watching this run to
        catch up and for room in the tracer's mailbox."""
        if self._gate.closed:
            await self._gate.wait_open()
        backlog = self._backlog
        if backlog:
            self._backlog = None
            await self._mailbox.send(RunStreamedMany(self._run_id, tuple(backlog)))

    def take_held(self) -> LifecycleMessage | None:
        """The chunks held back, as one message to send before the run's end (the
        runtime sends it, whatever the gate says: the run is over); ``None`` if none."""
        backlog = self._backlog
        if not backlog:
            return None
        self._backlog = None
        if len(backlog) == 1:
            return RunStreamed(self._run_id, backlog[0])
        return RunStreamedMany(self._run_id, tuple(backlog))

    async def dispatch_custom_event(self, name: str, data: Any = None) -> None:
        """Send an ``on_custom_event`` named ``name`` attached to this run."""
        from ._api import check_custom_event

        check_custom_event(name, data)
        await self.flush()  # after the chunks streamed before it (and the gate)
        msg = CustomEventDispatched(self._run_id, name, data)
        try:
            self._mailbox.send_nowait(msg)
            return
        except trio.WouldBlock:
            pass
        await self._mailbox.send(msg)

    def request(
        self, target: Runnable[OutT], message: Any, config: RunConfig | None = None
    ) -> Coroutine[Any, Any, OutT]:
        """Ask another actor for something; its run becomes a child of this one.

        ``await run.request(tool, message)``. (A plain function handing back the
        runtime's coroutine: one frame less for every run waiting on a child.)
        """
        return self.runtime.request(target, message, config)
