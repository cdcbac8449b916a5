"""Live runs of a server: each keeps a bounded replay buffer of its events, so that
other clients can join it (``GET /runs/{run_id}/stream``) and a client that lost its
connection can resume from ``Last-Event-ID``."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import trio

from protocol import StreamEvent
from runtime import Attachment, RunConfig, RunRecord

if TYPE_CHECKING:
    from ._wire import WireEncoder


class ServedStream(Protocol):
    """What the server needs of a run's event stream: a ``runtime.EventStream``, a
    local run's or (``runtime.HostedStream``) a cluster's."""

    run_id: str

    @property
    def output(self) -> Any:
        """The run's output once it has ended well."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> Any: ...

    async def __anext__(self) -> Any: ...

    def ready(self, limit: int) -> list[StreamEvent]:
        """Events already waiting."""

    def cancel(self) -> None:
        """Cancel the run; its last events still arrive."""


class RunHost(Protocol):
    """Where the server runs its performers: a ``runtime.Runtime``, or a cluster's
    ``actors.ray.RayRuntime``."""

    @property
    def closed(self) -> bool:
        """Whether it is closing or closed."""

    def astream_events(
        self, target: Any, input: Any, config: RunConfig | None = None, *, run_id: str
    ) -> ServedStream:
        """A stream of a new run's events (``config.resume``: the paused run it resumes)."""

    async def get_run(self, run_id: str) -> RunRecord:
        """The store's record of a root run (raises ``NoStoreError`` without a store,
        ``UnknownRunError`` for no such run)."""

    async def subscribe(self, *handlers: Any, drop_oldest: bool, capacity: int) -> Attachment:
        """Attach handlers to every run from now on."""


DEFAULT_REPLAY: Final = 10_000
"""Events each live run keeps for clients that join it late."""
FINISHED_KEPT: Final = 100
"""Finished runs kept (with their buffers) for clients that come to read the end."""
FINISHED_BYTES: Final = 32 << 20
"""Request bytes (inputs, configs) of the finished runs kept: their events hold their
inputs, and 150 runs of 0.9 MB held 200 MB after they ended."""


@final
class LiveRun:
    """One run being served: its stream, and its recent events by position."""

    def __init__(
        self,
        run_id: str,
        stream: ServedStream,
        replay: int,
        *,
        owner: str | None = None,
        performer: str = "",
        detached: bool = False,
        size: int = 0,
        thread_id: str | None = None,
        chat: str | None = None,
        wire: tuple[str, Callable[[], WireEncoder]] | None = None,
    ) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.chat = chat
        """The conversation a frontend names the run's by (a ``useChat`` id, an AG-UI
        ``threadId``): what ``GET /api/chat/{id}/stream`` finds it by."""
        self.wire = wire
        """The protocol the run was started in, and how its own stream's encoder is
        made: a client that rejoins in that protocol is given the same stream."""
        self.size = size
        self.stream = stream
        self.owner = owner
        self.performer = performer
        self.detached = detached
        self.started = time.time()
        # The last events, oldest first; their positions run up to ``position`` (one
        # event costs the buffer a pointer, not a (position, event) pair as well).
        self.events: deque[StreamEvent] = deque(maxlen=replay)
        self.position = 0
        self.finished = False
        self.error: BaseException | None = None
        self._changed: trio.Event | None = None  # made by the first who waits

    def publish(self, event: StreamEvent) -> int:
        """Record the next event; returns its position (from 1)."""
        self.position += 1
        self.events.append(event)
        changed = self._changed  # (self._wake(), written out: this runs per token)
        if changed is not None:
            self._changed = None
            changed.set()
        return self.position

    def finish(self, error: BaseException | None) -> None:
        """The run's stream has ended (``error``: how the run failed, if it did)."""
        self.finished = True
        self.error = error
        self._wake()

    def _wake(self) -> None:
        # Most runs are read by their own stream alone: no event to set per token.
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    def after(self, position: int) -> list[tuple[int, StreamEvent]] | None:
        """The buffered events after ``position``; ``None`` if some of them are no
        longer buffered."""
        events = self.events
        first = self.position - len(events) + 1  # the oldest buffered event's position
        if position < self.position and first > position + 1:
            return None
        skip = max(0, position - first + 1)
        return list(enumerate(islice(events, skip, None), start=first + skip))

    async def wait_changed(self) -> None:
        """Wait for the next event, or the end."""
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()


