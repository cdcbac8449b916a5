"""The driver's side: a trio program's handle on hosts in a Ray cluster.

Each host link owns one stream of batches from its host, read by one thread (Ray's
generator is iterated with blocking calls) that hands each batch to trio. The trio
side decodes the records into each run's feed (``runtime.RunFeed``), which the host's
credit window bounds; the run's stream is the runtime's own (``runtime.HostedStream``,
``HostedChunkStream``), with this link's run as its source. A consumer that reads
acknowledges what it read, in batches, through one control call per host at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, final

import ray
import trio

from protocol import CompactDecoder, StreamEvent, unstructure_any
from runtime import (
    Attachment,
    EventFilter,
    HostedChunkStream,
    HostedStream,
    RunFeed,
    RunLogStream,
    Runnable,
    RunRecord,
    RuntimeClosedError,
    make_config,
    new_run_id,
    positive_int,
    seconds,
)

from .._targets import load_target, named_performers
from ._errors import HostDiedError, error_from_record
from ._host import CONFIG_KEYS, END, FILTER_KEYS, TroupeHost

DEFAULT_WINDOW: Final = 256
"""Events a run may have on their way to its consumer before it waits for acknowledgement."""
DEFAULT_LEASE: Final = 10.0
"""Seconds a host keeps a silent driver's runs before it cancels them."""
DEFAULT_BACKPRESSURE: Final = 16
"""Batches a host's stream may have unread before the host waits (Ray's bound)."""
DEFAULT_WATCH_CAPACITY: Final = 1024
"""Events each watcher of :meth:`RayRuntime.subscribe` holds before dropping the oldest."""
DEFAULT_START_TIMEOUT: Final = 60.0
"""Seconds hosts may take to start before opening the runtime fails."""
CANCEL_GRACE: Final = 10.0
"""How long leaving a stream waits for its cancelled run to end on the host."""
CONTROL_INTERVAL: Final = 0.005
"""At most one control call per host per this many seconds (cancellations go at once)."""
DEFAULT_NAMESPACE: Final = "troupe"
"""Where named hosts live, so that every driver finds them."""
DEMO_REGISTRY: Final = "actors.ray:demo_performers"


def host_class() -> Any:
    """The Ray actor class of hosts (``ray.remote(TroupeHost)``)."""
    return ray.remote(TroupeHost)


async def ray_result(ref: Any) -> Any:
    """``await`` a Ray object ref from trio (without a thread)."""
    token = trio.lowlevel.current_trio_token()
    future = ref.future()
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the driver's trio has ended
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    await done.wait()
    return future.result()


