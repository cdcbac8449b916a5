"""The core: actor cells, envelopes, the live handle of a run and the supervisor.

These are tightly coupled (a cell serves envelopes, hands each run a :class:`Run` whose
requests go back through the :class:`Supervisor`, which owns the cells), so they live in
one module, as trio's ``_run.py`` holds its core. Everything here is below the public
face: the streams, ``invoke``, ``Runtime``'s methods and ``Runnable``/``Performer``.

Each request is served in a task of its own (up to the performer's
``max_concurrency``), in its requester's context variables with the request's run
context and the runtime made current, and reported to the tracer as one run: a start,
its chunks, exactly one terminal message. While the actor takes requests, a requester
starts that task itself; the actor's own task takes the rest from the mailbox.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
    suppress,
)
from functools import partial
from typing import Any, ClassVar, Final, Generic, NoReturn, TypeVar, final

import attrs
import trio

from protocol import (
    CustomEventDispatched,
    Decision,
    LifecycleMessage,
    Paused,
    RunEnded,
    RunFailed,
    RunStarted,
    RunStreamed,
    RunStreamedMany,
    unstructure_any,
)

from ._checks import (
    check_custom_event,
    check_subscribers,
    flag,
    positive_int,
    require_trio,
    seconds,
)
from ._context import (
    EMPTY_CONFIG,
    Resume,
    RunConfig,
    RunContext,
    child_context,
    current_run_var,
    current_runtime_var,
    unwatched,
    with_root_metadata,
)
from ._errors import (
    ActorCrash,
    ActorCrashedError,
    ActorFailedError,
    JournaledError,
    NoStoreError,
    PerformerError,
    RunNotPausedError,
    RunPaused,
    RuntimeClosedError,
    RunTimeoutError,
    describe_error,
    find_exit,
)
from ._gate import Gate
from ._ids import new_run_id
from ._journal import Journal, json_entries
from ._replay import RESUMES_KEY, JournaledRun, Replay, Step
from ._reply import Reply
from ._store import Owner, RunRecord
from ._subscribers import DEFAULT_SUBSCRIBER_CAPACITY, Attachment
from ._tracer import (
    CLOSE_GRACE_SECONDS,
    DEFAULT_TRACER_CAPACITY,
    Subscribe,
    Subscription,
    Tracer,
    TracerMail,
)
from ._tracer_mailbox import TracerMailbox

InT = TypeVar("InT")
OutT = TypeVar("OutT")
SupervisorT = TypeVar("SupervisorT", bound="Supervisor")
logger = logging.getLogger("troupe")


class Bindable(ABC, Generic[OutT]):
    """Something a runtime can run: the base of :class:`~runtime.Runnable` that the
    core knows (the public face adds the ways to run it)."""

    __slots__ = ()

    @abstractmethod
    def bind(self) -> tuple[Performing[Any, OutT], RunConfig]:
        """The performer that does the work and the settings to run it with."""


class Performing(Bindable[OutT], Generic[InT, OutT]):
    """What an actor needs of a performer: the base of :class:`~runtime.Performer`
    that the core knows (see there)."""

    __slots__ = ()

    run_kind: ClassVar[str] = "chain"
    name: str
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    mailbox_size: int = 256
    max_concurrency: int | None = None
    resumable: bool = True
    """Whether a run of this performer whose process died is resumed by replay when a
    runtime that knows the performer opens the store (else it is ended with an error
    event). Set ``False`` for a performer that is not replayable."""
    restart_limit: int = 3
    restart_window: float = 10.0

    def bind(self) -> tuple[Performing[Any, OutT], RunConfig]:
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

    def with_history(self, message: InT, history: Sequence[Any]) -> InT:
        """``message`` after a thread's earlier messages (protocol objects, oldest
        first), for a run on a thread. A performer that keeps conversations overrides
        this and :meth:`conversation`; by default a thread is refused.

        Raises:
            TypeError: the performer keeps no threads.
        """
        raise TypeError(f"{self.run_kind} {self.name!r} keeps no threads: run it without thread_id")

    def conversation(self, message: InT, output: Any) -> Sequence[Any]:
        """The whole conversation of a run on a thread, given its request (with the
        history :meth:`with_history` put in) and its end event's output: the thread's
        history first, then what the run added (its request, its answers)."""
        raise TypeError(f"{self.run_kind} {self.name!r} keeps no threads")


BACKLOG_LIMIT: Final = 64
"""How many chunks a run may hold back while the tracer's mailbox is full."""
BACKLOG_RETRY_EVERY: Final = 8
"""While holding chunks back, try the mailbox again every this many chunks."""
JOIN_LIMIT: Final = 16
"""At most this many chunks join one message waiting in the tracer's mailbox."""
SCHEDULE_EVERY: Final = 64
"""Trio's checkpoint rule, batched: a call that need not wait (``Run.emit``, reading a
stream whose events are already there) is a cancel point every time and yields to the
scheduler at least once every this many calls."""
SCHEDULE_LAST: Final = SCHEDULE_EVERY - 1
REPLAY_SETTLE_PASSES: Final = 3
"""Scheduler passes a replayed request the journal holds nothing for waits before it is
called a divergence (see :meth:`Supervisor.request`)."""
# Module names for the per-event and per-token paths, where each of
# ``trio.lowlevel.x``'s two attribute lookups shows.
cancel_point = trio.lowlevel.checkpoint_if_cancelled
schedule_point = trio.lowlevel.cancel_shielded_checkpoint