@final
class LiveRuns:
    """The server's live runs, and the last few finished ones."""

    def __init__(self, replay: int = DEFAULT_REPLAY) -> None:
        self.replay = replay
        self._live: dict[str, LiveRun] = {}
        self._finished: OrderedDict[str, LiveRun] = OrderedDict()
        self._detached = 0
        self._finished_bytes = 0
        self._threads: dict[str, dict[str, LiveRun]] = {}  # the live runs on each thread
        self._chats: dict[str, LiveRun] = {}  # each conversation's latest live run

    def add(
        self,
        run_id: str,
        stream: ServedStream,
        *,
        owner: str | None = None,
        performer: str = "",
        detached: bool = False,
        size: int = 0,
        thread_id: str | None = None,
        chat: str | None = None,
        wire: tuple[str, Callable[[], WireEncoder]] | None = None,
    ) -> LiveRun:
        """Register a run being served (``size``: its request's bytes; ``thread_id``:
        the stored thread it runs on; ``chat``: the conversation a frontend names;
        ``wire``: its protocol, and how its stream's encoder is made)."""
        live = self._live[run_id] = LiveRun(
            run_id,
            stream,
            self.replay,
            owner=owner,
            performer=performer,
            detached=detached,
            size=size,
            thread_id=thread_id,
            chat=chat,
            wire=wire,
        )
        self._detached += detached
        if thread_id is not None:
            self._threads.setdefault(thread_id, {})[run_id] = live
        if chat is not None:
            self._chats[chat] = live
        return live

    def done(self, live: LiveRun, error: BaseException | None) -> None:
        """A run's stream ended: keep it a while for late readers."""
        if live.finished:
            return
        live.finish(error)
        self._detached -= live.detached
        self._live.pop(live.run_id, None)
        if live.chat is not None and self._chats.get(live.chat) is live:
            del self._chats[live.chat]
        if live.thread_id is not None:
            on_thread = self._threads.get(live.thread_id, {})
            on_thread.pop(live.run_id, None)
            if not on_thread:
                self._threads.pop(live.thread_id, None)
        self._finished[live.run_id] = live
        self._finished_bytes += live.size
        while len(self._finished) > FINISHED_KEPT or (
            self._finished_bytes > FINISHED_BYTES and len(self._finished) > 1
        ):
            _, gone = self._finished.popitem(last=False)
            self._finished_bytes -= gone.size
            if gone.error is not None:
                # Its traceback's frames hold the run's stream and reply, which hold the
                # error: a cycle that kept a failed run's input alive until a full
                # collection. Nobody reads an evicted run's traceback.
                gone.error.__traceback__ = None

    def get(self, run_id: str) -> LiveRun | None:
        """A live or recently finished run."""
        return self._live.get(run_id) or self._finished.get(run_id)

    def forget(self, run_id: str) -> None:
        """Forget a finished run (its store deleted it)."""
        gone = self._finished.pop(run_id, None)
        if gone is not None:
            self._finished_bytes -= gone.size

    def chat(self, chat_id: str) -> LiveRun | None:
        """The latest run still being served in the conversation ``chat_id``."""
        return self._chats.get(chat_id)

    def on_thread(self, thread_id: str) -> list[LiveRun]:
        """The runs still being served on a stored thread."""
        return list(self._threads.get(thread_id, {}).values())

    def live(self) -> list[LiveRun]:
        """The runs still being served."""
        return list(self._live.values())

    @property
    def detached(self) -> int:
        """How many detached runs are still going."""
        return self._detached

    def summary(self, live: LiveRun) -> dict[str, Any]:
        """What ``GET /runs`` says of a live run."""
        return {
            "run_id": live.run_id,
            "performer": live.performer,
            "detached": live.detached,
            "started_at": live.started,
            "events": live.position,
            "owner": live.owner,
            "status": _status(live),
            "thread_id": live.thread_id,
        }


def _status(live: LiveRun) -> str:
    if not live.finished:
        return "running"
    last = live.events[-1] if live.events else None
    if last is not None and last.status is not None and last.run_id == live.run_id:
        return last.status
    return "ok" if live.error is None else "error"