class _RemoteRun:
    """The driver's half of a run on a host: the source of its stream (it starts the
    run on a host and fills the stream's feed from the host's records)."""

    __slots__ = ("decoder", "feed", "link", "request", "runtime", "slot")

    def __init__(self, runtime: RayRuntime, request: dict[str, Any]) -> None:
        self.runtime = runtime
        self.request = request
        self.decoder = CompactDecoder()
        self.feed: RunFeed | None = None
        self.link: _HostLink | None = None
        self.slot = -1

    async def open(self, feed: RunFeed) -> None:
        """Start the run on the least busy live host."""
        link = self.runtime.pick_host()
        slot = link.new_slot()
        feed.acknowledge(self.request["window"] // 2, lambda: link.consumed(slot, feed))
        self.feed, self.link, self.slot = feed, link, slot
        link.runs[slot] = self
        try:
            started = link.handle.start.remote(self.runtime.driver_id, slot, self.request)
        except Exception as exc:
            link.runs.pop(slot, None)
            raise HostDiedError(f"the host cannot be reached: {_short(exc)}") from None
        try:
            error = await ray_result(started)
        except BaseException as exc:
            link.runs.pop(slot, None)
            if isinstance(exc, trio.Cancelled):
                # Cancel it once it has started: a cancel sent now could reach the host
                # before the start does, and be lost.
                self.runtime.in_background(link.cancel_once_started, started, slot)
                raise
            raise HostDiedError(f"the host could not start the run: {_short(exc)}") from None
        if error is not None:
            link.runs.pop(slot, None)
            raise error_from_record(error)

    def cancel(self) -> None:
        """Tell the host at once."""
        if self.link is not None:
            self.link.cancel(self.slot)

    async def close(self) -> None:
        """Cancel the run if it still goes; wait (at most ``CANCEL_GRACE``) for its end."""
        link, feed = self.link, self.feed
        assert link is not None and feed is not None
        try:
            if not feed.ended:
                link.cancel(self.slot)
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CANCEL_GRACE
                    await feed.wait_ended()
        finally:
            link.runs.pop(self.slot, None)
            feed.close_receiver()  # what the reader left unread


class _HostLink:
    """One host, as this driver sees it: its stream, its runs, its control calls."""

    def __init__(self, runtime: RayRuntime, handle: Any, backpressure: int) -> None:
        self.runtime = runtime
        self.handle = handle
        self.runs: dict[int, _RemoteRun] = {}
        self.alive = True
        self._slots = itertools.count()
        self._acks: dict[int, int] = {}
        self._control_wanted = trio.Event()
        self._generator = handle.events.options(
            num_returns="streaming", _generator_backpressure_num_objects=backpressure
        ).remote(runtime.driver_id)

    def new_slot(self) -> int:
        return next(self._slots)

    # -- the reader (a thread) and the dispatch (trio) ------------------------------

    async def read(self, token: trio.lowlevel.TrioToken) -> None:
        """Read the host's stream until it ends; if it breaks, the host is dead."""
        try:
            await trio.to_thread.run_sync(
                self._read_all, token, abandon_on_cancel=True, limiter=trio.CapacityLimiter(1)
            )
            if not self.runtime.closing:
                self.died(HostDiedError("the host ended this driver's stream (its lease lapsed?)"))
        except Exception as exc:  # whatever Ray raised: the host is gone
            self.died(HostDiedError(f"the host died: {_short(exc)}"))

    def _read_all(self, token: trio.lowlevel.TrioToken) -> None:
        for ref in self._generator:
            batch = ray.get(ref)
            try:
                trio.from_thread.run_sync(self.dispatch, batch, trio_token=token)
            except trio.RunFinishedError:
                return

    def dispatch(self, batch: list[list[Any]]) -> None:
        runs = self.runs
        watched = bool(self.runtime._watching)
        for slot, records in batch:
            run = runs.get(slot)
            if run is None:
                continue  # its stream was left: nobody reads it
            feed = run.feed
            assert feed is not None
            if feed.ended:
                continue
            decode = run.decoder.decode
            for record in records:
                if record[0] == END:
                    feed.end(None if record[1] is None else error_from_record(record[1]))
                    break
                event = decode(record)
                if event is not None:
                    feed.put(event)
                    if watched:
                        self.runtime.watched(event)

    def died(self, error: HostDiedError) -> None:
        """The host is gone: every run on it ends with error events saying so."""
        if not self.alive:
            return
        self.alive = False
        message = f"HostDiedError: {error}"
        now = time.time()
        for run in self.runs.values():
            feed = run.feed
            if feed is not None and not feed.ended:
                for event in run.decoder.abandon(message, now):
                    feed.put(event)
                    self.runtime.watched(event)
                feed.end(error)

    # -- control --------------------------------------------------------------------

    def consumed(self, slot: int, feed: RunFeed) -> None:
        """The reader of ``slot`` read more: acknowledge it with the next control call."""
        self._acks[slot] = feed.consumed
        self._control_wanted.set()

    async def cancel_once_started(self, started: Any, slot: int) -> None:
        """Cancel a run whose start the driver stopped waiting for, once it is known."""
        try:
            error = await ray_result(started)
        except Exception:  # the host is gone: so is the run
            return
        if error is None:
            self.cancel(slot)

    def cancel(self, slot: int) -> None:
        """Tell the host at once (not waiting for the next control call)."""
        self.tell("control", [], [slot])

    def tell(self, method: str, *args: Any) -> None:
        """Call the host without waiting for its answer; if Ray refuses the call, the
        host is gone."""
        if not self.alive:
            return
        try:
            getattr(self.handle, method).remote(self.runtime.driver_id, *args)
        except Exception as exc:  # Ray is shutting down, or the actor is gone
            self.died(HostDiedError(f"the host cannot be reached: {_short(exc)}"))

    async def send_control(self, heartbeat: float) -> None:
        """Acknowledgements, batched; and a heartbeat when there are none."""
        while self.alive:
            with trio.move_on_after(heartbeat):
                await self._control_wanted.wait()
            self._control_wanted = trio.Event()
            acks = [[slot, n] for slot, n in self._acks.items()]
            self._acks.clear()
            self.tell("control", acks, [])
            await trio.sleep(CONTROL_INTERVAL)


def _cause(exc: BaseException) -> str:
    """The last line of a Ray error's text: the host's own exception, as it put it."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@final
class RayRuntime:
    """Troupe runtimes hosted by Ray actors, used from a trio program.

    Make one with :func:`open_ray_runtime`. Runs are started by performer name (or by a
    performer of :attr:`performers`); each goes to the least busy live host.
    """

    def __init__(
        self,
        hosts: list[Any],
        performers: dict[str, Runnable[Any]],
        names: list[str],
        *,
        window: int,
        backpressure: int,
    ) -> None:
        self.driver_id = uuid.uuid4().hex
        self.performers = performers
        """The registry's performers, as loaded in this process (for their schemas)."""
        self.names = names
        """The performer names the hosts know."""
        self.window = window
        self.closing = False
        self._by_identity = {id(p): name for name, p in performers.items()}
        self.links = [_HostLink(self, handle, backpressure) for handle in hosts]
        self.nursery: trio.Nursery | None = None
        self._watching: list[Any] = []  # the subscriptions of subscribe()'s handlers
        self.attachments: list[Attachment] = []

    async def subscribe(
        self, *handlers: Any, drop_oldest: bool = False, capacity: int = DEFAULT_WATCH_CAPACITY
    ) -> Attachment:
        """Attach handlers (objects with ``async on_event(event)``) to every run this
        driver starts from now on, as ``Runtime.subscribe`` does.

        Events come from the hosts' streams, which no handler may hold up: pass
        ``drop_oldest=True`` (a slow handler loses its oldest non-terminal events,
        counted in the attachment's ``dropped``).

        Raises:
            ValueError: ``drop_oldest`` is not ``True``; ``capacity`` is not positive.
            TypeError: a handler has no ``on_event``.
        """
        if drop_oldest is not True:
            raise ValueError(
                "a Ray runtime's watchers must not hold up the hosts' streams: "
                "pass drop_oldest=True"
            )
        positive_int(capacity, "capacity")
        for handler in handlers:
            if not callable(getattr(handler, "on_event", None)):
                raise TypeError(f"a handler needs an async on_event(event): {handler!r:.80}")
        if self.closing:
            raise RuntimeClosedError("the Ray runtime is closed")
        attachment = Attachment()
        self._watching = [s for s in self._watching if not s.closed]
        self._watching += attachment.watch(self, None, handlers, capacity, drop_oldest=True)
        self.attachments.append(attachment)
        return attachment

    def start_service(self, fn: Any, *args: Any, name: str | None = None) -> None:
        """Start a task that lives as long as the runtime (for subscribers' handlers)."""
        if self.nursery is None:
            raise RuntimeClosedError("the Ray runtime is not open")
        self.nursery.start_soon(fn, *args, name=name)

    def watched(self, event: StreamEvent) -> None:
        """Give ``event`` to every watcher (each drops its oldest when it is behind)."""
        for subscription in self._watching:
            if not subscription.closed:
                try:
                    subscription.tx.send_nowait(event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    subscription.close()  # its handler's task has ended

    def in_background(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in the runtime's own nursery (it ends with the runtime)."""
        if self.nursery is not None:
            self.nursery.start_soon(fn, *args)

    @property
    def closed(self) -> bool:
        """Whether the runtime is closing or closed."""
        return self.closing

    @property
    def open_runs(self) -> int:
        """Runs started by this driver whose streams are still open."""
        return sum(len(link.runs) for link in self.links)

    def unfinished(self) -> list[RunFeed]:
        """The feeds of the runs of live hosts that have not ended yet."""
        return [
            run.feed
            for link in self.links
            if link.alive
            for run in link.runs.values()
            if run.feed is not None and not run.feed.ended
        ]

    def pick_host(self) -> _HostLink:
        if self.closing:
            raise RuntimeClosedError("the Ray runtime is closed")
        live = [link for link in self.links if link.alive]
        if not live:
            raise HostDiedError("every host of this runtime has died")
        return min(live, key=lambda link: len(link.runs))

    def astream_events(
        self,
        performer: str | Runnable[Any],
        input: Any,
        config: Any = None,
        **options: Any,
    ) -> HostedStream:
        """The events of a run of ``performer`` (a name the hosts know, or one of
        :attr:`performers`) on a host, as ``Runtime.astream_events`` gives them (the
        same stream class, reading the host's events).

        Options: ``run_name``, ``tags``, ``metadata``, ``run_id``, ``timeout``,
        ``thread_id``, ``resume``, the ``include_*`` / ``exclude_*`` filters,
        ``version``, and ``window`` (this run's credit window, default the runtime's).

        Raises:
            RuntimeClosedError: the runtime is closed.
            LookupError: no host knows ``performer``.
            TypeError, ValueError: an option is wrong (the message names it).
        """
        request = self._request(performer, input, config, options)
        return HostedStream(_RemoteRun(self, request), request["config"]["run_id"])

    def astream(
        self, performer: str | Runnable[Any], input: Any, config: Any = None, **options: Any
    ) -> HostedChunkStream:
        """The run's own output chunks (``Runtime.astream``): for an agent, its steps.
        Takes :meth:`astream_events`' run options (not its filters)."""
        unknown = set(options) & set(FILTER_KEYS)
        if unknown:
            raise TypeError(f"astream takes no event filters, got {sorted(unknown)}")
        request = self._request(performer, input, config, options)
        return HostedChunkStream(_RemoteRun(self, request), request["config"]["run_id"])

    def astream_log(
        self,
        performer: str | Runnable[Any],
        input: Any,
        config: Any = None,
        *,
        diff: bool = True,
        with_streamed_output_list: bool = True,
        **options: Any,
    ) -> RunLogStream:
        """The run log's JSON patches (``Runtime.astream_log``), built here from the
        run's events; the ``include_*`` / ``exclude_*`` filters choose the logged runs."""
        if not isinstance(diff, bool) or not isinstance(with_streamed_output_list, bool):
            raise TypeError("diff and with_streamed_output_list must be bools")
        log_filter = EventFilter.build(**{k: options.pop(k) for k in FILTER_KEYS if k in options})
        events = self.astream_events(performer, input, config, **options)
        return RunLogStream(
            events, log_filter, diff, streamed_output_list=with_streamed_output_list
        )

    async def ainvoke(
        self, performer: str | Runnable[Any], input: Any, config: Any = None, **options: Any
    ) -> Any:
        """Run ``performer`` on a host and return its output (raises what the run raised;
        :class:`~runtime.RunPaused` if it paused, as ``Runtime.ainvoke`` does)."""
        stream = self.astream_events(performer, input, config, **options)
        async with stream:
            async for _ in stream:
                pass
        if stream.paused is not None:
            raise stream.paused
        return stream.output

    def _request(
        self, performer: str | Runnable[Any], input: Any, config: Any, options: dict[str, Any]
    ) -> dict[str, Any]:
        """What a host is asked to run, checked here."""
        if self.closing:
            raise RuntimeClosedError("the Ray runtime is closed")
        name = self._name_of(performer)
        window = options.pop("window", self.window)
        positive_int(window, "window")
        version = options.pop("version", "v2")
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        built_filter = EventFilter.build(**{k: options.pop(k) for k in FILTER_KEYS if k in options})
        filters = {
            k: sorted(v)
            for k in FILTER_KEYS
            if built_filter is not None and (v := getattr(built_filter, k)) is not None
        }
        if "callbacks" in options or (isinstance(config, Mapping) and config.get("callbacks")):
            raise TypeError("callbacks cannot travel to a host: read the stream's events instead")
        built = make_config(config, **{k: options.pop(k) for k in CONFIG_KEYS if k in options})
        if options:
            raise TypeError(f"unknown options {sorted(options)}")
        if built.callbacks:
            raise TypeError("callbacks cannot travel to a host: read the stream's events instead")
        return {
            "performer": name,
            "input": unstructure_any(input),
            "config": {
                "run_name": built.run_name,
                "tags": list(built.tags),
                "metadata": unstructure_any(built.metadata),
                "run_id": built.run_id or new_run_id(),
                "timeout": built.timeout,
                "thread_id": built.thread_id,
                "state": built.state,  # JSON already (checked by make_config)
                "resume": None
                if built.resume is None
                else {
                    "run_id": built.resume.run_id,
                    "decisions": unstructure_any(dict(built.resume.decisions)),
                },
            },
            "filters": filters,
            "window": window,
        }

    async def get_run(self, run_id: str) -> RunRecord:
        """The shared store's record of a root run (as ``Runtime.get_run``), asked of
        a live host; what a server needs to resume a paused run through its hosts.

        Raises:
            NoStoreError: the hosts keep no store (``open_ray_runtime(store=...)``).
            UnknownRunError: the store holds no such run.
            HostDiedError: no host answered.
        """
        link = self.pick_host()
        try:
            answer = await ray_result(link.handle.get_run.remote(run_id))
        except Exception as exc:  # whatever Ray raised: the host is gone
            raise HostDiedError(f"the host could not answer: {_short(exc)}") from None
        if "error" in answer:
            raise error_from_record(answer["error"])
        record: RunRecord = answer["record"]
        return record

    def _name_of(self, performer: str | Runnable[Any]) -> str:
        if isinstance(performer, str):
            if performer not in self.names:
                raise LookupError(f"no performer named {performer!r}; there are {self.names}")
            return performer
        name = self._by_identity.get(id(performer))
        if name is None:
            raise LookupError(
                f"{performer!r:.80} is not one of the registry's performers; "
                f"name one of {self.names}"
            )
        return name

    def close(self) -> None:
        """Refuse new runs; cancel the runs still going. Their last events still come
        back: :meth:`end_streams` ends the hosts' streams once they have ended."""
        self.closing = True
        for link in self.links:
            for slot, run in list(link.runs.items()):
                if run.feed is not None and not run.feed.ended:
                    link.cancel(slot)

    def end_streams(self) -> None:
        """Tell the hosts this driver is done (a host drops what it has not yet sent,
        so this comes after the runs' ends); the watchers get nothing more."""
        for link in self.links:
            link.tell("close")
        for subscription in self._watching:
            subscription.close()


@asynccontextmanager
async def open_ray_runtime(
    address: str | None = None,
    *,
    registry: str = DEMO_REGISTRY,
    hosts: int = 1,
    names: list[str] | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    window: int = DEFAULT_WINDOW,
    lease: float = DEFAULT_LEASE,
    backpressure: int = DEFAULT_BACKPRESSURE,
    host_options: Mapping[str, Any] | None = None,
    init_options: Mapping[str, Any] | None = None,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    store: str | None = None,
) -> AsyncIterator[RayRuntime]:
    """Troupe runtimes on a Ray cluster, for the block's duration.

    Args:
        address: the cluster (``ray.init``'s ``address``); ``None`` uses the one this
            process is connected to, or starts a local one.
        registry: ``module:attr`` of the performers (a dict by name, one performer, or a
            function making either); hosts import it, and so does this process.
        hosts: how many host actors to start (owned by this driver: they die with it).
        names: instead, the names of hosts to use, started (detached, shared with other
            drivers) if not yet running.
        namespace: the Ray namespace of named hosts.
        window: each run's credit window (events on their way to its consumer).
        lease: seconds a host waits to hear from this driver before cancelling its runs.
        backpressure: batches a host's stream may have unread (Ray's outer bound).
        host_options: Ray actor options for the hosts (``num_cpus`` is 1 by default).
        init_options: keyword arguments of ``ray.init`` when this call starts Ray.
        start_timeout: seconds the hosts may take to start (a cluster without the
            resources they ask for would keep them waiting for ever).
        store: the URL of a store every host journals its runs in (one they all reach:
            PostgreSQL, or SQLite on one machine): threads are shared, a run paused on
            one host is resumed on any (``resume=`` in a run's config), and a host that
            opens the store resumes the runs of a host that died.

    Raises:
        ValueError: a bad argument, or a registry that names nothing servable.
    """
    positive_int(hosts, "hosts")
    positive_int(window, "window")
    positive_int(backpressure, "backpressure")
    seconds(lease, "lease")
    seconds(start_timeout, "start_timeout")
    performers = named_performers(load_target(registry))
    started_ray = False
    if not ray.is_initialized():
        await trio.to_thread.run_sync(lambda: ray.init(address=address, **dict(init_options or {})))
        started_ray = True
    options = {"num_cpus": 1, **dict(host_options or {})}
    cls = host_class()
    if names is not None:
        handles = [
            cls.options(
                name=name, namespace=namespace, get_if_exists=True, lifetime="detached", **options
            ).remote(registry, lease, store)
            for name in names
        ]
    else:
        handles = [cls.options(**options).remote(registry, lease, store) for _ in range(hosts)]
    owned = names is None
    try:
        infos = []
        with trio.move_on_after(start_timeout):
            for handle in handles:
                try:
                    infos.append(await ray_result(handle.ready.remote()))
                except Exception as exc:  # the host could not start: say why, briefly
                    raise HostDiedError(f"a host could not start: {_cause(exc)}") from None
        if len(infos) < len(handles):
            raise HostDiedError(
                f"{len(handles) - len(infos)} of {len(handles)} hosts did not start within "
                f"{start_timeout:g} s: does the cluster have the resources they ask for "
                f"({options})?"
            )
        known = sorted(set.intersection(*(set(info["performers"]) for info in infos)))
        runtime = RayRuntime(handles, performers, known, window=window, backpressure=backpressure)
        token = trio.lowlevel.current_trio_token()
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            runtime.nursery = nursery
            for link in runtime.links:
                nursery.start_soon(link.read, token)
                nursery.start_soon(link.send_control, lease / 4)
            try:
                yield runtime
            except BaseException as exc:  # raised unchanged below, not in a group
                body_error = exc
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CANCEL_GRACE
                    runtime.close()
                    try:
                        for feed in runtime.unfinished():
                            await feed.wait_ended()
                    finally:
                        runtime.end_streams()
                    for attachment in runtime.attachments:  # watchers see the last events
                        await attachment.wait()
                nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
    finally:
        if owned:
            for handle in handles:
                ray.kill(handle)
        if started_ray:
            await trio.to_thread.run_sync(ray.shutdown)