class Run:
    """The live handle of one run, given to :meth:`Performer.perform`."""

    __slots__ = (
        "_backlog",
        "_gate",
        "_joining",
        "_last_sent",
        "_mailbox",
        "_run_id",
        "_unyielded",
        "actor_state",
        "context",
        "runtime",
    )

    def __init__(
        self,
        context: RunContext,
        mailbox: TracerMailbox,
        runtime: Supervisor,
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
        self._unyielded = 0  # emits since the last schedule point

    async def emit(self, chunk: Any) -> None:
        """Stream one chunk of this run's output (an ``on_*_stream`` event).

        Does not wait unless the tracer is far behind: while its mailbox is full,
        chunks wait in a small backlog (at most ``BACKLOG_LIMIT``) that goes to the
        tracer as one message, so a busy tracer gets each run's chunks in runs rather
        than one token per producer per pass. While a stream watching this run's tree
        is behind (its gate is closed), this waits for it.

        As every ``await`` on Troupe's API, it is a cancel point on every call (a
        cancelled producer's chunk is not sent), and it yields to the scheduler at
        least once every ``SCHEDULE_EVERY`` calls.
        """
        await cancel_point()
        if not self.emit_nowait(chunk):
            await self.flush()  # always a checkpoint
        elif self._unyielded < SCHEDULE_LAST:
            self._unyielded += 1
        else:
            self._unyielded = 0
            await schedule_point()

    async def emit_many(self, chunks: Sequence[Any]) -> None:
        """Stream several chunks at once, in order: one message to the tracer, however
        many chunks. For producers that have a run of chunks ready (a model that read
        several tokens off the wire, an instant model). A cancel point and a schedule
        point as :meth:`emit` is (counting calls, not chunks)."""
        await cancel_point()
        if not self.emit_many_nowait(chunks):
            await self.flush()  # always a checkpoint
        elif self._unyielded < SCHEDULE_LAST:
            self._unyielded += 1
        else:
            self._unyielded = 0
            await schedule_point()

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
            # mailbox.is_idle() and mailbox.waits_last(last) written out: this runs per
            # token, and the two calls cost 110 ns against 40 written out. The methods
            # are the definition; keep these two in step with them.
            if (
                mailbox.idle  # mailbox.is_idle(), inline
                and mailbox.sent == mailbox.taken
                and not mailbox.sending
                and mailbox.handler.deliver_now(self._run_id, chunk)
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
        catch up and for room in the tracer's mailbox. Always a checkpoint."""
        self._unyielded = 0
        await trio.lowlevel.checkpoint()
        if self._gate.closed:
            await self._gate.wait_open()
        backlog = self._backlog
        if backlog:
            self._backlog = None
            await self._mailbox.send(RunStreamedMany(self._run_id, tuple(backlog)))

    @property
    def holds_chunks(self) -> bool:
        """Whether chunks are held back (see :meth:`take_held`)."""
        return bool(self._backlog)

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
        self, target: Bindable[OutT], message: Any, config: RunConfig | None = None
    ) -> Coroutine[Any, Any, OutT]:
        """Ask another actor for something; its run becomes a child of this one.

        ``await run.request(tool, message)``. (A plain function handing back the
        runtime's coroutine: one frame less for every run waiting on a child.)
        """
        return self.runtime.request(target, message, config)


class ReplayingRun(Run):
    """A run replayed from its journal: what it streamed before is checked against the
    journal and dropped (see :mod:`runtime._replay`); then it streams as any run."""

    __slots__ = ()

    def emit_nowait(self, chunk: Any) -> bool:
        replay = self.context.replay
        if replay is not None and replay.replaying and replay.replays_emit("chunk", chunk):
            return True
        return super().emit_nowait(chunk)

    def emit_many_nowait(self, chunks: Sequence[Any]) -> bool:
        replay = self.context.replay
        if replay is not None and replay.replaying:
            fresh = [c for c in chunks if not replay.replays_emit("chunk", c)]
            return super().emit_many_nowait(fresh) if fresh else True
        return super().emit_many_nowait(chunks)

    async def dispatch_custom_event(self, name: str, data: Any = None) -> None:
        replay = self.context.replay
        if replay is not None and replay.replaying and replay.replays_emit("custom", (name, data)):
            await cancel_point()
            return
        await super().dispatch_custom_event(name, data)


@final
class Envelope:
    """A request in a mailbox: what to run, the message, who asks (the run context),
    how, where the answer goes, and the subscribers of the run it starts."""

    __slots__ = (
        "attachment",
        "config",
        "context",
        "decisions",
        "message",
        "parent",
        "performer",
        "rebuild_state",
        "replay",
        "reply",
        "resumed",
        "resumes",
        "subscriptions",
    )

    def __init__(
        self,
        performer: Performing[Any, Any],
        message: Any,
        parent: RunContext | None,
        config: RunConfig,
        reply: Reply,
        subscriptions: tuple[Subscription, ...] = (),
    ) -> None:
        self.performer = performer
        self.message = message
        self.parent = parent
        self.config = config
        self.reply = reply
        self.subscriptions = subscriptions
        self.attachment: Attachment | None = None
        """The callback handlers watching the run, if any."""
        self.context: contextvars.Context | None = None
        """The requester's context, for a request that waits in the mailbox: its task
        is started in it, as a request started at once is in the requester's own."""
        self.replay: Replay | None = None
        """What the run asked for before, if it is run again from a journal."""
        self.resumes: str | None = None
        """The journaled run this one runs again, if any."""
        self.decisions: Mapping[str, Decision] | None = None
        """A person's decisions, for a root run that resumes a paused one."""
        self.resumed: tuple[int, float] | None = None
        """For a run resumed under its own id: its last journaled seq and its start."""
        self.rebuild_state: dict[str, Any] | None = None
        """For a root run replayed from its journal: the state its tree began with, to
        rebuild (see ``StateCell.rebuild``)."""

    def refuse(self, error: BaseException) -> None:
        """Settle a request that will never be served: its run never starts."""
        self.close_subscriptions()
        self.reply.reject(error)

    def close_subscriptions(self) -> None:
        """End the streams of a run that never started (their readers see the end)."""
        for sub in self.subscriptions:
            sub.close()


RESOURCE_CLOSE_SECONDS: Final = 5.0
"""How long a closing actor may take to close what it holds."""


@final
class ActorCell:
    """One performer's actor inside a runtime.

    The cell holds its performer weakly when it can: once nothing else refers to the
    performer (a fresh ``Agent`` per request is common), no request can name it any
    more, so the actor stops and the runtime forgets it (``on_release``). Requests in
    the mailbox or in progress hold the performer, so it stays while it has work.
    """

    def __init__(
        self,
        performer: Performing[Any, Any],
        tracer_mailbox: TracerMailbox,
        runtime: Supervisor,
        on_release: Callable[[ActorCell], None],
    ) -> None:
        self.name = performer.name
        self._kind = performer.run_kind
        self._restart_limit = performer.restart_limit
        self._restart_window = performer.restart_window
        self._tracer = tracer_mailbox
        self._runtime = runtime
        self._send, self._inbox = trio.open_memory_channel[Envelope](performer.mailbox_size)
        self._state: Any = None
        self._crash: BaseException | None = None
        self._handlers: trio.Nursery
        # While the actor takes requests (no limit, not crashed, not closing): the
        # nursery where a requester starts its request's task itself. Saves the actor's
        # task a wake-up per request; the mailbox is for the rest (a limit to wait on,
        # a restart under way).
        self._direct: trio.Nursery | None = None
        # A request taken from the mailbox whose wait for the limit a crash cut off:
        # the restarted actor serves it first.
        self._carried: Envelope | None = None
        limit = performer.max_concurrency
        self._limit = trio.Semaphore(limit) if limit is not None else None
        # One name for all its request tasks (trio would build a string for each).
        self._request_task_name = f"troupe request to {performer.name}"
        self._on_release = on_release
        self.key = id(performer)
        """Where the runtime files this cell."""
        self._token = trio.lowlevel.current_trio_token()
        self._strong: Performing[Any, Any] | None = None
        try:
            self._ref: Callable[[], Performing[Any, Any] | None] = weakref.ref(
                performer, self._performer_gone
            )
        except TypeError:  # a performer class without __weakref__: kept for good
            self._strong = performer
            self._ref = lambda: self._strong

    def holds(self, performer: Performing[Any, Any]) -> bool:
        """Whether this is ``performer``'s actor (ids of dead objects are reused)."""
        return self._ref() is performer

    def _performer_gone(self, _: object) -> None:
        # Called by the garbage collector, maybe in another thread: forget the cell at
        # once (a dict pop is atomic), and let the actor's task stop from trio's thread.
        self._direct = None
        self._on_release(self)
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._send.close)

    def deliver_now(self, envelope: Envelope) -> bool:
        """:meth:`deliver` where the actor takes requests: start the request's task in
        its nursery at once (in this, the requester's, context). ``False``, touching
        nothing, where the request must go through the mailbox (a plain call: no
        coroutine for the common request)."""
        direct = self._direct
        if direct is not None and not self._runtime.closed:
            direct.start_soon(self._serve_one, envelope, name=self._request_task_name)
            return True
        return False

    async def deliver(self, envelope: Envelope) -> None:
        """Hand a request to the actor: while it takes requests, start the request's
        task in its nursery at once; else put the request in the mailbox (waits while
        it is full).

        Raises:
            RuntimeClosedError: the runtime is closing (or the actor has stopped).
        """
        # (Never await inside an ``except`` block: the exception, its traceback and
        # frames would stay alive for as long as the wait.)
        if self.deliver_now(envelope):
            return
        envelope.context = contextvars.copy_context()
        try:
            try:
                self._send.send_nowait(envelope)
                return
            except trio.WouldBlock:
                pass
            await self._send.send(envelope)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise RuntimeClosedError(
                f"the runtime is closed: cannot send to {self.name!r}"
            ) from None

    def _start(self, handlers: trio.Nursery, envelope: Envelope) -> None:
        # A request from the mailbox: its task runs in its requester's context.
        context = envelope.context
        if context is None:
            self._spawn(handlers, envelope)
        else:
            envelope.context = None
            context.run(self._spawn, handlers, envelope)

    def _spawn(self, handlers: trio.Nursery, envelope: Envelope) -> None:
        handlers.start_soon(self._serve_one, envelope, name=self._request_task_name)

    async def serve(self) -> None:
        """The supervisor: run the actor, restart it when it crashes, fail it when it
        crashes more often than its restart limit allows. When the runtime closes (or
        the performer is gone), every request still in the mailbox is refused."""
        crashes: deque[float] = deque()
        try:
            while True:
                crash = await self._run_until_crash()
                if crash is None:
                    return  # the performer is gone and the mailbox is empty
                now = trio.current_time()
                crashes.append(now)
                while crashes[0] < now - self._restart_window:
                    crashes.popleft()
                if len(crashes) > self._restart_limit:
                    await self._refuse_all(
                        ActorFailedError(
                            f"{self._kind} {self.name!r} crashed {len(crashes)} "
                            f"time{'s' if len(crashes) != 1 else ''} within "
                            f"{self._restart_window} s (restart limit "
                            f"{self._restart_limit}); last: {describe_error(crash)}"
                        )
                    )
                logger.warning(
                    "restarting %s %r after a crash: %s",
                    self._kind,
                    self.name,
                    describe_error(crash),
                )
        finally:
            self._send.close()
            self._on_release(self)
            # Nobody will take these up: refuse them, so no requester waits forever.
            carried, self._carried = self._carried, None
            if carried is not None:
                carried.refuse(RuntimeClosedError(f"the runtime closed before {self.name!r} ran"))
            while True:
                try:
                    envelope = self._inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                envelope.refuse(RuntimeClosedError(f"the runtime closed before {self.name!r} ran"))
            self._inbox.close()

    async def _run_until_crash(self) -> BaseException | None:
        """Open the actor's resources and serve requests until it crashes (the crash)
        or its performer is gone (``None``)."""
        self._crash = None
        resources = AsyncExitStack()
        # The scope that bounds closing is entered before the resources, not around
        # their closing: what an actor holds may hold a nursery or an anyio task group
        # (an MCP client's), which must be left in the cancel scope it was entered in.
        with trio.CancelScope() as closing:
            try:
                performer = self._ref()
                if performer is None:
                    return None
                try:
                    opener = performer.open_actor()
                    del performer  # the cell must not keep its performer alive
                    self._state = await resources.enter_async_context(opener)
                except Exception as exc:
                    return exc
                async with trio.open_nursery() as handlers:
                    self._handlers = handlers
                    await self._take_requests(handlers)
                return self._crash
            finally:
                # Closing (we are cancelled) or restarting: close what the actor holds,
                # e.g. an HTTP client's sockets, within a bounded grace period.
                closing.shield = True
                closing.deadline = trio.current_time() + RESOURCE_CLOSE_SECONDS
                await resources.aclose()
        return self._crash  # closing ran out of its grace period

    async def _take_requests(self, handlers: trio.Nursery) -> None:
        """Start a task for each request, until a crash cancels this (see _serve_one)
        or the mailbox is closed and empty."""
        if self._limit is None:
            self._direct = handlers
        try:
            await self._take_all(handlers)
        finally:
            self._direct = None

    async def _take_all(self, handlers: trio.Nursery) -> None:
        inbox = self._inbox
        limit = self._limit
        while True:
            envelope, self._carried = self._carried, None
            if envelope is None:
                try:
                    envelope = inbox.receive_nowait()
                except trio.WouldBlock:
                    envelope = None
                except trio.EndOfChannel:
                    return
            if envelope is None:
                try:
                    envelope = await inbox.receive()
                except trio.EndOfChannel:
                    return
            if limit is not None:
                try:
                    await limit.acquire()
                except BaseException:
                    if self._crash is not None and not self._runtime.closed:
                        self._carried = envelope  # for the restarted actor
                    else:
                        envelope.refuse(
                            RuntimeClosedError(f"the runtime closed before {self.name!r} ran")
                        )
                    raise
            self._start(handlers, envelope)

    async def _refuse_all(self, error: ActorFailedError) -> NoReturn:
        logger.error("%s", error)
        carried, self._carried = self._carried, None
        if carried is not None:
            carried.refuse(error)
        while True:
            envelope = await self._inbox.receive()
            envelope.refuse(error)

    async def _serve_one(self, envelope: Envelope) -> None:
        # One coroutine serves the whole request (no helper coroutine for the run):
        # the frames of the tasks waiting on each other are most of what an open run
        # costs, and thousands of runs may be open at once.
        reply = envelope.reply
        try:
            with trio.CancelScope() as scope:
                if not reply.attach(scope):
                    envelope.close_subscriptions()
                    return
                performer = envelope.performer
                message = envelope.message
                try:
                    context = child_context(  # (positional: see child_context)
                        envelope.parent,
                        performer.run_kind,
                        performer.name,
                        performer.tags,
                        performer.metadata,
                        envelope.config,
                        envelope.replay,
                        envelope.resumes,
                        envelope.decisions,
                        envelope.rebuild_state,
                    )
                    event_input = performer.event_input(message)
                    local = performer.local_metadata(message)
                    if envelope.resumes is not None and envelope.parent is not None:
                        # a step run again: it says which one (its interrupts are named
                        # by the first run of it, along a chain of resumes)
                        local = {**local, RESUMES_KEY: envelope.resumes}
                except Exception as exc:  # refused before it started
                    envelope.refuse(exc)
                    return
                run_id = context.run_id
                for sub in envelope.subscriptions:
                    sub.tx.gate = context.gate
                    await self._report(Subscribe(sub))
                resumed = envelope.resumed
                started = RunStarted(
                    run_id,
                    context.parent_ids,
                    context.kind,
                    context.name,
                    context.tags,
                    _with_local(context.metadata, local),
                    event_input,
                    resumed[0] if resumed is not None else None,
                    resumed[1] if resumed is not None else None,
                )
                if not self._report_now(started):
                    await self._report(started)
                # The task's context is its own (trio copies one for each task), and the
                # task ends with the run: nothing to reset (a token kept per open run).
                current_run_var.set(context)
                if current_runtime_var.get() is not self._runtime:
                    # The requester's context (a task outside the runtime's block, an
                    # HTTP server's request task): the runtime is current in every run.
                    current_runtime_var.set(self._runtime)
                if context.replay is None or not context.replay.replaying:
                    run = Run(context, self._tracer, self._runtime, self._state)
                else:
                    run = ReplayingRun(context, self._tracer, self._runtime, self._state)
                timeout = envelope.config.timeout
                try:
                    if timeout is None:
                        output = await performer.perform(message, run)
                    else:
                        output = await _perform_within(performer, message, run, timeout)
                    end = RunEnded(run_id, performer.event_output(output))
                except BaseException as exc:
                    await self._end_failed(run, exc, reply)
                    if _is_cancellation(exc):
                        raise
                else:
                    if run.holds_chunks:
                        await self._report_held(run)  # the chunks go before the end
                    if not self._report_now(end):
                        await self._report(end)
                    reply.resolve(output)
        finally:
            if self._limit is not None:
                self._limit.release()
            reply.settle_cancelled()

    async def _end_failed(self, run: Run, exc: BaseException, reply: Reply) -> None:
        """Report the failed run's end and settle its reply. Whatever the performer
        raised stays in this run: only a real cancellation goes on up (re-raised by the
        caller); everything else ends the run as an error. An exit (``KeyboardInterrupt``
        and the like) is settled as itself, also when a nursery of the performer's (an
        agent's parallel tool calls) holds it in a group."""
        if isinstance(exc, ActorCrash):
            self._direct = None  # before any wait: later requests go to the restarted actor
        await self._report_held(run)
        run_id = run.context.run_id
        if isinstance(exc, RunPaused):  # it waits for a person: it ended, paused
            paused = RunPaused(exc.pending, run_id)
            await self._report(RunEnded(run_id, Paused(exc.pending), paused=True))
            reply.reject(paused)
            return
        failure = reply.failure
        if failure is not None and _is_cancellation(exc):  # stopped by its journal
            await self._report(
                RunFailed(run_id, describe_error(failure), "error", exception=failure)
            )
            reply.reject(failure)
            return
        if _is_cancellation(exc):
            await self._report(RunFailed(run_id, "cancelled", "cancelled"))
            return
        error: BaseException = find_exit(exc) or exc
        if isinstance(exc, StopIteration | StopAsyncIteration):
            error = PerformerError(
                f"{run.context.kind} {run.context.name!r} raised {type(exc).__name__}"
            )
            error.__cause__ = exc
        elif _only_cancelled(exc) or isinstance(exc, trio.Cancelled):
            error = PerformerError(
                f"{run.context.kind} {run.context.name!r} raised trio.Cancelled outside "
                "any cancelled scope (raised by hand?)"
            )
            error.__cause__ = exc
        await self._report(RunFailed(run_id, describe_error(error), "error", exception=error))
        reply.reject(error)
        if isinstance(exc, ActorCrash) and self._crash is None:
            self._crash = exc
            self._handlers.cancel_scope.cancel()  # the supervisor restarts it

    async def _report_held(self, run: Run) -> None:
        held = run.take_held()
        if held is not None:
            await self._report(held)

    def _report_now(self, msg: TracerMail) -> bool:
        """:meth:`_report` without a wait: ``False`` if it must wait for room (a run's
        start and end call this first, sparing a coroutine where nothing waits)."""
        tracer = self._tracer
        if (
            tracer.idle  # tracer.is_idle(), inline
            and tracer.sent == tracer.taken
            and not tracer.sending
            and tracer.handler.handle_now(msg)
        ):
            return True  # the tracer had nothing to do: handled as it would have
        try:
            tracer.send_nowait(msg)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        return True

    async def _report(self, msg: TracerMail) -> None:
        # Lifecycle reports must get through even from a cancelled task (a terminal
        # event is never lost), as if the wait were shielded: a report never raises
        # Cancelled, and the task sees its cancellation at its next checkpoint. A
        # send that is cancelled has sent nothing, so only then is it sent again,
        # shielded: the common wait for room in a busy tracer's mailbox needs no
        # cancel scope of its own (thousands may wait at once).
        if self._report_now(msg):
            return
        try:
            await self._tracer.send(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        except trio.Cancelled:
            with (
                trio.CancelScope(shield=True),
                suppress(trio.ClosedResourceError, trio.BrokenResourceError),
            ):
                await self._tracer.send(msg)


async def _perform_within(
    performer: Performing[Any, Any], message: Any, run: Run, seconds: float
) -> Any:
    with trio.move_on_after(seconds):
        return await performer.perform(message, run)
    raise RunTimeoutError(
        f"run {run.context.name!r} did not finish within {seconds} s (its timeout)"
    )


def _with_local(metadata: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    # Merged only when both have keys: metadata dicts are read-only and shared, and a
    # new one for each of thousands of open runs would be most of what they cost.
    if not local:
        return metadata
    if not metadata:
        return local
    return {**metadata, **local}


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is trio cancelling this task (not a ``Cancelled`` raised by hand
    where nothing is cancelled)."""
    cancelled = isinstance(exc, trio.Cancelled) or _only_cancelled(exc)
    return cancelled and trio.current_effective_deadline() == -math.inf


def _only_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is a group holding nothing but ``trio.Cancelled``."""
    return isinstance(exc, BaseExceptionGroup) and (
        exc.subgroup(lambda e: not isinstance(e, trio.Cancelled | BaseExceptionGroup)) is None
    )


class Supervisor:
    """The core of a runtime: it owns every actor (one per performer, started the
    first time it is asked for something and stopped once the performer is gone), the
    tracer and the service tasks, and starts runs. :class:`~runtime.Runtime` adds the
    public ways to run and watch things in it."""

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
        self._journal: Journal | None = None
        self._resumable: dict[str, Performing[Any, Any]] = {}

    @property
    def journal(self) -> Journal | None:
        """The run journal, when the runtime has a store."""
        return self._journal

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

    def cell(self, performer: Performing[Any, Any]) -> ActorCell:
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
        current_runtime_var.set(self)
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

    async def request(
        self, target: Bindable[OutT], message: Any, config: RunConfig | None = None
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
        step = None
        if parent is not None and parent.replay is not None and not parent.replay.empty:
            replay = parent.replay
            kind, name = performer.run_kind, config.run_name or performer.name
            shown = performer.event_input(message)
            step = replay.take(kind, name, shown)
            if step is None and replay.answers_left:
                # Requests made at the same time as this one (an agent's parallel tool
                # calls) take theirs first, in any order; what is left after that was
                # asked differently before.
                for _ in range(REPLAY_SETTLE_PASSES):
                    await schedule_point()
                replay.check(kind, name, shown)
            if step is not None and step.answered:  # answered from the journal
                if parent.state is not None and step.patches:
                    parent.state.replayed(step.patches)  # what it did to the state
                await cancel_point()
                if step.status == "ok":
                    return replay.answer(step)  # type: ignore[no-any-return]  # as journaled
                raise JournaledError(step.error or "error", step.error_type)
        if parent is not None and parent.gate is not None and parent.gate.closed:
            await parent.gate.wait_open()  # a stream watching this tree is behind
        reply = Reply()
        envelope = await self.start(performer, message, config, reply, step=step)
        attachment = envelope.attachment
        journaled = parent is None and self._journal is not None  # a root run's end
        try:
            try:
                result: OutT = await reply.result()
            finally:
                if not reply.taken:
                    envelope.close_subscriptions()  # the run never started
            if attachment is not None:
                await attachment.wait()  # the handlers have seen the run's end
            if journaled:  # (reply.result() was the call's cancel point)
                await self.durable(envelope)
            return result
        except Exception:
            if attachment is not None:
                await attachment.wait()  # ... also when it failed
            if journaled:
                await self.durable(envelope)  # ... and its end is journaled
            raise
        finally:
            self.release(envelope)

    async def start(
        self,
        performer: Performing[Any, Any],
        message: Any,
        config: RunConfig,
        reply: Reply,
        watcher: Subscription | None = None,
        *,
        step: Step | None = None,
        recovered: _Replaying | None = None,
    ) -> Envelope:
        """Start a run: the one way every run starts, whoever asks (a stream,
        ``invoke``, a run asking another actor, an edge through ``Runtime``'s methods).

        The run is a child of the calling code's run, if any, and takes the settings
        that run passes down; a root run gets the root metadata. It holds its id
        (``config.run_id``; one is made if callbacks watch a run without one) until
        :meth:`release`; ``watcher`` (a stream's subscription) and the config's
        callbacks are attached to it; and the request goes to the performer's actor
        (waiting while its mailbox is full). The envelope returned carries the run's
        final settings and its callbacks' attachment; ``reply`` its outcome. ``step``:
        the journaled request a replayed run's request repeats (it runs again,
        replaying what it asked for in turn).

        Raises:
            RuntimeClosedError: the runtime is closing (a :class:`RunCancelledError`).
            ValueError: the run's id is in use by a run in progress.
        """
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        parent = current_run_var.get()
        config = unwatched(parent, config)
        journal = self._journal if parent is None else None
        if parent is None:
            config = with_root_metadata(config)
        run_id = config.run_id
        if run_id is None and (config.callbacks or journal is not None):
            run_id = new_run_id()
            config = config.with_run_id(run_id)
        if journal is not None and run_id is not None and journal.writing(run_id):
            # A run that had the id ended and was released, but its end is not yet
            # durable: a run under the same id would be journaled into its tree.
            raise ValueError(
                f"run_id {run_id!r} is already in use: the journal of the run that had it "
                "is still being written"
            )
        if run_id is not None:
            self.claim_run_id(run_id)
        try:
            replaying = recovered
            if journal is not None and recovered is None:
                assert run_id is not None
                message, replaying = await _journaled(journal, performer, message, config, reply)
            elif parent is None and config.resume is not None:
                raise NoStoreError(
                    "resuming a paused run needs its journal: open the runtime with a store"
                )
            subscriptions: tuple[Subscription, ...] = () if watcher is None else (watcher,)
            attachment = None
            if config.callbacks:
                attachment = Attachment()
                subscriptions += tuple(attachment.watch(self, run_id, config.callbacks))
            envelope = Envelope(performer, message, parent, config, reply, subscriptions)
            envelope.attachment = attachment
            if step is not None:  # run again under a new id: its chunks streamed anew
                envelope.replay = step.replay.rerun()
                envelope.resumes = step.origin
            elif replaying is not None:
                envelope.replay = replaying.replay
                envelope.resumes = replaying.resumes
                envelope.decisions = replaying.decisions
                envelope.resumed = replaying.resumed
                envelope.rebuild_state = replaying.state
            try:
                cell = self.cell(performer)
                if not cell.deliver_now(envelope):
                    await cell.deliver(envelope)
            except BaseException:
                envelope.close_subscriptions()  # the run never started
                raise
        except BaseException:
            if run_id is not None:
                self.release_run_id(run_id)
                if journal is not None:  # it never started: nothing of it is kept
                    with trio.CancelScope(shield=True):
                        await journal.never_started(run_id)
            raise
        return envelope

    def release(self, envelope: Envelope) -> None:
        """The run :meth:`start` started is over for its requester: its id is free."""
        run_id = envelope.config.run_id
        if run_id is not None:
            self._claimed.discard(run_id)
            if self._journal is not None and envelope.parent is None:
                self._journal.forget(run_id, started=envelope.reply.taken)

    async def _recover(self, run: RunRecord, owner: Owner) -> bool:
        """Resume the root run ``run`` whose process (``owner``) died, by replay under
        its own id, if its performer is one this runtime may resume (else it is ended
        with error events); whether it was resumed (or taken by another process)."""
        performer = self._resumable.get(run.performer)
        journal = self._journal
        if performer is None or journal is None or self._closed or self._actors is None:
            return False
        journaled = await journal.take_over(run, owner)
        if journaled is None:
            return True  # another process took it
        self._actors.start_soon(self._run_recovered, performer, run, journaled)
        return True

    async def _run_recovered(
        self, performer: Performing[Any, Any], run: RunRecord, journaled: JournaledRun
    ) -> None:
        journal = self._journal
        assert journal is not None
        kept = run.config
        config = RunConfig(
            run_name=kept.get("run_name"),
            tags=tuple(kept.get("tags", ())),
            metadata=dict(kept.get("metadata", {})),
            run_id=run.run_id,
            timeout=kept.get("timeout"),
        )
        reply = Reply()
        try:
            message = performer.coerce_input(journaled.input)
            messages = None
            if run.thread_id is not None:
                skip = _thread_loaded(kept)

                def messages(output: Any) -> Sequence[Any]:
                    return performer.conversation(message, output)[skip:]

            journal.expect(
                run.run_id,
                config=kept,
                thread_id=run.thread_id,
                messages=messages,
                reply=reply,
                resumed_at=journaled.position,
                known=journaled.replay.known,
            )
            replaying = _Replaying(
                journaled.replay,
                run.config.get("origin") or run.run_id,
                journaled.decisions,
                None if journaled.fresh else (journaled.last_seq, journaled.start),
                _kept_state(kept),
            )
            envelope = await self.start(performer, message, config, reply, recovered=replaying)
        except Exception as exc:
            journal.forget(run.run_id, started=False)
            why = f"the run could not be resumed: {describe_error(exc)}"
            logger.error("run %s: %s", run.run_id, why)
            # its record, this process's since the take-over, would say running for
            # the process's life: it ends as a run no one resumes does (if the runtime
            # closes first, the next process's sweep ends it)
            await journal.end_unrecovered(run.run_id, why)
            return
        try:
            with suppress(Exception):
                await reply.result()
            with suppress(Exception):
                await self.durable(envelope)
        finally:
            self.release(envelope)

    async def durable(self, envelope: Envelope) -> None:
        """With a store: wait until the root run :meth:`start` started has its terminal
        event in the journal (a run's caller hears of its end only then); for one that
        never started, until a resume's claim of it says so. A cancel point.

        Raises:
            JournalError: the journal could not record the run's end.
        """
        journal = self._journal
        run_id = envelope.config.run_id
        if journal is None or envelope.parent is not None or run_id is None:
            await cancel_point()
            return
        reply = envelope.reply
        if reply.settled and not reply.taken:  # it never started, nor will
            await journal.never_started(run_id)
            return
        await journal.durable(run_id)

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
        if not checked:
            await trio.lowlevel.checkpoint()  # each handler's subscription is one
        attachment = Attachment(self._resubscribe)
        for sub in attachment.watch(self, None, checked, capacity, drop_oldest=drop_oldest):
            await self.send_to_tracer(Subscribe(sub))
        return attachment

    async def _resubscribe(self, subscription: Subscription) -> None:
        await self.send_to_tracer(Subscribe(subscription))

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
        """Post mail to the tracer (subscriptions, lifecycle). A checkpoint, as a
        trio channel's ``send`` is."""
        await cancel_point()
        mailbox = self._tracer.mailbox
        try:
            try:
                mailbox.send_nowait(mail)
                sent = True
            except trio.WouldBlock:
                sent = False
            if sent:
                await schedule_point()
            else:
                await mailbox.send(mail)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise RuntimeClosedError("the runtime is closed") from None

    def start_service(self, fn: Any, *args: Any, name: str | None = None) -> None:
        """Start a task that lives until the runtime has closed (a subscriber actor)."""
        self._services.start_soon(self._serve_service, fn, args, name=name)

    async def _serve_service(self, fn: Any, args: tuple[Any, ...]) -> None:
        current_runtime_var.set(self)
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
async def open_supervisor(
    make: Callable[[trio.Nursery, Tracer, float], SupervisorT],
    *,
    tracer_capacity: int = DEFAULT_TRACER_CAPACITY,
    callbacks: Iterable[Any] = (),
    close_grace: float = CLOSE_GRACE_SECONDS,
    journal: Journal | None = None,
    performers: Iterable[Performing[Any, Any]] = (),
) -> AsyncIterator[SupervisorT]:
    """What :func:`~runtime.open_runtime` does (see there), for the runtime ``make``
    builds from its service nursery, tracer and grace; ``journal`` (opened) records
    its runs and is closed with it."""
    positive_int(tracer_capacity, "tracer_capacity")
    grace = seconds(close_grace, "close_grace", allow_zero=True)
    require_trio("open_runtime")
    handlers = check_subscribers(callbacks)
    tracer = Tracer(tracer_capacity)
    body_error: BaseException | None = None
    failed: BaseExceptionGroup[BaseException] | None = None
    runtime: SupervisorT | None = None
    try:
        async with trio.open_nursery() as services:
            runtime = make(services, tracer, grace)
            runtime.start_service(tracer.serve, name="troupe tracer")
            if journal is not None:
                runtime._journal = journal
                runtime.start_service(journal.serve, name="troupe journal")
                tracer.recorder = journal.recorder
                runtime._resumable = {p.name: p for p in performers if p.resumable}
                journal.recoverer = runtime._recover
            try:
                async with trio.open_nursery() as actors:
                    runtime._actors = actors
                    token = current_runtime_var.set(runtime)
                    try:
                        if handlers:
                            await runtime.subscribe(*handlers)
                        if journal is not None:
                            await journal.sweep()  # runs of processes that died
                        yield runtime
                    except BaseException as exc:
                        body_error = exc
                    finally:
                        current_runtime_var.reset(token)
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


@final
class _Replaying:
    """How a root run is run again from a journal."""

    __slots__ = ("decisions", "replay", "resumed", "resumes", "state")

    def __init__(
        self,
        replay: Replay,
        resumes: str,
        decisions: Mapping[str, Decision] | None = None,
        resumed: tuple[int, float] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.replay = replay
        self.resumes = resumes
        self.decisions = decisions
        self.resumed = resumed
        self.state = state
        """The journaled state the run's tree began with, to rebuild (``None``: the
        run's own config says its state)."""


async def _journaled(
    journal: Journal,
    performer: Performing[Any, Any],
    message: Any,
    config: RunConfig,
    reply: Reply,
) -> tuple[Any, _Replaying | None]:
    """Tell the journal of a root run about to start: for a run on a thread, the
    request with the thread's history put in; for one that resumes a paused run, the
    paused run's request and how to replay it."""
    run_id = config.run_id
    assert run_id is not None
    thread_id = config.thread_id
    replaying = None
    loaded = None
    kept: dict[str, Any] = {
        key: value
        for key, value in (
            ("run_name", config.run_name),
            ("tags", list(config.tags)),
            ("metadata", json_entries(config.metadata)),  # (a dict, not escaped)
            ("timeout", config.timeout),
            ("state", config.state),
        )
        if value
    }
    recorded = None
    if config.resume is not None:
        record, journaled, decisions, message = await journal.claim(
            run_id, reply, partial(_paused, journal, config.resume, performer, run_id, kept)
        )
        recorded = 0  # its record is kept with the claim: its journal begins empty
        thread_id = record.thread_id
        if thread_id is not None:  # the history its request was made with
            loaded = _thread_loaded(record.config)
        replaying = _Replaying(
            journaled.replay,
            _origin(record),
            {**journaled.decisions, **decisions},
            # the client's state, if it sent one (AG-UI's source of truth), else the
            # paused run's, rebuilt
            state=_kept_state(record.config) if config.state is None else None,
        )
    elif thread_id is not None:
        history = await journal.thread_history(thread_id)
        message = performer.with_history(message, history)
        loaded = len(history)
        kept[THREAD_LOADED] = loaded
    messages = None
    if loaded is not None:
        request, skip = message, loaded

        def messages(output: Any) -> Sequence[Any]:
            return performer.conversation(request, output)[skip:]

    journal.expect(
        run_id,
        config=kept,
        thread_id=thread_id,
        messages=messages,
        reply=reply,
        resumed_at=recorded,
        known=replaying.replay.known if replaying is not None else None,
    )
    return message, replaying


THREAD_LOADED: Final = "thread_loaded"
"""In a run's kept settings: how many of its thread's messages its request was made
with (a resume, or a recovery, appends the run's new messages after those)."""


def _thread_loaded(kept: Mapping[str, Any]) -> int:
    loaded = kept.get(THREAD_LOADED, 0)
    return loaded if isinstance(loaded, int) else 0


def _kept_state(kept: Mapping[str, Any]) -> dict[str, Any]:
    """The shared state a run began with, as its kept settings hold it."""
    state = kept.get("state")
    return state if isinstance(state, dict) else {}


def _origin(record: RunRecord) -> str:
    """The run a chain of resumes began with (interrupts are named by it)."""
    origin = record.config.get("origin")
    return origin if isinstance(origin, str) else record.run_id


def _paused(
    journal: Journal,
    resume: Resume,
    performer: Performing[Any, Any],
    by: str,
    kept: dict[str, Any],
) -> tuple[RunRecord, JournaledRun, dict[str, Decision], Any]:
    """The paused run ``resume`` names, the decisions for it and its input as
    ``performer`` takes it, checked; then the run is claimed for the run ``by`` of
    ``performer`` (whose record, with ``kept`` and what it resumes, is kept with the
    claim; nothing changes if anything is wrong).
    Blocking: one worker thread reads, checks and claims (a resume waits for the store
    once before it replays).

    Raises:
        UnknownRunError: there is no such run.
        RunNotPausedError: it is not paused, or another run resumed it.
        ValueError: the decisions do not answer what it waits for.
        TypeError: ``performer`` does not take the paused run's input.
    """
    record, journaled = journal.read_run_now(resume.run_id)
    if record.status != "paused":
        raise RunNotPausedError(
            f"run {resume.run_id!r} is {record.status}, not paused: only a paused run "
            "can be resumed"
        )
    if record.resumed_by is not None:
        raise RunNotPausedError(
            f"run {resume.run_id!r} was resumed already (by run {record.resumed_by!r})"
        )
    decisions = _decisions(journaled, resume.decisions)
    message = performer.coerce_input(journaled.input)
    kept["resumes"] = resume.run_id
    kept["origin"] = _origin(record)
    if "state" not in kept and "state" in record.config:  # the state it began with
        kept["state"] = record.config["state"]
    if THREAD_LOADED in record.config:
        kept[THREAD_LOADED] = record.config[THREAD_LOADED]
    kept["decisions"] = {key: unstructure_any(d) for key, d in decisions.items()}
    claim = RunRecord(
        run_id=by,
        performer=performer.name,
        kind=performer.run_kind,
        input=journaled.raw_input,
        config=kept,
        thread_id=record.thread_id,
        owner=journal.owner.owner_id,
        created_at=time.time(),
    )
    if not journal.store.mark_resumed(resume.run_id, claim):
        raise RunNotPausedError(f"run {resume.run_id!r} was resumed already")
    return record, journaled, decisions, message


def _decision(key: str, value: Mapping[str, Any]) -> Decision:
    """An approval's decision given as a dict, checked.

    Raises:
        ValueError: unknown keys, or a field of the wrong type (named).
    """
    unknown = sorted(set(value) - {"approve", "reason", "arguments"})
    if unknown:
        raise ValueError(f"decisions[{key!r}]: unknown keys {unknown}")
    approve, reason, arguments = (
        value.get("approve", True),
        value.get("reason"),
        value.get("arguments"),
    )
    if not isinstance(approve, bool):
        raise ValueError(f"decisions[{key!r}].approve must be true or false, got {approve!r:.40}")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"decisions[{key!r}].reason must be a string, got {reason!r:.40}")
    if arguments is not None and not isinstance(arguments, dict):
        raise ValueError(f"decisions[{key!r}].arguments must be an object, got {arguments!r:.40}")
    return Decision(approve=approve, reason=reason, arguments=arguments)


def _decisions(journaled: JournaledRun, given: Mapping[str, Any]) -> dict[str, Decision]:
    """The decisions for a paused run's pending requests: one for each, none for
    anything else. ``True``/``False`` approves or denies a call; a dict holds a
    :class:`Decision`'s fields; for an interrupt, any other value is what
    ``interrupt()`` returns.

    Raises:
        ValueError: a decision for a request the run does not wait for, or none for one
            it does (the message names it).
    """
    paused = journaled.paused
    pending = paused.pending if paused is not None else ()
    by_id = {request.id: request for request in pending}
    if not isinstance(given, Mapping):
        raise TypeError(f"decisions must be a dict by request id, got {type(given).__name__}")
    unknown = [key for key in given if key not in by_id]
    if unknown:
        raise ValueError(
            f"decisions[{unknown[0]!r}]: the paused run waits for no such request "
            f"(it waits for {sorted(by_id)})"
        )
    missing = [key for key in by_id if key not in given]
    if missing:
        raise ValueError(f"decisions[{missing[0]!r}]: the paused run waits for a decision on it")
    decisions: dict[str, Decision] = {}
    for key, value in given.items():
        request = by_id[key]
        if isinstance(value, Decision):
            decisions[key] = value
        elif request.kind == "approval" and isinstance(value, bool):
            decisions[key] = Decision(approve=value)
        elif request.kind == "approval" and isinstance(value, Mapping):
            decisions[key] = _decision(key, value)
        elif request.kind == "approval":
            raise ValueError(
                f"decisions[{key!r}]: an approval takes true, false or "
                f"{{'approve': ..., 'reason': ..., 'arguments': ...}}, got {value!r:.80}"
            )
        else:
            decisions[key] = Decision(value=value)
    return {key: attrs.evolve(d, request=by_id[key]) for key, d in decisions.items()}


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
