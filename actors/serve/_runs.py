"""Live runs of a server: each keeps a bounded replay buffer of its events, so that
other clients can join it (``GET /runs/{run_id}/stream``) and a client that lost its
connection can resume from ``Last-Event-ID``."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Final, final

import trio

from protocol import StreamEvent
from runtime import EventStream

DEFAULT_REPLAY: Final = 10_000
"""Events each live run keeps for clients that join it late."""
FINISHED_KEPT: Final = 100
"""Finished runs kept (with their buffers) for clients that come to read the end."""


@final
class LiveRun:
    """One run being served: its stream, and its recent events by position."""

    def __init__(self, run_id: str, stream: EventStream, replay: int) -> None:
        self.run_id = run_id
        self.stream = stream
        self.events: deque[tuple[int, StreamEvent]] = deque(maxlen=replay)
        self.position = 0
        self.finished = False
        self.error: BaseException | None = None
        self._changed = trio.Event()

    def publish(self, event: StreamEvent) -> int:
        """Record the next event; returns its position (from 1)."""
        self.position += 1
        self.events.append((self.position, event))
        self._wake()
        return self.position

    def finish(self, error: BaseException | None) -> None:
        """The run's stream has ended (``error``: how the run failed, if it did)."""
        self.finished = True
        self.error = error
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def after(self, position: int) -> list[tuple[int, StreamEvent]] | None:
        """The buffered events after ``position``; ``None`` if some of them are no
        longer buffered."""
        events = self.events
        if position < self.position and events and events[0][0] > position + 1:
            return None
        return [(p, e) for p, e in events if p > position]

    async def wait_changed(self) -> None:
        """Wait for the next event, or the end."""
        await self._changed.wait()


@final
class LiveRuns:
    """The server's live runs, and the last few finished ones."""

    def __init__(self, replay: int = DEFAULT_REPLAY) -> None:
        self.replay = replay
        self._live: dict[str, LiveRun] = {}
        self._finished: OrderedDict[str, LiveRun] = OrderedDict()

    def add(self, run_id: str, stream: EventStream) -> LiveRun:
        """Register a run being served."""
        live = self._live[run_id] = LiveRun(run_id, stream, self.replay)
        return live

    def done(self, live: LiveRun, error: BaseException | None) -> None:
        """A run's stream ended: keep it a while for late readers."""
        live.finish(error)
        self._live.pop(live.run_id, None)
        self._finished[live.run_id] = live
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)

    def get(self, run_id: str) -> LiveRun | None:
        """A live or recently finished run."""
        return self._live.get(run_id) or self._finished.get(run_id)

    def live(self) -> list[LiveRun]:
        """The runs still being served."""
        return list(self._live.values())
