"""The host: a Ray actor that owns a Troupe runtime and runs performers by name.

Ray's actors are asyncio-only; the host runs trio in a thread of its own beside the
actor's asyncio loop, as ``actors.aio`` does (its ``TrioHost``; trio's guest mode on
that loop costs a pass through asyncio and a thread hop per trio tick: with one run
streaming, a third of the throughput). asyncio hands work to trio through the trio
token; trio hands results back with ``call_soon_threadsafe``, and wakes the stream only
when its outbox was empty. The
outbox, and what a cancel and a start both look at, are guarded by the session's lock.

Each driver has a session: one stream of batches (a Ray streaming generator) that
carries every run the driver started here, each batch ``[[slot, records], ...]`` with
the runs' events as compact records. A run may have at most its window of events sent
and not yet acknowledged; past that its reader waits, so its stream fills and the run
slows: a stalled consumer holds exactly its window and never another run. A driver
that is not heard from for its lease has its runs cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import attrs
import trio

from protocol import CompactEncoder, structure_any
from runtime import (
    EventFilter,
    EventStream,
    Resume,
    RunConfig,
    Runnable,
    Runtime,
    RuntimeClosedError,
    make_config,
    positive_int,
)

from .._targets import load_target, named_performers
from ..aio import TrioHost
from ._errors import error_record

END: Final = "x"
"""The record that ends a run's records: ``["x", None]``, or ``["x", error]``."""
FILTER_KEYS: Final = tuple(f.name for f in attrs.fields(EventFilter))
"""The event filters a run's request may carry (``include_*``, ``exclude_*``)."""
CONFIG_KEYS: Final = tuple(f.name for f in attrs.fields(RunConfig) if f.name != "callbacks")
"""The config a run's request may carry: all of it but callbacks, which cannot travel."""


class _HostedRun:
    """One run of a session: its stream, its encoder and its credit."""

    __slots__ = ("acked", "cancelled", "credit", "encoder", "sent", "stream", "window")

    def __init__(self, stream: EventStream, window: int) -> None:
        self.stream = stream
        self.window = window
        self.encoder = CompactEncoder()
        self.sent = 0
        self.acked = 0
        self.cancelled = False
        self.credit = trio.Event()

    def credit_came(self) -> None:
        """(trio side) An acknowledgement came in: wake the run's reader if it waits."""
        self.credit.set()

    def cancel(self) -> None:
        """(trio side) Cancel the run; its last events go out whatever its credit."""
        self.cancelled = True
        self.credit.set()
        self.stream.cancel()


class _Session:
    """One driver's runs on this host, and the batches on their way to it."""

    def __init__(self, driver_id: str) -> None:
        self.driver_id = driver_id
        self.runs: dict[int, _HostedRun] = {}
        self.starting: set[int] = set()
        """Slots whose start is under way (a cancel may come before the run is up)."""
        self.cancelled_early: set[int] = set()
        self.outbox: dict[int, list[list[Any]]] = {}
        self.wake = asyncio.Event()
        self.wake_scheduled = False
        self.lock = threading.Lock()
        self.last_seen = time.monotonic()
        self.closed = False

    def records(self, slot: int) -> list[list[Any]]:
        """(Under the lock.) The slot's records on their way."""
        out = self.outbox.get(slot)
        if out is None:
            out = self.outbox[slot] = []
        return out

    def woken(self, loop: asyncio.AbstractEventLoop) -> None:
        """(trio side, under the lock.) Records were added: wake the stream, once."""
        if not self.wake_scheduled:
            self.wake_scheduled = True
            loop.call_soon_threadsafe(self.wake_now)

    def wake_now(self) -> None:
        """(asyncio side.)"""
        self.wake_scheduled = False
        self.wake.set()

    def take(self) -> list[list[Any]]:
        """(asyncio side.) Everything on its way, as one batch."""
        with self.lock:
            outbox, self.outbox = self.outbox, {}
        return [[slot, records] for slot, records in outbox.items()]


