"""Collecting the events of runs under test, with the faults a test asks for."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import trio
from attrs import frozen

from protocol import StreamEvent
from runtime import HandlerError, RunConfig, Runnable

from .._callbacks import AsyncCallbackHandler

TREE_WAIT_SECONDS: Final = 10.0
"""How long :func:`run_events` waits for its collector to see the run's end."""


@frozen
class Faults:
    """Faults a test asks for beside the model's script.

    ``cancel_at``: the consumer leaves after this many events. ``handler_raises_at``: a
    callback handler raises on its n-th event (the run must not notice).
    """

    cancel_at: int | None = None
    handler_raises_at: int | None = None


class EventCollector(AsyncCallbackHandler):
    """A callback handler that keeps every event it is given, in order.

    Attach it to a run (``callbacks=[collector]``) to see every event of the run's tree,
    or to a runtime (``rt.subscribe(collector)``) to see every run's. Iterating it (or
    ``events``) gives the events so far.
    """

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self.ended: list[str] = []
        """The ids of the root runs whose terminal event has arrived, in order."""
        self._ended: dict[str, trio.Event] = {}
        self._change = trio.Event()

    def __iter__(self) -> Iterator[StreamEvent]:
        """The events so far, in order (``for event in troupe_events``)."""
        return iter(list(self.events))

    def __len__(self) -> int:
        return len(self.events)

    def __bool__(self) -> bool:  # a handler is there even before its first event
        return True

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)
        if event.is_terminal and not event.parent_ids:
            self.ended.append(event.run_id)
            self._ended.setdefault(event.run_id, trio.Event()).set()
            self._change.set()
            self._change = trio.Event()

    async def wait_for_runs(self, count: int, seconds: float = TREE_WAIT_SECONDS) -> None:
        """Wait until the terminal events of ``count`` root runs have arrived: a handler
        watches runs, it does not hold them up, so it may be behind the code that
        awaited them.

        Raises:
            TimeoutError: fewer had arrived after ``seconds``.
        """
        with trio.move_on_after(seconds):
            while len(self.ended) < count:
                await self._change.wait()
            return
        raise TimeoutError(f"{len(self.ended)} of {count} runs had ended after {seconds} s")

    def trees(self) -> list[list[StreamEvent]]:
        """The events of each root run that has ended, one list per run, in end order."""
        return [self.of_tree(root) for root in self.ended]

    async def wait_for_end(self, root_run_id: str, seconds: float = TREE_WAIT_SECONDS) -> None:
        """Wait until the root run's terminal event has arrived.

        Raises:
            TimeoutError: it did not arrive within ``seconds``.
        """
        with trio.move_on_after(seconds):
            await self._ended.setdefault(root_run_id, trio.Event()).wait()
            return
        raise TimeoutError(f"run {root_run_id} did not end within {seconds} s")

    def of_tree(self, root_run_id: str) -> list[StreamEvent]:
        """The events of one run tree, in the order they came."""
        return [
            e
            for e in self.events
            if e.run_id == root_run_id or (e.parent_ids and e.parent_ids[0] == root_run_id)
        ]


class RaisingHandler(AsyncCallbackHandler):
    """A handler with a bug: it raises on its ``at``-th event."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen = 0

    async def on_event(self, event: StreamEvent) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise RuntimeError(f"a handler bug, raised on event {self.at} (a drawn fault)")


@frozen
class RunEvents:
    """What :func:`run_events` saw of one run."""

    events: list[StreamEvent]
    """What the consumer received (a prefix of ``tree`` when it left early)."""
    tree: list[StreamEvent]
    """Every event of the run's tree, as a handler attached to the run saw it."""
    error: Exception | None
    """What ``astream_events`` raised to the consumer, if anything."""
    handler_errors: Sequence[HandlerError]
    """Errors raised by the run's callback handlers (the run goes on regardless)."""

    @property
    def status(self) -> str | None:
        """The root run's status: ``ok``, ``error`` or ``cancelled``."""
        return self.tree[-1].status if self.tree else None


async def run_events(
    runnable: Runnable[Any],
    input: Any,
    *,
    faults: Faults | None = None,
    config: RunConfig | Mapping[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    **options: Any,
) -> RunEvents:
    """Run ``runnable`` through ``astream_events`` (in the current runtime, or a one-shot
    one) reading every event as the seed's loop does, and inject ``faults``.

    Returns the consumer's events and the whole tree's, for :func:`check_events`: the
    tree is complete even when the consumer left early. An error the run ends with is
    returned, not raised.
    """
    faults = faults or Faults()
    collector = EventCollector()
    handlers: list[Any] = [*callbacks, collector]
    if faults.handler_raises_at is not None:
        handlers.insert(0, RaisingHandler(faults.handler_raises_at))
    got: list[StreamEvent] = []
    error: Exception | None = None
    root = ""
    stream = runnable.astream_events(input, config, callbacks=handlers, **options)
    try:
        async with stream as events:
            root = events.run_id
            async for event in events:
                _read(event)
                got.append(event)
                if faults.cancel_at is not None and len(got) >= faults.cancel_at:
                    break
    except Exception as exc:
        error = exc
    if collector.of_tree(root):  # nothing at all if the run was cancelled before it began
        await collector.wait_for_end(root)
    return RunEvents(got, collector.of_tree(root), error, tuple(stream.handler_errors))


def _read(event: StreamEvent) -> None:
    # Read what a user's loop reads, so lazily built data is paid for and checked.
    kind = event["event"]
    _ = event["name"]
    if kind == "on_chat_model_stream":
        _ = event["data"]["chunk"].content
