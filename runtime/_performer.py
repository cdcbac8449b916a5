"""Performers: what an actor does, described as data, and the ways to run one.

A performer (an agent, a chat model, a tool: see ``actors``) is an immutable
description. A runtime gives each performer it meets one actor: a mailbox and a task
that serves requests, each request one run. ``with_config`` makes a
:class:`Configured` view that routes to the same actor with per-call settings.
"""

from __future__ import annotations

import contextvars
import functools
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar, Unpack

import trio
from attrs import frozen

from ._api import (
    ChunkStream,
    EventStream,
    RunLogStream,
    chunk_stream,
    event_stream,
    invoke_in,
    log_stream,
)
from ._checks import running_loop
from ._context import (
    EMPTY_CONFIG,
    RunConfig,
    current_run_var,
    current_runtime_var,
    make_config,
)
from ._core import Bindable, Performing
from ._options import EventStreamOptions, LogOptions, RunOptions, StreamOptions

InT = TypeVar("InT")
OutT = TypeVar("OutT")


class Runnable(Bindable[OutT]):
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
        return log_stream("astream_log", self, input, config, kw)

    def astream_events(
        self,
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **kw: Unpack[EventStreamOptions],
    ) -> EventStream:
        """Stream every event of this run's tree (LangChain's ``astream_events`` v2;
        ``version="v1"`` or ``"v2"`` is accepted and gives the same events)."""
        return event_stream("astream_events", self, input, config, kw)


class Performer(Runnable[OutT], Performing[InT, OutT], Generic[InT, OutT]):
    """Base of every performer. Subclasses are frozen attrs classes that define
    ``name``, ``tags`` and ``metadata``, and implement :meth:`perform`.

    Class settings: ``run_kind`` names the kind of run (``chain``, ``tool``, ...),
    ``mailbox_size`` bounds the actor's mailbox, ``max_concurrency`` caps how many
    requests the actor serves at once (``None``: no cap). The actor is restarted when
    it crashes (:class:`ActorCrash`, or ``open_actor`` failing), at most
    ``restart_limit`` times within ``restart_window`` seconds; then it fails.
    """

    __slots__ = ()

    def bind(self) -> tuple[Performer[Any, OutT], RunConfig]:
        return self, EMPTY_CONFIG


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