class TroupeHost:
    """Hosts a Troupe runtime in a Ray actor (wrap with ``ray.remote``; see
    :func:`host_class`). ``registry`` is the ``module:attr`` of its performers."""

    def __init__(self, registry: str, lease: float, store: str | None = None) -> None:
        self._performers: dict[str, Runnable[Any]] = named_performers(load_target(registry))
        self._store = store
        self._lease = lease
        self._sessions: dict[str, _Session] = {}
        self._trio: TrioHost | None = None
        self._starting: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._runtime: Runtime | None = None
        self._nursery: trio.Nursery | None = None
        self._failure: BaseException | None = None
        self._entering: set[asyncio.Future[dict[str, Any] | None]] = set()
        self._asking: set[asyncio.Future[dict[str, Any]]] = set()

    # -- the trio side ------------------------------------------------------------

    async def _started(self) -> None:
        if self._trio is None:
            loop = self._loop = asyncio.get_running_loop()
            performers = list(self._performers.values()) if self._store else []
            options = {"store": self._store, "resume": performers}
            self._trio = TrioHost("thread", options, on_finished=self._trio_done)
            self._starting = loop.create_task(self._trio.start())
            self._lease_task = loop.create_task(self._expire_leases())
        assert self._starting is not None
        await asyncio.shield(self._starting)
        self._runtime = self._trio.runtime
        self._nursery = self._trio.nursery

    def _trio_done(self, outcome: BaseException | None) -> None:
        self._failure = RuntimeError(f"the host's trio runtime stopped: {outcome!r:.200}")
        for entered in self._entering:  # starts the trio side will never answer
            _resolve(entered, error_record(self._failure))
        for asked in self._asking:  # likewise, questions
            _resolve(asked, {"error": error_record(self._failure)})
        for session in list(self._sessions.values()):
            self._drop(session)

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 4)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if now - session.last_seen > self._lease:
                    self._drop(session)

    def _drop(self, session: _Session) -> None:
        """(asyncio side.) The driver is gone (or closed): cancel its runs, end its
        stream."""
        with session.lock:  # the trio thread adds and removes runs
            session.closed = True
            session.outbox = {}
            runs = list(session.runs.values())
        self._sessions.pop(session.driver_id, None)
        for run in runs:
            self._in_trio(run.cancel)
        session.wake.set()

    def _in_trio(self, fn: Any, *args: Any) -> None:
        if self._trio is not None:
            with contextlib.suppress(RuntimeClosedError):  # the host is stopping
                self._trio.in_trio(fn, *args)

    async def _serve_run(
        self,
        session: _Session,
        slot: int,
        stream: EventStream,
        window: int,
        entered: asyncio.Future[dict[str, Any] | None],
    ) -> None:
        loop = self._loop
        assert loop is not None
        try:
            await stream.__aenter__()
        except BaseException as exc:
            with session.lock:
                session.starting.discard(slot)
                session.cancelled_early.discard(slot)
            loop.call_soon_threadsafe(_resolve, entered, error_record(exc))
            if isinstance(exc, trio.Cancelled):
                raise
            return
        run = _HostedRun(stream, window)
        with session.lock:
            session.runs[slot] = run
            session.starting.discard(slot)
            cancelled = slot in session.cancelled_early or session.closed
            session.cancelled_early.discard(slot)
        if cancelled:
            run.cancel()
        loop.call_soon_threadsafe(_resolve, entered, None)
        error: BaseException | None = None
        try:
            async for event in stream:
                if run.sent - run.acked >= run.window and not run.cancelled:
                    run.credit = trio.Event()
                    await run.credit.wait()
                with session.lock:
                    if session.closed:
                        continue
                    run.encoder.encode(event, session.records(slot))
                    session.woken(loop)
                run.sent += 1
        except trio.Cancelled:
            raise  # the host is closing
        except BaseException as exc:  # even SystemExit from a tool: the run's, not the host's
            error = exc
        finally:
            with trio.CancelScope(shield=True):
                # Told what the run raised: the block has seen it (an exit the stream
                # would raise again, as a consumer that left early must see it, stays
                # the run's here and goes to the driver with the run's end).
                seen = (None, None, None) if error is None else (type(error), error, None)
                await stream.__aexit__(*seen)
            end = [END, None if error is None else error_record(error)]
            with session.lock:
                session.runs.pop(slot, None)
                if not session.closed:
                    session.records(slot).append(end)
                    session.woken(loop)

    # -- what drivers call ----------------------------------------------------------

    def _session(self, driver_id: str) -> _Session:
        if self._failure is not None:
            raise self._failure
        session = self._sessions.get(driver_id)
        if session is None:
            session = self._sessions[driver_id] = _Session(driver_id)
        session.last_seen = time.monotonic()
        return session

    async def ready(self) -> dict[str, Any]:
        """Start the runtime; the host's performers and process."""
        await self._started()
        return {"performers": sorted(self._performers), "pid": os.getpid()}

    async def start(
        self, driver_id: str, slot: int, request: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Start a run for a driver: ``None`` once it has started, else the error (as
        :func:`error_record` makes it) that kept it from starting."""
        # Ray starts a caller's calls in the order they were made: the slot is known as
        # starting before any cancel of it is looked at.
        session = self._session(driver_id)
        with session.lock:
            session.starting.add(slot)
        try:
            await self._started()
            stream = self._stream(request)
            window = request.get("window")
            positive_int(window, "window")
        except Exception as exc:
            with session.lock:
                session.starting.discard(slot)
                session.cancelled_early.discard(slot)
            return error_record(exc)
        loop = asyncio.get_running_loop()
        entered: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        assert self._nursery is not None
        self._in_trio(
            self._nursery.start_soon, self._serve_run, session, slot, stream, window, entered
        )
        self._entering.add(entered)
        try:
            return await entered
        finally:
            self._entering.discard(entered)

    def _stream(self, request: dict[str, Any]) -> EventStream:
        name = request.get("performer")
        performer = self._performers.get(name) if isinstance(name, str) else None
        if performer is None:
            raise LookupError(f"no performer named {name!r}; there are {sorted(self._performers)}")
        config = request.get("config") or {}
        filters = request.get("filters") or {}
        if not isinstance(config, dict) or set(config) - set(CONFIG_KEYS):
            raise ValueError(f"config must be a dict of {CONFIG_KEYS}, got {config!r:.200}")
        if not isinstance(filters, dict) or set(filters) - set(FILTER_KEYS):
            raise ValueError(f"filters must be a dict of {FILTER_KEYS}, got {filters!r:.200}")
        config = {**config, "metadata": structure_any(config.get("metadata") or {})}
        resume = config.get("resume")
        if isinstance(resume, dict):  # Resume's fields, as the driver sent them
            config["resume"] = Resume(
                str(resume.get("run_id")), structure_any(resume.get("decisions") or {})
            )
        assert self._runtime is not None
        return self._runtime.astream_events(
            performer, structure_any(request.get("input")), make_config(config), **filters
        )

    async def get_run(self, run_id: str) -> dict[str, Any]:
        """The store's record of a root run: ``{"record": RunRecord}``, or ``{"error":
        ...}`` (as :func:`error_record` makes it: no store, no such run)."""
        try:
            await self._started()
            if self._failure is not None:
                raise self._failure
        except Exception as exc:
            return {"error": error_record(exc)}
        loop = asyncio.get_running_loop()
        asked: asyncio.Future[dict[str, Any]] = loop.create_future()
        runtime = self._runtime
        assert runtime is not None and self._nursery is not None

        async def ask() -> None:
            answer: dict[str, Any]
            try:
                answer = {"record": await runtime.get_run(run_id)}
            except Exception as exc:
                answer = {"error": error_record(exc)}
            loop.call_soon_threadsafe(_resolve, asked, answer)

        self._asking.add(asked)
        try:
            self._in_trio(self._nursery.start_soon, ask)
            return await asked
        finally:
            self._asking.discard(asked)

    async def control(self, driver_id: str, acks: list[list[int]], cancels: list[int]) -> None:
        """A driver's acknowledgements (``[slot, events consumed]``) and cancellations;
        also its heartbeat."""
        session = self._session(driver_id)
        for slot, consumed in acks:
            run = session.runs.get(slot)
            if run is not None and consumed > run.acked:
                run.acked = consumed
                if run.sent - consumed < run.window:
                    self._in_trio(run.credit_came)
        for slot in cancels:
            with session.lock:
                run = session.runs.get(slot)
                if run is None and slot in session.starting:
                    session.cancelled_early.add(slot)
            if run is not None and not run.cancelled:
                self._in_trio(run.cancel)

    async def events(self, driver_id: str) -> AsyncIterator[list[list[Any]]]:
        """The driver's stream: batches of ``[slot, records]`` until it closes."""
        await self._started()
        session = self._session(driver_id)
        while True:
            if not session.outbox:
                if session.closed:
                    return
                session.wake.clear()
                await session.wake.wait()
                continue
            yield session.take()

    async def close(self, driver_id: str) -> None:
        """The driver is done: cancel what it left running, end its stream."""
        session = self._sessions.get(driver_id)
        if session is not None:
            self._drop(session)

    async def status(self, collect: bool = False) -> dict[str, Any]:
        """What the host holds: drivers, their runs, the runtime's runs, memory (and
        the objects the garbage collector tracks, to tell a leak from allocator slack;
        ``collect`` collects garbage first)."""
        await self._started()
        assert self._runtime is not None
        if collect:  # count only what is alive
            gc.collect()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "drivers": len(self._sessions),
            "runs": sum(len(s.runs) for s in self._sessions.values()),
            "open_runs": self._runtime.open_runs,
            "max_rss_kib": usage.ru_maxrss,
            "rss_kib": _rss_kib(),
            "python_objects": len(gc.get_objects()),
            "pid": os.getpid(),
        }


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    """(asyncio side.) Complete ``future`` unless its waiter has gone."""
    if not future.done():
        future.set_result(value)


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0
